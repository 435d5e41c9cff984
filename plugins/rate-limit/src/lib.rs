//! `rate-limit`: keeps at most `traces_per_second` traces, or `spans_per_second` spans, per second per key
//! (a token bucket of size `burst` per key, in traces or spans) and drops (or abstains on) the rest. The
//! key is the trace's `service.name` by default, or the value of another resource or span attribute
//! (`"key": ""`: one bucket for all traces, as the Collector's `rate_limiting`). Time
//! comes from the host (`now-unix-nano` in the summary), so the plugin needs no clock. The plugin is
//! stateful: the host runs one instance of it.
//!
//! In spans, a trace costs its span count. A trace larger than the burst is kept when the bucket is full
//! and leaves it in debt, repaid at the rate before the next keep: the long-run rate holds and no trace
//! is too big to ever be kept.
//!
//! Each keep reports the share of the key's traffic kept over the current and the previous second
//! (traces, or spans for a span limit; 1 while nothing was limited): the host multiplies it with the
//! trace's upstream sampling probability and writes the result as the spans' `ot=th`, so adjusted counts
//! stay true behind the limit (exactly at a steady rate; a burst is counted low until the window moves
//! past it).
//!
//! Config: `{"traces_per_second": 100, "burst": 200, "key": "service.name", "on": "resource",
//! "max_keys": 10000, "otherwise": "drop"}`, or `{"spans_per_second": 5000, ...}` instead.

use std::collections::HashMap;
use tailgate_plugin_sdk::serde::Deserialize;
use tailgate_plugin_sdk::{
    Decision, Interest, KeyLevel, ProjectedAttribute, Sampler, Trace, TraceKey, TraceSummary,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, crate = "tailgate_plugin_sdk::serde")]
struct Config {
    traces_per_second: Option<f64>,
    spans_per_second: Option<f64>,
    burst: Option<f64>,
    #[serde(default = "service_name")]
    key: String,
    #[serde(default)]
    on: KeyLevel,
    #[serde(default = "default_max_keys")]
    max_keys: usize,
    #[serde(default)]
    otherwise: Otherwise,
}

fn service_name() -> String {
    "service.name".into()
}

fn default_max_keys() -> usize {
    10_000
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "lowercase", crate = "tailgate_plugin_sdk::serde")]
enum Otherwise {
    #[default]
    Drop,
    Abstain,
}

struct Bucket {
    tokens: f64,
    last_nanos: u64,
    /// Start of the current one-second window of `seen` / `kept`.
    window_nanos: u64,
    /// Traces seen and kept in the current window, and in the one before.
    seen: [u64; 2],
    kept: [u64; 2],
}

/// Length of a share-counting window.
const WINDOW_NANOS: u64 = 1_000_000_000;

impl Bucket {
    /// Counts one trace of `weight` (1, or its spans) at `now` and returns the share of the key's
    /// traffic kept over the current and the previous window before this one (what this trace's chance
    /// was); 1 when none was seen.
    fn count(&mut self, now: u64, kept: bool, weight: u64) -> f64 {
        let windows = now.saturating_sub(self.window_nanos) / WINDOW_NANOS;
        if windows > 0 {
            // The current window becomes the previous one; after a gap of two or more, both are empty.
            let carry = windows == 1;
            self.seen = [0, if carry { self.seen[0] } else { 0 }];
            self.kept = [0, if carry { self.kept[0] } else { 0 }];
            self.window_nanos += windows * WINDOW_NANOS;
        }
        let seen = self.seen[0] + self.seen[1];
        let kept_before = self.kept[0] + self.kept[1];
        self.seen[0] += weight;
        if kept {
            self.kept[0] += weight;
        }
        let share = match (seen, kept_before) {
            (0, _) => 1.0,
            // Nothing kept among them: this is the one keep among `seen + weight`.
            (_, 0) => weight as f64 / (seen + weight) as f64,
            _ => kept_before as f64 / seen as f64,
        };
        share.min(1.0)
    }
}

/// The configured sampler and its buckets.
pub struct RateLimit {
    /// Tokens per second: traces, or spans when `in_spans`.
    rate: f64,
    burst: f64,
    in_spans: bool,
    key: TraceKey,
    max_keys: usize,
    otherwise: Otherwise,
    buckets: HashMap<String, Bucket>,
}

