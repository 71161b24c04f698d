//! Stages 2-5 for one task, on a job thread: fan out its worktree, then attempts — run the worker, record, gate —
//! until a verdict ends it: accepted, blocked (rework budget spent) or rolled back; a Rework verdict runs the next
//! attempt in the same worktree, on top of the previous one, with the findings in its task file. Integration (the
//! merge stage) comes back here to rework a task whose landing conflicted, from a [`Cursor`] on the new tip.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::lifecycle::{self, Next};
use super::{PipelineError, fan_out, gate, record, run_worker};
use crate::events::{Event, EventSink};
use crate::git::{self, RepoPaths};
use crate::model::{ExitStatus, TaskSpec, TaskState};
use crate::paths::StateLayout;
use crate::policy::Policy;
use crate::report::{Finding, Verdict};
use crate::secrets::RulePack;
use crate::store::Store;

/// Everything a job thread needs to carry one task through the stages.
pub(super) struct Carrier<'a> {
    pub(super) repo: &'a RepoPaths,
    pub(super) layout: StateLayout,
    pub(super) policy: &'a Policy,
    pub(super) rules: &'a RulePack,
    pub(super) target_branch: Option<&'a str>,
    /// `--no-merge`: accepted is the end.
    pub(super) no_merge: bool,
    pub(super) scratch_root: PathBuf,
    pub(super) run_id: &'a str,
    pub(super) base_sha: &'a str,
    pub(super) store: Mutex<Store>,
    pub(super) sink: &'a dyn EventSink,
    pub(super) cancel: &'a super::cancel::Cancels<'a>,
    pub(super) failure: Mutex<Option<PipelineError>>,
}

/// Where a task's attempts continue from.
#[derive(Debug, Clone)]
pub(super) struct Cursor {
    /// The commit the task's current chain of attempts started from (the run's base, or a newer target tip after
    /// a conflict): its diff is judged against this.
    pub(super) base: String,
    /// The commit ccfan expects the task branch at: the base, then each attempt's commit.
    pub(super) tip: String,
    /// The next attempt's number.
    pub(super) next: u32,
    /// The first attempt of the current rework budget.
    pub(super) budget_from: u32,
    /// Findings for the next attempt to fix.
    pub(super) findings: Vec<Finding>,
}

