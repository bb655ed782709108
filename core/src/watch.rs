//! Follows `lb.toml` and hands every settled change to the controller.
//!
//! It watches the file's *directory*, not the file: editors, `docker cp` and bind mounts replace a
//! file by renaming a new one over it, which a watch on the old inode never sees. When the path is
//! a symlink, the target's directory is watched too, so edits to the target and swaps of the link
//! are both noticed. A burst of events is debounced into one read; the controller ignores content
//! it has already applied or written itself.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::controller::{Command, ControllerHandle};

/// Quiet time after the last event before the file is read.
const SETTLE: Duration = Duration::from_millis(100);
/// Longest a continuous stream of events can delay a read.
const MAX_DELAY: Duration = Duration::from_millis(800);

/// Why the watcher could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch {path}: {source}")]
pub struct WatchError {
    path: PathBuf,
    source: notify::Error,
}

/// Directories to watch for `path`: its own, and its symlink target's if that differs.
fn directories(path: &Path) -> Vec<PathBuf> {
    let parent = |p: &Path| match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut dirs = vec![parent(path)];
    if let Ok(real) = std::fs::canonicalize(path) {
        let real_dir = parent(&real);
        let same = std::fs::canonicalize(&dirs[0]).is_ok_and(|d| d == real_dir);
        if !same {
            dirs.push(real_dir);
        }
    }
    dirs
}

/// Start following `path`; changes go to `controller` as [`Command::FileChanged`].
pub fn spawn(path: PathBuf, controller: ControllerHandle) -> Result<(), WatchError> {
    let (tx, mut events) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let _ = tx.send(event);
    })
    .map_err(|source| WatchError {
        path: path.clone(),
        source,
    })?;
    let mut watched = HashSet::new();
    for dir in directories(&path) {
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|source| WatchError {
                path: dir.clone(),
                source,
            })?;
        watched.insert(dir);
    }
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if let Err(e) = event {
                tracing::warn!(error = %e, "file watcher error");
            }
            let start = tokio::time::Instant::now();
            loop {
                match tokio::time::timeout(SETTLE, events.recv()).await {
                    Ok(Some(_)) if start.elapsed() < MAX_DELAY => continue,
                    Ok(None) => return,
                    _ => break,
                }
            }
            // A swapped symlink may now point into a directory we do not watch yet.
            for dir in directories(&path) {
                if !watched.contains(&dir)
                    && watcher.watch(&dir, RecursiveMode::NonRecursive).is_ok()
                {
                    watched.insert(dir);
                }
            }
            let text = tokio::fs::read_to_string(&path)
                .await
                .map_err(|e| e.to_string());
            controller.send(Command::FileChanged { text });
        }
    });
    Ok(())
}
