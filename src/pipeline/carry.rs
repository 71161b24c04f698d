//! Stages 2-5 for one task, on a job thread: fan out its worktree, then attempts — run the worker, record, gate —
//! until a verdict ends it: accepted, blocked (rework budget spent) or rolled back; a Rework verdict runs the next
//! attempt in the same worktree, on top of the previous one, with the findings in its task file. Integration (the
//! merge stage) comes back here to rework a task whose landing conflicted, from a [`Cursor`] on the new tip.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::lifecycle::{self, Next};
use super::{PipelineError, budget, fan_out};
use crate::events::{Event, EventSink};
use crate::git::RepoPaths;
use crate::model::{CommitId, RunId, TaskId, TaskSpec, TaskState};
use crate::paths::StateLayout;
use crate::policy::Policy;
use crate::report::{Finding, Verdict};
use crate::secrets::RulePack;
use crate::store::Store;

/// Everything a job thread needs to carry one task through the stages.
pub(super) struct Carrier<'a> {
    pub(super) repo: &'a RepoPaths,
    pub(super) layout: StateLayout,
    pub(super) policy: &'a Policy,
    pub(super) rules: &'a RulePack,
    pub(super) target_branch: Option<&'a str>,
    /// `--no-merge`: accepted is the end.
    pub(super) no_merge: bool,
    /// The ignored files copied into every task tree.
    pub(super) includes: &'a super::tree::TreeFiles,
    /// Each task's index and leased ports.
    pub(super) resources: super::resources::Resources,
    pub(super) scratch_root: PathBuf,
    pub(super) run_id: &'a RunId,
    pub(super) base_sha: &'a CommitId,
    pub(super) store: Mutex<Store>,
    pub(super) sink: &'a dyn EventSink,
    pub(super) cancel: &'a super::cancel::Cancels<'a>,
    pub(super) failure: Mutex<Option<PipelineError>>,
    /// What prices the run's attempts for `[budget]`.
    pub(super) prices: crate::cost::PriceTable,
    /// Tasks stopped by `[budget]`, with why: their `cancelled` is stored as `over_budget`.
    pub(super) budget_stops: Mutex<std::collections::HashMap<TaskId, String>>,
    /// When each task's spending was last checked while its worker ran.
    pub(super) budget_checked: Mutex<std::collections::HashMap<TaskId, std::time::Instant>>,
    /// Where the run's landings go (set by the first one).
    pub(super) destination: Mutex<Option<Destination>>,
}

/// Where landings go: the target branch, or the integration branch once the user's checkout was in the way.
#[derive(Debug, Clone)]
pub(in crate::pipeline) struct Destination {
    pub(in crate::pipeline) branch: String,
    /// Set once diverted: the user's checkout and the dirty paths that were in the way.
    pub(in crate::pipeline) diverted: Option<(std::path::PathBuf, Vec<String>)>,
}

impl Destination {
    /// Landings onto `target` itself, until the user's checkout is in the way.
    pub(in crate::pipeline) fn to(target: &str) -> Destination {
        Destination {
            branch: target.to_string(),
            diverted: None,
        }
    }
}

/// Where a task's attempts continue from.
#[derive(Debug, Clone)]
pub(super) struct Cursor {
    /// The commit the task's current chain of attempts started from (the run's base, or a newer target tip after
    /// a conflict): its diff is judged against this.
    pub(super) base: CommitId,
    /// The commit ccfan expects the task branch at: the base, then each attempt's commit.
    pub(super) tip: CommitId,
    /// The next attempt's number.
    pub(super) next: u32,
    /// The first attempt of the current rework budget.
    pub(super) budget_from: u32,
    /// Findings for the next attempt to fix.
    pub(super) findings: Vec<Finding>,
}

/// What a carrier of one run is made from: the run's read-only context, and the store it writes.
pub(super) struct RunContext<'a> {
    pub(super) repo: &'a RepoPaths,
    pub(super) policy: &'a Policy,
    pub(super) rules: &'a RulePack,
    pub(super) run_id: &'a RunId,
    pub(super) base_sha: &'a CommitId,
    pub(super) target_branch: Option<&'a str>,
    /// `--no-merge`: accepted is the end.
    pub(super) no_merge: bool,
    pub(super) includes: &'a super::tree::TreeFiles,
    pub(super) resources: super::resources::Resources,
    pub(super) sink: &'a dyn EventSink,
    pub(super) cancel: &'a super::cancel::Cancels<'a>,
    pub(super) store: Store,
}

