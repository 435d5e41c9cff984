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
//!     Ok(v) => println!("{:?} {:?} {:?}", v.decision, v.probability, v.reason),
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
//! # Costs (see docs/plugins.md)
//! A call carries a host-computed trace summary plus only the attribute values the plugin declared at
//! `init`; full span records are passed only to plugins that ask for them, and redactors get all strings
//! packed in one buffer. Compiled code is cached on disk by wasmtime's cache (keyed by a hash of the
//! component, the engine configuration and the wasmtime version), so a restart does not recompile.

pub(crate) mod bindings;
mod clock;
pub(crate) mod marshal;

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

pub use marshal::{FieldKind, FieldRef, Projection, TraceLayout, layout};
/// For the redaction host (`crate::redact`): value text as redactors see it, and the packing itself.
pub use marshal::{Packed, json_of_ref, pack};

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
    pub decision: Verdict,
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
    /// the value, on UTF-8 boundaries for strings, sorted and not overlapping.
    Mask(Vec<std::ops::Range<u32>>),
    /// Replace the value with the host's keyed hash of it.
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

// ---- runtime ----

/// The engine and everything shared by the loaded plugins. Cheap to clone.
#[derive(Clone)]
pub struct PluginRuntime {
    inner: Arc<RuntimeInner>,
}

struct RuntimeInner {
    engine: Engine,
    linker: Linker<HostState>,
    settings: RuntimeSettings,
    /// The compile cache (shares its hit counter with the engine's copy), to report cache hits.
    cache: Option<wasmtime::Cache>,
    /// Tells the ticker thread to stop when the runtime and every plugin are gone.
    stop: Arc<AtomicBool>,
}

impl Drop for RuntimeInner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl fmt::Debug for PluginRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginRuntime")
            .field("settings", &self.inner.settings)
            .finish()
    }
}

fn runtime_err(e: impl fmt::Display) -> PluginError {
    PluginError::Runtime(e.to_string())
}

