//! The one door to git. git2 first; the git CLI only where libgit2 is slower or lacks a feature (worktree add
//! without checkout, checkout, worktree remove/prune), always with inherited `GIT_*` variables removed, hooks and
//! fsmonitor off and stdin closed — so nothing a worker planted can run on the host through ccfan's own git calls.

use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use git2::{IndexAddOption, Oid, Repository, Signature, StatusOptions};

use crate::ids::CommitId;

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
    /// The repository uses a format libgit2 (and so ccfan) cannot read yet, such as SHA-256 object ids.
    #[error("{} is a git repository whose {what} is not supported by ccfan yet (only SHA-1 repositories are); run ccfan in a SHA-1 repository", path.display())]
    UnsupportedFormat {
        /// The folder.
        path: PathBuf,
        /// What is unsupported, e.g. "object format `sha256`".
        what: String,
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
    /// The index holds unresolved merge conflicts, so there is no staged tree to judge.
    #[error("the index has unresolved conflicts in {} (resolve them and `git add` the files first)", paths.join(", "))]
    Unmerged {
        /// The conflicted paths.
        paths: Vec<String>,
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

/// The tree of commit `sha` (or tree `sha` itself: a staged index is judged as a tree).
fn commit_tree<'r>(git: &'r Repository, sha: &str) -> Result<git2::Tree<'r>> {
    git.find_object(oid(sha)?, None)
        .and_then(|object| object.peel_to_tree())
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

/// A commit by ccfan holding the tree of commit `tree_of` on top of `parent` alone (the attempts in between left
/// out of its history); returns its id.
pub fn squash_commit(
    repo: &RepoPaths,
    tree_of: &str,
    parent: &str,
    message: &str,
) -> Result<CommitId> {
    let git = repo.open()?;
    let tree = commit_tree(&git, tree_of)?;
    let parent = git
        .find_commit(oid(parent)?)
        .map_err(git2_context(format!("cannot read commit {parent}")))?;
    write_commit(&git, tree.id(), &[&parent], message, None, CCFAN).map(CommitId::of)
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
    let repo = Repository::discover(start).map_err(|source| {
        let message = source.message();
        let quoted = message.split('\'').nth(1).unwrap_or("?");
        if message.contains("object format") {
            GitError::UnsupportedFormat {
                path: start.to_path_buf(),
                what: format!("object format `{quoted}`"),
            }
        } else if message.contains("unsupported extension") {
            GitError::UnsupportedFormat {
                path: start.to_path_buf(),
                what: format!("extension `{quoted}`"),
            }
        } else {
            GitError::NotARepo {
                path: start.to_path_buf(),
                source,
            }
        }
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
pub fn resolve_commit(repo: &RepoPaths, rev: &str) -> Result<CommitId> {
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
    Ok(CommitId::of(commit.id()))
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
        reason = "the git module is the one door to the git CLI"
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
    run_git_env(dir, &[], args)
}

/// [`run_git`] with extra environment variables (set after the inherited `GIT_*` ones are removed).
fn run_git_env<I, S>(dir: &Path, env: &[(&str, &OsStr)], args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args
        .into_iter()
        .map(|a| a.as_ref().to_os_string())
        .collect();
    let mut command = git_command(dir);
    command.envs(env.iter().copied());
    let output = command.args(&args).output().map_err(GitError::Spawn)?;
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

/// Points ref `name` at `sha` (creating or moving it).
pub fn set_ref(repo: &RepoPaths, name: &str, sha: &str, log: &str) -> Result<()> {
    let git = repo.open()?;
    let oid = oid(sha)?;
    git.reference(name, oid, true, log)
        .map_err(git2_context(format!("cannot write ref {name}")))?;
    Ok(())
}

/// The commit a ref points at, if it exists.
pub fn ref_target(repo: &RepoPaths, name: &str) -> Result<Option<CommitId>> {
    let git = repo.open()?;
    match git.find_reference(name) {
        Ok(reference) => Ok(reference.target().map(CommitId::of)),
        Err(error) if error.code() == git2::ErrorCode::NotFound => Ok(None),
        Err(source) => Err(GitError::Git2 {
            context: format!("cannot read ref {name}"),
            source,
        }),
    }
}

/// Refs under `prefix` (e.g. `refs/ccfan/RUN/`) with their targets, sorted by name.
pub fn refs_under(repo: &RepoPaths, prefix: &str) -> Result<Vec<(String, CommitId)>> {
    let git = repo.open()?;
    let glob = format!("{prefix}*");
    let mut refs = Vec::new();
    for reference in git
        .references_glob(&glob)
        .map_err(git2_context("cannot list refs"))?
    {
        let reference = reference.map_err(git2_context("cannot read a ref"))?;
        if let (Ok(name), Some(target)) = (reference.name(), reference.target()) {
            refs.push((name.to_string(), CommitId::of(target)));
        }
    }
    refs.sort();
    Ok(refs)
}

/// Deletes a local branch; `Ok(false)` when it did not exist.
pub fn delete_branch(repo: &RepoPaths, branch: &str) -> Result<bool> {
    delete_ref(repo, &format!("refs/heads/{branch}"))
}

/// Deletes ref `name` (full name); `Ok(false)` when it did not exist.
pub fn delete_ref(repo: &RepoPaths, name: &str) -> Result<bool> {
    let git = repo.open()?;
    match git.find_reference(name) {
        Ok(mut reference) => {
            reference
                .delete()
                .map_err(git2_context(format!("cannot delete {name}")))?;
            Ok(true)
        }
        Err(error) if error.code() == git2::ErrorCode::NotFound => Ok(false),
        Err(source) => Err(GitError::Git2 {
            context: format!("cannot read {name}"),
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

/// Whether commits `a` and `b` hold the same tree (the same files, whatever their history).
pub fn same_tree(repo: &RepoPaths, a: &str, b: &str) -> Result<bool> {
    let git = repo.open()?;
    let tree = |sha: &str| {
        git.find_commit(oid(sha)?)
            .map(|commit| commit.tree_id())
            .map_err(git2_context(format!("cannot read commit {sha}")))
    };
    Ok(tree(a)? == tree(b)?)
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

/// A path-valued config setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigPath {
    /// The value as written.
    pub raw: String,
    /// The path (`~` expanded; relative paths as written).
    pub path: PathBuf,
    /// Whether it is set in this repository's own config (not the user's or the system's).
    pub in_repository: bool,
}

/// A path-valued config key of `repo` (all scopes), if set.
pub fn config_path(repo: &RepoPaths, key: &str) -> Result<Option<ConfigPath>> {
    let git = repo.open()?;
    let config = git
        .config()
        .and_then(|mut config| config.snapshot())
        .map_err(git2_context("cannot read git config"))?;
    let Ok(entry) = config.get_entry(key) else {
        return Ok(None);
    };
    let Ok(raw) = entry.value().map(str::to_string) else {
        return Ok(None);
    };
    let in_repository = matches!(
        entry.level(),
        git2::ConfigLevel::Local | git2::ConfigLevel::Worktree | git2::ConfigLevel::App
    );
    let path = config.get_path(key).unwrap_or_else(|_| PathBuf::from(&raw));
    Ok(Some(ConfigPath {
        raw,
        path,
        in_repository,
    }))
}

/// The path of absolute `path` inside `repo`'s working tree, if it is there.
fn inside_workdir(repo: &RepoPaths, path: &Path) -> Option<PathBuf> {
    // The folder resolved, the name kept: a symlinked hook is judged where it sits, not where it points.
    let folder = path.parent()?.canonicalize().ok()?;
    let canonical = folder.join(path.file_name()?);
    canonical
        .strip_prefix(&repo.workdir)
        .ok()
        .map(Path::to_path_buf)
}

/// Whether absolute `path` lies inside `repo`'s working tree and git does not ignore it (files there are part of
/// the project, or would show up as untracked).
pub fn in_project(repo: &RepoPaths, path: &Path) -> Result<bool> {
    let Some(relative) = inside_workdir(repo, path) else {
        return Ok(false);
    };
    if relative.as_os_str().is_empty() {
        return Ok(true);
    }
    let git = repo.open()?;
    // Asked for a file inside: a `folder/` pattern matches it even before the folder exists.
    let ignored = git
        .is_path_ignored(relative.join("hook"))
        .map_err(git2_context("cannot read .gitignore"))?;
    Ok(!ignored)
}

/// Whether `path` (absolute) is a file tracked in `repo`'s index.
pub fn is_tracked(repo: &RepoPaths, path: &Path) -> Result<bool> {
    let Some(relative) = inside_workdir(repo, path) else {
        return Ok(false);
    };
    let git = repo.open()?;
    let index = git.index().map_err(git2_context("cannot read the index"))?;
    Ok(index.get_path(&relative, 0).is_some())
}

/// Who the user is, for records such as a forced acceptance: git's `user.name <user.email>`, else `$USER`.
pub fn user_identity(repo: &RepoPaths) -> String {
    let from_git = repo.open().ok().and_then(|git| {
        let sig = git.signature().ok()?;
        Some(format!("{} <{}>", sig.name().ok()?, sig.email().ok()?))
    });
    from_git
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "unknown user".to_string())
}

/// Runs git in `dir` (tests of other modules build repositories with it); panics on failure.
#[cfg(test)]
pub fn run_git_for_tests(dir: &Path, args: &[&str]) -> String {
    run_git(dir, args).unwrap()
}

mod bundle;
mod change;
mod diff;
mod merge;
mod snapshot;
mod tree;
mod worktree;

pub use bundle::*;
pub use change::*;
pub use diff::*;
pub use merge::*;
pub use snapshot::*;
pub use tree::*;
pub use worktree::*;

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
