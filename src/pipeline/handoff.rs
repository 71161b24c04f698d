//! Gated hand-offs (`after = ["design"]`) while a run carries its tasks: a prerequisite lands as soon as the gate
//! accepts it (stage 6 for that one task), how it settled decides whether the tasks waiting for it start or are
//! skipped, and a dependant starts from the tip that holds its prerequisites' work (stage 2) and is told what
//! they changed (stage 3).

use std::sync::atomic::Ordering;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::PipelineError;
use super::carry::Carrier;
use super::carry::Destination;
use super::order::{Pick, Schedule, Settled};
use crate::git::{self, MergePreview};
use crate::model::{CommitId, Handoff, TaskId, TaskSpec, TaskState};
use crate::store::{TaskRow, task_head};
use crate::util::short;

/// Files of a prerequisite listed to its dependant.
const MAX_FILES: usize = 100;
/// Characters of a prerequisite's goal repeated to its dependant.
const MAX_GOAL: usize = 300;

impl Carrier<'_> {
    /// Whether accepted tasks land on a branch in this run (not `--no-merge`, and HEAD was on a branch).
    fn lands(&self) -> bool {
        !self.no_merge && self.target_branch.is_some()
    }

    /// Whether the run stops at accepted (made with `--no-merge`, or HEAD was detached): its dependants then start
    /// from accepted work. A follow-up command's carrier lands whatever the run said, so the stored run decides.
    fn stops_at_accepted(&self) -> bool {
        !self.lands() || self.store().run(self.run_id).is_ok_and(|run| run.no_merge)
    }

    /// Where landings go, shared by every landing of the run (once diverted to the integration branch, always).
    pub(super) fn destination(&self) -> MutexGuard<'_, Option<Destination>> {
        self.destination
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// After `task` was carried: landed at once when tasks wait for it, then how it settled for them.
    pub(super) fn settle_for_dependants(
        &self,
        task: &TaskId,
        waited_for: bool,
    ) -> Result<Settled, PipelineError> {
        if waited_for
            && let Some(target) = self.target_branch
            && self.lands()
            && self.fresh(task)?.state == TaskState::Accepted
        {
            let mut dest = self.destination();
            let dest = dest.get_or_insert_with(|| Destination::to(target));
            self.land(task, target, dest, None)?;
        }
        let row = self.fresh(task)?;
        Ok(self.settled(&row))
    }

    /// The first prerequisite of `task` that has not landed (on the target, or the integration branch), as a
    /// reason; `None` when all have.
    pub(super) fn unlanded_prerequisite(
        &self,
        task: &TaskSpec,
    ) -> Result<Option<String>, PipelineError> {
        for id in &task.after {
            let row = self.fresh(id)?;
            let landed = row.state == TaskState::Merged
                || (row.state == TaskState::Accepted && row.landing.is_some());
            if !landed {
                return Ok(Some(format!(
                    "its prerequisite {id} is {}, not landed",
                    row.state
                )));
            }
        }
        Ok(None)
    }

    /// Whether `row`'s work is there for its dependants to start from.
    fn settled(&self, row: &TaskRow) -> Settled {
        let landed = match row.state {
            TaskState::Merged => true,
            // Landed on the integration branch (the target's checkout was in the way): dependants start there.
            TaskState::Accepted => row.landing.is_some() || self.stops_at_accepted(),
            TaskState::Queued
            | TaskState::Waiting
            | TaskState::Preparing
            | TaskState::Running
            | TaskState::Completed
            | TaskState::Verifying
            | TaskState::Rework
            | TaskState::RolledBack
            | TaskState::Blocked
            | TaskState::Merging
            | TaskState::Conflict
            | TaskState::Failed
            | TaskState::TimedOut
            | TaskState::Cancelled
            | TaskState::OverBudget
            | TaskState::Interrupted
            | TaskState::Error
            | TaskState::Skipped
            | TaskState::Planned
            | TaskState::Rejected
            | TaskState::NotChosen => false,
        };
        if landed {
            Settled::Landed
        } else if row.state == TaskState::Accepted {
            Settled::NotLanded("accepted but not landed".into())
        } else {
            Settled::NotLanded(row.state.to_string())
        }
    }

    /// The commit `task` starts from: the run's base, or for a task with prerequisites the tip that holds their
    /// work — the destination branch once they landed; with `--no-merge`, their accepted attempts merged. `Err`
    /// says why it cannot start.
    pub(super) fn start_of(
        &self,
        task: &TaskSpec,
    ) -> Result<Result<CommitId, String>, PipelineError> {
        if task.after.is_empty() {
            return Ok(Ok(self.base_sha.clone()));
        }
        let prerequisites = task
            .after
            .iter()
            .map(|id| self.fresh(id))
            .collect::<Result<Vec<TaskRow>, PipelineError>>()?;
        if let Some(row) = prerequisites
            .iter()
            .find(|row| self.settled(row) != Settled::Landed)
        {
            return Ok(Err(format!(
                "its prerequisite {} is {}, not landed",
                row.id, row.state
            )));
        }
        let landed = prerequisites
            .iter()
            .any(|row| row.state == TaskState::Merged || row.landing.is_some());
        if let Some(target) = self.target_branch
            && landed
        {
            // The branch they landed on (the integration branch once the target's checkout was in the way), read
            // from the store: a landing in progress elsewhere holds the destination's lock for minutes.
            let branch = prerequisites
                .iter()
                .find_map(|row| row.landing.as_ref().and(row.landed_on.clone()))
                .unwrap_or_else(|| target.to_string());
            return self.landed_tip(&branch, &prerequisites);
        }
        self.accepted_tip(task, &prerequisites)
    }

    /// The tip of `branch`, checked to hold every prerequisite's landing commit.
    fn landed_tip(
        &self,
        branch: &str,
        prerequisites: &[TaskRow],
    ) -> Result<Result<CommitId, String>, PipelineError> {
        let Some(tip) = git::ref_target(self.repo, &format!("refs/heads/{branch}"))? else {
            return Ok(Err(format!("branch {branch} does not exist any more")));
        };
        for row in prerequisites {
            if row.state == TaskState::Accepted && row.landing.is_none() {
                return Ok(Err(format!(
                    "its prerequisite {} is accepted but not landed: `ccfan merge {}` lands it",
                    row.id, self.run_id
                )));
            }
            if let Some(landing) = &row.landing
                && *landing != tip
                && !git::is_ancestor(self.repo, landing, &tip)?
            {
                return Ok(Err(format!(
                    "{branch} no longer holds {}'s landing commit {}",
                    row.id,
                    short(landing)
                )));
            }
        }
        Ok(Ok(tip))
    }

    /// Not landing: the prerequisites' accepted attempts, merged in memory onto the first one that changed
    /// anything (a commit no branch holds until the dependant's branch does).
    fn accepted_tip(
        &self,
        task: &TaskSpec,
        prerequisites: &[TaskRow],
    ) -> Result<Result<CommitId, String>, PipelineError> {
        let mut start = self.base_sha.clone();
        for row in prerequisites {
            let attempts = self.store().attempts(self.run_id, &row.id)?;
            let Some(commit) = task_head(&attempts, self.base_sha).and_then(|head| head.commit)
            else {
                continue; // it changed nothing
            };
            if commit == start || git::is_ancestor(self.repo, &commit, &start)? {
                continue;
            }
            if git::is_ancestor(self.repo, &start, &commit)? {
                start = commit;
                continue;
            }
            let message = format!("ccfan: the work {} starts from", task.id);
            match git::land_commit(self.repo, &start, &commit, &message)? {
                MergePreview::Clean { commit } => start = commit,
                MergePreview::Conflicts(paths) => {
                    return Ok(Err(format!(
                        "its prerequisites' accepted changes conflict in {}",
                        self.rules.redact_text(&paths.join(", "))
                    )));
                }
            }
        }
        Ok(Ok(start))
    }

    /// What each prerequisite of `task` changed, for its worker.
    pub(super) fn handoffs(&self, task: &TaskSpec) -> Result<Vec<Handoff>, PipelineError> {
        let mut handoffs = Vec::new();
        for id in &task.after {
            let row = self.fresh(id)?;
            let attempts = self.store().attempts(self.run_id, id)?;
            let head = task_head(&attempts, self.base_sha);
            let (commit, from, landed_on) = match (&row.landing, head) {
                (Some(landing), _) => match git::first_parent(self.repo, landing)? {
                    Some(parent) => (landing.clone(), parent, row.landed_on.clone()),
                    None => continue,
                },
                (None, Some(head)) => match head.commit {
                    Some(commit) => (commit, head.base.to_string(), None),
                    None => continue, // it changed nothing
                },
                (None, None) => continue,
            };
            let mut files: Vec<String> = git::diff_files(self.repo, &from, &commit)?
                .into_iter()
                .map(|change| self.rules.redact_text(&change.path))
                .collect();
            let more_files = files.len().saturating_sub(MAX_FILES);
            files.truncate(MAX_FILES);
            handoffs.push(Handoff {
                task: id.clone(),
                goal: row.spec.goal.trim().chars().take(MAX_GOAL).collect(),
                commit,
                landed_on,
                files,
                more_files,
            });
        }
        Ok(handoffs)
    }

    /// Stores `waiting` for a task whose prerequisites have not all landed, naming them.
    pub(super) fn wait_for(&self, task: &TaskId, names: &[&TaskId]) -> Result<(), PipelineError> {
        let names: Vec<&str> = names.iter().map(|id| id.as_str()).collect();
        let until = if self.lands() { "land" } else { "be accepted" };
        self.transition(
            task,
            0,
            TaskState::Waiting,
            Some(format!("waits for {} to {until}", names.join(", "))),
        )
    }
}

