//! Hot reload: re-reads the configuration file, builds the new policy off the hot path (keeping the running
//! plugin of every unchanged rule, with its state), and swaps it in atomically, or changes nothing and says
//! why. Triggered by a change to the config file or a plugin file it references (watched, debounced),
//! SIGHUP, and `POST /reload` on the admin server.
//!
//! ```text
//!  file change (notify, 500 ms debounce) ─┐
//!  SIGHUP ────────────────────────────────┼─► Reloader::reload ─► blocking thread: read, validate,
//!  POST /reload (admin) ──────────────────┘                        load changed plugins ─► ArcSwap<Policy>
//! ```
//!
//! Traces already buffered are untouched: each is decided by the policy current when its decision runs.
//! Only the `policy` section is live; every other setting that differs from the running one is reported in
//! [`ReloadOutcome::needs_restart`] and logged, never silently ignored.

mod watch;

use crate::config::{Config, ConfigError, Overrides, RuleConfig};
use crate::metrics::{Metrics, ReloadLabels};
use crate::otlp::predicate::PredicateSlot;
use crate::pipeline::{Policy, Sampler};
use crate::plugin::{PluginError, PluginRuntime, PluginSpec};
use crate::policy::{self, PolicyError};
use arc_swap::ArcSwap;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use watch::spawn_triggers;

/// How long the file watcher waits for a burst of changes (an editor's write-rename-chmod, a plugin
/// copied in pieces) to end before reloading.
pub const DEBOUNCE: Duration = Duration::from_millis(500);

/// Why a (re)load was refused. The running policy stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Boxed: the plugin errors are large and this travels in every `Result` of a reload.
    #[error("{path}: {source}")]
    Policy {
        path: PathBuf,
        #[source]
        source: Box<PolicyError>,
    },
    #[error("plugin runtime: {0}")]
    Runtime(#[from] PluginError),
    #[error("reload task failed: {0}")]
    Task(String),
}

/// What started a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The config file or a plugin file changed.
    File,
    /// SIGHUP.
    Signal,
    /// `POST /reload`.
    Admin,
    /// A direct call (tests, embedding).
    Manual,
}

/// The result of one reload, as logged and as `POST /reload` answers it (JSON).
#[derive(Debug, Clone, Serialize)]
pub struct ReloadOutcome {
    /// Whether the new policy is in force. When false nothing changed and `error` says why.
    pub ok: bool,
    pub trigger: Trigger,
    /// The configuration file.
    pub config: PathBuf,
    /// The file and the reason, when the reload was refused.
    pub error: Option<String>,
    /// Sampling rules whose plugin was loaded anew (new rules, or a changed file, config or limits).
    pub loaded: Vec<String>,
    /// Sampling rules whose running plugin instance was kept, with its state.
    pub kept: Vec<String>,
    /// Sampling rules no longer in the policy.
    pub removed: Vec<String>,
    /// Other live changes: `policy.default`, rule order, a rule's `shadow` flag, the redactors...
    pub changed: Vec<String>,
    /// Settings that differ from the running ones but only take effect after a restart.
    pub needs_restart: Vec<String>,
    /// Time from the start of the reload to the new policy being swapped in (or the refusal).
    pub duration_ms: f64,
}

impl ReloadOutcome {
    fn refused(trigger: Trigger, config: &Path, error: &ReloadError, started: Instant) -> Self {
        ReloadOutcome {
            ok: false,
            trigger,
            config: config.to_owned(),
            error: Some(error.to_string()),
            loaded: Vec::new(),
            kept: Vec::new(),
            removed: Vec::new(),
            changed: Vec::new(),
            needs_restart: Vec::new(),
            duration_ms: started.elapsed().as_secs_f64() * 1e3,
        }
    }

    /// Whether the reload changed anything live.
    pub fn changed_anything(&self) -> bool {
        self.ok && !(self.loaded.is_empty() && self.removed.is_empty() && self.changed.is_empty())
    }
}

