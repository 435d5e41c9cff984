//! Builds the live [`Policy`] from the configuration: loads each rule's plugin and wraps it as a sampler.

use crate::config::Config;
use crate::pipeline::Policy;

/// Why the policy could not be built; names the rule and the plugin file.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("rule `{rule}` ({path}): {reason}")]
    Rule { rule: String, path: String, reason: String },
}

/// Loads every rule of `config.policy`.
pub fn load(config: &Config) -> Result<Policy, PolicyError> {
    let p = &config.policy;
    if let Some(r) = p.rules.iter().chain(&p.redactors).next() {
        return Err(PolicyError::Rule {
            rule: r.name.clone(),
            path: r.plugin.display().to_string(),
            reason: "plugin loading is not wired in yet".into(),
        });
    }
    let mut policy = Policy::with_default(p.default);
    policy.on_sampler_failure = p.on_sampler_failure;
    Ok(policy)
}