impl RateLimit {
    /// Builds the sampler and its interest from the JSON config.
    pub fn from_config(config: &str) -> Result<(Self, Interest), String> {
        let c: Config = tailgate_plugin_sdk::parse_config(config)?;
        let (rate, unit, in_spans) = match (c.traces_per_second, c.spans_per_second) {
            (Some(r), None) => (r, "traces_per_second", false),
            (None, Some(r)) => (r, "spans_per_second", true),
            _ => {
                return Err("invalid configuration: set exactly one of `traces_per_second` or `spans_per_second`".into());
            }
        };
        if !(rate > 0.0 && rate.is_finite()) {
            return Err(format!(
                "invalid configuration: {unit} must be a positive number"
            ));
        }
        let burst = c.burst.unwrap_or(rate.max(1.0));
        if !(burst >= 1.0 && burst.is_finite()) {
            return Err("invalid configuration: burst must be at least 1".into());
        }
        let (key, interest) = TraceKey::new(&c.key, c.on, Interest::summary_only().stateful());
        let p = RateLimit {
            rate,
            burst,
            in_spans,
            key,
            max_keys: c.max_keys.max(1),
            otherwise: c.otherwise,
            buckets: HashMap::new(),
        };
        Ok((p, interest))
    }

    /// The decision for one trace at the summary's `now`.
    pub fn decide_on(
        &mut self,
        summary: &TraceSummary,
        attributes: &[ProjectedAttribute],
    ) -> Decision {
        let key = self.key.of(summary, attributes);
        let now = summary.now_unix_nano;
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.max_keys {
            // Bound memory: forget the bucket idle the longest.
            if let Some(oldest) = self
                .buckets
                .iter()
                .min_by_key(|(_, b)| b.last_nanos)
                .map(|(k, _)| k.clone())
            {
                self.buckets.remove(&oldest);
            }
        }
        let burst = self.burst;
        let b = self.buckets.entry(key).or_insert(Bucket {
            tokens: burst,
            last_nanos: now,
            window_nanos: now,
            seen: [0; 2],
            kept: [0; 2],
        });
        let elapsed = now.saturating_sub(b.last_nanos) as f64 / 1e9;
        b.tokens = (b.tokens + elapsed * self.rate).min(burst);
        b.last_nanos = b.last_nanos.max(now);
        let cost = if self.in_spans {
            f64::from(summary.span_count.max(1))
        } else {
            1.0
        };
        let weight = cost as u64;
        // A trace larger than the burst needs a full bucket and leaves it in debt.
        if b.tokens >= cost.min(burst) {
            b.tokens -= cost;
            let share = b.count(now, true, weight);
            Decision::keep("rate_limit").with_probability(share)
        } else {
            b.count(now, false, weight);
            match self.otherwise {
                Otherwise::Drop => Decision::drop("rate_limited"),
                Otherwise::Abstain => Decision::abstain(),
            }
        }
    }
}

impl Sampler for RateLimit {
    fn init(config: &str) -> Result<(Self, Interest), String> {
        RateLimit::from_config(config)
    }

    fn decide(
        &mut self,
        summary: &TraceSummary,
        attributes: &[ProjectedAttribute],
        _: Option<&Trace>,
    ) -> Decision {
        self.decide_on(summary, attributes)
    }
}

tailgate_plugin_sdk::export_sampler!(RateLimit);

#[cfg(test)]
mod tests {
    use super::*;
    use tailgate_plugin_sdk::testing::{resource_attr, summary};
    use tailgate_plugin_sdk::{AttributeValue, Verdict};

