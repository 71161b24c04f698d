//! The git door, reading changes: tree diffs with line counts, added lines (for the secret scan), commit ranges,
//! tree listings and blobs.

use super::*;

/// How a file changed between two trees.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// New file.
    Added,
    /// Content or mode changed.
    Modified,
    /// File removed.
    Deleted,
    /// Moved (possibly with edits).
    Renamed,
    /// Copied from another path.
    Copied,
    /// Type changed (e.g. file ↔ symlink).
    TypeChanged,
}

/// One file of a tree diff, with line counts.
#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct FileChange {
    /// Path after the change (before it, for deletions). Lossy for non-UTF-8 names.
    pub path: String,
    /// Path before a rename or copy.
    pub old_path: Option<String>,
    /// The kind of change.
    pub kind: ChangeKind,
    /// Git file mode before (0 when absent), e.g. 0o100644, 0o100755, 0o120000 (symlink), 0o160000 (gitlink).
    pub old_mode: u32,
    /// Git file mode after (0 when absent).
    pub new_mode: u32,
    /// Whether either side is binary.
    pub binary: bool,
    /// Lines added.
    pub added: usize,
    /// Lines removed.
    pub removed: usize,
}

/// The diff between two commits' trees, renames detected.
fn tree_diff<'r>(git: &'r Repository, from: &str, to: &str) -> Result<git2::Diff<'r>> {
    let (old, new) = (commit_tree(git, from)?, commit_tree(git, to)?);
    let mut diff = git
        .diff_tree_to_tree(Some(&old), Some(&new), None)
        .map_err(git2_context("cannot diff the attempt"))?;
    let mut find = git2::DiffFindOptions::new();
    find.renames(true).copies(false);
    diff.find_similar(Some(&mut find))
        .map_err(git2_context("cannot detect renames"))?;
    Ok(diff)
}

/// The unified patch from commit `from` to commit `to` (renames detected), cut at `max_bytes` on a line end;
/// returns the text and whether it was cut. Binary files appear as a "Binary files differ" line.
pub fn patch_text(
    repo: &RepoPaths,
    from: &str,
    to: &str,
    max_bytes: usize,
) -> Result<(String, bool)> {
    let git = repo.open()?;
    let diff = tree_diff(&git, from, to)?;
    let mut text = Vec::new();
    let mut cut = false;
    let printed = diff.print(git2::DiffFormat::Patch, |_, _, line| {
        let prefix: &[u8] = match line.origin() {
            origin @ ('+' | '-' | ' ') => &[origin as u8],
            _ => b"",
        };
        if text.len() + prefix.len() + line.content().len() > max_bytes {
            cut = true;
            return false;
        }
        text.extend_from_slice(prefix);
        text.extend_from_slice(line.content());
        true
    });
    // Stopping the walk early is reported by libgit2 as a user error: not a failure here.
    if let Err(error) = printed
        && !cut
    {
        return Err(git2_context("cannot print the patch")(error));
    }
    Ok((String::from_utf8_lossy(&text).into_owned(), cut))
}

/// The files changed from commit `from` to commit `to`, with renames detected and line counts.
pub fn diff_files(repo: &RepoPaths, from: &str, to: &str) -> Result<Vec<FileChange>> {
    let git = repo.open()?;
    let diff = tree_diff(&git, from, to)?;
    let mut changes = Vec::new();
    for index in 0..diff.deltas().len() {
        let Some(delta) = diff.get_delta(index) else {
            continue;
        };
        let kind = match delta.status() {
            git2::Delta::Added | git2::Delta::Untracked => ChangeKind::Added,
            git2::Delta::Deleted => ChangeKind::Deleted,
            git2::Delta::Renamed => ChangeKind::Renamed,
            git2::Delta::Copied => ChangeKind::Copied,
            git2::Delta::Typechange => ChangeKind::TypeChanged,
            git2::Delta::Modified
            | git2::Delta::Unmodified
            | git2::Delta::Ignored
            | git2::Delta::Unreadable
            | git2::Delta::Conflicted => ChangeKind::Modified,
        };
        let path_of = |file: git2::DiffFile<'_>| {
            file.path_bytes()
                .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
        };
        let new_path = path_of(delta.new_file());
        let old_path = path_of(delta.old_file());
        let (added, removed, binary) = match git2::Patch::from_diff(&diff, index) {
            Ok(Some(patch)) => {
                let (_, added, removed) = patch.line_stats().unwrap_or((0, 0, 0));
                (added, removed, patch.delta().flags().is_binary())
            }
            Ok(None) => (0, 0, true),
            Err(_) => (0, 0, delta.flags().is_binary()),
        };
        let path = match kind {
            ChangeKind::Deleted => old_path.clone(),
            ChangeKind::Added
            | ChangeKind::Modified
            | ChangeKind::Renamed
            | ChangeKind::Copied
            | ChangeKind::TypeChanged => new_path.clone(),
        }
        .unwrap_or_default();
        let old_path = match kind {
            ChangeKind::Renamed | ChangeKind::Copied => old_path,
            ChangeKind::Added
            | ChangeKind::Modified
            | ChangeKind::Deleted
            | ChangeKind::TypeChanged => None,
        };
        changes.push(FileChange {
            path,
            old_path,
            kind,
            old_mode: u32::from(delta.old_file().mode()),
            new_mode: u32::from(delta.new_file().mode()),
            binary,
            added,
            removed,
        });
    }
    Ok(changes)
}

