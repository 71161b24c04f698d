//! Stage 2's trees, in either mode: a task tree or a verification checkout is a copy-on-write view of the prepared
//! base layer where this machine can mount one (made in milliseconds, holding only what its worker changed, warm with
//! setup's dependencies), else a full checkout as `git worktree add` makes it — never silently: the run and
//! `ccfan doctor` say which, and why.
//!
//! A copy-on-write tree at `<folder>/<name>` keeps its private layer in `<folder>/.cow/<name>/` (`upper`, `work`,
//! and `tree.json` saying which layer is below). The worktree's `.git` link lives in the upper layer, so git sees
//! an ordinary worktree through the mount. A mount that went away (a reboot) is made again before anything reads
//! the tree; removing the tree unmounts it first.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::PipelineError;
use super::include::TreeFiles;
use super::layer::Layer;
use crate::git::{self, GitError, RepoPaths};
use crate::ids::CommitId;
use crate::input::InputError;
use crate::policy::{Policy, Trees};
use crate::sandbox::overlay::{self, Change, Overlay};

/// The environment variable that overrides `run.trees` (`auto`, `copy-on-write`, `checkout`).
pub const TREES_ENV: &str = "CCFAN_TREES";

/// The record of a copy-on-write tree, beside its upper layer.
const RECORD: &str = "tree.json";

/// How trees are made here, and why when it is not the way the setting asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mode {
    /// Copy-on-write views of the base layer (else full checkouts).
    pub copy_on_write: bool,
    /// Why copy-on-write was wanted (`auto`) but is not available, for the run's warning and `ccfan doctor`.
    pub fallback: Option<String>,
}

/// The tree setting in force: `CCFAN_TREES` when set, else the policy's `run.trees`.
fn setting(policy: &Policy) -> Result<Trees, InputError> {
    let Some(value) = std::env::var_os(TREES_ENV) else {
        return Ok(policy.trees);
    };
    match value.to_string_lossy().as_ref() {
        "auto" => Ok(Trees::Auto),
        "copy-on-write" => Ok(Trees::CopyOnWrite),
        "checkout" => Ok(Trees::Checkout),
        other => Err(InputError::new(
            Path::new("<environment>"),
            format!("`{other}` is not a tree mode"),
        )
        .key(TREES_ENV)
        .fix("set CCFAN_TREES to auto, copy-on-write or checkout, or unset it to use run.trees")),
    }
}

/// Chooses the mode for trees made under `folder`: copy-on-write when the setting allows it, the folder and the
/// repository's layers can be named in mount options, and an overlay mounts there; else checkouts.
/// `copy-on-write` forced where none can be made is bad input.
pub fn select(repo: &RepoPaths, policy: &Policy, folder: &Path) -> Result<Mode, PipelineError> {
    let wanted = setting(policy)?;
    if wanted == Trees::Checkout {
        return Ok(Mode {
            copy_on_write: false,
            fallback: None,
        });
    }
    // Probed in the folder, or the closest folder above it that exists (nothing is made before the run starts).
    let layers = super::layer::layers_dir(repo);
    let probed = overlay::option_safe(folder)
        .and_then(|_| overlay::option_safe(&layers))
        .map_err(|error| error.to_string())
        .and_then(|_| {
            folder
                .ancestors()
                .find(|dir| dir.is_dir())
                .ok_or_else(|| format!("no folder of {} exists", folder.display()))
        })
        .and_then(overlay::probe);
    match (probed, wanted) {
        (Ok(()), _) => Ok(Mode {
            copy_on_write: true,
            fallback: None,
        }),
        (Err(why), Trees::Auto) => Ok(Mode {
            copy_on_write: false,
            fallback: Some(format!(
                "task trees are full checkouts, not copy-on-write views of the base layer: {why}"
            )),
        }),
        (Err(why), Trees::CopyOnWrite | Trees::Checkout) => Err(InputError::new(
            Path::new(crate::policy::POLICY_FILE),
            format!("copy-on-write trees were asked for, but cannot be made here: {why}"),
        )
        .key("run.trees")
        .fix("run ccfan where it may mount overlays (root or CAP_SYS_ADMIN), or set trees = \"auto\" or \"checkout\" (CCFAN_TREES overrides it)")
        .into()),
    }
}

