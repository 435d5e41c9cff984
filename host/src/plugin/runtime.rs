//! The plugin runtime: the wasmtime `Engine` (epoch interruption, memory caps), the linker (WASI p2
//! granting nothing, plus the `host` interface), the compile cache, and loading: a component is
//! compiled (or read from the cache), checked against the contract's worlds and instantiated.
use super::host_api::{HostState, PluginShared, StatCounters};
use super::instances::{InitError, PluginCore, RedactorWorld, SamplerWorld, World};
use super::*;

/// The engine and everything shared by the loaded plugins. Cheap to clone.
#[derive(Clone)]
pub struct PluginRuntime {
    pub(super) inner: Arc<RuntimeInner>,
}

pub(super) struct RuntimeInner {
    pub(super) engine: Engine,
    pub(super) linker: Linker<HostState>,
    pub(super) settings: RuntimeSettings,
    /// The compiled-plugin cache (`None`: off, or its directory could not be trusted).
    pub(super) cache: Option<super::cache::ModuleCache>,
    /// Tells the ticker thread to stop when the runtime and every plugin are gone.
    pub(super) stop: Arc<AtomicBool>,
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

pub(super) fn runtime_err(e: impl fmt::Display) -> PluginError {
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
        let engine = Engine::new(&config).map_err(|e| runtime_err(format!("{e:#}")))?;
        let mut compile_cache = None;
        if !settings.disable_cache {
            let dir = settings.cache_dir.clone().unwrap_or_else(default_cache_dir);
            let dir = std::path::absolute(&dir).map_err(runtime_err)?;
            match super::cache::ModuleCache::open(&dir, &engine) {
                Ok(cache) => compile_cache = Some(cache),
                Err(e) => tracing::warn!(
                    error = %e,
                    "compiled-plugin cache off: every plugin load compiles"
                ),
            }
        }
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

    pub(super) fn compile(&self, plugin: &str, path: &Path) -> Result<Compiled, PluginError> {
        let started = Instant::now();
        let engine = &self.inner.engine;
        let cache = self.inner.cache.as_ref();
        // An unchanged file whose compiled form is cached is neither read nor hashed.
        let file_meta = match super::builtin::name_of(path) {
            Some(_) => None,
            None => std::fs::metadata(path).ok(),
        };
        if let (Some(cache), Some(meta)) = (cache, &file_meta)
            && let Some(sha256) = cache.known_hash(path, meta)
            && let Some(component) = cache.load(engine, &sha256)
        {
            return Ok(Compiled::describe(
                engine,
                component,
                meta.len(),
                sha256,
                started.elapsed(),
                true,
            ));
        }
        let bytes = source_bytes(plugin, path)?;
        let sha256 = hex(&Sha256::digest(&bytes));
        if let (Some(cache), Some(before)) = (cache, &file_meta)
            && let Ok(after) = std::fs::metadata(path)
        {
            cache.remember_hash(path, before, &after, &sha256);
        }
        let cached = cache.and_then(|c| c.load(engine, &sha256));
        let from_cache = cached.is_some();
        let component = match cached {
            Some(component) => component,
            None => {
                let component =
                    Component::new(engine, &bytes).map_err(|e| PluginError::Compile {
                        plugin: plugin.to_owned(),
                        reason: format!("{e:#}"),
                    })?;
                if let Some(cache) = cache {
                    cache.store(&sha256, &component);
                }
                component
            }
        };
        Ok(Compiled::describe(
            engine,
            component,
            bytes.len() as u64,
            sha256,
            started.elapsed(),
            from_cache,
        ))
    }

    pub(super) fn load<W: World>(&self, spec: &PluginSpec) -> Result<PluginCore<W>, PluginError> {
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

/// The component bytes a rule names: a built-in plugin's (`builtin:NAME`) or a file's.
fn source_bytes(plugin: &str, path: &Path) -> Result<std::borrow::Cow<'static, [u8]>, PluginError> {
    if let Some(name) = super::builtin::name_of(path) {
        return super::builtin::resolve(name)
            .map(|b| std::borrow::Cow::Borrowed(b.bytes))
            .map_err(|message| PluginError::Config {
                plugin: plugin.to_owned(),
                message,
            });
    }
    std::fs::read(path)
        .map(std::borrow::Cow::Owned)
        .map_err(|source| PluginError::Read {
            plugin: plugin.to_owned(),
            path: path.to_owned(),
            source,
        })
}

pub(super) fn ticks(d: Duration) -> u64 {
    // +1: the current tick may be about to end, so n ticks guarantee at least n-1 full ticks.
    (d.as_nanos().div_ceil(EPOCH_TICK.as_nanos()) as u64).max(1) + 1
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Which world the exports implement; with `expected`, an error unless it is that one.
pub(super) fn world_of(
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
pub(super) fn contract_version(exports: &[String]) -> &'static str {
    if exports.iter().any(|e| e == bindings::SAMPLING_EXPORT_V2) {
        "0.2.0"
    } else {
        "0.1.0"
    }
}

/// A predicate as a short text for error messages, e.g. `span http.route regex("^/a")`.
pub(super) fn describe_predicate(p: &bindings::sampling_v2::Predicate) -> String {
    let level = match p.level {
        bindings::types::AttributeLevel::Span => "span",
        bindings::types::AttributeLevel::Resource => "resource",
        bindings::types::AttributeLevel::Scope => "scope",
    };
    format!("{level} attribute {:?}: {:?}", p.key, p.test)
}

/// Checks and converts a predicate a 0.2 sampler declared (the WIT contract's type into the scan's). The
/// error says what is wrong with it.
pub(super) fn predicate_from_wit(
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

pub(super) struct Compiled {
    pub(super) component: Component,
    pub(super) imports: Vec<String>,
    pub(super) exports: Vec<String>,
    pub(super) uses_accessors: bool,
    pub(super) size_bytes: u64,
    pub(super) sha256: String,
    pub(super) compile_time: Duration,
    pub(super) from_cache: bool,
}

impl Compiled {
    /// A compiled component with what the loader needs to know of its imports and exports.
    fn describe(
        engine: &wasmtime::Engine,
        component: Component,
        size_bytes: u64,
        sha256: String,
        compile_time: Duration,
        from_cache: bool,
    ) -> Compiled {
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
        Compiled {
            component,
            imports,
            exports,
            uses_accessors,
            size_bytes,
            sha256,
            compile_time,
            from_cache,
        }
    }
}
