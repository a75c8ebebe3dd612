//! Byte buffers shared with Python without copies: request attachments lent for one call
//! ([`Attachment`]) and answers written in place ([`ReplyBuffer`]).
//!
//! # Attachments: lent, then revoked or kept
//!
//! A raw handler's attachments are `memoryview`s over [`Attachment`] objects whose bytes
//! are the runtime's receive buffer itself (the frame the transport filled). They are valid
//! for the call only: when the handler returns, the serve loop releases every view it handed
//! out (a kept view then raises `ValueError`) and closes the attachments to new exports.
//!
//! A buffer the handler exported from a view and kept (`numpy.frombuffer(view)`, a slice
//! of the view) cannot be revoked: its pointer is in the other object. Then the receive
//! buffer is not reused: [`TrackingReceiver`], which stands between the runtime and the
//! transport, takes that buffer's `Vec` out of the runtime's hands on the runtime's next
//! `recv` into it, before the transport writes there, and gives it to the attachments'
//! [`FrameOwner`], which the kept exports keep alive; the runtime continues with a fresh
//! buffer. Attachments that are not in the buffer the tracker last filled (a request the
//! runtime queued while another ran, line-framed links whose attachments are decoded from
//! base64) are copied into memory the attachment owns, so no view ever points at memory the
//! runtime may free or reuse.

use pyo3::exceptions::PyBufferError;
use pyo3::ffi;
use pyo3::prelude::*;
use std::ffi::{c_int, c_void};
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use ferry::transport::{FrameReceiver, Framing, TransportError};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The receive buffer of one frame, once attachments exported from it outlive their call.
pub struct FrameOwner {
    /// The address of the frame's first byte: what identifies the runtime's `Vec`.
    base: usize,
    /// The runtime's receive buffer, once [`TrackingReceiver`] has taken it over.
    adopted: Mutex<Option<Vec<u8>>>,
}

impl FrameOwner {
    /// Whether the runtime's buffer has been handed over (it is no longer the runtime's).
    pub fn adopted(&self) -> bool {
        lock(&self.adopted).is_some()
    }
}

#[derive(Default)]
struct TrackState {
    /// Addresses of the bytes the last `recv` filled, in a `Vec` the runtime keeps until
    /// its next `recv` into it (see `TrackingReceiver`).
    last: Option<Range<usize>>,
    /// Frames with exports that outlived their call, to take over at the next `recv` into
    /// their buffer.
    pending: Vec<Arc<FrameOwner>>,
}

/// What [`TrackingReceiver`] knows, shared with the handler that lends attachments.
#[derive(Default, Clone)]
pub struct Tracker(Arc<Mutex<TrackState>>);

impl Tracker {
    /// The frame owner for attachments in `range` if they lie in the buffer the transport
    /// last filled (else `None`: they are to be copied).
    pub fn frame_of(&self, slices: &[&[u8]]) -> Option<Arc<FrameOwner>> {
        let state = lock(&self.0);
        let last = state.last.clone()?;
        let inside = slices.iter().all(|s| {
            let start = s.as_ptr() as usize;
            s.is_empty() || (last.start <= start && start + s.len() <= last.end)
        });
        inside.then(|| {
            Arc::new(FrameOwner {
                base: last.start,
                adopted: Mutex::new(None),
            })
        })
    }

    /// Keeps `frame`'s buffer from reuse: it is taken over at the runtime's next `recv`
    /// into it.
    pub fn keep(&self, frame: Arc<FrameOwner>) {
        let mut state = lock(&self.0);
        if !state.pending.iter().any(|f| Arc::ptr_eq(f, &frame)) {
            state.pending.push(frame);
        }
    }

    /// Frames kept but never taken over (the runtime stopped without another `recv` into
    /// their buffer) that attachments still refer to: their memory was freed with the
    /// runtime's buffer.
    pub fn stranded(&self) -> usize {
        lock(&self.0)
            .pending
            .iter()
            .filter(|frame| Arc::strong_count(frame) > 1)
            .count()
    }
}

/// The transport's receiver with a [`Tracker`]: records where each frame lands, and takes
/// over a buffer that exported attachments still read before the transport overwrites it.
///
/// The runtime (`ferry::worker::serve_link`) keeps a frame's `Vec` unchanged from the
/// `recv` that filled it to its next `recv` into the same `Vec`; the handler runs in
/// between. That is the contract this relies on.
pub struct TrackingReceiver {
    inner: Box<dyn FrameReceiver>,
    tracker: Tracker,
}