/// SHA-256 of each watched file (`None`: unreadable), as seen by the last reload attempt.
type Fingerprint = BTreeMap<PathBuf, Option<String>>;

/// What makes a loaded sampler reusable: the same file contents, config and limits.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PluginKey {
    path: PathBuf,
    sha256: String,
    config: String,
    deadline: Option<Duration>,
    memory_limit: Option<usize>,
}

impl PluginKey {
    fn of(spec: &PluginSpec, files: &Fingerprint) -> Option<PluginKey> {
        Some(PluginKey {
            path: spec.path.clone(),
            sha256: files.get(&spec.path)?.clone()?,
            config: spec.config.clone(),
            deadline: spec.deadline,
            memory_limit: spec.memory_limit,
        })
    }
}

struct LoadedSampler {
    key: Option<PluginKey>,
    sampler: Arc<dyn Sampler>,
}

/// What the last successful load left in force.
struct Current {
    config: Config,
    /// The running sampler of each rule, by rule name.
    samplers: HashMap<String, LoadedSampler>,
    /// Files seen by the last attempt, successful or not: a file watch event reloads only when one of
    /// them differs, so an unrelated file in the same directory (or a bad file seen once) does not loop.
    files: Fingerprint,
}

/// Owns the configuration file, the plugin runtime and the loaded plugins; swaps the live policy.
pub struct Reloader {
    path: PathBuf,
    overrides: Overrides,
    runtime: PluginRuntime,
    policy: Arc<ArcSwap<Policy>>,
    /// The live policy's predicates, for the ingest scan (replaced with the policy).
    predicates: PredicateSlot,
    metrics: Arc<Metrics>,
    /// The configuration the process started with: restart-only settings are compared with it, so a
    /// pending change is reported on every reload until the restart.
    started: Config,
    /// Held for a whole reload: reloads are serialized.
    current: Mutex<Current>,
    /// The last reload attempt and when it ended (Unix seconds), for the status page.
    last: Mutex<Option<(f64, ReloadOutcome)>>,
}

impl Reloader {
    /// Loads `path` (with `overrides` applied on top, as at every reload) and its policy. Blocking: plugins
    /// are compiled (or read from the cache) and initialized. Returns the reloader and the configuration to
    /// start the other stages with.
    pub fn load(
        path: &Path,
        overrides: &Overrides,
        metrics: Arc<Metrics>,
    ) -> Result<(Arc<Reloader>, Config), ReloadError> {
        let started = Instant::now();
        let config = read_config(path, overrides)?;
        let files = fingerprint(path, &config);
        let runtime = PluginRuntime::new(policy::runtime_settings(&config.plugins))?;
        let policy = policy::load_reusing(&config, &runtime, &|_, _| None).map_err(|source| {
            ReloadError::Policy {
                path: path.to_owned(),
                source: Box::new(source),
            }
        })?;
        let samplers = remember(&config, &policy, &files);
        metrics.reload_success_timestamp.set(unix_now());
        tracing::info!(
            config = %path.display(),
            rules = policy.rules.len(),
            load_ms = started.elapsed().as_secs_f64() * 1e3,
            "policy loaded"
        );
        let reloader = Arc::new(Reloader {
            path: path.to_owned(),
            overrides: overrides.clone(),
            runtime,
            predicates: PredicateSlot::new(policy.predicates.clone()),
            policy: Arc::new(ArcSwap::from_pointee(policy)),
            metrics,
            started: config.clone(),
            current: Mutex::new(Current {
                config: config.clone(),
                samplers,
                files,
            }),
            last: Mutex::new(None),
        });
        Ok((reloader, config))
    }

    /// The live policy this reloader swaps.
    pub fn policy(&self) -> Arc<ArcSwap<Policy>> {
        self.policy.clone()
    }

    /// The live policy's predicate set, for the scanners of ingested requests.
    pub fn predicates(&self) -> PredicateSlot {
        self.predicates.clone()
    }

