//! `attribute-match`: keeps (or drops) traces where span or resource attributes match conditions: an exact
//! string, one of several strings, a regular expression (the `regex` crate: linear time, no
//! backtracking), a numeric range, or a boolean. Abstains when the conditions do not hold.
//!
//! ```json
//! {"conditions": [
//!     {"key": "http.route", "regex": "^/admin"},
//!     {"key": "deployment.environment", "on": "resource", "equals": "prod"},
//!     {"key": "http.response.status_code", "min": 500, "max": 599},
//!     {"key": "debug", "bool": true},
//!     {"key": "customer.tier", "in": ["gold", "platinum"]}],
//!  "mode": "any", "action": "keep"}
//! ```
//! A condition holds when any span (or resource) in the trace has a matching value; string matchers also
//! look inside string arrays. `mode: all` requires every condition to hold (each possibly on a different
//! span).
//!
//! Each condition is a `tailgate:plugin@0.2.0` predicate: tailgate tests it while it receives the spans,
//! and a call carries only how many spans matched each condition (no attribute value crosses into the
//! plugin).

use tailgate_plugin_sdk::serde::Deserialize;
use tailgate_plugin_sdk::v0_2::{Decision, Predicate, Sampler, SamplerInterest, ValueTest};
use tailgate_plugin_sdk::{ProjectedAttribute, Trace, TraceSummary};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, crate = "tailgate_plugin_sdk::serde")]
struct Config {
    conditions: Vec<ConditionConfig>,
    #[serde(default)]
    mode: Mode,
    #[serde(default)]
    action: Action,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, crate = "tailgate_plugin_sdk::serde")]
struct ConditionConfig {
    key: String,
    #[serde(default)]
    on: Level,
    equals: Option<String>,
    #[serde(rename = "in")]
    one_of: Option<Vec<String>>,
    regex: Option<String>,
    min: Option<f64>,
    max: Option<f64>,
    #[serde(rename = "bool")]
    boolean: Option<bool>,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase", crate = "tailgate_plugin_sdk::serde")]
enum Level {
    #[default]
    Span,
    Resource,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase", crate = "tailgate_plugin_sdk::serde")]
enum Mode {
    #[default]
    Any,
    All,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase", crate = "tailgate_plugin_sdk::serde")]
enum Action {
    #[default]
    Keep,
    Drop,
}

/// How one condition tests a value.
/// The configured conditions, in order: condition i is predicate i of the interest.
pub struct AttributeMatch {
    conditions: usize,
    mode: Mode,
    action: Action,
}

impl AttributeMatch {
    /// Builds the sampler and its interest from the JSON config.
    pub fn from_config(config: &str) -> Result<(Self, SamplerInterest), String> {
        let c: Config = tailgate_plugin_sdk::parse_config(config)?;
        if c.conditions.is_empty() {
            return Err("invalid configuration: `conditions` is empty".into());
        }
        let mut interest = SamplerInterest::summary_only();
        let conditions = c.conditions.len();
        for (i, cc) in c.conditions.into_iter().enumerate() {
            let here = format!("invalid configuration: conditions[{i}] ({})", cc.key);
            let test = match (
                cc.equals,
                cc.one_of,
                cc.regex,
                cc.min.is_some() || cc.max.is_some(),
                cc.boolean,
            ) {
                (Some(e), None, None, false, None) => ValueTest::StrIn(vec![e]),
                (None, Some(v), None, false, None) => ValueTest::StrIn(v),
                // The host compiles the expression (the `regex` crate) and fails the load with a message
                // naming the predicate (its key and pattern) when it is invalid.
                (None, None, Some(r), false, None) => ValueTest::Regex(r),
                (None, None, None, true, None) => {
                    let (lo, hi) = (
                        cc.min.unwrap_or(f64::NEG_INFINITY),
                        cc.max.unwrap_or(f64::INFINITY),
                    );
                    if lo > hi {
                        return Err(format!("{here}: min is greater than max"));
                    }
                    ValueTest::double_range(lo, hi)
                }
                (None, None, None, false, Some(b)) => ValueTest::BoolIs(b),
                _ => {
                    return Err(format!(
                        "{here}: set exactly one of `equals`, `in`, `regex`, `min`/`max`, `bool`"
                    ));
                }
            };
            let predicate = match cc.on {
                Level::Span => Predicate::span(&cc.key, test),
                Level::Resource => Predicate::resource(&cc.key, test),
            };
            // One predicate per condition, even for duplicates, so condition i is predicate i.
            interest.predicates.push(predicate);
        }
        Ok((
            AttributeMatch {
                conditions,
                mode: c.mode,
                action: c.action,
            },
            interest,
        ))
    }

