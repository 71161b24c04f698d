//! The git door, worktrees: registering, filling, recording and removing the worktrees ccfan makes for tasks and
//! verification checkouts.

use std::os::unix::ffi::OsStringExt;

use super::*;

/// Holds an exclusive lock on the repository's worktree records while alive (across processes).
pub struct WorktreeLock {
    _file: File,
}

/// Takes the lock that serialises `git worktree add/remove/prune` on one repository, so that parallel creation
/// (in this process or another ccfan) never races on git's config and index locks.
pub fn lock_worktrees(repo: &RepoPaths) -> Result<WorktreeLock> {
    let dir = repo.common_dir.join("ccfan");
    let io = |context: String| move |source| GitError::Io { context, source };
    std::fs::create_dir_all(&dir).map_err(io(format!("cannot create {}", dir.display())))?;
    let path = dir.join("worktrees.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io(format!("cannot open {}", path.display())))?;
    file.lock()
        .map_err(io(format!("cannot lock {}", path.display())))?;
    Ok(WorktreeLock { _file: file })
}

/// `git worktree add --no-checkout` under the worktree lock: `-b BRANCH` for a task, `--detach` otherwise.
fn register_worktree(
    repo: &RepoPaths,
    path: &Path,
    branch: Option<&str>,
    start: &str,
    locked: bool,
) -> Result<()> {
    let _lock = lock_worktrees(repo)?;
    let mut args: Vec<&OsStr> = vec![
        OsStr::new("worktree"),
        OsStr::new("add"),
        OsStr::new("--no-checkout"),
        OsStr::new("--quiet"),
    ];
    if locked {
        args.push(OsStr::new("--lock"));
    }
    match branch {
        Some(branch) => args.extend([OsStr::new("-b"), OsStr::new(branch)]),
        None => args.push(OsStr::new("--detach")),
    }
    args.extend([path.as_os_str(), OsStr::new(start)]);
    run_git(&repo.workdir, args).map(drop)
}

/// Registers a worktree at `path` on a new `branch` at `base`, without checking files out (fast; done under the
/// worktree lock). Returns the content of the worktree's `.git` link file as git wrote it.
pub fn add_worktree(repo: &RepoPaths, path: &Path, branch: &str, base: &str) -> Result<String> {
    register_worktree(repo, path, Some(branch), base, false)?;
    git_link(path)
}

/// Fills a worktree made by [`add_worktree`]: index and files of its HEAD. Safe to run for many worktrees at once.
pub fn checkout_worktree(path: &Path) -> Result<()> {
    run_git(path, ["reset", "--hard", "--quiet", "HEAD"]).map(drop)
}

/// The worktree's admin folder in the common dir, from the `.git` link content ccfan recorded.
pub fn admin_dir(worktree: &Path, link: &str) -> Option<PathBuf> {
    let path = PathBuf::from(link.trim().strip_prefix("gitdir:")?.trim());
    Some(if path.is_relative() {
        worktree.join(path)
    } else {
        path
    })
}

/// Checks the worktree's own git files against what git made for it and puts them back: `commondir` must lead to
/// the repository's common dir, `gitdir` back to the worktree's `.git`, and no `config.worktree` may appear (it
/// could set `core.fsmonitor` or `core.hooksPath` for the user's next git command there). Returns what was wrong.
pub fn check_admin(repo: &RepoPaths, worktree: &Path, link: &str) -> Result<Vec<String>> {
    let Some(admin) = admin_dir(worktree, link) else {
        return Ok(Vec::new());
    };
    let io = |context: String| move |source| GitError::Io { context, source };
    let real = crate::paths::real_path;
    let mut found = Vec::new();
    // Small regular files only: what is there may have been planted (a FIFO, a link, a huge file).
    let small = |path: &Path| {
        crate::util::read_regular(path, SMALL_FILE)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    };
    let commondir = admin.join("commondir");
    let text = small(&commondir);
    if text.trim().is_empty() || real(&admin.join(text.trim())) != real(&repo.common_dir) {
        found.push(format!("{} had been rewritten", commondir.display()));
        let _ = std::fs::remove_file(&commondir);
        std::fs::write(&commondir, "../..\n")
            .map_err(io(format!("cannot restore {}", commondir.display())))?;
    }
    let gitdir = admin.join("gitdir");
    let expected = worktree.join(".git");
    let text = small(&gitdir);
    if real(Path::new(text.trim())) != real(&expected) {
        found.push(format!("{} had been rewritten", gitdir.display()));
        let _ = std::fs::remove_file(&gitdir);
        std::fs::write(&gitdir, format!("{}\n", expected.display()))
            .map_err(io(format!("cannot restore {}", gitdir.display())))?;
    }
    let config = admin.join("config.worktree");
    if std::fs::symlink_metadata(&config).is_ok() {
        found.push(format!("{} had been written", config.display()));
        std::fs::remove_file(&config).map_err(io(format!("cannot remove {}", config.display())))?;
    }
    Ok(found)
}

/// The most ccfan reads of a small git file (a `.git` link, `commondir`, `gitdir`).
pub const SMALL_FILE: u64 = 64 << 10;

/// The content of a worktree's `.git` link file.
pub fn git_link(worktree: &Path) -> Result<String> {
    let link = worktree.join(".git");
    crate::util::read_regular(&link, SMALL_FILE)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .map_err(|source| GitError::Io {
            context: format!("cannot read {}", link.display()),
            source,
        })
}

/// Removes a worktree (files included) and its record. Missing folders are fine.
pub fn remove_worktree(repo: &RepoPaths, path: &Path) -> Result<()> {
    let _lock = lock_worktrees(repo)?;
    if path.exists() {
        run_git(
            &repo.workdir,
            [
                OsStr::new("worktree"),
                OsStr::new("remove"),
                OsStr::new("--force"),
                OsStr::new("--force"),
                path.as_os_str(),
            ],
        )?;
    }
    run_git(&repo.workdir, ["worktree", "prune"]).map(drop)
}

/// Drops git's records of worktrees whose folders are gone.
pub fn prune_worktrees(repo: &RepoPaths) -> Result<()> {
    let _lock = lock_worktrees(repo)?;
    run_git(&repo.workdir, ["worktree", "prune"]).map(drop)
}

/// The paths of all worktrees git knows (the main one first).
pub fn list_worktrees(repo: &RepoPaths) -> Result<Vec<PathBuf>> {
    let out = run_git(&repo.workdir, ["worktree", "list", "--porcelain"])?;
    Ok(out
        .lines()
        .filter_map(|line| line.strip_prefix("worktree "))
        .map(PathBuf::from)
        .collect())
}

/// What recording a worktree found besides its files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorktreeCommit {
    /// The new commit (`None`: the files equal the parent's tree).
    pub commit: Option<CommitId>,
    /// Git state the worker changed, which ccfan put back (HEAD pointing elsewhere, the branch moved).
    pub tampered: Vec<String>,
}

