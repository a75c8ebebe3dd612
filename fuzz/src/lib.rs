//! Shared checks of the fuzz targets in `fuzz_targets/`.
//!
//! Every target links this crate, and with it [`Tracking`], the global allocator that
//! measures what one decode allocates (see [`measure`]).

use ferry::codec::{Codec, CodecError, CodecKind, DecodedFrame, Framing};
use ferry::protocol::{Envelope, PROTOCOL_VERSION};
use serde_json::Value;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

// ---------------------------------------------------------------------------------------
// Allocation accounting

/// The system allocator, counting live bytes, their peak, and the largest single request.
pub struct Tracking;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);
static ARMED: AtomicBool = AtomicBool::new(false);

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

impl Tracking {
    #[inline]
    fn grew(size: usize) {
        let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
        if ARMED.load(Ordering::Relaxed) {
            PEAK.fetch_max(live, Ordering::Relaxed);
            LARGEST.fetch_max(size, Ordering::Relaxed);
        }
    }
}

// SAFETY: every call is forwarded to `System` unchanged; the counters have no effect on it.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `alloc`'s contract, which is `System.alloc`'s.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            Self::grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            Self::grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (every allocation is).
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as in `dealloc`; `new_size` is the caller's, unchanged.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            Self::grew(new_size);
        }
        p
    }
}

/// What a measured call allocated.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// Most bytes live at once, above what was live when the call started.
    pub peak: usize,
    /// The largest single allocation (or reallocation) request.
    pub largest: usize,
}

/// Runs `f` and reports its allocations (single-threaded targets only).
pub fn measure<R>(f: impl FnOnce() -> R) -> (R, Usage) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    LARGEST.store(0, Ordering::Relaxed);
    ARMED.store(true, Ordering::Relaxed);
    let r = f();
    ARMED.store(false, Ordering::Relaxed);
    let usage = Usage {
        peak: PEAK.load(Ordering::Relaxed).saturating_sub(base),
        largest: LARGEST.load(Ordering::Relaxed),
    };
    (r, usage)
}

/// The most one decode of `len` input bytes may allocate in one request. A JSON value
/// costs at most 32 bytes per input byte (`serde_json::Value` is 32 bytes and an element
/// takes at least one byte, a vector at most doubles); anything beyond is an announced
/// count or size trusted before the bytes behind it were seen.
pub fn largest_allowed(len: usize) -> usize {
    48 * len + 4096
}

/// The most one decode of `len` input bytes may hold at once (maps cost ~100 bytes per
/// `{"":0}`; nesting is capped by the parsers' depth limits).
pub fn peak_allowed(len: usize) -> usize {
    256 * len + (1 << 20)
}

/// Panics when `usage` breaks the allocation bounds for `len` input bytes; `also` is a
/// single allocation allowed whatever the length (what a reference decoder needs).
pub fn assert_bounded(what: &str, len: usize, usage: Usage, also: usize) {
    let allowed = largest_allowed(len).max(also);
    assert!(
        usage.largest <= allowed,
        "{what}: one allocation of {} bytes for {len} input bytes (allowed {allowed})",
        usage.largest,
    );
    let allowed = peak_allowed(len) + also;
    assert!(
        usage.peak <= allowed,
        "{what}: {} bytes live at once for {len} input bytes (allowed {allowed})",
        usage.peak,
    );
}

// ---------------------------------------------------------------------------------------
// Codecs

/// A codec with no practical size limit (re-encoding may legitimately grow a frame).
pub fn roomy(kind: CodecKind, framing: Framing) -> Codec {
    Codec::new(kind, framing, usize::MAX).expect("valid codec")
}

/// Every (codec, framing) a link can use.
pub fn all_codecs() -> [Codec; 4] {
    [
        roomy(CodecKind::Json, Framing::Lines),
        roomy(CodecKind::Json, Framing::LengthPrefixed),
        roomy(CodecKind::MsgPack, Framing::LengthPrefixed),
        roomy(CodecKind::Bincode, Framing::LengthPrefixed),
    ]
}