impl Carrier<'_> {
    pub(super) fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores the transition first, then tells the sink.
    pub(super) fn transition(
        &self,
        task: &str,
        attempt: u32,
        state: TaskState,
        reason: Option<String>,
    ) -> Result<(), PipelineError> {
        self.store()
            .set_task_state(self.run_id, task, state, reason.as_deref())?;
        self.sink.emit(Event::TaskState {
            task_id: task.to_string(),
            attempt,
            state,
            reason,
        });
        Ok(())
    }

    /// Keeps the first internal error (the run then exits 3; every task is still in a stored state).
    fn fail(&self, task: Option<&str>, error: PipelineError) {
        let full = error.is_disk_full();
        if full {
            // The reserve goes, so that the store can still say why the task stopped.
            let _ = std::fs::remove_file(self.layout.reserve());
        }
        // Git's errors name files, and a worker chose their names: redacted wherever the error goes.
        let message = self.rules.redact_text(&error.to_string());
        if let Some(task) = task {
            tracing::error!(task = %task, "{message}");
            let reason = if full {
                format!(
                    "the disk is full ({message}); free space there, then `ccfan retry {}/{task}`",
                    self.run_id
                )
            } else {
                message.clone()
            };
            if let Err(store_error) = self.transition(task, 0, TaskState::Error, Some(reason)) {
                tracing::error!("cannot record the error: {store_error}");
            }
        } else {
            tracing::error!("{message}");
        }
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(PipelineError::Stopped {
                message,
                disk_full: full,
            });
    }

    /// [`Carrier::carry`], turning an internal error into the task's `error` state.
    pub(super) fn carry_or_fail(&self, task: &TaskSpec, branch: &str, worktree: &Path) {
        if let Err(error) = self.carry(task, branch, worktree) {
            self.fail(Some(&task.id), error);
        }
    }

    /// [`Carrier::integrate`], keeping an internal error for the end of the run. A task caught mid-landing stays
    /// as the store says (merging is settled from git on the next start).
    pub(super) fn integrate_or_fail(&self) {
        if let Err(error) = self.integrate() {
            self.fail(None, error);
        }
    }

    /// The error kept by [`Carrier::fail`], if any.
    pub(super) fn take_failure(&self) -> Option<PipelineError> {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Fans the task out and carries it through attempts to a verdict.
    pub(super) fn carry(
        &self,
        task: &TaskSpec,
        branch: &str,
        worktree: &Path,
    ) -> Result<Option<Verdict>, PipelineError> {
        if self.cancel.of(&task.id).load(Ordering::SeqCst) {
            self.transition(
                &task.id,
                0,
                TaskState::Cancelled,
                Some("cancelled before it started".into()),
            )?;
            return Ok(None);
        }
        self.transition(&task.id, 0, TaskState::Preparing, None)?;
        let link = fan_out::prepare(self.repo, worktree, branch, self.base_sha)?;
        self.store().set_git_link(self.run_id, &task.id, &link)?;
        let cursor = Cursor {
            base: self.base_sha.to_string(),
            tip: self.base_sha.to_string(),
            next: 1,
            budget_from: 1,
            findings: Vec::new(),
        };
        self.continue_from(task, worktree, &link, cursor)
    }

    /// Runs attempts from `cursor` until a verdict ends the task (`None`: cancelled).
    pub(super) fn continue_from(
        &self,
        task: &TaskSpec,
        worktree: &Path,
        link: &str,
        mut cursor: Cursor,
    ) -> Result<Option<Verdict>, PipelineError> {
        let cancel = self.cancel.of(&task.id);
        loop {
            let Some((verdict, next_tip)) = self.attempt(task, worktree, link, &cursor)? else {
                return Ok(None); // cancelled
            };
            cursor.tip = next_tip;
            cursor.next += 1;
            match lifecycle::after_attempt(&verdict, cancel.load(Ordering::SeqCst)) {
                Next::Rework(findings) => cursor.findings = findings,
                Next::CancelledBeforeRework => {
                    self.transition(
                        &task.id,
                        cursor.next - 1,
                        TaskState::Cancelled,
                        Some("cancelled before its rework".into()),
                    )?;
                    return Ok(None);
                }
                Next::RolledBack => {
                    // Not merged; every attempt stays on its salvage ref; the worktree goes back to the base.
                    if let Err(error) = git::reset_worktree(worktree, &cursor.base) {
                        tracing::warn!(task = %task.id, "cannot reset the rolled-back worktree: {error}");
                    }
                    return Ok(Some(verdict));
                }
                Next::Settled => return Ok(Some(verdict)),
            }
        }
    }

    /// One attempt: worker, record, gate. Returns the verdict (`None`: the attempt was cancelled). The task's
    /// state afterwards is the verdict's.
    fn attempt(
        &self,
        task: &TaskSpec,
        worktree: &Path,
        link: &str,
        cursor: &Cursor,
    ) -> Result<Option<(Verdict, String)>, PipelineError> {
        let (attempt, rework, parent) = (cursor.next, &cursor.findings, cursor.tip.as_str());
        let base = cursor.base.as_str();
        let cancel = self.cancel.of(&task.id);
        let dir = self.layout.attempt_dir(self.run_id, &task.id, attempt);
        std::fs::create_dir_all(&dir).map_err(|source| PipelineError::Io {
            context: format!("cannot create {}", dir.display()),
            source,
        })?;
        let token = format!(
            "{}-{}-{attempt}-{}",
            self.run_id,
            task.id,
            crate::util::random_hex(4)
        );
        let log = crate::paths::AttemptDir::of(&dir).log();
        self.store().start_attempt(
            self.run_id,
            &task.id,
            &crate::store::NewAttempt {
                n: attempt,
                base,
                dir: &dir,
                log_path: &log,
                token: &token,
            },
        )?;
        // An agent's rework continues its own session, when an earlier attempt reported one and its private home
        // still holds it (`gc` removes the home; a resume of a lost session would start with no task at all).
        let agent_home = self.layout.agent_home(self.run_id, &task.id);
        let (resume, baseline) = match task.worker.kind.agent() {
            Some((agent, _)) if !rework.is_empty() => {
                let store = self.store();
                let session = store
                    .agent_session(self.run_id, &task.id)?
                    .filter(|id| crate::agents::home::has_session(agent, &agent_home, id));
                let baseline = store
                    .attempt_agents(self.run_id, &task.id)?
                    .iter()
                    .filter(|(_, summary)| session.is_some() && summary.session_id == session)
                    .map(|(_, summary)| summary.usage)
                    .fold(crate::agents::Usage::default(), crate::agents::Usage::plus);
                (session, baseline)
            }
            _ => (None, crate::agents::Usage::default()),
        };
        let why = (attempt > 1).then(|| match &resume {
            Some(_) => format!(
                "attempt {attempt}: {} finding(s) to fix, in the agent's same session",
                rework.len()
            ),
            None => format!("attempt {attempt}: {} finding(s) to fix", rework.len()),
        });
        self.transition(&task.id, attempt, TaskState::Running, why)?;

        let context = run_worker::AttemptContext {
            run_id: self.run_id,
            attempt,
            base_sha: base,
            worktree,
            dir: &dir,
            common_dir: &self.repo.common_dir,
            checkout: &self.repo.workdir,
            token: &token,
            rework,
            resume: resume.as_deref(),
            agent_home: &agent_home,
            rules: self.rules,
            baseline,
        };
        let mut stored: Option<crate::model::AgentView> = None;
        let mut on_progress = |summary: &crate::agents::tally::AgentSummary| {
            // Live progress for `ccfan status` in other processes, whenever what it shows changed.
            let view = crate::model::AgentView::of(summary);
            if stored.as_ref() != Some(&view) {
                stored = Some(view);
                if let Err(error) =
                    self.store()
                        .set_attempt_agent(self.run_id, &task.id, attempt, summary)
                {
                    tracing::warn!("cannot record agent progress: {error}");
                }
            }
            self.sink.emit(Event::WorkerProgress {
                task_id: task.id.clone(),
                attempt,
                progress: Box::new(summary.clone()),
            });
        };
        let ran = run_worker::run_worker(
            task,
            self.policy,
            &context,
            cancel,
            |pid| {
                if let Err(error) =
                    self.store()
                        .set_attempt_pid(self.run_id, &task.id, attempt, pid)
                {
                    tracing::warn!("cannot record the worker's pid: {error}");
                }
            },
            &mut on_progress,
        )?;
        let outcome = ran.outcome;
        if let Some(summary) = &ran.agent {
            let mut store = self.store();
            store.set_attempt_agent(self.run_id, &task.id, attempt, summary)?;
            if let Some(session) = &summary.session_id {
                store.set_agent_session(self.run_id, &task.id, session)?;
            }
        }
        let facts = record::AttemptFacts {
            run_id: self.run_id,
            task_id: &task.id,
            attempt,
            goal: &task.goal,
            worker: &task.worker.name,
            exit: Some(&outcome.exit),
        };
        let branch = crate::paths::task_branch(self.run_id, &task.id);
        let recorded = match record::record(
            self.repo,
            worktree,
            Some(link),
            &facts,
            None,
            &branch,
            parent,
        ) {
            Ok(recorded) => recorded,
            // A full disk stops the run (there is nothing more to do); anything else ends this task only.
            Err(error) if !crate::util::disk_full(&error) => {
                let verdict = self.unrecorded(task, attempt, &outcome.exit, worktree, &error)?;
                return Ok(Some((verdict, parent.to_string())));
            }
            Err(error) => return Err(error.into()),
        };
        let tip = recorded
            .commit
            .clone()
            .unwrap_or_else(|| parent.to_string());
        self.store().finish_attempt(
            self.run_id,
            &task.id,
            attempt,
            Some(&outcome.exit),
            recorded.commit.as_deref(),
            recorded.salvage_ref.as_deref(),
        )?;
        record::write_record(
            self.repo,
            self.rules,
            &dir,
            record::AttemptRecord {
                schema: 1,
                run_id: self.run_id,
                task_id: &task.id,
                attempt,
                worker: &task.worker.name,
                base,
                exit: &outcome.exit,
                duration_secs: outcome.duration.as_secs_f64(),
                output_bytes: outcome.output_bytes,
                log_capped: outcome.log_capped,
                leftovers_killed: outcome.leftovers_killed,
                sandbox: outcome.backend,
                sandbox_notes: &outcome.notes,
                recorded: &recorded,
                changes: Vec::new(),
            },
            base,
        )?;
        self.sink.emit(Event::AttemptRecorded {
            task_id: task.id.clone(),
            attempt,
            exit: outcome.exit.clone(),
            commit: recorded.commit.clone(),
            log: log.clone(),
        });
        let (state, reason) = outcome_state(&outcome.exit, task);
        let mut notes: Vec<String> = reason.into_iter().collect();
        if recorded.commit.is_none() {
            notes.push("the worker changed nothing".to_string());
        }
        if outcome.leftovers_killed > 0 {
            notes.push(format!(
                "killed {} process(es) it left running",
                outcome.leftovers_killed
            ));
        }
        if outcome.log_capped {
            notes.push("its output was capped".to_string());
        }
        notes.extend(outcome.notes.iter().cloned());
        if recorded.link_tampered {
            notes.push(
                "it changed the worktree's .git link (restored before committing)".to_string(),
            );
        }
        let notes = (!notes.is_empty()).then(|| notes.join("; "));
        if state == TaskState::Cancelled {
            // No gate for a cancelled attempt, but what it printed is still scrubbed of secrets.
            super::verify::secrets::scrub_log(self.rules, &log, &[]);
            super::verify::secrets::scrub_log(
                self.rules,
                &crate::paths::AttemptDir::of(&dir).events(),
                &[],
            );
            self.transition(&task.id, attempt, state, notes)?;
            return Ok(None);
        }
        self.transition(&task.id, attempt, state, notes.clone())?;
        self.transition(&task.id, attempt, TaskState::Verifying, None)?;
        // The attempt is judged by everything the task committed so far, not only this attempt's own commit.
        let judged = (tip != base).then(|| tip.clone());
        let target = gate::target_tip(self.repo, self.target_branch, base)?;
        let reference = gate::AttemptRef {
            run_id: self.run_id,
            task,
            attempt,
            base,
            commit: judged.as_deref(),
            dir: &dir,
            exit: Some(&outcome.exit),
            tampered: &recorded.tampered,
            in_budget: attempt + 1 - cursor.budget_from,
            landing: false,
        };
        let checker = gate::Gate {
            repo: self.repo,
            policy: self.policy,
            rules: self.rules,
            scratch_root: &self.scratch_root,
            cancel,
        };
        let (report, verdict) = checker.check(&reference, &target)?;
        if cancel.load(Ordering::SeqCst) {
            // A verdict reached while stopping may rest on a stage that was cut short: store none.
            self.transition(
                &task.id,
                attempt,
                TaskState::Cancelled,
                Some("cancelled during verification".into()),
            )?;
            return Ok(None);
        }
        self.store()
            .set_verdict(self.run_id, &task.id, attempt, &verdict)?;
        let (state, verdict_reason) = gate::verdict_state(&verdict, &report);
        let kept_off = if matches!(state, TaskState::Blocked | TaskState::Accepted) {
            {
                let attempts: Vec<_> = self
                    .store()
                    .attempts(self.run_id, &task.id)?
                    .into_iter()
                    .filter(|a| {
                        a.n <= attempt && a.base.as_deref().unwrap_or(self.base_sha) == base
                    })
                    .collect();
                super::secret_branch::keep_secrets_off_branch(&super::secret_branch::Chain {
                    repo: self.repo,
                    run_id: self.run_id,
                    task_id: &task.id,
                    base,
                    attempts: &attempts,
                    tip: &tip,
                    state,
                })?
            }
        } else {
            None
        };
        let reason = [Some(verdict_reason), notes, kept_off]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("; ");
        self.transition(&task.id, attempt, state, Some(reason))?;
        Ok(Some((verdict, tip)))
    }
}