/// The lines one side of a diff added to a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedLines {
    /// The file (new side).
    pub path: String,
    /// Whether it is binary (then `text` is empty).
    pub binary: bool,
    /// The added lines, each ending in `\n`.
    pub text: Vec<u8>,
    /// The 1-based line number in the new file of each added line, in order.
    pub line_numbers: Vec<usize>,
    /// The commit that added them, when a range is judged commit by commit.
    pub commit: Option<String>,
}

/// Every line added from commit `from` to commit `to`, per file (secrets are looked for in these).
pub fn added_lines(repo: &RepoPaths, from: Option<&str>, to: &str) -> Result<Vec<AddedLines>> {
    let git = repo.open()?;
    let old = from.map(|sha| commit_tree(&git, sha)).transpose()?;
    let new = commit_tree(&git, to)?;
    let diff = git
        .diff_tree_to_tree(old.as_ref(), Some(&new), None)
        .map_err(git2_context("cannot diff for added lines"))?;
    let mut files = Vec::new();
    for index in 0..diff.deltas().len() {
        let Some(delta) = diff.get_delta(index) else {
            continue;
        };
        if matches!(delta.status(), git2::Delta::Deleted) {
            continue;
        }
        let path = delta
            .new_file()
            .path_bytes()
            .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
            .unwrap_or_default();
        let mut added = AddedLines {
            path,
            binary: false,
            text: Vec::new(),
            line_numbers: Vec::new(),
            commit: None,
        };
        match git2::Patch::from_diff(&diff, index) {
            Ok(Some(patch)) if !patch.delta().flags().is_binary() => {
                for hunk in 0..patch.num_hunks() {
                    let lines = patch.num_lines_in_hunk(hunk).unwrap_or(0);
                    for line_index in 0..lines {
                        let Ok(line) = patch.line_in_hunk(hunk, line_index) else {
                            continue;
                        };
                        if line.origin() != '+' {
                            continue;
                        }
                        added.text.extend_from_slice(line.content());
                        if !line.content().ends_with(b"\n") {
                            added.text.push(b'\n');
                        }
                        added
                            .line_numbers
                            .push(line.new_lineno().map_or(0, |n| n as usize));
                    }
                }
            }
            Ok(Some(_)) | Ok(None) => added.binary = true,
            Err(source) => {
                return Err(GitError::Git2 {
                    context: format!("cannot read the diff of {}", added.path),
                    source,
                });
            }
        }
        files.push(added);
    }
    Ok(files)
}

/// The commits of `range` (`A..B`, or one revision meaning everything reachable from it), oldest first, each
/// with its first parent (`None` for a root commit).
pub fn range_commits(repo: &RepoPaths, range: &str) -> Result<Vec<(String, Option<String>)>> {
    let git = repo.open()?;
    let mut walk = git.revwalk().map_err(git2_context("cannot walk history"))?;
    let pushed = if range.contains("..") {
        walk.push_range(range)
    } else {
        git.revparse_single(range)
            .and_then(|object| walk.push(object.id()))
    };
    pushed.map_err(|source| GitError::BadRevision {
        rev: range.to_string(),
        source,
    })?;
    walk.set_sorting(git2::Sort::TOPOLOGICAL | git2::Sort::REVERSE)
        .map_err(git2_context("cannot sort history"))?;
    let mut commits = Vec::new();
    for oid in walk {
        let oid = oid.map_err(git2_context("cannot walk history"))?;
        let commit = git
            .find_commit(oid)
            .map_err(git2_context("cannot read a commit"))?;
        commits.push((
            oid.to_string(),
            commit.parent_ids().next().map(|p| p.to_string()),
        ));
    }
    Ok(commits)
}

/// Every file path in commit `sha`'s tree (lossy UTF-8), for preflight glob checks.
pub fn tree_paths(repo: &RepoPaths, sha: &str) -> Result<Vec<String>> {
    let git = repo.open()?;
    let tree = commit_tree(&git, sha)?;
    let mut paths = Vec::new();
    tree.walk(git2::TreeWalkMode::PreOrder, |folder, entry| {
        if entry.kind() != Some(git2::ObjectType::Tree) {
            paths.push(format!(
                "{folder}{}",
                String::from_utf8_lossy(entry.name_bytes())
            ));
        }
        git2::TreeWalkResult::Ok
    })
    .map_err(git2_context("cannot walk the base tree"))?;
    Ok(paths)
}

/// The content of `path` in commit `sha`, if it exists there.
pub fn blob_at(repo: &RepoPaths, sha: &str, path: &str) -> Result<Option<Vec<u8>>> {
    let git = repo.open()?;
    let tree = commit_tree(&git, sha)?;
    let Ok(entry) = tree.get_path(Path::new(path)) else {
        return Ok(None);
    };
    match git.find_blob(entry.id()) {
        Ok(blob) => Ok(Some(blob.content().to_vec())),
        Err(_) => Ok(None),
    }
}

/// The first parent of commit `sha` (`None` for a root commit).
pub fn first_parent(repo: &RepoPaths, sha: &str) -> Result<Option<String>> {
    let git = repo.open()?;
    let commit = git
        .find_commit(oid(sha)?)
        .map_err(git2_context(format!("cannot read commit {sha}")))?;
    Ok(commit.parent_id(0).ok().map(|id| id.to_string()))
}