/// The layer below copy-on-write trees: its tree, the index of its commit, and that commit.
#[derive(Debug, Clone)]
pub struct CowBase {
    tree: PathBuf,
    index: PathBuf,
    commit: CommitId,
    key: String,
}

impl CowBase {
    /// The layer as a base for copy-on-write trees, when it keeps an index.
    pub fn of(layer: &Layer) -> Option<CowBase> {
        Some(CowBase {
            tree: layer.tree.clone(),
            index: layer.index.clone()?,
            commit: layer.base.clone(),
            key: layer.key.clone(),
        })
    }
}

/// What `tree.json` records.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    lower: PathBuf,
    commit: CommitId,
    layer: String,
}

/// Where a tree at `path` keeps its private layer.
fn cow_dir(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default();
    path.parent().unwrap_or(path).join(".cow").join(name)
}

fn read_record(path: &Path) -> Option<Record> {
    let bytes = crate::util::read_regular(&cow_dir(path).join(RECORD), 1 << 20).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The key of the layer below the copy-on-write tree at `path` (which `gc` must keep), if it is one.
pub fn layer_below(path: &Path) -> Option<String> {
    read_record(path).map(|record| record.layer)
}

/// How a new tree starts.
#[derive(Debug, Clone, Copy)]
pub enum Start<'a> {
    /// On a new branch (a task tree).
    Branch(&'a str),
    /// Detached (a verification checkout).
    Detached,
}

/// Makes a tree at `path` showing `commit` — a copy-on-write view when `files` carries a base layer for one, else a
/// full checkout — with the ignored files every tree gets. Returns the `.git` link content. On failure, removes
/// whatever it made (mount, folder, worktree record, branch).
pub fn make(
    repo: &RepoPaths,
    path: &Path,
    start: Start<'_>,
    commit: &str,
    files: &TreeFiles,
) -> Result<String, PipelineError> {
    let io = |context: String| move |source| GitError::Io { context, source };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(io(format!("cannot create {}", parent.display())))?;
    }
    let branch = match start {
        Start::Branch(branch) => Some(branch),
        Start::Detached => None,
    };
    let made = match files.cow_base() {
        Some(base) => make_cow(repo, path, branch, commit, base),
        None => git::register_empty_worktree(repo, path, branch, commit, false)
            .and_then(|link| git::checkout_worktree(path).map(|()| link))
            .map_err(PipelineError::from),
    }
    .and_then(|link| {
        files.copy_into(path)?;
        Ok(link)
    });
    if made.is_err() {
        let _ = remove(repo, path);
        if let Some(branch) = branch {
            let _ = git::delete_branch(repo, branch);
        }
    }
    made
}

fn make_cow(
    repo: &RepoPaths,
    path: &Path,
    branch: Option<&str>,
    commit: &str,
    base: &CowBase,
) -> Result<String, PipelineError> {
    let io = |context: String| move |source| GitError::Io { context, source };
    let link = git::register_empty_worktree(repo, path, branch, commit, true)?;
    let dir = cow_dir(path);
    let _ = std::fs::remove_dir_all(&dir);
    let (upper, work) = (dir.join("upper"), dir.join("work"));
    for folder in [&upper, &work] {
        std::fs::create_dir_all(folder)
            .map_err(io(format!("cannot create {}", folder.display())))?;
    }
    // The link lives in the private layer: the mount hides the folder's own files.
    std::fs::rename(path.join(".git"), upper.join(".git")).map_err(io(format!(
        "cannot move {} into its layer",
        path.join(".git").display()
    )))?;
    let record = Record {
        lower: base.tree.clone(),
        commit: base.commit.clone(),
        layer: base.key.clone(),
    };
    let json = serde_json::to_vec_pretty(&record).unwrap_or_default();
    std::fs::write(dir.join(RECORD), json)
        .map_err(io(format!("cannot write {}", dir.join(RECORD).display())))?;
    mount(path, &record)?;
    let admin = git::admin_dir(path, &link).ok_or_else(|| GitError::Io {
        context: format!(
            "{} does not name its admin folder",
            path.join(".git").display()
        ),
        source: std::io::Error::other("bad .git link"),
    })?;
    std::fs::copy(&base.index, admin.join("index"))
        .map_err(io(format!("cannot copy {}", base.index.display())))?;
    if commit != base.commit.as_str() {
        // Only the difference between the layer's commit and this one is written (into the private layer).
        git::move_tree(&admin, path, &base.commit, commit)?;
    }
    Ok(link)
}