/// Whether a line frame would make the decoder read a file (an attachment with `path` and
/// no `data_base64`). Such inputs are skipped: a fuzzer must not read `/dev/zero` or a
/// FIFO (see `fuzz/README.md`, "What is not reached").
pub fn reads_a_file(frame: &[u8]) -> bool {
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(frame) else {
        return false;
    };
    match obj.get("attachments") {
        Some(Value::Array(metas)) => metas.iter().any(|m| {
            m.get("path").is_some_and(|p| !p.is_null())
                && m.get("data_base64").is_none_or(Value::is_null)
        }),
        _ => false,
    }
}

/// `e` as it reads back after being encoded by `to`: `data: null` is absent, a framed
/// encoding drops `data_base64` (the bytes travel raw), and JSON text (also bincode's
/// embedded JSON) writes non-finite metrics as `null`, read back as absent.
pub fn normalized(e: &Envelope, to: &Codec) -> Envelope {
    let mut e = e.clone();
    if matches!(e.data, Some(Value::Null)) {
        e.data = None;
    }
    for m in &mut e.attachments {
        m.data_base64 = None;
    }
    if to.kind() != CodecKind::MsgPack {
        if let Some(m) = &mut e.metrics {
            for f in [
                &mut m.processing_time_ms,
                &mut m.memory_usage_mb,
                &mut m.gpu_utilization,
            ] {
                if f.is_some_and(|v| !v.is_finite()) {
                    *f = None;
                }
            }
        }
    }
    e
}

/// A comparable rendering: `Debug` output, in which NaN equals NaN (`PartialEq` does not).
pub fn canon(e: &Envelope) -> String {
    format!("{e:?}")
}

/// The frame `codec` sends for `e` with `attachments` (header plus raw attachments, or
/// one line). Panics when the encoder refuses an envelope that was just decoded.
pub fn encode_frame(codec: &Codec, e: &Envelope, attachments: &[Vec<u8>]) -> Vec<u8> {
    let parts: Vec<&[u8]> = attachments.iter().map(Vec::as_slice).collect();
    let mut out = Vec::new();
    codec.encode(e, &parts, &mut out).unwrap_or_else(|err| {
        panic!(
            "{:?}/{:?} cannot encode a decoded envelope: {err}",
            codec.kind(),
            codec.framing()
        )
    });
    match codec.framing() {
        Framing::Lines => {
            assert!(
                !out.contains(&b'\n'),
                "a JSON line frame contains a newline"
            );
        }
        _ => {
            let header_len = u32::from_le_bytes(out[..4].try_into().unwrap()) as usize;
            assert_eq!(header_len + 4, out.len(), "header length prefix");
            for a in attachments {
                out.extend_from_slice(a);
            }
        }
    }
    out
}

/// Checks the structural promises of a successful decode of `frame`.
pub fn check_decoded(codec: &Codec, frame: &[u8], d: &DecodedFrame) -> Vec<Vec<u8>> {
    let e = &d.envelope;
    assert_eq!(
        e.version, PROTOCOL_VERSION,
        "decode let another version through"
    );
    let n = d.attachment_count();
    assert_eq!(n, e.attachments.len(), "attachment count vs metadata");
    let mut total = 0usize;
    for (i, meta) in e.attachments.iter().enumerate() {
        let a = d.attachment(frame, i).expect("attachment i < count");
        assert_eq!(a.len() as u64, meta.size, "attachment {i} size");
        total += a.len();
    }
    assert!(
        d.attachment(frame, n).is_none(),
        "attachment past the count"
    );
    if codec.framing() == Framing::LengthPrefixed {
        let header_len = u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(
            4 + header_len + total,
            frame.len(),
            "frame is header plus attachments"
        );
    } else {
        for meta in &e.attachments {
            assert!(meta.data_base64.is_none(), "line decode keeps data_base64");
        }
    }
    let owned = d.attachments_owned(frame);
    assert_eq!(owned.len(), n);
    owned
}

