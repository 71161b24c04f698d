//! Plain data shared by every stage: task specs, states, attempt outcomes and the views that `status` and
//! `--json` show. No I/O lives here, so every stage and both front ends agree on one vocabulary.

pub mod agent;
pub mod ledger;
pub mod plan;
pub mod review;
mod state;
mod task_file;

pub use crate::ids::{AttemptKey, CommitId, IdError, RunId, TaskId};
pub use state::{RunState, TaskState, outcome_state};
pub use task_file::{AttemptMode, Handoff, ReviewBrief, TaskFileDoc};

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Version of the JSON documents printed by `run --json` and `status --json`.
pub const JSON_SCHEMA_VERSION: u32 = 1;

/// How a worker kind is driven.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WorkerKind {
    /// Any program, run with an argv (no shell unless the user writes one).
    Command {
        /// Program and arguments.
        argv: Vec<String>,
    },
    /// The Codex CLI, driven as `codex exec --json`.
    Codex(AgentConfig),
    /// Claude Code, driven as `claude -p --output-format stream-json`.
    Claude(AgentConfig),
}

impl WorkerKind {
    /// The argv of a command worker.
    pub fn command(&self) -> Option<&[String]> {
        match self {
            WorkerKind::Command { argv } => Some(argv),
            WorkerKind::Codex(_) | WorkerKind::Claude(_) => None,
        }
    }

    /// The agent CLI behind this kind, if it is one.
    pub fn agent(&self) -> Option<(agent::Agent, &AgentConfig)> {
        match self {
            WorkerKind::Command { .. } => None,
            WorkerKind::Codex(config) => Some((agent::Agent::Codex, config)),
            WorkerKind::Claude(config) => Some((agent::Agent::Claude, config)),
        }
    }
}

/// How an agent CLI worker (`kind = "codex"` or `"claude"`) is run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentConfig {
    /// The program: a name looked up on the worker's `PATH`, or a path.
    pub program: String,
    /// The model, when the profile names one.
    pub model: Option<String>,
    /// Extra arguments put before the prompt.
    pub args: Vec<String>,
    /// The most model turns one attempt may take.
    pub max_turns: Option<u32>,
    /// How long the agent may keep retrying an unreachable model API, and how many retries it may report, before
    /// ccfan stops the attempt as `agent-api-error` (an agent can retry for minutes, or for ever).
    #[serde(default)]
    pub api_retry: ApiRetryLimit,
}

/// When ccfan gives up on an agent that cannot reach its model API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiRetryLimit {
    /// Retry events at most (the agent's own "Reconnecting…" or `api_retry` lines).
    pub retries: u32,
    /// Time at most from the first retry without an answer in between.
    #[serde(with = "secs")]
    pub window: Duration,
}

impl Default for ApiRetryLimit {
    fn default() -> Self {
        ApiRetryLimit {
            retries: 6,
            window: Duration::from_secs(60),
        }
    }
}

/// A duration stored as whole seconds.
mod secs {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(value: &Duration, to: S) -> Result<S::Ok, S::Error> {
        to.serialize_u64(value.as_secs())
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(from: D) -> Result<Duration, D::Error> {
        <u64 as serde::Deserialize>::deserialize(from).map(Duration::from_secs)
    }
}

/// A resolved worker profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerProfile {
    /// The profile's name in the policy or tasks file.
    pub name: String,
    /// How to run it.
    #[serde(flatten)]
    pub kind: WorkerKind,
    /// Timeout for one attempt, when the task sets none.
    pub timeout: Option<Duration>,
    /// Variables set for the worker.
    pub env: Vec<(String, String)>,
    /// Host variables passed through to the worker by name.
    pub pass_env: Vec<String>,
    /// Whether it reaches the network (`None`: the policy's `sandbox.network`).
    #[serde(default)]
    pub network: Option<bool>,
    /// Paths it may write besides its worktree.
    #[serde(default)]
    pub writable: Vec<std::path::PathBuf>,
}