fn mount(path: &Path, record: &Record) -> Result<(), GitError> {
    let dir = cow_dir(path);
    let (upper, work) = (dir.join("upper"), dir.join("work"));
    overlay::mount(&Overlay {
        lower: &record.lower,
        upper: &upper,
        work: &work,
        target: path,
    })
    .map_err(|error| GitError::Io {
        context: format!("cannot show the task tree {}", path.display()),
        source: std::io::Error::other(error.to_string()),
    })
}

/// Makes sure a copy-on-write tree at `path` is mounted (a reboot unmounts it; its layer stays on disk), so nothing
/// ever reads the empty folder below as the tree. Checkouts need nothing.
pub fn ensure(path: &Path) -> Result<(), GitError> {
    match read_record(path) {
        Some(record) if !overlay::is_mounted(path) => mount(path, &record),
        Some(_) | None => Ok(()),
    }
}

/// Moves a task tree's branch and files back to `sha` (see [`git::reset_worktree`]), mounted first if it is a
/// copy-on-write tree whose mount went away.
pub fn reset(path: &Path, sha: &str) -> Result<(), GitError> {
    ensure(path)?;
    git::reset_worktree(path, sha)
}

/// For a copy-on-write tree: the commit its lower layer holds and every path its upper layer says changed (what
/// recording reads). `None` for a checkout.
pub fn changed_paths(path: &Path) -> Result<Option<(CommitId, Vec<PathBuf>)>, GitError> {
    let Some(record) = read_record(path) else {
        return Ok(None);
    };
    ensure(path)?;
    let upper = cow_dir(path).join("upper");
    let changes = overlay::changes(&upper).map_err(|source| GitError::Io {
        context: format!("cannot read the changes in {}", upper.display()),
        source,
    })?;
    let paths = changes
        .into_iter()
        .map(|change| match change {
            Change::Written(path) | Change::Deleted(path) | Change::Replaced(path) => path,
        })
        .collect();
    Ok(Some((record.commit, paths)))
}

