//! The OpenTelemetry sampling threshold in W3C `tracestate` (`ot=th:<hex>`), per the specification's
//! tracestate-probability-sampling document: the threshold `T = (1 - p) * 2^56` is written as up to 14 hex
//! digits with trailing zeros removed; a span is kept when its randomness `R >= T`, and its adjusted count
//! is `2^56 / (2^56 - T)`. A downstream sampler may only raise an existing threshold, and must erase it
//! when the probability it applied is unknown.
//!
//! What a kept trace's decision does to each span's threshold is an [`Applied`]: a rule that keeps
//! every trace matching a condition leaves it as it arrived; a consistent sampler (keep iff `R >= T(p)`)
//! raises it to `T(p)`; a limiter that keeps a share `p` of the traces reaching it, whatever their
//! randomness, multiplies the span's probability by `p`. Other vendors' entries and the other `ot`
//! sub-keys (`rv:` ...) are kept as they are.

pub use crate::decisions::Applied;

const MAX_THRESHOLD: u64 = 1 << 56;

/// The threshold a span leaves with, from the one it arrived with (`None`: none, or unreadable). `None`
/// means none (erased, or never there).
fn threshold_after(applied: Applied, upstream: Option<u64>) -> Option<u64> {
    let ours = match applied {
        Applied::Everything => return upstream,
        Applied::Unknown => return None,
        Applied::Consistent(p) => threshold_for_probability(p)?,
        Applied::Share(p) => {
            threshold_for_probability(upstream.map_or(1.0, probability_of_threshold) * p)?
        }
    };
    // Raised, never lowered (for a share, rounding cannot make the product's threshold smaller).
    Some(upstream.map_or(ours, |u| u.max(ours)))
}

/// The threshold for keeping with probability `p` (`0 < p <= 1`), or `None` outside that range.
pub fn threshold_for_probability(p: f64) -> Option<u64> {
    if !(p > 0.0 && p <= 1.0) {
        return None;
    }
    // 2^56 - p*2^56 rather than (1-p)*2^56: `1 - p` loses the low bits of small probabilities.
    let kept = (p * MAX_THRESHOLD as f64).round() as u64;
    Some(MAX_THRESHOLD.saturating_sub(kept).min(MAX_THRESHOLD - 1))
}

/// The probability a threshold stands for: `(2^56 - T) / 2^56`.
pub fn probability_of_threshold(t: u64) -> f64 {
    (MAX_THRESHOLD - t.min(MAX_THRESHOLD - 1)) as f64 / MAX_THRESHOLD as f64
}

/// The `th` of a `tracestate` (its first `ot` entry), if present and well formed.
pub fn threshold_in(tracestate: &str) -> Option<u64> {
    tracestate
        .split(',')
        .map(str::trim)
        .find_map(|e| e.strip_prefix("ot="))?
        .split(';')
        .find_map(|s| s.strip_prefix("th:"))
        .and_then(parse_threshold)
}

fn parse_threshold(hex: &str) -> Option<u64> {
    if hex.is_empty() || hex.len() > 14 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let v = u64::from_str_radix(hex, 16).ok()?;
    Some(v << (4 * (14 - hex.len())))
}