impl PluginRuntime {
    /// Builds the engine (component model, epoch interruption, no async support, compile cache) and starts
    /// the epoch ticker thread.
    pub fn new(settings: RuntimeSettings) -> Result<Self, PluginError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        // Plugins are synchronous; without async support a call is ~0.35 us cheaper.
        config.concurrency_support(false);
        config.epoch_interruption(true);
        let mut compile_cache = None;
        if !settings.disable_cache {
            let dir = settings.cache_dir.clone().unwrap_or_else(default_cache_dir);
            let dir = std::path::absolute(&dir).map_err(runtime_err)?;
            let mut cc = wasmtime::CacheConfig::new();
            cc.with_directory(dir);
            let cache = wasmtime::Cache::new(cc)
                .map_err(|e| runtime_err(format!("compile cache: {e:#}")))?;
            config.cache(Some(cache.clone()));
            compile_cache = Some(cache);
        }
        let engine = Engine::new(&config).map_err(|e| runtime_err(format!("{e:#}")))?;
        let mut linker: Linker<HostState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| runtime_err(format!("{e:#}")))?;
        bindings::sampler::Sampler::add_to_linker::<HostState, HasSelf<HostState>>(
            &mut linker,
            |s| s,
        )
        .map_err(|e| runtime_err(format!("{e:#}")))?;
        bindings::sampler_v2::Sampler::add_to_linker::<HostState, HasSelf<HostState>>(
            &mut linker,
            |s| s,
        )
        .map_err(|e| runtime_err(format!("{e:#}")))?;

        let stop = Arc::new(AtomicBool::new(false));
        let (ticker_engine, ticker_stop) = (engine.clone(), stop.clone());
        std::thread::Builder::new()
            .name("tailgate-plugin-epoch".into())
            .spawn(move || {
                while !ticker_stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticker_engine.increment_epoch();
                }
            })
            .map_err(runtime_err)?;
        Ok(PluginRuntime {
            inner: Arc::new(RuntimeInner {
                engine,
                linker,
                settings,
                cache: compile_cache,
                stop,
            }),
        })
    }

    /// The settings this runtime was built with.
    pub fn settings(&self) -> &RuntimeSettings {
        &self.inner.settings
    }

    /// Loads a sampler: compiles the component (or loads it from the cache), checks it implements the
    /// sampler world, instantiates it and runs `init` with the spec's config.
    pub fn load_sampler(&self, spec: &PluginSpec) -> Result<SamplerPlugin, PluginError> {
        let core = self.load::<SamplerWorld>(spec)?;
        let own_predicates =
            crate::predicate::PredicateSet::new(core.predicates.clone()).map_err(|message| {
                PluginError::Config {
                    plugin: spec.name.clone(),
                    message,
                }
            })?;
        Ok(SamplerPlugin {
            core,
            own_predicates,
            binding: Default::default(),
        })
    }

    /// Loads a redactor, like [`PluginRuntime::load_sampler`].
    pub fn load_redactor(&self, spec: &PluginSpec) -> Result<RedactorPlugin, PluginError> {
        let core = self.load::<RedactorWorld>(spec)?;
        Ok(RedactorPlugin { core })
    }

    /// Compiles a component (through the cache) and says which world it implements and what it imports,
    /// without instantiating it. Reports a clear error for a file that is not a component, implements no
    /// tailgate world, or needs imports tailgate does not provide.
    pub fn inspect(&self, path: &Path) -> Result<PluginInfo, PluginError> {
        let name = path.display().to_string();
        let compiled = self.compile(&name, path)?;
        let world = world_of(&name, &compiled.exports, None)?;
        let version = contract_version(&compiled.exports);
        self.inner
            .linker
            .instantiate_pre(&compiled.component)
            .map_err(|e| PluginError::Link {
                plugin: name.clone(),
                reason: format!("{e:#}"),
            })?;
        Ok(PluginInfo {
            path: path.to_owned(),
            world,
            export: match (world, version) {
                (PluginWorld::Sampler, "0.2.0") => bindings::SAMPLING_EXPORT_V2.into(),
                _ => world.export().into(),
            },
            version,
            imports: compiled.imports,
            size_bytes: compiled.size_bytes,
            sha256: compiled.sha256,
            compile_time: compiled.compile_time,
            from_cache: compiled.from_cache,
        })
    }

    fn compile(&self, plugin: &str, path: &Path) -> Result<Compiled, PluginError> {
        let bytes = std::fs::read(path).map_err(|source| PluginError::Read {
            plugin: plugin.to_owned(),
            path: path.to_owned(),
            source,
        })?;
        let sha256 = hex(&Sha256::digest(&bytes));
        let engine = &self.inner.engine;
        let cache = self.inner.cache.as_ref();
        let hits_before = cache.map(|c| c.cache_hits());
        let started = Instant::now();
        let component = Component::new(engine, &bytes).map_err(|e| PluginError::Compile {
            plugin: plugin.to_owned(),
            reason: format!("{e:#}"),
        })?;
        let compile_time = started.elapsed();
        // Loads are rare and usually sequential; a concurrent load can at worst misreport this flag.
        let from_cache = match (hits_before, cache.map(|c| c.cache_hits())) {
            (Some(a), Some(b)) => b > a,
            _ => false,
        };
        let ty = component.component_type();
        let imports = ty.imports(engine).map(|(n, _)| n.to_owned()).collect();
        let exports = ty.exports(engine).map(|(n, _)| n.to_owned()).collect();
        let uses_accessors = ty.imports(engine).any(|(n, item)| {
            (n == bindings::HOST_IMPORT || n == bindings::HOST_IMPORT_V2)
                && match item.ty {
                    wasmtime::component::types::ComponentItem::ComponentInstance(i) => {
                        i.exports(engine).any(|(f, _)| {
                            matches!(f, "span-attribute" | "resource-attribute" | "span-name")
                        })
                    }
                    _ => true,
                }
        });
        Ok(Compiled {
            component,
            imports,
            exports,
            uses_accessors,
            size_bytes: bytes.len() as u64,
            sha256,
            compile_time,
            from_cache,
        })
    }

    fn load<W: World>(&self, spec: &PluginSpec) -> Result<PluginCore<W>, PluginError> {
        let started = Instant::now();
        let plugin = spec.name.clone();
        let compiled = self.compile(&plugin, &spec.path)?;
        world_of(&plugin, &compiled.exports, Some(W::WORLD))?;
        let instance_pre = self
            .inner
            .linker
            .instantiate_pre(&compiled.component)
            .map_err(|e| PluginError::Link {
                plugin: plugin.clone(),
                reason: format!("{e:#}"),
            })?;
        let pre = W::pre(instance_pre, &compiled.exports).map_err(|e| PluginError::WrongWorld {
            plugin: plugin.clone(),
            expected: W::WORLD,
            found: format!("its exports do not match this tailgate's contract ({e:#})"),
        })?;
        let settings = &self.inner.settings;
        let deadline = spec.deadline.unwrap_or(settings.default_deadline);
        let shared = Arc::new(PluginShared {
            name: plugin.clone().into(),
            counters: Mutex::new(HashMap::new()),
            stats: StatCounters::default(),
        });
        let mut core = PluginCore {
            runtime: self.inner.clone(),
            shared,
            pre,
            config: spec.config.clone(),
            deadline_ticks: ticks(deadline),
            init_ticks: ticks(settings.init_deadline),
            memory_limit: spec.memory_limit.unwrap_or(settings.default_memory_limit),
            max_calls: settings.max_calls_per_instance,
            projection: Projection::default(),
            predicates: Vec::new(),
            span_finder: crate::otlp::KeyFinder::default(),
            full_trace: false,
            stateful: false,
            uses_accessors: compiled.uses_accessors,
            idle: Mutex::new(Vec::new()),
            serial: Mutex::new(()),
            info: PluginStats {
                name: plugin.clone(),
                path: spec.path.clone(),
                sha256: compiled.sha256,
                size_bytes: compiled.size_bytes,
                compile_time: compiled.compile_time,
                from_cache: compiled.from_cache,
                ..Default::default()
            },
        };
        let (slot, (interest, predicates)) = core.instantiate().map_err(|e| match e {
            InitError::Rejected(message) => PluginError::Config {
                plugin: plugin.clone(),
                message,
            },
            InitError::Failed(failure) => PluginError::Init {
                plugin: plugin.clone(),
                failure,
            },
        })?;
        core.predicates = predicates
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let described = describe_predicate(&p);
                predicate_from_wit(p).map_err(|m| PluginError::Config {
                    plugin: plugin.clone(),
                    message: format!("predicate {i} ({described}): {m}"),
                })
            })
            .collect::<Result<_, _>>()?;
        core.span_finder = crate::otlp::KeyFinder::new(&interest.span_attributes);
        core.projection = Projection {
            span_keys: interest.span_attributes,
            resource_keys: interest.resource_attributes,
            scope_keys: interest.scope_attributes,
        };
        core.full_trace = interest.full_trace;
        core.stateful = interest.stateful;
        core.idle_lock().push(slot);
        core.info.load_time = started.elapsed();
        tracing::info!(
            plugin = %plugin,
            path = %spec.path.display(),
            world = %W::WORLD,
            compile_ms = core.info.compile_time.as_secs_f64() * 1e3,
            cached = core.info.from_cache,
            load_ms = core.info.load_time.as_secs_f64() * 1e3,
            "plugin loaded"
        );
        Ok(core)
    }
}