impl<'a> Carrier<'a> {
    /// The one place a carrier is made, for `ccfan run` and for every follow-up command alike.
    pub(super) fn new(context: RunContext<'a>) -> Carrier<'a> {
        let RunContext {
            repo,
            policy,
            rules,
            run_id,
            base_sha,
            target_branch,
            no_merge,
            includes,
            resources,
            sink,
            cancel,
            store,
        } = context;
        Carrier {
            repo,
            layout: StateLayout::of(repo),
            policy,
            rules,
            target_branch,
            no_merge,
            includes,
            resources,
            scratch_root: super::gate::scratch_root(repo, policy),
            run_id,
            base_sha,
            store: Mutex::new(store),
            sink,
            cancel,
            failure: Mutex::new(None),
            prices: crate::cost::PriceTable::load().unwrap_or_else(|error| {
                tracing::warn!("{error}; costs use the built-in price table");
                crate::cost::PriceTable::builtin()
            }),
            budget_stops: Mutex::default(),
            budget_checked: Mutex::default(),
            destination: Mutex::default(),
        }
    }
}

impl Carrier<'_> {
    pub(super) fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores the transition first, then tells the sink. A task `[budget]` stopped ends `over_budget`, not
    /// `cancelled`.
    pub(super) fn transition(
        &self,
        task: &TaskId,
        attempt: u32,
        state: TaskState,
        reason: Option<String>,
    ) -> Result<(), PipelineError> {
        let stopped = (state == TaskState::Cancelled)
            .then(|| {
                self.budget_stops
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(task)
                    .cloned()
            })
            .flatten();
        let (state, reason) = match stopped {
            Some(why) => (TaskState::OverBudget, Some(format!("over budget: {why}"))),
            None => (state, reason),
        };
        self.store()
            .set_task_state(self.run_id, task, state, reason.as_deref())?;
        self.sink.emit(Event::TaskState {
            task_id: task.clone(),
            attempt,
            state,
            reason,
        });
        Ok(())
    }

    /// Keeps the first internal error (the run then exits 3; every task is still in a stored state).
    pub(super) fn fail(&self, task: Option<&TaskId>, error: PipelineError) {
        let full = error.is_disk_full();
        if full {
            // The reserve goes, so that the store can still say why the task stopped.
            let _ = std::fs::remove_file(self.layout.reserve());
        }
        // Git's errors name files, and a worker chose their names: redacted wherever the error goes.
        let message = self.rules.redact_text(&error.to_string());
        if let Some(task) = task {
            tracing::error!(task = %task, "{message}");
            let reason = if full {
                format!(
                    "the disk is full ({message}); free space there, then `ccfan retry {}/{task}`",
                    self.run_id
                )
            } else {
                message.clone()
            };
            if let Err(store_error) = self.transition(task, 0, TaskState::Error, Some(reason)) {
                tracing::error!("cannot record the error: {store_error}");
            }
        } else {
            tracing::error!("{message}");
        }
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(PipelineError::Stopped {
                message,
                disk_full: full,
            });
    }

    /// [`Carrier::carry`] from where the task's prerequisites left their work (skipped when that cannot be
    /// found), turning an internal error into the task's `error` state.
    pub(super) fn carry_or_fail(&self, task: &TaskSpec, branch: &str, worktree: &Path) {
        let carried = self.start_of(task).and_then(|start| match start {
            Ok(start) => self.carry(task, branch, worktree, &start).map(drop),
            Err(why) => self.transition(
                &task.id,
                0,
                TaskState::Skipped,
                Some(format!("not started: {why}")),
            ),
        });
        if let Err(error) = carried {
            self.fail(Some(&task.id), error);
        }
    }

    /// [`Carrier::integrate`], keeping an internal error for the end of the run. A task caught mid-landing stays
    /// as the store says (merging is settled from git on the next start).
    pub(super) fn integrate_or_fail(&self) {
        if let Err(error) = self.integrate() {
            self.fail(None, error);
        }
    }

