//! The task lifecycle as pure functions over values: which follow-up operation each task state allows (a typed
//! refusal otherwise), what an attempt's verdict leads to next, and the rework budget the gate's `decide` is
//! given. Every state and verdict is matched exhaustively, so a new one breaks the build where it must be handled,
//! and the whole table is unit-tested without starting a process.

use std::time::Duration;

use crate::model::{RunId, TaskId, TaskState};
use crate::report::{Finding, Verdict};

/// A follow-up command on one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `ccfan rework --note`: another attempt with a person's note.
    Rework,
    /// `ccfan retry`: a fresh rework budget for a task that stopped short.
    Retry,
    /// `ccfan accept --force`: land over the gate's verdict.
    Accept,
    /// `ccfan rollback`: not merged (a merged task is reverted).
    Rollback,
    /// `ccfan approve`: plan mode, run the task with its approved plan.
    Approve,
    /// `ccfan reject`: plan mode, end the task without running it.
    Reject,
}

impl Operation {
    /// What the operation does to a task, as in "cannot be …".
    fn past(self) -> &'static str {
        match self {
            Operation::Rework => "reworked",
            Operation::Retry => "retried",
            Operation::Accept => "accepted",
            Operation::Rollback => "rolled back",
            Operation::Approve => "approved",
            Operation::Reject => "rejected",
        }
    }

    /// The command's name.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Rework => "rework",
            Operation::Retry => "retry",
            Operation::Accept => "accept",
            Operation::Rollback => "rollback",
            Operation::Approve => "approve",
            Operation::Reject => "reject",
        }
    }
}

/// Why a follow-up command did nothing: the command exits 1 with this, and MCP maps it to its error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The task is still moving (queued, running, verifying, merging, …).
    InProgress {
        /// The task.
        task: TaskId,
        /// Its state.
        state: TaskState,
        /// What was asked.
        op: Operation,
    },
    /// The task is merged: a rework needs a rollback first, and an accept has nothing left to do.
    Merged {
        /// The task.
        task: TaskId,
        /// What was asked.
        op: Operation,
    },
    /// Retry is for tasks that stopped short.
    NotRetryable {
        /// The task.
        task: TaskId,
        /// Its state.
        state: TaskState,
    },
    /// There is no recorded change to accept.
    NoChange {
        /// The task.
        task: TaskId,
    },
    /// The task landed no commit of its own: its change was already on the target.
    LandedNothing {
        /// The task.
        task: TaskId,
        /// The task whose landing brought the change (`None`: it was there before).
        with: Option<TaskId>,
    },
    /// A revert could not be made (the branch is gone or moved on, the revert conflicts, …).
    Revert {
        /// The task.
        task: TaskId,
        /// What git said.
        why: String,
    },
    /// Nothing carries the run: nothing to cancel.
    NotRunning {
        /// The run.
        run: RunId,
        /// Its state.
        state: String,
    },
    /// The tasks were asked to stop and had not stopped within the wait.
    StillStopping {
        /// How long ccfan waited.
        waited: Duration,
    },
    /// A task that waits for others (`after`) cannot start: their work is not where it would start from.
    Prerequisites {
        /// The task.
        task: TaskId,
        /// Why (which prerequisite, in which state).
        why: String,
    },
    /// Plan mode: why a decision on a plan (or an operation on a task with one) did nothing.
    Plan(PlanRefusal),
    /// Several tasks refused (a rollback of a whole run).
    Several(Vec<Refusal>),
}

/// Why plan mode refused: a task whose plan waits for a person (or was rejected) is only approved or rejected,
/// and an approval names the plan it approves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanRefusal {
    /// The task's plan waits for approval (or was rejected), so it cannot be reworked, retried or
    /// accepted.
    PlanOnly {
        /// The task.
        task: TaskId,
        /// Its state (planned or rejected).
        state: TaskState,
        /// What was asked.
        op: Operation,
    },
    /// Approve and reject act only on a task whose plan waits for a person.
    NotPlanned {
        /// The task.
        task: TaskId,
        /// Its state.
        state: TaskState,
        /// What was asked.
        op: Operation,
    },
    /// The plan the person read is not the stored one (it was made again since): nothing was approved.
    PlanChanged {
        /// The task.
        task: TaskId,
        /// The SHA-256 (or prefix) the person gave.
        shown: String,
        /// The stored plan's.
        stored: String,
    },
    /// Approve or reject of a whole run in which no task's plan waits for a person.
    NothingPlanned {
        /// The run.
        run: RunId,
    },
}

