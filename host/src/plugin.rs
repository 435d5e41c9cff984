//! The WebAssembly plugin host: compiles (with an on-disk cache), instantiates, bounds and calls sampler
//! and redactor components that implement the `tailgate:plugin@0.1.0` contract (`wit/v0.1.0`), and samplers
//! of `tailgate:plugin@0.2.0` (`wit/v0.2.0`: predicate pushdown, see [`crate::predicate`]).
//!
//! # Using it
//!
//! ```no_run
//! # use tailgate::plugin::*;
//! # fn main() -> Result<(), PluginError> {
//! let runtime = PluginRuntime::new(RuntimeSettings::default())?;
//! let spec = PluginSpec::new("errors", "target/plugins/keep-errors.wasm", "{}");
//! let sampler = runtime.load_sampler(&spec)?; // compile (cached) + instantiate + init
//! # let (trace_id, spans) = (0u128, Vec::new());
//! match sampler.decide(trace_id, &spans) {
//!     Ok(v) => println!("{:?} {:?} {:?}", v.verdict, v.probability, v.reason),
//!     Err(failure) => println!("failed: {failure}"), // the pipeline's failure policy applies
//! }
//! # Ok(()) }
//! ```
//!
//! - [`PluginRuntime`] (cheap to clone) owns the wasmtime `Engine`, the linker (WASI p2 granting nothing,
//!   plus the `host` interface), the compile cache and the epoch ticker thread.
//! - [`SamplerPlugin`] / [`RedactorPlugin`] are `Send + Sync` and meant to be shared (`Arc`) by the
//!   pipeline's worker threads. Each holds a pool of instances: a call takes an idle instance (or
//!   instantiates one from the kept `InstancePre` and runs `init` on it), calls it, and puts it back, so
//!   two threads never share a `Store` and never wait for each other. A plugin that declares itself
//!   `stateful` (e.g. a rate limiter) gets a single instance and its calls are serialized.
//! - Every call is bounded by an epoch deadline ([`RuntimeSettings::default_deadline`], 5 ms, per plugin
//!   [`PluginSpec::deadline`]) and a linear-memory cap ([`RuntimeSettings::default_memory_limit`], 64 MiB).
//!   A trap, timeout, out-of-memory or malformed result comes back as a [`PluginFailure`]; the instance
//!   is then discarded (a trapped instance cannot be re-entered) and the next call gets a fresh one.
//!   Instances are also recycled after [`RuntimeSettings::max_calls_per_instance`] calls (stateless
//!   plugins only) and when their memory passes 3/4 of the cap, because a `Store` never gives memory back.
//! - Calls are synchronous and may take up to the deadline: make them from blocking threads, never from
//!   a tokio worker.
//!
//! # Where things live
//! `plugin/runtime.rs` (engine, linker, cache, loading, contract checks) -> `host_api.rs` (the
//! `Store` state and the host interface plugins import) -> `instances.rs` (the pool, deadlines,
//! failure classification) -> `sampler.rs` / `redactor.rs` (one role each). `marshal.rs` builds what
//! samplers receive, `packing.rs` what redactors receive; `bindings.rs` is the one `bindgen!`.
//!
//! # Costs (see docs/plugins.md)
//! A call carries a host-computed trace summary plus only the attribute values the plugin declared at
//! `init`; full span records are passed only to plugins that ask for them, and redactors get all strings
//! packed in one buffer. Compiled code is cached on disk in wasmtime's serialized form (`plugin/cache.rs`,
//! keyed by the component's SHA-256 and the engine), so a restart or reload does not recompile.
//!
//! A rule's plugin is a `.wasm` path or `builtin:NAME`: the standard plugins are built into the binary
//! (`plugin/builtin.rs`, `host/build.rs`).

pub(crate) mod bindings;
pub mod builtin;
mod cache;
mod clock;
mod host_api;
mod instances;
pub(crate) mod marshal;
pub(crate) mod packing;
mod redactor;
mod runtime;
mod sampler;

