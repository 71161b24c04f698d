//! The MCP tools' arguments and results: JSON shapes with schemas (what `tools/list` publishes as input and output
//! schemas). Field names follow the CLI's `--json` documents (`run_id`, `task_id`, `state`, `verdict`, …).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::{CommitId, RunId, TaskId};
use crate::report::{DiffSummary, Finding, StageStatus, Verdict};
use crate::secrets::FileScanReport;

/// One task to delegate.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DelegateTask {
    /// A short id, unique in this call (letters, digits, `-`, `_`); default `task-1`, `task-2`, ….
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<TaskId>,
    /// What the worker must achieve, stated fully: the worker sees only this, the scope and the constraints.
    pub goal: String,
    /// Globs of the files the task may change (e.g. `src/parser/**`); a change outside them blocks the task.
    pub allowed: Vec<String>,
    /// Globs the task must not change even inside `allowed` (secrets, lock files, …).
    #[serde(default)]
    pub denied: Vec<String>,
    /// Rules the worker must follow ("keep the public API").
    #[serde(default)]
    pub constraints: Vec<String>,
    /// What done means ("cargo test passes", "a test covers the bug").
    #[serde(default)]
    pub acceptance: Vec<String>,
    /// The worker profile (from the repository's ccfan.toml); default: the policy's default worker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// The attempt timeout, e.g. `20m` (default: the policy's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Tasks of this call to wait for: it starts from their work once they land (skipped if one does not).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<TaskId>,
    /// Run as 2-8 candidates `<id>-cN`; the best one the gate accepts lands.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidates: Option<u32>,
    /// One candidate per worker profile named.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<Vec<String>>,
}

/// `delegate` arguments.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DelegateParams {
    /// Repository path (any folder in it; default: the server's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// The tasks, run in parallel, each in its own git worktree from one base commit.
    pub tasks: Vec<DelegateTask>,
    /// Your id for this request: sending it again returns the run it started instead of starting another.
    pub client_request_id: Option<String>,
    /// The commit every worktree starts from (default: the policy's `run.base`, HEAD).
    pub base: Option<String>,
    /// Land accepted tasks on this branch (default: the branch checked out when the run starts).
    pub into: Option<String>,
    /// Land tasks as soon as the gate accepts them. Default false: they stop at `accepted` and you call `merge`
    /// after reading the evidence.
    #[serde(default)]
    pub merge: bool,
    /// Tasks at a time (default: the policy's `run.jobs`, else the machine's cores).
    pub jobs: Option<u16>,
    /// Plan first: each worker writes a plan without changing anything and the task waits `planned` for
    /// `approve` (or `reject`).
    #[serde(default)]
    pub plan: bool,
}

/// A delegated task that was not started because an identical one is active.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Duplicate {
    /// The task in this request.
    pub task_id: TaskId,
    /// The run where the identical task is active.
    pub active_run: RunId,
    /// Its id there.
    pub active_task: TaskId,
}

/// `delegate` result.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct DelegateResult {
    /// The run carrying the tasks (`null` when every task duplicated an active one).
    pub run_id: Option<RunId>,
    /// Task ids started in the run (poll them with `status`).
    pub task_ids: Vec<TaskId>,
    /// True when `client_request_id` named an earlier request: this is its run, nothing new started.
    pub existing: bool,
    /// Tasks not started because an identical task is already active.
    pub duplicates: Vec<Duplicate>,
    /// What to call next.
    pub next: String,
}

/// `status` arguments.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusParams {
    /// Repository path (any folder in it; default: the server's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// The run.
    pub run_id: RunId,
    /// Only this task.
    pub task_id: Option<TaskId>,
    /// Wait up to this many seconds (at most 300) for a task to change or the run to finish, with progress
    /// notifications. 0 (default) answers at once.
    #[serde(default)]
    pub wait_seconds: u32,
    /// Add the full run view (`ccfan status --json`) or, with `task_id`, the task's every transition.
    #[serde(default)]
    pub detail: bool,
}