    /// The configuration file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reloads on a blocking thread (plugin compilation and `init` never run on a tokio worker).
    pub async fn reload(self: &Arc<Self>, trigger: Trigger) -> ReloadOutcome {
        let me = self.clone();
        let started = Instant::now();
        match tokio::task::spawn_blocking(move || me.reload_blocking(trigger)).await {
            Ok(outcome) => outcome,
            Err(e) => {
                let e = ReloadError::Task(e.to_string());
                self.count(false);
                ReloadOutcome::refused(trigger, &self.path, &e, started)
            }
        }
    }

    /// Reloads on the calling thread: re-reads and validates the file, loads what changed, swaps the
    /// policy. On any error nothing changes; the outcome carries the error, which is also logged and
    /// counted.
    pub fn reload_blocking(&self, trigger: Trigger) -> ReloadOutcome {
        let outcome = self.reload_inner(trigger);
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((unix_now(), outcome.clone()));
        outcome
    }

    /// The last reload attempt (`None` before the first) and when it ended, in Unix seconds.
    pub fn last_outcome(&self) -> Option<(f64, ReloadOutcome)> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn reload_inner(&self, trigger: Trigger) -> ReloadOutcome {
        let started = Instant::now();
        let mut current = self.lock();
        let result = self.try_reload(&mut current, trigger, started);
        drop(current);
        match result {
            Ok(outcome) => {
                self.count(true);
                self.metrics.reload_success_timestamp.set(unix_now());
                tracing::info!(
                    config = %self.path.display(),
                    trigger = ?trigger,
                    loaded = ?outcome.loaded,
                    kept = ?outcome.kept,
                    removed = ?outcome.removed,
                    changed = ?outcome.changed,
                    reload_ms = outcome.duration_ms,
                    "configuration reloaded"
                );
                if !outcome.needs_restart.is_empty() {
                    tracing::warn!(
                        config = %self.path.display(),
                        settings = ?outcome.needs_restart,
                        "these settings changed in the file but need a restart to take effect; \
                         the running values stay until then"
                    );
                }
                outcome
            }
            Err(e) => {
                self.count(false);
                tracing::error!(
                    config = %self.path.display(),
                    trigger = ?trigger,
                    error = %e,
                    "reload refused; the running policy stays"
                );
                ReloadOutcome::refused(trigger, &self.path, &e, started)
            }
        }
    }

    fn try_reload(
        &self,
        current: &mut Current,
        trigger: Trigger,
        started: Instant,
    ) -> Result<ReloadOutcome, ReloadError> {
        let config = match read_config(&self.path, &self.overrides) {
            Ok(c) => c,
            Err(e) => {
                // Remember what the bad file looked like, so only a further change retries it.
                current.files = fingerprint(&self.path, &current.config);
                return Err(e.into());
            }
        };
        let files = fingerprint(&self.path, &config);
        current.files = files.clone();
        let samplers = &current.samplers;
        let reuse = |r: &RuleConfig, spec: &PluginSpec| -> Option<Arc<dyn Sampler>> {
            let running = samplers.get(&r.name)?;
            let key = PluginKey::of(spec, &files)?;
            (running.key.as_ref() == Some(&key)).then(|| running.sampler.clone())
        };
        let policy = policy::load_reusing(&config, &self.runtime, &reuse).map_err(|source| {
            ReloadError::Policy {
                path: self.path.clone(),
                source: Box::new(source),
            }
        })?;
        let new_samplers = remember(&config, &policy, &files);
        let mut outcome = ReloadOutcome {
            ok: true,
            trigger,
            config: self.path.clone(),
            error: None,
            loaded: Vec::new(),
            kept: Vec::new(),
            removed: Vec::new(),
            changed: live_changes(&current.config, &config),
            needs_restart: restart_only_changes(&self.started, &config),
            duration_ms: 0.0,
        };
        for r in config.policy.rules.iter().flat_map(RuleConfig::leaves) {
            let same = match (current.samplers.get(&r.name), new_samplers.get(&r.name)) {
                (Some(old), Some(new)) => same_arc(&old.sampler, &new.sampler),
                _ => false,
            };
            if same {
                outcome.kept.push(r.name.clone());
            } else {
                outcome.loaded.push(r.name.clone());
            }
        }
        for r in current
            .config
            .policy
            .rules
            .iter()
            .flat_map(RuleConfig::leaves)
        {
            if !new_samplers.contains_key(&r.name) {
                outcome.removed.push(r.name.clone());
            }
        }
        Policy::install(Arc::new(policy), &self.policy, &self.predicates);
        outcome.duration_ms = started.elapsed().as_secs_f64() * 1e3;
        current.config = config;
        current.samplers = new_samplers;
        Ok(outcome)
    }

