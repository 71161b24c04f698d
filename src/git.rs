//! The one door to git. git2 first; the git CLI only where libgit2 is slower or lacks a feature (worktree add
//! without checkout, checkout, worktree remove/prune), always with inherited `GIT_*` variables removed, hooks and
//! fsmonitor off and stdin closed — so nothing a worker planted can run on the host through ccfan's own git calls.

use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use git2::{IndexAddOption, Oid, Repository, Signature, StatusOptions};

/// Errors from git operations, carrying what is needed to act on them.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The folder is not inside a git repository.
    #[error("{} is not inside a git repository (run ccfan inside one, or pass -C DIR)", path.display())]
    NotARepo {
        /// The folder.
        path: PathBuf,
        /// libgit2's reason.
        #[source]
        source: git2::Error,
    },
    /// The repository has no working tree.
    #[error("{} is a bare repository; ccfan needs a repository with a working tree", path.display())]
    Bare {
        /// The repository.
        path: PathBuf,
    },
    /// A revision does not resolve to a commit.
    #[error("`{rev}` does not name a commit in this repository")]
    BadRevision {
        /// What the user wrote.
        rev: String,
        /// libgit2's reason.
        #[source]
        source: git2::Error,
    },
    /// A git CLI command failed.
    #[error("git {args} failed ({status}): {stderr}")]
    Command {
        /// The arguments.
        args: String,
        /// How it ended.
        status: String,
        /// Its standard error, trimmed.
        stderr: String,
    },
    /// The git CLI could not be started.
    #[error("could not run git (is it installed and on PATH?)")]
    Spawn(#[source] std::io::Error),
    /// A libgit2 call failed.
    #[error("{context}")]
    Git2 {
        /// What ccfan was doing.
        context: String,
        /// libgit2's reason.
        #[source]
        source: git2::Error,
    },
    /// A file operation around git failed.
    #[error("{context}")]
    Io {
        /// What ccfan was doing.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

type Result<T> = std::result::Result<T, GitError>;

fn git2_context(context: impl Into<String>) -> impl FnOnce(git2::Error) -> GitError {
    let context = context.into();
    move |source| GitError::Git2 { context, source }
}

/// Parses a full commit id.
fn oid(sha: &str) -> Result<Oid> {
    Oid::from_str(sha).map_err(git2_context(format!("`{sha}` is not an object id")))
}

/// The tree of commit `sha`.
fn commit_tree<'r>(git: &'r Repository, sha: &str) -> Result<git2::Tree<'r>> {
    git.find_commit(oid(sha)?)
        .and_then(|commit| commit.tree())
        .map_err(git2_context(format!("cannot read the tree of {sha}")))
}

/// Writes a commit of tree `tree_id` with `parents`, signed as ccfan (or `author` for the demo), moving
/// `update_ref` if given. The one place ccfan makes commits.
fn write_commit(
    git: &Repository,
    tree_id: Oid,
    parents: &[&git2::Commit<'_>],
    message: &str,
    update_ref: Option<&str>,
    author: (&str, &str),
) -> Result<Oid> {
    let tree = git
        .find_tree(tree_id)
        .map_err(git2_context("cannot read the tree to commit"))?;
    let signature =
        Signature::now(author.0, author.1).map_err(git2_context("cannot make a signature"))?;
    git.commit(update_ref, &signature, &signature, message, &tree, parents)
        .map_err(git2_context("cannot write a commit"))
}

/// ccfan's own commit identity.
const CCFAN: (&str, &str) = ("ccfan", "ccfan@localhost");

/// Where a repository lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoPaths {
    /// The user's working tree (top level).
    pub workdir: PathBuf,
    /// The git dir of that working tree.
    pub git_dir: PathBuf,
    /// The common dir shared by all worktrees (holds refs, objects and ccfan's state).
    pub common_dir: PathBuf,
}

impl RepoPaths {
    /// Opens the repository with libgit2.
    pub fn open(&self) -> Result<Repository> {
        Repository::open(&self.workdir).map_err(|source| GitError::NotARepo {
            path: self.workdir.clone(),
            source,
        })
    }
}

/// Finds the repository containing `start`.
pub fn discover(start: &Path) -> Result<RepoPaths> {
    let repo = Repository::discover(start).map_err(|source| GitError::NotARepo {
        path: start.to_path_buf(),
        source,
    })?;
    let workdir = repo.workdir().ok_or_else(|| GitError::Bare {
        path: repo.path().to_path_buf(),
    })?;
    let canonical = |path: &Path| path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    Ok(RepoPaths {
        workdir: canonical(workdir),
        git_dir: canonical(repo.path()),
        common_dir: canonical(repo.commondir()),
    })
}