/// One task, fully resolved from the tasks file, its defaults and the policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Task id (a valid ref component).
    pub id: TaskId,
    /// What the worker must achieve.
    pub goal: String,
    /// Globs of paths the task may touch.
    pub allowed: Vec<String>,
    /// Globs of paths the task must not touch (they win over `allowed`).
    pub denied: Vec<String>,
    /// Free-form constraints handed to the worker.
    pub constraints: Vec<String>,
    /// Acceptance criteria handed to the worker.
    pub acceptance: Vec<String>,
    /// The worker profile that runs it.
    pub worker: WorkerProfile,
    /// Wall-clock limit for one attempt.
    pub timeout: Duration,
    /// Tasks of the same run that must land (or, with `--no-merge`, be accepted) before this one starts; it then
    /// starts from the tip that holds their work.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<TaskId>,
    /// Best-of-N: which task of the tasks file this is a candidate of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<Candidate>,
    /// Who reviews its change once the mechanical stages passed (`[review]`, or the task's `review`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<review::ReviewSpec>,
}

/// One candidate of a best-of-N task (`candidates = N` or `workers = [...]` in the tasks file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Candidate {
    /// The task of the tasks file it is a candidate of.
    pub of: TaskId,
    /// Its number, from 1.
    pub n: u32,
    /// How many candidates the task runs as.
    pub total: u32,
}

/// How a worker process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExitStatus {
    /// It exited with this code.
    Code {
        /// The exit code.
        code: i32,
    },
    /// A signal ended it.
    Signal {
        /// The signal number.
        signal: i32,
    },
    /// It ran past its timeout; ccfan killed its process tree.
    TimedOut,
    /// The run was cancelled; ccfan killed its process tree.
    Cancelled,
    /// It went past a limit of its sandbox (output, memory); ccfan stopped its process tree.
    OverLimit {
        /// Which limit.
        limit: String,
    },
    /// It could not be started.
    SpawnFailed {
        /// Why.
        message: String,
    },
    /// The link to where it ran (a cluster) was lost before it ended: how it ended is not known.
    Lost {
        /// What failed.
        message: String,
    },
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code { code } => write!(f, "exit {code}"),
            ExitStatus::Signal { signal } => write!(f, "signal {signal}"),
            ExitStatus::TimedOut => f.write_str("timed out"),
            ExitStatus::Cancelled => f.write_str("cancelled"),
            ExitStatus::OverLimit { limit } => write!(f, "stopped past its {limit} limit"),
            ExitStatus::SpawnFailed { message } => write!(f, "could not start: {message}"),
            ExitStatus::Lost { message } => write!(f, "lost: {message}"),
        }
    }
}

/// What `status` and `--json` show of one task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskView {
    /// Task id.
    pub id: TaskId,
    /// Current state.
    pub state: TaskState,
    /// Why it is in that state, when there is something to say.
    pub reason: Option<String>,
    /// The tasks it waits for (`after`): it starts from the tip that holds their work.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<TaskId>,
    /// Best-of-N: the task of the tasks file it is a candidate of, its number and how many there are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate: Option<Candidate>,
    /// While it is `waiting`: those of them that have not landed (with `--no-merge`: not been accepted) yet.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub waits_for: Vec<TaskId>,
    /// Plan mode: its latest plan, and who approved it when.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<plan::PlanView>,
    /// Number of attempts started.
    pub attempts: u32,
    /// The task branch.
    pub branch: String,
    /// The task's worktree (it may have been removed by `gc`).
    pub worktree: PathBuf,
    /// Whether the worktree still exists on disk.
    pub worktree_present: bool,
    /// The latest attempt's commit, if it changed anything.
    pub commit: Option<CommitId>,
    /// How the latest attempt's worker ended.
    pub exit_status: Option<ExitStatus>,
    /// Salvage refs holding every recorded attempt.
    pub salvage_refs: Vec<String>,
    /// The latest attempt's log file.
    pub log: Option<PathBuf>,
    /// Seconds the latest attempt ran (so far, when running).
    pub elapsed_secs: Option<f64>,
    /// The gate's verdict on the latest attempt, when it has one.
    pub verdict: Option<crate::report::Verdict>,
    /// What its agent is doing or did (agent workers, latest attempt).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentView>,
    /// Tokens and cost of all its attempts (agent workers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<agent::Usage>,
    /// What its attempts cost, summed: the agent's own figures, else tokens priced from the price table (see
    /// `ledger` on the run for where each figure came from). `None` when no attempt's cost is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// Its reviewer and what the reviews cost (tasks with a review stage); included in `usage` and `cost_usd`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub review: Option<review::ReviewView>,
    /// Set for a merged task whose change was already on the target: it landed no commit of its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub already_landed: Option<AlreadyLanded>,
}

