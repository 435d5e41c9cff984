//! Plugin health: every plugin's recent call outcomes, so that a plugin which keeps failing is reported
//! (`GET /health` answers `degraded` and names it, `tailgate_plugin_degraded{plugin}` is 1) rather than
//! only counted in `tailgate_plugin_failures_total`.
//!
//! "Keeps failing" is defined on a window of calls, not of time, so it is the same on a busy and a quiet
//! instance: a plugin is **degraded** when at least [`MIN_CALLS`] of its last [`WINDOW`] calls were
//! recorded and at least half of those failed (trap, timeout, out of memory, bad result). It recovers as
//! soon as successful calls bring the failures in the window under half.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

/// Calls remembered per plugin.
pub const WINDOW: usize = 100;
/// Fewest calls in the window before a plugin can be called degraded (one early failure is not a trend).
pub const MIN_CALLS: usize = 10;

/// What a plugin does in the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PluginRole {
    Sampler,
    Redactor,
}

/// Outcomes of every plugin called so far, by rule name. Cheap to update from many worker threads: the
/// map is read-locked, each plugin has its own small lock.
#[derive(Default)]
pub struct PluginHealth {
    plugins: RwLock<BTreeMap<String, Arc<Mutex<Record>>>>,
}

struct Record {
    role: PluginRole,
    calls: u64,
    failures: u64,
    /// Ring of the last [`WINDOW`] outcomes (`true` = failed).
    window: [bool; WINDOW],
    /// Outcomes in the ring (up to [`WINDOW`]).
    filled: usize,
    next: usize,
    window_failures: usize,
    last_failure: Option<&'static str>,
    degraded: bool,
}

impl Record {
    fn new(role: PluginRole) -> Record {
        Record {
            role,
            calls: 0,
            failures: 0,
            window: [false; WINDOW],
            filled: 0,
            next: 0,
            window_failures: 0,
            last_failure: None,
            degraded: false,
        }
    }

    fn push(&mut self, failed: bool) {
        if self.filled == WINDOW {
            if self.window[self.next] {
                self.window_failures -= 1;
            }
        } else {
            self.filled += 1;
        }
        self.window[self.next] = failed;
        self.next = (self.next + 1) % WINDOW;
        if failed {
            self.window_failures += 1;
        }
    }

    fn is_degraded(&self) -> bool {
        self.filled >= MIN_CALLS && self.window_failures * 2 >= self.filled
    }
}

/// One plugin's health, as `/health` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PluginStatus {
    /// The rule name (`policy.rules[].name` / `policy.redactors[].name`).
    pub plugin: String,
    pub role: PluginRole,
    /// Calls since start, and how many failed.
    pub calls: u64,
    pub failures: u64,
    /// Calls in the recent window, and how many of them failed.
    pub recent_calls: usize,
    pub recent_failures: usize,
    /// The kind of the last failure: `trap`, `timeout`, `out_of_memory`, `bad_result`.
    pub last_failure: Option<&'static str>,
    pub degraded: bool,
}

impl PluginHealth {
    /// Records one call of `plugin`; `failure` is the failure kind when it failed. Returns the plugin's
    /// new degraded state when this call changed it.
    pub fn record(
        &self,
        plugin: &str,
        role: PluginRole,
        failure: Option<&'static str>,
    ) -> Option<bool> {
        let existing = self
            .plugins
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(plugin)
            .cloned();
        let record = match existing {
            Some(r) => r,
            None => self
                .plugins
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(plugin.to_owned())
                .or_insert_with(|| Arc::new(Mutex::new(Record::new(role))))
                .clone(),
        };
        let mut r = record.lock().unwrap_or_else(PoisonError::into_inner);
        r.calls += 1;
        if let Some(kind) = failure {
            r.failures += 1;
            r.last_failure = Some(kind);
        }
        r.push(failure.is_some());
        let now = r.is_degraded();
        (now != r.degraded).then(|| {
            r.degraded = now;
            now
        })
    }

    /// Every plugin called so far, by name.
    pub fn snapshot(&self) -> Vec<PluginStatus> {
        let plugins = self.plugins.read().unwrap_or_else(PoisonError::into_inner);
        plugins
            .iter()
            .map(|(name, r)| {
                let r = r.lock().unwrap_or_else(PoisonError::into_inner);
                PluginStatus {
                    plugin: name.clone(),
                    role: r.role,
                    calls: r.calls,
                    failures: r.failures,
                    recent_calls: r.filled,
                    recent_failures: r.window_failures,
                    last_failure: r.last_failure,
                    degraded: r.degraded,
                }
            })
            .collect()
    }

    /// The degraded plugins.
    pub fn degraded(&self) -> Vec<PluginStatus> {
        self.snapshot().into_iter().filter(|p| p.degraded).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degraded_after_most_recent_calls_fail_and_recovers() {
        let h = PluginHealth::default();
        // Fewer than MIN_CALLS calls: never degraded, however they went.
        for _ in 0..MIN_CALLS - 1 {
            assert_eq!(h.record("p", PluginRole::Sampler, Some("timeout")), None);
        }
        assert_eq!(
            h.record("p", PluginRole::Sampler, Some("timeout")),
            Some(true)
        );
        let s = &h.degraded()[0];
        assert_eq!(
            (s.calls, s.failures, s.recent_calls, s.last_failure),
            (10, 10, 10, Some("timeout"))
        );
        // Successes push the failures under half: 10 failures in 21 calls.
        for _ in 0..10 {
            assert_eq!(h.record("p", PluginRole::Sampler, None), None);
        }
        assert_eq!(h.record("p", PluginRole::Sampler, None), Some(false));
        assert!(h.degraded().is_empty());
        // The window forgets: after WINDOW successes a burst of failures counts from a clean slate.
        for _ in 0..WINDOW {
            h.record("p", PluginRole::Sampler, None);
        }
        assert_eq!(h.snapshot()[0].recent_failures, 0);
        assert_eq!(h.snapshot()[0].recent_calls, WINDOW);
    }

    #[test]
    fn occasional_failures_are_not_degraded() {
        let h = PluginHealth::default();
        for i in 0..1000 {
            let failure = (i % 10 == 0).then_some("timeout");
            assert_eq!(
                h.record("slow-sometimes", PluginRole::Redactor, failure),
                None
            );
        }
        let s = &h.snapshot()[0];
        assert_eq!((s.calls, s.failures, s.degraded), (1000, 100, false));
        assert_eq!(s.role, PluginRole::Redactor);
    }
}