/// Loads `path` with a default runtime and reports what it is: the logic of `tailgate plugin check`.
pub fn check(path: &Path) -> Result<PluginInfo, PluginError> {
    PluginRuntime::new(RuntimeSettings::default())?.inspect(path)
}

fn ticks(d: Duration) -> u64 {
    // +1: the current tick may be about to end, so n ticks guarantee at least n-1 full ticks.
    (d.as_nanos().div_ceil(EPOCH_TICK.as_nanos()) as u64).max(1) + 1
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Which world the exports implement; with `expected`, an error unless it is that one.
fn world_of(
    plugin: &str,
    exports: &[String],
    expected: Option<PluginWorld>,
) -> Result<PluginWorld, PluginError> {
    let has = |e: &str| exports.iter().any(|x| x == e);
    let found = if has(bindings::SAMPLING_EXPORT) || has(bindings::SAMPLING_EXPORT_V2) {
        Some(PluginWorld::Sampler)
    } else if has(bindings::REDACTION_EXPORT) {
        Some(PluginWorld::Redactor)
    } else {
        None
    };
    let expected_world = expected.unwrap_or(PluginWorld::Sampler);
    match (found, expected) {
        (Some(w), None) => Ok(w),
        (Some(w), Some(e)) if w == e => Ok(w),
        (Some(w), Some(_)) => Err(PluginError::WrongWorld {
            plugin: plugin.to_owned(),
            expected: expected_world,
            found: format!("it is a {w}"),
        }),
        (None, _) => {
            let other_version = exports.iter().find(|e| e.starts_with("tailgate:plugin/"));
            let found = match other_version {
                Some(e) => format!(
                    "it implements `{e}`, a contract version this tailgate does not support"
                ),
                None if exports.is_empty() => "it exports nothing".to_owned(),
                None => format!(
                    "it implements no tailgate world (exports: {})",
                    exports.join(", ")
                ),
            };
            Err(PluginError::WrongWorld {
                plugin: plugin.to_owned(),
                expected: expected_world,
                found,
            })
        }
    }
}

/// The contract version of a component's exports: `0.2.0` for a 0.2 sampler, else `0.1.0`.
fn contract_version(exports: &[String]) -> &'static str {
    if exports.iter().any(|e| e == bindings::SAMPLING_EXPORT_V2) {
        "0.2.0"
    } else {
        "0.1.0"
    }
}

/// A predicate as a short text for error messages, e.g. `span http.route regex("^/a")`.
fn describe_predicate(p: &bindings::sampling_v2::Predicate) -> String {
    let level = match p.level {
        bindings::types::AttributeLevel::Span => "span",
        bindings::types::AttributeLevel::Resource => "resource",
        bindings::types::AttributeLevel::Scope => "scope",
    };
    format!("{level} attribute {:?}: {:?}", p.key, p.test)
}

