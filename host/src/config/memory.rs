//! The process's memory limit (`service.memory_limit`) and the shares it gives the buffer, the export
//! queue and the decision cache.
//!
//! `auto` takes 80 % of the memory cgroup's limit when the process runs under one (cgroup v2
//! `memory.max` or v1 `memory.limit_in_bytes`, the smallest limit on the way from the process's cgroup
//! up to the hierarchy's root), else a quarter of the machine's memory, at most 8 GiB. From the limit:
//!
//! | part | share | counted in |
//! | --- | ---: | --- |
//! | buffer (`buffer.max_buffer_bytes`: ingest queue, buffered traces, traces being decided/redacted) | 50 % | bytes |
//! | export queue (`exporters.otlp.sending_queue.queue_bytes`) | 20 % | bytes |
//! | decision cache (`buffer.decision_cache.*_traces`) | at most 10 % | entries x [`CACHE_ENTRY_BYTES`] |
//! | second-chance ring (`buffer.second_chance.max_bytes`), when on | 5 % | bytes |
//! | allowance: plugin instances, runtime, allocator slack | the rest | not counted |
//!
//! A part set explicitly keeps its value; the parts set explicitly must fit in the limit together. The
//! process's resident memory is also watched against the limit itself (see `ingest::Pressure`).

use super::ByteSize;
use std::path::{Path, PathBuf};

/// Bytes a decision cache entry costs, measured: key, timestamp, rule, LRU links, hash table slot and
/// allocator overhead (see BENCHMARKS.md).
pub const CACHE_ENTRY_BYTES: u64 = 112;
/// Kept-trace entries when sized automatically, at most.
pub const MAX_AUTO_KEPT: usize = 200_000;
/// Dropped-trace entries when sized automatically, at most.
pub const MAX_AUTO_DROPPED: usize = 1_000_000;
/// The smallest limit accepted: below it the allowance cannot hold the plugin instances.
pub const MIN_LIMIT: u64 = 32 << 20;

/// Where the limit came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitSource {
    /// `service.memory_limit` set in bytes.
    Configured,
    /// 80 % of the memory cgroup's limit (the file named).
    Cgroup { file: PathBuf, limit: u64 },
    /// A quarter of the machine's memory.
    Machine { total: u64 },
}

impl std::fmt::Display for LimitSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LimitSource::Configured => f.write_str("service.memory_limit"),
            LimitSource::Cgroup { file, limit } => {
                write!(
                    f,
                    "80% of the cgroup limit {} ({})",
                    ByteSize(*limit),
                    file.display()
                )
            }
            LimitSource::Machine { total } => {
                write!(
                    f,
                    "a quarter of the machine's {} (no cgroup limit)",
                    ByteSize(*total)
                )
            }
        }
    }
}

/// The resolved limit and every share of it, in bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryBudget {
    pub limit: u64,
    pub source: LimitSource,
    /// Ingest queue + buffer + traces handed to the pipeline and not yet in the export queue.
    pub buffer: u64,
    /// Bytes of spans waiting for export.
    pub export_queue: u64,
    pub kept_traces: usize,
    pub dropped_traces: usize,
    /// The second-chance ring's bytes (0 when it is off).
    pub second_chance: u64,
}

/// What the configuration asks for: `None` is `auto` (the part's share).
#[derive(Debug, Clone, Copy, Default)]
pub struct Requested {
    pub limit: Option<ByteSize>,
    pub buffer: Option<ByteSize>,
    pub export_queue: Option<ByteSize>,
    pub kept_traces: Option<usize>,
    pub dropped_traces: Option<usize>,
    /// `None`: the ring is off; `Some(None)`: on, sized `auto`.
    pub second_chance: Option<Option<ByteSize>>,
}

impl MemoryBudget {
    /// Bytes of the decision cache when full.
    pub fn decision_cache(&self) -> u64 {
        (self.kept_traces as u64 + self.dropped_traces as u64) * CACHE_ENTRY_BYTES
    }

    /// What the counted parts leave for the rest of the process.
    pub fn allowance(&self) -> u64 {
        self.limit.saturating_sub(self.counted())
    }

