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

use regex::Regex;
use tailgate_plugin_sdk::serde::Deserialize;
use tailgate_plugin_sdk::{
    AttributeLevel, AttributeValue, Decision, Interest, ProjectedAttribute, Sampler, ScalarValue,
    Trace, TraceSummary,
};

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
enum Matcher {
    Equals(String),
    OneOf(Vec<String>),
    Regex(Regex),
    Range(f64, f64),
    Bool(bool),
}

impl Matcher {
    fn matches_str(&self, s: &str) -> bool {
        match self {
            Matcher::Equals(e) => e == s,
            Matcher::OneOf(v) => v.iter().any(|e| e == s),
            Matcher::Regex(r) => r.is_match(s),
            _ => false,
        }
    }

    fn matches(&self, v: &AttributeValue) -> bool {
        match (self, v) {
            (Matcher::Range(lo, hi), v) => v.as_f64().is_some_and(|x| *lo <= x && x <= *hi),
            (Matcher::Bool(b), AttributeValue::Boolean(x)) => b == x,
            (_, AttributeValue::Str(s)) => self.matches_str(s),
            (_, AttributeValue::Array(items)) => items
                .iter()
                .any(|i| matches!(i, ScalarValue::Str(s) if self.matches_str(s))),
            _ => false,
        }
    }
}

struct Condition {
    level: AttributeLevel,
    /// Index of the key in the interest list of its level.
    key_index: u32,
    matcher: Matcher,
}

/// The configured sampler.
pub struct AttributeMatch {
    conditions: Vec<Condition>,
    mode: Mode,
    action: Action,
}

fn key_index(keys: &mut Vec<String>, key: &str) -> u32 {
    let at = keys.iter().position(|k| k == key).unwrap_or_else(|| {
        keys.push(key.to_owned());
        keys.len() - 1
    });
    at as u32
}

