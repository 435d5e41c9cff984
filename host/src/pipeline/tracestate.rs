//! The OpenTelemetry sampling threshold in W3C `tracestate` (`ot=th:<hex>`), per the specification's
//! tracestate-probability-sampling document: the threshold `T = (1 - p) * 2^56` is written as up to 14 hex
//! digits with trailing zeros removed; a downstream sampler may only raise an existing threshold, and must
//! erase it when the probability it applied is unknown (e.g. a rate limiter).

const MAX_THRESHOLD: u64 = 1 << 56;

/// The threshold for keeping with probability `p` (`0 < p <= 1`), or `None` outside that range.
pub fn threshold_for_probability(p: f64) -> Option<u64> {
    if !(p > 0.0 && p <= 1.0) {
        return None;
    }
    // 2^56 - p*2^56 rather than (1-p)*2^56: `1 - p` loses the low bits of small probabilities.
    let kept = (p * MAX_THRESHOLD as f64).round() as u64;
    Some(MAX_THRESHOLD.saturating_sub(kept).min(MAX_THRESHOLD - 1))
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

/// The new `tracestate` after keeping a span with `probability` (`None` = unknown), or `None` when the
/// existing value stays as it is.
pub fn update_tracestate(existing: &str, probability: Option<f64>) -> Option<String> {
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

    let new_th = match probability.and_then(threshold_for_probability) {
        Some(ours) => {
            let t = existing_th.map_or(ours, |e| e.max(ours));
            if t == 0 && existing_th.is_none() {
                None
            } else {
                Some(t)
            }
        }
        None => None,
    };
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

    #[test]
    fn keep_with_probability_adds_th() {
        assert_eq!(
            update_tracestate("", Some(0.1)).as_deref(),
            Some("ot=th:e6666666666666")
        );
        assert_eq!(
            update_tracestate("vendor=x", Some(0.5)).as_deref(),
            Some("ot=th:8,vendor=x")
        );
    }

    #[test]
    fn probability_one_without_existing_threshold_changes_nothing() {
        assert_eq!(update_tracestate("", Some(1.0)), None);
        assert_eq!(update_tracestate("ot=rv:abcdefabcdefab", Some(1.0)), None);
    }

    #[test]
    fn only_raises_an_existing_threshold() {
        // Head sampling at 50 % (th:8) then we keep at 100 %: stays th:8.
        assert_eq!(update_tracestate("ot=th:8", Some(1.0)), None);
        // Head at 50 %, we keep 10 % of those: the higher threshold wins.
        assert_eq!(
            update_tracestate("ot=th:8;rv:01", Some(0.1)).as_deref(),
            Some("ot=th:e6666666666666;rv:01")
        );
        // Existing higher than ours: unchanged.
        assert_eq!(update_tracestate("ot=th:f", Some(0.5)), None);
    }

    #[test]
    fn duplicate_ot_entries_cannot_keep_a_stale_threshold() {
        // Invalid (a key twice), but sent by someone: the second `ot` must not survive the update.
        assert_eq!(
            update_tracestate("ot=th:8,v=1,ot=th:4", None).as_deref(),
            Some("v=1")
        );
        assert_eq!(
            update_tracestate("ot=th:8,ot=th:f", Some(0.25)).as_deref(),
            Some("ot=th:c")
        );
    }

    #[test]
    fn unknown_probability_erases_th() {
        assert_eq!(
            update_tracestate("ot=th:8;rv:01,v=1", None).as_deref(),
            Some("ot=rv:01,v=1")
        );
        assert_eq!(update_tracestate("ot=th:8", None).as_deref(), Some(""));
        assert_eq!(update_tracestate("v=1", None), None);
    }
}
