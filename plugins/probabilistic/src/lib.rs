//! `probabilistic`: keeps a fraction of traces, decided consistently on the trace id's randomness as the
//! OpenTelemetry consistent-probability sampling specification defines it: with 56 bits of randomness `R`
//! and the rejection threshold `T = round((1 - p) * 2^56)`, a trace is kept iff `R >= T`. Every replica,
//! and every late span of the same trace, therefore gets the same answer. Reports `p` with each keep.
//!
//! Config: `{"probability": 0.1}` (or `{"percentage": 10}`), and `"otherwise": "drop"` (default) or
//! `"abstain"` for the traces that are not kept.
//!
//! Per key: `{"probability": 0.01, "key": "service.name", "probabilities": {"checkout": 1.0, "search":
//! 0.001}}` (`key`/`on` as in `rate-limit`; default `service.name` on the resource) gives each listed
//! value its own probability and every other key `probability`. Still consistent: the decision depends
//! on the randomness and the key only, so every replica agrees, and the keep reports the key's `p`.

use std::collections::HashMap;
use tailgate_plugin_sdk::serde::Deserialize;
use tailgate_plugin_sdk::{
    Decision, Interest, KeyLevel, ProjectedAttribute, Sampler, Trace, TraceKey, TraceSummary,
};

/// 2^56: the size of the randomness space.
const MAX_RANDOMNESS: u64 = 1 << 56;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, crate = "tailgate_plugin_sdk::serde")]
struct Config {
    probability: Option<f64>,
    percentage: Option<f64>,
    #[serde(default)]
    otherwise: Otherwise,
    /// Per-key probabilities; `key`/`on` say where the key is read.
    #[serde(default)]
    probabilities: HashMap<String, f64>,
    key: Option<String>,
    #[serde(default)]
    on: KeyLevel,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "lowercase", crate = "tailgate_plugin_sdk::serde")]
enum Otherwise {
    #[default]
    Drop,
    Abstain,
}

/// The configured sampler.
pub struct Probabilistic {
    probability: f64,
    threshold: u64,
    otherwise: Otherwise,
    /// Per-key probabilities and thresholds, with where the key is read; empty without `probabilities`.
    per_key: HashMap<String, (f64, u64)>,
    key: Option<TraceKey>,
    interest: Interest,
}

/// The OTel rejection threshold for probability `p` (in `[0, 1]`). Computed as `2^56 - round(p * 2^56)`:
/// scaling by a power of two is exact in `f64`, so the only rounding is the final one.
pub fn threshold(p: f64) -> u64 {
    MAX_RANDOMNESS - ((p * MAX_RANDOMNESS as f64).round() as u64).min(MAX_RANDOMNESS)
}

impl Probabilistic {
    /// Builds the sampler from its JSON config.
    pub fn from_config(config: &str) -> Result<Self, String> {
        Self::configure(tailgate_plugin_sdk::parse_config(config)?)
    }

    fn configure(c: Config) -> Result<Self, String> {
        let p = match (c.probability, c.percentage) {
            (Some(p), None) => p,
            (None, Some(pct)) => pct / 100.0,
            _ => {
                return Err(
                    "invalid configuration: set exactly one of `probability` or `percentage`"
                        .into(),
                );
            }
        };
        if !(0.0..=1.0).contains(&p) {
            return Err(format!(
                "invalid configuration: probability {p} is outside [0, 1]"
            ));
        }
        let mut per_key = HashMap::with_capacity(c.probabilities.len());
        for (k, q) in c.probabilities {
            if !(0.0..=1.0).contains(&q) {
                return Err(format!(
                    "invalid configuration: probabilities[{k:?}] {q} is outside [0, 1]"
                ));
            }
            per_key.insert(k, (q, threshold(q)));
        }
        let (key, interest) = match (&c.key, per_key.is_empty()) {
            (Some(_), true) => {
                return Err(
                    "invalid configuration: `key` needs `probabilities` (per-key values)".into(),
                );
            }
            (_, true) => (None, Interest::summary_only()),
            (k, false) => {
                let (key, interest) = TraceKey::new(
                    k.as_deref().unwrap_or("service.name"),
                    c.on,
                    Interest::summary_only(),
                );
                (Some(key), interest)
            }
        };
        Ok(Probabilistic {
            probability: p,
            threshold: threshold(p),
            otherwise: c.otherwise,
            per_key,
            key,
            interest,
        })
    }

    /// The decision for a trace with this randomness, at the default probability.
    pub fn decide_on(&self, randomness: u64) -> Decision {
        self.decide_at(randomness, self.probability, self.threshold)
    }

    /// The decision for a trace: its key's probability, or the default.
    pub fn decide_trace(
        &self,
        summary: &TraceSummary,
        attributes: &[ProjectedAttribute],
    ) -> Decision {
        let (p, t) = match &self.key {
            Some(key) => self
                .per_key
                .get(&key.of(summary, attributes))
                .copied()
                .unwrap_or((self.probability, self.threshold)),
            None => (self.probability, self.threshold),
        };
        self.decide_at(summary.randomness, p, t)
    }

