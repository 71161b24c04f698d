//! A copy-on-write tree's life after it is made: mounted again when its mount went away (a reboot), read back as
//! the paths its upper layer names, and taken down. Each step holds an exclusive lock on the tree's record, so two
//! ccfan processes never mount one upper layer twice or remove it under each other.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::super::PipelineError;
use crate::git::{self, GitError, RepoPaths};
use crate::ids::CommitId;
use crate::sandbox::overlay::{self, Change, Overlay};

/// The record of a copy-on-write tree, beside its upper layer.
pub(super) const RECORD: &str = "tree.json";

/// What `tree.json` records.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Record {
    /// The layer's tree below.
    pub(super) lower: PathBuf,
    /// The commit the layer's tree holds.
    pub(super) commit: CommitId,
    /// The layer's key (`gc` keeps it).
    pub(super) layer: String,
}

/// Where a tree at `path` keeps its private layer.
pub(super) fn cow_dir(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default();
    path.parent().unwrap_or(path).join(".cow").join(name)
}

fn read_record(path: &Path) -> Option<Record> {
    let bytes = crate::util::read_regular(&cow_dir(path).join(RECORD), 1 << 20).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The exclusive lock on a tree's record, held while it is mounted, read or removed.
fn lock(path: &Path) -> Result<Option<std::fs::File>, GitError> {
    let record = cow_dir(path).join(RECORD);
    let Ok(file) = std::fs::File::open(&record) else {
        return Ok(None);
    };
    file.lock().map_err(|source| GitError::Io {
        context: format!("cannot lock {}", record.display()),
        source,
    })?;
    Ok(Some(file))
}

/// The key of the layer below the copy-on-write tree at `path` (which `gc` must keep), if it is one.
pub fn layer_below(path: &Path) -> Option<String> {
    read_record(path).map(|record| record.layer)
}

fn io_error(context: String, error: impl std::fmt::Display) -> GitError {
    GitError::Io {
        context,
        source: std::io::Error::other(error.to_string()),
    }
}

/// Mounts the tree (its lock held by the caller) unless it is: the layer below must still be the one it was made
/// on, and the `.git` link must be in its upper layer (a removal cut short may have moved it below).
fn mount_locked(path: &Path, record: &Record) -> Result<(), GitError> {
    if overlay::is_mounted(path) {
        return Ok(());
    }
    let dir = cow_dir(path);
    let (upper, work) = (dir.join("upper"), dir.join("work"));
    let below = crate::pipeline::layer::base_of(&record.lower);
    if below.as_ref() != Some(&record.commit) {
        return Err(io_error(
            format!(
                "cannot show the task tree {}: the layer it stands on ({}) is gone or was replaced",
                path.display(),
                record.lower.display()
            ),
            format!("its work is kept in {}", upper.display()),
        ));
    }
    let link = path.join(".git");
    if link.is_file() && !upper.join(".git").exists() {
        std::fs::rename(&link, upper.join(".git")).map_err(|error| {
            io_error(
                format!("cannot move {} into its layer", link.display()),
                error,
            )
        })?;
    }
    overlay::mount(&Overlay {
        lower: &record.lower,
        upper: &upper,
        work: &work,
        target: path,
    })
    .map_err(|error| {
        io_error(
            format!("cannot show the task tree {}", path.display()),
            error,
        )
    })
}

/// Mounts a tree just made (its record written, nothing else can know it yet).
pub(super) fn mount_new(path: &Path, record: &Record) -> Result<(), GitError> {
    let _lock = lock(path)?;
    mount_locked(path, record)
}

/// Makes sure a copy-on-write tree at `path` is mounted (a reboot unmounts it; its layer stays on disk), so nothing
/// ever reads the empty folder below as the tree. Checkouts need nothing.
pub fn ensure(path: &Path) -> Result<(), GitError> {
    let Some(_lock) = lock(path)? else {
        return Ok(());
    };
    match read_record(path) {
        Some(record) => mount_locked(path, &record),
        None => Ok(()),
    }
}

/// Moves a task tree's branch and files back to `sha` (see [`git::reset_worktree`]), mounted first if it is a
/// copy-on-write tree whose mount went away.
pub fn reset(path: &Path, sha: &str) -> Result<(), GitError> {
    ensure(path)?;
    git::reset_worktree(path, sha)
}

/// For a copy-on-write tree: the commit its lower layer holds and every path its upper layer says changed (what
/// recording reads). `None` for a checkout — and for a layer that cannot be read as a change (a mount ccfan did not
/// make: redirects, metadata-only copies), which is then recorded by a full read of the view.
pub fn changed_paths(path: &Path) -> Result<Option<(CommitId, Vec<PathBuf>)>, GitError> {
    let Some(_lock) = lock(path)? else {
        return Ok(None);
    };
    let Some(record) = read_record(path) else {
        return Ok(None);
    };
    mount_locked(path, &record)?;
    let upper = cow_dir(path).join("upper");
    let changes = match overlay::changes(&upper) {
        Ok(changes) => changes,
        Err(error) => {
            tracing::warn!(
                "{}: {error}; the whole tree is read instead",
                upper.display()
            );
            return Ok(None);
        }
    };
    let paths = changes
        .into_iter()
        .map(|change| match change {
            Change::Written(path) | Change::Deleted(path) | Change::Replaced(path) => path,
        })
        .collect();
    Ok(Some((record.commit, paths)))
}

/// Removes the tree at `path` in either mode: unmounted first, then the worktree and its record, then its
/// private layer. Missing parts are fine; a removal git refuses leaves the tree as it was.
pub fn remove(repo: &RepoPaths, path: &Path) -> Result<(), PipelineError> {
    let dir = cow_dir(path);
    let lock = lock(path)?;
    let cow = dir.exists();
    if cow {
        // Every mount goes (two could have been made before trees were locked).
        while overlay::is_mounted(path) {
            overlay::unmount(path).map_err(|error| {
                io_error(
                    format!("cannot remove the task tree {}", path.display()),
                    error,
                )
            })?;
        }
        // The link goes back below, so git recognises the folder as the worktree it removes.
        let _ = std::fs::rename(dir.join("upper").join(".git"), path.join(".git"));
    }
    if let Err(error) = git::remove_worktree(repo, path) {
        if cow {
            // As it was: the link in the upper layer, where `ensure` expects it.
            let _ = std::fs::rename(path.join(".git"), dir.join("upper").join(".git"));
        }
        return Err(error.into());
    }
    drop(lock);
    if cow {
        overlay::remove_private(&dir).map_err(|source| GitError::Io {
            context: format!("cannot remove {}", dir.display()),
            source,
        })?;
        if let Some(parent) = dir.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
    Ok(())
}
