//! Message ids and timestamps.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

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
    pub fn next_id(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.prefix)
    }
}

/// The current UTC time as RFC 3339 with milliseconds, e.g. `2026-11-22T08:00:00.000Z`.
pub fn now_timestamp() -> String {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format_timestamp(since.as_secs(), since.subsec_millis())
}

fn format_timestamp(secs: u64, millis: u32) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
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
    fn timestamps_match_known_dates() {
        assert_eq!(format_timestamp(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_timestamp(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(
            format_timestamp(1_795_334_400, 0),
            "2026-11-22T08:00:00.000Z"
        );
    }
}
