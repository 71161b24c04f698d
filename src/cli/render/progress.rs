//! Live progress: an indicatif display on a terminal, plain lines on stderr otherwise — the pipeline's events as
//! they come.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{one_line, short};
use crate::events::{Event, EventSink};
use crate::model::{TaskId, TaskState};

/// Renders pipeline events as they come.
pub struct Progress {
    live: Option<MultiProgress>,
    bars: Mutex<HashMap<TaskId, ProgressBar>>,
    /// The agent progress line last shown per task (plain lines repeat nothing).
    shown: Mutex<HashMap<TaskId, String>>,
}

impl Progress {
    /// A live display when `live` (stdout is a terminal and no JSON), else plain lines on stderr.
    pub fn new(live: bool) -> Progress {
        let live = live.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stdout()));
        Progress {
            live,
            bars: Mutex::new(HashMap::new()),
            shown: Mutex::new(HashMap::new()),
        }
    }

    fn bar(&self, multi: &MultiProgress, task: &TaskId) -> ProgressBar {
        let mut bars = self
            .bars
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        bars.entry(task.clone())
            .or_insert_with(|| {
                let style =
                    ProgressStyle::with_template("{spinner} {prefix:<16} {msg} {elapsed:>4}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner());
                let bar = multi.add(
                    ProgressBar::new_spinner()
                        .with_style(style)
                        .with_prefix(task.to_string()),
                );
                bar.enable_steady_tick(Duration::from_millis(120));
                bar
            })
            .clone()
    }
}

impl EventSink for Progress {
    fn emit(&self, event: Event) {
        match (&self.live, event) {
            (Some(multi), Event::RunStarted { tasks, .. }) => {
                for task in tasks {
                    self.bar(multi, &task).set_message("queued");
                }
            }
            (
                Some(multi),
                Event::TaskState {
                    task_id,
                    state,
                    reason,
                    ..
                },
            ) => {
                let bar = self.bar(multi, &task_id);
                let message = match &reason {
                    Some(reason) => format!("{state}: {reason}"),
                    None => state.to_string(),
                };
                if state == TaskState::Running {
                    bar.reset_elapsed();
                }
                // A final state may still move on (accepted → merging → merged): bars finish with the run.
                if state.is_final() {
                    bar.disable_steady_tick();
                } else {
                    bar.enable_steady_tick(Duration::from_millis(120));
                }
                bar.set_message(message);
                bar.tick();
            }
            (Some(_), Event::RunFinished { .. }) => {
                let bars = self
                    .bars
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for bar in bars.values() {
                    bar.abandon();
                }
            }
            (Some(multi), Event::Warning { message }) => {
                let _ = multi.println(format!("warning: {message}"));
            }
            (Some(multi), Event::Note { message }) => {
                let _ = multi.println(message);
            }
            (Some(_), Event::AttemptRecorded { .. }) => {}
            (
                live,
                Event::WorkerProgress {
                    task_id,
                    attempt,
                    progress,
                },
            ) => {
                let line = agent_line(&crate::model::AgentView::of(&progress));
                let mut shown = self
                    .shown
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if shown.get(&task_id) == Some(&line) {
                    return;
                }
                shown.insert(task_id.clone(), line.clone());
                drop(shown);
                match live {
                    Some(multi) => self
                        .bar(multi, &task_id)
                        .set_message(format!("running (attempt {attempt}): {line}")),
                    None => {
                        let _ = writeln!(std::io::stderr().lock(), "ccfan: {task_id}: {line}");
                    }
                }
            }
            (None, event) => plain_line(&event),
        }
    }
}

/// `codex: running `cargo test` · 3 command(s) · 2 file(s) · 12k in · 300 out`.
pub fn agent_line(summary: &crate::model::AgentView) -> String {
    let mut parts = vec![format!(
        "{}: {}",
        summary.agent,
        one_line(summary.current.as_deref().unwrap_or("working"), 60)
    )];
    if summary.commands_run > 0 {
        parts.push(format!("{} command(s)", summary.commands_run));
    }
    if summary.files_changed > 0 {
        parts.push(format!("{} file(s)", summary.files_changed));
    }
    if !summary.usage.is_empty() {
        parts.push(summary.usage.short());
    }
    parts.join(" · ")
}

fn plain_line(event: &Event) {
    let line = match event {
        Event::RunStarted {
            run_id,
            base,
            tasks,
            jobs,
        } => {
            format!(
                "ccfan: run {run_id}: {} task(s) from {} with {jobs} job(s)",
                tasks.len(),
                short(base)
            )
        }
        Event::TaskState {
            task_id,
            state,
            reason,
            ..
        } => match reason {
            Some(reason) => format!("ccfan: {task_id}: {state} ({reason})"),
            None => format!("ccfan: {task_id}: {state}"),
        },
        Event::AttemptRecorded {
            task_id,
            attempt,
            exit,
            commit,
            ..
        } => format!(
            "ccfan: {task_id}: attempt {attempt} recorded ({exit}, {})",
            commit.as_deref().map_or_else(
                || "no changes".to_string(),
                |sha| format!("commit {}", short(sha))
            )
        ),
        Event::Warning { message } => format!("ccfan: warning: {message}"),
        Event::Note { message } => format!("ccfan: {message}"),
        Event::RunFinished { run_id } => format!("ccfan: run {run_id} finished"),
        Event::WorkerProgress {
            task_id, progress, ..
        } => format!(
            "ccfan: {task_id}: {}",
            agent_line(&crate::model::AgentView::of(progress))
        ),
    };
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}
