//! Stage 1b, the prepared base layer: one export of the base commit, plus the `.worktreeinclude` files, plus the
//! policy's `[setup]` command (`npm ci`, `uv sync`, `cargo build --tests` …) run there once, sandboxed. What setup
//! leaves that git ignores — dependencies, build caches — is copied into every task tree and verification checkout,
//! so each starts warm instead of paying the install per attempt.
//!
//! A layer is keyed by the setup command and the content of its `inputs` (lockfiles, manifests) at the base
//! commit: a later run whose inputs did not change reuses it, whatever its base. It is prepared in a scratch folder
//! and published by one rename once setup succeeded, so a layer whose preparation was killed is never handed to a
//! task; the next run prepares it again.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::PipelineError;
use super::include::Includes;
use crate::git::{self, RepoPaths};
use crate::ids::CommitId;
use crate::paths::StateLayout;
use crate::policy::{Policy, SetupSettings};
use crate::sandbox::{self, Launch, SandboxPolicy, Tree};
use crate::secrets::RulePack;

/// The file that marks a layer complete, with what it holds.
const READY: &str = "ready.json";
/// The base's index, with the stat data of the layer's tree.
const INDEX: &str = "index";

/// A prepared layer: where its tree is, and the ignored files setup left there for the task trees.
#[derive(Debug, Clone)]
pub struct Layer {
    /// Its key (hex).
    pub key: String,
    /// Its tree.
    pub tree: PathBuf,
    /// What setup left that git ignores (copied into each task tree).
    pub outputs: Includes,
    /// Whether an earlier run prepared it.
    pub reused: bool,
    /// The commit whose files the tree holds (besides setup's ignored outputs).
    pub base: CommitId,
    /// The index of `base` with the stat data of the tree's files (layers prepared before ccfan kept one have
    /// none, and serve checkouts only).
    pub index: Option<PathBuf>,
}

/// What `ready.json` records.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ready {
    key: String,
    base: CommitId,
    command: Vec<String>,
    outputs: Vec<PathBuf>,
}

/// Where this repository's layers live.
pub fn layers_dir(repo: &RepoPaths) -> PathBuf {
    StateLayout::of(repo).root.join("layers")
}

/// The key of a layer: the setup command, then each input's path and blob at `base` (or that it is missing). With
/// no setup, one key: the plain export of a base, for copy-on-write trees.
fn key(
    repo: &RepoPaths,
    setup: Option<&SetupSettings>,
    base: &CommitId,
) -> Result<String, PipelineError> {
    let mut hash = Sha256::new();
    let Some(setup) = setup else {
        hash.update(b"no setup");
        return Ok(hex(&hash.finalize()[..8]));
    };
    for word in &setup.argv {
        hash.update(word.as_bytes());
        hash.update([0]);
    }
    for input in &setup.inputs {
        let blob = git::blob_at(repo, base, input)?;
        hash.update(input.as_bytes());
        hash.update([1]);
        match blob {
            Some(bytes) => hash.update(Sha256::digest(&bytes)),
            None => hash.update(b"missing"),
        }
    }
    Ok(hex(&hash.finalize()[..8]))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The layer for `input`'s base if one is ready; setup is not run. With no `[setup]`, the plain export, when a
/// copy-on-write run made one.
pub fn ready(input: &LayerInput<'_>) -> Option<Layer> {
    let key = key(input.repo, input.policy.setup.as_ref(), input.base).ok()?;
    read_ready(&layers_dir(input.repo).join(&key), &key)
}

/// The layer ready for the repository's HEAD, if an earlier run prepared one (setup is not run here): what the
/// hooks gate and `ccfan verify` copy into their checkouts.
pub fn ready_for(repo: &RepoPaths, policy: &Policy) -> Option<Layer> {
    let head = git::resolve_commit(repo, "HEAD").ok()?;
    let key = key(repo, policy.setup.as_ref(), &head).ok()?;
    read_ready(&layers_dir(repo).join(&key), &key)
}

/// `ccfan gc`, with no run going: removes half-prepared layers, kept logs of failed setups, and every published
/// layer but the one used last (the next run most likely reuses it) and those `below` copy-on-write trees still
/// there. Returns how many folders and files went.
pub fn collect(repo: &RepoPaths, below: &std::collections::HashSet<String>) -> usize {
    let Ok(entries) = std::fs::read_dir(layers_dir(repo)) else {
        return 0;
    };
    let mut published = Vec::new();
    let mut removed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let ready = path.join(READY);
        // Only a folder named by a key is a published layer; half-prepared (`.tmp-`), set-aside (`.broken-`)
        // folders and kept setup logs all go.
        let name = entry.file_name();
        let keyed = name.len() == 16
            && name
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_hexdigit());
        match std::fs::metadata(&ready).and_then(|meta| meta.modified()) {
            Ok(used) if keyed => published.push((used, path)),
            Ok(_) | Err(_) => {
                let gone = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                removed += usize::from(gone.is_ok());
            }
        }
    }
    published.sort();
    published.pop();
    for (_, path) in published {
        let key = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned());
        if key.is_some_and(|key| below.contains(&key)) {
            continue;
        }
        // A layer some process is filling a tree from holds a shared lock on its record: left for next time.
        let in_use =
            std::fs::File::open(path.join(READY)).map_or(true, |record| record.try_lock().is_err());
        if in_use {
            continue;
        }
        removed += usize::from(std::fs::remove_dir_all(&path).is_ok());
    }
    removed
}

