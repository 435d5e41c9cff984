//! `keep-slow`: keeps traces whose duration (earliest span start to latest span end) is at least a
//! threshold, optionally with a different threshold per root span name. Abstains otherwise.
//!
//! Config: `{"threshold": "1s", "per_root_name": {"GET /report": "10s"}}`.

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
}

/// The configured sampler.
pub struct KeepSlow {
    threshold_nanos: u64,
    per_root_name: HashMap<String, u64>,
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
        Ok(KeepSlow {
            threshold_nanos: nanos(c.threshold),
            per_root_name,
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
        if summary.duration_nanos >= threshold {
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
