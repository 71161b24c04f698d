//! The git door, landing work: in-memory merges (previews and the commits that land), reverts, and moving a
//! branch with a compare-and-swap — never touching a working tree the user has changes in.

use super::*;

/// The outcome of merging an attempt onto a target tip in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergePreview {
    /// A commit object (on no ref) holding exactly the tree that would land.
    Clean {
        /// The preview commit.
        commit: CommitId,
    },
    /// The merge has conflicts in these paths.
    Conflicts(Vec<String>),
}

/// Merges commit `attempt` onto `onto` in memory (no working tree, no ref moved). When `onto` already contains
/// the attempt's base only, the result is the attempt's own tree.
pub fn merge_preview(repo: &RepoPaths, onto: &str, attempt: &str) -> Result<MergePreview> {
    let git = repo.open()?;
    let (onto_id, attempt_id) = (oid(onto)?, oid(attempt)?);
    if onto_id == attempt_id
        || git
            .graph_descendant_of(onto_id, attempt_id)
            .unwrap_or(false)
    {
        return Ok(MergePreview::Clean {
            commit: CommitId::of(onto_id),
        });
    }
    if git
        .graph_descendant_of(attempt_id, onto_id)
        .unwrap_or(false)
    {
        return Ok(MergePreview::Clean {
            commit: CommitId::of(attempt_id),
        });
    }
    let ours = find(&git, onto, "the target tip")?;
    let theirs = find(&git, attempt, "the attempt")?;
    let identity = (CCFAN.0.to_string(), CCFAN.1.to_string());
    merge_in_memory(&git, &ours, &theirs, "ccfan: merge preview", identity)
}

/// The commit that lands task commit `task` on `onto`: the three-way merge of the two (from their merge base) as
/// one single-parent commit on `onto` — a squash, so attempts a later one fixed (a secret added then removed, say)
/// never reach the target's history, and a merged task stays one revertable commit. Built in memory; no ref moves.
pub fn land_commit(
    repo: &RepoPaths,
    onto: &str,
    task: &str,
    message: &str,
) -> Result<MergePreview> {
    let git = repo.open()?;
    let ours = find(&git, onto, "the target tip")?;
    let theirs = find(&git, task, "the task's commit")?;
    merge_in_memory(&git, &ours, &theirs, message, user_identity(&git))
}

/// Commit `sha`, or an error saying which commit (`what`) could not be read.
fn find<'r>(git: &'r Repository, sha: &str, what: &str) -> Result<git2::Commit<'r>> {
    git.find_commit(oid(sha)?)
        .map_err(git2_context(format!("cannot read {what}")))
}

/// The user's identity from git config (they land the work), else ccfan's.
fn user_identity(git: &Repository) -> (String, String) {
    git.signature()
        .ok()
        .and_then(|sig| Some((sig.name().ok()?.to_string(), sig.email().ok()?.to_string())))
        .unwrap_or_else(|| (CCFAN.0.to_string(), CCFAN.1.to_string()))
}

/// A commit on `onto` that undoes single-parent commit `landed` (a revert: history is never rewritten).
pub fn revert_commit(
    repo: &RepoPaths,
    onto: &str,
    landed: &str,
    message: &str,
) -> Result<MergePreview> {
    let git = repo.open()?;
    let ours = find(&git, onto, "the target tip")?;
    let undone = find(&git, landed, "the commit to revert")?;
    let index = git
        .revert_commit(&undone, &ours, 0, None)
        .map_err(git2_context("cannot revert in memory"))?;
    commit_index(&git, index, &ours, message, user_identity(&git))
}

/// Merges `theirs` into `ours` in memory and writes the result as a single-parent commit on `ours`, on no ref.
fn merge_in_memory(
    git: &Repository,
    ours: &git2::Commit<'_>,
    theirs: &git2::Commit<'_>,
    message: &str,
    identity: (String, String),
) -> Result<MergePreview> {
    let index = git
        .merge_commits(ours, theirs, None)
        .map_err(git2_context("cannot merge in memory"))?;
    commit_index(git, index, ours, message, identity)
}

/// Writes a merged index as a commit on `parent`, or lists its conflicts.
fn commit_index(
    git: &Repository,
    mut index: git2::Index,
    parent: &git2::Commit<'_>,
    message: &str,
    identity: (String, String),
) -> Result<MergePreview> {
    if index.has_conflicts() {
        return Ok(MergePreview::Conflicts(conflict_paths(&index)?));
    }
    let tree_id = index
        .write_tree_to(git)
        .map_err(git2_context("cannot write the merged tree"))?;
    let commit = write_commit(
        git,
        tree_id,
        &[parent],
        message,
        None,
        (&identity.0, &identity.1),
    )?;
    Ok(MergePreview::Clean {
        commit: CommitId::of(commit),
    })
}

