//! Stage 2, fan out: one worktree and branch `ccfan/<run>/<task>` per task, from exactly the recorded base commit.
//! Registration (`git worktree add --no-checkout`, ~10 ms) is serialised by a lock so concurrent creation never
//! races on git's config or index locks; the slow part, checking files out, runs in parallel per task.

use std::path::Path;

use crate::git::{self, GitError, RepoPaths};

/// Makes the task's worktree at `path` on a new `branch` at `base`; returns the `.git` link file content.
/// On failure, removes whatever it made (folder, worktree record, branch).
pub fn prepare(
    repo: &RepoPaths,
    path: &Path,
    branch: &str,
    base: &str,
) -> Result<String, GitError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| GitError::Io {
            context: format!("cannot create {}", parent.display()),
            source,
        })?;
    }
    let made = git::add_worktree(repo, path, branch, base).and_then(|link| {
        git::checkout_worktree(path)?;
        Ok(link)
    });
    if made.is_err() {
        let _ = git::remove_worktree(repo, path);
        let _ = std::fs::remove_dir_all(path);
        let _ = git::delete_branch(repo, branch);
    }
    made
}