    #[test]
    fn token_bucket_per_service() {
        let (mut p, interest) = RateLimit::from_config(r#"{"traces_per_second": 2}"#).unwrap();
        assert!(interest.stateful && interest.resource_attributes.is_empty());
        let mut s = summary();
        let mut kept = 0;
        // 10 s at 100 calls per second for one service: 2 per second plus the initial burst of 2.
        for i in 0..1000u64 {
            s.now_unix_nano = 1_000_000_000 + i * 10_000_000;
            if p.decide_on(&s, &[]).verdict == Verdict::Keep {
                kept += 1;
            }
        }
        assert!((20..=23).contains(&kept), "{kept}");
        s.service_name = "other".into();
        assert_eq!(
            p.decide_on(&s, &[]).verdict,
            Verdict::Keep,
            "separate bucket"
        );
    }

    #[test]
    fn keeps_report_the_share_kept_so_adjusted_counts_add_up() {
        let (mut p, _) =
            RateLimit::from_config(r#"{"traces_per_second": 10, "burst": 10}"#).unwrap();
        let mut s = summary();
        // Under the limit: everything kept, share 1.
        s.now_unix_nano = 1_000_000_000;
        assert_eq!(p.decide_on(&s, &[]).probability, Some(1.0));
        // 20 s at 100 traces per second: about one in ten kept. After the first seconds (the burst,
        // where the share lags), the kept ones' 1/share add up to what was seen.
        let (mut adjusted, mut seen) = (0.0, 0u32);
        for i in 1..2000u64 {
            s.now_unix_nano = 1_000_000_000 + i * 10_000_000;
            let d = p.decide_on(&s, &[]);
            if i < 500 {
                continue;
            }
            seen += 1;
            if d.verdict == Verdict::Keep {
                let share = d.probability.expect("a keep reports its share");
                assert!(share > 0.0 && share <= 1.0);
                adjusted += 1.0 / share;
            }
        }
        let err = (adjusted - f64::from(seen)).abs() / f64::from(seen);
        assert!(err < 0.05, "adjusted {adjusted:.0} of {seen} seen");
    }

    #[test]
    fn projected_key_and_key_bound() {
        let (mut p, interest) =
            RateLimit::from_config(r#"{"traces_per_second": 1, "key": "tenant", "max_keys": 2}"#)
                .unwrap();
        assert_eq!(interest.resource_attributes, ["tenant"]);
        let s = summary();
        for t in ["a", "b", "c", "a"] {
            let attrs = [resource_attr(0, 0, AttributeValue::Str(t.into()))];
            p.decide_on(&s, &attrs);
        }
        assert!(p.buckets.len() <= 2);
        let attrs = [resource_attr(0, 0, AttributeValue::Str("a".into()))];
        assert_eq!(p.decide_on(&s, &attrs).verdict, Verdict::Drop);
    }

    #[test]
    fn spans_per_second_charges_each_trace_its_spans_and_counts_true() {
        let (mut p, _) =
            RateLimit::from_config(r#"{"spans_per_second": 100, "burst": 100}"#).unwrap();
        let mut s = summary();
        // 20 s of 50 traces per second of 10 spans: 500 spans/s offered, 100 kept per second.
        let (mut kept_spans, mut adjusted, mut seen) = (0u64, 0.0, 0u64);
        for i in 0..1000u64 {
            s.now_unix_nano = 1_000_000_000 + i * 20_000_000;
            s.span_count = 10;
            let d = p.decide_on(&s, &[]);
            if d.verdict == Verdict::Keep {
                kept_spans += 10;
            }
            if i >= 250 {
                seen += 10;
                if d.verdict == Verdict::Keep {
                    adjusted += 10.0 / d.probability.expect("a keep reports its share");
                }
            }
        }
        // 100 spans of burst plus 100 per second over 20 s.
        assert!((2000..=2110).contains(&kept_spans), "{kept_spans}");
        let err = (adjusted - seen as f64).abs() / seen as f64;
        assert!(err < 0.05, "adjusted {adjusted:.0} of {seen} spans seen");
    }

    #[test]
    fn a_trace_larger_than_the_burst_is_kept_from_a_full_bucket_and_repaid() {
        let (mut p, _) =
            RateLimit::from_config(r#"{"spans_per_second": 10, "burst": 10}"#).unwrap();
        let mut s = summary();
        s.now_unix_nano = 1_000_000_000;
        s.span_count = 50;
        assert_eq!(p.decide_on(&s, &[]).verdict, Verdict::Keep, "full bucket");
        // 40 spans of debt: 4 s at 10 spans/s before the bucket holds a whole burst again.
        s.span_count = 1;
        s.now_unix_nano += 3_000_000_000;
        assert_eq!(p.decide_on(&s, &[]).verdict, Verdict::Drop, "still in debt");
        s.now_unix_nano += 2_000_000_000;
        assert_eq!(p.decide_on(&s, &[]).verdict, Verdict::Keep, "repaid");
    }

    #[test]
    fn an_empty_key_is_one_bucket_for_every_trace() {
        let (mut p, interest) =
            RateLimit::from_config(r#"{"traces_per_second": 1, "burst": 1, "key": ""}"#).unwrap();
        assert!(interest.resource_attributes.is_empty() && interest.span_attributes.is_empty());
        let mut s = summary();
        assert_eq!(p.decide_on(&s, &[]).verdict, Verdict::Keep);
        s.service_name = "other".into();
        assert_eq!(p.decide_on(&s, &[]).verdict, Verdict::Drop, "same bucket");
    }

    #[test]
    fn bad_config() {
        assert!(RateLimit::from_config(r#"{"traces_per_second": 0}"#).is_err());
        let both = RateLimit::from_config(r#"{"traces_per_second": 1, "spans_per_second": 1}"#);
        assert!(both.err().unwrap().contains("exactly one of"));
        assert!(
            RateLimit::from_config(r#"{"spans_per_second": -1}"#)
                .err()
                .unwrap()
                .contains("spans_per_second must be a positive number")
        );
        assert!(
            RateLimit::from_config(r#"{"rate": 1}"#)
                .err()
                .unwrap()
                .contains("rate")
        );
    }
}