/// The check every codec target runs on `frame`:
///
/// 1. with `max_frame` one byte short the decode is `FrameTooLarge` and allocates nothing;
/// 2. with `max_frame = frame.len()` a decode allocates within [`largest_allowed`] (or
///    `also`, see [`assert_bounded`]) and [`peak_allowed`]; an error is a typed
///    [`CodecError`] with a wire code;
/// 3. a decoded envelope has this build's version and attachments that tile the frame;
/// 4. it re-encodes, and `decode(encode(decode(x)))` equals `decode(x)` (normalized as
///    [`normalized`] says), with byte-identical re-encodings (a fixed point);
/// 5. it also survives every other codec: encoded by each, decoded back equal.
pub fn check_codec(kind: CodecKind, framing: Framing, frame: &[u8], also: usize) {
    if framing == Framing::Lines && reads_a_file(frame) {
        return;
    }
    if let Some(max) = frame.len().checked_sub(1) {
        let tight = Codec::new(kind, framing, max).unwrap();
        let (r, usage) = measure(|| tight.decode(frame).map(|_| ()));
        assert!(
            matches!(r, Err(CodecError::FrameTooLarge { size, max: m }) if size == frame.len() && m == max),
            "frame over max_frame: {r:?}"
        );
        assert_eq!(usage.largest, 0, "allocated for a frame over max_frame");
    }
    let codec = Codec::new(kind, framing, frame.len()).unwrap();
    let (r, usage) = measure(|| codec.decode(frame));
    assert_bounded("decode", frame.len(), usage, also);
    let d = match r {
        Ok(d) => d,
        Err(e) => {
            let _ = (e.code(), e.to_string());
            assert!(!matches!(
                e,
                CodecError::CodecNotLineSafe(_) | CodecError::UnknownCodec(_)
            ));
            // What a host reads of a refused answer: within the same bounds.
            let (_, usage) = measure(|| codec.answer_id(frame));
            assert_bounded("answer_id", frame.len(), usage, also);
            return;
        }
    };
    let attachments = check_decoded(&codec, frame, &d);
    let e1 = d.envelope;

    let same = roomy(kind, framing);
    let f1 = encode_frame(&same, &e1, &attachments);
    let d2 = same
        .decode(&f1)
        .unwrap_or_else(|err| panic!("re-decode of the re-encoding failed: {err}\n{e1:#?}"));
    let a2 = check_decoded(&same, &f1, &d2);
    assert_eq!(
        canon(&normalized(&e1, &same)),
        canon(&d2.envelope),
        "round trip"
    );
    assert_eq!(attachments, a2, "attachments round trip");
    let f2 = encode_frame(&same, &d2.envelope, &a2);
    assert_eq!(f1, f2, "re-encoding is not a fixed point");

    round_trip_everywhere(&e1, &attachments);
}

/// Encodes `e` with `attachments` by every codec and decodes it back: equal to `e`
/// normalized for that codec, attachments unchanged.
pub fn round_trip_everywhere(e: &Envelope, attachments: &[Vec<u8>]) {
    for codec in all_codecs() {
        let f = encode_frame(&codec, e, attachments);
        let d = codec.decode(&f).unwrap_or_else(|err| {
            panic!(
                "{:?}/{:?} cannot decode its own encoding: {err}\n{e:#?}",
                codec.kind(),
                codec.framing()
            )
        });
        let a = check_decoded(&codec, &f, &d);
        assert_eq!(
            canon(&normalized(e, &codec)),
            canon(&d.envelope),
            "round trip through {:?}/{:?}",
            codec.kind(),
            codec.framing()
        );
        assert_eq!(attachments, a.as_slice());
    }
}

/// A framed target's input: first byte even, the rest is the frame as received; odd, the
/// rest is a header and the length prefix is made to fit (no attachment bytes), so
/// mutations reach the header decoder without first having to fix the prefix.
pub fn framed_input(data: &[u8]) -> Option<Vec<u8>> {
    let (&mode, rest) = data.split_first()?;
    Some(if mode & 1 == 0 {
        rest.to_vec()
    } else {
        let mut frame = Vec::with_capacity(rest.len() + 4);
        frame.extend_from_slice(&(rest.len() as u32).to_le_bytes());
        frame.extend_from_slice(rest);
        frame
    })
}

/// The header of a framed frame, if the prefix fits.
pub fn header_of(frame: &[u8]) -> Option<&[u8]> {
    let len = u32::from_le_bytes(frame.get(..4)?.try_into().ok()?) as usize;
    frame.get(4..4usize.checked_add(len)?)
}