/// One task, compact.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct TaskStatus {
    /// Task id.
    pub id: TaskId,
    /// queued, waiting, preparing, running, verifying, rework, accepted, merging, merged, blocked, rolled_back,
    /// failed, timed_out, conflict, cancelled, skipped, interrupted, error, …
    pub state: String,
    /// The latest gate verdict: accept, rework or rollback.
    pub verdict: Option<String>,
    /// Attempts started.
    pub attempt: u32,
    /// Seconds of the latest attempt so far.
    pub elapsed_secs: Option<f64>,
    /// The last thing that happened (the agent's activity while it runs, else the reason of the last change).
    pub last_event: Option<String>,
    /// Whether the task reached a final state.
    pub done: bool,
    /// While `waiting`: the tasks it still waits for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waits_for: Vec<TaskId>,
    /// With a review stage: who reviews, how the latest review ended, and what the reviews cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<String>,
}

/// `status` result.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct StatusResult {
    /// The run.
    pub run_id: RunId,
    /// running, finished or interrupted.
    pub state: String,
    /// True when nothing is in flight: every task final and no ccfan process carries the run.
    pub done: bool,
    /// True when something changed while waiting.
    pub changed: bool,
    /// Seconds waited.
    pub waited_secs: f64,
    /// Tasks per state.
    pub counts: BTreeMap<String, usize>,
    /// US dollars the run's agent attempts cost so far (`detail`: the ledger, with unpriced attempts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// The tasks.
    pub tasks: Vec<TaskStatus>,
    /// With `detail`: the full run view, or the task's transitions (left out past 24 KiB, see `note`).
    pub detail: Option<serde_json::Value>,
    /// Set when `detail` was left out for its size, saying how to get it in parts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `verify` arguments.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyParams {
    /// Repository path (any folder in it; default: the server's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// The run.
    pub run_id: RunId,
    /// Only this task.
    pub task_id: Option<TaskId>,
    /// Run the gate again (diff, scope, secrets, tests, …) with the current policy instead of returning the
    /// stored reports. Takes as long as the tests.
    #[serde(default)]
    pub rerun: bool,
    /// Every finding, stage note and per-file diff. Default: a summary per task (first findings, blocking first;
    /// notes of failed stages, cut; diff counts and risk).
    #[serde(default)]
    pub detail: bool,
}

/// One stage's outcome.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct StageOutcome {
    /// The stage name.
    pub stage: String,
    /// passed, failed, skipped, error, …
    pub status: StageStatus,
    /// A remark (why skipped, the test output tail, …), redacted.
    pub note: Option<String>,
}

/// One task's gate evidence.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct TaskEvidence {
    /// Task id.
    pub task_id: TaskId,
    /// The attempt checked.
    pub attempt: u32,
    /// The verdict with its findings or reasons.
    pub verdict: Verdict,
    /// The findings (secrets shown redacted): all with `detail`, else the first few, blocking ones first.
    pub findings: Vec<Finding>,
    /// How many findings there are in all.
    pub findings_total: usize,
    /// Each stage's outcome.
    pub stages: Vec<StageOutcome>,
    /// Files changed, lines added and removed, risk.
    pub diff: DiffSummary,
}

/// `verify` result.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct VerifyResult {
    /// The run.
    pub run_id: RunId,
    /// True when the gate ran now; false for the stored reports.
    pub rerun: bool,
    /// Evidence per task with a recorded attempt.
    pub tasks: Vec<TaskEvidence>,
    /// Set when the result was cut to its size cap or summarised, saying how to get the rest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `diff` arguments.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiffParams {
    /// Repository path (any folder in it; default: the server's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// The run.
    pub run_id: RunId,
    /// The task.
    pub task_id: TaskId,
    /// The attempt (default: the latest with a change).
    pub attempt: Option<u32>,
    /// Cap of the patch text in bytes (default 65536, at most 1048576).
    pub max_bytes: Option<usize>,
}

