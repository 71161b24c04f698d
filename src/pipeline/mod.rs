//! The pipeline, in the order it runs: plan → fan out → run worker → record → verify → decide → integrate.
//! [`run`] is the one function that orders the stages; every transition is stored before it takes effect and
//! reported as an [`Event`]. [`control`] holds the follow-up commands (merge, rework, retry, accept, rollback,
//! cancel, salvage) that act on a stored run.

pub mod plan;
// stages 1-2: the order prerequisites (`after`) impose, and which task starts next (pure)
pub mod order;
// stage 1: who reviews each task (`[review]`, a task's `review`, `cross`)
pub mod reviewers;
// stage 1 and before stage 6: best-of-N — a task as several candidates, and the one that lands
pub mod candidates;
// stage 1, around the plan: the request resolved, the run registered, the warnings given
pub mod prepare;
// stage 1b: the prepared base layer (`[setup]` run once)
pub mod layer;
// stage 2
pub mod fan_out;
// stage 2, either mode: copy-on-write views of the base layer, or full checkouts
pub mod tree;
// stage 2b: the ignored files each task tree needs (`.worktreeinclude`)
pub mod include;
// stage 2c: each task's index and leased ports
pub mod resources;
// stage 3 (here or in a container; an agent's event stream read into its tally, live or replayed)
pub mod run_worker;
// stage 3 elsewhere: a portable attempt (its inputs and its recorded change as bundles) and the runner
pub mod portable;
// 3b. …whose files travel over a cluster's API: the runner's side in the pod.
pub mod pod;
// 3b. …of an agent worker: its home carried both ways, its stream kept apart and held to its limits
pub mod portable_agent;
// stage 3 in a container: the portable attempt carried by a container engine
mod remote;
// stage 3b
pub mod record;
// stage 4
pub mod verify;
// stage 4g's worker: a task's reviewer, run read-only on the merge preview
pub mod reviewer;
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
// plan mode: stage 3 first on a read-only tree, then approval before the real attempt
pub mod planning;
// stages 2, 3 and 6 for tasks that wait for others: land early, start from their tip, say what they changed
mod handoff;
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
// beside the stages: spending caps (`[budget]`)
pub mod budget;
// housekeeping (not a stage): remove finished worktrees after salvaging
pub mod gc;
// the typed hand-off of long work to a detached ccfan process (MCP)
pub mod job;

use std::path::PathBuf;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::events::{Event, EventSink};
use crate::git::{self, GitError, RepoPaths};
use crate::input::InputError;
use crate::model::{self, CommitId, RunId, RunState, RunView};
use crate::paths::StateLayout;
use crate::sandbox;
use crate::status;
use crate::store::{RecoveredAttempt, Store, StoreError};
use carry::Carrier;
use handoff::Picker;

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
    /// The `[setup]` command failed: no layer, no task started (exit code 1, like a gate that says no).
    #[error(
        "setup `{command}` failed ({exit}): the base layer was not prepared and no task started; last lines of its log:\n{tail}\nwhole log: {}",
        log.display()
    )]
    SetupFailed {
        /// The command.
        command: String,
        /// How it ended.
        exit: String,
        /// The end of its log, secrets redacted.
        tail: String,
        /// Where its whole log is kept.
        log: PathBuf,
    },
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