/// Records the files of `worktree` (modified, deleted, untracked, mode changes, symlinks; ignored files excluded)
/// as one commit on top of `parent` — the commit ccfan expects the branch at, never what the worktree's HEAD or
/// index say, since the worker could change those — then points `branch` and the worktree's HEAD at it. The index
/// is rebuilt from `parent`'s tree first, so skip-worktree or assume-unchanged flags cannot hide a change.
/// libgit2 runs no hooks and no fsmonitor.
///
/// Where libgit2 cannot (it refuses folders nested deeper than 100 levels, for one), the attempt is recorded
/// through the git CLI the same way, so a worker's odd but legal tree is still kept.
///
/// With `trust_index` (the worker could not write git's metadata), the stat data git keeps in the worktree's index
/// is reused: files whose size, times, inode and mode are unchanged are not read again, so recording costs what
/// changed, not the size of the tree. Entries flagged assume-unchanged or skip-worktree lose their stat data (they
/// are read), and a repository that does not trust ctime (`core.trustctime = false`) or checks stat data only
/// partly (`core.checkStat = minimal`) gets the full re-read.
pub fn commit_worktree(
    worktree: &Path,
    admin: Option<&Path>,
    branch: &str,
    parent: &str,
    message: &str,
    scope: Scope<'_>,
) -> Result<WorktreeCommit> {
    let target = RecordTarget {
        worktree,
        admin,
        branch,
        parent,
        message,
    };
    match commit_worktree_git2(&target, scope) {
        Err(GitError::Git2 { context, source })
            if !crate::util::disk_full(&source) && admin.is_some() =>
        {
            // (libgit2's message is left out: it may quote a file name the worker chose.)
            tracing::info!("{context}; recording through the git CLI instead");
            commit_worktree_cli(worktree, admin, branch, parent, message).map_err(|cli| {
                GitError::Io {
                    context: format!(
                        "{context} ({source}), and through the git CLI neither ({cli})"
                    ),
                    source: std::io::Error::other("cannot record the attempt"),
                }
            })
        }
        other => other,
    }
}