/// Resolves `rev` to a full commit id.
pub fn resolve_commit(repo: &RepoPaths, rev: &str) -> Result<String> {
    let git = repo.open()?;
    let object = git
        .revparse_single(rev)
        .map_err(|source| GitError::BadRevision {
            rev: rev.to_string(),
            source,
        })?;
    let commit = object
        .peel_to_commit()
        .map_err(|source| GitError::BadRevision {
            rev: rev.to_string(),
            source,
        })?;
    Ok(commit.id().to_string())
}

/// The branch checked out in the user's working tree, if HEAD is on a branch.
pub fn current_branch(repo: &RepoPaths) -> Result<Option<String>> {
    let git = repo.open()?;
    let head = match git.head() {
        Ok(head) => head,
        Err(_) => return Ok(None),
    };
    Ok(if head.is_branch() {
        head.shorthand().ok().map(str::to_string)
    } else {
        None
    })
}

/// A git CLI command with a clean environment: no inherited `GIT_*`, C locale, hooks and fsmonitor off, stdin null.
fn git_command(dir: &Path) -> Command {
    #[expect(
        clippy::disallowed_methods,
        reason = "git.rs is the one door to the git CLI"
    )]
    let mut command = Command::new("git");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("GIT_") {
            command.env_remove(name);
        }
    }
    command
        .env("LC_ALL", "C")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "core.fsmonitor=false",
        ])
        .stdin(Stdio::null());
    command
}