/// How often a job thread with nothing to start looks at cancel requests again.
pub(super) const WAIT_POLL: Duration = Duration::from_millis(200);

/// Stores `cancelled` for a task cancelled before it started (`over_budget` when `[budget]` stopped it), and
/// how that settles it for the tasks waiting for it.
fn cancel_waiting(carrier: &Carrier<'_>, task: &TaskSpec) -> Settled {
    let why = if task.after.is_empty() {
        "cancelled before it started"
    } else {
        "cancelled while it waited for its prerequisites"
    };
    if let Err(error) = carrier.transition(&task.id, 0, TaskState::Cancelled, Some(why.into())) {
        carrier.fail(None, error);
    }
    let state = carrier
        .fresh(&task.id)
        .map_or(TaskState::Cancelled, |row| row.state);
    Settled::NotLanded(state.to_string())
}

/// Settles a picked task as not landed if its job thread unwinds before settling it.
pub(super) struct Unsettled<'p> {
    picker: &'p Picker,
    index: usize,
    armed: bool,
}

impl<'p> Unsettled<'p> {
    pub(super) fn new(picker: &'p Picker, index: usize) -> Unsettled<'p> {
        Unsettled {
            picker,
            index,
            armed: true,
        }
    }

    /// The task is about to be settled normally.
    pub(super) fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Unsettled<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.picker.abandon(self.index);
        }
    }
}