/// Resets `index` to `parent_tree` (keeping the stat data it can trust) and stages the worktree's files as `scope`
/// says: the listed paths, or every file.
fn stage_attempt(
    repo: &Repository,
    index: &mut git2::Index,
    worktree: &Path,
    parent_tree: &git2::Tree<'_>,
    scope: Scope<'_>,
) -> Result<()> {
    let scope = match scope {
        Scope::Paths { changed, .. } if scoped::whole_tree_needed(changed, index) => {
            Scope::Everything { trust_index: true }
        }
        other => other,
    };
    let trust_index = match scope {
        Scope::Everything { trust_index } => trust_index,
        // Only listed paths are read; the stat data of the rest is never consulted.
        Scope::Paths { .. } => true,
    };
    if trust_index && stat_data_trusted(repo) {
        // Reading the parent's tree over the index keeps the stat data of entries whose content it already holds;
        // entries a flag could hide (assume-unchanged, skip-worktree) are dropped first, so they are read again.
        forget_flagged_entries(index)?;
    } else {
        // Cleared: reading a tree over existing entries keeps their stat data and flags (assume-unchanged).
        index
            .clear()
            .map_err(git2_context("cannot reset the index"))?;
    }
    index
        .read_tree(parent_tree)
        .map_err(git2_context("cannot reset the index to the parent"))?;
    match scope {
        Scope::Paths { lower, changed } => {
            scoped::stage(repo, index, worktree, lower, parent_tree, changed)?;
        }
        Scope::Everything { .. } => {
            let what = format!("cannot stage the changes in {}", worktree.display());
            index
                .add_all(["*"], IndexAddOption::DEFAULT, None)
                .map_err(git2_context(what.clone()))?;
            index.update_all(["*"], None).map_err(git2_context(what))?;
        }
    }
    Ok(())
}

/// Whether the repository's configuration lets stat data stand for content: ctime trusted, full stat checks.
fn stat_data_trusted(repo: &Repository) -> bool {
    let Ok(config) = repo.config() else {
        return false;
    };
    let trust_ctime = config.get_bool("core.trustctime").unwrap_or(true);
    let check_stat = config
        .get_string("core.checkstat")
        .unwrap_or_else(|_| "default".to_string());
    trust_ctime && check_stat != "minimal"
}

/// Removes the index entries flagged assume-unchanged (`VALID`) or skip-worktree, whose stat data must not be
/// trusted: the file is then compared by content.
fn forget_flagged_entries(index: &mut git2::Index) -> Result<()> {
    const VALID: u16 = 0x8000;
    const SKIP_WORKTREE: u16 = 0x4000;
    let flagged: Vec<Vec<u8>> = index
        .iter()
        .filter(|entry| entry.flags & VALID != 0 || entry.flags_extended & SKIP_WORKTREE != 0)
        .map(|entry| entry.path)
        .collect();
    for path in flagged {
        let path = std::path::PathBuf::from(std::ffi::OsString::from_vec(path));
        index
            .remove_path(&path)
            .map_err(git2_context("cannot reset a flagged index entry"))?;
    }
    Ok(())
}

/// What a worker changed of the worktree's git state before ccfan records: its HEAD not on `branch`, or the branch
/// not at `parent` (moved or deleted).
fn tampering(branch: &str, head: Option<&str>, tip: Option<&str>, parent: &str) -> Vec<String> {
    let mut found = Vec::new();
    if head != Some(format!("refs/heads/{branch}").as_str()) {
        found.push(format!(
            "the worktree's HEAD pointed at {}",
            head.unwrap_or("a detached commit")
        ));
    }
    match tip {
        Some(tip) if tip == parent => {}
        Some(tip) => found.push(format!("branch {branch} had been moved to {tip}")),
        None => found.push(format!("branch {branch} had been deleted")),
    }
    found
}

