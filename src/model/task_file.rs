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
    /// its plan (then in `plan`); `review` for a reviewer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<&'static str>,
    /// Plan mode, executing: the approved plan to follow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<&'a str>,
    /// Plan mode, executing: the approver's note.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan_note: Option<&'a str>,
    /// A review (`mode` is `review`): what to review; the answer goes to `CCFAN_REPORT_FILE` (or stdout).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub review: Option<&'a ReviewBrief>,
}

/// What a worker run is for: the task's work, plan mode's two steps, or a review of another worker's change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptMode<'a> {
    /// The task's work (not a plan-mode task).
    Work,
    /// It only plans: its tree is read-only, and what it writes is its plan.
    Planning,
    /// It executes the plan a person approved, with their note.
    Approved {
        /// The plan.
        plan: &'a str,
        /// The note.
        note: Option<&'a str>,
    },
    /// It reviews a change, read-only, and answers with a verdict.
    Review(&'a ReviewBrief),
}

/// What a reviewer is handed: the prompt (agents), the diff as a file, the files changed and the gate's findings so
/// far (in `CCFAN_TASK_FILE` as `review`, for command reviewers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReviewBrief {
    /// The agent reviewer's prompt.
    #[serde(skip)]
    pub prompt: String,
    /// The whole diff from base to attempt (secrets redacted).
    pub diff_file: std::path::PathBuf,
    /// The files the change touches.
    pub changed: Vec<String>,
    /// The gate's findings so far (none blocking: the review runs once the mechanical stages passed).
    pub findings: Vec<crate::report::Finding>,
    /// What the review of the previous attempt said, when there was one.
    pub earlier: Vec<crate::report::Finding>,
    /// The answer's JSON format.
    pub answer_format: &'static str,
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
