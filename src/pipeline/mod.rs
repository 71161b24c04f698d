//! The pipeline, in the order it runs: plan → fan out → run worker → record → verify → decide → integrate.
//! [`run`] is the one function that orders the stages; every transition is stored before it takes effect and
//! reported as an [`Event`]. [`control`] holds the follow-up commands (merge, rework, retry, accept, rollback,
//! cancel, salvage) that act on a stored run.

pub mod plan;
// stage 2
pub mod fan_out;
// stage 3
pub mod run_worker;
// stage 3b
pub mod record;
// stage 4
pub mod verify;
// stage 5
pub mod decide;
// stages 4 + 5 for one stored attempt
pub mod gate;
// stages 4 + 5 for a change no worker made (the local git hooks' gate)
pub mod change;
// stages 2-5 for one task, attempt after attempt
mod carry;
// stages 3-5 for one attempt: begin → run the worker → keep → judge
mod attempt;
// after the verdict: no task branch reaches a secret-bearing attempt
mod secret_branch;
// what each verdict leads to, and which follow-up each task state allows (pure)
pub mod lifecycle;
// stage 6
pub mod integrate;
// follow-up commands on a stored run
pub mod control;
// keeping and restoring every attempt
pub mod salvage;
// stopping tasks (Ctrl-C, `ccfan cancel`)
mod cancel;
// housekeeping (not a stage): remove finished worktrees after salvaging
pub mod gc;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::events::{Event, EventSink};
use crate::git::{self, GitError, RepoPaths};
use crate::input::InputError;
use crate::model::{RunState, RunView};
use crate::paths::{self, StateLayout};
use crate::policy::{self, Policy};
use crate::sandbox;
use crate::secrets::RulePack;
use crate::store::{NewRun, NewTask, RecoveredAttempt, Store, StoreError};
use crate::{status, tasks_file};
use carry::Carrier;