impl From<include::IncludeError> for PipelineError {
    fn from(error: include::IncludeError) -> PipelineError {
        match error {
            include::IncludeError::Input(error) => PipelineError::Input(error),
            include::IncludeError::Git(error) => PipelineError::Git(error),
            copy @ include::IncludeError::Copy { .. } => PipelineError::Io {
                context: copy.to_string(),
                source: match copy {
                    include::IncludeError::Copy { source, .. } => source,
                    include::IncludeError::Input(_) | include::IncludeError::Git(_) => {
                        std::io::Error::other("cannot copy an included file")
                    }
                },
            },
        }
    }
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
            | PipelineError::SetupFailed { .. }
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
    /// `--plan`: every task's worker plans first, changing nothing; the task then waits for `ccfan approve`.
    pub plan: bool,
    /// The run id to use (chosen by whoever started this run, e.g. the MCP server); default: a new one.
    pub run_id: Option<RunId>,
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
    let landed = |commit: &CommitId, branch: &str| {
        !branch.starts_with("ccfan/")
            && git::ref_target(repo, &format!("refs/heads/{branch}"))
                .ok()
                .flatten()
                .is_some_and(|tip| git::is_ancestor(repo, commit, &tip).unwrap_or(false))
    };
    let recovered = store.recover(sandbox::proc::owner_alive, landed)?;
    for attempt in &recovered {
        // The attempt's worker, and its reviewer if the crash came while it reviewed.
        let killed = sandbox::kill_leftovers(&attempt.token)
            + sandbox::kill_leftovers(&reviewer::review_token(&attempt.token));
        if killed > 0 {
            tracing::warn!(run = %attempt.run_id, task = %attempt.task_id, killed, "killed processes left by an interrupted task");
        }
    }
    remove_containers(repo, &recovered);
    Ok(recovered)
}

/// With a container backend, the containers of the interrupted attempts (labelled with their tokens) are removed:
/// their worker is stopped, as a local one would be killed.
fn remove_containers(repo: &RepoPaths, recovered: &[RecoveredAttempt]) {
    if recovered.is_empty() {
        return;
    }
    let Ok(policy) = prepare::load_policy(repo, None) else {
        return;
    };
    let (backend, Some(settings)) = (policy.sandbox.backend, &policy.sandbox.container) else {
        return;
    };
    if !backend.is_container() {
        return;
    }
    for attempt in recovered {
        let removed = match backend {
            crate::policy::SandboxBackend::Kubernetes => {
                sandbox::kubernetes::remove_leftovers(&policy.sandbox.kubernetes, &attempt.token)
            }
            _ => sandbox::engine::remove_leftovers(backend, settings, &attempt.token),
        };
        if removed > 0 {
            tracing::warn!(run = %attempt.run_id, task = %attempt.task_id, removed, "removed the container of an interrupted task");
        }
    }
}

/// Runs the whole pipeline for one tasks file; returns the final view of the run.
pub fn run(
    request: &RunRequest,
    sink: &dyn EventSink,
    cancel: &AtomicBool,
) -> Result<RunView, PipelineError> {
    // 1 plan: the request resolved and checked, and the sandbox selected (failing closed), before anything is made.
    let resolved = prepare::resolve(request)?;
    let sandbox = sandbox::select(resolved.policy.sandbox.backend)?;
    let (mut store, _) = create_state(&request.repo)?;
    let run = prepare::register(&mut store, request, &resolved)?;
    let groups = prepare::warn_and_group(sink, &sandbox, &request.repo, &resolved)?;
    sink.emit(Event::RunStarted {
        run_id: run.run_id.clone(),
        base: resolved.base_sha.clone(),
        tasks: resolved.plan.tasks.iter().map(|t| t.id.clone()).collect(),
        jobs: resolved.jobs,
    });
    let Some(copies) =
        prepare::prepare_layer(&mut store, &request.repo, &resolved, &run, sink, cancel)?
    else {
        return Ok(status::run_view(&store, &run.run_id)?); // stopped during setup: every task cancelled
    };
    let cancels = cancel::Cancels::new(cancel, resolved.plan.tasks.iter().map(|t| &t.id));
    let carrier = Carrier::new(carry::RunContext {
        repo: &request.repo,
        policy: &resolved.policy,
        rules: &resolved.rules,
        run_id: &run.run_id,
        base_sha: &resolved.base_sha,
        target_branch: resolved.target_branch.as_deref(),
        no_merge: request.no_merge,
        includes: &copies,
        resources: resources::Resources::new(
            resolved.plan.tasks.iter().map(|task| task.id.clone()),
            resolved.policy.ports_per_task,
        ),
        sink,
        cancel: &cancels,
        store,
    });
    // 2-5: each task fanned out to its worktree and carried through its attempts, `jobs` at a time; then 6.
    carry_all(&carrier, &resolved, &run, &groups, &cancels, request);
    finish(carrier, &run.run_id, sink)
}