/// Removes the tree at `path` in either mode: unmounted first, then the worktree and its record, then its
/// private layer. Missing parts are fine.
pub fn remove(repo: &RepoPaths, path: &Path) -> Result<(), PipelineError> {
    let dir = cow_dir(path);
    let cow = dir.exists();
    if cow {
        overlay::unmount(path).map_err(|error| PipelineError::Io {
            context: format!("cannot remove the task tree {}", path.display()),
            source: std::io::Error::other(error.to_string()),
        })?;
        // The link goes back below, so git recognises the folder as the worktree it removes.
        let _ = std::fs::rename(dir.join("upper").join(".git"), path.join(".git"));
    }
    git::remove_worktree(repo, path)?;
    if cow {
        std::fs::remove_dir_all(&dir).map_err(|source| GitError::Io {
            context: format!("cannot remove {}", dir.display()),
            source,
        })?;
        if let Some(parent) = dir.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// A repository with every kind of entry, its layer (`checkout_into`), and the files a tree starts from.
    fn repo_and_layer(dir: &Path) -> (RepoPaths, CommitId, TreeFiles) {
        let root = dir.join("repo");
        std::fs::create_dir_all(root.join("src/deep/er")).unwrap();
        for (path, text) in [
            ("src/a.txt", "a\n"),
            ("src/b.txt", "b\n"),
            ("src/deep/er/c.txt", "c\n"),
            ("run.sh", "#!/bin/sh\n"),
            ("file-then-dir", "f\n"),
            (".gitignore", "*.log\nbuild/\n"),
        ] {
            std::fs::write(root.join(path), text).unwrap();
        }
        std::fs::create_dir_all(root.join("dir-then-file")).unwrap();
        std::fs::write(root.join("dir-then-file/x"), "x\n").unwrap();
        std::os::unix::fs::symlink("src/a.txt", root.join("link")).unwrap();
        git::init_with_commit(&root, "base").unwrap();
        // A tracked file the ignore rules match: recorded like any tracked file.
        std::fs::write(root.join("tracked.log"), "tracked\n").unwrap();
        git::run_git_for_tests(&root, &["add", "-f", "tracked.log"]);
        git::run_git_for_tests(&root, &["commit", "-q", "-m", "tracked log"]);
        let repo = git::discover(&root).unwrap();
        let base = git::resolve_commit(&repo, "HEAD").unwrap();
        let layer = dir.join("layer");
        git::checkout_into(&repo, &base, &layer.join("tree"), &layer.join("index")).unwrap();
        // What setup would leave: ignored output, present in every tree, never recorded.
        std::fs::create_dir_all(layer.join("tree/build")).unwrap();
        std::fs::write(layer.join("tree/build/out.o"), "obj\n").unwrap();
        let mut files = TreeFiles::default();
        files.set_cow_for_tests(CowBase {
            tree: layer.join("tree"),
            index: layer.join("index"),
            commit: base.clone(),
            key: "k".to_string(),
        });
        (repo, base, files)
    }

    fn change(tree: &Path) {
        std::fs::write(tree.join("src/a.txt"), "a, edited\n").unwrap();
        std::fs::rename(tree.join("src/b.txt"), tree.join("src/b2.txt")).unwrap();
        std::fs::remove_dir_all(tree.join("src/deep")).unwrap();
        std::fs::set_permissions(tree.join("run.sh"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::fs::remove_file(tree.join("link")).unwrap();
        std::os::unix::fs::symlink("src/b2.txt", tree.join("link")).unwrap();
        std::fs::remove_file(tree.join("file-then-dir")).unwrap();
        std::fs::create_dir_all(tree.join("file-then-dir")).unwrap();
        std::fs::write(tree.join("file-then-dir/inner"), "i\n").unwrap();
        std::fs::remove_dir_all(tree.join("dir-then-file")).unwrap();
        std::fs::write(tree.join("dir-then-file"), "now a file\n").unwrap();
        std::fs::create_dir_all(tree.join("empty/folder")).unwrap();
        std::fs::create_dir_all(tree.join("new/sub")).unwrap();
        std::fs::write(tree.join("new/sub/n.txt"), "new\n").unwrap();
        std::fs::write(
            tree.join("new/gone.txt"),
            "made, then removed next attempt\n",
        )
        .unwrap();
        std::fs::write(tree.join("debug.log"), "ignored\n").unwrap();
        std::fs::write(tree.join("tracked.log"), "tracked, edited\n").unwrap();
        std::fs::write(tree.join("build/out.o"), "rebuilt\n").unwrap();
    }

    fn record(tree: &Path, branch: &str, parent: &str) -> String {
        let link = git::git_link(tree).unwrap();
        let admin = git::admin_dir(tree, &link);
        let changed = changed_paths(tree).unwrap();
        let scope = match &changed {
            Some((lower, changed)) => git::Scope::Paths { lower, changed },
            None => git::Scope::Everything { trust_index: false },
        };
        let made =
            git::commit_worktree(tree, admin.as_deref(), branch, parent, "attempt", scope).unwrap();
        made.commit
            .map_or_else(|| parent.to_string(), |commit| commit.to_string())
    }

    fn tree_id(repo: &RepoPaths, commit: &str) -> String {
        let git = repo.open().unwrap();
        git.find_commit(git2::Oid::from_str(commit).unwrap())
            .unwrap()
            .tree_id()
            .to_string()
    }

    #[test]
    fn a_copy_on_write_tree_and_a_checkout_record_the_same_commits() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, base, cow_files) = repo_and_layer(dir.path());
        if let Err(why) = overlay::probe(dir.path()) {
            assert!(
                std::env::var_os("CCFAN_REQUIRE_TOOLS").is_none_or(|v| v != "1"),
                "CCFAN_REQUIRE_TOOLS=1: copy-on-write trees must work here: {why}"
            );
            eprintln!(
                "skipped: no overlay mounts here ({why}); run as root to test copy-on-write trees"
            );
            return;
        }
        let cow = dir.path().join("trees/cow");
        let plain = dir.path().join("trees/plain");
        make(&repo, &cow, Start::Branch("b-cow"), &base, &cow_files).unwrap();
        make(
            &repo,
            &plain,
            Start::Branch("b-plain"),
            &base,
            &TreeFiles::default(),
        )
        .unwrap();
        assert!(overlay::is_mounted(&cow));
        assert_eq!(
            std::fs::read_to_string(cow.join("build/out.o")).unwrap(),
            "obj\n"
        );
        // Nothing changed yet: nothing to record.
        assert_eq!(record(&cow, "b-cow", &base), base.as_str());
        std::fs::create_dir_all(plain.join("build")).unwrap();
        change(&cow);
        change(&plain);
        let (one_cow, one_plain) = (
            record(&cow, "b-cow", &base),
            record(&plain, "b-plain", &base),
        );
        assert_eq!(tree_id(&repo, &one_cow), tree_id(&repo, &one_plain));
        // A second attempt on top: a file the first made is removed (no whiteout: the layer never had it), another
        // goes back to the base's content.
        for tree in [&cow, &plain] {
            std::fs::remove_file(tree.join("new/gone.txt")).unwrap();
            std::fs::write(tree.join("src/a.txt"), "a\n").unwrap();
        }
        let (two_cow, two_plain) = (
            record(&cow, "b-cow", &one_cow),
            record(&plain, "b-plain", &one_plain),
        );
        assert_eq!(tree_id(&repo, &two_cow), tree_id(&repo, &two_plain));
        let files =
            git::run_git_for_tests(&repo.workdir, &["ls-tree", "-r", "--name-only", &two_cow]);
        assert_eq!(
            files,
            ".gitignore\ndir-then-file\nfile-then-dir/inner\nlink\nnew/sub/n.txt\nrun.sh\nsrc/a.txt\nsrc/b2.txt\ntracked.log\n"
        );
        // Removed: unmounted, no folder, no private layer, no worktree record; the layer is untouched.
        remove(&repo, &cow).unwrap();
        assert!(!cow.exists() && !cow_dir(&cow).exists());
        assert!(!git::list_worktrees(&repo).unwrap().contains(&cow));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("layer/tree/src/a.txt")).unwrap(),
            "a\n"
        );
    }

    #[test]
    fn a_tree_on_another_commit_than_its_layer_shows_that_commit_and_survives_an_unmount() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, _, files) = repo_and_layer(dir.path());
        if overlay::probe(dir.path()).is_err() {
            return;
        }
        std::fs::write(repo.workdir.join("src/a.txt"), "next\n").unwrap();
        std::fs::remove_file(repo.workdir.join("src/b.txt")).unwrap();
        git::run_git_for_tests(&repo.workdir, &["commit", "-q", "-am", "next"]);
        let next = git::resolve_commit(&repo, "HEAD").unwrap();
        let tree = dir.path().join("trees/t");
        make(&repo, &tree, Start::Branch("b-t"), &next, &files).unwrap();
        assert_eq!(
            std::fs::read_to_string(tree.join("src/a.txt")).unwrap(),
            "next\n"
        );
        assert!(!tree.join("src/b.txt").exists());
        // Nothing to record: the tree shows `next` exactly.
        assert_eq!(record(&tree, "b-t", &next), next.as_str());
        std::fs::write(tree.join("src/c.txt"), "work\n").unwrap();
        // As after a reboot: the mount is gone, the work is in the private layer, and `ensure` brings it back.
        overlay::unmount(&tree).unwrap();
        assert!(!tree.join("src").exists());
        git::prune_worktrees(&repo).unwrap();
        ensure(&tree).unwrap();
        assert_eq!(
            std::fs::read_to_string(tree.join("src/c.txt")).unwrap(),
            "work\n"
        );
        let made = record(&tree, "b-t", &next);
        let changed = git::run_git_for_tests(&repo.workdir, &["diff", "--name-only", &next, &made]);
        assert_eq!(changed, "src/c.txt\n");
        remove(&repo, &tree).unwrap();
    }
}
