//! The only clock a plugin has: WASI's wall clock and monotonic clock both read the time the host
//! grants for the current call (the `now-unix-nano` of the trace summary), frozen for the whole call.
//! A plugin therefore cannot time its own execution or the host's, and its decision depends only on
//! what the call hands it, which keeps plugins deterministic and testable.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock};

/// One instance's clock, set by the host before each call.
#[derive(Clone)]
pub(super) struct CallClock(Arc<Times>);

struct Times {
    /// Unix nanoseconds of the current call.
    wall: AtomicU64,
    /// The same, but never decreasing (the wall clock may step back).
    monotonic: AtomicU64,
}

impl CallClock {
    pub fn new(now_unix_nano: u64) -> Self {
        CallClock(Arc::new(Times {
            wall: AtomicU64::new(now_unix_nano),
            monotonic: AtomicU64::new(now_unix_nano),
        }))
    }

    /// The time of the call about to be made.
    pub fn set(&self, now_unix_nano: u64) {
        self.0.wall.store(now_unix_nano, Ordering::Relaxed);
        self.0.monotonic.fetch_max(now_unix_nano, Ordering::Relaxed);
    }

    /// The WASI wall clock (`wasi:clocks/wall-clock`).
    pub fn wall(&self) -> impl HostWallClock + 'static {
        Wall(self.0.clone())
    }

    /// The WASI monotonic clock (`wasi:clocks/monotonic-clock`).
    pub fn monotonic(&self) -> impl HostMonotonicClock + 'static {
        Monotonic(self.0.clone())
    }
}

struct Wall(Arc<Times>);

impl HostWallClock for Wall {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        Duration::from_nanos(self.0.wall.load(Ordering::Relaxed))
    }
}

struct Monotonic(Arc<Times>);

impl HostMonotonicClock for Monotonic {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        self.0.monotonic.load(Ordering::Relaxed)
    }
}
