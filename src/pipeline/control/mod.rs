//! Follow-up commands on a stored run, after (or beside) `ccfan run`: merge what is accepted, rework with a
//! person's note, retry a blocked task with a fresh budget, accept over the gate, roll back (a merged task by a
//! revert commit), cancel. Each claims the run first, so two ccfan processes never carry the same task at once,
//! and each stores every transition before it takes effect, exactly like `run`.

mod plans;
mod undo;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use super::cancel::Cancels;
use super::carry::{Carrier, RunContext};
pub use super::lifecycle::Refusal;
use super::lifecycle::{self, Operation};
use super::{PipelineError, load_policy, load_rules, open_state};
use crate::events::{Event, EventSink};
use crate::git::{self, RepoPaths};
use crate::input::InputError;
use crate::model::{RunId, RunState, RunView, TaskId, TaskState};
use crate::paths::StateLayout;
use crate::report::{Finding, Stage, VerifyReport};
use crate::store::{Store, StoreError, TaskRow, task_head};
use crate::{sandbox, status};

/// `<run>` or `<run>/<task>` from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Run id.
    pub run: RunId,
    /// Task id, if one.
    pub task: Option<TaskId>,
}

impl Target {
    /// Parses `run` or `run/task`; a malformed id is bad input naming what is wrong with it.
    pub fn parse(text: &str) -> Result<Target, PipelineError> {
        let bad = |error: crate::model::IdError| -> PipelineError {
            InputError::new(Path::new("<command line>"), error.to_string())
                .key("RUN[/TASK]")
                .fix("give a run id as `ccfan status` lists it, and a task id of that run after a `/`")
                .into()
        };
        let (run, task) = match text.split_once('/') {
            Some((run, task)) => (run, Some(task)),
            None => (text, None),
        };
        Ok(Target {
            run: RunId::parse(run).map_err(bad)?,
            task: task.map(TaskId::parse).transpose().map_err(bad)?,
        })
    }

    /// The task, or a bad-input error saying the command needs one.
    pub fn need_task(&self, command: &str) -> Result<&TaskId, PipelineError> {
        self.task.as_ref().ok_or_else(|| {
            InputError::new(
                Path::new("<command line>"),
                format!("`ccfan {command}` needs one task: write <run>/<task>"),
            )
            .key(command)
            .fix(format!(
                "name the task, e.g. `ccfan {command} {}/TASK` (see `ccfan status {}`)",
                self.run, self.run
            ))
            .into()
        })
    }
}

/// What a follow-up command did: the run afterwards, and any refusal.
#[derive(Debug, Clone)]
pub struct ControlOutcome {
    /// The run as stored afterwards.
    pub view: RunView,
    /// Set when the command did not do (all of) what was asked, with why (exit code 1; nothing changed).
    pub refused: Option<Refusal>,
}

/// A task tree a person asked to open: where it is, and whether it had to be made again (after `gc`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct OpenTree {
    /// Run id.
    pub run_id: RunId,
    /// Task id.
    pub task_id: TaskId,
    /// The task's state.
    pub state: TaskState,
    /// The task's worktree: a real folder on its branch, with its latest attempt.
    pub path: std::path::PathBuf,
    /// Whether `gc` had removed it and it was made again from the task's branch.
    pub recreated: bool,
}

/// Whether a follow-up command prepares the run's base layer (running `[setup]` when no layer is ready): the ones
/// that start attempts or land (which gates run tests) do; `rollback` and `open` only use a layer that is ready, so
/// recovery never waits on, or fails with, a setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layer {
    Prepare,
    IfReady,
}

/// What a follow-up command works with: the repository and how to report and stop.
pub struct Control<'a> {
    /// The repository.
    pub repo: &'a RepoPaths,
    /// Progress.
    pub sink: &'a dyn EventSink,
    /// Ctrl-C.
    pub cancel: &'a AtomicBool,
}