/// `diff` result.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct DiffResult {
    /// The run.
    pub run_id: RunId,
    /// The task.
    pub task_id: TaskId,
    /// The attempt shown.
    pub attempt: u32,
    /// The commit the attempt started from.
    pub base: CommitId,
    /// The attempt's commit.
    pub commit: CommitId,
    /// Files changed with line counts.
    pub files: Vec<crate::git::FileChange>,
    /// Lines added.
    pub lines_added: usize,
    /// Lines removed.
    pub lines_removed: usize,
    /// The unified patch, secrets redacted.
    pub patch: String,
    /// True when the patch was cut at `max_bytes`.
    pub truncated: bool,
    /// Secrets redacted in the patch.
    pub redacted: usize,
    /// Set when the attempt shown is not the task's latest, with why (the later ones changed nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `scan` arguments.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScanParams {
    /// Repository path (any folder in it; default: the server's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// Files or folders, relative to the repository root (folders honour .gitignore). Default: the whole
    /// repository's working tree.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Instead: scan the lines added by each commit of a git range (`A..B`, or a revision for all its history).
    pub range: Option<String>,
}

/// `scan` result: the same document as `ccfan scan --json`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ScanResult {
    /// Secrets found are shown redacted, with fingerprints.
    #[serde(flatten)]
    pub report: FileScanReport,
    /// Hits found in all (the list stops at 200), when more were found than listed; `ccfan scan --json` lists all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hits_total: Option<usize>,
    /// Set when lists were cut, saying how to get the rest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `check_scope` arguments.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckScopeParams {
    /// Repository path (any folder in it; default: the server's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// Repository-relative paths to check.
    pub paths: Vec<String>,
    /// Allowed globs (as in `delegate`). Leave out to use a stored task's.
    #[serde(default)]
    pub allowed: Vec<String>,
    /// Denied globs.
    #[serde(default)]
    pub denied: Vec<String>,
    /// Check against this run's task instead (with `task_id`).
    pub run_id: Option<RunId>,
    /// The task whose scope to use.
    pub task_id: Option<TaskId>,
}

/// One path's answer.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PathScope {
    /// The path.
    pub path: String,
    /// Whether a task with this scope may change it.
    pub allowed: bool,
    /// Why not (the rule and message the gate would report).
    pub rule: Option<String>,
    /// The gate's message.
    pub message: Option<String>,
}

/// `check_scope` result.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CheckScopeResult {
    /// True when every path is allowed.
    pub all_allowed: bool,
    /// Per path.
    pub paths: Vec<PathScope>,
}

/// Arguments naming one task.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskParams {
    /// Repository path (any folder in it; default: the server's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// The run.
    pub run_id: RunId,
    /// The task.
    pub task_id: TaskId,
    /// Seconds (≤ 300) to wait for it to finish; 0 (default): answer once started.
    #[serde(default)]
    pub wait_seconds: u32,
}

/// `rework` arguments.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReworkParams {
    /// Repository path (any folder in it; default: the server's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// The run.
    pub run_id: RunId,
    /// The task.
    pub task_id: TaskId,
    /// What the worker must do differently (handed to it as a finding, with its earlier findings).
    pub note: String,
    /// Seconds (≤ 300) to wait for the attempt to finish; 0 (default): answer once started.
    #[serde(default)]
    pub wait_seconds: u32,
}

/// `accept` arguments.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptParams {
    /// Repository path (any folder in it; default: the server's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// The run.
    pub run_id: RunId,
    /// The task.
    pub task_id: TaskId,
    /// Why the gate's verdict is overridden (recorded with the repository user's name).
    pub reason: String,
    /// Seconds (≤ 300) to wait for the landing to finish.
    #[serde(default)]
    pub wait_seconds: u32,
}

/// Arguments naming a run or one task.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetParams {
    /// Repository path (any folder in it; default: the server's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// The run.
    pub run_id: RunId,
    /// Only this task (default: every task of the run).
    pub task_id: Option<TaskId>,
    /// Seconds (≤ 300) to wait for it to finish (default 30).
    pub wait_seconds: Option<u32>,
}

