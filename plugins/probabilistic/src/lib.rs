//! `probabilistic`: keeps a fraction of traces, decided consistently on the trace id's randomness as the
//! OpenTelemetry consistent-probability sampling specification defines it: with 56 bits of randomness `R`
//! and the rejection threshold `T = round((1 - p) * 2^56)`, a trace is kept iff `R >= T`. Every replica,
//! and every late span of the same trace, therefore gets the same answer. Reports `p` with each keep.
//!
//! Config: `{"probability": 0.1}` (or `{"percentage": 10}`), and `"otherwise": "drop"` (default) or
//! `"abstain"` for the traces that are not kept.

use tailgate_plugin_sdk::serde::Deserialize;
use tailgate_plugin_sdk::{Decision, Interest, ProjectedAttribute, Sampler, Trace, TraceSummary};

/// 2^56: the size of the randomness space.
const MAX_RANDOMNESS: u64 = 1 << 56;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, crate = "tailgate_plugin_sdk::serde")]
struct Config {
    probability: Option<f64>,
    percentage: Option<f64>,
    #[serde(default)]
    otherwise: Otherwise,
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
}

/// The OTel rejection threshold for probability `p` (in `[0, 1]`). Computed as `2^56 - round(p * 2^56)`:
/// scaling by a power of two is exact in `f64`, so the only rounding is the final one.
pub fn threshold(p: f64) -> u64 {
    MAX_RANDOMNESS - ((p * MAX_RANDOMNESS as f64).round() as u64).min(MAX_RANDOMNESS)
}

impl Probabilistic {
    /// Builds the sampler from its JSON config.
    pub fn from_config(config: &str) -> Result<Self, String> {
        let c: Config = tailgate_plugin_sdk::parse_config(config)?;
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
        Ok(Probabilistic {
            probability: p,
            threshold: threshold(p),
            otherwise: c.otherwise,
        })
    }

    /// The decision for a trace with this randomness.
    pub fn decide_on(&self, randomness: u64) -> Decision {
        if randomness >= self.threshold {
            Decision::keep("probabilistic").with_probability(self.probability)
        } else {
            match self.otherwise {
                Otherwise::Drop => {
                    Decision::drop("probabilistic").with_probability(self.probability)
                }
                Otherwise::Abstain => Decision::abstain(),
            }
        }
    }
}

impl Sampler for Probabilistic {
    fn init(config: &str) -> Result<(Self, Interest), String> {
        Ok((
            Probabilistic::from_config(config)?,
            Interest::summary_only(),
        ))
    }

    fn decide(
        &mut self,
        summary: &TraceSummary,
        _: &[ProjectedAttribute],
        _: Option<&Trace>,
    ) -> Decision {
        self.decide_on(summary.randomness)
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
}