/// [`commit_worktree`] through the git CLI: a fresh index built from `parent`, every file of the worktree added
/// (ignored ones excluded), a commit by ccfan, then the branch and HEAD moved. Git runs with hooks and fsmonitor off,
/// and finds the repository from ccfan's record of the admin dir, never through the worktree's `.git`.
fn commit_worktree_cli(
    worktree: &Path,
    admin: Option<&Path>,
    branch: &str,
    parent: &str,
    message: &str,
) -> Result<WorktreeCommit> {
    let git_dir = admin.map_or_else(|| worktree.join(".git"), Path::to_path_buf);
    let index = git_dir.join("index.ccfan-record");
    let env: [(&str, &OsStr); 7] = [
        ("GIT_DIR", git_dir.as_os_str()),
        ("GIT_WORK_TREE", worktree.as_os_str()),
        ("GIT_INDEX_FILE", index.as_os_str()),
        ("GIT_AUTHOR_NAME", OsStr::new(CCFAN.0)),
        ("GIT_AUTHOR_EMAIL", OsStr::new(CCFAN.1)),
        ("GIT_COMMITTER_NAME", OsStr::new(CCFAN.0)),
        ("GIT_COMMITTER_EMAIL", OsStr::new(CCFAN.1)),
    ];
    let git = |args: &[&str]| run_git_env(worktree, &env, args).map(|out| out.trim().to_string());
    let branch_ref = format!("refs/heads/{branch}");
    let head = git(&["symbolic-ref", "-q", "HEAD"]).ok();
    let tip = git(&[
        "rev-parse",
        "-q",
        "--verify",
        &format!("{branch_ref}^{{commit}}"),
    ])
    .ok();
    let tampered = tampering(branch, head.as_deref(), tip.as_deref(), parent);
    let _ = std::fs::remove_file(&index);
    let recorded = (|| {
        git(&["read-tree", parent])?;
        git(&["add", "--all", "--", "."])?;
        let tree = git(&["write-tree"])?;
        let parent_tree = git(&["rev-parse", &format!("{parent}^{{tree}}")])?;
        let commit = if tree == parent_tree {
            None
        } else {
            let made = git(&["commit-tree", &tree, "-p", parent, "-m", message])?;
            Some(CommitId::parse(made).map_err(|error| GitError::Io {
                context: "git commit-tree printed no commit id".to_string(),
                source: std::io::Error::other(error),
            })?)
        };
        let tip = commit.as_deref().unwrap_or(parent);
        git(&[
            "update-ref",
            "-m",
            "ccfan: record attempt",
            &branch_ref,
            tip,
        ])?;
        git(&["symbolic-ref", "HEAD", &branch_ref])?;
        Ok(commit)
    })();
    match recorded {
        Ok(commit) => {
            // The worktree's index becomes the one just built (as the libgit2 path leaves it).
            if let Err(error) = std::fs::rename(&index, git_dir.join("index")) {
                tracing::warn!("cannot update the worktree's index: {error}");
            }
            Ok(WorktreeCommit { commit, tampered })
        }
        Err(error) => {
            let _ = std::fs::remove_file(&index);
            Err(error)
        }
    }
}

/// Where and how an attempt is recorded.
struct RecordTarget<'a> {
    worktree: &'a Path,
    admin: Option<&'a Path>,
    branch: &'a str,
    parent: &'a str,
    message: &'a str,
}

