//! Follows `lb.toml` (and the TLS certificate and key files, [`spawn_certificates`]) and hands
//! every settled change to the controller.
//!
//! It watches the file's *directory*, not the file: editors, `docker cp` and bind mounts replace a
//! file by renaming a new one over it, which a watch on the old inode never sees. When the path is
//! a symlink, the target's directory is watched too, so edits to the target and swaps of the link
//! are both noticed. A burst of events is debounced into one notification. The controller then
//! reads the file itself — never a copy read earlier, which could be older than the controller's
//! own latest write — and ignores content it has already applied or written.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::command::{Command, ControllerHandle};

/// Quiet time after the last event before the file is read.
const SETTLE: Duration = Duration::from_millis(100);
/// Longest a continuous stream of events can delay a read.
const MAX_DELAY: Duration = Duration::from_millis(800);

/// Why the watcher could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch {path}: {source}")]
pub(crate) struct WatchError {
    path: PathBuf,
    source: notify::Error,
}

/// Whether an event can mean a new, complete version of a file. Writes in place are acted on
/// when the writer closes the file, never in between (a file read mid-write may be empty or
/// cut short); creating a file is not a version yet either. Renames (atomic saves, symlink swaps)
/// and removals count at once.
fn completes_a_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Create(_) => false,
        EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Metadata(_)) => false,
        _ => true,
    }
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

/// A watcher whose completed changes (and errors) arrive on the returned channel; `label` names
/// what it is for in its error.
fn watcher_for(
    label: &Path,
) -> Result<
    (
        notify::RecommendedWatcher,
        mpsc::UnboundedReceiver<notify::Result<notify::Event>>,
    ),
    WatchError,
> {
    let (tx, events) = mpsc::unbounded_channel();
    let watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) if !completes_a_change(&event.kind) => {}
            other => {
                let _ = tx.send(other);
            }
        })
        .map_err(|source| WatchError {
            path: label.to_path_buf(),
            source,
        })?;
    Ok((watcher, events))
}

/// Start following `path`; changes go to `controller` as [`Command::FileChanged`].
pub(crate) fn spawn(path: PathBuf, controller: ControllerHandle) -> Result<(), WatchError> {
    let (mut watcher, mut events) = watcher_for(&path)?;
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
            // The controller reads the file itself, in order with its own writes to it.
            controller.send(Command::FileChanged);
        }
    });
    Ok(())
}

/// Start following the certificate and key files `files` names (the set may change when a
/// saved configuration changes `[[tls.certificates]]`): their directories are watched the same
/// way (renames over a file, symlink swaps), and every settled burst of events is a
/// [`Command::CertificatesChanged`]. The controller reads the files and ignores pairs it serves
/// already, so events about other files in those directories cost one read.
pub(crate) fn spawn_certificates(
    mut files: tokio::sync::watch::Receiver<Vec<PathBuf>>,
    controller: ControllerHandle,
) -> Result<(), WatchError> {
    let (mut watcher, mut events) = watcher_for(Path::new("(certificates)"))?;
    let mut watched = HashSet::new();
    let mut follow = move |watcher: &mut notify::RecommendedWatcher, paths: &[PathBuf]| {
        for path in paths {
            for dir in directories(path) {
                if !watched.contains(&dir) {
                    match watcher.watch(&dir, RecursiveMode::NonRecursive) {
                        Ok(()) => {
                            watched.insert(dir);
                        }
                        Err(e) => {
                            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch a certificate directory");
                        }
                    }
                }
            }
        }
    };
    let first = files.borrow_and_update().clone();
    follow(&mut watcher, &first);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = files.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let paths = files.borrow_and_update().clone();
                    follow(&mut watcher, &paths);
                }
                event = events.recv() => {
                    let Some(event) = event else { return };
                    if let Err(e) = event {
                        tracing::warn!(error = %e, "certificate watcher error");
                    }
                    let start = tokio::time::Instant::now();
                    loop {
                        match tokio::time::timeout(SETTLE, events.recv()).await {
                            Ok(Some(_)) if start.elapsed() < MAX_DELAY => continue,
                            Ok(None) => return,
                            _ => break,
                        }
                    }
                    let paths = files.borrow().clone();
                    follow(&mut watcher, &paths);
                    controller.send(Command::CertificatesChanged);
                }
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, MetadataKind, RemoveKind, RenameMode};

    #[test]
    fn only_completed_changes_count() {
        for (kind, counts) in [
            (
                EventKind::Access(AccessKind::Close(AccessMode::Write)),
                true,
            ),
            (EventKind::Modify(ModifyKind::Name(RenameMode::To)), true),
            (EventKind::Modify(ModifyKind::Name(RenameMode::Both)), true),
            (EventKind::Remove(RemoveKind::File), true),
            (EventKind::Any, true),
            (EventKind::Modify(ModifyKind::Data(DataChange::Any)), false),
            (
                EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any)),
                false,
            ),
            (EventKind::Create(CreateKind::File), false),
            (EventKind::Access(AccessKind::Open(AccessMode::Any)), false),
            (
                EventKind::Access(AccessKind::Close(AccessMode::Read)),
                false,
            ),
        ] {
            assert_eq!(completes_a_change(&kind), counts, "{kind:?}");
        }
    }
}
