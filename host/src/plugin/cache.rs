//! tailgate's cache of compiled plugins: wasmtime's serialized form of each component, written by this
//! binary, read back with `Component::deserialize_file` (a memory map: no copy, no decompression, and
//! copy-on-write linear memory images) so a restart or a reload of an unchanged plugin does not compile.
//!
//! An entry is `<dir>/compiled/<sha256 of the component>-<engine key>.cwasm`. The engine key hashes
//! wasmtime's compatibility hash (its version, the engine's settings, the CPU features code was compiled
//! for) with tailgate's version: another binary or machine never finds an entry it could misread, and
//! wasmtime checks the header again when it loads one. Entries are written to a temporary file and
//! renamed, so a reader never sees half an entry. Past [`MAX_BYTES`] the oldest entries are removed.
//!
//! Finding the entry of an unchanged file skips reading and hashing it (for a Python or JavaScript
//! plugin, 12-18 MB: most of a cached load): `<dir>/sources/<hash of the path>` records the file's
//! device, inode, size, change and modification times with its content hash, and is used only while all
//! of them match. Every write to a file moves its change time, which no user can set (unlike the
//! modification time), and a replaced file has a new inode. An entry is written only for a file whose
//! change time is more than [`SETTLED`] in the past, so a write within the same clock tick as the
//! hashing (the file systems' change times are as coarse as the kernel's tick) cannot go unseen.
//!
//! Why loading is sound: `deserialize_file` is `unsafe` because wasmtime runs the machine code in the
//! file without checking it. The files are trusted because only this process's user writes them: the
//! directory is created mode 0700 and is used only while it (and each entry) belongs to the user running
//! tailgate and is writable by nobody else; otherwise the cache is off and every load compiles. Anyone
//! who can write there could already replace the tailgate binary, which lives under the same user.
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

/// The cache's size bound: past it, the oldest entries go (a Rust plugin's entry is ~1 MB, a Python or
/// JavaScript one 30-60 MB).
pub const MAX_BYTES: u64 = 1 << 30;

/// How old a file's last change must be before its content hash is remembered by path.
pub const SETTLED: std::time::Duration = std::time::Duration::from_secs(2);

/// The compiled-plugin cache of one engine.
#[derive(Debug)]
pub struct ModuleCache {
    dir: PathBuf,
    engine_key: String,
    /// [`SETTLED`] (shorter in tests).
    settled_after: std::time::Duration,
}

impl ModuleCache {
    /// Opens (creating it, mode 0700) `<root>/compiled`. An error says why the directory cannot be trusted
    /// or created; the runtime then compiles every load.
    pub fn open(root: &Path, engine: &Engine) -> Result<ModuleCache, String> {
        let dir = root.join("compiled");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let meta = fs::metadata(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        trusted(&meta).map_err(|why| format!("{} {why}", dir.display()))?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        env!("CARGO_PKG_VERSION").hash(&mut hasher);
        Ok(ModuleCache {
            dir,
            engine_key: format!("{:016x}", hasher.finish()),
            settled_after: SETTLED,
        })
    }

    fn source_entry(&self, path: &Path) -> PathBuf {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        path.hash(&mut hasher);
        self.dir
            .join("sources")
            .join(format!("{:016x}", hasher.finish()))
    }

    /// The content hash recorded for the file at `path` when `meta` (its metadata now) shows it
    /// unchanged since; `None` means read and hash it.
    pub fn known_hash(&self, path: &Path, meta: &fs::Metadata) -> Option<String> {
        let entry = self.source_entry(path);
        let entry_meta = fs::metadata(&entry).ok()?;
        trusted(&entry_meta).ok()?;
        let text = fs::read_to_string(&entry).ok()?;
        let (stamp, sha256) = text.trim_end().rsplit_once(' ')?;
        (stamp == file_stamp(path, meta) && sha256.len() == 64).then(|| sha256.to_owned())
    }

    /// Records `sha256` as the content of the file at `path`, whose metadata before and after reading it
    /// were `before` and `after`: only when they agree and its last change is older than [`SETTLED`].
    pub fn remember_hash(
        &self,
        path: &Path,
        before: &fs::Metadata,
        after: &fs::Metadata,
        sha256: &str,
    ) {
        let stamp = file_stamp(path, before);
        if stamp != file_stamp(path, after) || !settled(before, self.settled_after) {
            return;
        }
        let entry = self.source_entry(path);
        let write = || -> std::io::Result<()> {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(entry.parent().unwrap_or(&self.dir))?;
            let tmp = entry.with_extension(format!("tmp{}", std::process::id()));
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            writeln!(file, "{stamp} {sha256}")?;
            fs::rename(&tmp, &entry)
        };
        if let Err(e) = write() {
            tracing::debug!(entry = %entry.display(), error = %e, "plugin source hash not recorded");
        }
    }

    fn entry(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}-{}.cwasm", self.engine_key))
    }

