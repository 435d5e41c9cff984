//! `keep-errors`: keeps every trace that has a span with status ERROR and, optionally, every trace with an
//! HTTP status code in the configured classes (read from `http.response.status_code` or the older
//! `http.status_code`). Abstains otherwise.
//!
//! Config (all optional): `{"status_error": true, "http_status": ["5xx", 429]}`. An entry of
//! `http_status` is a class (`"4xx"`, `"5xx"`) or an exact code (`429` or `"429"`).

use tailgate_plugin_sdk::serde::Deserialize;
use tailgate_plugin_sdk::{Decision, Interest, ProjectedAttribute, Sampler, Trace, TraceSummary};

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

    fn matches(self, code: i64) -> bool {
        match self {
            StatusMatch::Class(n) => code / 100 == i64::from(n),
            StatusMatch::Exact(c) => code == i64::from(c),
        }
    }
}

/// The configured sampler.
pub struct KeepErrors {
    status_error: bool,
    http: Vec<StatusMatch>,
}

impl KeepErrors {
    /// Builds the sampler from its JSON config.
    pub fn from_config(config: &str) -> Result<(Self, Interest), String> {
        let c: Config = tailgate_plugin_sdk::parse_config(config)?;
        let http = c
            .http_status
            .iter()
            .map(StatusMatch::parse)
            .collect::<Result<Vec<_>, _>>()?;
        let mut interest = Interest::summary_only();
        if !http.is_empty() {
            for key in STATUS_KEYS {
                interest = interest.with_span_attribute(key);
            }
        }
        Ok((
            KeepErrors {
                status_error: c.status_error,
                http,
            },
            interest,
        ))
    }

    /// The decision for a summary and the projected HTTP status attributes.
    pub fn decide_on(&self, summary: &TraceSummary, attributes: &[ProjectedAttribute]) -> Decision {
        if self.status_error && summary.error_span_count > 0 {
            return Decision::keep("error");
        }
        for a in attributes {
            let code = a
                .value
                .as_i64()
                .or_else(|| a.value.as_str().and_then(|s| s.parse().ok()));
            if let Some(code) = code
                && self.http.iter().any(|m| m.matches(code))
            {
                return Decision::keep("http_status");
            }
        }
        Decision::abstain()
    }
}

impl Sampler for KeepErrors {
    fn init(config: &str) -> Result<(Self, Interest), String> {
        KeepErrors::from_config(config)
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

tailgate_plugin_sdk::export_sampler!(KeepErrors);

#[cfg(test)]
mod tests;
