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

use super::PipelineError;
use crate::git::{self, GitError, RepoPaths};
use crate::input::InputError;
use crate::policy::{Policy, Trees};
use crate::sandbox::{self, overlay};

/// The environment variable that overrides `run.trees` (`auto`, `copy-on-write`, `checkout`).
pub const TREES_ENV: &str = "CCFAN_TREES";

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

/// Whether workers will see the shared layer read-only: only bubblewrap binds it so (a read-only mount refuses
/// even `chmod`); under Landlock or no sandbox a worker could change the layer every tree shares.
fn read_only_layer(policy: &Policy) -> Result<(), String> {
    match sandbox::select(policy.sandbox.backend) {
        Ok(selected) if matches!(selected.backend, sandbox::Backend::Bubblewrap(_)) => Ok(()),
        Ok(selected) => Err(format!(
            "workers run under {}, and copy-on-write trees need bubblewrap (the layer all trees share must be \
             read-only to every worker)",
            selected.backend.name()
        )),
        Err(error) => Err(error.to_string()),
    }
}

/// [`overlay::probe`] once per folder and process, in the folder or the closest one above it that exists
/// (nothing is made before the run starts).
fn probe_once(folder: &Path) -> Result<(), String> {
    static PROBED: std::sync::Mutex<Vec<(PathBuf, Result<(), String>)>> =
        std::sync::Mutex::new(Vec::new());
    let dir = folder
        .ancestors()
        .find(|dir| dir.is_dir())
        .ok_or_else(|| format!("no folder of {} exists", folder.display()))?
        .to_path_buf();
    let mut probed = PROBED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, known)) = probed.iter().find(|(seen, _)| *seen == dir) {
        return known.clone();
    }
    let result = overlay::probe(&dir);
    probed.push((dir, result.clone()));
    result
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
    let layers = crate::paths::StateLayout::of(repo).layers();
    let probed = overlay::option_safe(folder)
        .and_then(|_| overlay::option_safe(&layers))
        .map_err(|error| error.to_string())
        .and_then(|_| read_only_layer(policy))
        .and_then(|()| probe_once(folder));
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
    view::mount_new(path, &record)?;
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

mod files;
mod view;
pub use files::{CowBase, TreeFiles};
use view::{RECORD, Record, cow_dir};
pub use view::{changed_paths, ensure, layer_below, remove, reset};

#[cfg(test)]
mod tests;
