//! Every atomic the shm transport touches comes from here: `std`'s normally, `loom`'s
//! under `cfg(loom)`, so the ring's protocol can be model-checked (see `loom_tests.rs`).
//!
//! The futex calls live here too. Under loom a futex is modelled by one mutex and condition
//! variable shared by every word: `futex_wait` blocks only while the word still holds the
//! expected value (checked under the mutex, as the kernel checks it under its hash-bucket
//! lock), and `futex_wake` wakes every sleeper, which re-checks. Sleeps are untimed there, so
//! a lost wake-up shows up as a loom deadlock.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

use std::time::Duration;

/// Aligns (and pads) `T` to 128 bytes: two 64-byte lines, because x86's adjacent-line
/// prefetcher pulls lines in pairs, so a neighbour on the paired line still ping-pongs.
#[repr(C, align(128))]
#[derive(Debug, Default)]
pub(crate) struct CachePadded<T>(pub(crate) T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// A busy-wait hint (`pause` on x86). Under loom, a yield so the model makes progress.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}

/// Gives the CPU to another runnable thread, if any.
pub(crate) fn yield_now() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::thread::yield_now();
}

/// Sleeps while `word` holds `expected`, for `timeout` at most (`None`: no limit). Returns
/// early on a wake-up, a changed value, a signal, or spuriously: callers re-check.
#[cfg(all(not(loom), target_os = "linux"))]
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    use rustix::thread::futex;
    let ts = timeout.map(|t| futex::Timespec {
        tv_sec: t.as_secs() as _,
        tv_nsec: t.subsec_nanos() as _,
    });
    // Shared (not PRIVATE) futex: the word lives in a MAP_SHARED mapping that another
    // process maps at another address; the kernel keys it by the page, not the address.
    // EAGAIN (value changed), ETIMEDOUT and EINTR all mean "go and look again".
    let _ = futex::wait(word, futex::Flags::empty(), expected, ts.as_ref());
}

/// Wakes the one thread sleeping on `word`, if any.
#[cfg(all(not(loom), target_os = "linux"))]
pub(crate) fn futex_wake(word: &AtomicU32) {
    use rustix::thread::futex;
    let _ = futex::wake(word, futex::Flags::empty(), 1);
}

/// Without a futex (non-Linux Unix), a sleeper naps briefly and re-checks; a wake is a no-op.
#[cfg(all(not(loom), not(target_os = "linux")))]
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let nap = Duration::from_micros(50);
    if word.load(Ordering::Relaxed) == expected {
        std::thread::sleep(timeout.map_or(nap, |t| t.min(nap)));
    }
}

/// Without a futex (non-Linux Unix) the sleeper polls; nothing to do.
#[cfg(all(not(loom), not(target_os = "linux")))]
pub(crate) fn futex_wake(_word: &AtomicU32) {}

#[cfg(loom)]
loom::lazy_static! {
    static ref PARK: (loom::sync::Mutex<()>, loom::sync::Condvar) =
        (loom::sync::Mutex::new(()), loom::sync::Condvar::new());
}

/// Loom model of `FUTEX_WAIT` (untimed; see the module docs).
#[cfg(loom)]
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, _timeout: Option<Duration>) {
    let guard = PARK.0.lock().unwrap();
    // SYNC POINT: compared under the model's mutex, which the waker also takes before
    // notifying: a store the waker made before `futex_wake` is seen here, or the waker's
    // notify comes after this thread waits (pairs with the AWAKE store in `wait::wake`).
    if word.load(Ordering::Acquire) == expected {
        drop(PARK.1.wait(guard).unwrap());
    }
}

/// Loom model of `FUTEX_WAKE`.
#[cfg(loom)]
pub(crate) fn futex_wake(_word: &AtomicU32) {
    let _guard = PARK.0.lock().unwrap();
    PARK.1.notify_all();
}

/// A shared reference into memory owned by `owner` (the mapped segment, or under loom the
/// heap blocks standing in for it), valid as long as this value lives.
pub(crate) struct Shared<T: 'static> {
    ptr: std::ptr::NonNull<T>,
    _owner: std::sync::Arc<dyn std::any::Any + Send + Sync>,
}

impl<T> Shared<T> {
    /// # Safety
    /// `ptr` must point to a valid, properly aligned `T` inside memory that `owner` keeps
    /// alive and in place, and the `T` must only be accessed through shared references
    /// (its fields are atomics).
    pub(crate) unsafe fn new(
        ptr: std::ptr::NonNull<T>,
        owner: std::sync::Arc<dyn std::any::Any + Send + Sync>,
    ) -> Self {
        Shared { ptr, _owner: owner }
    }
}

impl<T> std::ops::Deref for Shared<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: `new`'s contract: the pointee is a valid `T`, kept alive by `_owner`
        // (which this value holds), and only ever shared, never mutably borrowed.
        unsafe { self.ptr.as_ref() }
    }
}

// SAFETY: a `Shared<T>` is a `&T` plus an owner that is itself `Send + Sync`; `&T` may
// cross threads when `T: Sync` (atomics are).
unsafe impl<T: Sync> Send for Shared<T> {}
// SAFETY: as above; sharing a `Shared<T>` shares only `&T`.
unsafe impl<T: Sync> Sync for Shared<T> {}
