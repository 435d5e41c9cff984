//! `span-count`: keeps (or drops) traces whose span count is within `[min, max]`. Abstains otherwise.
//!
//! Config: `{"min": 100}`, `{"min": 1, "max": 2, "action": "drop"}`.

use tailgate_plugin_sdk::serde::Deserialize;
use tailgate_plugin_sdk::{Decision, Interest, ProjectedAttribute, Sampler, Trace, TraceSummary};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, crate = "tailgate_plugin_sdk::serde")]
struct Config {
    #[serde(default)]
    min: u32,
    max: Option<u32>,
    #[serde(default)]
    action: Action,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase", crate = "tailgate_plugin_sdk::serde")]
enum Action {
    #[default]
    Keep,
    Drop,
}

/// The configured sampler.
pub struct SpanCount {
    min: u32,
    max: u32,
    action: Action,
}

impl SpanCount {
    /// Builds the sampler from its JSON config.
    pub fn from_config(config: &str) -> Result<Self, String> {
        let c: Config = tailgate_plugin_sdk::parse_config(config)?;
        let max = c.max.unwrap_or(u32::MAX);
        if c.min > max {
            return Err(format!(
                "invalid configuration: min ({}) is greater than max ({max})",
                c.min
            ));
        }
        if c.min == 0 && c.max.is_none() {
            return Err("invalid configuration: set `min` and/or `max`".into());
        }
        Ok(SpanCount {
            min: c.min,
            max,
            action: c.action,
        })
    }

    /// The decision for a trace of `spans` spans.
    pub fn decide_on(&self, spans: u32) -> Decision {
        if !(self.min..=self.max).contains(&spans) {
            return Decision::abstain();
        }
        match self.action {
            Action::Keep => Decision::keep("span_count"),
            Action::Drop => Decision::drop("span_count"),
        }
    }
}

impl Sampler for SpanCount {
    fn init(config: &str) -> Result<(Self, Interest), String> {
        Ok((SpanCount::from_config(config)?, Interest::summary_only()))
    }

    fn decide(
        &mut self,
        summary: &TraceSummary,
        _: &[ProjectedAttribute],
        _: Option<&Trace>,
    ) -> Decision {
        self.decide_on(summary.span_count)
    }
}

tailgate_plugin_sdk::export_sampler!(SpanCount);

#[cfg(test)]
mod tests {
    use super::*;
    use tailgate_plugin_sdk::Verdict;

    #[test]
    fn range() {
        let p = SpanCount::from_config(r#"{"min": 3, "max": 5}"#).unwrap();
        let v: Vec<_> = (1..=6).map(|n| p.decide_on(n).verdict).collect();
        use Verdict::*;
        assert_eq!(v, [Abstain, Abstain, Keep, Keep, Keep, Abstain]);
        let p = SpanCount::from_config(r#"{"max": 1, "action": "drop"}"#).unwrap();
        assert_eq!(p.decide_on(1).verdict, Drop);
    }

    #[test]
    fn bad_config() {
        assert!(
            SpanCount::from_config(r#"{"min": 5, "max": 1}"#)
                .err()
                .unwrap()
                .contains("greater")
        );
        assert!(
            SpanCount::from_config(r#"{"minimum": 5}"#)
                .err()
                .unwrap()
                .contains("minimum")
        );
    }
}