/// Checks and converts a predicate a 0.2 sampler declared (the WIT contract's type into the scan's). The
/// error says what is wrong with it.
fn predicate_from_wit(
    p: bindings::sampling_v2::Predicate,
) -> Result<crate::predicate::Predicate, String> {
    use crate::predicate::{Level, Predicate, Test};
    use bindings::sampling_v2::ValueTest as W;
    use bindings::types::AttributeLevel as L;
    let level = match p.level {
        L::Span => Level::Span,
        L::Resource => Level::Resource,
        L::Scope => Level::Scope,
    };
    let test = match p.test {
        W::Exists => Test::Exists,
        W::StrIn(v) => Test::StrIn(v),
        W::StrPrefix(v) => Test::StrPrefix(v),
        W::Regex(r) => Predicate::regex(&r)?,
        W::IntRange(b) => Test::IntRange(b.min, b.max),
        W::DoubleRange(b) => Test::DoubleRange(b.min, b.max),
        W::BoolIs(b) => Test::BoolIs(b),
    };
    Predicate::new(level, p.key, test)
}

struct Compiled {
    component: Component,
    imports: Vec<String>,
    exports: Vec<String>,
    uses_accessors: bool,
    size_bytes: u64,
    sha256: String,
    compile_time: Duration,
    from_cache: bool,
}

// ---- store data and the host interface ----

/// Per-plugin state shared by its instances.
struct PluginShared {
    name: Arc<str>,
    counters: Mutex<HashMap<String, u64>>,
    stats: StatCounters,
}

#[derive(Default)]
struct StatCounters {
    calls: AtomicU64,
    traps: AtomicU64,
    timeouts: AtomicU64,
    out_of_memory: AtomicU64,
    bad_results: AtomicU64,
    call_nanos: AtomicU64,
    instances_created: AtomicU64,
    instances_recycled: AtomicU64,
}

/// Caps the instance's memories (summed) and remembers whether the cap was hit, to tell an
/// out-of-memory trap from others.
struct MemoryLimiter {
    limit: usize,
    used: usize,
    hit_limit: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let after = self.used.saturating_sub(current).saturating_add(desired);
        if after > self.limit {
            self.hit_limit = true;
            return Ok(false);
        }
        self.used = after;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; a million entries is far beyond any sane plugin.
        Ok(desired <= 1_000_000)
    }
}

/// The data of one instance's `Store`.
struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    plugin: Arc<PluginShared>,
    /// The trace of the current call, for the accessor functions; empty outside calls and for plugins
    /// that do not import the accessors.
    trace: Vec<SpanRecord>,
    /// What WASI's clocks read: the current call's time (see [`clock`]).
    clock: clock::CallClock,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bindings::types::Host for HostState {}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut at = max;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
    }
    s
}

impl bindings::host::Host for HostState {
    fn log(&mut self, level: LogLevel, message: String) {
        let message = truncate(message, MAX_LOG_LINE);
        let plugin = &*self.plugin.name;
        match level {
            LogLevel::Trace => tracing::trace!(plugin, "{message}"),
            LogLevel::Debug => tracing::debug!(plugin, "{message}"),
            LogLevel::Info => tracing::info!(plugin, "{message}"),
            LogLevel::Warn => tracing::warn!(plugin, "{message}"),
            LogLevel::Error => tracing::error!(plugin, "{message}"),
        }
    }

    fn counter_add(&mut self, name: String, delta: u64) {
        let mut counters = lock(&self.plugin.counters);
        if let Some(c) = counters.get_mut(&name) {
            *c = c.saturating_add(delta);
        } else if counters.len() < MAX_COUNTERS {
            counters.insert(truncate(name, 64), delta);
        }
    }

    fn span_attribute(&mut self, span_index: u32, key: String) -> Option<AttributeValue> {
        let span = self.trace.get(span_index as usize)?;
        span.attributes()
            .find(|kv| kv.key == key)
            .map(|kv| marshal::value_from_ref(kv.value))
    }

    fn resource_attribute(&mut self, span_index: u32, key: String) -> Option<AttributeValue> {
        let span = self.trace.get(span_index as usize)?;
        crate::otlp::resource_attributes(&span.origin.resource_fields)
            .find(|kv| kv.key == key)
            .map(|kv| marshal::value_from_ref(kv.value))
    }

    fn span_name(&mut self, span_index: u32) -> Option<String> {
        self.trace
            .get(span_index as usize)
            .map(|s| s.name().to_owned())
    }
}

/// The 0.2.0 host interface: the same functions as 0.1.0 over the same types.
impl bindings::host_v2::Host for HostState {
    fn log(&mut self, level: bindings::host_v2::LogLevel, message: String) {
        use bindings::host_v2::LogLevel as L;
        let level = match level {
            L::Trace => LogLevel::Trace,
            L::Debug => LogLevel::Debug,
            L::Info => LogLevel::Info,
            L::Warn => LogLevel::Warn,
            L::Error => LogLevel::Error,
        };
        bindings::host::Host::log(self, level, message)
    }

    fn counter_add(&mut self, name: String, delta: u64) {
        bindings::host::Host::counter_add(self, name, delta)
    }