use crate::otlp::{SpanRecord, TraceId};
use bindings::host::LogLevel;
use bindings::redaction::EditAction as WitEditAction;
use bindings::sampling::Verdict as WitVerdict;
use bindings::types::{AttributeValue, Interest};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use wasmtime::component::{Component, HasSelf, InstancePre, Linker, ResourceTable};
use wasmtime::{Config, Engine, ResourceLimiter, Store, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// For the redaction host (`crate::redact`): value text as redactors see it, and the packing itself.
pub use marshal::json_of_ref;
pub use marshal::{Projection, TraceLayout, layout};
pub use packing::{FieldKind, FieldRef};
pub use packing::{Packed, pack};
pub use redactor::RedactorPlugin;
pub(crate) use redactor::resolve_edit;
pub use runtime::{PluginRuntime, check};
pub use sampler::SamplerPlugin;
pub(crate) use sampler::check_decision;

/// How often the epoch ticker advances the engine's epoch: the resolution of call deadlines.
const EPOCH_TICK: Duration = Duration::from_millis(1);
/// Longest reason string kept from a plugin.
const MAX_REASON: usize = 128;
/// Longest log line kept from a plugin.
const MAX_LOG_LINE: usize = 4096;
/// Most distinct counter names kept per plugin.
const MAX_COUNTERS: usize = 64;
/// A redactor may return at most this many edits per packed field (plus [`MAX_EDITS_SLACK`]); more is a
/// bad result, so a plugin cannot make the host resolve and apply millions of edits.
const MAX_EDITS_PER_FIELD: usize = 4;
const MAX_EDITS_SLACK: usize = 64;

/// Why a plugin could not be loaded. Every variant names the plugin.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("plugin runtime: {0}")]
    Runtime(String),
    #[error("plugin `{plugin}`: cannot read {path}: {source}")]
    Read {
        plugin: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("plugin `{plugin}`: not a valid WebAssembly component: {reason}")]
    Compile { plugin: String, reason: String },
    #[error(
        "plugin `{plugin}`: {found}; expected a {expected} (a component exporting `{}`)",
        expected.export()
    )]
    WrongWorld {
        plugin: String,
        expected: PluginWorld,
        found: String,
    },
    #[error("plugin `{plugin}`: needs imports tailgate does not provide: {reason}")]
    Link { plugin: String, reason: String },
    #[error("plugin `{plugin}`: rejected its configuration: {message}")]
    Config { plugin: String, message: String },
    #[error("plugin `{plugin}`: failed to start: {failure}")]
    Init {
        plugin: String,
        failure: PluginFailure,
    },
}

/// Why one plugin call produced no answer. The pipeline applies its failure policy (samplers fail open by
/// default, redactors fail closed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginFailure {
    /// The guest trapped (a panic, `unreachable`, an out-of-bounds access...). The message is wasmtime's.
    Trap(String),
    /// The call ran past its deadline and was interrupted.
    Timeout,
    /// The guest tried to grow its memory past the cap.
    OutOfMemory,
    /// The guest answered something the contract does not allow (e.g. a probability of 7).
    BadResult(String),
}

impl PluginFailure {
    /// A short stable name for metrics: `trap`, `timeout`, `out_of_memory`, `bad_result`.
    pub fn kind(&self) -> &'static str {
        match self {
            PluginFailure::Trap(_) => "trap",
            PluginFailure::Timeout => "timeout",
            PluginFailure::OutOfMemory => "out_of_memory",
            PluginFailure::BadResult(_) => "bad_result",
        }
    }
}

impl fmt::Display for PluginFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PluginFailure::Trap(m) => write!(f, "trapped: {m}"),
            PluginFailure::Timeout => f.write_str("ran past its deadline"),
            PluginFailure::OutOfMemory => f.write_str("ran out of memory (hit the memory cap)"),
            PluginFailure::BadResult(m) => write!(f, "returned an invalid result: {m}"),
        }
    }
}

impl std::error::Error for PluginFailure {}

/// Settings of the runtime shared by all plugins.
#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    /// Where compiled plugins are cached. Default `$XDG_CACHE_HOME/tailgate` or `~/.cache/tailgate`
    /// (`/tmp/tailgate-cache` when neither is known). Relative paths are made absolute.
    pub cache_dir: Option<PathBuf>,
    /// Turn the compile cache off (every load compiles). Default false.
    pub disable_cache: bool,
    /// Deadline of one call. Default 5 ms: a standard sampler takes ~1 us, a Python one tens of us.
    pub default_deadline: Duration,
    /// Deadline for instantiating a plugin and running its `init`. Default 2 s (Python runtimes start in
    /// a few ms; this is only a backstop against a plugin that never returns from `init`).
    pub init_deadline: Duration,
    /// Linear memory cap per instance. Default 64 MiB.
    pub default_memory_limit: usize,
    /// A stateless instance is replaced after this many calls, bounding slow leaks. Default 100 000.
    pub max_calls_per_instance: u64,
    /// Pass plugins' stderr through to tailgate's (a Python traceback, a Rust panic message). For
    /// debugging; default false, and also enabled by the environment variable `TAILGATE_PLUGIN_STDERR=1`.
    pub plugin_stderr: bool,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        RuntimeSettings {
            cache_dir: None,
            disable_cache: false,
            default_deadline: Duration::from_millis(5),
            init_deadline: Duration::from_secs(2),
            default_memory_limit: 64 << 20,
            max_calls_per_instance: 100_000,
            plugin_stderr: std::env::var_os("TAILGATE_PLUGIN_STDERR").is_some_and(|v| v == "1"),
        }
    }
}

/// The default cache directory (see [`RuntimeSettings::cache_dir`]).
pub fn default_cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("tailgate");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h).join(".cache").join("tailgate");
    }
    std::env::temp_dir().join("tailgate-cache")
}

