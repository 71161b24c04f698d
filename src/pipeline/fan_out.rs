//! Stage 2, fan out: one worktree and branch `ccfan/<run>/<task>` per task, from exactly the recorded base commit.
//! Registration (`git worktree add --no-checkout`, ~10 ms) is serialised by a lock so concurrent creation never
//! races on git's config or index locks; the slow part, checking files out, runs in parallel per task. The
//! ignored files `.worktreeinclude` selects (stage 2b) are copied in before the worker starts.

use std::path::Path;

use super::PipelineError;
use super::include::TreeFiles;
use crate::git::{self, GitError, RepoPaths};

/// Makes the task's worktree at `path` on a new `branch` at `base`, with the included ignored files; returns the
/// `.git` link file content. On failure, removes whatever it made (folder, worktree record, branch).
pub fn prepare(
    repo: &RepoPaths,
    path: &Path,
    branch: &str,
    base: &str,
    includes: &TreeFiles,
) -> Result<String, PipelineError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| GitError::Io {
            context: format!("cannot create {}", parent.display()),
            source,
        })?;
    }
    let made = git::add_worktree(repo, path, branch, base)
        .map_err(PipelineError::from)
        .and_then(|link| {
            git::checkout_worktree(path)?;
            includes.copy_into(path)?;
            Ok(link)
        });
    if made.is_err() {
        let _ = git::remove_worktree(repo, path);
        let _ = std::fs::remove_dir_all(path);
        let _ = git::delete_branch(repo, branch);
    }
    made
}