    /// The compiled component with this content hash, if this binary stored it. A stale or unreadable
    /// entry is removed (the caller compiles and stores a fresh one).
    pub fn load(&self, engine: &Engine, sha256: &str) -> Option<Component> {
        let path = self.entry(sha256);
        let meta = fs::metadata(&path).ok()?;
        if let Err(why) = trusted(&meta) {
            tracing::warn!(entry = %path.display(), "compiled-plugin cache entry ignored: it {why}");
            return None;
        }
        match deserialize(engine, &path) {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(entry = %path.display(), error = %format!("{e:#}"),
                    "compiled-plugin cache entry unusable; recompiling");
                let _ = fs::remove_file(&path);
                None
            }
        }
    }

    /// Stores a compiled component under its content hash. Failures are logged: the cache is an
    /// optimization, the plugin is loaded either way.
    pub fn store(&self, sha256: &str, component: &Component) {
        if let Err(e) = self.try_store(sha256, component) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "compiled plugin not cached");
        }
        self.evict();
    }

    fn try_store(&self, sha256: &str, component: &Component) -> Result<(), String> {
        let bytes = component.serialize().map_err(|e| format!("{e:#}"))?;
        let path = self.entry(sha256);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_data())
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(|e| {
                let _ = fs::remove_file(&tmp);
                format!("{}: {e}", path.display())
            })
    }

    /// Removes the oldest entries while the cache holds more than [`MAX_BYTES`].
    fn evict(&self) {
        let Ok(dir) = fs::read_dir(&self.dir) else {
            return;
        };
        let mut entries: Vec<(std::time::SystemTime, u64, PathBuf)> = dir
            .filter_map(|e| {
                let e = e.ok()?;
                let meta = e.metadata().ok()?;
                Some((meta.modified().ok()?, meta.len(), e.path()))
            })
            .filter(|(_, _, p)| p.extension().is_some_and(|x| x == "cwasm"))
            .collect();
        let mut total: u64 = entries.iter().map(|e| e.1).sum();
        entries.sort();
        for (_, len, path) in entries {
            if total <= MAX_BYTES {
                break;
            }
            if fs::remove_file(&path).is_ok() {
                total -= len;
            }
        }
    }
}

/// What identifies one version of a file: its path, device, inode, size, change and modification times.
fn file_stamp(path: &Path, meta: &fs::Metadata) -> String {
    format!(
        "{}|{}|{}|{}|{}.{}|{}.{}",
        path.display(),
        meta.dev(),
        meta.ino(),
        meta.len(),
        meta.ctime(),
        meta.ctime_nsec(),
        meta.mtime(),
        meta.mtime_nsec()
    )
    .replace(' ', "%20")
}

/// Whether the file's last change is older than `after`.
fn settled(meta: &fs::Metadata, after: std::time::Duration) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128);
    let changed = i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec());
    changed + (after.as_nanos() as i128) < now
}

/// Whether a cache directory or entry can be trusted: owned by this process's user and writable by no
/// one else. The reason when not.
fn trusted(meta: &fs::Metadata) -> Result<(), &'static str> {
    if meta.uid() != rustix::process::geteuid().as_raw() {
        Err("belongs to another user")
    } else if meta.mode() & 0o022 != 0 {
        Err("is writable by other users")
    } else {
        Ok(())
    }
}

/// The one `unsafe` in tailgate (see the module docs for why it holds).
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: `path` is an entry of a cache directory that `trusted` found to belong to this user and
    // be writable by no one else, and so is the entry itself: only this user's tailgate wrote it, with
    // `Component::serialize` of a component it compiled, renamed into place whole. wasmtime checks the
    // header (version, engine settings, CPU features) and refuses an entry another engine made.
    unsafe { Component::deserialize_file(engine, path) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(dir: &Path) -> ModuleCache {
        let engine = Engine::default();
        let mut c = ModuleCache::open(dir, &engine).expect("opens");
        c.settled_after = std::time::Duration::ZERO;
        c
    }

    #[test]
    fn a_file_is_known_by_path_only_while_it_is_unchanged() {
        let dir =
            std::env::temp_dir().join(format!("tailgate-source-index-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let c = cache(&dir);
        let file = dir.join("plugin.wasm");
        fs::write(&file, b"version one").expect("write");
        let meta = fs::metadata(&file).expect("meta");
        assert_eq!(c.known_hash(&file, &meta), None, "nothing recorded yet");
        let sha = "a".repeat(64);
        c.remember_hash(&file, &meta, &meta, &sha);
        assert_eq!(c.known_hash(&file, &meta).as_deref(), Some(sha.as_str()));

        // Same size, new content: the change time moves, the record no longer applies.
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(&file, b"version two").expect("rewrite");
        let meta2 = fs::metadata(&file).expect("meta");
        assert_eq!(
            c.known_hash(&file, &meta2),
            None,
            "a rewritten file is hashed again"
        );
        // Replaced by another file (a new inode) with the old times copied: not the same file.
        let other = dir.join("other.wasm");
        fs::write(&other, b"version one").expect("write");
        fs::rename(&other, &file).expect("rename");
        let meta3 = fs::metadata(&file).expect("meta");
        assert_eq!(
            c.known_hash(&file, &meta3),
            None,
            "a replaced file is hashed again"
        );

        // Metadata that changed while the file was read: nothing is recorded.
        c.remember_hash(&file, &meta, &meta3, &sha);
        assert_eq!(c.known_hash(&file, &meta3), None);
        // A file changed just now is not recorded with the real settle time.
        let strict = ModuleCache::open(&dir, &Engine::default()).expect("opens");
        strict.remember_hash(&file, &meta3, &meta3, &sha);
        assert_eq!(strict.known_hash(&file, &meta3), None, "too fresh to trust");
        let _ = fs::remove_dir_all(&dir);
    }
}