/// One plugin to load: a rule's plugin file and its configuration.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    /// The rule name: used in logs, errors, metrics.
    pub name: String,
    /// The `.wasm` component.
    pub path: PathBuf,
    /// Configuration as JSON text, passed to `init` (`{}` when the rule has none).
    pub config: String,
    /// Per-call deadline; `None` uses [`RuntimeSettings::default_deadline`].
    pub deadline: Option<Duration>,
    /// Memory cap; `None` uses [`RuntimeSettings::default_memory_limit`].
    pub memory_limit: Option<usize>,
}

impl PluginSpec {
    /// A spec with the runtime's default limits.
    pub fn new(
        name: impl Into<String>,
        path: impl Into<PathBuf>,
        config: impl Into<String>,
    ) -> Self {
        PluginSpec {
            name: name.into(),
            path: path.into(),
            config: config.into(),
            deadline: None,
            memory_limit: None,
        }
    }
}

/// Which contract world a component implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginWorld {
    Sampler,
    Redactor,
}

impl PluginWorld {
    /// The contract interface a component of this world exports.
    pub fn export(self) -> &'static str {
        match self {
            PluginWorld::Sampler => bindings::SAMPLING_EXPORT,
            PluginWorld::Redactor => bindings::REDACTION_EXPORT,
        }
    }
}

impl fmt::Display for PluginWorld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PluginWorld::Sampler => "sampler (tailgate:plugin/sampler@0.1.0 or @0.2.0)",
            PluginWorld::Redactor => "redactor (tailgate:plugin/redactor@0.1.0)",
        })
    }
}

/// What `tailgate plugin check` reports about a component.
#[derive(Debug, Clone)]
pub struct PluginInfo {
    pub path: PathBuf,
    pub world: PluginWorld,
    /// The exported contract interface, e.g. `tailgate:plugin/sampling@0.1.0`.
    pub export: String,
    /// The contract version the component implements, e.g. `0.2.0`.
    pub version: &'static str,
    /// Everything the component imports (WASI interfaces, `tailgate:plugin/host@0.1.0`).
    pub imports: Vec<String>,
    pub size_bytes: u64,
    /// SHA-256 of the file, hex.
    pub sha256: String,
    /// Time to compile (or load from the cache) the component.
    pub compile_time: Duration,
    /// Whether the compiled code came from the cache.
    pub from_cache: bool,
}

impl PluginInfo {
    /// The world with its package version, e.g. `tailgate:plugin/sampler@0.2.0`.
    pub fn world_name(&self) -> String {
        let world = match self.world {
            PluginWorld::Sampler => "sampler",
            PluginWorld::Redactor => "redactor",
        };
        format!("tailgate:plugin/{world}@{}", self.version)
    }
}

/// A sampler's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    Drop,
    Abstain,
}

/// A sampler's decision on one trace.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerVerdict {
    pub verdict: Verdict,
    /// The sampling probability the plugin applied, in (0, 1].
    pub probability: Option<f64>,
    /// A short reason (at most 128 bytes).
    pub reason: Option<String>,
}

/// What a redaction edit does (see `edit-action` in `wit/v0.1.0/redactor.wit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EditAction {
    /// Remove the attribute.
    Remove,
    /// Replace the value (or name, or message) with this string.
    Replace(String),
    /// Replace each character in these byte ranges of the value with `*`. Ranges are validated: inside
    /// the value, on UTF-8 boundaries for strings, sorted and not overlapping. On an array or kvlist
    /// (seen as JSON text) only the elements the ranges cover change and the value keeps its shape; a
    /// masked bool, int or double becomes a string (`redact/nested.rs`).
    Mask(Vec<std::ops::Range<u32>>),
    /// Replace the value with the host's keyed hash of it (a string, whatever the value's type; an
    /// array or kvlist is hashed as its JSON text).
    Hash,
    /// Rename the attribute's key.
    RenameKey(String),
}

/// One edit a redactor asks for, resolved to the exact field it targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedactionEdit {
    pub field: FieldRef,
    pub action: EditAction,
    pub reason: Option<String>,
}

/// Counters of one loaded plugin, for metrics and the status page.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PluginStats {
    pub name: String,
    pub path: PathBuf,
    /// SHA-256 of the component file, hex.
    pub sha256: String,
    pub size_bytes: u64,
    /// Compile (or cache load) time.
    pub compile_time: Duration,
    /// Whether the compiled code came from the cache.
    pub from_cache: bool,
    /// Total load time: read, compile, link, first instantiation and `init`.
    pub load_time: Duration,
    pub calls: u64,
    pub traps: u64,
    pub timeouts: u64,
    pub out_of_memory: u64,
    pub bad_results: u64,
    /// Sum of call durations (marshalling included), nanoseconds.
    pub call_nanos_total: u64,
    pub instances_created: u64,
    /// Instances replaced for age or memory growth (not failures).
    pub instances_recycled: u64,
    /// The plugin's own counters (`counter-add`).
    pub counters: Vec<(String, u64)>,
}

#[cfg(test)]
mod tests;
