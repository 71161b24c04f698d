//! What every worker run shares: where the attempt happens, how it ended, and the one error before a worker
//! could be supervised; apart so the agent-stream and container halves use it without going through the stage.

use std::path::{Path, PathBuf};

use crate::agents::prompt;
use crate::agents::{self, tally::AgentSummary};
use crate::model::{AttemptMode, CommitId, RunId, TaskSpec};
use crate::sandbox::{Outcome, SandboxError};
use crate::secrets::RulePack;

/// Where an attempt happens and what it is called.
#[derive(Debug, Clone)]
pub struct AttemptContext<'a> {
    /// Run id.
    pub run_id: &'a RunId,
    /// Attempt number (from 1).
    pub attempt: u32,
    /// The recorded base commit.
    pub base_sha: &'a CommitId,
    /// The task's worktree.
    pub worktree: &'a Path,
    /// The attempt's artifacts folder.
    pub dir: &'a Path,
    /// The task's resources (`CCFAN_TASK_INDEX`, `CCFAN_PORT_BASE`, `CCFAN_PORT_COUNT`).
    pub resources: &'a [(String, String)],
    /// The repository's git common dir (read-only to the worker).
    pub common_dir: &'a Path,
    /// The user's checkout (read-only to the worker).
    pub checkout: &'a Path,
    /// The attempt token.
    pub token: &'a str,
    /// Findings of the previous attempt to fix (empty on a first attempt).
    pub rework: &'a [crate::report::Finding],
    /// The agent session to resume (a rework of an agent worker whose earlier attempt reported one).
    pub resume: Option<&'a str>,
    /// The task's private agent home (agent workers).
    pub agent_home: &'a Path,
    /// Redacts what the agent said before it is stored or shown.
    pub rules: &'a RulePack,
    /// What earlier attempts in the resumed session already used (the agents report some counts per session).
    pub baseline: agents::Usage,
    /// What the tasks it waited for (`after`) changed.
    pub handoffs: &'a [crate::model::Handoff],
    /// Plan mode: planning (read-only), or executing an approved plan.
    pub plan: AttemptMode<'a>,
}

impl AttemptContext<'_> {
    /// What the agent is told: its task, a rework's findings in its resumed session, or its planning or review
    /// brief.
    pub fn prompt(&self, task: &TaskSpec) -> String {
        match (self.resume, self.plan) {
            (_, AttemptMode::Planning) => prompt::plan(task, self.handoffs),
            (_, AttemptMode::Review(brief)) => brief.prompt.clone(),
            (Some(_), plan) => prompt::rework(task, self.attempt, self.rework, plan),
            (None, plan) => prompt::first(task, self.attempt, self.rework, self.handoffs, plan),
        }
    }
}

/// How a worker's attempt ended, with what its agent reported (agent workers).
#[derive(Debug, Clone)]
pub struct WorkerRun {
    /// The process's end.
    pub outcome: Outcome,
    /// The agent's summary (redacted).
    pub agent: Option<AgentSummary>,
}

/// Errors before a worker could be supervised.
#[derive(Debug, thiserror::Error)]
pub enum RunWorkerError {
    /// The task file could not be written.
    #[error("cannot write the task file {}", path.display())]
    TaskFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The sandbox could not supervise the worker.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
}

/// Writes one of the attempt's files, naming it when it cannot.
pub(crate) fn write(path: &Path, bytes: &[u8]) -> Result<(), RunWorkerError> {
    std::fs::write(path, bytes).map_err(|source| RunWorkerError::TaskFile {
        path: path.to_path_buf(),
        source,
    })
}