/// What a layer needs to be prepared.
pub struct LayerInput<'a> {
    /// The repository.
    pub repo: &'a RepoPaths,
    /// The policy (its `[setup]` and sandbox settings).
    pub policy: &'a Policy,
    /// The secret rules (the setup log is scrubbed).
    pub rules: &'a RulePack,
    /// The run's base commit.
    pub base: &'a CommitId,
    /// The `.worktreeinclude` files.
    pub includes: &'a Includes,
    /// Ctrl-C.
    pub cancel: &'a AtomicBool,
}

/// The layer for the run's base: reused when one with the same key is ready, else prepared now (setup runs).
/// `None` when the policy has no `[setup]` and `copy_on_write` is off (a plain export serves only copy-on-write
/// trees). A failing setup is [`PipelineError::SetupFailed`].
pub fn prepare(
    input: &LayerInput<'_>,
    copy_on_write: bool,
) -> Result<Option<Layer>, PipelineError> {
    let setup = input.policy.setup.as_ref();
    if setup.is_none() && !copy_on_write {
        return Ok(None);
    }
    let key = key(input.repo, setup, input.base)?;
    let dir = layers_dir(input.repo);
    let published = dir.join(&key);
    // A layer without an index (from before ccfan kept one) cannot carry copy-on-write trees: made again.
    let usable = |layer: &Layer| !copy_on_write || layer.index.is_some();
    if let Some(layer) = read_ready(&published, &key).filter(usable) {
        // Marked used, so `gc` keeps the layer the latest run needed.
        let _ = std::fs::File::options()
            .write(true)
            .open(published.join(READY))
            .and_then(|file| file.set_modified(std::time::SystemTime::now()));
        return Ok(Some(layer));
    }
    if published.exists() {
        // A layer folder that does not read as complete (a crash mid-write): set aside for gc, and built again.
        let aside = dir.join(format!("{key}.broken-{}", crate::util::random_hex(4)));
        let _ = std::fs::rename(&published, &aside);
    }
    let scratch = dir.join(format!("{key}.tmp-{}", crate::util::random_hex(4)));
    let made = build(input, setup, &key, &scratch);
    if let Err(error) = made {
        let _ = std::fs::remove_dir_all(&scratch);
        return Err(error);
    }
    // Published in one step; another run that published the same key first wins, and this copy goes.
    if std::fs::rename(&scratch, &published).is_err() {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    let mut layer = read_ready(&published, &key).ok_or_else(|| PipelineError::Io {
        context: format!("the layer {} was not published", published.display()),
        source: std::io::Error::other("missing ready.json"),
    })?;
    layer.reused = false;
    Ok(Some(layer))
}

/// A published layer, if `folder` holds a complete one with this key.
/// The layer holds a shared lock on its record while in use; `gc` removes only layers it can lock exclusively.
fn read_ready(folder: &Path, key: &str) -> Option<Layer> {
    let record = folder.join(READY);
    let lock = std::fs::File::open(&record).ok()?;
    lock.try_lock_shared().ok()?;
    let bytes = crate::util::read_regular(&record, 64 << 20).ok()?;
    let ready: Ready = serde_json::from_slice(&bytes).ok()?;
    let index = folder.join(INDEX);
    (ready.key == key).then(|| Layer {
        key: ready.key,
        tree: folder.join("tree"),
        outputs: Includes::held(folder.join("tree"), ready.outputs, lock),
        reused: true,
        base: ready.base,
        index: index.is_file().then_some(index),
    })
}

/// Checks the base out into `scratch/tree` (its index, with stat data, beside it), copies the includes in, runs
/// setup there, puts back any tracked file setup changed (the tree must show exactly the base plus what git
/// ignores, since copy-on-write trees see it whole) and writes `ready.json`.
fn build(
    input: &LayerInput<'_>,
    setup: Option<&SetupSettings>,
    key: &str,
    scratch: &Path,
) -> Result<(), PipelineError> {
    let tree = scratch.join("tree");
    let index = scratch.join(INDEX);
    git::checkout_into(input.repo, input.base, &tree, &index)?;
    if let Some(setup) = setup {
        input.includes.copy_into(&tree)?;
        let log = scratch.join("setup.log");
        run_setup(input, setup, &tree, &log)?;
        // The included files (`.env` …) served setup; they are not the layer's to keep or hand on: every tree
        // gets them fresh from the user's checkout, so one removed there is gone everywhere.
        for included in input.includes.files() {
            let _ = std::fs::remove_file(tree.join(included));
        }
        git::restore_tracked(input.repo, input.base, &tree, &index)?;
    }
    let included: std::collections::HashSet<&PathBuf> = input.includes.files().iter().collect();
    let outputs = git::ignored_in(input.repo, &tree, input.base)?
        .into_iter()
        .filter(|path| !included.contains(path))
        .collect();
    let ready = Ready {
        key: key.to_string(),
        base: input.base.clone(),
        command: setup.map(|setup| setup.argv.clone()).unwrap_or_default(),
        outputs,
    };
    let json = serde_json::to_vec_pretty(&ready).map_err(|error| PipelineError::Io {
        context: "cannot write the layer's record".to_string(),
        source: std::io::Error::other(error),
    })?;
    // On disk before the folder is published: a crash never leaves a published layer with a partial record.
    std::fs::File::create(scratch.join(READY))
        .and_then(|mut file| {
            std::io::Write::write_all(&mut file, &json)?;
            file.sync_all()
        })
        .map_err(|source| PipelineError::Io {
            context: format!("cannot write {}", scratch.join(READY).display()),
            source,
        })
}

/// Runs the setup command in `tree`, sandboxed with `tree` writable (and the profile's extra folders); a failure
/// keeps its log beside the layers and says where.
fn run_setup(
    input: &LayerInput<'_>,
    setup: &SetupSettings,
    tree: &Path,
    log: &Path,
) -> Result<(), PipelineError> {
    let settings = &input.policy.sandbox;
    let mut policy = SandboxPolicy::for_command(
        settings,
        Tree {
            worktree: tree,
            common_dir: &input.repo.common_dir,
            checkout: &input.repo.workdir,
            outbox: None,
        },
        setup.timeout,
        input.policy.log_limit,
    );
    policy.network = setup.network;
    policy.writable.extend(setup.writable.iter().cloned());
    let env = sandbox::command_env(settings, &[("CCFAN_SETUP".to_string(), "1".to_string())]);
    let token = format!("setup-{}", crate::util::random_hex(6));
    let outcome = sandbox::run(
        Launch {
            argv: &setup.argv,
            cwd: tree,
            env,
            log_path: log,
            token: &token,
            cancel: input.cancel,
            sandbox: &policy,
            stream: None,
        },
        |_| {},
    )
    .map_err(|error| PipelineError::Io {
        context: format!("cannot run the setup command `{}`", setup.argv.join(" ")),
        source: std::io::Error::other(error.to_string()),
    })?;
    let raw = super::verify::secrets::scrub_log(input.rules, log, &[]);
    if matches!(outcome.exit, crate::model::ExitStatus::Code { code: 0 }) {
        return Ok(());
    }
    let kept =
        layers_dir(input.repo).join(format!("setup-failed-{}.log", crate::util::random_hex(3)));
    let _ = std::fs::copy(log, &kept);
    Err(PipelineError::SetupFailed {
        command: setup.argv.join(" "),
        exit: outcome.exit.to_string(),
        tail: super::verify::commands::tail(log, &raw),
        log: kept,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gc_leaves_a_layer_that_is_being_copied_from() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("a.txt"), "a").unwrap();
        git::init_with_commit(&root, "base").unwrap();
        let repo = git::discover(&root).unwrap();
        let layers = layers_dir(&repo);
        let base = git::resolve_commit(&repo, "HEAD").unwrap();
        for key in ["00000000000000aa", "00000000000000bb"] {
            let folder = layers.join(key);
            std::fs::create_dir_all(folder.join("tree")).unwrap();
            let ready = Ready {
                key: key.to_string(),
                base: base.clone(),
                command: vec!["true".to_string()],
                outputs: Vec::new(),
            };
            std::fs::write(folder.join(READY), serde_json::to_vec(&ready).unwrap()).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::fs::create_dir_all(layers.join("00000000000000aa.tmp-1234")).unwrap();
        // The older layer is in use: gc removes only the half-prepared folder.
        let held = read_ready(&layers.join("00000000000000aa"), "00000000000000aa").unwrap();
        let none = std::collections::HashSet::new();
        assert_eq!(collect(&repo, &none), 1);
        assert!(
            layers.join("00000000000000aa").exists() && layers.join("00000000000000bb").exists()
        );
        drop(held);
        // A layer below a copy-on-write tree stays whatever its lock says.
        let below = std::collections::HashSet::from(["00000000000000aa".to_string()]);
        assert_eq!(collect(&repo, &below), 0);
        assert_eq!(
            collect(&repo, &none),
            1,
            "once released, the older layer goes"
        );
        assert!(
            !layers.join("00000000000000aa").exists() && layers.join("00000000000000bb").exists()
        );
    }
}