impl std::fmt::Display for PlanRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlanRefusal::PlanOnly {
                task,
                state: TaskState::Planned,
                op,
            } => write!(
                f,
                "task {task} has a plan waiting for approval, so it cannot be {}: `ccfan approve <run>/{task}` runs it, `ccfan reject` ends it",
                op.past()
            ),
            PlanRefusal::PlanOnly { task, state, op } => write!(
                f,
                "task {task} is {state}: its plan was rejected, so it is never {}; delegate it again",
                op.past()
            ),
            PlanRefusal::NotPlanned { task, state, op } => write!(
                f,
                "task {task} is {state}: {} is for a task whose plan waits for approval (run with --plan)",
                op.name()
            ),
            PlanRefusal::PlanChanged {
                task,
                shown,
                stored,
            } => write!(
                f,
                "task {task}'s plan is {}, not the {shown} you read (it was planned again, or the prefix is under 8 digits): read it again (`ccfan status <run>/{task}`) and approve that",
                &stored[..12.min(stored.len())]
            ),
            PlanRefusal::NothingPlanned { run } => write!(
                f,
                "run {run} has no task whose plan waits for approval (`ccfan status {run}` shows where they are)"
            ),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::InProgress {
                task,
                state,
                op: Operation::Rollback,
            } => write!(
                f,
                "task {task} is {state}: `ccfan cancel` it first, then roll it back"
            ),
            Refusal::InProgress {
                task,
                state,
                op:
                    Operation::Rework
                    | Operation::Retry
                    | Operation::Accept
                    | Operation::Approve
                    | Operation::Reject,
            } => write!(
                f,
                "task {task} is {state}: wait for it to finish, or `ccfan cancel` it first"
            ),
            Refusal::Merged {
                task,
                op: Operation::Rework,
            } => write!(
                f,
                "task {task} is merged: roll it back first (`ccfan rollback <run>/{task}`), then rework it"
            ),
            Refusal::Merged {
                task,
                op:
                    Operation::Accept
                    | Operation::Retry
                    | Operation::Rollback
                    | Operation::Approve
                    | Operation::Reject,
            } => write!(f, "task {task} is merged already"),
            Refusal::NotRetryable { task, state } => {
                let hint = match state {
                    TaskState::Accepted => "; `ccfan merge` lands an accepted one",
                    _ => "; `ccfan rework --note` asks for another attempt of any finished task",
                };
                write!(
                    f,
                    "task {task} is {state}: retry is for blocked, failed, interrupted or cancelled tasks{hint}"
                )
            }
            Refusal::NoChange { task } => write!(f, "task {task} has no recorded change to accept"),
            Refusal::LandedNothing { task, with } => {
                let came = match with {
                    None => "it was there before".to_string(),
                    Some(other) => {
                        format!("it came with task {other}; roll that one back to undo it")
                    }
                };
                write!(
                    f,
                    "task {task} landed no commit of its own, since its change was already on the target ({came})"
                )
            }
            Refusal::Revert { task: _, why } => f.write_str(why),
            Refusal::Plan(refusal) => refusal.fmt(f),
            Refusal::Prerequisites { task, why } => write!(
                f,
                "task {task} cannot start: {why}; settle its prerequisites first (retry, rework or accept them)"
            ),
            Refusal::NotRunning { run, state } => {
                write!(
                    f,
                    "run {run} is not running (it is {state}): nothing to cancel"
                )
            }
            Refusal::StillStopping { waited } => write!(
                f,
                "the tasks were asked to stop but had not stopped after {}",
                humantime::format_duration(*waited)
            ),
            Refusal::Several(all) => {
                let lines: Vec<String> = all.iter().map(ToString::to_string).collect();
                f.write_str(&lines.join("\n"))
            }
        }
    }
}