fn conflict_paths(index: &git2::Index) -> Result<Vec<String>> {
    let mut paths: Vec<String> = index
        .conflicts()
        .map_err(git2_context("cannot list conflicts"))?
        .flatten()
        .filter_map(|conflict| conflict.our.or(conflict.their).or(conflict.ancestor))
        .map(|entry| String::from_utf8_lossy(&entry.path).into_owned())
        .collect();
    paths.sort();
    paths.dedup();
    Ok(paths)
}

/// Puts a task's worktree on `onto` with the task's work (`task`) merged in, uncommitted: files that merge cleanly
/// hold the merged result, conflicting ones hold conflict markers for the next attempt to resolve. Returns the
/// conflicting paths. The worktree's branch moves to `onto`; earlier work stays on its salvage refs.
pub fn replay_onto(worktree: &Path, onto: &str, task: &str) -> Result<Vec<String>> {
    reset_worktree(worktree, onto)?;
    let git = Repository::open(worktree)
        .map_err(git2_context(format!("cannot open {}", worktree.display())))?;
    let ours = find(&git, onto, "the new tip")?;
    let theirs = find(&git, task, "the task's commit")?;
    let mut index = git
        .merge_commits(&ours, &theirs, None)
        .map_err(git2_context("cannot merge in memory"))?;
    let conflicts = if index.has_conflicts() {
        conflict_paths(&index)?
    } else {
        Vec::new()
    };
    let mut checkout = git2::build::CheckoutBuilder::new();
    checkout
        .force()
        .allow_conflicts(true)
        .conflict_style_merge(true)
        .update_index(false);
    git.checkout_index(Some(&mut index), Some(&mut checkout))
        .map_err(git2_context(format!(
            "cannot write the replayed files into {}",
            worktree.display()
        )))?;
    Ok(conflicts)
}

/// Moves branch `branch` from `expected` to `new` only if it still points at `expected` (compare-and-swap).
/// `Ok(false)`: it moved meanwhile.
pub fn update_branch_cas(
    repo: &RepoPaths,
    branch: &str,
    new: &str,
    expected: &str,
    log: &str,
) -> Result<bool> {
    let git = repo.open()?;
    let name = format!("refs/heads/{branch}");
    match git.reference_matching(&name, oid(new)?, true, oid(expected)?, log) {
        Ok(_) => Ok(true),
        Err(error)
            if matches!(
                error.code(),
                git2::ErrorCode::Modified | git2::ErrorCode::Locked
            ) =>
        {
            Ok(false)
        }
        Err(source) => Err(GitError::Git2 {
            context: format!("cannot move branch {branch}"),
            source,
        }),
    }
}

/// The worktree (the user's or a linked one) that has `branch` checked out, if any.
pub fn checked_out_in(repo: &RepoPaths, branch: &str) -> Result<Option<PathBuf>> {
    let out = run_git(&repo.workdir, ["worktree", "list", "--porcelain"])?;
    let wanted = format!("branch refs/heads/{branch}");
    let mut current: Option<PathBuf> = None;
    for line in out.lines() {
        if let Some(path) = line.strip_prefix("worktree ") {
            current = Some(PathBuf::from(path));
        } else if line == wanted {
            return Ok(current);
        }
    }
    Ok(None)
}

/// Which of `paths` have uncommitted changes (working tree or index, untracked and ignored files included) in
/// `worktree`.
pub fn dirty_paths(worktree: &Path, paths: &[String]) -> Result<Vec<String>> {
    let repo = Repository::open(worktree)
        .map_err(git2_context(format!("cannot open {}", worktree.display())))?;
    if paths.is_empty() {
        return Ok(Vec::new());
    }
    // Ignored files count too: a fast-forward would overwrite one at a path the landing adds. Pathspecs (literal)
    // keep the walk to those paths, so a large ignored folder elsewhere costs nothing.
    let mut options = StatusOptions::new();
    options
        .include_untracked(true)
        .recurse_untracked_dirs(true)
        .include_ignored(true)
        .recurse_ignored_dirs(true)
        .disable_pathspec_match(true);
    for path in paths {
        options.pathspec(path);
    }
    let statuses = repo
        .statuses(Some(&mut options))
        .map_err(git2_context(format!(
            "cannot read the status of {}",
            worktree.display()
        )))?;
    let mut dirty: Vec<String> = statuses
        .iter()
        .filter_map(|entry| entry.path().ok().map(str::to_string))
        .filter(|path| {
            paths
                .iter()
                .any(|wanted| wanted == path || path.starts_with(&format!("{wanted}/")))
        })
        .collect();
    dirty.sort();
    dirty.dedup();
    Ok(dirty)
}

/// Fast-forwards the branch checked out in `worktree` to `sha`, updating its index and files (`git merge
/// --ff-only`, hooks off); git refuses if that would overwrite a local change.
pub fn fast_forward_checkout(worktree: &Path, sha: &str) -> Result<()> {
    run_git(worktree, ["merge", "--ff-only", "--quiet", sha]).map(drop)
}