/// `approve` arguments.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveParams {
    /// Repository path (any folder in it; default: the server's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// The run.
    pub run_id: RunId,
    /// Only this task (default: every planned task).
    pub task_id: Option<TaskId>,
    /// Recorded with the decision; given to the worker with the plan.
    pub note: Option<String>,
    /// The SHA-256 (or 8+ digit prefix) of the plan you read: refused if the stored plan is another.
    pub plan_sha256: Option<String>,
    /// Reject instead: the task ends without running.
    #[serde(default)]
    pub reject: bool,
    /// Seconds (≤ 300) to wait for the tasks to finish (default 0).
    #[serde(default)]
    pub wait_seconds: u32,
}

/// `merge` arguments.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MergeParams {
    /// Repository path (any folder in it; default: the server's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// The run.
    pub run_id: RunId,
    /// Land on this branch instead of the run's target.
    pub into: Option<String>,
    /// Seconds (≤ 300) to wait for the landing (which re-runs the gate on the merged tree).
    /// Default 60.
    pub wait_seconds: Option<u32>,
}

/// What a follow-up operation did.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct OperationResult {
    /// rework, retry, accept, rollback, cancel or merge.
    pub operation: String,
    /// The run.
    pub run_id: RunId,
    /// The task, if one.
    pub task_id: Option<TaskId>,
    /// True when the operation ended within the wait; false when it is still going (poll `status`).
    pub finished: bool,
    /// For a merge that finished: whether the merged work is on the target branch. False when the target's checkout
    /// had uncommitted changes in the way and it went to the run's integration branch instead (see `next`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub landed: Option<bool>,
    /// The branch the merged work is on (a finished merge).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub landed_on: Option<String>,
    /// What to do to finish, when the work is not on the target yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// The run afterwards (or now).
    pub status: StatusResult,
}

/// `list_runs` arguments.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListRunsParams {
    /// Repository path (any folder in it; default: the server's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// At most this many runs, newest first (default 20).
    pub limit: Option<usize>,
}

/// One run in the list.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct RunSummary {
    /// The run.
    pub run_id: RunId,
    /// running, finished or interrupted.
    pub state: String,
    /// Start time (RFC 3339).
    pub created_at: String,
    /// Base commit.
    pub base: CommitId,
    /// Tasks per state.
    pub counts: BTreeMap<String, usize>,
}

/// `list_runs` result.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ListRunsResult {
    /// Runs, newest first.
    pub runs: Vec<RunSummary>,
    /// Runs not listed because of `limit`.
    pub more: usize,
}

/// Only the repository.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RepoParams {
    /// Repository path (any folder in it; default: the server's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
}

/// One worker kind.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct WorkerKind {
    /// command, codex or claude.
    pub kind: String,
    /// Whether it can run here.
    pub usable: bool,
    /// Version found (agents).
    pub version: Option<String>,
    /// The program's path (agents).
    pub path: Option<String>,
    /// What is wrong, with the fix.
    pub problem: Option<String>,
    /// The policy's profiles of this kind.
    pub profiles: Vec<String>,
}

/// `health` result.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct HealthResult {
    /// ccfan's version.
    pub version: String,
    /// The repository's working tree.
    pub repository: String,
    /// The state database.
    pub state: String,
    /// The sandbox backend workers run under (`null`: none works, nothing can run).
    pub sandbox: Option<String>,
    /// Why no sandbox works, or the fallback taken.
    pub sandbox_problem: Option<String>,
    /// Worker kinds and whether each can run.
    pub workers: Vec<WorkerKind>,
    /// The policy files in effect.
    pub policy: Vec<String>,
    /// Runs being carried now.
    pub active_runs: usize,
}

/// `gc` arguments.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GcParams {
    /// Repository path (any folder in it; default: the server's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// Only these runs (default: every finished run).
    #[serde(default)]
    pub runs: Vec<RunId>,
    /// Say what would be removed, remove nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// `gc` result: the same document as `ccfan gc --json`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct GcResult {
    /// The report (its lists of removed and skipped tasks cut at 200 entries each).
    pub report: serde_json::Value,
    /// Set when a list was cut, with the full counts and where to see all of it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}
