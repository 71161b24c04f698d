//! Stages 3 to 5 for one attempt, as a sequence of calls that take and return values: begin (its folder, its
//! stored row, the session a rework resumes) → run the worker → keep what it did (record, attempt.json, notes) →
//! judge (the gate, the verdict, the branch kept off secrets). [`Carrier::attempt`] is that sequence and nothing
//! else; what follows the verdict is [`super::lifecycle::after_attempt`]'s call.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::carry::{Carrier, Cursor};
use super::{PipelineError, gate, record, run_worker};
use crate::events::Event;
use crate::git;
use crate::model::{AttemptMode, CommitId, ExitStatus, TaskSpec, TaskState};
use crate::paths::AttemptDir;
use crate::report::Verdict;

/// An attempt that has begun: its number, folder, process token and the agent session it resumes.
pub(super) struct Begun {
    pub(super) n: u32,
    pub(super) dir: PathBuf,
    token: String,
    resume: Option<String>,
    baseline: crate::agents::Usage,
}

/// What recording an attempt kept: the commit chain's new tip, the record, and the notes for its state.
struct Kept {
    tip: CommitId,
    recorded: record::Recorded,
    exit: ExitStatus,
    state: TaskState,
    notes: Option<String>,
}

impl Carrier<'_> {
    /// One attempt: begin, run the worker, keep what it did, judge it. Returns the verdict and the chain's new tip
    /// (`None`: the attempt was cancelled). The task's state afterwards is the verdict's.
    pub(super) fn attempt(
        &self,
        task: &TaskSpec,
        worktree: &Path,
        link: &str,
        cursor: &Cursor,
    ) -> Result<Option<(Verdict, CommitId)>, PipelineError> {
        let cancel = self.cancel.of(&task.id);
        // Plan mode: the plan a person approved goes to the worker with the task.
        let approved = self.approved_plan(&task.id)?;
        let step = match &approved {
            Some((plan, note)) => AttemptMode::Approved {
                plan,
                note: note.as_deref(),
            },
            None => AttemptMode::Work,
        };
        let begun = self.begin(task, worktree, cursor, step)?;
        let outcome = self.work(task, worktree, cursor, &begun, cancel, step)?;
        let kept = match self.keep(task, worktree, link, cursor, &begun, outcome)? {
            Ok(kept) => kept,
            Err(unrecorded) => return Ok(Some((unrecorded, cursor.tip.clone()))),
        };
        if matches!(kept.state, TaskState::Cancelled | TaskState::Interrupted) {
            // No gate for a cancelled attempt, or one whose end is not known (its link was lost), but what it
            // printed is still scrubbed of secrets.
            let files = AttemptDir::of(&begun.dir);
            super::verify::secrets::scrub_log(self.rules, &files.log(), &[]);
            super::verify::secrets::scrub_log(self.rules, &files.events(), &[]);
            self.transition(&task.id, begun.n, kept.state, kept.notes)?;
            return Ok(None);
        }
        self.judge(task, cursor, &begun, kept, cancel)
    }

    /// Makes the attempt's folder and stored row, finds the agent session a rework resumes, and marks it running.
    pub(super) fn begin(
        &self,
        task: &TaskSpec,
        worktree: &Path,
        cursor: &Cursor,
        step: AttemptMode<'_>,
    ) -> Result<Begun, PipelineError> {
        let (n, rework) = (cursor.next, &cursor.findings);
        let dir = self.layout.attempt_dir(self.run_id, &task.id, n);
        std::fs::create_dir_all(&dir).map_err(|source| PipelineError::Io {
            context: format!("cannot create {}", dir.display()),
            source,
        })?;
        let token = format!(
            "{}-{}-{n}-{}",
            self.run_id,
            task.id,
            crate::util::random_hex(4)
        );
        self.store().start_attempt(
            self.run_id,
            &task.id,
            &crate::store::NewAttempt {
                n,
                base: &cursor.base,
                dir: &dir,
                log_path: &AttemptDir::of(&dir).log(),
                token: &token,
            },
        )?;
        // An agent's rework continues its own session, when an earlier attempt reported one and its private home
        // still holds it (`gc` removes the home; a resume of a lost session would start with no task at all).
        let agent_home = self.layout.agent_home(self.run_id, &task.id);
        let tree = super::run_worker::tree_seen(self.policy, worktree, step);
        let (resume, baseline) = match task.worker.kind.agent() {
            Some((agent, _)) if !rework.is_empty() => {
                let store = self.store();
                let session = store.agent_session(self.run_id, &task.id)?.filter(|id| {
                    crate::agents::tally::is_session_id(id)
                        && crate::agents::home::has_session(agent, &agent_home, id, &tree)
                });
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
        let why = match (step, &resume) {
            (AttemptMode::Planning, _) => Some(format!(
                "attempt {n}: planning; the tree is read-only to the worker"
            )),
            (AttemptMode::Approved { .. }, _) if rework.is_empty() => {
                Some(format!("attempt {n}: carrying out the approved plan"))
            }
            _ if n == 1 => None,
            (_, Some(_)) => Some(format!(
                "attempt {n}: {} finding(s) to fix, in the agent's same session",
                rework.len()
            )),
            (_, None) => Some(format!("attempt {n}: {} finding(s) to fix", rework.len())),
        };
        self.transition(&task.id, n, TaskState::Running, why)?;
        Ok(Begun {
            n,
            dir,
            token,
            resume,
            baseline,
        })
    }

    /// Runs the worker to its end, storing its pid and (agents) its live progress as they come.
    pub(super) fn work(
        &self,
        task: &TaskSpec,
        worktree: &Path,
        cursor: &Cursor,
        begun: &Begun,
        cancel: &AtomicBool,
        plan: AttemptMode<'_>,
    ) -> Result<crate::sandbox::Outcome, PipelineError> {
        let n = begun.n;
        // A copy-on-write tree whose mount went away (a reboot) is shown again before the worker starts.
        super::tree::ensure(worktree)?;
        let agent_home = self.layout.agent_home(self.run_id, &task.id);
        let resources = self.resources.env_of(self.run_id, &task.id);
        let handoffs = self.handoffs(task)?;
        let context = run_worker::AttemptContext {
            run_id: self.run_id,
            attempt: n,
            base_sha: &cursor.base,
            worktree,
            dir: &begun.dir,
            common_dir: &self.repo.common_dir,
            checkout: &self.repo.workdir,
            token: &begun.token,
            rework: &cursor.findings,
            resume: begun.resume.as_deref(),
            agent_home: &agent_home,
            rules: self.rules,
            baseline: begun.baseline,
            resources: &resources,
            handoffs: &handoffs,
            plan,
        };
        let mut stored: Option<crate::model::AgentView> = None;
        let mut on_progress = |summary: &crate::agents::tally::AgentSummary| {
            // Live progress for `ccfan status` in other processes, whenever what it shows changed.
            let view = crate::model::AgentView::of(summary);
            if stored.as_ref() != Some(&view) {
                stored = Some(view);
                if let Err(error) =
                    self.store()
                        .set_attempt_agent(self.run_id, &task.id, n, summary)
                {
                    tracing::warn!("cannot record agent progress: {error}");
                }
                // What it spent so far may cross a `[budget]` cap: the worker is then stopped — unless its stream
                // already ended (the usage of most agents arrives with their last event): that attempt is judged.
                if !summary.finished {
                    self.check_budget(&task.id, super::budget::Check::Live);
                }
            }
            self.sink.emit(Event::WorkerProgress {
                task_id: task.id.clone(),
                attempt: n,
                progress: Box::new(summary.clone()),
            });
        };
        let on_spawn = |pid| {
            if let Err(error) = self.store().set_attempt_pid(self.run_id, &task.id, n, pid) {
                tracing::warn!("cannot record the worker's pid: {error}");
            }
        };
        let ran = run_worker::run_worker(
            task,
            self.policy,
            &context,
            cancel,
            on_spawn,
            &mut on_progress,
        )?;
        if let Some(summary) = &ran.agent {
            let mut store = self.store();
            store.set_attempt_agent(self.run_id, &task.id, n, summary)?;
            if let Some(session) = &summary.session_id {
                store.set_agent_session(self.run_id, &task.id, session)?;
            }
        }
        Ok(ran.outcome)
    }

    /// Records what the worker left as the attempt's commit (salvage ref included), stores it with
    /// `attempt.json`, and says what state its exit leads to. `Err(verdict)`: it could not be recorded (the task
    /// is blocked, its work left in the worktree).
    fn keep(
        &self,
        task: &TaskSpec,
        worktree: &Path,
        link: &str,
        cursor: &Cursor,
        begun: &Begun,
        outcome: crate::sandbox::Outcome,
    ) -> Result<Result<Kept, Verdict>, PipelineError> {
        let (n, parent, base) = (begun.n, &cursor.tip, &cursor.base);
        let facts = record::AttemptFacts {
            run_id: self.run_id,
            task_id: &task.id,
            attempt: n,
            goal: &task.goal,
            worker: &task.worker.name,
            exit: Some(&outcome.exit),
            index_kept: outcome.kept_git_metadata(),
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
            // Git state the worker changed in its container is judged as if it had changed it here.
            Ok(mut recorded) => {
                recorded
                    .tampered
                    .extend(super::remote::tampered(&begun.dir));
                recorded
            }
            // A full disk stops the run (there is nothing more to do); anything else ends this task only.
            Err(error) if !crate::util::disk_full(&error) => {
                return Ok(Err(self.unrecorded(
                    task,
                    n,
                    &outcome.exit,
                    worktree,
                    &error,
                )?));
            }
            Err(error) => return Err(error.into()),
        };
        let tip = recorded.commit.clone().unwrap_or_else(|| parent.clone());
        self.store().finish_attempt(
            self.run_id,
            &task.id,
            n,
            Some(&outcome.exit),
            recorded.commit.as_ref(),
            recorded.salvage_ref.as_deref(),
        )?;
        record::write_record(
            self.repo,
            self.rules,
            &begun.dir,
            record::AttemptRecord {
                schema: 1,
                run_id: self.run_id,
                task_id: &task.id,
                attempt: n,
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
            attempt: n,
            exit: outcome.exit.clone(),
            commit: recorded.commit.clone(),
            log: AttemptDir::of(&begun.dir).log(),
        });
        let (state, reason) = crate::model::outcome_state(&outcome.exit, task.timeout);
        let notes = worker_notes(reason, &outcome, &recorded);
        Ok(Ok(Kept {
            tip,
            recorded,
            exit: outcome.exit,
            state,
            notes,
        }))
    }

    /// The gate on everything the task committed so far, the verdict stored, the branch kept off secrets, and the
    /// task moved to the verdict's state. `None`: cancelled while verifying (no verdict is stored).
    fn judge(
        &self,
        task: &TaskSpec,
        cursor: &Cursor,
        begun: &Begun,
        kept: Kept,
        cancel: &AtomicBool,
    ) -> Result<Option<(Verdict, CommitId)>, PipelineError> {
        let (n, base) = (begun.n, &cursor.base);
        self.transition(&task.id, n, kept.state, kept.notes.clone())?;
        self.transition(&task.id, n, TaskState::Verifying, None)?;
        // The attempt is judged by everything the task committed so far, not only this attempt's own commit.
        let judged = (kept.tip != *base).then(|| kept.tip.clone());
        let target = gate::target_tip(self.repo, self.target_branch, base)?;
        let reference = gate::AttemptRef {
            run_id: self.run_id,
            task,
            attempt: n,
            base,
            commit: judged.as_ref(),
            dir: &begun.dir,
            exit: Some(&kept.exit),
            tampered: &kept.recorded.tampered,
            in_budget: n + 1 - cursor.budget_from,
            landing: false,
            env: &self.resources.env_of(self.run_id, &task.id),
            token: &begun.token,
        };
        let (report, verdict, review) = self.gate(cancel).check_reviewed(&reference, &target)?;
        // A review's usage is the task's, whatever the verdict (and even when cancelled: it was spent).
        if let Some(review) = review {
            self.store().add_review(
                self.run_id,
                &task.id,
                n,
                &review.reviewer,
                review.outcome,
                review.agent.as_ref(),
            )?;
        }
        if cancel.load(Ordering::SeqCst) {
            // A verdict reached while stopping may rest on a stage that was cut short: store none.
            self.transition(
                &task.id,
                n,
                TaskState::Cancelled,
                Some("cancelled during verification".into()),
            )?;
            return Ok(None);
        }
        self.store()
            .set_verdict(self.run_id, &task.id, n, &verdict)?;
        let (state, verdict_reason) = gate::verdict_state(&verdict, &report);
        let kept_off = if matches!(state, TaskState::Blocked | TaskState::Accepted) {
            let attempts: Vec<_> = self
                .store()
                .attempts(self.run_id, &task.id)?
                .into_iter()
                .filter(|a| a.n <= n && a.base.as_ref().unwrap_or(self.base_sha) == base)
                .collect();
            super::secret_branch::keep_secrets_off_branch(&super::secret_branch::Chain {
                repo: self.repo,
                run_id: self.run_id,
                task_id: &task.id,
                base,
                attempts: &attempts,
                tip: &kept.tip,
                state,
            })?
        } else {
            None
        };
        let reason = [Some(verdict_reason), kept.notes, kept_off]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("; ");
        self.transition(&task.id, n, state, Some(reason))?;
        Ok(Some((verdict, kept.tip)))
    }

    /// The gate, as this carrier runs it.
    pub(super) fn gate<'g>(&'g self, cancel: &'g AtomicBool) -> gate::Gate<'g> {
        gate::Gate::new(
            self.repo,
            self.policy,
            self.rules,
            &self.scratch_root,
            self.includes,
            cancel,
        )
    }

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

/// What to say about how the worker ended, beyond its state: nothing changed, processes it left, a capped log,
/// the sandbox's notes, a rewritten `.git` link.
fn worker_notes(
    reason: Option<String>,
    outcome: &crate::sandbox::Outcome,
    recorded: &record::Recorded,
) -> Option<String> {
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
        notes.push("it changed the worktree's .git link (restored before committing)".to_string());
    }
    (!notes.is_empty()).then(|| notes.join("; "))
}
