//! Remembered decisions, so spans that arrive after their trace was decided follow that decision.
//!
//! Shared by the buffer (which marks a trace `Pending` when it hands it to the pipeline, and routes later
//! spans of any remembered trace to the pipeline instead of starting a new trace) and the pipeline (which
//! records the outcome). Kept and dropped traces are remembered separately with their own capacity and a
//! common time-to-live; ids are the full 128 bits. Sharded by trace id so the two sides rarely contend.

use crate::otlp::TraceId;
use lru::LruCache;
use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use tokio::time::{Duration, Instant};

const SHARDS: usize = 16;

/// What tailgate knows about a trace that is no longer buffered.
#[derive(Debug, Clone, PartialEq)]
pub enum Remembered {
    /// Handed to the pipeline, decision not recorded yet.
    Pending,
    /// Kept: late spans are exported with the same annotations.
    Kept(Arc<KeepInfo>),
    /// Dropped: late spans are dropped.
    Dropped,
}

/// What a late span of a kept trace needs to be exported like the rest of its trace.
#[derive(Debug, Clone, PartialEq)]
pub struct KeepInfo {
    /// Rule that kept the trace (`default` when no rule decided).
    pub rule: Arc<str>,
    /// What keeping the trace does to each span's sampling threshold (late spans' own `tracestate`
    /// included).
    pub applied: Applied,
    /// What brought the trace back after a drop (`tailgate.rescued_by`), when it was rescued.
    pub rescued_by: Option<Arc<str>>,
}

/// What keeping a trace does to the sampling threshold (`ot=th`) of its spans; the arithmetic is in
/// `pipeline/tracestate.rs`, the contract in docs/plugins.md ("Sampling probability and `ot=th`").
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Applied {
    /// Kept whatever its randomness: a rule keeping every trace that matches a condition, the default,
    /// a failure policy. Each span's threshold stays as it arrived.
    Everything,
    /// Kept by a consistent sampler with probability `p` (`0 < p < 1`): kept iff the trace's randomness
    /// is at least `T(p)`. The threshold becomes the larger of the upstream one and `T(p)`.
    Consistent(f64),
    /// Kept a share `p` (`0 < p < 1`) of the traces that reached the rule, independently of their
    /// randomness (a rate limiter, a budget). The span's probability becomes the upstream one times `p`.
    Share(f64),
    /// Kept with a probability nobody knows (a stateful sampler that reported none, `not` over a
    /// probabilistic decision): the threshold is erased, as the specification asks.
    Unknown,
}

impl Applied {
    /// The effect of a sampler's keep that reported `probability`: a stateless sampler's probability is
    /// consistent (it decides on the summary's randomness), a stateful one's is a share.
    pub fn of(probability: Option<f64>, stateful: bool) -> Applied {
        match (probability, stateful) {
            (Some(p), _) if p >= 1.0 => Applied::Everything,
            // Outside (0, 1]: the host's check refuses such decisions; unknown if one slips through.
            (Some(p), _) if p.is_nan() || p <= 0.0 => Applied::Unknown,
            (Some(p), false) => Applied::Consistent(p),
            (Some(p), true) => Applied::Share(p),
            (None, false) => Applied::Everything,
            (None, true) => Applied::Unknown,
        }
    }
}

struct Shard {
    kept: LruCache<TraceId, (Instant, Arc<KeepInfo>)>,
    dropped: LruCache<TraceId, Instant>,
    pending: HashSet<TraceId>,
}

/// The shared cache. See the module header.
pub struct DecisionCache {
    shards: Vec<Mutex<Shard>>,
    ttl: Duration,
}

