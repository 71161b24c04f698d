//! Stage 3 on another machine: a portable attempt. What a worker in a container or a pod needs goes out as files
//! ([`pack`]: the base as a git bundle of its files, the task file, the worker's order), a small ccfan runner
//! there ([`run`]) checks the base out, runs the worker, records what it changed the same way as at home (one
//! commit on the base, never the worker's own commits) and bundles it; what comes back is files too. [`receive`]
//! trusts none of it: the bundle only adds objects, its commit must sit right on the base and hold the tree the
//! manifest names, and only then does it get a ref under `refs/ccfan/` — after which the gate runs as for any
//! attempt.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};

use crate::git::{self, BundleOf, GitError, RepoPaths};
use crate::model::ExitStatus;

/// The base, as a bundle of its files (`attempt in`).
pub const BASE_BUNDLE: &str = "base.bundle";
/// The task file the worker reads (`CCFAN_TASK_FILE`).
pub const TASK_FILE: &str = "task.json";
/// The worker's order: its command, environment and limits.
pub const ORDER: &str = "order.json";
/// The attempt's secret rules (what the runner's echo redacts with).
pub const RULES: &str = "rules.toml";
/// The most bytes of secret rules read.
const MAX_RULES: u64 = 8 << 20;
/// The recorded change, as a bundle on top of the base (`attempt out`).
pub const ATTEMPT_BUNDLE: &str = "attempt.bundle";
/// What the runner recorded, and how the worker ended.
pub const MANIFEST: &str = "manifest.json";
/// The worker's output.
pub const LOG: &str = "worker.log";
/// The folder the worker hands files back in (`CCFAN_REPORT_FILE` is in it).
pub const OUTBOX: &str = "outbox";
/// The ref the base travels under.
const BASE_REF: &str = "refs/heads/ccfan-base";
/// The most bytes of a bundle read back (a change is rarely more than a few MiB; a whole base can be large).
pub const MAX_BUNDLE: u64 = 4 << 30;
/// The most bytes of a manifest or order read.
const MAX_JSON: u64 = 1 << 20;

/// What the worker runs, as the runner reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    /// Schema version.
    pub schema: u32,
    /// Run id.
    pub run_id: String,
    /// Task id.
    pub task_id: String,
    /// Attempt number.
    pub attempt: u32,
    /// The task's goal (the first line goes into the commit message).
    pub goal: String,
    /// The worker profile's name.
    pub worker: String,
    /// The base commit.
    pub base: String,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Variables set for the worker (the profile's and ccfan's; never a secret of the host).
    pub env: Vec<(String, String)>,
    /// Variables the worker gets from the runner's own environment, by name (what the engine was given to pass,
    /// API keys among them).
    pub pass_env: Vec<String>,
    /// Wall-clock limit, in seconds.
    pub timeout_secs: u64,
    /// Bytes of output kept.
    pub log_limit: u64,
    /// The agent, for an agent worker: its stream is kept apart and held to its limits, and its home comes and
    /// goes with the attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<super::portable_agent::AgentOrder>,
}

/// What the runner reports back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Schema version.
    pub schema: u32,
    /// The base it started from.
    pub base: String,
    /// The commit it recorded (`None`: nothing changed).
    pub commit: Option<String>,
    /// That commit's tree.
    pub tree: Option<String>,
    /// How the worker ended.
    pub exit: ExitStatus,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// Bytes of output the worker wrote.
    pub output_bytes: u64,
    /// Whether its log was capped.
    pub log_capped: bool,
    /// Git state the worker changed that the runner put back (its own commits, a moved HEAD).
    pub tampered: Vec<String>,
}