/// Stages 2 to 5 for every task on `jobs` threads, each task once its prerequisites landed (and a group of
/// overlapping tasks one at a time), while a watcher passes on cancel requests from other processes; then stage 6,
/// unless the run stops at accepted.
fn carry_all(
    carrier: &Carrier<'_>,
    resolved: &prepare::Resolved,
    run: &prepare::Registered,
    groups: &[Vec<usize>],
    cancels: &cancel::Cancels<'_>,
    request: &RunRequest,
) {
    let tasks = &resolved.plan.tasks;
    // Plan mode only plans (no task waits for another's plan), and lands nothing.
    let prerequisites = match request.plan {
        true => vec![Vec::new(); tasks.len()],
        false => order::prerequisites(tasks),
    };
    let waited_for: Vec<bool> = (0..tasks.len())
        .map(|index| prerequisites.iter().any(|needs| needs.contains(&index)))
        .collect();
    let schedule = Picker::new(order::Schedule::new(prerequisites, groups));
    for task in tasks.iter().filter(|task| !task.after.is_empty()) {
        let names: Vec<&model::TaskId> = task.after.iter().collect();
        if let Err(error) = carrier.wait_for(&task.id, &names) {
            tracing::warn!(task = %task.id, "cannot record that it waits: {error}");
        }
    }
    let done = AtomicBool::new(false);
    let database = carrier.layout.database();
    std::thread::scope(|scope| {
        let watcher = scope.spawn(|| cancels.watch(&database, &run.run_id, &done));
        let workers: Vec<_> = (0..resolved.jobs.min(tasks.len()))
            .map(|_| {
                scope.spawn(|| {
                    while let Some(index) = schedule.next(carrier, tasks) {
                        // A panic below still settles the task, so nothing waits for it forever.
                        let guard = handoff::Unsettled::new(&schedule, index);
                        let (branch, worktree) = (&run.branches[index], &run.worktrees[index]);
                        if request.plan {
                            carrier.plan_or_fail(&tasks[index], branch, worktree);
                            guard.disarm();
                            schedule.settle(carrier, tasks, index, order::Settled::Landed);
                            continue;
                        }
                        carrier.carry_or_fail(&tasks[index], branch, worktree);
                        let settled = carrier
                            .settle_for_dependants(&tasks[index].id, waited_for[index])
                            .unwrap_or_else(|error| {
                                carrier.fail(None, error);
                                order::Settled::NotLanded("with an internal error".into())
                            });
                        guard.disarm();
                        schedule.settle(carrier, tasks, index, settled);
                    }
                })
            })
            .collect();
        // Meanwhile, a task cancelled while it waits is cancelled at once, however busy the job threads are.
        while workers.iter().any(|worker| !worker.is_finished()) {
            schedule.sweep(carrier, tasks);
            std::thread::sleep(handoff::WAIT_POLL);
        }
        for worker in workers {
            let _ = worker.join();
        }
        if !request.no_merge && !request.plan {
            carrier.integrate_or_fail();
        } else if let Err(error) = carrier.pick_candidates() {
            carrier.fail(None, error);
        }
        done.store(true, Ordering::SeqCst);
        let _ = watcher.join();
    });
}

/// Marks the run finished; an internal error kept during the run is the run's result (exit 3), after every task
/// reached a stored state.
fn finish(
    carrier: Carrier<'_>,
    run_id: &RunId,
    sink: &dyn EventSink,
) -> Result<RunView, PipelineError> {
    let Carrier { store, failure, .. } = carrier;
    let mut store = store.into_inner().unwrap_or_else(PoisonError::into_inner);
    store.finish_run(run_id, RunState::Finished, None)?;
    sink.emit(Event::RunFinished {
        run_id: run_id.clone(),
    });
    if let Some(error) = failure.into_inner().unwrap_or_else(PoisonError::into_inner) {
        // Every task is in a final, stored state; `ccfan status` shows them. The run itself failed: exit 3.
        tracing::error!("run {run_id} had an internal error; see `ccfan status {run_id}`");
        return Err(error);
    }
    Ok(status::run_view(&store, run_id)?)
}

use prepare::existing_branch;
pub use prepare::{
    allocate_run_id, display_rules, load_committed_policy, load_plan, load_policy, load_rules,
};