    fn span_attribute(&mut self, span_index: u32, key: String) -> Option<AttributeValue> {
        bindings::host::Host::span_attribute(self, span_index, key)
    }

    fn resource_attribute(&mut self, span_index: u32, key: String) -> Option<AttributeValue> {
        bindings::host::Host::resource_attribute(self, span_index, key)
    }

    fn span_name(&mut self, span_index: u32) -> Option<String> {
        bindings::host::Host::span_name(self, span_index)
    }
}

/// Locks a mutex, ignoring poisoning: the guarded pools and counters stay consistent even if a holder
/// panicked (they are only pushed to and popped from).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---- instances ----

/// The two worlds, abstracted so one pool implementation serves both.
trait World: Sized + Send + 'static {
    type Pre: Send + Sync;
    const WORLD: PluginWorld;
    /// `exports`: the component's export names, to pick the contract version.
    fn pre(ip: InstancePre<HostState>, exports: &[String]) -> wasmtime::Result<Self::Pre>;
    fn instantiate(pre: &Self::Pre, store: &mut Store<HostState>) -> wasmtime::Result<Self>;
    fn init(
        &self,
        store: &mut Store<HostState>,
        config: &str,
    ) -> wasmtime::Result<Result<InitOutput, String>>;
}

/// What `init` returned: the projection interest and (0.2 samplers) the predicates.
type InitOutput = (Interest, Vec<bindings::sampling_v2::Predicate>);

/// A sampler of either contract version.
enum SamplerWorld {
    V1(bindings::sampler::Sampler),
    V2(bindings::sampler_v2::Sampler),
}
struct RedactorWorld(bindings::redactor::Redactor);

enum SamplerPre {
    V1(bindings::sampler::SamplerPre<HostState>),
    V2(bindings::sampler_v2::SamplerPre<HostState>),
}

impl World for SamplerWorld {
    type Pre = SamplerPre;
    const WORLD: PluginWorld = PluginWorld::Sampler;
    fn pre(ip: InstancePre<HostState>, exports: &[String]) -> wasmtime::Result<Self::Pre> {
        if contract_version(exports) == "0.2.0" {
            bindings::sampler_v2::SamplerPre::new(ip).map(SamplerPre::V2)
        } else {
            bindings::sampler::SamplerPre::new(ip).map(SamplerPre::V1)
        }
    }
    fn instantiate(pre: &Self::Pre, store: &mut Store<HostState>) -> wasmtime::Result<Self> {
        match pre {
            SamplerPre::V1(p) => p.instantiate(store).map(SamplerWorld::V1),
            SamplerPre::V2(p) => p.instantiate(store).map(SamplerWorld::V2),
        }
    }
    fn init(
        &self,
        store: &mut Store<HostState>,
        config: &str,
    ) -> wasmtime::Result<Result<InitOutput, String>> {
        Ok(match self {
            SamplerWorld::V1(w) => w
                .tailgate_plugin_sampling()
                .call_init(store, config)?
                .map(|i| (i, Vec::new())),
            SamplerWorld::V2(w) => w
                .tailgate_plugin_sampling()
                .call_init(store, config)?
                .map(|i| (i.projection, i.predicates)),
        })
    }
}

impl World for RedactorWorld {
    type Pre = bindings::redactor::RedactorPre<HostState>;
    const WORLD: PluginWorld = PluginWorld::Redactor;
    fn pre(ip: InstancePre<HostState>, _: &[String]) -> wasmtime::Result<Self::Pre> {
        bindings::redactor::RedactorPre::new(ip)
    }
    fn instantiate(pre: &Self::Pre, store: &mut Store<HostState>) -> wasmtime::Result<Self> {
        pre.instantiate(store).map(RedactorWorld)
    }
    fn init(
        &self,
        store: &mut Store<HostState>,
        config: &str,
    ) -> wasmtime::Result<Result<InitOutput, String>> {
        Ok(self
            .0
            .tailgate_plugin_redaction()
            .call_init(store, config)?
            .map(|i| (i, Vec::new())))
    }
}

/// One live instance and its store.
struct Slot<W> {
    store: Store<HostState>,
    instance: W,
    calls: u64,
}

enum InitError {
    /// `init` returned an error message (bad configuration).
    Rejected(String),
    Failed(PluginFailure),
}

/// What samplers and redactors share: the instance pool and the call discipline.
struct PluginCore<W: World> {
    runtime: Arc<RuntimeInner>,
    shared: Arc<PluginShared>,
    pre: W::Pre,
    config: String,
    deadline_ticks: u64,
    init_ticks: u64,
    memory_limit: usize,
    max_calls: u64,
    projection: Projection,
    /// The predicates a 0.2 sampler declared (empty otherwise).
    predicates: Vec<crate::predicate::Predicate>,
    /// Finds the projected span keys in encoded spans (built once from `projection.span_keys`).
    span_finder: crate::otlp::KeyFinder,
    full_trace: bool,
    stateful: bool,
    uses_accessors: bool,
    /// Idle instances. A call pops one (or creates one) and pushes it back when done.
    idle: Mutex<Vec<Slot<W>>>,
    /// Held for a whole call by stateful plugins, so their single instance is never duplicated.
    serial: Mutex<()>,
    /// Load-time facts for [`PluginStats`].
    info: PluginStats,
}