/// Where a task is in its life, as the follow-up commands see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Something is working on it (queued, preparing, running, verifying, landing).
    Moving,
    /// Between two attempts: moving while its process lives, and left there when that process died.
    BetweenAttempts,
    /// Its landing conflicted and waits for a rework on the new tip.
    Conflicted,
    /// Accepted by the gate, not landed.
    Accepted,
    /// Landed on its target.
    Merged,
    /// Rolled back.
    RolledBack,
    /// Stopped short: blocked, failed, timed out, cancelled, interrupted, or ccfan's own error.
    StoppedShort,
    /// Plan mode: its plan waits for a person.
    Planned,
    /// Plan mode: its plan was rejected; it never runs.
    Rejected,
}

fn phase(state: TaskState) -> Phase {
    match state {
        TaskState::Queued
        | TaskState::Waiting
        | TaskState::Preparing
        | TaskState::Running
        | TaskState::Completed
        | TaskState::Verifying
        | TaskState::Merging => Phase::Moving,
        TaskState::Rework => Phase::BetweenAttempts,
        TaskState::Conflict => Phase::Conflicted,
        TaskState::Accepted => Phase::Accepted,
        TaskState::Merged => Phase::Merged,
        // Not chosen is not merged, its work kept: like a rollback, a rework or an accept may follow.
        TaskState::RolledBack | TaskState::NotChosen => Phase::RolledBack,
        TaskState::Blocked
        | TaskState::Failed
        | TaskState::TimedOut
        | TaskState::Cancelled
        | TaskState::OverBudget
        | TaskState::Interrupted
        | TaskState::Error
        | TaskState::Skipped => Phase::StoppedShort,
        TaskState::Planned => Phase::Planned,
        TaskState::Rejected => Phase::Rejected,
    }
}

/// Whether `op` may act on task `task` in `state`; the typed refusal otherwise. (A rollback of a merged task is
/// allowed: it becomes a revert.)
pub fn allows(op: Operation, task: &TaskId, state: TaskState) -> Result<(), Refusal> {
    let in_progress = || Refusal::InProgress {
        task: task.clone(),
        state,
        op,
    };
    let plan_only = || {
        Refusal::Plan(PlanRefusal::PlanOnly {
            task: task.clone(),
            state,
            op,
        })
    };
    let not_planned = || {
        Refusal::Plan(PlanRefusal::NotPlanned {
            task: task.clone(),
            state,
            op,
        })
    };
    match (op, phase(state)) {
        (Operation::Approve | Operation::Reject, Phase::Planned) => Ok(()),
        (Operation::Approve | Operation::Reject, _) => Err(not_planned()),
        (
            Operation::Retry | Operation::Rework | Operation::Accept,
            Phase::Planned | Phase::Rejected,
        ) => Err(plan_only()),
        // A plan is decided by approve or reject, never by a rollback (which a rework could follow).
        (Operation::Rollback, Phase::Planned | Phase::Rejected) => Err(plan_only()),
        (Operation::Retry, Phase::StoppedShort | Phase::Conflicted | Phase::BetweenAttempts) => {
            Ok(())
        }
        (Operation::Retry, Phase::Moving | Phase::Accepted | Phase::Merged | Phase::RolledBack) => {
            Err(Refusal::NotRetryable {
                task: task.clone(),
                state,
            })
        }
        (
            Operation::Rework | Operation::Accept | Operation::Rollback,
            Phase::Moving | Phase::BetweenAttempts,
        )
        | (Operation::Rollback, Phase::Conflicted) => Err(in_progress()),
        (Operation::Rework | Operation::Accept, Phase::Merged) => Err(Refusal::Merged {
            task: task.clone(),
            op,
        }),
        (Operation::Rework | Operation::Accept, Phase::Conflicted)
        | (
            Operation::Rework | Operation::Accept | Operation::Rollback,
            Phase::Accepted | Phase::RolledBack | Phase::StoppedShort,
        )
        | (Operation::Rollback, Phase::Merged) => Ok(()),
    }
}

/// The rework budget an attempt is judged with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// A worker's attempt: the `attempt`-th of its current budget, which allows `max_reworks` reworks.
    Attempt {
        /// 1-based, within the current budget.
        attempt: u32,
        /// Reworks the budget allows.
        max_reworks: u32,
    },
    /// A person's change (the hooks' gate): a blocking finding is only what it is, never "budget spent".
    Unbounded,
}