impl AttributeMatch {
    /// Builds the sampler and its interest from the JSON config.
    pub fn from_config(config: &str) -> Result<(Self, Interest), String> {
        let c: Config = tailgate_plugin_sdk::parse_config(config)?;
        if c.conditions.is_empty() {
            return Err("invalid configuration: `conditions` is empty".into());
        }
        let mut interest = Interest::summary_only();
        let mut conditions = Vec::new();
        for (i, cc) in c.conditions.into_iter().enumerate() {
            let here = format!("invalid configuration: conditions[{i}] ({})", cc.key);
            let matcher = match (
                cc.equals,
                cc.one_of,
                cc.regex,
                cc.min.is_some() || cc.max.is_some(),
                cc.boolean,
            ) {
                (Some(e), None, None, false, None) => Matcher::Equals(e),
                (None, Some(v), None, false, None) => Matcher::OneOf(v),
                (None, None, Some(r), false, None) => {
                    Matcher::Regex(Regex::new(&r).map_err(|e| format!("{here}: bad regex: {e}"))?)
                }
                (None, None, None, true, None) => {
                    let (lo, hi) = (
                        cc.min.unwrap_or(f64::NEG_INFINITY),
                        cc.max.unwrap_or(f64::INFINITY),
                    );
                    if lo > hi {
                        return Err(format!("{here}: min is greater than max"));
                    }
                    Matcher::Range(lo, hi)
                }
                (None, None, None, false, Some(b)) => Matcher::Bool(b),
                _ => {
                    return Err(format!(
                        "{here}: set exactly one of `equals`, `in`, `regex`, `min`/`max`, `bool`"
                    ));
                }
            };
            let (level, key_index) = match cc.on {
                Level::Span => (
                    AttributeLevel::Span,
                    key_index(&mut interest.span_attributes, &cc.key),
                ),
                Level::Resource => (
                    AttributeLevel::Resource,
                    key_index(&mut interest.resource_attributes, &cc.key),
                ),
            };
            conditions.push(Condition {
                level,
                key_index,
                matcher,
            });
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

    fn holds(&self, c: &Condition, attributes: &[ProjectedAttribute]) -> bool {
        attributes.iter().any(|a| {
            a.level == c.level && a.key_index == c.key_index && c.matcher.matches(&a.value)
        })
    }

    /// The decision for the projected attributes of one trace.
    pub fn decide_on(&self, attributes: &[ProjectedAttribute]) -> Decision {
        let matched = match self.mode {
            Mode::Any => self.conditions.iter().any(|c| self.holds(c, attributes)),
            Mode::All => self.conditions.iter().all(|c| self.holds(c, attributes)),
        };
        match (matched, self.action) {
            (false, _) => Decision::abstain(),
            (true, Action::Keep) => Decision::keep("attribute_match"),
            (true, Action::Drop) => Decision::drop("attribute_match"),
        }
    }
}

impl Sampler for AttributeMatch {
    fn init(config: &str) -> Result<(Self, Interest), String> {
        AttributeMatch::from_config(config)
    }

    fn decide(
        &mut self,
        _: &TraceSummary,
        attributes: &[ProjectedAttribute],
        _: Option<&Trace>,
    ) -> Decision {
        self.decide_on(attributes)
    }
}

tailgate_plugin_sdk::export_sampler!(AttributeMatch);

#[cfg(test)]
mod tests {
    use super::*;
    use tailgate_plugin_sdk::Verdict;
    use tailgate_plugin_sdk::testing::{resource_attr, span_attr};

    fn s(v: &str) -> AttributeValue {
        AttributeValue::Str(v.into())
    }

    #[test]
    fn any_and_all() {
        let cfg = r#"{"conditions": [
            {"key": "http.route", "regex": "^/admin"},
            {"key": "env", "on": "resource", "equals": "prod"},
            {"key": "code", "min": 500, "max": 599},
            {"key": "debug", "bool": true},
            {"key": "tier", "in": ["gold", "platinum"]}]}"#;
        let (p, interest) = AttributeMatch::from_config(cfg).unwrap();
        assert_eq!(
            interest.span_attributes,
            ["http.route", "code", "debug", "tier"]
        );
        assert_eq!(interest.resource_attributes, ["env"]);
        let v = |a: &[ProjectedAttribute]| p.decide_on(a).verdict;
        assert_eq!(v(&[]), Verdict::Abstain);
        assert_eq!(v(&[span_attr(0, 0, s("/admin/users"))]), Verdict::Keep);
        assert_eq!(v(&[span_attr(0, 0, s("/users"))]), Verdict::Abstain);
        assert_eq!(v(&[resource_attr(0, 0, s("prod"))]), Verdict::Keep);
        assert_eq!(
            v(&[span_attr(0, 0, s("prod"))]),
            Verdict::Abstain,
            "wrong level"
        );
        assert_eq!(
            v(&[span_attr(3, 1, AttributeValue::Int(503))]),
            Verdict::Keep
        );
        assert_eq!(
            v(&[span_attr(3, 1, AttributeValue::Double(499.5))]),
            Verdict::Abstain
        );
        assert_eq!(
            v(&[span_attr(1, 2, AttributeValue::Boolean(true))]),
            Verdict::Keep
        );
        assert_eq!(
            v(&[span_attr(1, 2, AttributeValue::Boolean(false))]),
            Verdict::Abstain
        );
        let arr = AttributeValue::Array(vec![
            ScalarValue::Str("bronze".into()),
            ScalarValue::Str("gold".into()),
        ]);
        assert_eq!(v(&[span_attr(1, 3, arr)]), Verdict::Keep);

        let (p, _) = AttributeMatch::from_config(
            r#"{"mode": "all", "action": "drop", "conditions": [{"key": "a", "equals": "x"}, {"key": "b", "bool": true}]}"#,
        )
        .unwrap();
        assert_eq!(
            p.decide_on(&[span_attr(0, 0, s("x"))]).verdict,
            Verdict::Abstain
        );
        let both = [
            span_attr(0, 0, s("x")),
            span_attr(4, 1, AttributeValue::Boolean(true)),
        ];
        assert_eq!(p.decide_on(&both).verdict, Verdict::Drop);
    }

    #[test]
    fn bad_config() {
        let e = |c: &str| AttributeMatch::from_config(c).err().unwrap();
        assert!(e(r#"{"conditions": [{"key": "a", "regexp": "x"}]}"#).contains("regexp"));
        assert!(e(r#"{"conditions": [{"key": "a", "regex": "("}]}"#).contains("bad regex"));
        assert!(
            e(r#"{"conditions": [{"key": "a", "regex": "x", "equals": "y"}]}"#)
                .contains("exactly one")
        );
        assert!(e(r#"{"conditions": []}"#).contains("empty"));
    }
}