    fn decide_at(&self, randomness: u64, probability: f64, threshold: u64) -> Decision {
        if randomness >= threshold {
            Decision::keep("probabilistic").with_probability(probability)
        } else {
            match self.otherwise {
                Otherwise::Drop => Decision::drop("probabilistic").with_probability(probability),
                Otherwise::Abstain => Decision::abstain(),
            }
        }
    }
}

impl Sampler for Probabilistic {
    fn init(config: &str) -> Result<(Self, Interest), String> {
        let p = Probabilistic::from_config(config)?;
        let interest = p.interest.clone();
        Ok((p, interest))
    }

    fn decide(
        &mut self,
        summary: &TraceSummary,
        attributes: &[ProjectedAttribute],
        _: Option<&Trace>,
    ) -> Decision {
        self.decide_trace(summary, attributes)
    }
}

tailgate_plugin_sdk::export_sampler!(Probabilistic);

#[cfg(test)]
mod tests {
    use super::*;
    use tailgate_plugin_sdk::Verdict;

    #[test]
    fn thresholds_follow_the_spec() {
        assert_eq!(threshold(1.0), 0);
        assert_eq!(threshold(0.5), 1 << 55);
        assert_eq!(threshold(0.0), MAX_RANDOMNESS);
        assert_eq!(threshold(0.25), 3 << 54);
        // The spec's example: 1/3 -> th:aaaaaaaaaaaaab; the f64 nearest 1/3 is a hair below it.
        assert!(threshold(1.0 / 3.0).abs_diff(0xaaaaaaaaaaaaab) <= 2);
    }

    #[test]
    fn keeps_about_p_of_uniform_randomness() {
        let p = Probabilistic::from_config(r#"{"percentage": 10}"#).unwrap();
        let n = 100_000u64;
        let kept = (0..n)
            .filter(|i| {
                p.decide_on(i.wrapping_mul(0x9E3779B97F4A7C15) % MAX_RANDOMNESS)
                    .verdict
                    == Verdict::Keep
            })
            .count();
        assert!((9_000..11_000).contains(&kept), "{kept}");
        assert_eq!(p.decide_on(MAX_RANDOMNESS - 1).probability, Some(0.1));
    }

    #[test]
    fn bad_config() {
        assert!(
            Probabilistic::from_config(r#"{"probability": 1.5}"#)
                .err()
                .unwrap()
                .contains("outside")
        );
        assert!(
            Probabilistic::from_config(r#"{"prob": 0.5}"#)
                .err()
                .unwrap()
                .contains("prob")
        );
        assert!(Probabilistic::from_config("{}").is_err());
        let p =
            Probabilistic::from_config(r#"{"probability": 0.0, "otherwise": "abstain"}"#).unwrap();
        assert_eq!(p.decide_on(0).verdict, Verdict::Abstain);
    }

    #[test]
    fn per_key_probabilities_are_consistent_per_key() {
        use tailgate_plugin_sdk::AttributeValue;
        use tailgate_plugin_sdk::testing::{span_attr, summary};
        let p = Probabilistic::from_config(
            r#"{"probability": 0.1, "probabilities": {"checkout": 1.0, "search": 0.0}}"#,
        )
        .unwrap();
        assert!(
            p.interest.resource_attributes.is_empty(),
            "service.name needs no projection"
        );
        let mut s = summary();
        s.randomness = MAX_RANDOMNESS / 2; // kept at p >= 0.5 only
        for (service, verdict, prob) in [
            ("checkout", Verdict::Keep, 1.0),
            ("search", Verdict::Drop, 0.0),
            ("cart", Verdict::Drop, 0.1),
        ] {
            s.service_name = service.into();
            let d = p.decide_trace(&s, &[]);
            assert_eq!(
                (d.verdict, d.probability),
                (verdict, Some(prob)),
                "{service}"
            );
        }
        s.randomness = MAX_RANDOMNESS - 1;
        s.service_name = "cart".into();
        assert_eq!(p.decide_trace(&s, &[]).verdict, Verdict::Keep);
        // A span attribute as the key.
        let p = Probabilistic::from_config(
            r#"{"probability": 0.0, "key": "http.route", "on": "span", "probabilities": {"/pay": 1.0}}"#,
        )
        .unwrap();
        assert_eq!(p.interest.span_attributes, ["http.route"]);
        let attrs = [span_attr(0, 0, AttributeValue::Str("/pay".into()))];
        assert_eq!(p.decide_trace(&s, &attrs).verdict, Verdict::Keep);
        assert_eq!(p.decide_trace(&s, &[]).verdict, Verdict::Drop);
        assert!(
            Probabilistic::from_config(r#"{"probability": 1, "probabilities": {"a": 2}}"#)
                .err()
                .unwrap()
                .contains("probabilities[\"a\"] 2 is outside")
        );
        assert!(
            Probabilistic::from_config(r#"{"probability": 1, "key": "x"}"#)
                .err()
                .unwrap()
                .contains("`key` needs `probabilities`")
        );
    }
}