    /// The parts counted in bytes, together.
    pub fn counted(&self) -> u64 {
        self.buffer + self.export_queue + self.decision_cache() + self.second_chance
    }
}

/// What the machine says about memory: the cgroup limit (if any) and the physical total.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SystemMemory {
    pub cgroup: Option<(PathBuf, u64)>,
    pub total: Option<u64>,
}

impl SystemMemory {
    /// Reads this process's cgroup limit and the machine's memory.
    pub fn detect() -> SystemMemory {
        Self::read_from(Path::new("/"))
    }

    /// As [`SystemMemory::detect`], with `root` standing for `/` (tests give a directory of fixture files).
    pub fn read_from(root: &Path) -> SystemMemory {
        let read = |p: &str| std::fs::read_to_string(root.join(p.trim_start_matches('/'))).ok();
        let total = read("/proc/meminfo").and_then(|m| parse_meminfo_total(&m));
        let cgroup = read("/proc/self/cgroup").and_then(|c| {
            let mounts = read("/proc/self/mountinfo").unwrap_or_default();
            cgroup_limit(&c, &mounts, root)
        });
        SystemMemory { cgroup, total }
    }

    /// The `auto` limit and where it comes from.
    pub fn auto_limit(&self) -> (u64, LimitSource) {
        if let Some((file, limit)) = &self.cgroup {
            let limit = *limit;
            // A cgroup limit above the machine's memory bounds nothing.
            if self.total.is_none_or(|t| limit < t) {
                return (
                    limit / 5 * 4,
                    LimitSource::Cgroup {
                        file: file.clone(),
                        limit,
                    },
                );
            }
        }
        let total = self.total.unwrap_or(2 << 30);
        ((total / 4).min(8 << 30), LimitSource::Machine { total })
    }
}

