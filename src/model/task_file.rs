//! What a worker is handed in `CCFAN_TASK_FILE`: its task, the findings to fix on a rework, and what the tasks it
//! waited for (`after`) changed. A stable JSON document, so command workers in any language can read it.

use serde::{Deserialize, Serialize};

use super::{CommitId, RunId, TaskId};

/// The JSON handed to a worker in `CCFAN_TASK_FILE`.
#[derive(Debug, Clone, Serialize)]
pub struct TaskFileDoc<'a> {
    /// Schema version of this document.
    pub schema: u32,
    /// Run id.
    pub run_id: &'a RunId,
    /// Task id.
    pub task_id: &'a TaskId,
    /// Attempt number, starting at 1.
    pub attempt: u32,
    /// What to achieve.
    pub goal: &'a str,
    /// Allowed globs.
    pub allowed: &'a [String],
    /// Denied globs.
    pub denied: &'a [String],
    /// Constraints.
    pub constraints: &'a [String],
    /// Acceptance criteria.
    pub acceptance: &'a [String],
    /// Findings to fix on a rework (empty on a first attempt).
    pub rework: Vec<serde_json::Value>,
    /// What the tasks it waited for (`after`) changed; its tree already holds their work.
    #[serde(skip_serializing_if = "<[Handoff]>::is_empty")]
    pub after: &'a [Handoff],
    /// Plan mode: `plan` while the worker only plans (its tree is read-only), `execute` once a person approved
    /// its plan (then in `plan`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<&'static str>,
    /// Plan mode, executing: the approved plan to follow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<&'a str>,
    /// Plan mode, executing: the approver's note.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan_note: Option<&'a str>,
}

/// Where an attempt stands in plan mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanStep<'a> {
    /// Not a plan-mode task.
    None,
    /// It only plans: its tree is read-only, and what it writes is its plan.
    Planning,
    /// It executes the plan a person approved, with their note.
    Approved {
        /// The plan.
        plan: &'a str,
        /// The note.
        note: Option<&'a str>,
    },
}

/// What a prerequisite changed, as told to the task that waited for it (`after`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handoff {
    /// The prerequisite.
    pub task: TaskId,
    /// Its goal (the first 300 characters).
    pub goal: String,
    /// The commit that holds its work: its landing commit, or (not landed, `--no-merge`) its accepted attempt.
    pub commit: CommitId,
    /// The branch it landed on (absent when it was only accepted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub landed_on: Option<String>,
    /// The files it changed (at most 100, names redacted).
    pub files: Vec<String>,
    /// How many more files it changed than `files` lists.
    #[serde(skip_serializing_if = "is_zero")]
    pub more_files: usize,
}

fn is_zero(count: &usize) -> bool {
    *count == 0
}
