//! `keep-slow`: keeps traces whose duration (earliest span start to latest span end) is at least a
//! threshold, optionally with a different threshold per root span name, and optionally at most an upper
//! threshold (the Collector's `upper_threshold_ms`: a band of durations, e.g. to keep the slow traces
//! but not the ones that only time out). Abstains otherwise.
//!
//! Config: `{"threshold": "1s", "per_root_name": {"GET /report": "10s"}, "upper_threshold": "30s"}`.

use std::collections::HashMap;
use std::time::Duration;
use tailgate_plugin_sdk::serde::Deserialize;
use tailgate_plugin_sdk::{Decision, Interest, ProjectedAttribute, Sampler, Trace, TraceSummary};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, crate = "tailgate_plugin_sdk::serde")]
struct Config {
    #[serde(deserialize_with = "tailgate_plugin_sdk::duration")]
    threshold: Duration,
    #[serde(default)]
    per_root_name: HashMap<String, String>,
    #[serde(default, deserialize_with = "optional_duration")]
    upper_threshold: Option<Duration>,
}

fn optional_duration<'de, D>(d: D) -> Result<Option<Duration>, D::Error>
where
    D: tailgate_plugin_sdk::serde::Deserializer<'de>,
{
    tailgate_plugin_sdk::duration(d).map(Some)
}

/// The configured sampler.
pub struct KeepSlow {
    threshold_nanos: u64,
    per_root_name: HashMap<String, u64>,
    /// Inclusive; `u64::MAX` when there is none.
    upper_nanos: u64,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl KeepSlow {
    /// Builds the sampler from its JSON config.
    pub fn from_config(config: &str) -> Result<Self, String> {
        let c: Config = tailgate_plugin_sdk::parse_config(config)?;
        let mut per_root_name = HashMap::new();
        for (name, text) in c.per_root_name {
            let d = tailgate_plugin_sdk::parse_duration(&text)
                .map_err(|e| format!("invalid configuration: per_root_name.{name}: {e}"))?;
            per_root_name.insert(name, nanos(d));
        }
        let upper_nanos = c.upper_threshold.map_or(u64::MAX, nanos);
        let lowest = per_root_name
            .values()
            .copied()
            .chain([nanos(c.threshold)])
            .max()
            .unwrap_or(0);
        if upper_nanos != u64::MAX && upper_nanos < lowest {
            return Err(format!(
                "invalid configuration: upper_threshold ({:?}) is below a threshold ({:?}): no trace could be kept",
                Duration::from_nanos(upper_nanos),
                Duration::from_nanos(lowest)
            ));
        }
        Ok(KeepSlow {
            threshold_nanos: nanos(c.threshold),
            per_root_name,
            upper_nanos,
        })
    }

    /// The decision for one trace summary.
    pub fn decide_on(&self, summary: &TraceSummary) -> Decision {
        let threshold = summary
            .root
            .as_ref()
            .and_then(|r| self.per_root_name.get(&r.name))
            .copied()
            .unwrap_or(self.threshold_nanos);
        if (threshold..=self.upper_nanos).contains(&summary.duration_nanos) {
            Decision::keep("slow")
        } else {
            Decision::abstain()
        }
    }
}

impl Sampler for KeepSlow {
    fn init(config: &str) -> Result<(Self, Interest), String> {
        Ok((KeepSlow::from_config(config)?, Interest::summary_only()))
    }

    fn decide(
        &mut self,
        summary: &TraceSummary,
        _: &[ProjectedAttribute],
        _: Option<&Trace>,
    ) -> Decision {
        self.decide_on(summary)
    }
}

tailgate_plugin_sdk::export_sampler!(KeepSlow);

#[cfg(test)]
mod tests {
    use super::*;
    use tailgate_plugin_sdk::testing::summary;
    use tailgate_plugin_sdk::{RootSpan, SpanKind, StatusCode, Verdict};

    #[test]
    fn threshold_and_per_root_override() {
        let p = KeepSlow::from_config(
            r#"{"threshold": "1s", "per_root_name": {"GET /report": "10s"}}"#,
        )
        .unwrap();
        let mut s = summary();
        s.duration_nanos = 999_999_999;
        assert_eq!(p.decide_on(&s).verdict, Verdict::Abstain);
        s.duration_nanos = 1_000_000_000;
        assert_eq!(p.decide_on(&s), Decision::keep("slow"));
        s.root = Some(RootSpan {
            name: "GET /report".into(),
            kind: SpanKind::Server,
            status: StatusCode::Unset,
            duration_nanos: 0,
        });
        assert_eq!(
            p.decide_on(&s).verdict,
            Verdict::Abstain,
            "report has a 10 s threshold"
        );
        s.duration_nanos = 11_000_000_000;
        assert_eq!(p.decide_on(&s).verdict, Verdict::Keep);
    }

    #[test]
    fn an_upper_threshold_keeps_a_band() {
        let p = KeepSlow::from_config(r#"{"threshold": "1s", "upper_threshold": "5s"}"#).unwrap();
        let mut s = summary();
        for (nanos, kept) in [
            (999_999_999, false),
            (1_000_000_000, true),
            (5_000_000_000, true),
            (5_000_000_001, false),
            (60_000_000_000, false),
        ] {
            s.duration_nanos = nanos;
            assert_eq!(p.decide_on(&s).verdict == Verdict::Keep, kept, "{nanos} ns");
        }
        let e = KeepSlow::from_config(
            r#"{"threshold": "1s", "per_root_name": {"GET /report": "10s"}, "upper_threshold": "5s"}"#,
        )
        .err()
        .unwrap();
        assert!(e.contains("upper_threshold"), "{e}");
    }

    #[test]
    fn bad_config_names_the_key() {
        let e = KeepSlow::from_config(r#"{"treshold": "1s"}"#)
            .err()
            .unwrap();
        assert!(e.contains("treshold"), "{e}");
        let e = KeepSlow::from_config(r#"{"threshold": "1s", "per_root_name": {"x": "fast"}}"#)
            .err()
            .unwrap();
        assert!(e.contains("per_root_name.x"), "{e}");
        assert!(
            KeepSlow::from_config("{}").is_err(),
            "threshold is required"
        );
    }
}