impl Carrier<'_> {
    /// An attempt ccfan could not record (neither libgit2 nor the git CLI could commit its files): the task is
    /// blocked with the reason, and the work stays in its worktree, untouched, for a person to look at.
    fn unrecorded(
        &self,
        task: &TaskSpec,
        attempt: u32,
        exit: &ExitStatus,
        worktree: &Path,
        error: &git::GitError,
    ) -> Result<Verdict, PipelineError> {
        let reason = self.rules.redact_text(&format!(
            "ccfan could not record attempt {attempt} ({error}); its work is kept, uncommitted, in {}",
            worktree.display()
        ));
        tracing::error!(task = %task.id, "{reason}");
        let verdict = Verdict::Rollback {
            reasons: vec![reason.clone()],
            budget_spent: true,
        };
        let mut store = self.store();
        store.finish_attempt(self.run_id, &task.id, attempt, Some(exit), None, None)?;
        store.set_verdict(self.run_id, &task.id, attempt, &verdict)?;
        drop(store);
        self.transition(&task.id, attempt, TaskState::Blocked, Some(reason))?;
        Ok(verdict)
    }
}

/// The task state (and reason) that a worker's exit leads to, before the gate.
fn outcome_state(exit: &ExitStatus, task: &TaskSpec) -> (TaskState, Option<String>) {
    match exit {
        ExitStatus::Code { code: 0 } => (TaskState::Completed, None),
        ExitStatus::Code { code } => (
            TaskState::Failed,
            Some(format!("the worker exited with code {code}")),
        ),
        ExitStatus::Signal { signal } => (
            TaskState::Failed,
            Some(format!("the worker was killed by signal {signal}")),
        ),
        ExitStatus::TimedOut => (
            TaskState::TimedOut,
            Some(format!(
                "the worker ran past its timeout of {} and its process tree was killed",
                humantime::format_duration(task.timeout)
            )),
        ),
        ExitStatus::Cancelled => (
            TaskState::Cancelled,
            Some("cancelled; its process tree was killed".to_string()),
        ),
        ExitStatus::OverLimit { limit } => (
            TaskState::Failed,
            Some(format!(
                "the worker went past its {limit} limit and its process tree was killed"
            )),
        ),
        ExitStatus::SpawnFailed { message } => (
            TaskState::Failed,
            Some(format!("the worker could not be started: {message}")),
        ),
    }
}