fn classify(e: &wasmtime::Error, store: &Store<HostState>) -> PluginFailure {
    if store.data().limiter.hit_limit {
        return PluginFailure::OutOfMemory;
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => PluginFailure::Timeout,
        _ => PluginFailure::Trap(format!("{e:#}")),
    }
}

impl<W: World> PluginCore<W> {
    fn idle_lock(&self) -> MutexGuard<'_, Vec<Slot<W>>> {
        lock(&self.idle)
    }

    /// A fresh instance with `init` run on it.
    fn instantiate(&self) -> Result<(Slot<W>, InitOutput), InitError> {
        // Grants nothing: no args, env, preopened dirs or network; stdio is closed. The WASI clocks read
        // the call's `now-unix-nano`, frozen during the call; WASI random remains (language runtimes seed
        // their hash maps with it). See the "Sandbox" section of docs/plugins.md.
        let clock = clock::CallClock::new(now_unix_nano());
        let mut wasi = WasiCtx::builder();
        wasi.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .wall_clock(clock.wall())
            .monotonic_clock(clock.monotonic());
        if self.runtime.settings.plugin_stderr {
            wasi.inherit_stderr();
        }
        let state = HostState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                limit: self.memory_limit,
                used: 0,
                hit_limit: false,
            },
            plugin: self.shared.clone(),
            trace: Vec::new(),
            clock,
        };
        let mut store = Store::new(&self.runtime.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(self.init_ticks);
        let instance = W::instantiate(&self.pre, &mut store)
            .map_err(|e| InitError::Failed(classify(&e, &store)))?;
        let interest = match instance.init(&mut store, &self.config) {
            Ok(Ok(i)) => i,
            Ok(Err(message)) => return Err(InitError::Rejected(message)),
            Err(e) => return Err(InitError::Failed(classify(&e, &store))),
        };
        self.shared
            .stats
            .instances_created
            .fetch_add(1, Ordering::Relaxed);
        Ok((
            Slot {
                store,
                instance,
                calls: 0,
            },
            interest,
        ))
    }

    /// Runs `f` on an instance under the deadline and memory cap, and returns or discards the instance.
    fn call<R>(
        &self,
        spans: &[SpanRecord],
        f: impl FnOnce(&W, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginFailure> {
        let started = Instant::now();
        let _serial = self.stateful.then(|| lock(&self.serial));
        let popped = self.idle_lock().pop();
        let mut slot = match popped {
            Some(s) => s,
            None => self.instantiate().map(|(s, _)| s).map_err(|e| {
                let f = match e {
                    InitError::Rejected(m) => {
                        PluginFailure::BadResult(format!("init rejected the config: {m}"))
                    }
                    InitError::Failed(f) => f,
                };
                self.count_failure(&f);
                f
            })?,
        };
        let store = &mut slot.store;
        store.set_epoch_deadline(self.deadline_ticks);
        store.data_mut().limiter.hit_limit = false;
        if self.uses_accessors {
            store.data_mut().trace.extend_from_slice(spans);
        }
        let result = f(&slot.instance, store);
        store.data_mut().trace.clear();
        let stats = &self.shared.stats;
        stats.calls.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(r) => {
                slot.calls += 1;
                let worn = !self.stateful && slot.calls >= self.max_calls;
                let bloated = slot.store.data().limiter.used > self.memory_limit / 4 * 3;
                if worn || bloated {
                    stats.instances_recycled.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.idle_lock().push(slot);
                }
                stats
                    .call_nanos
                    .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
                Ok(r)
            }
            Err(e) => {
                // The instance may be mid-way through anything: never reuse it.
                let failure = classify(&e, &slot.store);
                drop(slot);
                self.count_failure(&failure);
                tracing::warn!(plugin = %self.shared.name, kind = failure.kind(), "plugin call failed: {failure}");
                stats
                    .call_nanos
                    .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
                Err(failure)
            }
        }
    }

    fn count_failure(&self, f: &PluginFailure) {
        let s = &self.shared.stats;
        let c = match f {
            PluginFailure::Trap(_) => &s.traps,
            PluginFailure::Timeout => &s.timeouts,
            PluginFailure::OutOfMemory => &s.out_of_memory,
            PluginFailure::BadResult(_) => &s.bad_results,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a malformed result found after the call returned.
    fn bad_result(&self, message: String) -> PluginFailure {
        let f = PluginFailure::BadResult(message);
        self.count_failure(&f);
        tracing::warn!(plugin = %self.shared.name, kind = f.kind(), "plugin call failed: {f}");
        f
    }

    fn stats(&self) -> PluginStats {
        let s = &self.shared.stats;
        let mut counters: Vec<(String, u64)> = lock(&self.shared.counters)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        counters.sort();
        PluginStats {
            calls: s.calls.load(Ordering::Relaxed),
            traps: s.traps.load(Ordering::Relaxed),
            timeouts: s.timeouts.load(Ordering::Relaxed),
            out_of_memory: s.out_of_memory.load(Ordering::Relaxed),
            bad_results: s.bad_results.load(Ordering::Relaxed),
            call_nanos_total: s.call_nanos.load(Ordering::Relaxed),
            instances_created: s.instances_created.load(Ordering::Relaxed),
            instances_recycled: s.instances_recycled.load(Ordering::Relaxed),
            counters,
            ..self.info.clone()
        }
    }
}

fn now_unix_nano() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

// ---- samplers ----

/// A loaded sampler plugin. `Send + Sync`: share it (e.g. in an `Arc`) between worker threads.
pub struct SamplerPlugin {
    core: PluginCore<SamplerWorld>,
    /// The declared predicates as a set (bit i = predicate i), for the decision-time walk.
    own_predicates: crate::predicate::PredicateSet,
    /// How the predicates map to the bits of the policy set the spans were scanned with.
    binding: arc_swap::ArcSwap<crate::predicate::Binding>,
}

impl fmt::Debug for SamplerPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SamplerPlugin")
            .field("name", &self.core.shared.name)
            .finish()
    }
}

