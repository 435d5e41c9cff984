//! Builds the live [`Policy`] from the configuration: compiles (or loads from the cache) and initializes each
//! rule's plugin and wraps it as a pipeline [`Sampler`], and loads the redactors with their settings.
//! Loading happens off the hot path; the result is swapped in whole. Combinator rules (`all`, `any`,
//! `not`, `action: drop`) are built here from their parts (`policy/combinators.rs`).

mod combinators;

pub use combinators::{Combinator, Combined, Dropping};

use crate::config::{Config, PluginRuntimeConfig, RuleAction, RuleConfig};
use crate::otlp::{SpanRecord, TraceId};
use crate::pipeline::{Policy, Rule, Sampler, SamplerFailure, SamplerVerdict};
use crate::plugin::{self, PluginError, PluginRuntime, PluginSpec, RuntimeSettings, SamplerPlugin};
use crate::redact::{RedactionSettings, RedactorRule, Redactors};
use std::sync::Arc;

/// Why the policy could not be built; names the rule and the plugin file.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("rule `{rule}` ({path}): {source}")]
    Plugin {
        rule: String,
        path: String,
        #[source]
        source: PluginError,
    },
    #[error("rule `{rule}`: config cannot be passed to the plugin as JSON: {reason}")]
    Config { rule: String, reason: String },
    #[error(transparent)]
    Runtime(PluginError),
    #[error("policy predicates: {0}")]
    Predicates(String),
    #[error("rule `{rule}` has no plugin (it is a combinator)")]
    NoPlugin { rule: String },
}

/// The plugin runtime settings from the config.
pub fn runtime_settings(c: &PluginRuntimeConfig) -> RuntimeSettings {
    RuntimeSettings {
        cache_dir: c.cache_dir.clone(),
        default_deadline: c.call_timeout,
        default_memory_limit: c.memory_limit.as_usize(),
        ..RuntimeSettings::default()
    }
}

/// The plugin spec of one rule.
pub fn plugin_spec(rule: &RuleConfig) -> Result<PluginSpec, PolicyError> {
    let config = match &rule.config {
        serde_json::Value::Null => "{}".to_owned(),
        v => serde_json::to_string(v).map_err(|e| PolicyError::Config {
            rule: rule.name.clone(),
            reason: e.to_string(),
        })?,
    };
    let path = rule.plugin.clone().ok_or_else(|| PolicyError::NoPlugin {
        rule: rule.name.clone(),
    })?;
    Ok(PluginSpec {
        name: rule.name.clone(),
        path,
        config,
        deadline: rule.call_timeout,
        memory_limit: rule.memory_limit.map(|m| m.as_usize()),
    })
}

/// Loads every rule of `config.policy` with a fresh runtime.
pub fn load(config: &Config) -> Result<Policy, PolicyError> {
    let runtime =
        PluginRuntime::new(runtime_settings(&config.plugins)).map_err(PolicyError::Runtime)?;
    load_with(config, &runtime)
}

/// Loads every rule of `config.policy` with `runtime`.
pub fn load_with(config: &Config, runtime: &PluginRuntime) -> Result<Policy, PolicyError> {
    load_reusing(config, runtime, &|_, _| None)
}

/// Offers an already loaded sampler for a rule (see [`load_reusing`]).
pub type ReuseSampler<'a> = dyn Fn(&RuleConfig, &PluginSpec) -> Option<Arc<dyn Sampler>> + 'a;

