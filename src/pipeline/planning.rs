//! Plan mode (`ccfan run --plan`), stage 3 before the real one: each task's worker first runs on its tree made
//! read-only, and what it writes (its final report, else its output) is stored as the task's plan; the task then
//! waits `planned` for a person. Approval is recorded before anything runs ([`Carrier::approve`]), and the worker
//! then gets the approved plan with its task. A task of a plan-mode run never runs without an approval.

use std::path::Path;
use std::sync::atomic::Ordering;

use super::PipelineError;
use super::carry::{Carrier, Cursor};
use super::fan_out;
use crate::model::plan::Approval;
use crate::model::{AttemptMode, ExitStatus, TaskSpec, TaskState};
use crate::paths::AttemptDir;
use crate::pipeline::lifecycle::{Operation, PlanRefusal, Refusal};
use crate::store::TaskRow;

/// The most of a plan kept: what fits an MCP answer (24 KiB) with room to spare, and the prompt that carries it.
const MAX_PLAN: usize = 16 * 1024;
/// The most of a worker's output read to find its plan (redacted before it is cut, so no secret is cut in half).
const READ_PLAN: u64 = 256 * 1024;

impl Carrier<'_> {
    /// [`Carrier::plan`], turning an internal error into the task's `error` state.
    pub(super) fn plan_or_fail(&self, task: &TaskSpec, branch: &str, worktree: &Path) {
        if let Err(error) = self.plan(task, branch, worktree) {
            self.fail(Some(&task.id), error);
        }
    }

    /// Fans the task out at the run's base and has its worker write a plan.
    fn plan(&self, task: &TaskSpec, branch: &str, worktree: &Path) -> Result<(), PipelineError> {
        if self.cancel.of(&task.id).load(Ordering::SeqCst) {
            return self.transition(
                &task.id,
                0,
                TaskState::Cancelled,
                Some("cancelled before it started".into()),
            );
        }
        self.transition(&task.id, 0, TaskState::Preparing, None)?;
        let link = fan_out::prepare(self.repo, worktree, branch, self.base_sha, self.includes)?;
        self.store().set_git_link(self.run_id, &task.id, &link)?;
        self.plan_attempt(task, worktree, 1)
    }

    /// One planning attempt, number `n`: the worker runs on its read-only tree; its plan is stored and the task
    /// left `planned` (or failed, with why, when it wrote none or changed its tree).
    pub(super) fn plan_attempt(
        &self,
        task: &TaskSpec,
        worktree: &Path,
        n: u32,
    ) -> Result<(), PipelineError> {
        self.check_budget(&task.id, super::budget::Check::Starting);
        let cancel = self.cancel.of(&task.id);
        if cancel.load(Ordering::SeqCst) {
            return self.transition(
                &task.id,
                n - 1,
                TaskState::Cancelled,
                Some("cancelled before it planned".into()),
            );
        }
        let cursor = Cursor {
            base: self.base_sha.clone(),
            tip: self.base_sha.clone(),
            next: n,
            budget_from: n,
            findings: Vec::new(),
        };
        self.store().set_budget_from(self.run_id, &task.id, n)?;
        let begun = self.begin(task, worktree, &cursor, AttemptMode::Planning)?;
        let outcome = self.work(
            task,
            worktree,
            &cursor,
            &begun,
            cancel,
            AttemptMode::Planning,
        )?;
        self.store()
            .finish_attempt(self.run_id, &task.id, n, Some(&outcome.exit), None, None)?;
        let files = AttemptDir::of(&begun.dir);
        // What the worker printed is scrubbed of secrets before anything reads it as the plan.
        super::verify::secrets::scrub_log(self.rules, &files.log(), &[]);
        super::verify::secrets::scrub_log(self.rules, &files.events(), &[]);
        if let Some(why) = self.wrote_while_planning(&task.id)? {
            return self.transition(&task.id, n, TaskState::Failed, Some(why));
        }
        if outcome.exit != (ExitStatus::Code { code: 0 }) {
            let (state, reason) = crate::model::outcome_state(&outcome.exit, task.timeout);
            let why = reason.unwrap_or_else(|| "it did not finish".into());
            return self.transition(&task.id, n, state, Some(format!("planning: {why}")));
        }
        let Some(plan) = self.written_plan(&files) else {
            return self.transition(
                &task.id,
                n,
                TaskState::Failed,
                Some(
                    "planning: the worker wrote no plan (write it to $CCFAN_REPORT_FILE, or print it)".into(),
                ),
            );
        };
        std::fs::write(files.plan(), &plan).map_err(|source| PipelineError::Io {
            context: format!("cannot write {}", files.plan().display()),
            source,
        })?;
        let lines = plan.lines().count();
        self.transition(
            &task.id,
            n,
            TaskState::Planned,
            Some(format!(
                "plan ready ({lines} lines): `ccfan approve {run}/{id}` runs it, `ccfan reject {run}/{id}` ends it",
                run = self.run_id,
                id = task.id
            )),
        )
    }

    /// Whatever the sandbox, a planning worker must have left its tree as it found it: anything it changed is kept
    /// on a salvage ref, the tree goes back to the base, and the planning fails with why.
    fn wrote_while_planning(
        &self,
        task: &crate::model::TaskId,
    ) -> Result<Option<String>, PipelineError> {
        let row = self.fresh(task)?;
        super::tree::ensure(&row.worktree)?;
        if !crate::git::has_uncommitted_changes(&row.worktree, self.base_sha)? {
            return Ok(None);
        }
        let kept = super::gc::salvage_if_dirty(
            self.repo,
            &mut self.store(),
            self.run_id,
            &row,
            self.base_sha,
        )?;
        super::tree::reset(&row.worktree, self.base_sha)?;
        Ok(Some(format!(
            "planning: the worker changed its tree, which plan mode forbids; what it wrote is kept on {} and \
             the tree was reset",
            if kept.is_empty() {
                "no ref (nothing committable)".to_string()
            } else {
                kept.join(", ")
            }
        )))
    }

    /// The plan a planning attempt wrote: its final report, else (a command worker) its output; redacted, then cut
    /// to its first [`MAX_PLAN`] bytes (what a person reads first, and what fits an MCP answer). `None` when empty.
    fn written_plan(&self, files: &AttemptDir<'_>) -> Option<String> {
        let report = files.final_report();
        let source = if report.is_file() {
            report
        } else {
            files.log()
        };
        let bytes = crate::util::read_regular(&source, READ_PLAN).ok()?;
        let text = self.rules.redact_text(&String::from_utf8_lossy(&bytes));
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        let mut end = text.len().min(MAX_PLAN);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let cut = if end < text.len() {
            format!(
                "\n… (cut at {MAX_PLAN} bytes; the whole output is in {})",
                source.display()
            )
        } else {
            String::new()
        };
        Some(format!("{}{cut}\n", &text[..end]))
    }

    /// The plan a person approved for `task`, with their note (`None`: none approved). The stored plan must still
    /// be the one approved (its SHA-256), or nothing runs.
    pub(super) fn approved_plan(
        &self,
        task: &crate::model::TaskId,
    ) -> Result<Option<(String, Option<String>)>, PipelineError> {
        let Some(approval) = self.store().approval(self.run_id, task)? else {
            return Ok(None);
        };
        let dir = self
            .layout
            .attempt_dir(self.run_id, task, approval.plan_attempt);
        let path = AttemptDir::of(&dir).plan();
        let plan = std::fs::read(&path).map_err(|source| PipelineError::Io {
            context: format!("cannot read the approved plan {}", path.display()),
            source,
        })?;
        if crate::store::plan_sha256(&plan) != approval.plan_sha256 {
            return Err(PipelineError::Io {
                context: format!(
                    "the approved plan {} changed since it was approved (SHA-256 {}): nothing runs; plan again with `ccfan retry`",
                    path.display(),
                    approval.plan_sha256
                ),
                source: std::io::Error::from(std::io::ErrorKind::InvalidData),
            });
        }
        Ok(Some((
            String::from_utf8_lossy(&plan).into_owned(),
            approval.note,
        )))
    }

    /// Records that `by` approved `task`'s latest plan (with `note`) and readies the task to run, in one
    /// transaction: an approved plan always starts, even after a crash (`retry`). `shown`: the SHA-256 (or a
    /// prefix of at least 8 digits) of the plan the person read; refused when the stored plan is another.
    pub(super) fn approve(
        &self,
        task: &TaskRow,
        by: &str,
        note: Option<&str>,
        shown: Option<&str>,
    ) -> Result<Option<Refusal>, PipelineError> {
        let Some(plan) = self.store().plan(self.run_id, &task.id)? else {
            return Ok(Some(Refusal::Plan(PlanRefusal::NotPlanned {
                task: task.id.clone(),
                state: task.state,
                op: Operation::Approve,
            })));
        };
        if let Some(shown) = shown
            && (shown.len() < 8 || !plan.sha256.starts_with(&shown.to_ascii_lowercase()))
        {
            return Ok(Some(Refusal::Plan(PlanRefusal::PlanChanged {
                task: task.id.clone(),
                shown: shown.to_string(),
                stored: plan.sha256,
            })));
        }
        let approval = Approval {
            by: by.to_string(),
            at: crate::util::format_millis(crate::util::now_millis()),
            plan_attempt: plan.attempt,
            plan_sha256: plan.sha256.clone(),
            note: note.map(|note| self.rules.redact_text(note)),
        };
        let reason = format!("plan approved by {by} (plan {})", &plan.sha256[..12]);
        self.store().decide_plan(
            self.run_id,
            &task.id,
            Some(&approval),
            TaskState::Queued,
            &reason,
        )?;
        self.sink.emit(crate::events::Event::TaskState {
            task_id: task.id.clone(),
            attempt: task.attempts,
            state: TaskState::Queued,
            reason: Some(reason),
        });
        Ok(None)
    }

    /// Ends a planned task without running it, saying who rejected it and why; any approval is cleared with it.
    pub(super) fn reject(
        &self,
        task: &TaskRow,
        by: &str,
        note: Option<&str>,
    ) -> Result<(), PipelineError> {
        let why = note
            .map(|note| format!(": {}", self.rules.redact_text(note)))
            .unwrap_or_default();
        let reason = format!("plan rejected by {by}{why}; the task never ran");
        self.store()
            .decide_plan(self.run_id, &task.id, None, TaskState::Rejected, &reason)?;
        self.sink.emit(crate::events::Event::TaskState {
            task_id: task.id.clone(),
            attempt: task.attempts,
            state: TaskState::Rejected,
            reason: Some(reason),
        });
        Ok(())
    }
}
