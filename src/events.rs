//! Progress as values: the pipeline emits [`Event`]s; the CLI renders them and the MCP server (later) sends them as
//! notifications. Nothing in the library writes to a terminal.

use std::path::PathBuf;

use crate::model::{CommitId, ExitStatus, RunId, TaskId, TaskState};

/// Something that happened during a run.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The plan is fixed and recorded; tasks are about to fan out.
    RunStarted {
        /// Run id.
        run_id: RunId,
        /// The recorded base commit.
        base: CommitId,
        /// Task ids in task-file order.
        tasks: Vec<TaskId>,
        /// Parallel jobs.
        jobs: usize,
    },
    /// A task moved to a new state.
    TaskState {
        /// Task id.
        task_id: TaskId,
        /// Attempt number (0 before the first attempt starts).
        attempt: u32,
        /// The new state.
        state: TaskState,
        /// Why, when there is something to say.
        reason: Option<String>,
    },
    /// A worker's attempt was recorded.
    AttemptRecorded {
        /// Task id.
        task_id: TaskId,
        /// Attempt number.
        attempt: u32,
        /// How the worker ended.
        exit: ExitStatus,
        /// The attempt commit, or `None` when the worker changed nothing.
        commit: Option<CommitId>,
        /// The log file.
        log: PathBuf,
    },
    /// An agent worker did something worth showing (a command, an edit, a finished turn), with its running
    /// tally.
    WorkerProgress {
        /// Task id.
        task_id: TaskId,
        /// Attempt number.
        attempt: u32,
        /// The tally so far (redacted).
        progress: Box<crate::agents::tally::AgentSummary>,
    },
    /// A warning worth showing the user (e.g. a cancel was requested).
    Warning {
        /// What to say.
        message: String,
    },
    /// Progress worth a line that belongs to no task (e.g. the base layer being prepared).
    Note {
        /// What to say.
        message: String,
    },
    /// The run ended (every task is in a final state).
    RunFinished {
        /// Run id.
        run_id: RunId,
    },
}

/// Receives events. Implementations must be cheap and must not block for long.
pub trait EventSink: Send + Sync {
    /// Handles one event.
    fn emit(&self, event: Event);
}

/// A sink that drops everything (for callers that only want the result).
#[derive(Debug, Default, Clone, Copy)]
pub struct NullSink;

impl EventSink for NullSink {
    fn emit(&self, _event: Event) {}
}

impl<F: Fn(Event) + Send + Sync> EventSink for F {
    fn emit(&self, event: Event) {
        self(event);
    }
}
