//! The states a task and a run go through, with the names stored and shown and what each means for the rest of
//! the pipeline (final, landed). Matched exhaustively everywhere, so a new state breaks the build where it must
//! be handled.

use serde::{Deserialize, Serialize};

use super::ExitStatus;

/// Where a task is in its life cycle. Transitions are stored before they take effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting for a free job slot.
    Queued,
    /// Waiting for its prerequisites (`after`) to land before it can start.
    Waiting,
    /// Its worktree and branch are being created.
    Preparing,
    /// Its worker is running.
    Running,
    /// The worker exited 0 and its attempt is committed; awaiting verification.
    Completed,
    /// The gate is checking the attempt.
    Verifying,
    /// The gate accepted the attempt.
    Accepted,
    /// The gate asked for another attempt (its findings are stored with the attempt).
    Rework,
    /// The gate rolled the attempt back: not merged, kept on its salvage ref; its worktree is reset.
    RolledBack,
    /// Still failing when the rework budget ran out: a person decides what happens next.
    Blocked,
    /// Being merged onto the target.
    Merging,
    /// Merged: the target branch holds it (checked by re-reading the ref).
    Merged,
    /// Its merge onto the target conflicted.
    Conflict,
    /// The worker exited non-zero or could not be started; its attempt (if any) is kept.
    Failed,
    /// The worker ran past its timeout and its whole process tree was killed.
    TimedOut,
    /// The user cancelled the run (Ctrl-C or a cancel command) and the worker was killed.
    Cancelled,
    /// A `[budget]` cap (the task's or the run's cost or tokens) was crossed: no further attempt started, a running
    /// one was stopped; its work is kept like any other.
    OverBudget,
    /// The ccfan process that owned the task ended while the task was in flight.
    Interrupted,
    /// ccfan itself could not carry the task (e.g. the worktree could not be created).
    Error,
    /// Never started: a prerequisite (`after`) ended without landing, so its work is not there to build on.
    Skipped,
    /// Plan mode: its worker wrote a plan without changing anything; it waits for a person to approve or reject
    /// it (`ccfan approve`, `ccfan reject`).
    Planned,
    /// Plan mode: a person rejected its plan; it never ran.
    Rejected,
    /// Best-of-N: the gate accepted it, but another candidate of its task was chosen to land; its work is kept on
    /// its salvage refs.
    NotChosen,
}

impl TaskState {
    /// Every state, in life-cycle order.
    pub const ALL: [TaskState; 23] = [
        TaskState::Queued,
        TaskState::Waiting,
        TaskState::Planned,
        TaskState::Preparing,
        TaskState::Running,
        TaskState::Completed,
        TaskState::Verifying,
        TaskState::Accepted,
        TaskState::Rework,
        TaskState::RolledBack,
        TaskState::Blocked,
        TaskState::Merging,
        TaskState::Merged,
        TaskState::Conflict,
        TaskState::Failed,
        TaskState::TimedOut,
        TaskState::Cancelled,
        TaskState::OverBudget,
        TaskState::Interrupted,
        TaskState::Error,
        TaskState::Skipped,
        TaskState::Rejected,
        TaskState::NotChosen,
    ];