impl Control<'_> {
    /// Claims the run, builds a carrier for it with the repository's current policy, runs `act`, and finishes
    /// the run again.
    fn with_carrier<T>(
        &self,
        run_id: &RunId,
        into: Option<&str>,
        layer: Layer,
        act: impl FnOnce(&Carrier<'_>) -> Result<T, PipelineError>,
    ) -> Result<T, PipelineError> {
        let (mut store, _) = open_state(self.repo)?;
        let pid = std::process::id();
        let start = sandbox::proc::start_token(pid).unwrap_or_default();
        store.claim_run(run_id, pid, &start, sandbox::proc::owner_alive)?;
        let result = (|| {
            if let Some(branch) = into {
                let branch = super::existing_branch(self.repo, branch)?;
                store.set_target_branch(run_id, &branch)?;
            }
            let run = store.run(run_id)?;
            let policy = load_policy(self.repo, None)?;
            let rules = load_rules(&policy)?;
            let included = match (layer, super::include::Includes::load(self.repo)) {
                (_, Ok(included)) => included,
                (Layer::Prepare, Err(error)) => return Err(error.into()),
                // Recovery is never blocked by a broken `.worktreeinclude`; it only copies less.
                (Layer::IfReady, Err(error)) => {
                    tracing::warn!("ignoring .worktreeinclude: {error}");
                    super::include::Includes::default()
                }
            };
            let input = super::layer::LayerInput {
                repo: self.repo,
                policy: &policy,
                rules: &rules,
                base: &run.base_sha,
                includes: &included,
                cancel: self.cancel,
            };
            let folder = crate::paths::worktree_base(self.repo, policy.worktree_root.as_deref());
            let (layer, copy_on_write) = match layer {
                Layer::Prepare => {
                    let cow = super::tree::select(self.repo, &policy, &folder)?.copy_on_write;
                    (super::layer::prepare(&input, cow)?, cow)
                }
                // Recovery makes no new tree it cannot make: checkouts when the mode cannot be told.
                Layer::IfReady => (
                    super::layer::ready(&input),
                    super::tree::select(self.repo, &policy, &folder)
                        .is_ok_and(|mode| mode.copy_on_write),
                ),
            };
            let includes = super::layer::tree_files(included, layer, copy_on_write);
            let tasks = store.tasks(run_id)?;
            let cancels = Cancels::new(self.cancel, tasks.iter().map(|t| &t.id));
            let carrier = Carrier::new(RunContext {
                repo: self.repo,
                policy: &policy,
                rules: &rules,
                run_id,
                base_sha: &run.base_sha,
                target_branch: run.target_branch.as_deref(),
                no_merge: false,
                includes: &includes,
                resources: super::resources::Resources::new(
                    tasks.iter().map(|task| task.id.clone()),
                    policy.ports_per_task,
                ),
                sink: self.sink,
                cancel: &cancels,
                store: Store::open(&StateLayout::of(self.repo).database())?,
            });
            let done = AtomicBool::new(false);
            let database = StateLayout::of(self.repo).database();
            let outcome = std::thread::scope(|scope| {
                let watcher = scope.spawn(|| cancels.watch(&database, run_id, &done));
                let outcome = act(&carrier);
                done.store(true, Ordering::SeqCst);
                let _ = watcher.join();
                outcome
            });
            match carrier.take_failure() {
                Some(error) => Err(error),
                None => outcome,
            }
        })();
        store.finish_run(run_id, RunState::Finished, None)?;
        result
    }

    fn outcome(
        &self,
        run_id: &RunId,
        refused: Option<Refusal>,
    ) -> Result<ControlOutcome, PipelineError> {
        let (store, _) = open_state(self.repo)?;
        Ok(ControlOutcome {
            view: status::run_view(&store, run_id)?,
            refused,
        })
    }

    /// `ccfan merge <run> [--into BRANCH]`: lands every accepted task not landed yet, in task-file order.
    /// Returns the outcome and the tasks it tried to land.
    pub fn merge(
        &self,
        run_id: &RunId,
        into: Option<&str>,
    ) -> Result<(ControlOutcome, Vec<TaskId>), PipelineError> {
        let acted = self.with_carrier(run_id, into, Layer::Prepare, |carrier| {
            let acted: Vec<TaskId> = carrier
                .store()
                .tasks(run_id)?
                .into_iter()
                .filter(|task| matches!(task.state, TaskState::Accepted | TaskState::Merging))
                .map(|task| task.id)
                .collect();
            carrier.integrate_or_fail();
            Ok(acted)
        })?;
        Ok((self.outcome(run_id, None)?, acted))
    }

    /// `ccfan open <run>/<task>`: the task's worktree, made again on its branch (its latest attempt, with the
    /// included and layer files) when `gc` removed it. A tree that exists is only looked up, even while a worker
    /// runs in it.
    pub fn open(&self, target: &Target) -> Result<OpenTree, PipelineError> {
        let task_id = target.need_task("open")?;
        let found = |store: &Store| -> Result<TaskRow, PipelineError> {
            store
                .tasks(&target.run)?
                .into_iter()
                .find(|task| &task.id == task_id)
                .ok_or_else(|| {
                    StoreError::NoSuchTask {
                        run: target.run.to_string(),
                        task: task_id.to_string(),
                    }
                    .into()
                })
        };
        let (store, _) = open_state(self.repo)?;
        let task = found(&store)?;
        if !task.removed {
            super::tree::ensure(&task.worktree)?;
        }
        let present = !task.removed && task.worktree.join(".git").is_file();
        if !present {
            self.with_carrier(&target.run, None, Layer::IfReady, |carrier| {
                let task = find_task(carrier, task_id)?;
                let attempts = carrier.store().attempts(carrier.run_id, &task.id)?;
                let at = task_head(&attempts, carrier.base_sha).map_or_else(
                    || carrier.base_sha.clone(),
                    |head| head.commit.unwrap_or(head.base),
                );
                carrier.ensure_worktree(&task, &at).map(drop)
            })?;
        }
        let (store, _) = open_state(self.repo)?;
        let task = found(&store)?;
        Ok(OpenTree {
            run_id: target.run.clone(),
            task_id: task.id,
            state: task.state,
            path: task.worktree,
            recreated: !present,
        })
    }

    /// `ccfan rework <run>/<task> --note "…"`: another attempt with a person's note, on a fresh budget, then
    /// landing as usual.
    pub fn rework(&self, target: &Target, note: &str) -> Result<ControlOutcome, PipelineError> {
        let task_id = target.need_task("rework")?;
        if note.trim().is_empty() {
            return Err(InputError::new(Path::new("<command line>"), "the rework note is empty")
                .key("--note")
                .fix("say what the worker should do differently, e.g. --note \"keep the public API\"")
                .into());
        }
        let refused = self.with_carrier(&target.run, None, Layer::Prepare, |carrier| {
            let task = find_task(carrier, task_id)?;
            if let Err(refusal) = lifecycle::allows(Operation::Rework, &task.id, task.state) {
                return Ok(Some(refusal));
            }
            let finding = Finding::error(Stage::Worker, "reviewer-note", note.to_string());
            carrier.again(&task, vec![finding])
        })?;
        self.outcome(&target.run, refused)
    }

    /// `ccfan retry <run>/<task>`: a blocked (or failed, interrupted, cancelled) task gets a fresh rework budget
    /// and another attempt with its last findings.
    pub fn retry(&self, target: &Target) -> Result<ControlOutcome, PipelineError> {
        let task_id = target.need_task("retry")?;
        let refused = self.with_carrier(&target.run, None, Layer::Prepare, |carrier| {
            let task = find_task(carrier, task_id)?;
            if let Err(refusal) = lifecycle::allows(Operation::Retry, &task.id, task.state) {
                return Ok(Some(refusal));
            }
            let findings = last_findings(carrier, &task)?;
            carrier.again(&task, findings)
        })?;
        self.outcome(&target.run, refused)
    }

    /// `ccfan accept <run>/<task> --force --reason "…"`: overrides the gate's verdict, recording who and why, and
    /// lands the task (its landing still runs the gate on the merged tree, and reports what it finds).
    pub fn accept(
        &self,
        target: &Target,
        who: &str,
        reason: &str,
    ) -> Result<ControlOutcome, PipelineError> {
        let task_id = target.need_task("accept")?;
        let refused = self.with_carrier(&target.run, None, Layer::Prepare, |carrier| {
            let task = find_task(carrier, task_id)?;
            if let Err(refusal) = lifecycle::allows(Operation::Accept, &task.id, task.state) {
                return Ok(Some(refusal));
            }
            let attempts = carrier.store().attempts(carrier.run_id, &task.id)?;
            let has_work =
                task_head(&attempts, carrier.base_sha).is_some_and(|head| head.commit.is_some());
            if !has_work {
                return Ok(Some(Refusal::NoChange {
                    task: task.id.clone(),
                }));
            }
            let forced = format!("{who}: {reason}");
            carrier
                .store()
                .set_forced(carrier.run_id, &task.id, Some(&forced))?;
            carrier.transition(
                &task.id,
                task.attempts,
                TaskState::Accepted,
                Some(format!("accepted over the gate's verdict by {forced}")),
            )?;
            let run = carrier.store().run(carrier.run_id)?;
            if !run.no_merge {
                carrier.integrate_or_fail();
            }
            Ok(None)
        })?;
        self.outcome(&target.run, refused)
    }

    /// `ccfan rollback <run>[/<task>]`: the task's work is not merged — a merged task is undone by a revert commit
    /// on the target (history is never rewritten); its worktree goes back to its base; every attempt stays on its
    /// salvage ref.
    pub fn rollback(&self, target: &Target) -> Result<ControlOutcome, PipelineError> {
        let refused = self.with_carrier(&target.run, None, Layer::IfReady, |carrier| {
            let tasks = carrier.store().tasks(carrier.run_id)?;
            let chosen: Vec<&TaskRow> = match &target.task {
                Some(id) => vec![tasks.iter().find(|t| &t.id == id).ok_or_else(|| {
                    StoreError::NoSuchTask {
                        run: carrier.run_id.to_string(),
                        task: id.to_string(),
                    }
                })?],
                None => tasks.iter().collect(),
            };
            let mut refusals = Vec::new();
            // Later landings first, so each revert applies cleanly on top of what came after it.
            let mut chosen = chosen;
            chosen.reverse();
            let landed_after = |a: &TaskRow, b: &TaskRow| -> bool {
                match (&a.landing, &b.landing) {
                    (Some(a), Some(b)) => {
                        a != b && git::is_ancestor(carrier.repo, b, a).unwrap_or(false)
                    }
                    _ => false,
                }
            };
            chosen.sort_by(|a, b| {
                if landed_after(a, b) {
                    std::cmp::Ordering::Less
                } else if landed_after(b, a) {
                    std::cmp::Ordering::Greater
                } else {
                    std::cmp::Ordering::Equal
                }
            });
            for task in chosen {
                if let Some(why) = carrier.roll_back(task)? {
                    refusals.push(why);
                }
            }
            Ok(match refusals.len() {
                0 => None,
                1 => refusals.pop(),
                _ => Some(Refusal::Several(refusals)),
            })
        })?;
        self.outcome(&target.run, refused)
    }

    /// `ccfan cancel <run>[/<task>]`: asks the process carrying the run to stop those tasks (their whole process
    /// trees are killed and they end cancelled), and waits for it; a run nobody carries has nothing to stop.
    pub fn cancel(
        &self,
        target: &Target,
        wait: std::time::Duration,
    ) -> Result<ControlOutcome, PipelineError> {
        let (mut store, _) = open_state(self.repo)?;
        let run = store.run(&target.run)?;
        if let Some(task) = &target.task
            && !store.tasks(&target.run)?.iter().any(|t| &t.id == task)
        {
            return Err(StoreError::NoSuchTask {
                run: target.run.to_string(),
                task: task.to_string(),
            }
            .into());
        }
        if run.state != RunState::Running {
            return self.outcome(
                &target.run,
                Some(Refusal::NotRunning {
                    run: run.id.clone(),
                    state: run.state.as_str().to_string(),
                }),
            );
        }
        store.request_cancel(&target.run, target.task.as_ref())?;
        self.sink.emit(Event::Warning {
            message: format!(
                "asked the ccfan process (pid {}) carrying run {} to cancel {}",
                run.owner_pid,
                run.id,
                target.task.as_deref().unwrap_or("every task")
            ),
        });
        let deadline = std::time::Instant::now() + wait;
        loop {
            let tasks = store.tasks(&target.run)?;
            let pending = tasks
                .iter()
                .filter(|t| target.task.as_ref().is_none_or(|id| &t.id == id))
                .any(|t| !t.state.is_final());
            if !pending
                || std::time::Instant::now() >= deadline
                || self.cancel.load(Ordering::SeqCst)
            {
                let refused = pending.then_some(Refusal::StillStopping { waited: wait });
                return self.outcome(&target.run, refused);
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
}

fn find_task(carrier: &Carrier<'_>, task_id: &TaskId) -> Result<TaskRow, PipelineError> {
    carrier
        .store()
        .tasks(carrier.run_id)?
        .into_iter()
        .find(|task| &task.id == task_id)
        .ok_or_else(|| {
            StoreError::NoSuchTask {
                run: carrier.run_id.to_string(),
                task: task_id.to_string(),
            }
            .into()
        })
}

/// The blocking findings of a task's latest gate report (what a retry hands the worker).
fn last_findings(carrier: &Carrier<'_>, task: &TaskRow) -> Result<Vec<Finding>, PipelineError> {
    let attempts = carrier.store().attempts(carrier.run_id, &task.id)?;
    let Some(latest) = attempts.last() else {
        return Ok(Vec::new());
    };
    let report = crate::paths::AttemptDir::of(&latest.dir)
        .latest_report()
        .and_then(|bytes| serde_json::from_slice::<VerifyReport>(&bytes).ok());
    Ok(report
        .map(|report| {
            report
                .findings()
                .filter(|f| f.is_blocking())
                .cloned()
                .collect()
        })
        .unwrap_or_default())
}