/// Like [`load_with`], but a sampling rule takes the sampler `reuse` offers instead of loading one. Hot
/// reload offers the running instance of every rule whose plugin file, config and limits are unchanged,
/// so its state (a rate limiter's budget) survives the reload.
pub fn load_reusing(
    config: &Config,
    runtime: &PluginRuntime,
    reuse: &ReuseSampler<'_>,
) -> Result<Policy, PolicyError> {
    let p = &config.policy;
    let mut rules = Vec::with_capacity(p.rules.len());
    for r in &p.rules {
        let mut rule = sampler_rule(r, runtime, reuse)?;
        if r.action == RuleAction::Drop {
            rule.sampler = Arc::new(Dropping(Rule {
                name: rule.name.clone(),
                sampler: rule.sampler,
                shadow: false,
            }));
        }
        rule.shadow = r.shadow;
        rules.push(rule);
    }
    // Every configured redactor must load: a redactor that silently did nothing would let personal
    // data through, so a failure here fails the whole policy.
    let mut redactors = Vec::with_capacity(p.redactors.len());
    for r in &p.redactors {
        let spec = plugin_spec(r)?;
        let plugin = runtime
            .load_redactor(&spec)
            .map_err(|source| PolicyError::Plugin {
                rule: r.name.clone(),
                path: spec.path.display().to_string(),
                source,
            })?;
        redactors.push(RedactorRule {
            name: r.name.as_str().into(),
            redactor: Arc::new(plugin),
        });
    }
    // Predicate pushdown: the rules' predicates, deduplicated, become the set the ingest scan evaluates
    // once this policy is installed (`Policy::install`; spans scanned under the previous set are walked
    // at decision time, see crate::predicate).
    let set =
        crate::predicate::PredicateSet::for_policy(rules.iter().map(|r| r.sampler.predicates()))
            .map_err(PolicyError::Predicates)?;
    for r in &rules {
        if !r.sampler.bind_predicates(&set) {
            return Err(PolicyError::Predicates(format!(
                "rule `{}`: its predicates are missing from the policy set",
                r.name
            )));
        }
    }
    let settings = RedactionSettings::from_config(&p.redaction);
    if !redactors.is_empty() && p.redaction.hash_key.is_none() {
        tracing::warn!(
            "policy.redaction.hash_key is not set: hashed values use a random key and change on restart"
        );
    }
    Ok(Policy {
        rules,
        default: p.default,
        on_sampler_failure: p.on_sampler_failure,
        redactors: Redactors::new(redactors, settings, p.on_redactor_failure),
        predicates: Arc::new(set),
    })
}

/// The sampler of one rule or part: its plugin (reused when `reuse` offers it), or a combinator over its
/// parts' samplers.
fn sampler_rule(
    r: &RuleConfig,
    runtime: &PluginRuntime,
    reuse: &ReuseSampler<'_>,
) -> Result<Rule, PolicyError> {
    let sampler: Arc<dyn Sampler> = match r.combinator() {
        Some((kind, parts)) => {
            let parts = parts
                .into_iter()
                .map(|p| sampler_rule(p, runtime, reuse))
                .collect::<Result<Vec<_>, _>>()?;
            Arc::new(Combined::new(kind, parts))
        }
        None => {
            let spec = plugin_spec(r)?;
            match reuse(r, &spec) {
                Some(running) => running,
                None => Arc::new(WasmSampler(runtime.load_sampler(&spec).map_err(
                    |source| PolicyError::Plugin {
                        rule: r.name.clone(),
                        path: spec.path.display().to_string(),
                        source,
                    },
                )?)),
            }
        }
    };
    Ok(Rule {
        name: r.name.as_str().into(),
        sampler,
        shadow: false,
    })
}

/// A sampler plugin as a pipeline sampler.
pub struct WasmSampler(pub SamplerPlugin);

impl Sampler for WasmSampler {
    fn sample(
        &self,
        trace_id: TraceId,
        spans: &[SpanRecord],
    ) -> Result<SamplerVerdict, SamplerFailure> {
        self.0.decide(trace_id, spans).map_err(|f| SamplerFailure {
            kind: f.kind(),
            message: f.to_string(),
        })
    }

    fn stats(&self) -> Option<plugin::PluginStats> {
        Some(self.0.stats())
    }

    fn predicates(&self) -> &[crate::predicate::Predicate] {
        self.0.predicates()
    }

    fn bind_predicates(&self, policy: &crate::predicate::PredicateSet) -> bool {
        self.0.bind_predicates(policy)
    }

    fn stateful(&self) -> bool {
        self.0.is_stateful()
    }
}
