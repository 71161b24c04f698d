//! Stage 2, fan out: one tree and branch `ccfan/<run>/<task>` per task, from exactly the recorded base commit — a
//! copy-on-write view of the prepared base layer, or a full checkout (`tree` decides and makes both). Registration
//! is serialised by a lock so concurrent creation never races on git's config or index locks; the rest runs in
//! parallel per task. The ignored files `.worktreeinclude` selects (stage 2b) are copied in before the worker starts.

use std::path::Path;

use super::PipelineError;
use super::tree::{self, Start, TreeFiles};
use crate::git::RepoPaths;

/// Makes the task's tree at `path` on a new `branch` at `base`, with the included ignored files; returns the
/// `.git` link file content. On failure, removes whatever it made (mount, folder, worktree record, branch).
pub fn prepare(
    repo: &RepoPaths,
    path: &Path,
    branch: &str,
    base: &str,
    includes: &TreeFiles,
) -> Result<String, PipelineError> {
    tree::make(repo, path, Start::Branch(branch), base, includes)
}