/// Why a portable attempt could not go out, run or come back.
#[derive(Debug, thiserror::Error)]
pub enum PortableError {
    /// A git operation failed, or a bundle was refused.
    #[error(transparent)]
    Git(#[from] GitError),
    /// A file could not be read or written.
    #[error("{context}")]
    Io {
        /// What ccfan was doing.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// What came back does not hold together.
    #[error("the attempt that came back is refused: {0}")]
    Refused(String),
    /// The worker could not be supervised.
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::SandboxError),
    /// The worker cannot run here (an agent the image lacks).
    #[error("{0}")]
    Worker(String),
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> PortableError {
    move |source| PortableError::Io { context, source }
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<(), PortableError> {
    let json = serde_json::to_vec_pretty(value).unwrap_or_default();
    std::fs::write(path, json).map_err(io(format!("cannot write {}", path.display())))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, PortableError> {
    let bytes = crate::util::read_regular(path, MAX_JSON)
        .map_err(io(format!("cannot read {}", path.display())))?;
    serde_json::from_slice(&bytes).map_err(|error| {
        PortableError::Refused(format!("{} is not valid: {error}", path.display()))
    })
}

/// Writes what a worker elsewhere needs into `dir`: the base's files as a bundle, the task file and the order.
pub fn pack(
    repo: &RepoPaths,
    order: &Order,
    task_file: &[u8],
    dir: &Path,
) -> Result<(), PortableError> {
    std::fs::create_dir_all(dir).map_err(io(format!("cannot create {}", dir.display())))?;
    git::write_bundle(
        repo,
        &order.base,
        BASE_REF,
        BundleOf::Snapshot,
        &dir.join(BASE_BUNDLE),
    )?;
    std::fs::write(dir.join(TASK_FILE), task_file).map_err(io(format!(
        "cannot write {}",
        dir.join(TASK_FILE).display()
    )))?;
    write_json(&dir.join(ORDER), order)
}

/// The runner, where the worker runs: checks the base out under `work`, runs the worker there, records its change
/// and writes the bundle, log and manifest into `output`. `Err` only when the runner itself cannot go on; how the
/// worker ended is in the manifest.
/// With `live`, what the worker writes is copied there as it is written (its log stays whole in `output`).
pub fn run(
    input: &Path,
    output: &Path,
    work: &Path,
    cancel: &AtomicBool,
    live: Option<Box<dyn std::io::Write + Send>>,
) -> Result<Manifest, PortableError> {
    let order: Order = read_json(&input.join(ORDER))?;
    let outbox = output.join(OUTBOX);
    std::fs::create_dir_all(&outbox).map_err(io(format!("cannot create {}", outbox.display())))?;
    // The git folder is beside the tree, not in it: the worker cannot reach or replace it through its tree.
    let (git_dir, tree, home) = (work.join("git"), work.join("tree"), work.join("home"));
    std::fs::create_dir_all(&home).map_err(io(format!("cannot create {}", home.display())))?;
    let base = git::checkout_snapshot(&input.join(BASE_BUNDLE), &git_dir, &tree, MAX_BUNDLE)?;
    if base != order.base {
        return Err(PortableError::Refused(format!(
            "the base bundle holds {base}, not the base {} the order names",
            order.base
        )));
    }
    let agent_home = work.join(super::portable_agent::HOME);
    if order.agent.is_some() {
        super::portable_agent::take_home(input, &agent_home)
            .map_err(io(format!("cannot make {}", agent_home.display())))?;
    }
    // An agent's stream goes along with its log, so its progress shows where ccfan runs while it works; both are
    // redacted with the attempt's secret rules first (the engine or cluster keeps what a container prints).
    let echo = live.map(|to| {
        let redact = echo_redactor(input);
        match order.agent {
            Some(_) => super::pod::Echo::start_with_events(
                output.join(LOG),
                output.join(super::portable_agent::EVENTS),
                to,
                Some(redact),
            ),
            None => super::pod::Echo::start(output.join(LOG), to, Some(redact)),
        }
    });
    let places = Places {
        input,
        output,
        outbox: &outbox,
        tree: &tree,
        home: &home,
        agent_home: &agent_home,
    };
    let outcome = run_worker(&order, &places, cancel);
    if let Some(echo) = echo {
        echo.finish();
    }
    let outcome = outcome?;
    if order.agent.is_some() {
        super::portable_agent::give_home(&agent_home, output)
            .map_err(io(format!("cannot write {}", output.display())))?;
    }
    let message =
        crate::pipeline::record::attempt_message(&crate::pipeline::record::MessageFacts {
            run_id: &order.run_id,
            task_id: &order.task_id,
            attempt: order.attempt,
            goal: &order.goal,
            worker: &order.worker,
            exit: Some(&outcome.exit),
        });
    let recorded = git::commit_worktree(
        &tree,
        Some(&git_dir),
        ATTEMPT_BRANCH,
        &order.base,
        &message,
        git::Scope::Everything { trust_index: false },
    )?;
    let tree_id = match &recorded.commit {
        Some(commit) => Some(
            git::write_bundle_from(
                &git_dir,
                commit,
                &format!("refs/heads/{ATTEMPT_BRANCH}"),
                BundleOf::Since(&order.base),
                &output.join(ATTEMPT_BUNDLE),
            )?
            .1,
        ),
        None => None,
    };
    let manifest = Manifest {
        schema: 1,
        base: order.base.clone(),
        commit: recorded.commit.map(|commit| commit.to_string()),
        tree: tree_id,
        exit: outcome.exit,
        duration_ms: u64::try_from(outcome.duration.as_millis()).unwrap_or(u64::MAX),
        output_bytes: outcome.output_bytes,
        log_capped: outcome.log_capped,
        tampered: recorded.tampered,
    };
    write_json(&output.join(MANIFEST), &manifest)?;
    Ok(manifest)
}

/// What the runner's echo passes each line through: redaction with the rules that came in with the attempt, or,
/// when they cannot be read, nothing of the line at all.
fn echo_redactor(input: &Path) -> super::pod::Redact {
    let rules = crate::util::read_regular(&input.join(RULES), MAX_RULES)
        .map_err(|error| error.to_string())
        .and_then(|bytes| {
            let text = String::from_utf8(bytes).map_err(|error| error.to_string())?;
            crate::secrets::RulePack::parse(Path::new(RULES), &text)
                .map_err(|error| error.to_string())
        });
    match rules {
        Ok(rules) => {
            let mut lines = crate::secrets::lines::LineRedactor::new(rules);
            Box::new(move |line: &str| lines.line(line))
        }
        Err(error) => {
            tracing::warn!("the worker's output is not echoed: its secret rules: {error}");
            Box::new(|_: &str| {
                "(not shown: the runner could not read the secret rules)".to_string()
            })
        }
    }
}

/// The branch the runner records on.
const ATTEMPT_BRANCH: &str = "ccfan-attempt";

/// Where the runner keeps what: the attempt's input and output, and its work.
struct Places<'a> {
    input: &'a Path,
    output: &'a Path,
    outbox: &'a Path,
    tree: &'a Path,
    home: &'a Path,
    agent_home: &'a Path,
}

/// Runs the order's worker in `tree`, with the runner's `PATH`, a home of its own, the order's variables, those it
/// passes by name from the runner's environment, and the `CCFAN_*` variables of any worker. An agent is probed
/// first (the image must have it, with every flag ccfan drives it with), gets its own home, and its stream is kept
/// apart and held to its limits.
fn run_worker(
    order: &Order,
    places: &Places<'_>,
    cancel: &AtomicBool,
) -> Result<crate::sandbox::Outcome, PortableError> {
    let Places {
        input,
        output,
        outbox,
        tree,
        home,
        agent_home,
    } = *places;
    let lossy = |path: &Path| path.to_string_lossy().into_owned();
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".to_string());
    let mut env: Vec<(String, String)> = vec![("PATH".into(), path), ("HOME".into(), lossy(home))];
    env.extend(
        order
            .pass_env
            .iter()
            .filter_map(|name| std::env::var(name).ok().map(|value| (name.clone(), value))),
    );
    // The task's base, unless the order names it (at home it is the task's base, not this attempt's start).
    env.push(("CCFAN_BASE_SHA".to_string(), order.base.clone()));
    env.extend(order.env.iter().cloned());
    env.extend([
        ("CCFAN_RUN_ID".to_string(), order.run_id.clone()),
        ("CCFAN_TASK_ID".to_string(), order.task_id.clone()),
        ("CCFAN_ATTEMPT".to_string(), order.attempt.to_string()),
        ("CCFAN_WORKTREE".to_string(), lossy(tree)),
        ("CCFAN_TASK_FILE".to_string(), lossy(&input.join(TASK_FILE))),
        (
            "CCFAN_REPORT_FILE".to_string(),
            lossy(&outbox.join(crate::paths::FINAL_REPORT)),
        ),
    ]);
    if let Some(agent) = &order.agent {
        env.push((agent.home_variable.clone(), lossy(agent_home)));
    }
    // Later entries win, as in a shell.
    let mut unique: Vec<(std::ffi::OsString, std::ffi::OsString)> = Vec::new();
    for (name, value) in env {
        unique.retain(|(known, _)| known.to_str() != Some(name.as_str()));
        unique.push((name.into(), value.into()));
    }
    let policy = crate::sandbox::SandboxPolicy::unconfined(
        tree,
        std::time::Duration::from_secs(order.timeout_secs),
        order.log_limit,
    );
    let token = format!(
        "{}-{}-{}-remote",
        order.run_id, order.task_id, order.attempt
    );
    let mut limits = match &order.agent {
        Some(agent) => {
            let probed = crate::agents::probe::probe(
                agent.agent,
                &agent.program,
                &unique,
                &crate::policy::SandboxSettings::unconfined(),
            );
            if let Some(problem) = probed.problem {
                return Err(PortableError::Worker(format!("in the image: {problem}")));
            }
            Some(super::portable_agent::Limits::new(agent, tree))
        }
        None => None,
    };
    let events = output.join(super::portable_agent::EVENTS);
    let outcome = crate::sandbox::run(
        crate::sandbox::Launch {
            argv: &order.argv,
            cwd: tree,
            env: unique,
            log_path: &output.join(LOG),
            token: &token,
            cancel,
            sandbox: &policy,
            stream: limits.as_mut().map(|limits| crate::sandbox::EventStream {
                path: &events,
                handler: limits,
            }),
        },
        |_| {},
    )?;
    if let Some(limits) = limits {
        limits.give_summary(output).map_err(io(format!(
            "cannot write {}",
            output.join(super::portable_agent::SUMMARY).display()
        )))?;
    }
    Ok(outcome)
}

/// What [`receive`] took in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The manifest. Its base, commit and tree are checked against the bundle; the rest (the worker's exit, its
    /// output size, what it tampered with) is what the runner reported, capped and cleaned.
    pub manifest: Manifest,
    /// The ref the attempt's commit is kept on (`None`: nothing changed).
    pub kept_on: Option<String>,
}

/// The most bytes of an attempt's bundle taken back (a change, not a base).
pub const MAX_ATTEMPT_BUNDLE: u64 = 512 << 20;

/// Takes back what the runner wrote into `output` for an attempt on `base`: the manifest is read (bounded), the
/// bundle goes through a quarantine ([`git::receive_commit`]: one commit right on `base`, its whole tree there),
/// and the commit and tree must be the manifest's. Only then is it kept on `ref_name` (under `refs/ccfan/`, which
/// must not exist yet).
pub fn receive(
    repo: &RepoPaths,
    output: &Path,
    base: &str,
    ref_name: &str,
) -> Result<Received, PortableError> {
    if !ref_name.starts_with("refs/ccfan/") || !git2::Reference::is_valid_name(ref_name) {
        return Err(PortableError::Refused(format!(
            "{ref_name} is not a ref under refs/ccfan/"
        )));
    }
    if git::ref_target(repo, ref_name)?.is_some() {
        return Err(PortableError::Refused(format!(
            "{ref_name} already exists; an attempt is never taken back over another"
        )));
    }
    let mut manifest: Manifest = read_json(&output.join(MANIFEST))?;
    clean(&mut manifest);
    if manifest.base != base {
        return Err(PortableError::Refused(format!(
            "it started from {}, not from the base {base}",
            manifest.base
        )));
    }
    let Some(commit) = manifest.commit.clone() else {
        return Ok(Received {
            manifest,
            kept_on: None,
        });
    };
    let received =
        git::receive_commit(repo, &output.join(ATTEMPT_BUNDLE), MAX_ATTEMPT_BUNDLE, base)?;
    if received.commit != commit {
        return Err(PortableError::Refused(format!(
            "its bundle carries {}, not the one commit {commit} its manifest names",
            received.commit
        )));
    }
    if manifest.tree.as_deref() != Some(received.tree.as_str()) {
        return Err(PortableError::Refused(format!(
            "its commit holds tree {}, not the tree {} the runner recorded",
            received.tree,
            manifest.tree.as_deref().unwrap_or("(none)")
        )));
    }
    git::set_ref(
        repo,
        ref_name,
        &commit,
        "ccfan: a portable attempt came back",
    )?;
    Ok(Received {
        manifest,
        kept_on: Some(ref_name.to_string()),
    })
}

/// The most entries of `tampered` kept, and characters of each.
const MAX_TAMPERED: (usize, usize) = (20, 300);

/// Caps and cleans what the runner reported as free text.
fn clean(manifest: &mut Manifest) {
    manifest.tampered.truncate(MAX_TAMPERED.0);
    for line in &mut manifest.tampered {
        *line = line
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_TAMPERED.1)
            .collect();
    }
}

/// The folders of one portable attempt under `root`: what goes in, what comes out, and the runner's work.
pub fn folders(root: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (root.join("in"), root.join("out"), root.join("work"))
}
