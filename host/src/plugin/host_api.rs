//! What a plugin's `Store` holds and the host interface it imports (`host`, `host-v2`: logging,
//! counters, the clock), with the memory limiter that caps its linear memory.
use super::*;

/// Per-plugin state shared by its instances.
pub(super) struct PluginShared {
    pub(super) name: Arc<str>,
    pub(super) counters: Mutex<HashMap<String, u64>>,
    pub(super) stats: StatCounters,
}

#[derive(Default)]
pub(super) struct StatCounters {
    pub(super) calls: AtomicU64,
    pub(super) traps: AtomicU64,
    pub(super) timeouts: AtomicU64,
    pub(super) out_of_memory: AtomicU64,
    pub(super) bad_results: AtomicU64,
    pub(super) call_nanos: AtomicU64,
    pub(super) instances_created: AtomicU64,
    pub(super) instances_recycled: AtomicU64,
}

/// Caps the instance's memories (summed) and remembers whether the cap was hit, to tell an
/// out-of-memory trap from others.
pub(super) struct MemoryLimiter {
    pub(super) limit: usize,
    pub(super) used: usize,
    pub(super) hit_limit: bool,
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
pub(super) struct HostState {
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) limiter: MemoryLimiter,
    pub(super) plugin: Arc<PluginShared>,
    /// The trace of the current call, for the accessor functions; empty outside calls and for plugins
    /// that do not import the accessors.
    pub(super) trace: Vec<SpanRecord>,
    /// What WASI's clocks read: the current call's time (see [`clock`]).
    pub(super) clock: clock::CallClock,
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

pub(super) fn truncate(mut s: String, max: usize) -> String {
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
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