impl DecisionCache {
    /// `kept` / `dropped` are total capacities (split over shards).
    pub fn new(kept: usize, dropped: usize, ttl: Duration) -> DecisionCache {
        let per =
            |n: usize| NonZeroUsize::new(n.div_ceil(SHARDS).max(1)).unwrap_or(NonZeroUsize::MIN);
        DecisionCache {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        kept: LruCache::new(per(kept)),
                        dropped: LruCache::new(per(dropped)),
                        pending: HashSet::new(),
                    })
                })
                .collect(),
            ttl,
        }
    }

    fn shard(&self, id: TraceId) -> std::sync::MutexGuard<'_, Shard> {
        // Trace ids are random; the low bits spread evenly. A poisoned lock only means another thread
        // panicked mid-update of plain maps; the data is still usable.
        let i = (id as usize) % SHARDS;
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks a trace as handed to the pipeline.
    pub fn mark_pending(&self, id: TraceId) {
        self.shard(id).pending.insert(id);
    }

    /// Records a keep.
    pub fn record_keep(&self, id: TraceId, info: Arc<KeepInfo>, now: Instant) {
        let mut s = self.shard(id);
        s.pending.remove(&id);
        s.dropped.pop(&id);
        s.kept.put(id, (now, info));
    }

    /// Records a drop.
    pub fn record_drop(&self, id: TraceId, now: Instant) {
        let mut s = self.shard(id);
        s.pending.remove(&id);
        s.kept.pop(&id);
        s.dropped.put(id, now);
    }

    /// What is remembered about `id`, if anything (expired entries count as forgotten).
    pub fn lookup(&self, id: TraceId, now: Instant) -> Option<Remembered> {
        let mut s = self.shard(id);
        if s.pending.contains(&id) {
            return Some(Remembered::Pending);
        }
        if let Some((at, info)) = s.kept.get(&id) {
            if now.duration_since(*at) <= self.ttl {
                return Some(Remembered::Kept(info.clone()));
            }
            s.kept.pop(&id);
            return None;
        }
        if let Some(at) = s.dropped.get(&id) {
            if now.duration_since(*at) <= self.ttl {
                return Some(Remembered::Dropped);
            }
            s.dropped.pop(&id);
        }
        None
    }

    /// Entries remembered (kept, dropped).
    pub fn len(&self) -> (usize, usize) {
        self.shards.iter().fold((0, 0), |(k, d), s| {
            let s = s.lock().unwrap_or_else(|p| p.into_inner());
            (k + s.kept.len(), d + s.dropped.len())
        })
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_keep_and_drop_separately_with_ttl() {
        let c = DecisionCache::new(100, 100, Duration::from_secs(60));
        let t0 = Instant::now();
        let info = Arc::new(KeepInfo {
            rule: "errors".into(),
            applied: Applied::Everything,
            rescued_by: None,
        });
        c.mark_pending(1);
        assert_eq!(c.lookup(1, t0), Some(Remembered::Pending));
        c.record_keep(1, info.clone(), t0);
        c.record_drop(2, t0);
        assert_eq!(c.lookup(1, t0), Some(Remembered::Kept(info)));
        assert_eq!(c.lookup(2, t0), Some(Remembered::Dropped));
        assert_eq!(c.lookup(3, t0), None);
        assert_eq!(c.lookup(2, t0 + Duration::from_secs(61)), None);
    }

    /// What an entry costs in resident memory, behind `config::memory::CACHE_ENTRY_BYTES`. Run alone, so
    /// that no other test allocates meanwhile: `cargo test -p tailgate --lib decision_cache_entry_bytes
    /// -- --ignored --nocapture`.
    #[test]
    #[ignore = "measures resident memory: run alone"]
    fn decision_cache_entry_bytes() {
        let (kept, dropped) = (200_000usize, 1_000_000usize);
        let before = crate::ingest::resident_bytes().expect("/proc/self/status");
        let c = DecisionCache::new(kept, dropped, Duration::from_secs(60));
        let t0 = Instant::now();
        let info = Arc::new(KeepInfo {
            rule: "errors".into(),
            applied: Applied::Everything,
            rescued_by: None,
        });
        for i in 0..kept as u128 {
            c.record_keep(i << 64 | i, info.clone(), t0);
        }
        for i in 0..dropped as u128 {
            c.record_drop((i + 1) << 80 | i, t0);
        }
        let after = crate::ingest::resident_bytes().expect("/proc/self/status");
        let per_entry = (after - before) as f64 / (kept + dropped) as f64;
        eprintln!("decision cache: {per_entry:.1} resident bytes per entry");
        assert!(per_entry <= crate::config::memory::CACHE_ENTRY_BYTES as f64);
        assert_eq!(c.len(), (kept, dropped));
    }

    #[test]
    fn capacity_is_bounded() {
        let c = DecisionCache::new(16, 32, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..10_000u128 {
            c.record_drop(i, t0);
        }
        assert!(c.len().1 <= 32);
        // Full 128-bit ids: two ids equal in the low 64 bits are different traces.
        let c = DecisionCache::new(16, 32, Duration::from_secs(60));
        c.record_drop(1 << 64 | 5, t0);
        assert_eq!(c.lookup(5, t0), None);
        assert_eq!(c.lookup(1 << 64 | 5, t0), Some(Remembered::Dropped));
    }
}
