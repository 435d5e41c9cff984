//! Instances of a loaded plugin: the pool a call takes an idle instance from (or instantiates one from
//! the kept `InstancePre` and runs `init` on it), the per-call epoch deadline, failure classification
//! and recycling.
use super::host_api::{HostState, MemoryLimiter, PluginShared, lock};
use super::runtime::{RuntimeInner, contract_version};
use super::*;

/// The two worlds, abstracted so one pool implementation serves both.
pub(super) trait World: Sized + Send + 'static {
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
pub(super) type InitOutput = (Interest, Vec<bindings::sampling_v2::Predicate>);

/// A sampler of either contract version.
pub(super) enum SamplerWorld {
    V1(bindings::sampler::Sampler),
    V2(bindings::sampler_v2::Sampler),
}
pub(super) struct RedactorWorld(pub(super) bindings::redactor::Redactor);

pub(super) enum SamplerPre {
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
pub(super) struct Slot<W> {
    pub(super) store: Store<HostState>,
    pub(super) instance: W,
    pub(super) calls: u64,
}

pub(super) enum InitError {
    /// `init` returned an error message (bad configuration).
    Rejected(String),
    Failed(PluginFailure),
}

/// What samplers and redactors share: the instance pool and the call discipline.
pub(super) struct PluginCore<W: World> {
    pub(super) runtime: Arc<RuntimeInner>,
    pub(super) shared: Arc<PluginShared>,
    pub(super) pre: W::Pre,
    pub(super) config: String,
    pub(super) deadline_ticks: u64,
    pub(super) init_ticks: u64,
    pub(super) memory_limit: usize,
    pub(super) max_calls: u64,
    pub(super) projection: Projection,
    /// The predicates a 0.2 sampler declared (empty otherwise).
    pub(super) predicates: Vec<crate::predicate::Predicate>,
    /// Finds the projected span keys in encoded spans (built once from `projection.span_keys`).
    pub(super) span_finder: crate::otlp::KeyFinder,
    pub(super) full_trace: bool,
    pub(super) stateful: bool,
    pub(super) uses_accessors: bool,
    /// Idle instances. A call pops one (or creates one) and pushes it back when done.
    pub(super) idle: Mutex<Vec<Slot<W>>>,
    /// Held for a whole call by stateful plugins, so their single instance is never duplicated.
    pub(super) serial: Mutex<()>,
    /// Load-time facts for [`PluginStats`].
    pub(super) info: PluginStats,
}

pub(super) fn classify(e: &wasmtime::Error, store: &Store<HostState>) -> PluginFailure {
    if store.data().limiter.hit_limit {
        return PluginFailure::OutOfMemory;
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => PluginFailure::Timeout,
        _ => PluginFailure::Trap(format!("{e:#}")),
    }
}

impl<W: World> PluginCore<W> {
    pub(super) fn idle_lock(&self) -> MutexGuard<'_, Vec<Slot<W>>> {
        lock(&self.idle)
    }

    /// A fresh instance with `init` run on it.
    pub(super) fn instantiate(&self) -> Result<(Slot<W>, InitOutput), InitError> {
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
    pub(super) fn call<R>(
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

    pub(super) fn count_failure(&self, f: &PluginFailure) {
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
    pub(super) fn bad_result(&self, message: String) -> PluginFailure {
        let f = PluginFailure::BadResult(message);
        self.count_failure(&f);
        tracing::warn!(plugin = %self.shared.name, kind = f.kind(), "plugin call failed: {f}");
        f
    }

    pub(super) fn stats(&self) -> PluginStats {
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

pub(super) fn now_unix_nano() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