impl TrackingReceiver {
    /// Wraps `inner`, sharing `tracker`.
    pub fn new(inner: Box<dyn FrameReceiver>, tracker: Tracker) -> Self {
        TrackingReceiver { inner, tracker }
    }
}

impl FrameReceiver for TrackingReceiver {
    fn recv(&mut self, buf: &mut Vec<u8>, deadline: Option<Instant>) -> Result<(), TransportError> {
        {
            let mut state = lock(&self.tracker.0);
            state.last = None;
            if buf.capacity() > 0 {
                let base = buf.as_ptr() as usize;
                if let Some(i) = state.pending.iter().position(|f| f.base == base) {
                    let frame = state.pending.swap_remove(i);
                    *lock(&frame.adopted) = Some(std::mem::take(buf));
                }
            }
        }
        let received = self.inner.recv(buf, deadline);
        if received.is_ok() {
            let start = buf.as_ptr() as usize;
            lock(&self.tracker.0).last = Some(start..start + buf.len());
        }
        received
    }

    fn switch_framing(&mut self, framing: Framing) -> Result<(), TransportError> {
        self.inner.switch_framing(framing)
    }
}

/// What keeps an attachment's bytes alive.
enum Backing {
    /// The runtime's receive buffer (lent for the call, adopted if exports outlive it).
    Frame(Arc<FrameOwner>),
    /// A copy the attachment owns.
    Owned(Box<[u8]>),
}

struct ViewState {
    /// New exports allowed (the call is running).
    open: bool,
    /// Buffers exported and not yet released.
    exports: usize,
}

/// One request attachment, read-only, exporting its bytes through the buffer protocol;
/// handlers see it through a `memoryview` (`view.obj`).
#[pyclass(name = "Attachment", module = "ferry_worker._native", frozen)]
pub struct Attachment {
    ptr: *const u8,
    len: usize,
    _backing: Backing,
    state: Mutex<ViewState>,
}

// SAFETY: `ptr` is only read through the buffer protocol, and the bytes it points at are
// either owned by `_backing` (moved with the object, on the heap, never mutated) or the
// runtime's receive buffer, which no thread writes while the attachment is open and which
// `_backing` owns once exports outlive the call (see the module docs). The mutable state is
// behind a `Mutex`.
unsafe impl Send for Attachment {}
// SAFETY: as for `Send`: shared access only reads immutable bytes or locks `state`.
unsafe impl Sync for Attachment {}

impl Attachment {
    /// An attachment over `bytes` in the runtime's receive buffer, kept valid by `frame`
    /// (see [`Tracker::frame_of`]).
    pub fn lent(bytes: &[u8], frame: Arc<FrameOwner>) -> Self {
        Attachment {
            ptr: bytes.as_ptr(),
            len: bytes.len(),
            _backing: Backing::Frame(frame),
            state: Mutex::new(ViewState {
                open: true,
                exports: 0,
            }),
        }
    }

    /// An attachment owning a copy of `bytes`.
    pub fn copied(bytes: &[u8]) -> Self {
        let owned: Box<[u8]> = bytes.into();
        Attachment {
            ptr: owned.as_ptr(),
            len: owned.len(),
            _backing: Backing::Owned(owned),
            state: Mutex::new(ViewState {
                open: true,
                exports: 0,
            }),
        }
    }

    /// Closes the attachment to new exports; `true` when exports remain (kept past the
    /// call), whose memory must then not be reused.
    pub fn revoke(&self) -> bool {
        let mut state = lock(&self.state);
        state.open = false;
        state.exports > 0
    }
}

