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
use super::tree::TreeFiles;
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
    /// Whether it is a plain layer (no setup ran).
    pub command_empty: bool,
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
    StateLayout::of(repo).layers()
}

impl Layer {
    /// The layer as a base for copy-on-write trees, when it keeps an index.
    pub fn cow_base(&self) -> Option<super::tree::CowBase> {
        Some(super::tree::CowBase::new(
            self.tree.clone(),
            self.index.clone()?,
            self.base.clone(),
            self.key.clone(),
        ))
    }
}

/// What every tree of a run starts from: the user's includes, and the layer — below copy-on-write trees when
/// `copy_on_write` and it can carry them, else its outputs copied in.
pub fn tree_files(includes: Includes, layer: Option<Layer>, copy_on_write: bool) -> TreeFiles {
    let cow = layer
        .as_ref()
        .filter(|_| copy_on_write)
        .and_then(Layer::cow_base);
    TreeFiles::new(includes, layer.map(|layer| layer.outputs), cow)
}

/// The most paths a tree may have to write to show its commit over a plain layer of another: beyond it, a plain
/// layer of the run's base is made (one checkout, reused by the runs after).
const CLOSE_ENOUGH: usize = 500;

/// The commit the layer tree `lower` (a published layer's `tree/`) holds, from its record.
pub fn base_of(lower: &Path) -> Option<CommitId> {
    let record = lower.parent()?.join(READY);
    let bytes = crate::util::read_regular(&record, 64 << 20).ok()?;
    serde_json::from_slice::<Ready>(&bytes)
        .ok()
        .map(|ready| ready.base)
}

/// The key of a layer: the setup command, then each input's path and blob at `base` (or that it is missing). With
/// no setup, the base itself: a plain layer of that commit, for copy-on-write trees.
fn key(
    repo: &RepoPaths,
    setup: Option<&SetupSettings>,
    base: &CommitId,
) -> Result<String, PipelineError> {
    let mut hash = Sha256::new();
    let Some(setup) = setup else {
        hash.update(b"no setup");
        hash.update(base.as_bytes());
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

/// The layer for `input`'s base if one is ready; setup is not run. With no `[setup]`, a plain layer close to the
/// base, when a copy-on-write run made one.
pub fn ready(input: &LayerInput<'_>) -> Option<Layer> {
    find(input.repo, input.policy.setup.as_ref(), input.base)
}

/// The ready layer for `base`: the one of its key; with no setup, else the plain layer closest to it (within
/// [`CLOSE_ENOUGH`] changed paths).
fn find(repo: &RepoPaths, setup: Option<&SetupSettings>, base: &CommitId) -> Option<Layer> {
    let key = key(repo, setup, base).ok()?;
    let dir = layers_dir(repo);
    if let Some(layer) = read_ready(&dir.join(&key), &key) {
        return Some(layer);
    }
    if setup.is_some() {
        return None;
    }
    let mut close: Vec<(usize, Layer)> = std::fs::read_dir(&dir)
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let layer = read_ready(&entry.path(), &name)?;
            let plain = layer.index.is_some() && layer.command_empty;
            let apart = git::changed_paths_between(repo, &layer.base, base).ok()?;
            (plain && apart <= CLOSE_ENOUGH).then_some((apart, layer))
        })
        .collect();
    close.sort_by_key(|(apart, _)| *apart);
    close.into_iter().next().map(|(_, layer)| layer)
}

/// The layer ready for the repository's HEAD, if an earlier run prepared one (setup is not run here): what the
/// hooks gate and `ccfan verify` copy into their checkouts.
pub fn ready_for(repo: &RepoPaths, policy: &Policy) -> Option<Layer> {
    let head = git::resolve_commit(repo, "HEAD").ok()?;
    find(repo, policy.setup.as_ref(), &head)
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
    // Whatever a mounted tree stands on stays, whatever its name or record says.
    let mounted = crate::sandbox::overlay::lowers_in_use();
    for entry in entries.flatten() {
        let path = entry.path();
        if mounted.iter().any(|lower| lower.starts_with(&path)) {
            continue;
        }
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
        // A layer some process is filling a tree from holds a shared lock on its record: left for next time. The
        // exclusive lock is held while the layer goes, so no one starts using it meanwhile.
        let Ok(record) = std::fs::File::open(path.join(READY)) else {
            continue;
        };
        if record.try_lock().is_err() {
            continue;
        }
        removed += usize::from(std::fs::remove_dir_all(&path).is_ok());
        drop(record);
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
    if let Some(layer) = find(input.repo, setup, input.base).filter(usable) {
        // Marked used, so `gc` keeps the layer the latest run needed.
        let _ = std::fs::File::options()
            .write(true)
            .open(layer.tree.with_file_name(READY))
            .and_then(|file| file.set_modified(std::time::SystemTime::now()));
        return Ok(Some(layer));
    }
    if published.exists() && !record_parses(&published) {
        // A layer folder that does not read as complete (a crash mid-write): set aside for gc, and built again.
        // (One that reads but cannot carry copy-on-write trees stays for the trees on it; `gc` collects it.)
        let aside = dir.join(format!("{key}.broken-{}", crate::util::random_hex(4)));
        let _ = std::fs::rename(&published, &aside);
    }
    let scratch = dir.join(format!("{key}.tmp-{}", crate::util::random_hex(4)));
    let made = build(input, setup, &key, &scratch);
    if let Err(error) = made {
        let _ = std::fs::remove_dir_all(&scratch);
        return Err(error);
    }
    // Published in one step; another run that published the same key first wins, and this copy goes. An old
    // layer of this key without an index (from before ccfan kept one) makes way: it was never below a tree.
    if published.exists() && read_ready(&published, &key).is_some_and(|layer| layer.index.is_none())
    {
        let aside = dir.join(format!("{key}.broken-{}", crate::util::random_hex(4)));
        let _ = std::fs::rename(&published, &aside);
    }
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

/// Writes the record of a plain layer of `base` in `folder` (tests that build a layer by hand).
#[cfg(test)]
pub fn write_record_for_tests(folder: &Path, key: &str, base: &CommitId) {
    let ready = Ready {
        key: key.to_string(),
        base: base.clone(),
        command: Vec::new(),
        outputs: Vec::new(),
    };
    std::fs::write(folder.join(READY), serde_json::to_vec(&ready).unwrap()).unwrap();
}

/// Whether `folder`'s record reads as a layer's (whoever holds it).
fn record_parses(folder: &Path) -> bool {
    crate::util::read_regular(&folder.join(READY), 64 << 20)
        .is_ok_and(|bytes| serde_json::from_slice::<Ready>(&bytes).is_ok())
}

/// A published layer, if `folder` holds a complete one with this key.
/// The layer holds a shared lock on its record while in use; `gc` removes only layers it can lock exclusively
/// (waited for here: it holds the lock only while it removes a layer, which then reads as gone).
fn read_ready(folder: &Path, key: &str) -> Option<Layer> {
    let record = folder.join(READY);
    let lock = std::fs::File::open(&record).ok()?;
    lock.lock_shared().ok()?;
    if !record.exists() {
        return None;
    }
    let bytes = crate::util::read_regular(&record, 64 << 20).ok()?;
    let ready: Ready = serde_json::from_slice(&bytes).ok()?;
    let index = folder.join(INDEX);
    (ready.key == key).then(|| Layer {
        key: ready.key,
        tree: folder.join("tree"),
        outputs: Includes::held(folder.join("tree"), ready.outputs, lock),
        reused: true,
        command_empty: ready.command.is_empty(),
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