impl SamplerPlugin {
    /// The rule name the plugin was loaded under.
    pub fn name(&self) -> &str {
        &self.core.shared.name
    }

    /// The attribute keys the plugin declared at `init`.
    pub fn projection(&self) -> &Projection {
        &self.core.projection
    }

    /// Whether the plugin asked for the full trace.
    pub fn wants_full_trace(&self) -> bool {
        self.core.full_trace
    }

    /// The predicates the plugin declared at `init` (0.2 samplers; empty for 0.1).
    pub fn predicates(&self) -> &[crate::predicate::Predicate] {
        &self.core.predicates
    }

    /// Uses the bits of `policy` (the set the ingest scan evaluates, which must contain this plugin's
    /// predicates) for spans scanned with it. Returns false, leaving the binding as it was, when a
    /// predicate is missing from `policy`.
    pub fn bind_predicates(&self, policy: &crate::predicate::PredicateSet) -> bool {
        match crate::predicate::Binding::new(&self.core.predicates, policy) {
            Some(b) => {
                self.binding.store(Arc::new(b));
                true
            }
            None => false,
        }
    }

    /// For each declared predicate, the number of spans of `spans` for which it holds: what `decide`
    /// passes a 0.2 sampler as `predicate-matches`.
    pub fn predicate_matches(&self, spans: &[SpanRecord]) -> Vec<u32> {
        crate::predicate::count_matches(&self.own_predicates, &self.binding.load(), spans)
    }

    /// Asks the plugin about one complete trace. Never panics; every failure is a [`PluginFailure`].
    pub fn decide(
        &self,
        trace_id: TraceId,
        spans: &[SpanRecord],
    ) -> Result<SamplerVerdict, PluginFailure> {
        let summary = marshal::summary(trace_id, spans, now_unix_nano());
        let attributes =
            marshal::project_with(&self.core.projection, &self.core.span_finder, spans);
        let full = self.core.full_trace.then(|| marshal::full_trace(spans));
        let matches = match self.core.pre {
            SamplerPre::V2(_) => self.predicate_matches(spans),
            SamplerPre::V1(_) => Vec::new(),
        };
        let d = self.core.call(spans, |w, store| {
            store.data().clock.set(summary.now_unix_nano);
            match w {
                SamplerWorld::V1(w) => w.tailgate_plugin_sampling().call_decide(
                    store,
                    &summary,
                    &attributes,
                    full.as_ref(),
                ),
                SamplerWorld::V2(w) => w
                    .tailgate_plugin_sampling()
                    .call_decide(store, &summary, &matches, &attributes, full.as_ref())
                    .map(|d| bindings::sampling::Decision {
                        verdict: match d.verdict {
                            bindings::sampling_v2::Verdict::Keep => WitVerdict::Keep,
                            bindings::sampling_v2::Verdict::Drop => WitVerdict::Drop,
                            bindings::sampling_v2::Verdict::Abstain => WitVerdict::Abstain,
                        },
                        probability: d.probability,
                        reason: d.reason,
                    }),
            }
        })?;
        check_decision(d).map_err(|m| self.core.bad_result(m))
    }

    /// Counters for metrics and status.
    pub fn stats(&self) -> PluginStats {
        self.core.stats()
    }
}

// ---- redactors ----

