//! Retry timing: jittered exponential backoff, and the delays a downstream may ask for, HTTP
//! `Retry-After` and gRPC `google.rpc.RetryInfo` in the status details.

use crate::config::RetryConfig;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Jittered exponential backoff: the n-th delay is drawn uniformly from ±50 % around
/// `initial_interval * 2^(n-1)`, the centre capped at `max_interval` (the Collector's defaults).
pub(super) struct Backoff {
    current: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(cfg: &RetryConfig) -> Self {
        Backoff {
            current: cfg.initial_interval,
            max: cfg.max_interval.max(cfg.initial_interval),
        }
    }

    /// The next delay to wait before retrying.
    pub fn next_delay(&mut self) -> Duration {
        let centre = self.current;
        self.current = (self.current * 2).min(self.max);
        centre.mul_f64(0.5 + fastrand::f64())
    }
}

/// Parses an HTTP `Retry-After` value: delay-seconds or an HTTP date (IMF-fixdate, e.g.
/// `Sun, 06 Nov 1994 08:49:37 GMT`). A date in the past means "now".
pub(super) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = parse_imf_fixdate(v)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` (RFC 9110 section 5.6.7; the obsolete formats are not accepted).
fn parse_imf_fixdate(s: &str) -> Option<SystemTime> {
    let rest = s.split_once(", ")?.1;
    let mut parts = rest.split(' ');
    let day: u64 = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    if parts.next()? != "GMT" || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day as i64);
    let secs = u64::try_from(days).ok()? * 86_400 + h * 3600 + m * 60 + sec;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}
