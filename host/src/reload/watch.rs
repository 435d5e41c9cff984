//! The reload triggers that run in the background: a watch on the directories of the config file and the
//! plugin files (editors and deploy tools replace files rather than write them in place, so the file
//! itself cannot be watched), debounced, and SIGHUP.

use super::{DEBOUNCE, Reloader, Trigger};
use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Runs the file watch and the SIGHUP handler until `stop` completes. A watch that cannot be set up is
/// logged and the other triggers keep working.
pub fn spawn_triggers(
    reloader: Arc<Reloader>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let changed = Arc::new(Notify::new());
        let mut dirs = DirWatch::new(changed.clone());
        dirs.update(&reloader.watched_files());
        let mut hangup = hangup_signal();
        tokio::pin!(stop);
        loop {
            let trigger = tokio::select! {
                _ = &mut stop => return,
                _ = changed.notified() => Trigger::File,
                _ = hangup.recv() => Trigger::Signal,
            };
            if trigger == Trigger::File {
                // Wait for the burst of events to end.
                loop {
                    tokio::select! {
                        _ = &mut stop => return,
                        _ = changed.notified() => continue,
                        _ = tokio::time::sleep(DEBOUNCE) => break,
                    }
                }
                let r = reloader.clone();
                let differs = tokio::task::spawn_blocking(move || r.files_changed())
                    .await
                    .unwrap_or(true);
                if !differs {
                    continue;
                }
            }
            // The outcome is logged and counted by the reloader.
            let _ = reloader.reload(trigger).await;
            dirs.update(&reloader.watched_files());
        }
    })
}

/// The directories being watched, following the set of files the config references.
struct DirWatch {
    watcher: Option<RecommendedWatcher>,
    dirs: BTreeSet<PathBuf>,
}

impl DirWatch {
    fn new(changed: Arc<Notify>) -> DirWatch {
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            match event {
                // Reads (ours included, when hashing the files) are not changes.
                Ok(e) if is_read(&e.kind) => {}
                _ => changed.notify_one(),
            }
        });
        let watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the config and plugin files; reload with SIGHUP or POST /reload");
                None
            }
        };
        DirWatch {
            watcher,
            dirs: BTreeSet::new(),
        }
    }

    fn update(&mut self, files: &[PathBuf]) {
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        let wanted: BTreeSet<PathBuf> = files.iter().filter_map(|f| parent_dir(f)).collect();
        for gone in self.dirs.difference(&wanted) {
            let _ = watcher.unwatch(gone);
        }
        for dir in wanted.difference(&self.dirs) {
            if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch directory for changes");
            }
        }
        self.dirs = wanted;
    }
}

fn parent_dir(file: &Path) -> Option<PathBuf> {
    let abs = std::path::absolute(file).ok()?;
    abs.parent().map(Path::to_path_buf)
}

fn is_read(kind: &EventKind) -> bool {
    matches!(kind, EventKind::Access(a) if !matches!(a, AccessKind::Close(AccessMode::Write)))
}

/// SIGHUP where there is one.
struct Hangup(#[cfg(unix)] Option<tokio::signal::unix::Signal>);

fn hangup_signal() -> Hangup {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(s) => Hangup(Some(s)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot handle SIGHUP; reload by file change or POST /reload");
                Hangup(None)
            }
        }
    }
    #[cfg(not(unix))]
    Hangup()
}

impl Hangup {
    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(s) = self.0.as_mut()
            && s.recv().await.is_some()
        {
            return;
        }
        std::future::pending::<()>().await
    }
}