#[pymethods]
impl Attachment {
    /// Exports the bytes, read-only, while the call runs.
    ///
    /// # Safety
    ///
    /// Called by CPython's buffer protocol with a valid `view`.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        if flags & ffi::PyBUF_WRITABLE == ffi::PyBUF_WRITABLE {
            return Err(PyBufferError::new_err("a request attachment is read-only"));
        }
        let this = slf.get();
        let mut state = lock(&this.state);
        if !state.open {
            return Err(PyBufferError::new_err(
                "this attachment was revoked when its handler returned (copy it with \
                 bytes(view) to keep it)",
            ));
        }
        // SAFETY: `view` is valid (CPython's buffer protocol); `ptr`/`len` describe bytes
        // that stay valid while the export lives: the export holds a reference to this
        // object (`obj`), which holds `_backing` (see the `Send` impl). Read-only, so the
        // `*mut` is never written through.
        let filled = unsafe {
            ffi::PyBuffer_FillInfo(
                view,
                slf.as_ptr(),
                this.ptr.cast_mut().cast::<c_void>(),
                this.len as ffi::Py_ssize_t,
                1,
                flags,
            )
        };
        if filled != 0 {
            return Err(PyErr::fetch(slf.py()));
        }
        state.exports += 1;
        Ok(())
    }

    /// Counts the export's end.
    ///
    /// # Safety
    ///
    /// Called by CPython's buffer protocol.
    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {
        let mut state = lock(&self.state);
        state.exports = state.exports.saturating_sub(1);
    }

    fn __len__(&self) -> usize {
        self.len
    }

    fn __repr__(&self) -> String {
        let open = lock(&self.state).open;
        let state = match &self._backing {
            _ if open => "lent for the call",
            Backing::Frame(frame) if frame.adopted() => "revoked, kept by exports",
            Backing::Frame(_) | Backing::Owned(_) => "revoked",
        };
        let source = match &self._backing {
            Backing::Frame(_) => "receive buffer",
            Backing::Owned(bytes) if bytes.is_empty() => "empty copy",
            Backing::Owned(_) => "copy",
        };
        format!(
            "<ferry_worker attachment of {} bytes ({source}), {state}>",
            self.len
        )
    }
}

struct ReplyState {
    /// The bytes, until the answer takes them.
    data: Option<Vec<u8>>,
    /// Buffers exported and not yet released.
    exports: usize,
}

/// A writable buffer a handler fills and answers with as an attachment: the runtime sends
/// its bytes from where they are, with no copy into Python `bytes` (`ctx.reply_buffer(n)`,
/// or `ReplyBuffer(n)`).
#[pyclass(name = "ReplyBuffer", module = "ferry_worker._native", frozen)]
pub struct ReplyBuffer {
    state: Mutex<ReplyState>,
    len: usize,
}

impl ReplyBuffer {
    /// The bytes for the wire: the buffer itself when nothing still exports it (no copy),
    /// else a copy (an array over it is still alive; its memory stays valid). `Err` once
    /// taken.
    pub fn take(&self) -> Result<Vec<u8>, &'static str> {
        let mut state = lock(&self.state);
        if state.exports > 0 {
            return state.data.clone().ok_or(REPLY_SENT);
        }
        state.data.take().ok_or(REPLY_SENT)
    }
}

const REPLY_SENT: &str = "this reply buffer was already sent";

#[pymethods]
impl ReplyBuffer {
    /// `n` zeroed bytes.
    #[new]
    pub fn new(n: usize) -> Self {
        ReplyBuffer {
            state: Mutex::new(ReplyState {
                data: Some(vec![0; n]),
                exports: 0,
            }),
            len: n,
        }
    }

    /// Exports the bytes, writable, until the buffer is sent.
    ///
    /// # Safety
    ///
    /// Called by CPython's buffer protocol with a valid `view`.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        let this = slf.get();
        let mut state = lock(&this.state);
        let ptr = match state.data.as_mut() {
            Some(data) => data.as_mut_ptr(),
            None => return Err(PyBufferError::new_err(REPLY_SENT)),
        };
        // SAFETY: `view` is valid (CPython's buffer protocol). The `Vec` is never resized,
        // and `take` moves it out only when no export is alive (it copies otherwise), so
        // `ptr` stays valid and uniquely owned by this object for as long as the export
        // (which holds a reference to this object) lives.
        let filled = unsafe {
            ffi::PyBuffer_FillInfo(
                view,
                slf.as_ptr(),
                ptr.cast::<c_void>(),
                this.len as ffi::Py_ssize_t,
                0,
                flags,
            )
        };
        if filled != 0 {
            return Err(PyErr::fetch(slf.py()));
        }
        state.exports += 1;
        Ok(())
    }

    /// Counts the export's end.
    ///
    /// # Safety
    ///
    /// Called by CPython's buffer protocol.
    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {
        let mut state = lock(&self.state);
        state.exports = state.exports.saturating_sub(1);
    }

    fn __len__(&self) -> usize {
        self.len
    }

    fn __repr__(&self) -> String {
        let sent = if lock(&self.state).data.is_some() {
            ""
        } else {
            ", sent"
        };
        format!("<ferry_worker reply buffer of {} bytes{sent}>", self.len)
    }
}
