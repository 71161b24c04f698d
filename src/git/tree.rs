//! The git door, plain trees: a commit's files written into a folder with an index of their own (a prepared base
//! layer), put back to that commit after something ran there, and a copy-on-write tree moved from the commit its
//! layer holds to the one it should show — each through git's own checkout, so stat data lands in the index and
//! later status checks and recordings need not read unchanged files.

use super::*;

/// `git` with `GIT_DIR`, `GIT_WORK_TREE` and `GIT_INDEX_FILE` set, never touching any HEAD.
fn git_in(git_dir: &Path, work_tree: &Path, index: &Path, args: &[&str]) -> Result<String> {
    let env: [(&str, &OsStr); 3] = [
        ("GIT_DIR", git_dir.as_os_str()),
        ("GIT_WORK_TREE", work_tree.as_os_str()),
        ("GIT_INDEX_FILE", index.as_os_str()),
    ];
    run_git_env(work_tree, &env, args)
}

/// Writes `commit`'s files into `dir` (made if missing) and its index, with stat data, to `index`.
pub fn checkout_into(repo: &RepoPaths, commit: &str, dir: &Path, index: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| GitError::Io {
        context: format!("cannot create {}", dir.display()),
        source,
    })?;
    git_in(
        &repo.common_dir,
        dir,
        index,
        &["read-tree", "--reset", "-u", commit],
    )
    .map(drop)
}

/// Puts `dir` (written by [`checkout_into`]) back to exactly `commit`'s files plus what git ignores: tracked files
/// something changed are rewritten, untracked files that are not ignored are removed; `index` is refreshed.
pub fn restore_tracked(repo: &RepoPaths, commit: &str, dir: &Path, index: &Path) -> Result<()> {
    git_in(
        &repo.common_dir,
        dir,
        index,
        &["read-tree", "--reset", "-u", commit],
    )?;
    git_in(&repo.common_dir, dir, index, &["clean", "-f", "-d", "-q"])?;
    git_in(
        &repo.common_dir,
        dir,
        index,
        &["update-index", "-q", "--refresh"],
    )
    .map(drop)
    .or(Ok(()))
}

/// Moves a worktree whose files and index (in its admin folder `admin`) show `from` to show `to`: only the
/// difference is written, and the index follows with stat data.
pub fn move_tree(admin: &Path, worktree: &Path, from: &str, to: &str) -> Result<()> {
    git_in(
        admin,
        worktree,
        &admin.join("index"),
        &["read-tree", "-m", "-u", from, to],
    )
    .map(drop)
}

/// How many paths differ between commits `a` and `b` (trees compared, not files: cost grows with the difference).
pub fn changed_paths_between(repo: &RepoPaths, a: &str, b: &str) -> Result<usize> {
    let git = repo.open()?;
    let tree = |rev: &str| {
        git.find_commit(oid(rev)?)
            .and_then(|commit| commit.tree())
            .map_err(git2_context(format!("cannot read commit {rev}")))
    };
    let (from, to) = (tree(a)?, tree(b)?);
    let diff = git
        .diff_tree_to_tree(Some(&from), Some(&to), None)
        .map_err(git2_context("cannot compare two commits"))?;
    Ok(diff.deltas().len())
}