/// A loaded redactor plugin. `Send + Sync`, like [`SamplerPlugin`].
pub struct RedactorPlugin {
    core: PluginCore<RedactorWorld>,
}

impl fmt::Debug for RedactorPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedactorPlugin")
            .field("name", &self.core.shared.name)
            .finish()
    }
}

impl RedactorPlugin {
    /// The rule name the plugin was loaded under.
    pub fn name(&self) -> &str {
        &self.core.shared.name
    }

    /// Asks the plugin for the edits to one kept trace, validated and resolved to [`FieldRef`]s. Resource
    /// and scope indexes in them follow [`layout`]`(spans)`. Applying them is the caller's job.
    pub fn redact(
        &self,
        trace_id: TraceId,
        spans: &[SpanRecord],
    ) -> Result<Vec<RedactionEdit>, PluginFailure> {
        let summary = marshal::summary(trace_id, spans, now_unix_nano());
        let packed = marshal::pack(spans);
        let edits = self.core.call(spans, |w, store| {
            store.data().clock.set(summary.now_unix_nano);
            w.0.tailgate_plugin_redaction()
                .call_redact(store, &summary, &packed.wit)
        })?;
        let max = packed.fields.len() * MAX_EDITS_PER_FIELD + MAX_EDITS_SLACK;
        if edits.len() > max {
            return Err(self.core.bad_result(format!(
                "returned {} edits for a trace of {} fields (at most {max})",
                edits.len(),
                packed.fields.len()
            )));
        }
        edits
            .into_iter()
            .map(|e| resolve_edit(&packed, e))
            .collect::<Result<Vec<_>, String>>()
            .map_err(|m| self.core.bad_result(m))
    }

    /// Counters for metrics and status.
    pub fn stats(&self) -> PluginStats {
        self.core.stats()
    }
}

/// Checks a sampler's raw decision: the probability must be in (0, 1]; the reason is cut to
/// [`MAX_REASON`] bytes.
pub(crate) fn check_decision(d: bindings::sampling::Decision) -> Result<SamplerVerdict, String> {
    if let Some(p) = d.probability
        && !(p > 0.0 && p <= 1.0)
    {
        return Err(format!("probability {p} is outside (0, 1]"));
    }
    Ok(SamplerVerdict {
        decision: match d.verdict {
            WitVerdict::Keep => Verdict::Keep,
            WitVerdict::Drop => Verdict::Drop,
            WitVerdict::Abstain => Verdict::Abstain,
        },
        probability: d.probability,
        reason: d.reason.map(|r| truncate(r, MAX_REASON)),
    })
}

/// Checks one edit against the packed trace and resolves its field.
pub(crate) fn resolve_edit(
    packed: &marshal::Packed,
    e: bindings::redaction::Edit,
) -> Result<RedactionEdit, String> {
    let fields = &packed.fields;
    let field = fields.get(e.field as usize).ok_or_else(|| {
        format!(
            "edit of field {} but the trace has {} fields",
            e.field,
            fields.len()
        )
    })?;
    let action = match e.action {
        WitEditAction::Remove | WitEditAction::RenameKey(_) if !field.kind.is_attribute() => {
            return Err(format!(
                "edit of field {}: {:?} can only remove or rename attributes",
                e.field, field.kind
            ));
        }
        WitEditAction::Remove => EditAction::Remove,
        WitEditAction::RenameKey(k) => EditAction::RenameKey(k),
        WitEditAction::Replace(v) => EditAction::Replace(v),
        WitEditAction::Hash => EditAction::Hash,
        WitEditAction::Mask(ranges) => {
            let mut out: Vec<std::ops::Range<u32>> = Vec::with_capacity(ranges.len());
            for r in ranges {
                let end = r
                    .start
                    .checked_add(r.len)
                    .filter(|&end| end <= field.value_len);
                let Some(end) = end else {
                    return Err(format!(
                        "mask {}+{} of field {} is outside its {}-byte value",
                        r.start, r.len, e.field, field.value_len
                    ));
                };
                if field.is_string {
                    let at = packed.wit.fields[e.field as usize].value.offset as usize;
                    let value =
                        std::str::from_utf8(&packed.wit.text[at..at + field.value_len as usize])
                            .unwrap_or("");
                    if !value.is_char_boundary(r.start as usize)
                        || !value.is_char_boundary(end as usize)
                    {
                        return Err(format!(
                            "mask {}+{} of field {} splits a UTF-8 character",
                            r.start, r.len, e.field
                        ));
                    }
                }
                if out.last().is_some_and(|prev| prev.end > r.start) {
                    return Err(format!(
                        "mask ranges of field {} overlap or are not sorted",
                        e.field
                    ));
                }
                out.push(r.start..end);
            }
            EditAction::Mask(out)
        }
    };
    Ok(RedactionEdit {
        field: field.clone(),
        action,
        reason: e.reason.map(|r| truncate(r, MAX_REASON)),
    })
}

#[cfg(test)]
mod tests;