/// Errors that stop a command (a worker failing is a task state, not this).
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Bad input: exit code 2, nothing written.
    #[error(transparent)]
    Input(#[from] InputError),
    /// Git failed.
    #[error(transparent)]
    Git(#[from] GitError),
    /// The state database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file operation failed.
    #[error("{context}")]
    Io {
        /// What ccfan was doing.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A worker could not be supervised.
    #[error(transparent)]
    Worker(#[from] run_worker::RunWorkerError),
    /// The sandbox the policy asks for cannot run on this machine (exit code 2: install or configure it).
    #[error(transparent)]
    Sandbox(#[from] sandbox::Unavailable),
    /// An internal error that stopped a task, as kept for the end of the run: its text redacted (git errors name
    /// files a worker chose), and whether the disk was full.
    #[error("{message}")]
    Stopped {
        /// What went wrong, redacted.
        message: String,
        /// Whether the disk (or a quota) was full.
        disk_full: bool,
    },
}

impl PipelineError {
    /// Whether the user's input is at fault (exit code 2) rather than ccfan or the machine (exit code 3).
    pub fn is_bad_input(&self) -> bool {
        match self {
            PipelineError::Input(_) => true,
            PipelineError::Store(StoreError::NoSuchRun(_) | StoreError::NoSuchTask { .. }) => true,
            PipelineError::Git(
                GitError::NotARepo { .. }
                | GitError::UnsupportedFormat { .. }
                | GitError::Bare { .. }
                | GitError::Unmerged { .. },
            ) => true,
            PipelineError::Sandbox(_) => true,
            PipelineError::Stopped { .. }
            | PipelineError::Git(_)
            | PipelineError::Store(_)
            | PipelineError::Io { .. }
            | PipelineError::Worker(_) => false,
        }
    }
}

impl PipelineError {
    /// Whether the disk (or a quota) was full.
    pub fn is_disk_full(&self) -> bool {
        match self {
            PipelineError::Stopped { disk_full, .. } => *disk_full,
            other => crate::util::disk_full(other),
        }
    }
}

/// What `ccfan run` was asked to do, resolved from flags.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The repository.
    pub repo: RepoPaths,
    /// The tasks file.
    pub tasks_file: PathBuf,
    /// The policy file (default: `ccfan.toml` at the repository root, if present).
    pub policy_file: Option<PathBuf>,
    /// `--base`, overriding the policy.
    pub base: Option<String>,
    /// `--jobs`, overriding the policy.
    pub jobs: Option<usize>,
    /// `--into`: the branch to merge into (default: the branch checked out when the run starts).
    pub into: Option<String>,
    /// `--no-merge`: stop at accepted.
    pub no_merge: bool,
    /// The run id to use (chosen by whoever started this run, e.g. the MCP server); default: a new one.
    pub run_id: Option<String>,
}

/// Opens the repository's state, marking runs whose ccfan died as interrupted and killing what they left running.
/// A repository ccfan never ran in gets an empty state in memory: looking a run up creates no file.
pub fn open_state(repo: &RepoPaths) -> Result<(Store, Vec<RecoveredAttempt>), PipelineError> {
    let mut store = Store::open_or_empty(&StateLayout::of(repo).database())?;
    let recovered = recover(repo, &mut store)?;
    Ok((store, recovered))
}

/// Like [`open_state`], creating the database when there is none (a new run).
fn create_state(repo: &RepoPaths) -> Result<(Store, Vec<RecoveredAttempt>), PipelineError> {
    let layout = StateLayout::of(repo);
    let mut store = Store::open(&layout.database())?;
    layout.keep_reserve();
    let recovered = recover(repo, &mut store)?;
    Ok((store, recovered))
}

/// Marks runs whose ccfan died as interrupted and kills what they left running (for a long-lived reader, such
/// as the MCP server, that keeps its store open).
pub fn recover(
    repo: &RepoPaths,
    store: &mut Store,
) -> Result<Vec<RecoveredAttempt>, PipelineError> {
    // A task killed mid-merge landed only if its branch holds the landing commit; on the integration branch it is
    // still only accepted.
    let landed = |commit: &str, branch: &str| {
        !branch.starts_with("ccfan/")
            && git::ref_target(repo, &format!("refs/heads/{branch}"))
                .ok()
                .flatten()
                .is_some_and(|tip| git::is_ancestor(repo, commit, &tip).unwrap_or(false))
    };
    let recovered = store.recover(sandbox::proc::owner_alive, landed)?;
    for attempt in &recovered {
        let killed = sandbox::kill_leftovers(&attempt.token);
        if killed > 0 {
            tracing::warn!(run = %attempt.run_id, task = %attempt.task_id, killed, "killed processes left by an interrupted task");
        }
    }
    Ok(recovered)
}

/// Loads the policy and the tasks file and plans the run, without touching any state.
pub fn load_plan(request: &RunRequest) -> Result<(Policy, plan::Plan, RulePack), PipelineError> {
    let policy = load_policy(&request.repo, request.policy_file.as_deref())?;
    let tasks = tasks_file::read(&request.tasks_file)?;
    let plan = plan::plan(&tasks, &policy)?;
    let rules = load_rules(&policy)?;
    Ok((policy, plan, rules))
}

/// Loads the policy's secret rule pack (a built-in name or a rules file).
pub fn load_rules(policy: &Policy) -> Result<RulePack, InputError> {
    let rules = &policy.gate.rules;
    if rules.contains('/') || rules.ends_with(".toml") {
        RulePack::from_file(Path::new(rules))
    } else {
        RulePack::builtin(rules)
    }
}

/// The rule pack that redacts what a read-only command shows (the policy's, else the built-in default): showing
/// stored evidence must not fail because the policy has an error, and must never show a secret raw either.
pub fn display_rules(repo: &RepoPaths) -> Result<RulePack, InputError> {
    match load_policy(repo, None).map(|policy| load_rules(&policy)) {
        Ok(Ok(rules)) => Ok(rules),
        Ok(Err(_)) | Err(_) => RulePack::builtin("default"),
    }
}

/// Loads the repository's policy (`ccfan.toml` at its root, or `policy_file`).
pub fn load_policy(repo: &RepoPaths, policy_file: Option<&Path>) -> Result<Policy, PipelineError> {
    let path = match policy_file {
        Some(path) if !path.exists() => {
            return Err(InputError::new(path, "the policy file does not exist")
                .fix("pass an existing file with --policy, or leave it out to use ccfan.toml at the repository root")
                .into());
        }
        Some(path) => path.to_path_buf(),
        None => repo.workdir.join(policy::POLICY_FILE),
    };
    Ok(policy::load(Some(&path))?)
}

/// The policy as committed at HEAD (`ccfan.toml` at the root of HEAD's tree), for the git hooks: an uncommitted
/// edit cannot switch the gate off. No committed policy: the default preset, hooks checking secrets only.
pub fn load_committed_policy(repo: &RepoPaths) -> Result<Policy, PipelineError> {
    let Some(head) = git::head_commit(repo)? else {
        return Ok(policy::load_source(None)?);
    };
    let named = PathBuf::from(format!(
        "{}@HEAD",
        repo.workdir.join(policy::POLICY_FILE).display()
    ));
    let source = match git::blob_at(repo, &head, policy::POLICY_FILE)? {
        Some(bytes) if bytes.len() as u64 > crate::input::max_input_bytes() => {
            let cap = crate::input::max_input_bytes();
            return Err(crate::input::too_big(&named, "policy", cap).into());
        }
        Some(bytes) => Some((named, String::from_utf8_lossy(&bytes).into_owned())),
        None => None,
    };
    Ok(policy::load_source(source)?)
}

/// Runs the whole pipeline for one tasks file; returns the final view of the run.
pub fn run(
    request: &RunRequest,
    sink: &dyn EventSink,
    cancel: &AtomicBool,
) -> Result<RunView, PipelineError> {
    let (policy, plan, rules) = load_plan(request)?;
    let base_rev = request.base.clone().unwrap_or_else(|| policy.base.clone());
    let base_sha = git::resolve_commit(&request.repo, &base_rev).map_err(|error| match error {
        GitError::BadRevision { rev, .. } => PipelineError::Input(match &request.base {
            Some(_) => InputError::new(
                Path::new("<command line>"),
                format!("`{rev}` does not name a commit"),
            )
            .key("--base")
            .fix("pass a branch, tag or commit that exists, e.g. --base HEAD"),
            None => InputError::new(
                &request
                    .policy_file
                    .clone()
                    .unwrap_or_else(|| request.repo.workdir.join(policy::POLICY_FILE)),
                format!("`{rev}` does not name a commit"),
            )
            .key("run.base")
            .fix("set run.base to a branch, tag or commit that exists, or pass --base"),
        }),
        other => other.into(),
    })?;
    let jobs = request
        .jobs
        .or(policy.jobs)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from))
        .max(1);
    let target_branch = match &request.into {
        Some(branch) => Some(existing_branch(&request.repo, branch)?),
        None => git::current_branch(&request.repo)?,
    };
    let tasks_file = request
        .tasks_file
        .canonicalize()
        .unwrap_or_else(|_| request.tasks_file.clone());

    let worktree_folder = paths::worktree_base(&request.repo, policy.worktree_root.as_deref());
    if worktree_folder.starts_with(&request.repo.workdir) {
        return Err(InputError::new(
            &request.repo.workdir.join(policy::POLICY_FILE),
            format!(
                "worktrees would be made inside the repository's working tree ({})",
                worktree_folder.display()
            ),
        )
        .key("run.worktree_root")
        .fix("point run.worktree_root (or CCFAN_WORKTREE_ROOT) at a folder outside the repository, e.g. \"../worktrees\"")
        .into());
    }
    // Fail closed before anything is made: no worker starts outside the sandbox the policy asks for.
    let sandbox = sandbox::select(policy.sandbox.backend)?;
    let (mut store, _) = create_state(&request.repo)?;
    let run_id = match &request.run_id {
        Some(chosen) => {
            if !crate::util::is_valid_id(chosen)
                || !matches!(store.run(chosen), Err(StoreError::NoSuchRun(_)))
            {
                return Err(InputError::new(
                    Path::new("<command line>"),
                    format!("`{chosen}` cannot be a new run id (it is taken, or not a valid id)"),
                )
                .key("--run-id")
                .fix("leave --run-id out to get a fresh id")
                .into());
            }
            chosen.clone()
        }
        None => loop {
            let candidate = crate::util::new_run_id();
            if matches!(store.run(&candidate), Err(StoreError::NoSuchRun(_))) {
                break candidate;
            }
        },
    };
    let worktree_base = worktree_folder.join(&run_id);
    let branches: Vec<String> = plan
        .tasks
        .iter()
        .map(|t| paths::task_branch(&run_id, &t.id))
        .collect();
    let worktrees: Vec<PathBuf> = plan
        .tasks
        .iter()
        .map(|t| worktree_base.join(&t.id))
        .collect();
    let new_tasks: Vec<NewTask<'_>> = plan
        .tasks
        .iter()
        .zip(&branches)
        .zip(&worktrees)
        .map(|((spec, branch), worktree)| NewTask {
            spec,
            branch,
            worktree,
        })
        .collect();
    let owner_pid = std::process::id();
    let owner_start = sandbox::proc::start_token(owner_pid).unwrap_or_default();
    store.create_run(
        &NewRun {
            id: &run_id,
            base_sha: &base_sha,
            base_rev: &base_rev,
            target_branch: target_branch.as_deref(),
            tasks_file: &tasks_file,
            jobs,
            owner_pid,
            owner_start: &owner_start,
            no_merge: request.no_merge,
        },
        &new_tasks,
    )?;
    if let Some(fallback) = sandbox.fallback {
        sink.emit(Event::Warning { message: fallback });
    }
    if sandbox.backend == sandbox::Backend::None {
        sink.emit(Event::Warning {
            message: "workers run without a sandbox ([sandbox] backend = \"none\"): they can write anywhere \
                      this user can"
                .to_string(),
        });
    }
    for warning in unmatched_globs(&request.repo, &base_sha, &plan)? {
        sink.emit(Event::Warning { message: warning });
    }
    let overlaps = plan::overlaps(&plan.tasks);
    let serialize = policy.overlap == policy::Overlap::Serialize;
    if !overlaps.is_empty() {
        let pairs: Vec<String> = overlaps
            .iter()
            .map(|overlap| {
                format!(
                    "{} (`{}`) and {} (`{}`)",
                    plan.tasks[overlap.first].id,
                    overlap.first_glob,
                    plan.tasks[overlap.second].id,
                    overlap.second_glob
                )
            })
            .collect();
        let shown = pairs.iter().take(4).cloned().collect::<Vec<_>>().join(", ");
        let more = pairs.len().saturating_sub(4);
        sink.emit(Event::Warning {
            message: format!(
                "tasks may change the same files: {shown}{}; {}",
                if more > 0 { format!(" and {more} more pair(s)") } else { String::new() },
                if serialize {
                    "they run one after another (run.overlap = \"serialize\")"
                } else {
                    "they run in parallel and land in task-file order, each re-checked on top of the ones before; \
                     narrow their allowed globs, or set run.overlap = \"serialize\" to run them one after another"
                }
            ),
        });
    }
    let groups: Vec<Vec<usize>> = if serialize {
        plan::serial_groups(plan.tasks.len(), &overlaps)
    } else {
        (0..plan.tasks.len()).map(|i| vec![i]).collect()
    };
    sink.emit(Event::RunStarted {
        run_id: run_id.clone(),
        base: base_sha.clone(),
        tasks: plan.tasks.iter().map(|t| t.id.clone()).collect(),
        jobs,
    });

    let cancels = cancel::Cancels::new(cancel, plan.tasks.iter().map(|t| t.id.as_str()));
    let carrier = Carrier {
        repo: &request.repo,
        layout: StateLayout::of(&request.repo),
        policy: &policy,
        rules: &rules,
        target_branch: target_branch.as_deref(),
        no_merge: request.no_merge,
        scratch_root: crate::paths::verify_root(&worktree_folder),
        run_id: &run_id,
        base_sha: &base_sha,
        store: Mutex::new(store),
        sink,
        cancel: &cancels,
        failure: Mutex::new(None),
    };
    let next = AtomicUsize::new(0);
    let done = AtomicBool::new(false);
    let database = StateLayout::of(&request.repo).database();
    std::thread::scope(|scope| {
        let watcher = scope.spawn(|| cancels.watch(&database, &run_id, &done));
        let workers: Vec<_> = (0..jobs.min(groups.len()))
            .map(|_| {
                scope.spawn(|| {
                    while let Some(group) = groups.get(next.fetch_add(1, Ordering::SeqCst)) {
                        for &index in group {
                            carrier.carry_or_fail(
                                &plan.tasks[index],
                                &branches[index],
                                &worktrees[index],
                            );
                        }
                    }
                })
            })
            .collect();
        for worker in workers {
            let _ = worker.join();
        }
        if !request.no_merge {
            carrier.integrate_or_fail();
        }
        done.store(true, Ordering::SeqCst);
        let _ = watcher.join();
    });

    let Carrier { store, failure, .. } = carrier;
    let mut store = store.into_inner().unwrap_or_else(PoisonError::into_inner);
    store.finish_run(&run_id, RunState::Finished, None)?;
    sink.emit(Event::RunFinished {
        run_id: run_id.clone(),
    });
    if let Some(error) = failure.into_inner().unwrap_or_else(PoisonError::into_inner) {
        // Every task is in a final, stored state; `ccfan status` shows them. The run itself failed: exit 3.
        tracing::error!("run {run_id} had an internal error; see `ccfan status {run_id}`");
        return Err(error);
    }
    Ok(status::run_view(&store, &run_id)?)
}

/// `--into BRANCH`, checked to name a local branch.
fn existing_branch(repo: &RepoPaths, branch: &str) -> Result<String, PipelineError> {
    let name = branch.strip_prefix("refs/heads/").unwrap_or(branch);
    if !git2::Reference::is_valid_name(&format!("refs/heads/{name}")) {
        return Err(InputError::new(
            Path::new("<command line>"),
            format!("`{branch}` is not a valid branch name"),
        )
        .key("--into")
        .fix("name an existing local branch; git branch names have no spaces, `..`, `~`, `^`, `:`, `?`, `*`, `[`, `\\`, `@{`, no leading `-` and no trailing `/` or `.lock`")
        .into());
    }
    if git::ref_target(repo, &format!("refs/heads/{name}"))?.is_none() {
        return Err(InputError::new(
            Path::new("<command line>"),
            format!("`{branch}` is not a local branch"),
        )
        .key("--into")
        .fix("name an existing local branch, e.g. --into main (create it first with `git branch NAME`)")
        .into());
    }
    Ok(name.to_string())
}

/// Allowed globs that match no file at the base: worth a warning (a typo?), though a task may create such files.
fn unmatched_globs(
    repo: &RepoPaths,
    base: &str,
    plan: &plan::Plan,
) -> Result<Vec<String>, PipelineError> {
    let paths = git::tree_paths(repo, base)?;
    let mut warnings = Vec::new();
    for task in &plan.tasks {
        for glob in &task.allowed {
            let Ok(matcher) = globset::GlobBuilder::new(glob)
                .literal_separator(true)
                .build()
            else {
                continue;
            };
            let matcher = matcher.compile_matcher();
            if !paths.iter().any(|path| matcher.is_match(path)) {
                warnings.push(format!(
                    "task {}: allowed glob `{glob}` matches no file at the base (fine if the task creates such files)",
                    task.id
                ));
            }
        }
    }
    Ok(warnings)
}
