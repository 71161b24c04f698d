//! Stage 3, run: start the task's worker in its worktree through the sandbox door, with the `CCFAN_*` variables
//! and the task file, its output in the attempt's log (never on ccfan's stdout), a timeout and a whole-tree kill.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use crate::model::{TaskFileDoc, TaskSpec, WorkerKind};
use crate::policy::Policy;
use crate::sandbox::{self, Launch, Outcome, SandboxError, SandboxPolicy, Tree};

/// Where an attempt happens and what it is called.
#[derive(Debug, Clone)]
pub struct AttemptContext<'a> {
    /// Run id.
    pub run_id: &'a str,
    /// Attempt number (from 1).
    pub attempt: u32,
    /// The recorded base commit.
    pub base_sha: &'a str,
    /// The task's worktree.
    pub worktree: &'a Path,
    /// The attempt's artifacts folder.
    pub dir: &'a Path,
    /// The repository's git common dir (read-only to the worker).
    pub common_dir: &'a Path,
    /// The user's checkout (read-only to the worker).
    pub checkout: &'a Path,
    /// The attempt token.
    pub token: &'a str,
    /// Findings of the previous attempt to fix (empty on a first attempt).
    pub rework: &'a [crate::report::Finding],
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

/// The folder the worker hands files back in (its final report): the one place in ccfan's state it may write.
pub fn outbox(dir: &Path) -> PathBuf {
    dir.join("outbox")
}

/// The attempt's log file.
pub fn log_path(dir: &Path) -> PathBuf {
    dir.join("worker.log")
}

/// Writes the task file and runs the worker to its end.
pub fn run_worker(
    task: &TaskSpec,
    policy: &Policy,
    context: &AttemptContext<'_>,
    cancel: &AtomicBool,
    on_spawn: impl FnOnce(u32),
) -> Result<Outcome, RunWorkerError> {
    let task_file = context.dir.join("task.json");
    let doc = TaskFileDoc {
        schema: 1,
        run_id: context.run_id,
        task_id: &task.id,
        attempt: context.attempt,
        goal: &task.goal,
        allowed: &task.allowed,
        denied: &task.denied,
        constraints: &task.constraints,
        acceptance: &task.acceptance,
        rework: context
            .rework
            .iter()
            .filter_map(|finding| serde_json::to_value(finding).ok())
            .collect(),
    };
    let json = serde_json::to_vec_pretty(&doc).unwrap_or_default();
    std::fs::write(&task_file, json).map_err(|source| RunWorkerError::TaskFile {
        path: task_file.clone(),
        source,
    })?;

    let outbox = outbox(context.dir);
    std::fs::create_dir_all(&outbox).map_err(|source| RunWorkerError::TaskFile {
        path: outbox.clone(),
        source,
    })?;
    let lossy = |path: &Path| path.to_string_lossy().into_owned();
    let extra = [
        ("CCFAN_RUN_ID".to_string(), context.run_id.to_string()),
        ("CCFAN_TASK_ID".to_string(), task.id.clone()),
        ("CCFAN_ATTEMPT".to_string(), context.attempt.to_string()),
        ("CCFAN_WORKTREE".to_string(), lossy(context.worktree)),
        ("CCFAN_BASE_SHA".to_string(), context.base_sha.to_string()),
        ("CCFAN_TASK_FILE".to_string(), lossy(&task_file)),
        (
            "CCFAN_REPORT_FILE".to_string(),
            lossy(&outbox.join(super::gate::FINAL_REPORT)),
        ),
    ];
    let argv = match &task.worker.kind {
        WorkerKind::Command { argv } => argv,
    };
    let log = log_path(context.dir);
    let launch = Launch {
        argv,
        cwd: context.worktree,
        env: sandbox::worker_env(&policy.sandbox, &task.worker, &extra),
        log_path: &log,
        token: context.token,
        cancel,
        sandbox: &SandboxPolicy::for_worker(
            &policy.sandbox,
            &task.worker,
            Tree {
                worktree: context.worktree,
                common_dir: context.common_dir,
                checkout: context.checkout,
                outbox: Some(&outbox),
            },
            task.timeout,
            policy.log_limit,
        ),
    };
    Ok(sandbox::run(launch, on_spawn)?)
}