    /// The decision given, per condition, the number of spans for which it holds.
    pub fn decide_on(&self, predicate_matches: &[u32]) -> Decision {
        let holds = |i: usize| predicate_matches.get(i).is_some_and(|&n| n > 0);
        let matched = match self.mode {
            Mode::Any => (0..self.conditions).any(holds),
            Mode::All => (0..self.conditions).all(holds),
        };
        match (matched, self.action) {
            (false, _) => Decision::abstain(),
            (true, Action::Keep) => Decision::keep("attribute_match"),
            (true, Action::Drop) => Decision::drop("attribute_match"),
        }
    }
}

impl Sampler for AttributeMatch {
    fn init(config: &str) -> Result<(Self, SamplerInterest), String> {
        AttributeMatch::from_config(config)
    }

    fn decide(
        &mut self,
        _: &TraceSummary,
        predicate_matches: &[u32],
        _: &[ProjectedAttribute],
        _: Option<&Trace>,
    ) -> Decision {
        self.decide_on(predicate_matches)
    }
}

tailgate_plugin_sdk::export_sampler_v0_2!(AttributeMatch);

#[cfg(test)]
mod tests {
    use super::*;
    use tailgate_plugin_sdk::v0_2::Verdict;

    #[test]
    fn conditions_become_predicates() {
        let cfg = r#"{"conditions": [
            {"key": "http.route", "regex": "^/admin"},
            {"key": "env", "on": "resource", "equals": "prod"},
            {"key": "code", "min": 500, "max": 599},
            {"key": "debug", "bool": true},
            {"key": "tier", "in": ["gold", "platinum"]},
            {"key": "size", "min": 10}]}"#;
        let (_, interest) = AttributeMatch::from_config(cfg).unwrap();
        assert_eq!(
            interest.predicates,
            [
                Predicate::span("http.route", ValueTest::regex("^/admin")),
                Predicate::resource("env", ValueTest::equals("prod")),
                Predicate::span("code", ValueTest::double_range(500.0, 599.0)),
                Predicate::span("debug", ValueTest::BoolIs(true)),
                Predicate::span("tier", ValueTest::one_of(&["gold", "platinum"])),
                Predicate::span("size", ValueTest::double_range(10.0, f64::INFINITY)),
            ]
        );
        assert!(interest.projection.span_attributes.is_empty());
    }

    #[test]
    fn any_and_all() {
        let (p, _) = AttributeMatch::from_config(
            r#"{"conditions": [{"key": "a", "equals": "x"}, {"key": "b", "bool": true}]}"#,
        )
        .unwrap();
        assert_eq!(p.decide_on(&[0, 0]).verdict, Verdict::Abstain);
        assert_eq!(p.decide_on(&[0, 3]), Decision::keep("attribute_match"));
        let (p, _) = AttributeMatch::from_config(
            r#"{"mode": "all", "action": "drop", "conditions": [{"key": "a", "equals": "x"}, {"key": "b", "bool": true}]}"#,
        )
        .unwrap();
        assert_eq!(p.decide_on(&[1, 0]).verdict, Verdict::Abstain);
        assert_eq!(p.decide_on(&[1, 2]), Decision::drop("attribute_match"));
    }

    #[test]
    fn bad_config() {
        let e = |c: &str| AttributeMatch::from_config(c).err().unwrap();
        assert!(e(r#"{"conditions": [{"key": "a", "regexp": "x"}]}"#).contains("regexp"));
        assert!(
            e(r#"{"conditions": [{"key": "a", "regex": "x", "equals": "y"}]}"#)
                .contains("exactly one")
        );
        assert!(e(r#"{"conditions": []}"#).contains("empty"));
        assert!(e(r#"{"conditions": [{"key": "a", "min": 5, "max": 1}]}"#).contains("min"));
    }
}