/// The run's [`Schedule`], shared by its job threads: each asks for the next task to carry and says how it
/// settled; skips and cancels of waiting tasks are stored here.
pub(super) struct Picker {
    schedule: Mutex<Schedule>,
    changed: Condvar,
}

impl Picker {
    pub(super) fn new(schedule: Schedule) -> Picker {
        Picker {
            schedule: Mutex::new(schedule),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Schedule> {
        self.schedule.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next task to carry, waiting while only tasks in flight can unblock one; `None` when every task was
    /// picked. A task that cannot start is stored as skipped (or cancelled) on the way.
    pub(super) fn next(&self, carrier: &Carrier<'_>, tasks: &[TaskSpec]) -> Option<usize> {
        let ids: Vec<TaskId> = tasks.iter().map(|task| task.id.clone()).collect();
        let mut schedule = self.lock();
        loop {
            let cancelled = |index: usize| carrier.cancel.of(&ids[index]).load(Ordering::SeqCst);
            match schedule.next(&ids, cancelled) {
                Pick::Start(index) => return Some(index),
                Pick::Done => return None,
                Pick::Wait => {
                    schedule = self
                        .changed
                        .wait_timeout(schedule, WAIT_POLL)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                Pick::Skip(index, why) => {
                    if let Err(error) =
                        carrier.transition(&ids[index], 0, TaskState::Skipped, Some(why))
                    {
                        carrier.fail(None, error);
                    }
                    self.changed.notify_all();
                }
                Pick::Cancel(index) => {
                    let settled = cancel_waiting(carrier, &tasks[index]);
                    schedule.settle(index, settled);
                    self.changed.notify_all();
                }
            }
        }
    }

    /// Cancels, at once, every task cancelled before it was picked (however busy the job threads are); returns
    /// whether any task is still to be picked.
    pub(super) fn sweep(&self, carrier: &Carrier<'_>, tasks: &[TaskSpec]) -> bool {
        let mut schedule = self.lock();
        let cancelled = schedule
            .cancel_pending(|index| carrier.cancel.of(&tasks[index].id).load(Ordering::SeqCst));
        for &index in &cancelled {
            let settled = cancel_waiting(carrier, &tasks[index]);
            schedule.settle(index, settled);
        }
        if !cancelled.is_empty() {
            self.changed.notify_all();
        }
        schedule.any_pending()
    }

    /// Settles a task whose carrying stopped without saying how (a panic), so that nothing waits for it forever.
    pub(super) fn abandon(&self, index: usize) {
        self.lock().settle(
            index,
            Settled::NotLanded("without an outcome (an internal error)".into()),
        );
        self.changed.notify_all();
    }

    /// Records how task `index` settled and wakes the threads waiting for it; a task still waiting for others
    /// says which.
    pub(super) fn settle(
        &self,
        carrier: &Carrier<'_>,
        tasks: &[TaskSpec],
        index: usize,
        settled: Settled,
    ) {
        let mut schedule = self.lock();
        let landed = settled == Settled::Landed;
        schedule.settle(index, settled);
        if landed {
            for (other, task) in tasks.iter().enumerate() {
                let waits = schedule.waits_for(other);
                // Only a task still waiting: one skipped or cancelled meanwhile keeps its end.
                if !schedule.is_pending(other)
                    || !task.after.contains(&tasks[index].id)
                    || waits.is_empty()
                {
                    continue;
                }
                let names: Vec<&TaskId> = waits.iter().map(|&w| &tasks[w].id).collect();
                if let Err(error) = carrier.wait_for(&task.id, &names) {
                    tracing::warn!(task = %task.id, "cannot record what it waits for: {error}");
                }
            }
        }
        drop(schedule);
        self.changed.notify_all();
    }
}