fn format_threshold(t: u64) -> String {
    let s = format!("{t:014x}");
    let trimmed = s.trim_end_matches('0');
    if trimmed.is_empty() {
        "0".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// The new `tracestate` of a kept span that arrived with `existing`, or `None` when it stays as it is.
pub fn update_tracestate(existing: &str, applied: Applied) -> Option<String> {
    if applied == Applied::Everything {
        return None;
    }
    let entries: Vec<&str> = existing
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    let ot_pos = entries.iter().position(|e| e.starts_with("ot="));
    let ot_value = ot_pos.map(|i| &entries[i][3..]).unwrap_or("");
    let mut subs: Vec<&str> = ot_value.split(';').filter(|s| !s.is_empty()).collect();
    let th_pos = subs.iter().position(|s| s.starts_with("th:"));
    let existing_th = th_pos.and_then(|i| parse_threshold(&subs[i][3..]));

    let new_th = threshold_after(applied, existing_th);
    // `th:0` (probability 1) says nothing a missing `th` does not: not added where there was none.
    let new_th = new_th.filter(|&t| t != 0 || existing_th.is_some());
    if new_th == existing_th && (th_pos.is_none() || existing_th.is_some()) {
        return None;
    }
    let new_sub = new_th.map(|t| format!("th:{}", format_threshold(t)));
    match (th_pos, &new_sub) {
        (Some(i), Some(s)) => subs[i] = s,
        (Some(i), None) => {
            subs.remove(i);
        }
        (None, Some(s)) => subs.insert(0, s),
        (None, None) => return None,
    }
    let mut out: Vec<String> = Vec::with_capacity(entries.len() + 1);
    if !subs.is_empty() {
        out.push(format!("ot={}", subs.join(";")));
    }
    // A key may appear only once in a tracestate; later `ot` entries (invalid) are dropped so that no
    // stale threshold survives behind the one just written.
    for e in &entries {
        if !e.starts_with("ot=") {
            out.push((*e).to_owned());
        }
    }
    Some(out.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_follow_the_spec_examples() {
        assert_eq!(
            threshold_for_probability(1.0)
                .map(format_threshold)
                .as_deref(),
            Some("0")
        );
        assert_eq!(
            threshold_for_probability(0.5)
                .map(format_threshold)
                .as_deref(),
            Some("8")
        );
        assert_eq!(
            threshold_for_probability(0.25)
                .map(format_threshold)
                .as_deref(),
            Some("c")
        );
        assert_eq!(
            threshold_for_probability(0.1)
                .map(format_threshold)
                .as_deref(),
            Some("e6666666666666")
        );
        assert_eq!(threshold_for_probability(0.0), None);
        assert_eq!(parse_threshold("8"), Some(1 << 55));
    }

    fn consistent(p: f64) -> Applied {
        Applied::of(Some(p), false)
    }

    #[test]
    fn keep_with_probability_adds_th() {
        assert_eq!(
            update_tracestate("", consistent(0.1)).as_deref(),
            Some("ot=th:e6666666666666")
        );
        assert_eq!(
            update_tracestate("vendor=x", consistent(0.5)).as_deref(),
            Some("ot=th:8,vendor=x")
        );
    }

    #[test]
    fn probability_one_without_existing_threshold_changes_nothing() {
        assert_eq!(update_tracestate("", consistent(1.0)), None);
        assert_eq!(
            update_tracestate("ot=rv:abcdefabcdefab", consistent(1.0)),
            None
        );
        assert_eq!(update_tracestate("", Applied::of(Some(1.0), true)), None);
    }

    #[test]
    fn only_raises_an_existing_threshold() {
        // Head sampling at 50 % (th:8) then we keep at 100 %: stays th:8.
        assert_eq!(update_tracestate("ot=th:8", consistent(1.0)), None);
        // Head at 50 %, we keep 10 % of those: the higher threshold wins.
        assert_eq!(
            update_tracestate("ot=th:8;rv:01", consistent(0.1)).as_deref(),
            Some("ot=th:e6666666666666;rv:01")
        );
        // Existing higher than ours: unchanged.
        assert_eq!(update_tracestate("ot=th:f", consistent(0.5)), None);
    }

    #[test]
    fn a_deterministic_keep_leaves_the_upstream_threshold() {
        // The defect of issue 19: a rule keeping every error erased the head sampler's 50 %.
        let keep_errors = Applied::of(None, false);
        assert_eq!(keep_errors, Applied::Everything);
        for ts in [
            "ot=th:8",
            "ot=th:8;rv:0123456789abcd,v=1",
            "v=1,ot=th:c",
            "",
        ] {
            assert_eq!(update_tracestate(ts, keep_errors), None, "{ts}");
        }
    }

    #[test]
    fn a_share_multiplies_with_the_upstream_probability() {
        // Head at 50 %, a limiter keeps 20 % of what reaches it: 10 % overall.
        let limiter = Applied::of(Some(0.2), true);
        assert_eq!(limiter, Applied::Share(0.2));
        assert_eq!(
            update_tracestate("ot=th:8", limiter).as_deref(),
            Some("ot=th:e6666666666666")
        );
        // No upstream threshold: the share itself.
        assert_eq!(
            update_tracestate("v=1", Applied::Share(0.25)).as_deref(),
            Some("ot=th:c,v=1")
        );
        // Other `ot` sub-keys and vendors stay, in their places.
        assert_eq!(
            update_tracestate("a=1,ot=rv:0123456789abcd;th:c;x:y,b=2", Applied::Share(0.5))
                .as_deref(),
            Some("ot=rv:0123456789abcd;th:e;x:y,a=1,b=2")
        );
        // Raised, never lowered, whatever the rounding.
        for up in ["1", "8", "fffffffffffff", "c"] {
            let before = threshold_in(&format!("ot=th:{up}")).expect("valid");
            let after = update_tracestate(&format!("ot=th:{up}"), Applied::Share(0.999_999))
                .map_or(before, |ts| threshold_in(&ts).expect("th"));
            assert!(after >= before, "{up}");
        }
    }

    #[test]
    fn threshold_arithmetic_round_trips() {
        for p in [1.0, 0.5, 0.25, 0.1, 0.01, 1e-6] {
            let t = threshold_for_probability(p).expect("in range");
            assert!((probability_of_threshold(t) - p).abs() < 1e-12, "{p}");
            let parsed = parse_threshold(&format_threshold(t)).expect("parses");
            assert_eq!(parsed, t, "{p}");
        }
        assert_eq!(threshold_in("v=1,ot=rv:0123456789abcd;th:8"), Some(1 << 55));
        assert_eq!(threshold_in("ot=th:zz"), None);
        assert_eq!(threshold_in("ot=th:123456789abcdef"), None, "15 digits");
    }

    #[test]
    fn duplicate_ot_entries_cannot_keep_a_stale_threshold() {
        // Invalid (a key twice), but sent by someone: the second `ot` must not survive the update.
        assert_eq!(
            update_tracestate("ot=th:8,v=1,ot=th:4", Applied::Unknown).as_deref(),
            Some("v=1")
        );
        assert_eq!(
            update_tracestate("ot=th:8,ot=th:f", consistent(0.25)).as_deref(),
            Some("ot=th:c")
        );
    }

    #[test]
    fn unknown_probability_erases_th() {
        assert_eq!(Applied::of(None, true), Applied::Unknown);
        assert_eq!(
            update_tracestate("ot=th:8;rv:01,v=1", Applied::Unknown).as_deref(),
            Some("ot=rv:01,v=1")
        );
        assert_eq!(
            update_tracestate("ot=th:8", Applied::Unknown).as_deref(),
            Some("")
        );
        assert_eq!(update_tracestate("v=1", Applied::Unknown), None);
    }
}