fn parse_meminfo_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The smallest memory limit on the way from this process's cgroup to its hierarchy's root, with the
/// file that set it. `cgroup` is `/proc/self/cgroup`, `mountinfo` is `/proc/self/mountinfo` (for where
/// the hierarchies are mounted; the usual `/sys/fs/cgroup` places are tried when it names none).
fn cgroup_limit(cgroup: &str, mountinfo: &str, root: &Path) -> Option<(PathBuf, u64)> {
    let mut best: Option<(PathBuf, u64)> = None;
    for line in cgroup.lines() {
        // `hierarchy-id:controllers:path`; v2 is `0::path`, v1's memory controller `N:memory:path`.
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let (v2, file) = if controllers.is_empty() {
            (true, "memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            (false, "memory.limit_in_bytes")
        } else {
            continue;
        };
        for mount in mount_points(mountinfo, v2) {
            let base = root.join(mount.trim_start_matches('/'));
            // The hierarchy mounted here holds the process's cgroup.
            if !base.join(path.trim_start_matches('/')).is_dir() {
                continue;
            }
            // Inside a cgroup namespace the path is relative to the mount's root: walk it upward.
            let mut dir = PathBuf::from(path.trim_start_matches('/'));
            loop {
                let candidate = base.join(&dir).join(file);
                if let Some(limit) = std::fs::read_to_string(&candidate)
                    .ok()
                    .and_then(|s| parse_limit(&s))
                    && best.as_ref().is_none_or(|(_, b)| limit < *b)
                {
                    let shown =
                        Path::new("/").join(candidate.strip_prefix(root).unwrap_or(&candidate));
                    best = Some((shown, limit));
                }
                if !dir.pop() {
                    break;
                }
            }
            break;
        }
    }
    best
}

/// Where the v2 hierarchy (or v1's memory controller) is mounted, from mountinfo, then the usual places.
fn mount_points(mountinfo: &str, v2: bool) -> Vec<String> {
    let mut out: Vec<String> = mountinfo
        .lines()
        .filter_map(|l| {
            // `id parent major:minor root mount-point options ... - fstype source super-options`
            let (left, right) = l.split_once(" - ")?;
            let mount = left.split_whitespace().nth(4)?;
            let mut r = right.split_whitespace();
            let fstype = r.next()?;
            let supers = r.nth(1).unwrap_or("");
            let hit = if v2 {
                fstype == "cgroup2"
            } else {
                fstype == "cgroup" && supers.split(',').any(|o| o == "memory")
            };
            hit.then(|| mount.to_string())
        })
        .collect();
    let usual: &[&str] = if v2 {
        &["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
    } else {
        &["/sys/fs/cgroup/memory"]
    };
    out.extend(usual.iter().map(|s| s.to_string()));
    out
}

/// A limit file's value; `max` and the v1 "no limit" values (near `i64::MAX`) are no limit.
fn parse_limit(s: &str) -> Option<u64> {
    let v: u64 = s.trim().parse().ok()?;
    (v < 1 << 60).then_some(v)
}

/// The budget for what the configuration asks (`None` = auto, the part's share).
pub fn budget(r: Requested, system: &SystemMemory) -> Result<MemoryBudget, String> {
    let (limit, source) = match r.limit {
        Some(b) => (b.0, LimitSource::Configured),
        None => system.auto_limit(),
    };
    if limit < MIN_LIMIT {
        return Err(format!(
            "service.memory_limit: {} ({source}) is below the smallest workable limit, {}",
            ByteSize(limit),
            ByteSize(MIN_LIMIT)
        ));
    }
    let share = |n: u64| limit / 100 * n;
    let cache_share = share(10) / CACHE_ENTRY_BYTES;
    // Kept:dropped entries as in the fixed defaults, 1:5.
    let auto_kept = ((cache_share / 6) as usize).min(MAX_AUTO_KEPT);
    let auto_dropped = ((cache_share / 6 * 5) as usize).min(MAX_AUTO_DROPPED);
    let b = MemoryBudget {
        limit,
        buffer: r.buffer.map_or(share(50), |b| b.0),
        export_queue: r.export_queue.map_or(share(20), |b| b.0),
        kept_traces: r.kept_traces.unwrap_or(auto_kept),
        dropped_traces: r.dropped_traces.unwrap_or(auto_dropped),
        second_chance: r.second_chance.map_or(0, |b| b.map_or(share(5), |b| b.0)),
        source,
    };
    let counted = b.counted();
    if counted > limit {
        return Err(format!(
            "service.memory_limit is {} ({}), but buffer.max_buffer_bytes ({}), \
             exporters.otlp.sending_queue.queue_bytes ({}), the decision cache ({} entries, {}) and \
             buffer.second_chance.max_bytes ({}) add up to {}: lower them or raise the limit",
            ByteSize(limit),
            b.source,
            ByteSize(b.buffer),
            ByteSize(b.export_queue),
            b.kept_traces + b.dropped_traces,
            ByteSize(b.decision_cache()),
            ByteSize(b.second_chance),
            ByteSize(counted)
        ));
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory standing for `/`, removed when dropped.
    struct Fixture(PathBuf);

    impl Fixture {
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn fixture(files: &[(&str, &str)]) -> Fixture {
        let dir = std::env::temp_dir().join(format!(
            "tailgate-memory-fixture-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        for (path, text) in files {
            let p = dir.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().expect("has a parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        }
        Fixture(dir)
    }

    const MEMINFO: &str = "MemTotal:       16384000 kB\nMemFree:  1 kB\n";

    #[test]
    fn cgroup_v2_limit_is_found_through_mountinfo() {
        let d = fixture(&[
            ("/proc/meminfo", MEMINFO),
            ("/proc/self/cgroup", "0::/kubepods/pod1/ctr\n"),
            (
                "/proc/self/mountinfo",
                "30 25 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n",
            ),
            ("/sys/fs/cgroup/kubepods/pod1/ctr/memory.max", "max\n"),
            ("/sys/fs/cgroup/kubepods/pod1/memory.max", "536870912\n"),
            ("/sys/fs/cgroup/kubepods/memory.max", "max\n"),
        ]);
        let s = SystemMemory::read_from(d.path());
        assert_eq!(s.total, Some(16384000 * 1024));
        let (file, limit) = s.cgroup.clone().expect("a cgroup limit");
        assert_eq!(limit, 512 << 20);
        assert_eq!(file, Path::new("/sys/fs/cgroup/kubepods/pod1/memory.max"));
        let (auto, source) = s.auto_limit();
        assert_eq!(auto, (512 << 20) / 5 * 4);
        assert!(matches!(source, LimitSource::Cgroup { .. }));
    }

    #[test]
    fn cgroup_v1_memory_controller_and_the_namespace_root() {
        // Inside a cgroup namespace the path is `/`: the mount's own file is the container's limit.
        let d = fixture(&[
            ("/proc/meminfo", MEMINFO),
            (
                "/proc/self/cgroup",
                "12:pids:/\n4:cpu,cpuacct:/\n3:memory:/\n0::/\n",
            ),
            ("/proc/self/mountinfo", ""),
            ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "268435456\n"),
        ]);
        let s = SystemMemory::read_from(d.path());
        assert_eq!(s.cgroup.as_ref().map(|c| c.1), Some(256 << 20));
        assert_eq!(s.auto_limit().0, (256 << 20) / 5 * 4);
    }

    #[test]
    fn no_limit_or_a_limit_above_the_machine_means_the_machine() {
        let d = fixture(&[
            ("/proc/meminfo", MEMINFO),
            ("/proc/self/cgroup", "3:memory:/x\n"),
            ("/proc/self/mountinfo", ""),
            (
                "/sys/fs/cgroup/memory/x/memory.limit_in_bytes",
                "9223372036854771712\n",
            ),
        ]);
        let s = SystemMemory::read_from(d.path());
        assert_eq!(s.cgroup, None);
        assert_eq!(s.auto_limit().0, 16384000 * 1024 / 4);
        let big = SystemMemory {
            cgroup: Some(("/m".into(), 64 << 30)),
            total: Some(16 << 30),
        };
        assert_eq!(
            big.auto_limit(),
            (4 << 30, LimitSource::Machine { total: 16 << 30 })
        );
        let huge = SystemMemory {
            cgroup: None,
            total: Some(256 << 30),
        };
        assert_eq!(huge.auto_limit().0, 8 << 30, "auto is at most 8 GiB");
    }

    #[test]
    fn shares_and_explicit_parts() {
        let sys = SystemMemory::default();
        let limit = |l: ByteSize| Requested {
            limit: Some(l),
            ..Default::default()
        };
        let b = budget(limit(ByteSize::mib(1000)), &sys).expect("fits");
        assert_eq!(b.buffer, (1000 << 20) / 100 * 50);
        assert_eq!(b.export_queue, (1000 << 20) / 100 * 20);
        assert!(b.decision_cache() <= (1000 << 20) / 10);
        assert!(b.kept_traces > 0 && b.dropped_traces == b.kept_traces * 5);
        assert!(b.allowance() >= (1000 << 20) / 100 * 20);
        assert_eq!(b.second_chance, 0, "the ring is off");
        let on = Requested {
            second_chance: Some(None),
            ..limit(ByteSize::mib(1000))
        };
        assert_eq!(
            budget(on, &sys).expect("fits").second_chance,
            (1000 << 20) / 100 * 5
        );
        // Large limits cap the cache at the fixed defaults.
        let b = budget(limit(ByteSize(64 << 30)), &sys).expect("fits");
        assert_eq!(
            (b.kept_traces, b.dropped_traces),
            (MAX_AUTO_KEPT, MAX_AUTO_DROPPED)
        );
        // Explicit parts win, and must fit.
        let b = budget(
            Requested {
                buffer: Some(ByteSize::mib(400)),
                kept_traces: Some(10),
                dropped_traces: Some(10),
                ..limit(ByteSize::mib(512))
            },
            &sys,
        )
        .expect("fits");
        assert_eq!((b.buffer, b.kept_traces), (400 << 20, 10));
        let e = budget(
            Requested {
                buffer: Some(ByteSize::mib(500)),
                ..limit(ByteSize::mib(512))
            },
            &sys,
        )
        .expect_err("does not fit");
        assert!(e.contains("buffer.max_buffer_bytes (500.0MiB)"), "{e}");
        let e = budget(limit(ByteSize::mib(8)), &sys).expect_err("too small");
        assert!(e.contains("below the smallest"), "{e}");
    }
}
