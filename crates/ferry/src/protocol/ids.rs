//! Message ids and timestamps.
//!
//! Both are made once or twice per call on the hot path, so neither goes through
//! `format!`: an id's number is written by `itoa` (four digits per division, where a
//! digit-by-digit loop made formatting ids a few percent of a small shm round trip), and
//! a timestamp reuses the date and time of day formatted for its second (cached per
//! thread) and writes only the milliseconds.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A host's request id, `r-<n>`, held inline: a connection makes one per request, and
/// this way allocates nothing for it.
#[derive(Clone, Copy)]
pub(crate) struct RequestId {
    text: [u8; RequestId::MAX_LEN],
    len: u8,
}

impl RequestId {
    /// The prefix of a host's request ids.
    pub(crate) const PREFIX: &'static str = "r";
    /// The prefix, `-` and the 20 digits of `u64::MAX`.
    const MAX_LEN: usize = Self::PREFIX.len() + 1 + 20;

    /// `r-<n>`.
    pub(crate) fn new(n: u64) -> Self {
        let mut text = [0u8; Self::MAX_LEN];
        let head = Self::PREFIX.len() + 1;
        text[..head - 1].copy_from_slice(Self::PREFIX.as_bytes());
        text[head - 1] = b'-';
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(n).as_bytes();
        text[head..head + digits.len()].copy_from_slice(digits);
        RequestId {
            text,
            len: (head + digits.len()) as u8,
        }
    }

    /// Appends `r-<n>` to `out`, for a decoder that keeps the text in a reused buffer.
    #[inline]
    pub(crate) fn push_text(n: u64, out: &mut String) {
        out.push_str(Self::PREFIX);
        out.push('-');
        push_decimal(out, n);
    }

