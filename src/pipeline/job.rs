//! The typed hand-off of long work to a detached ccfan process: the MCP server writes one [`JobRequest`] as JSON
//! and starts the hidden `ccfan job FILE`, which reads it and does exactly what the matching command does. The
//! public command-line flags are not the contract, so renaming one cannot break MCP silently.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::input::InputError;
use crate::model::{RunId, TaskId};

/// One operation for a detached ccfan process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "operation", rename_all = "snake_case", deny_unknown_fields)]
pub enum JobRequest {
    /// `ccfan run`: a delegation, as the run `run_id`.
    Run {
        /// The tasks file written for it.
        tasks_file: PathBuf,
        /// The run id the server allocated.
        run_id: RunId,
        /// Stop at accepted.
        no_merge: bool,
        /// Plan mode: plan first, run once approved.
        #[serde(default)]
        plan: bool,
        /// The base revision, when not the policy's.
        base: Option<String>,
        /// The branch to land on, when not the current one.
        into: Option<String>,
        /// Tasks at once, when not the policy's.
        jobs: Option<u16>,
    },
    /// `ccfan rework`: another attempt with a note.
    Rework {
        /// The run.
        run_id: RunId,
        /// The task.
        task_id: TaskId,
        /// The note for the worker.
        note: String,
    },
    /// `ccfan retry`: a fresh budget with the last findings.
    Retry {
        /// The run.
        run_id: RunId,
        /// The task.
        task_id: TaskId,
    },
    /// `ccfan accept --force`: land over the gate's verdict.
    Accept {
        /// The run.
        run_id: RunId,
        /// The task.
        task_id: TaskId,
        /// Why (recorded with who).
        reason: String,
    },
    /// `ccfan rollback`: a task, or the whole run.
    Rollback {
        /// The run.
        run_id: RunId,
        /// The task (`None`: every task).
        task_id: Option<TaskId>,
    },
    /// `ccfan approve`: plan mode, approve a task's plan (or every planned task's) and run it.
    Approve {
        /// The run.
        run_id: RunId,
        /// The task (`None`: every planned task).
        task_id: Option<TaskId>,
        /// The approver's note.
        note: Option<String>,
        /// The SHA-256 (or a prefix of 8+ digits) of the plan the approver read.
        #[serde(default)]
        plan: Option<String>,
        /// Who approved (default: git's user).
        by: Option<String>,
    },
    /// `ccfan reject`: plan mode, end a planned task (or every one) without running it.
    Reject {
        /// The run.
        run_id: RunId,
        /// The task (`None`: every planned task).
        task_id: Option<TaskId>,
        /// Why.
        note: Option<String>,
        /// Who rejected (default: git's user).
        by: Option<String>,
    },
    /// `ccfan merge`: land what is accepted.
    Merge {
        /// The run.
        run_id: RunId,
        /// The branch to land on, when not the run's.
        into: Option<String>,
    },
}

impl JobRequest {
    /// The operation's name (the command it stands for).
    pub fn operation(&self) -> &'static str {
        match self {
            JobRequest::Run { .. } => "run",
            JobRequest::Rework { .. } => "rework",
            JobRequest::Retry { .. } => "retry",
            JobRequest::Accept { .. } => "accept",
            JobRequest::Rollback { .. } => "rollback",
            JobRequest::Merge { .. } => "merge",
            JobRequest::Approve { .. } => "approve",
            JobRequest::Reject { .. } => "reject",
        }
    }

    /// The run it acts on.
    pub fn run_id(&self) -> &RunId {
        match self {
            JobRequest::Run { run_id, .. }
            | JobRequest::Rework { run_id, .. }
            | JobRequest::Retry { run_id, .. }
            | JobRequest::Accept { run_id, .. }
            | JobRequest::Rollback { run_id, .. }
            | JobRequest::Merge { run_id, .. }
            | JobRequest::Approve { run_id, .. }
            | JobRequest::Reject { run_id, .. } => run_id,
        }
    }

    /// The task it acts on, if one.
    pub fn task_id(&self) -> Option<&TaskId> {
        match self {
            JobRequest::Rework { task_id, .. }
            | JobRequest::Retry { task_id, .. }
            | JobRequest::Accept { task_id, .. } => Some(task_id),
            JobRequest::Rollback { task_id, .. }
            | JobRequest::Approve { task_id, .. }
            | JobRequest::Reject { task_id, .. } => task_id.as_ref(),
            JobRequest::Run { .. } | JobRequest::Merge { .. } => None,
        }
    }

    /// Writes the request to `path`.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(path, json)
    }

    /// Reads a request (a bounded, regular file), naming the file and field of anything wrong.
    pub fn read(path: &Path) -> Result<JobRequest, InputError> {
        let text = crate::input::read_text(path, "job request")?;
        serde_json::from_str(&text).map_err(|error| InputError::from_json(path, &error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_bad_ones_name_the_problem() {
        let requests = [
            JobRequest::Run {
                tasks_file: "/t.toml".into(),
                run_id: "r1".parse().unwrap(),
                no_merge: true,
                plan: false,
                base: None,
                into: Some("main".into()),
                jobs: Some(2),
            },
            JobRequest::Rework {
                run_id: "r1".parse().unwrap(),
                task_id: "t".parse().unwrap(),
                note: "keep the API".into(),
            },
            JobRequest::Rollback {
                run_id: "r1".parse().unwrap(),
                task_id: None,
            },
        ];
        let dir = tempfile::tempdir().unwrap();
        for request in requests {
            let path = dir.path().join("job.json");
            request.write(&path).unwrap();
            assert_eq!(JobRequest::read(&path).unwrap(), request);
        }
        let path = dir.path().join("bad.json");
        std::fs::write(
            &path,
            r#"{"operation": "retry", "run_id": "r1", "task": "t"}"#,
        )
        .unwrap();
        let error = JobRequest::read(&path).unwrap_err();
        assert!(error.message.contains("unknown field `task`"), "{error}");
        std::fs::write(
            &path,
            r#"{"operation": "retry", "run_id": "r1", "task_id": "../../etc"}"#,
        )
        .unwrap();
        let error = JobRequest::read(&path).unwrap_err();
        assert!(
            error.message.contains("task id `../../etc` is not valid"),
            "{error}"
        );
    }
}
