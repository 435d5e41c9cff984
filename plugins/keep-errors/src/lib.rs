//! `keep-errors`: keeps every trace that has a span with status ERROR and, optionally, every trace with an
//! HTTP status code in the configured classes (read from `http.response.status_code` or the older
//! `http.status_code`). Abstains otherwise.
//!
//! Config (all optional): `{"status_error": true, "http_status": ["5xx", 429]}`. An entry of
//! `http_status` is a class (`"4xx"`, `"5xx"`) or an exact code (`429` or `"429"`).
//!
//! A `tailgate:plugin@0.2.0` sampler: each class or code is an integer-range predicate on each status key,
//! evaluated by tailgate as the spans arrive (ints, and strings holding a decimal integer), so a call
//! carries only how many spans matched.

use tailgate_plugin_sdk::serde::Deserialize;
use tailgate_plugin_sdk::v0_2::{Decision, Predicate, Sampler, SamplerInterest, ValueTest};
use tailgate_plugin_sdk::{ProjectedAttribute, Trace, TraceSummary};

/// Semantic-convention keys that carry an HTTP response status.
const STATUS_KEYS: [&str; 2] = ["http.response.status_code", "http.status_code"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields, crate = "tailgate_plugin_sdk::serde")]
struct Config {
    #[serde(default = "yes")]
    status_error: bool,
    #[serde(default)]
    http_status: Vec<StatusSpec>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(untagged, crate = "tailgate_plugin_sdk::serde")]
enum StatusSpec {
    Code(u16),
    Text(String),
}

/// A configured HTTP status match.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StatusMatch {
    /// `Nxx`: every code in `N*100 ..= N*100+99`.
    Class(u16),
    /// One code.
    Exact(u16),
}

impl StatusMatch {
    fn parse(spec: &StatusSpec) -> Result<Self, String> {
        let text = match spec {
            StatusSpec::Code(c) => return Ok(StatusMatch::Exact(*c)),
            StatusSpec::Text(t) => t.trim().to_ascii_lowercase(),
        };
        if let Some(class) = text.strip_suffix("xx")
            && let Ok(n @ 1..=5) = class.parse::<u16>()
        {
            return Ok(StatusMatch::Class(n));
        }
        text.parse::<u16>()
            .map(StatusMatch::Exact)
            .map_err(|_| format!("invalid configuration: http_status entry {text:?} is neither a class like \"5xx\" nor a code"))
    }

    /// The codes that match, as an inclusive range: `code / 100 == n` for a class (n is 1..=5, so the
    /// codes n00..=n99), `code == c` for an exact code.
    fn range(self) -> (i64, i64) {
        match self {
            StatusMatch::Class(n) => (i64::from(n) * 100, i64::from(n) * 100 + 99),
            StatusMatch::Exact(c) => (i64::from(c), i64::from(c)),
        }
    }
}

/// The configured sampler.
pub struct KeepErrors {
    status_error: bool,
    /// Whether any HTTP status predicates were declared (then any of them holding keeps the trace).
    http: bool,
}

impl KeepErrors {
    /// Builds the sampler from its JSON config, with its interest: the summary, and one predicate per
    /// status key and configured class or code (an integer range, which the host also applies to
    /// decimal strings such as `"503"`).
    pub fn from_config(config: &str) -> Result<(Self, SamplerInterest), String> {
        let c: Config = tailgate_plugin_sdk::parse_config(config)?;
        let http = c
            .http_status
            .iter()
            .map(StatusMatch::parse)
            .collect::<Result<Vec<_>, _>>()?;
        let mut interest = SamplerInterest::summary_only();
        for key in STATUS_KEYS {
            for m in &http {
                let (min, max) = m.range();
                interest.add(Predicate::span(key, ValueTest::int_range(min, max)));
            }
        }
        Ok((
            KeepErrors {
                status_error: c.status_error,
                http: !http.is_empty(),
            },
            interest,
        ))
    }

    /// The decision for a summary and the match counts of the declared predicates (in declaration
    /// order: any non-zero count is a span with a configured HTTP status).
    pub fn decide_on(&self, summary: &TraceSummary, predicate_matches: &[u32]) -> Decision {
        if self.status_error && summary.error_span_count > 0 {
            return Decision::keep("error");
        }
        if self.http && predicate_matches.iter().any(|&n| n > 0) {
            return Decision::keep("http_status");
        }
        Decision::abstain()
    }
}

impl Sampler for KeepErrors {
    fn init(config: &str) -> Result<(Self, SamplerInterest), String> {
        KeepErrors::from_config(config)
    }

    fn decide(
        &mut self,
        summary: &TraceSummary,
        predicate_matches: &[u32],
        _: &[ProjectedAttribute],
        _: Option<&Trace>,
    ) -> Decision {
        self.decide_on(summary, predicate_matches)
    }
}

tailgate_plugin_sdk::export_sampler_v0_2!(KeepErrors);

#[cfg(test)]
mod tests;