fn commit_worktree_git2(target: &RecordTarget<'_>, scope: Scope<'_>) -> Result<WorktreeCommit> {
    let RecordTarget {
        worktree,
        admin,
        branch,
        parent,
        message,
    } = *target;
    let context = || git2_context(format!("cannot open worktree {}", worktree.display()));
    // With the admin dir known, git's files are found from ccfan's record, never through the worktree's `.git`.
    let repo = match admin {
        Some(admin) => {
            let repo = Repository::open(admin).map_err(context())?;
            repo.set_workdir(worktree, false).map_err(context())?;
            repo
        }
        None => Repository::open(worktree).map_err(context())?,
    };
    let parent_id = oid(parent)?;
    let parent_commit = repo
        .find_commit(parent_id)
        .map_err(git2_context("cannot read the attempt's parent"))?;
    let parent_tree = parent_commit
        .tree()
        .map_err(git2_context("cannot read the parent's tree"))?;
    let branch_ref = format!("refs/heads/{branch}");
    let head_target = repo
        .find_reference("HEAD")
        .ok()
        .and_then(|head| head.symbolic_target().ok().flatten().map(str::to_string));
    let tip = repo
        .find_reference(&branch_ref)
        .ok()
        .and_then(|reference| reference.target())
        .map(|tip| tip.to_string());
    let tampered = tampering(branch, head_target.as_deref(), tip.as_deref(), parent);
    let mut index = repo
        .index()
        .map_err(git2_context("cannot read the worktree's index"))?;
    stage_attempt(&repo, &mut index, worktree, &parent_tree, scope)?;
    let tree_id = index
        .write_tree()
        .map_err(git2_context("cannot write the attempt's tree"))?;
    index
        .write()
        .map_err(git2_context("cannot write the worktree's index"))?;
    let commit = if tree_id == parent_tree.id() {
        None
    } else {
        Some(write_commit(
            &repo,
            tree_id,
            &[&parent_commit],
            message,
            None,
            CCFAN,
        )?)
    };
    repo.reference(
        &branch_ref,
        commit.unwrap_or(parent_id),
        true,
        "ccfan: record attempt",
    )
    .map_err(git2_context(format!("cannot move branch {branch}")))?;
    repo.set_head(&branch_ref).map_err(git2_context(
        "cannot point the worktree's HEAD at its branch",
    ))?;
    Ok(WorktreeCommit {
        commit: commit.map(CommitId::of),
        tampered,
    })
}

/// Whether the files of `worktree` differ from `parent`'s tree (untracked files count, ignored ones do not). Like
/// [`commit_worktree`], it trusts neither the worktree's HEAD nor its index flags.
pub fn has_uncommitted_changes(worktree: &Path, parent: &str) -> Result<bool> {
    let repo = Repository::open(worktree).map_err(git2_context(format!(
        "cannot open worktree {}",
        worktree.display()
    )))?;
    let parent_id = oid(parent)?;
    let tree = repo
        .find_commit(parent_id)
        .and_then(|commit| commit.tree())
        .map_err(git2_context("cannot read the parent's tree"))?;
    let mut index = git2::Index::new().map_err(git2_context("cannot make an index"))?;
    index
        .read_tree(&tree)
        .map_err(git2_context("cannot read the parent's tree"))?;
    let mut options = git2::DiffOptions::new();
    options
        .include_untracked(true)
        .recurse_untracked_dirs(true)
        .include_ignored(false);
    let diff = repo
        .diff_tree_to_workdir(Some(&tree), Some(&mut options))
        .map_err(git2_context(format!(
            "cannot compare {}",
            worktree.display()
        )))?;
    Ok(diff.deltas().len() > 0)
}

/// Moves a worktree's branch and files back to `sha`, dropping untracked files (not ignored ones): used when an
/// attempt is rolled back, after all its work is on salvage refs.
pub fn reset_worktree(worktree: &Path, sha: &str) -> Result<()> {
    run_git(worktree, ["reset", "--hard", "--quiet", sha])?;
    run_git(worktree, ["clean", "-fd", "--quiet"]).map(drop)
}

/// Registers a worktree at `path`, on a new `branch` or detached, at `start`, with no files written (a
/// copy-on-write tree gets its files from its layer). `locked` keeps `git worktree prune` (ccfan's, the user's,
/// `git gc`'s) from dropping its record while its folder looks empty (a copy-on-write tree not mounted, after a
/// reboot). Returns the `.git` link content.
pub fn register_empty_worktree(
    repo: &RepoPaths,
    path: &Path,
    branch: Option<&str>,
    start: &str,
    locked: bool,
) -> Result<String> {
    register_worktree(repo, path, branch, start, locked)?;
    git_link(path)
}

/// Checks `sha` out, detached, into a new worktree at `path` (for verification; never the worker's worktree).
pub fn add_detached_worktree(repo: &RepoPaths, path: &Path, sha: &str) -> Result<()> {
    register_worktree(repo, path, None, sha, false)?;
    checkout_worktree(path)
}

mod scoped;
pub use scoped::Scope;

#[cfg(test)]
mod tests;
