//! `rate-limit`: keeps at most `traces_per_second` traces per second per key (a token bucket of size
//! `burst` per key) and drops (or abstains on) the rest. The key is the trace's `service.name` by default,
//! or the value of another resource or span attribute. Time comes from the host (`now-unix-nano` in the
//! summary), so the plugin needs no clock. The plugin is stateful: the host runs one instance of it.
//!
//! Config: `{"traces_per_second": 100, "burst": 200, "key": "service.name", "on": "resource",
//! "max_keys": 10000, "otherwise": "drop"}`.

use std::collections::HashMap;
use tailgate_plugin_sdk::serde::Deserialize;
use tailgate_plugin_sdk::{
    AttributeValue, Decision, Interest, ProjectedAttribute, Sampler, Trace, TraceSummary,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, crate = "tailgate_plugin_sdk::serde")]
struct Config {
    traces_per_second: f64,
    burst: Option<f64>,
    #[serde(default = "service_name")]
    key: String,
    #[serde(default)]
    on: Level,
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

#[derive(Deserialize, Default, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase", crate = "tailgate_plugin_sdk::serde")]
enum Level {
    #[default]
    Resource,
    Span,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "lowercase", crate = "tailgate_plugin_sdk::serde")]
enum Otherwise {
    #[default]
    Drop,
    Abstain,
}

/// Where the key comes from.
#[derive(PartialEq)]
enum KeySource {
    /// `summary.service-name` (no projection needed).
    ServiceName,
    /// The first projected value.
    Projected,
}

struct Bucket {
    tokens: f64,
    last_nanos: u64,
}

/// The configured sampler and its buckets.
pub struct RateLimit {
    rate: f64,
    burst: f64,
    source: KeySource,
    max_keys: usize,
    otherwise: Otherwise,
    buckets: HashMap<String, Bucket>,
}

impl RateLimit {
    /// Builds the sampler and its interest from the JSON config.
    pub fn from_config(config: &str) -> Result<(Self, Interest), String> {
        let c: Config = tailgate_plugin_sdk::parse_config(config)?;
        if !(c.traces_per_second > 0.0 && c.traces_per_second.is_finite()) {
            return Err(
                "invalid configuration: traces_per_second must be a positive number".into(),
            );
        }
        let burst = c.burst.unwrap_or(c.traces_per_second.max(1.0));
        if !(burst >= 1.0 && burst.is_finite()) {
            return Err("invalid configuration: burst must be at least 1".into());
        }
        let mut interest = Interest::summary_only().stateful();
        let source = if c.key == "service.name" && c.on == Level::Resource {
            KeySource::ServiceName
        } else {
            interest = match c.on {
                Level::Resource => interest.with_resource_attribute(&c.key),
                Level::Span => interest.with_span_attribute(&c.key),
            };
            KeySource::Projected
        };
        let p = RateLimit {
            rate: c.traces_per_second,
            burst,
            source,
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
        let key = match self.source {
            KeySource::ServiceName => summary.service_name.clone(),
            KeySource::Projected => match attributes.first().map(|a| &a.value) {
                Some(AttributeValue::Str(s)) => s.clone(),
                Some(AttributeValue::Int(i)) => i.to_string(),
                Some(AttributeValue::Boolean(b)) => b.to_string(),
                _ => String::new(),
            },
        };
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
        });
        let elapsed = now.saturating_sub(b.last_nanos) as f64 / 1e9;
        b.tokens = (b.tokens + elapsed * self.rate).min(burst);
        b.last_nanos = b.last_nanos.max(now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Decision::keep("rate_limit")
        } else {
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
    use tailgate_plugin_sdk::Verdict;
    use tailgate_plugin_sdk::testing::{resource_attr, summary};

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
    fn bad_config() {
        assert!(RateLimit::from_config(r#"{"traces_per_second": 0}"#).is_err());
        assert!(
            RateLimit::from_config(r#"{"rate": 1}"#)
                .err()
                .unwrap()
                .contains("rate")
        );
    }
}