    /// The error kept by [`Carrier::fail`], if any.
    pub(super) fn take_failure(&self) -> Option<PipelineError> {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Fans the task out from `start` and carries it through attempts to a verdict.
    pub(super) fn carry(
        &self,
        task: &TaskSpec,
        branch: &str,
        worktree: &Path,
        start: &CommitId,
    ) -> Result<Option<Verdict>, PipelineError> {
        self.check_budget(&task.id, budget::Check::Starting);
        if self.cancel.of(&task.id).load(Ordering::SeqCst) {
            self.transition(
                &task.id,
                0,
                TaskState::Cancelled,
                Some("cancelled before it started".into()),
            )?;
            return Ok(None);
        }
        self.transition(&task.id, 0, TaskState::Preparing, None)?;
        let link = fan_out::prepare(self.repo, worktree, branch, start, self.includes)?;
        self.store().set_git_link(self.run_id, &task.id, &link)?;
        let cursor = Cursor {
            base: start.clone(),
            tip: start.clone(),
            next: 1,
            budget_from: 1,
            findings: Vec::new(),
        };
        self.continue_from(task, worktree, &link, cursor)
    }

    /// Runs attempts from `cursor` until a verdict ends the task (`None`: cancelled).
    pub(super) fn continue_from(
        &self,
        task: &TaskSpec,
        worktree: &Path,
        link: &str,
        mut cursor: Cursor,
    ) -> Result<Option<Verdict>, PipelineError> {
        let cancel = self.cancel.of(&task.id);
        loop {
            // A cap already crossed (a retry of an `over_budget` task, say) starts no worker.
            self.check_budget(&task.id, budget::Check::Starting);
            if cancel.load(Ordering::SeqCst) {
                self.transition(
                    &task.id,
                    cursor.next - 1,
                    TaskState::Cancelled,
                    Some("cancelled before its next attempt".into()),
                )?;
                return Ok(None);
            }
            let Some((verdict, next_tip)) = self.attempt(task, worktree, link, &cursor)? else {
                return Ok(None); // cancelled
            };
            cursor.tip = next_tip;
            cursor.next += 1;
            // What the attempt spent may stop the next one (this task's cap) or every task (the run's).
            self.check_budget(&task.id, budget::Check::Ended);
            match lifecycle::after_attempt(&verdict, cancel.load(Ordering::SeqCst)) {
                Next::Rework(findings) => cursor.findings = findings,
                Next::CancelledBeforeRework => {
                    self.transition(
                        &task.id,
                        cursor.next - 1,
                        TaskState::Cancelled,
                        Some("cancelled before its rework".into()),
                    )?;
                    return Ok(None);
                }
                Next::RolledBack => {
                    // Not merged; every attempt stays on its salvage ref; the worktree goes back to the base.
                    if let Err(error) = super::tree::reset(worktree, &cursor.base) {
                        tracing::warn!(task = %task.id, "cannot reset the rolled-back worktree: {error}");
                    }
                    return Ok(Some(verdict));
                }
                Next::Settled => return Ok(Some(verdict)),
            }
        }
    }
}

impl Carrier<'_> {
    /// Checks `[budget]` for `task` and its run; stops what a crossed cap names (only `task` for its own cap; every
    /// task of the run for the run's), remembering why. `when` says whether `task` is about to start an attempt
    /// (it then stops whatever its state), has a worker reporting progress (checked at most once a second), or
    /// just finished one.
    pub(super) fn check_budget(&self, task: &TaskId, when: budget::Check) {
        let throttled = when == budget::Check::Live;
        let budget = &self.policy.budget;
        if !budget.is_set() {
            return;
        }
        if throttled {
            let mut checked = self
                .budget_checked
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = std::time::Instant::now();
            if checked
                .get(task)
                .is_some_and(|at| now.duration_since(*at) < std::time::Duration::from_secs(1))
            {
                return;
            }
            checked.insert(task.clone(), now);
        }
        let summaries = match self.store().run_attempt_agents(self.run_id) {
            Ok(summaries) => summaries,
            Err(error) => {
                tracing::warn!("cannot read what the run spent: {error}");
                return;
            }
        };
        let (tasks, run) = budget::spend_of(
            &self.prices,
            summaries.iter().map(|(task, summary)| (task, summary)),
        );
        let spent = tasks.get(task).copied().unwrap_or_default();
        let over = budget::check(budget, spent, run);
        let Some(over) = over else {
            return;
        };
        // Only what has yet to spend stops: a task not started, a worker still running, a task between attempts.
        // A finished worker's attempt is still judged, a gate is never cut short, and an accepted task lands.
        let stoppable = |state: TaskState| {
            matches!(
                state,
                TaskState::Queued
                    | TaskState::Waiting
                    | TaskState::Preparing
                    | TaskState::Running
                    | TaskState::Rework
            )
        };
        let states: std::collections::HashMap<TaskId, TaskState> = self
            .store()
            .tasks(self.run_id)
            .map(|rows| rows.into_iter().map(|row| (row.id, row.state)).collect())
            .unwrap_or_default();
        let can_stop = |id: &TaskId| {
            (when == budget::Check::Starting && id == task)
                || states.get(id).copied().is_some_and(stoppable)
        };
        let (stopping, why): (Vec<TaskId>, String) = match over {
            budget::Over::Task(why) => (
                vec![task.clone()]
                    .into_iter()
                    .filter(|id| can_stop(id))
                    .collect(),
                why,
            ),
            budget::Over::Run(why) => (
                states.keys().filter(|id| can_stop(id)).cloned().collect(),
                why,
            ),
        };
        let mut stops = self
            .budget_stops
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for stopped in stopping {
            stops.entry(stopped.clone()).or_insert_with(|| why.clone());
            self.cancel.stop(&stopped);
        }
    }
}