/// What an attempt's verdict leads to.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Another attempt with these findings.
    Rework(Vec<Finding>),
    /// Stop: the task was cancelled before its rework could start.
    CancelledBeforeRework,
    /// Stop: rolled back; the worktree goes back to the chain's base (every attempt stays on its salvage ref).
    RolledBack,
    /// Stop where the verdict leaves it: accepted, or blocked with its work in place.
    Settled,
}

/// What follows an attempt's `verdict`, given whether the task was cancelled meanwhile.
pub fn after_attempt(verdict: &Verdict, cancelled: bool) -> Next {
    match verdict {
        Verdict::Rework { findings } if !cancelled => Next::Rework(findings.clone()),
        Verdict::Rework { .. } => Next::CancelledBeforeRework,
        Verdict::Rollback {
            budget_spent: false,
            ..
        } => Next::RolledBack,
        Verdict::Accept
        | Verdict::Rollback {
            budget_spent: true, ..
        } => Next::Settled,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::fixtures::task;
    use crate::report::Stage;

    #[test]
    fn every_state_and_operation_has_an_answer() {
        use Operation::{Accept, Approve, Reject, Retry, Rework, Rollback};
        let allowed = |op, state| allows(op, &task("t"), state).is_ok();
        for state in TaskState::ALL {
            let planned = state == TaskState::Planned;
            // A plan waiting for a person is only approved or rejected; a rejected one never runs.
            assert_eq!(allowed(Approve, state), planned, "{state}");
            assert_eq!(allowed(Reject, state), planned, "{state}");
            if matches!(state, TaskState::Planned | TaskState::Rejected) {
                for op in [Rework, Retry, Accept, Rollback] {
                    assert!(
                        matches!(
                            allows(op, &task("t"), state),
                            Err(Refusal::Plan(PlanRefusal::PlanOnly { .. }))
                        ),
                        "{state} {op:?}"
                    );
                }
                continue;
            }
            let moving = !state.is_final() && state != TaskState::Conflict;
            // Nothing acts on a task something else is working on (a task left in `rework` may be retried).
            assert_eq!(
                allowed(Rework, state),
                !moving && state != TaskState::Merged,
                "{state}"
            );
            assert_eq!(
                allowed(Accept, state),
                !moving && state != TaskState::Merged,
                "{state}"
            );
            assert_eq!(allowed(Rollback, state), state.is_final(), "{state}");
            let retryable = matches!(
                state,
                TaskState::Blocked
                    | TaskState::Failed
                    | TaskState::TimedOut
                    | TaskState::Interrupted
                    | TaskState::Cancelled
                    | TaskState::OverBudget
                    | TaskState::Error
                    | TaskState::Skipped
                    | TaskState::Conflict
                    | TaskState::Rework
            );
            assert_eq!(allowed(Retry, state), retryable, "{state}");
        }
        assert!(matches!(
            allows(Rework, &task("t"), TaskState::Merged),
            Err(Refusal::Merged { .. })
        ));
        assert!(matches!(
            allows(Retry, &task("t"), TaskState::Accepted),
            Err(Refusal::NotRetryable { .. })
        ));
        assert!(matches!(
            allows(Accept, &task("t"), TaskState::Running),
            Err(Refusal::InProgress { .. })
        ));
        assert!(
            allows(Retry, &task("t"), TaskState::Accepted)
                .unwrap_err()
                .to_string()
                .contains("`ccfan merge` lands an accepted one")
        );
        assert!(
            allows(Rollback, &task("t"), TaskState::Verifying)
                .unwrap_err()
                .to_string()
                .contains("then roll it back")
        );
    }

    #[test]
    fn what_follows_each_verdict_with_and_without_cancellation() {
        let finding = Finding::error(Stage::Scope, "not-allowed", "x");
        let rework = Verdict::Rework {
            findings: vec![finding.clone()],
        };
        let rollback = |budget_spent| Verdict::Rollback {
            reasons: vec!["r".into()],
            budget_spent,
        };
        for cancelled in [false, true] {
            assert_eq!(after_attempt(&Verdict::Accept, cancelled), Next::Settled);
            assert_eq!(after_attempt(&rollback(true), cancelled), Next::Settled);
            assert_eq!(after_attempt(&rollback(false), cancelled), Next::RolledBack);
        }
        assert_eq!(after_attempt(&rework, false), Next::Rework(vec![finding]));
        assert_eq!(after_attempt(&rework, true), Next::CancelledBeforeRework);
    }
}
