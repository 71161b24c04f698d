//! Git for portable attempts away from the user's repository: the runner's repository made from a snapshot
//! bundle (its git folder beside the tree it checks out), the bundle of its recorded change, and — back home — a
//! received change checked out into the task's worktree.

use std::path::Path;

use git2::Repository;

use super::bundle::{BundleOf, read_pack, write_bundle_in};
use super::{GitError, RepoPaths, Result, git2_context, oid};

fn io(context: String) -> impl FnOnce(std::io::Error) -> GitError {
    move |source| GitError::Io { context, source }
}

/// Makes a repository whose git folder is `git_dir` and whose files are checked out in `dir` (outside it: the
/// worker there cannot reach the git folder through its tree), holding only the snapshot bundle at `bundle` (its
/// prerequisites are left out: the runner needs the base's files, not its history), with branch `ccfan-attempt`
/// at the base checked out; returns the base commit.
pub fn checkout_snapshot(
    bundle: &Path,
    git_dir: &Path,
    dir: &Path,
    max_bytes: u64,
) -> Result<String> {
    std::fs::create_dir_all(dir).map_err(io(format!("cannot create {}", dir.display())))?;
    let mut options = git2::RepositoryInitOptions::new();
    options.workdir_path(dir).no_dotgit_dir(true);
    let git = Repository::init_opts(git_dir, &options).map_err(git2_context(format!(
        "cannot make a repository in {}",
        git_dir.display()
    )))?;
    let head = read_pack(&git, bundle, max_bytes, false)?;
    let [(base, _)] = head.refs.as_slice() else {
        return Err(GitError::Io {
            context: format!(
                "{} carries {} refs, not the one base",
                bundle.display(),
                head.refs.len()
            ),
            source: std::io::Error::from(std::io::ErrorKind::InvalidData),
        });
    };
    let commit = git
        .find_commit(oid(base)?)
        .map_err(git2_context(format!("cannot read the base {base}")))?;
    git.branch("ccfan-attempt", &commit, true)
        .map_err(git2_context("cannot make the attempt's branch"))?;
    git.set_head("refs/heads/ccfan-attempt")
        .map_err(git2_context("cannot point HEAD at the attempt's branch"))?;
    let mut checkout = git2::build::CheckoutBuilder::new();
    checkout.force();
    git.checkout_head(Some(&mut checkout))
        .map_err(git2_context(format!(
            "cannot check out the base in {}",
            dir.display()
        )))?;
    Ok(base.clone())
}

/// Writes a bundle of `tip` from the repository whose git folder is `git_dir` (the runner's); returns its size and
/// the tip's tree.
pub fn write_bundle_from(
    git_dir: &Path,
    tip: &str,
    ref_name: &str,
    of: BundleOf<'_>,
    path: &Path,
) -> Result<(u64, String)> {
    let git = Repository::open(git_dir)
        .map_err(git2_context(format!("cannot open {}", git_dir.display())))?;
    let size = write_bundle_in(&git, tip, ref_name, of, path)?;
    let tree = git
        .find_commit(oid(tip)?)
        .map_err(git2_context(format!("cannot read commit {tip}")))?
        .tree_id()
        .to_string();
    Ok((size, tree))
}

/// The tree of commit `sha`.
pub fn tree_of(repo: &RepoPaths, sha: &str) -> Result<String> {
    let git = repo.open()?;
    let commit = git
        .find_commit(oid(sha)?)
        .map_err(git2_context(format!("cannot read commit {sha}")))?;
    Ok(commit.tree_id().to_string())
}

/// Makes the files of `worktree` those of commit `sha` (added, changed and deleted as against the tree checked
/// out there), without moving its HEAD or branch: a change recorded elsewhere (a portable attempt) becomes the
/// worktree's, for ccfan to record as its own.
pub fn materialize(worktree: &Path, sha: &str) -> Result<()> {
    let git = Repository::open(worktree).map_err(git2_context(format!(
        "cannot open worktree {}",
        worktree.display()
    )))?;
    let commit = git
        .find_commit(oid(sha)?)
        .map_err(git2_context(format!("cannot read commit {sha}")))?;
    let mut checkout = git2::build::CheckoutBuilder::new();
    checkout.force();
    git.checkout_tree(commit.as_object(), Some(&mut checkout))
        .map_err(git2_context(format!(
            "cannot check the change of {sha} out into {}",
            worktree.display()
        )))
}