    /// The name stored in the database and shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Waiting => "waiting",
            TaskState::Preparing => "preparing",
            TaskState::Running => "running",
            TaskState::Completed => "completed",
            TaskState::Verifying => "verifying",
            TaskState::Accepted => "accepted",
            TaskState::Rework => "rework",
            TaskState::RolledBack => "rolled_back",
            TaskState::Blocked => "blocked",
            TaskState::Merging => "merging",
            TaskState::Merged => "merged",
            TaskState::Conflict => "conflict",
            TaskState::Failed => "failed",
            TaskState::TimedOut => "timed_out",
            TaskState::Cancelled => "cancelled",
            TaskState::OverBudget => "over_budget",
            TaskState::Interrupted => "interrupted",
            TaskState::Error => "error",
            TaskState::Skipped => "skipped",
            TaskState::Planned => "planned",
            TaskState::Rejected => "rejected",
            TaskState::NotChosen => "not_chosen",
        }
    }

    /// Parses a stored state name.
    pub fn parse(name: &str) -> Option<TaskState> {
        TaskState::ALL
            .into_iter()
            .find(|state| state.as_str() == name)
    }

    /// Whether no ccfan process will move the task any further by itself.
    pub fn is_final(self) -> bool {
        match self {
            TaskState::Queued
            | TaskState::Waiting
            | TaskState::Preparing
            | TaskState::Running
            | TaskState::Completed
            | TaskState::Verifying
            | TaskState::Rework
            | TaskState::Merging
            | TaskState::Conflict => false,
            TaskState::Accepted
            | TaskState::RolledBack
            | TaskState::Blocked
            | TaskState::Merged
            | TaskState::Failed
            | TaskState::TimedOut
            | TaskState::Cancelled
            | TaskState::OverBudget
            | TaskState::Interrupted
            | TaskState::Error
            | TaskState::Skipped
            | TaskState::Planned
            | TaskState::Rejected
            | TaskState::NotChosen => true,
        }
    }

    /// Whether the task landed: merged onto the target (counts towards exit code 0).
    pub fn is_success(self) -> bool {
        match self {
            TaskState::Merged => true,
            TaskState::Queued
            | TaskState::Waiting
            | TaskState::Skipped
            | TaskState::Planned
            | TaskState::Rejected
            | TaskState::NotChosen
            | TaskState::Preparing
            | TaskState::Running
            | TaskState::Completed
            | TaskState::Verifying
            | TaskState::Accepted
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
            | TaskState::Error => false,
        }
    }

    /// Whether the gate accepted the task (merged or not): what `--no-merge` runs aim for.
    pub fn is_landed_or_accepted(self) -> bool {
        self.is_success() || self == TaskState::Accepted
    }
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// State of a whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// A ccfan process is carrying it.
    Running,
    /// Every task reached a final state.
    Finished,
    /// The owning process ended before the run finished.
    Interrupted,
}

impl RunState {
    /// The name stored in the database and shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Finished => "finished",
            RunState::Interrupted => "interrupted",
        }
    }

    /// Parses a stored run state name.
    pub fn parse(name: &str) -> Option<RunState> {
        [RunState::Running, RunState::Finished, RunState::Interrupted]
            .into_iter()
            .find(|state| state.as_str() == name)
    }
}

/// The task state (and reason) that a worker's exit leads to, before the gate.
pub fn outcome_state(
    exit: &ExitStatus,
    timeout: std::time::Duration,
) -> (TaskState, Option<String>) {
    match exit {
        ExitStatus::Code { code: 0 } => (TaskState::Completed, None),
        ExitStatus::Code { code } => (
            TaskState::Failed,
            Some(format!("the worker exited with code {code}")),
        ),
        ExitStatus::Signal { signal } => (
            TaskState::Failed,
            Some(format!("the worker was killed by signal {signal}")),
        ),
        ExitStatus::TimedOut => (
            TaskState::TimedOut,
            Some(format!(
                "the worker ran past its timeout of {} and its process tree was killed",
                humantime::format_duration(timeout)
            )),
        ),
        ExitStatus::Cancelled => (
            TaskState::Cancelled,
            Some("cancelled; its process tree was killed".to_string()),
        ),
        ExitStatus::OverLimit { limit } => (
            TaskState::Failed,
            Some(format!(
                "the worker went past its {limit} limit and its process tree was killed"
            )),
        ),
        ExitStatus::SpawnFailed { message } => (
            TaskState::Failed,
            Some(format!("the worker could not be started: {message}")),
        ),
        ExitStatus::Lost { message } => (
            TaskState::Interrupted,
            Some(format!(
                "the link to where the worker ran was lost ({message}); its output so far is in its log — `ccfan \
                 retry` runs it again"
            )),
        ),
    }
}