fn run_git<I, S>(dir: &Path, args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args
        .into_iter()
        .map(|a| a.as_ref().to_os_string())
        .collect();
    let output = git_command(dir)
        .args(&args)
        .output()
        .map_err(GitError::Spawn)?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(GitError::Command {
            args: args
                .iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

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
) -> Result<()> {
    let _lock = lock_worktrees(repo)?;
    let mut args: Vec<&OsStr> = vec![
        OsStr::new("worktree"),
        OsStr::new("add"),
        OsStr::new("--no-checkout"),
        OsStr::new("--quiet"),
    ];
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
    register_worktree(repo, path, Some(branch), base)?;
    git_link(path)
}

/// Fills a worktree made by [`add_worktree`]: index and files of its HEAD. Safe to run for many worktrees at once.
pub fn checkout_worktree(path: &Path) -> Result<()> {
    run_git(path, ["reset", "--hard", "--quiet", "HEAD"]).map(drop)
}

/// The content of a worktree's `.git` link file.
pub fn git_link(worktree: &Path) -> Result<String> {
    let link = worktree.join(".git");
    std::fs::read_to_string(&link).map_err(|source| GitError::Io {
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
    pub commit: Option<String>,
    /// Git state the worker changed, which ccfan put back (HEAD pointing elsewhere, the branch moved).
    pub tampered: Vec<String>,
}

/// Records the files of `worktree` (modified, deleted, untracked, mode changes, symlinks; ignored files excluded)
/// as one commit on top of `parent` — the commit ccfan expects the branch at, never what the worktree's HEAD or
/// index say, since the worker could change those — then points `branch` and the worktree's HEAD at it. The index
/// is rebuilt from `parent`'s tree first, so skip-worktree or assume-unchanged flags cannot hide a change.
/// libgit2 runs no hooks and no fsmonitor.
pub fn commit_worktree(
    worktree: &Path,
    branch: &str,
    parent: &str,
    message: &str,
) -> Result<WorktreeCommit> {
    let repo = Repository::open(worktree).map_err(git2_context(format!(
        "cannot open worktree {}",
        worktree.display()
    )))?;
    let parent_id = oid(parent)?;
    let parent_commit = repo
        .find_commit(parent_id)
        .map_err(git2_context("cannot read the attempt's parent"))?;
    let parent_tree = parent_commit
        .tree()
        .map_err(git2_context("cannot read the parent's tree"))?;
    let branch_ref = format!("refs/heads/{branch}");
    let mut tampered = Vec::new();
    let head_target = repo
        .find_reference("HEAD")
        .ok()
        .and_then(|head| head.symbolic_target().ok().flatten().map(str::to_string));
    if head_target.as_deref() != Some(branch_ref.as_str()) {
        tampered.push(format!(
            "the worktree's HEAD pointed at {}",
            head_target.as_deref().unwrap_or("a detached commit")
        ));
    }
    match repo
        .find_reference(&branch_ref)
        .ok()
        .and_then(|reference| reference.target())
    {
        Some(tip) if tip == parent_id => {}
        Some(tip) => tampered.push(format!("branch {branch} had been moved to {tip}")),
        None => tampered.push(format!("branch {branch} had been deleted")),
    }
    let mut index = repo
        .index()
        .map_err(git2_context("cannot read the worktree's index"))?;
    // Cleared first: reading a tree over existing entries keeps their stat data and flags (assume-unchanged).
    index
        .clear()
        .map_err(git2_context("cannot reset the index"))?;
    index
        .read_tree(&parent_tree)
        .map_err(git2_context("cannot reset the index to the parent"))?;
    let what = format!("cannot stage the changes in {}", worktree.display());
    index
        .add_all(["*"], IndexAddOption::DEFAULT, None)
        .map_err(git2_context(what.clone()))?;
    index.update_all(["*"], None).map_err(git2_context(what))?;
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
        commit: commit.map(|oid| oid.to_string()),
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

/// Points ref `name` at `sha` (creating or moving it).
pub fn set_ref(repo: &RepoPaths, name: &str, sha: &str, log: &str) -> Result<()> {
    let git = repo.open()?;
    let oid = oid(sha)?;
    git.reference(name, oid, true, log)
        .map_err(git2_context(format!("cannot write ref {name}")))?;
    Ok(())
}

/// The commit a ref points at, if it exists.
pub fn ref_target(repo: &RepoPaths, name: &str) -> Result<Option<String>> {
    let git = repo.open()?;
    match git.find_reference(name) {
        Ok(reference) => Ok(reference.target().map(|oid| oid.to_string())),
        Err(error) if error.code() == git2::ErrorCode::NotFound => Ok(None),
        Err(source) => Err(GitError::Git2 {
            context: format!("cannot read ref {name}"),
            source,
        }),
    }
}

/// Refs under `prefix` (e.g. `refs/ccfan/RUN/`) with their targets, sorted by name.
pub fn refs_under(repo: &RepoPaths, prefix: &str) -> Result<Vec<(String, String)>> {
    let git = repo.open()?;
    let glob = format!("{prefix}*");
    let mut refs = Vec::new();
    for reference in git
        .references_glob(&glob)
        .map_err(git2_context("cannot list refs"))?
    {
        let reference = reference.map_err(git2_context("cannot read a ref"))?;
        if let (Ok(name), Some(target)) = (reference.name(), reference.target()) {
            refs.push((name.to_string(), target.to_string()));
        }
    }
    refs.sort();
    Ok(refs)
}

/// Deletes a local branch; `Ok(false)` when it did not exist.
pub fn delete_branch(repo: &RepoPaths, branch: &str) -> Result<bool> {
    let git = repo.open()?;
    let name = format!("refs/heads/{branch}");
    match git.find_reference(&name) {
        Ok(mut reference) => {
            reference
                .delete()
                .map_err(git2_context(format!("cannot delete branch {branch}")))?;
            Ok(true)
        }
        Err(error) if error.code() == git2::ErrorCode::NotFound => Ok(false),
        Err(source) => Err(GitError::Git2 {
            context: format!("cannot read branch {branch}"),
            source,
        }),
    }
}

/// Whether commit `ancestor` is reachable from `descendant` (or equal to it).
pub fn is_ancestor(repo: &RepoPaths, ancestor: &str, descendant: &str) -> Result<bool> {
    let git = repo.open()?;
    let (a, d) = (oid(ancestor)?, oid(descendant)?);
    if a == d {
        return Ok(true);
    }
    git.graph_descendant_of(d, a)
        .map_err(git2_context("cannot walk history"))
}

/// Makes a new repository at `path` (branch `main`) and commits every file in it (used by `ccfan demo`).
pub fn init_with_commit(path: &Path, message: &str) -> Result<String> {
    let mut options = git2::RepositoryInitOptions::new();
    options.initial_head("main");
    let repo = Repository::init_opts(path, &options).map_err(git2_context(format!(
        "cannot create a repository at {}",
        path.display()
    )))?;
    let mut index = repo
        .index()
        .map_err(git2_context("cannot read the new index"))?;
    index
        .add_all(["*"], IndexAddOption::DEFAULT, None)
        .map_err(git2_context("cannot stage the demo files"))?;
    index
        .write()
        .map_err(git2_context("cannot write the new index"))?;
    let tree_id = index
        .write_tree()
        .map_err(git2_context("cannot write the first tree"))?;
    let oid = write_commit(
        &repo,
        tree_id,
        &[],
        message,
        Some("HEAD"),
        ("ccfan demo", "demo@ccfan.invalid"),
    )?;
    Ok(oid.to_string())
}

/// How a file changed between two trees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

/// The files changed from commit `from` to commit `to`, with renames detected and line counts.
pub fn diff_files(repo: &RepoPaths, from: &str, to: &str) -> Result<Vec<FileChange>> {
    let git = repo.open()?;
    let (old, new) = (commit_tree(&git, from)?, commit_tree(&git, to)?);
    let mut diff = git
        .diff_tree_to_tree(Some(&old), Some(&new), None)
        .map_err(git2_context("cannot diff the attempt"))?;
    let mut find = git2::DiffFindOptions::new();
    find.renames(true).copies(false);
    diff.find_similar(Some(&mut find))
        .map_err(git2_context("cannot detect renames"))?;
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

/// The outcome of merging an attempt onto a target tip in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergePreview {
    /// A commit object (on no ref) holding exactly the tree that would land.
    Clean {
        /// The preview commit.
        commit: String,
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
            commit: onto.to_string(),
        });
    }
    if git
        .graph_descendant_of(attempt_id, onto_id)
        .unwrap_or(false)
    {
        return Ok(MergePreview::Clean {
            commit: attempt.to_string(),
        });
    }
    let ours = git
        .find_commit(onto_id)
        .map_err(git2_context("cannot read the target tip"))?;
    let theirs = git
        .find_commit(attempt_id)
        .map_err(git2_context("cannot read the attempt"))?;
    merge_in_memory(&git, &ours, &theirs, "ccfan: merge preview")
}

/// Moves a worktree's branch and files back to `sha`, dropping untracked files (not ignored ones): used when an
/// attempt is rolled back, after all its work is on salvage refs.
pub fn reset_worktree(worktree: &Path, sha: &str) -> Result<()> {
    run_git(worktree, ["reset", "--hard", "--quiet", sha])?;
    run_git(worktree, ["clean", "-fd", "--quiet"]).map(drop)
}

/// Merges commit `attempt` onto `onto` as a new two-parent commit with `message` (no fast-forward, so a merged
/// task stays one revertable commit), built in memory; no ref moves.
pub fn merge_commit(
    repo: &RepoPaths,
    onto: &str,
    attempt: &str,
    message: &str,
) -> Result<MergePreview> {
    let git = repo.open()?;
    let ours = git
        .find_commit(oid(onto)?)
        .map_err(git2_context("cannot read the target tip"))?;
    let theirs = git
        .find_commit(oid(attempt)?)
        .map_err(git2_context("cannot read the attempt"))?;
    merge_in_memory(&git, &ours, &theirs, message)
}

/// Merges two commits in memory and writes a two-parent commit on no ref; conflicts are listed instead.
fn merge_in_memory(
    git: &Repository,
    ours: &git2::Commit<'_>,
    theirs: &git2::Commit<'_>,
    message: &str,
) -> Result<MergePreview> {
    let mut index = git
        .merge_commits(ours, theirs, None)
        .map_err(git2_context("cannot merge in memory"))?;
    if index.has_conflicts() {
        let mut paths: Vec<String> = index
            .conflicts()
            .map_err(git2_context("cannot list conflicts"))?
            .flatten()
            .filter_map(|conflict| conflict.our.or(conflict.their).or(conflict.ancestor))
            .map(|entry| String::from_utf8_lossy(&entry.path).into_owned())
            .collect();
        paths.sort();
        paths.dedup();
        return Ok(MergePreview::Conflicts(paths));
    }
    let tree_id = index
        .write_tree_to(git)
        .map_err(git2_context("cannot write the merged tree"))?;
    let commit = write_commit(git, tree_id, &[ours, theirs], message, None, CCFAN)?;
    Ok(MergePreview::Clean {
        commit: commit.to_string(),
    })
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

/// Which of `paths` have uncommitted changes (working tree or index, untracked included) in `worktree`.
pub fn dirty_paths(worktree: &Path, paths: &[String]) -> Result<Vec<String>> {
    let repo = Repository::open(worktree)
        .map_err(git2_context(format!("cannot open {}", worktree.display())))?;
    let mut options = StatusOptions::new();
    options
        .include_untracked(true)
        .recurse_untracked_dirs(true)
        .include_ignored(false);
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

/// Checks `sha` out, detached, into a new worktree at `path` (for verification; never the worker's worktree).
pub fn add_detached_worktree(repo: &RepoPaths, path: &Path, sha: &str) -> Result<()> {
    register_worktree(repo, path, None, sha)?;
    checkout_worktree(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_a_repo_says_how_to_fix() {
        let dir = tempfile::tempdir().unwrap();
        let error = discover(dir.path()).unwrap_err();
        assert!(
            error.to_string().contains("not inside a git repository"),
            "{error}"
        );
    }
}