    /// The files a change of which triggers a reload: the config file and every plugin it references.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        // A built-in plugin is no file: it changes only with the binary.
        self.lock()
            .files
            .keys()
            .filter(|p| crate::plugin::builtin::name_of(p).is_none())
            .cloned()
            .collect()
    }

    /// Whether any watched file differs from what the last reload attempt saw. Blocking (reads files).
    pub fn files_changed(&self) -> bool {
        let seen = self.lock().files.clone();
        seen.iter().any(|(path, hash)| hash_file(path) != *hash)
    }

    /// The running sampler of a rule (tests check that unchanged rules keep their instance).
    pub fn sampler(&self, rule: &str) -> Option<Arc<dyn Sampler>> {
        self.lock().samplers.get(rule).map(|l| l.sampler.clone())
    }

    fn lock(&self) -> MutexGuard<'_, Current> {
        // A panic mid-reload leaves `current` describing the policy still in force (it is only updated
        // after the swap), so the state is usable.
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "error" };
        self.metrics
            .reloads
            .get_or_create(&ReloadLabels { outcome })
            .inc();
        if !ok {
            self.metrics.reload_failures.inc();
        }
    }
}

/// Whether two samplers are the same instance (data pointers only; vtables may differ across codegen units).
pub fn same_arc(a: &Arc<dyn Sampler>, b: &Arc<dyn Sampler>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

fn read_config(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
    let mut config = Config::load(path)?;
    config.apply(overrides);
    config.validate().map_err(|message| ConfigError::Invalid {
        path: path.display().to_string(),
        message,
    })?;
    Ok(config)
}

/// The running sampler of each rule of `policy` (built from `config`), with the key it was loaded under.
fn remember(
    config: &Config,
    policy: &Policy,
    files: &Fingerprint,
) -> HashMap<String, LoadedSampler> {
    // By plugin rule: a combinator's parts are reused one by one (names are unique across the policy).
    let leaves: HashMap<&str, &RuleConfig> = config
        .policy
        .rules
        .iter()
        .flat_map(RuleConfig::leaves)
        .map(|r| (r.name.as_str(), r))
        .collect();
    policy
        .sampler_plugins()
        .into_iter()
        .filter_map(|(rule, _)| {
            let r = leaves.get(&*rule.name)?;
            let key = policy::plugin_spec(r)
                .ok()
                .and_then(|spec| PluginKey::of(&spec, files));
            Some((
                r.name.clone(),
                LoadedSampler {
                    key,
                    sampler: rule.sampler.clone(),
                },
            ))
        })
        .collect()
}

fn fingerprint(config_path: &Path, config: &Config) -> Fingerprint {
    let mut files = Fingerprint::new();
    files.insert(config_path.to_owned(), hash_file(config_path));
    let plugins = config.policy.rules.iter().chain(&config.policy.redactors);
    for path in plugins
        .flat_map(|r| r.leaves())
        .filter_map(|r| r.plugin.as_ref())
    {
        files.insert(path.clone(), hash_file(path));
    }
    files
}

fn hash_file(path: &Path) -> Option<String> {
    let bytes = match crate::plugin::builtin::name_of(path) {
        Some(name) => crate::plugin::builtin::get(name)?.bytes.to_vec(),
        None => std::fs::read(path).ok()?,
    };
    Some(
        Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    )
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Live changes other than loaded / removed rules.
fn live_changes(old: &Config, new: &Config) -> Vec<String> {
    let (o, n) = (&old.policy, &new.policy);
    let mut out = Vec::new();
    if o.default != n.default {
        out.push(format!(
            "policy.default: {:?} -> {:?}",
            o.default, n.default
        ));
    }
    if o.on_sampler_failure != n.on_sampler_failure {
        out.push("policy.on_sampler_failure".into());
    }
    let names =
        |c: &Config| -> Vec<String> { c.policy.rules.iter().map(|r| r.name.clone()).collect() };
    let (on, nn) = (names(old), names(new));
    let common_old: Vec<&String> = on.iter().filter(|x| nn.contains(x)).collect();
    let common_new: Vec<&String> = nn.iter().filter(|x| on.contains(x)).collect();
    if common_old != common_new {
        out.push("policy.rules: order".into());
    }
    for r in &n.rules {
        if let Some(before) = o.rules.iter().find(|b| b.name == r.name)
            && before.shadow != r.shadow
        {
            out.push(format!(
                "policy.rules `{}`: shadow {} -> {}",
                r.name, before.shadow, r.shadow
            ));
        }
    }
    if o.redactors != n.redactors {
        out.push("policy.redactors".into());
    }
    if o.on_redactor_failure != n.on_redactor_failure {
        out.push("policy.on_redactor_failure".into());
    }
    if o.redaction != n.redaction {
        out.push("policy.redaction".into());
    }
    out
}

/// Compares named fields of two structs, pushing `prefix.field` for each that differs.
macro_rules! diff_fields {
    ($out:expr, $a:expr, $b:expr, $prefix:literal, $($field:ident),+ $(,)?) => {
        $(
            if $a.$field != $b.$field {
                $out.push(concat!($prefix, ".", stringify!($field)).to_owned());
            }
        )+
    };
}

/// The settings that cannot change while running: everything outside `policy`. The receivers and the
/// admin server hold their sockets, the buffer and the exporter were sized and timed at startup, the
/// plugin runtime's cache and defaults and the worker threads are fixed, logging is set up once.
fn restart_only_changes(running: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let (a, b) = (
        &running.receivers.otlp.protocols,
        &new.receivers.otlp.protocols,
    );
    diff_fields!(out, a, b, "receivers.otlp.protocols", grpc, http);
    let (a, b) = (&running.exporters.otlp, &new.exporters.otlp);
    diff_fields!(
        out,
        a,
        b,
        "exporters.otlp",
        protocol,
        endpoint,
        compression,
        headers,
        timeout,
        sending_queue,
        retry_on_failure,
        batch,
        tls,
        kafka
    );
    let (a, b) = (&running.buffer, &new.buffer);
    diff_fields!(
        out,
        a,
        b,
        "buffer",
        settle,
        idle_timeout,
        max_wait,
        max_spans_per_trace,
        max_bytes_per_trace,
        max_buffer_bytes,
        decision_cache,
        queue_size
    );
    let (a, b) = (&running.plugins, &new.plugins);
    diff_fields!(
        out,
        a,
        b,
        "plugins",
        cache_dir,
        call_timeout,
        memory_limit,
        workers
    );
    diff_fields!(
        out,
        running.admin,
        new.admin,
        "admin",
        endpoint,
        token,
        jaeger_ui_url
    );
    let (a, b) = (&running.service, &new.service);
    diff_fields!(out, a, b, "service", log_format, log_level, shutdown_grace);
    if running.topology != new.topology {
        out.push("topology".to_owned());
    }
    if running.record != new.record {
        out.push("record".to_owned());
    }
    out
}

#[cfg(test)]
mod tests;