/// A merged task whose change another landing had already brought onto the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct AlreadyLanded {
    /// The task of the run whose landing brought the change (`None`: it was on the target before).
    pub by_task: Option<String>,
}

/// The live progress of a task's agent, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentView {
    /// `codex` or `claude`.
    pub agent: agent::Agent,
    /// The session a rework resumes.
    pub session_id: Option<String>,
    /// What it is doing now, or did last.
    pub current: Option<String>,
    /// Model turns so far.
    pub turns: u32,
    /// Commands run so far.
    pub commands_run: u32,
    /// The newest command.
    pub last_command: Option<String>,
    /// Files its edit tools changed so far.
    pub files_changed: usize,
    /// Tokens and cost of this attempt.
    pub usage: agent::Usage,
}

impl AgentView {
    /// The view of an attempt's summary.
    pub fn of(summary: &agent::AgentSummary) -> AgentView {
        AgentView {
            agent: summary.agent,
            session_id: summary.session_id.clone(),
            current: summary.current.clone(),
            turns: summary.turns,
            commands_run: summary.commands_run,
            last_command: summary.commands.last().map(|c| c.command.clone()),
            files_changed: summary.files_changed_count,
            usage: summary.usage,
        }
    }
}

/// What `status` and `--json` show of one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunView {
    /// Schema version of the JSON document.
    pub schema: u32,
    /// Run id.
    pub run_id: RunId,
    /// Run state.
    pub state: RunState,
    /// When it started (RFC 3339, UTC).
    pub created_at: String,
    /// The recorded base commit.
    pub base: CommitId,
    /// What the user named as base.
    pub base_rev: String,
    /// The branch checked out when the run started, if any.
    pub target_branch: Option<String>,
    /// The tasks file it came from.
    pub tasks_file: PathBuf,
    /// Made with `--no-merge`: accepted is the end.
    pub no_merge: bool,
    /// Made with `--plan`: tasks plan first and run once a person approved.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub plan_mode: bool,
    /// Tasks in task-file order.
    pub tasks: Vec<TaskView>,
    /// Tokens and cost of every agent attempt in the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<agent::Usage>,
    /// The run's cost ledger — total, per worker profile and per day — when any agent attempt ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledger: Option<ledger::Ledger>,
}

impl RunView {
    /// Whether every task ended the way the user wants: merged (or accepted, in a `--no-merge` run).
    pub fn all_succeeded(&self) -> bool {
        self.tasks.iter().all(|task| self.task_succeeded(task))
    }

    /// Whether `task` ended the way the user wants, in this run: a best-of-N candidate did when one candidate of
    /// its task did (the others losing is the point).
    pub fn task_succeeded(&self, task: &TaskView) -> bool {
        match &task.candidate {
            Some(candidate) => self.tasks.iter().any(|other| {
                other
                    .candidate
                    .as_ref()
                    .is_some_and(|c| c.of == candidate.of)
                    && self.succeeded(other.state)
            }),
            None => self.succeeded(task.state),
        }
    }

    /// Whether a task in `state` ended the way the user wants, in this run.
    pub fn succeeded(&self, state: TaskState) -> bool {
        if self.plan_mode && state == TaskState::Planned {
            // A plan waiting for a person is what `run --plan` is for.
            true
        } else if self.no_merge {
            state.is_landed_or_accepted()
        } else {
            state.is_success()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_round_trip() {
        for state in TaskState::ALL {
            assert_eq!(TaskState::parse(state.as_str()), Some(state));
        }
        assert_eq!(TaskState::parse("nope"), None);
    }

    #[test]
    fn only_merged_counts_as_success() {
        let good: Vec<_> = TaskState::ALL
            .into_iter()
            .filter(|s| s.is_success())
            .collect();
        assert_eq!(good, vec![TaskState::Merged]);
        assert!(
            TaskState::Accepted.is_landed_or_accepted()
                && !TaskState::Blocked.is_landed_or_accepted()
        );
    }
}