    /// The id as text.
    pub(crate) fn as_str(&self) -> &str {
        // Only ASCII is ever written: the conversion cannot fail.
        std::str::from_utf8(&self.text[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

/// Hands out message ids `<prefix>-<n>`, unique within one process side.
///
/// ```
/// use ferry::protocol::IdGenerator;
/// let ids = IdGenerator::new("r");
/// assert_eq!(ids.next_id(), "r-1");
/// assert_eq!(ids.next_id(), "r-2");
/// ```
#[derive(Debug)]
pub struct IdGenerator {
    prefix: &'static str,
    // Only uniqueness matters; no other memory is published through this counter.
    next: AtomicU64,
}

impl IdGenerator {
    /// A generator whose ids start at `<prefix>-1`.
    pub const fn new(prefix: &'static str) -> Self {
        IdGenerator {
            prefix,
            next: AtomicU64::new(1),
        }
    }

    /// The next id.
    #[inline]
    pub fn next_id(&self) -> String {
        let mut id = String::with_capacity(self.prefix.len() + 1 + 20);
        self.next_id_into(&mut id);
        id
    }

    /// The next id's number, for a caller that writes the text itself (see [`RequestId`]).
    #[inline]
    pub(crate) fn next_number(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// The next id, written over `out` (which keeps its allocation); returns its number.
    ///
    /// ```
    /// use ferry::protocol::IdGenerator;
    /// let ids = IdGenerator::new("w");
    /// let mut id = String::from("old");
    /// assert_eq!(ids.next_id_into(&mut id), 1);
    /// assert_eq!(id, "w-1");
    /// ```
    #[inline]
    pub fn next_id_into(&self, out: &mut String) -> u64 {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        out.clear();
        out.push_str(self.prefix);
        out.push('-');
        push_decimal(out, n);
        n
    }

    /// The number of `id` if this generator could have made it (`<prefix>-<n>`, `n` in
    /// canonical decimal: no sign, no leading zero), else `None`.
    ///
    /// ```
    /// use ferry::protocol::IdGenerator;
    /// let ids = IdGenerator::new("r");
    /// assert_eq!(ids.number_of("r-42"), Some(42));
    /// assert_eq!(ids.number_of("r-042"), None);
    /// assert_eq!(ids.number_of("w-42"), None);
    /// ```
    #[inline]
    pub fn number_of(&self, id: &str) -> Option<u64> {
        let digits = id.strip_prefix(self.prefix)?.strip_prefix('-')?.as_bytes();
        match digits {
            [] => None,
            [b'0', _, ..] => None,
            _ => digits.iter().try_fold(0u64, |n, &d| {
                if d.is_ascii_digit() {
                    n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
                } else {
                    None
                }
            }),
        }
    }
}

/// Appends `n` in decimal.
#[inline]
fn push_decimal(out: &mut String, n: u64) {
    out.push_str(itoa::Buffer::new().format(n));
}

thread_local! {
    /// The second last formatted on this thread and its text up to the milliseconds
    /// (`2026-11-22T08:00:00.`).
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// The current UTC time as RFC 3339 with milliseconds, e.g. `2026-11-22T08:00:00.000Z`.
pub fn now_timestamp() -> String {
    Stamp::now().as_str().to_owned()
}

/// A timestamp as [`now_timestamp`] writes it, held on the stack: what the hot path puts
/// in an envelope view without allocating a `String`.
#[derive(Clone, Copy)]
pub(crate) struct Stamp {
    text: [u8; Stamp::CAPACITY],
    len: usize,
}

impl Stamp {
    /// Enough for any year a `u64` of seconds reaches (12 digits) and the rest (20).
    const CAPACITY: usize = 40;

    /// Now.
    pub(crate) fn now() -> Stamp {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Stamp::at(since.as_secs(), since.subsec_millis())
    }

    /// `secs` and `millis` (below 1000) since the epoch.
    fn at(secs: u64, millis: u32) -> Stamp {
        let mut stamp = Stamp {
            text: [0; Stamp::CAPACITY],
            len: 0,
        };
        let cached = SECOND.try_with(|cache| {
            let mut cache = cache.borrow_mut();
            if cache.0 != secs {
                cache.1.clear();
                push_second(&mut cache.1, secs);
                cache.0 = secs;
            }
            stamp.push(cache.1.as_bytes());
        });
        if cached.is_err() {
            // Only during thread teardown: format without the cache.
            let mut second = String::new();
            push_second(&mut second, secs);
            stamp.push(second.as_bytes());
        }
        let mut digits = [0u8; 4];
        let m = millis.min(999);
        digits[0] = b'0' + (m / 100) as u8;
        digits[1] = b'0' + (m / 10 % 10) as u8;
        digits[2] = b'0' + (m % 10) as u8;
        digits[3] = b'Z';
        stamp.push(&digits);
        stamp
    }

    fn push(&mut self, bytes: &[u8]) {
        let end = (self.len + bytes.len()).min(Stamp::CAPACITY);
        self.text[self.len..end].copy_from_slice(&bytes[..end - self.len]);
        self.len = end;
    }

    /// The text.
    pub(crate) fn as_str(&self) -> &str {
        // Written from ASCII only: always UTF-8.
        std::str::from_utf8(&self.text[..self.len]).unwrap_or_default()
    }
}

#[cfg(test)]
fn format_timestamp(secs: u64, millis: u32) -> String {
    Stamp::at(secs, millis).as_str().to_owned()
}

/// Appends `YYYY-MM-DDTHH:MM:SS.` for `secs` since the epoch.
fn push_second(out: &mut String, secs: u64) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    if (0..10_000).contains(&y) {
        push_padded(out, y as u64, 4);
    } else {
        // Outside four digits (not in this millennium): what `{y:04}` would print.
        out.push_str(&y.to_string());
    }
    out.push('-');
    push_padded(out, m.into(), 2);
    out.push('-');
    push_padded(out, d.into(), 2);
    out.push('T');
    push_padded(out, rem / 3600, 2);
    out.push(':');
    push_padded(out, (rem / 60) % 60, 2);
    out.push(':');
    push_padded(out, rem % 60, 2);
    out.push('.');
}

/// Appends `n` in decimal, zero-padded to `width` digits (`n` has at most `width`).
fn push_padded(out: &mut String, n: u64, width: u32) {
    let mut div = 10u64.pow(width - 1);
    while div > 0 {
        out.push(char::from(b'0' + ((n / div) % 10) as u8));
        div /= 10;
    }
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_count_up_from_one() {
        let ids = IdGenerator::new("w");
        assert_eq!(ids.next_id(), "w-1");
        ids.next.store(u64::MAX, Ordering::Relaxed);
        assert_eq!(ids.next_id(), format!("w-{}", u64::MAX));
        let mut n = String::new();
        for v in [0, 9, 10, 99, 100, 12_345_678_901] {
            n.clear();
            push_decimal(&mut n, v);
            assert_eq!(n, v.to_string());
        }
    }

    #[test]
    fn inline_request_ids_read_back_as_their_numbers() {
        let ids = IdGenerator::new(RequestId::PREFIX);
        for n in [0, 1, 9, 10, 12_345, u64::MAX] {
            let id = RequestId::new(n);
            assert_eq!(id.as_str(), format!("r-{n}"));
            assert_eq!(ids.number_of(id.as_str()), Some(n));
        }
    }

    #[test]
    fn numbers_are_read_back_only_from_canonical_ids() {
        let ids = IdGenerator::new("r");
        let mut id = String::new();
        for _ in 0..12 {
            let n = ids.next_id_into(&mut id);
            assert_eq!(ids.number_of(&id), Some(n));
        }
        assert_eq!(ids.number_of("r-0"), Some(0));
        assert_eq!(ids.number_of(&format!("r-{}", u64::MAX)), Some(u64::MAX));
        for bad in [
            "r-",
            "r",
            "r-+1",
            "r-01",
            "r-1x",
            "r--1",
            "rr-1",
            "r-18446744073709551616",
            " r-1",
        ] {
            assert_eq!(ids.number_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn timestamps_match_the_format_reference() {
        let reference = |secs: u64, millis: u32| {
            let (y, m, d) = civil_from_days((secs / 86_400) as i64);
            let rem = secs % 86_400;
            format!(
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
                rem / 3600,
                (rem / 60) % 60,
                rem % 60
            )
        };
        let mut secs = 0u64;
        while secs < 400_000_000_000 {
            let millis = (secs % 1000) as u32;
            assert_eq!(format_timestamp(secs, millis), reference(secs, millis));
            secs = secs * 3 + 7_919;
        }
    }

    #[test]
    fn now_timestamp_is_rfc3339_with_millis() {
        let a = now_timestamp();
        let b = now_timestamp();
        for t in [&a, &b] {
            assert_eq!(t.len(), 24, "{t}");
            assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T' && t.as_bytes()[19] == b'.');
        }
        assert!(a <= b);
    }

    #[test]
    fn timestamps_match_known_dates() {
        assert_eq!(format_timestamp(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_timestamp(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(
            format_timestamp(1_795_334_400, 0),
            "2026-11-22T08:00:00.000Z"
        );
    }
}
