//! Stage 6, one landing: merge onto the tip, gate the landing commit, move the branch by compare-and-swap, and
//! report only what the branch holds afterwards.

use std::sync::atomic::Ordering;

use crate::git::{self, MergePreview};
use crate::model::{CommitId, ExitStatus, TaskId, TaskState};
use crate::pipeline::PipelineError;
use crate::pipeline::carry::Carrier;
use crate::pipeline::gate::{self, AttemptRef};
use crate::report::{Finding, Stage, Verdict};
use crate::store::{TaskRow, task_head};
use crate::util::short;

use super::branch::{catch_up, landing_message};
use super::{MAX_RACES, Move, integration_branch, move_branch};
use crate::pipeline::carry::Destination;

/// How a step of a landing went on.
enum Flow<T> {
    /// On to the next step, with this.
    Go(T),
    /// Start the landing again (the task was reworked on the new tip, or the branch moved).
    Again,
    /// The landing is over: the task is in its final state for now.
    Done,
}

/// A landing commit ready to move the branch to: merged in memory onto `tip` and gated.
struct Ready {
    n: u32,
    tip: CommitId,
    landing: CommitId,
}

impl Carrier<'_> {
    /// Lands one accepted task (reworking it on the new tip after a conflict, while its budget lasts): merge in
    /// memory onto the tip, gate that commit, move the branch by compare-and-swap, report what the branch holds.
    pub(in crate::pipeline) fn land(
        &self,
        task_id: &TaskId,
        target: &str,
        dest: &mut Destination,
        overlap: Option<&String>,
    ) -> Result<(), PipelineError> {
        if self.found_on_target(task_id, target)? {
            return Ok(());
        }
        let mut races = 0;
        loop {
            let task = self.fresh(task_id)?;
            let ready = match self.prepare_landing(&task, dest)? {
                Flow::Go(ready) => ready,
                Flow::Again => continue,
                Flow::Done => return Ok(()),
            };
            match self.move_onto(&task, dest, &ready, &mut races)? {
                Flow::Go(()) => {}
                Flow::Again => continue,
                Flow::Done => return Ok(()),
            }
            return self.report_landing(&task, target, dest, &ready, overlap);
        }
    }

    /// Landed already: on the integration branch earlier, then brought into the target by the user.
    fn found_on_target(&self, task_id: &TaskId, target: &str) -> Result<bool, PipelineError> {
        let task = self.fresh(task_id)?;
        let Some(landing) = &task.landing else {
            return Ok(false);
        };
        let Some(tip) = git::ref_target(self.repo, &format!("refs/heads/{target}"))? else {
            return Ok(false);
        };
        if !(tip == *landing || git::is_ancestor(self.repo, landing, &tip)?) {
            return Ok(false);
        }
        let from = task
            .landed_on
            .clone()
            .unwrap_or_else(|| "another branch".into());
        self.store()
            .set_landing(self.run_id, &task.id, Some((landing, target)))?;
        self.transition(
            &task.id,
            task.attempts,
            TaskState::Merged,
            Some(format!(
                "merged into {target} as {} (found there after landing on {from})",
                short(landing)
            )),
        )?;
        Ok(true)
    }

    /// The landing commit for the task's change on the destination's tip, gated — or why there is none (nothing
    /// to land, a conflict sent back for rework, a gate that failed on the merged tree).
    fn prepare_landing(
        &self,
        task: &TaskRow,
        dest: &Destination,
    ) -> Result<Flow<Ready>, PipelineError> {
        let run = self.store().run(self.run_id)?;
        if self.cancel.of(&task.id).load(Ordering::SeqCst) {
            self.transition(
                &task.id,
                task.attempts,
                TaskState::Accepted,
                Some("not merged: the landing was cancelled; nothing landed".into()),
            )?;
            return Ok(Flow::Done);
        }
        let attempts = self.store().attempts(self.run_id, &task.id)?;
        let Some(head) = task_head(&attempts, &run.base_sha) else {
            return Ok(Flow::Done);
        };
        let n = head.latest.n;
        let done = |state, why: String| -> Result<Flow<Ready>, PipelineError> {
            self.transition(&task.id, n, state, Some(why))?;
            Ok(Flow::Done)
        };
        let Some(commit) = head.commit.clone() else {
            return done(
                TaskState::Merged,
                "nothing to merge: the accepted task changed nothing".into(),
            );
        };
        let Some(tip) = git::ref_target(self.repo, &format!("refs/heads/{}", dest.branch))? else {
            return done(
                TaskState::Accepted,
                format!(
                    "accepted, not merged: branch {} does not exist (any more)",
                    dest.branch
                ),
            );
        };
        let message = landing_message(&task.spec.goal, &task.id, self.run_id, n);
        let landing = match git::land_commit(self.repo, &tip, &commit, &message)? {
            MergePreview::Conflicts(paths) => {
                return self.conflicted(task, dest, &tip, &commit, &paths);
            }
            MergePreview::Clean { commit } => commit,
        };
        // Its attempts add up to no change (one added what a later one removed): nothing to land.
        if git::same_tree(self.repo, &commit, &head.base)? {
            return done(
                TaskState::Merged,
                "nothing to merge: its attempts add up to no change".into(),
            );
        }
        // Its change is on the target already (another task made the same edit): nothing to land.
        if git::same_tree(self.repo, &landing, &tip)? {
            self.already_there(task, n, &commit, &tip, &dest.branch)?;
            return Ok(Flow::Done);
        }
        // The gate again, on exactly the tree that would land.
        let (report, verdict) = self.landing_gate(task, head.latest, &tip, &landing)?;
        if self.cancel.of(&task.id).load(Ordering::SeqCst) {
            return Ok(Flow::Again); // reported as cancelled at the top
        }
        if verdict != Verdict::Accept {
            match &task.forced {
                Some(forced) => {
                    tracing::warn!(task = %task.id, "landing over the gate's verdict: {forced}");
                }
                None => {
                    return self
                        .refused_landing(task, dest, &head, &tip, &commit, verdict, &report);
                }
            }
        }
        Ok(Flow::Go(Ready { n, tip, landing }))
    }

    /// A landing that conflicts: the task goes back for a rework on the new tip (while its budget lasts), with the
    /// conflicting files as findings.
    fn conflicted(
        &self,
        task: &TaskRow,
        dest: &Destination,
        tip: &CommitId,
        commit: &CommitId,
        paths: &[String],
    ) -> Result<Flow<Ready>, PipelineError> {
        // Every path stored or shown is redacted (a worker names its files).
        let paths: Vec<String> = paths
            .iter()
            .map(|path| self.rules.redact_text(path))
            .collect();
        let findings = paths
            .iter()
            .map(|path| {
                Finding::error(
                    Stage::Diff,
                    "merge-conflict",
                    format!(
                        "conflicts with {} at {}: the file now holds conflict markers; resolve them keeping both changes' intent",
                        dest.branch,
                        short(tip)
                    ),
                )
                .at(path, None)
            })
            .collect();
        let why = format!(
            "merge onto {} ({}) conflicts in {}",
            dest.branch,
            short(tip),
            paths.join(", ")
        );
        Ok(
            if self.rework_on(task, tip, commit, findings, TaskState::Conflict, &why)? {
                Flow::Again
            } else {
                Flow::Done
            },
        )
    }

    /// The gate said no on the merged tree: rework on the tip (findings), keep it accepted (a stage could not
    /// run, which says nothing about the task), or roll it back.
    #[expect(
        clippy::too_many_arguments,
        reason = "one landing's facts, passed as they are"
    )]
    fn refused_landing(
        &self,
        task: &TaskRow,
        dest: &Destination,
        head: &crate::store::TaskHead<'_>,
        tip: &CommitId,
        commit: &CommitId,
        verdict: Verdict,
        report: &crate::report::VerifyReport,
    ) -> Result<Flow<Ready>, PipelineError> {
        let n = head.latest.n;
        let (_, reason) = gate::verdict_state(&verdict, report);
        let why = format!(
            "the gate failed on the merged tree ({} + {}): {reason}",
            dest.branch,
            short(commit)
        );
        let broken = report
            .stages
            .iter()
            .any(|stage| stage.status == crate::report::StageStatus::Error);
        match verdict {
            Verdict::Rework { findings } => Ok(
                if self.rework_on(task, tip, commit, findings, TaskState::Rework, &why)? {
                    Flow::Again
                } else {
                    Flow::Done
                },
            ),
            Verdict::Accept | Verdict::Rollback { .. } if broken => {
                self.transition(
                    &task.id,
                    n,
                    TaskState::Accepted,
                    Some(format!(
                        "not merged: {why}; fix that, then `ccfan merge {}`",
                        self.run_id
                    )),
                )?;
                Ok(Flow::Done)
            }
            Verdict::Accept | Verdict::Rollback { .. } => {
                if let Err(error) = crate::pipeline::tree::reset(&task.worktree, &head.base) {
                    tracing::warn!(task = %task.id, "cannot reset the rolled-back worktree: {error}");
                }
                self.transition(&task.id, n, TaskState::RolledBack, Some(why))?;
                Ok(Flow::Done)
            }
        }
    }

    /// Moves the destination branch from the tip to the landing commit (compare-and-swap): on a race, again on the
    /// new tip (a few times); with the target checked out over uncommitted changes, onto an integration branch.
    fn move_onto(
        &self,
        task: &TaskRow,
        dest: &mut Destination,
        ready: &Ready,
        races: &mut u32,
    ) -> Result<Flow<()>, PipelineError> {
        let (n, tip, landing) = (ready.n, &ready.tip, &ready.landing);
        self.store()
            .set_landing(self.run_id, &task.id, Some((landing, &dest.branch)))?;
        self.transition(
            &task.id,
            n,
            TaskState::Merging,
            Some(format!("landing as {} on {}", short(landing), dest.branch)),
        )?;
        let moved = match move_branch(
            self.repo,
            &dest.branch,
            tip,
            landing,
            dest.diverted.is_none(),
        ) {
            Ok(moved) => moved,
            Err(error) => {
                // Whatever failed, git says whether the commit landed; nothing stays `merging`.
                let task = self.fresh(&task.id)?;
                self.settle_merging(&task, &format!("moving {} failed: {error}", dest.branch))?;
                return Ok(Flow::Done);
            }
        };
        let not_landed = |why: String| -> Result<(), PipelineError> {
            self.store().set_landing(self.run_id, &task.id, None)?;
            self.transition(&task.id, n, TaskState::Accepted, Some(why))
        };
        match moved {
            Move::Moved => Ok(Flow::Go(())),
            Move::Raced if *races < MAX_RACES => {
                *races += 1;
                not_landed(format!(
                    "{} moved during the landing; merging again onto its new tip",
                    dest.branch
                ))?;
                Ok(Flow::Again)
            }
            Move::Raced => {
                not_landed(format!(
                    "not merged: {} kept moving during {MAX_RACES} landings; `ccfan merge {}` tries again",
                    dest.branch, self.run_id
                ))?;
                Ok(Flow::Done)
            }
            Move::InTheWay(checkout, dirty) => {
                let integration = self.integration_branch(tip)?;
                not_landed(format!(
                    "{} is checked out with uncommitted changes in {}: landing on {integration} instead",
                    dest.branch,
                    self.rules.redact_text(&dirty.join(", "))
                ))?;
                dest.branch = integration;
                dest.diverted = Some((checkout, dirty));
                Ok(Flow::Again)
            }
        }
    }

    /// Reports only what the branch really holds once it moved.
    fn report_landing(
        &self,
        task: &TaskRow,
        target: &str,
        dest: &Destination,
        ready: &Ready,
        overlap: Option<&String>,
    ) -> Result<(), PipelineError> {
        let (n, landing) = (ready.n, &ready.landing);
        let now = git::ref_target(self.repo, &format!("refs/heads/{}", dest.branch))?;
        let holds = match &now {
            Some(now) => now == landing || git::is_ancestor(self.repo, landing, now)?,
            None => false,
        };
        let extra = overlap.map(|note| format!(" ({note})")).unwrap_or_default();
        let forced = task
            .forced
            .as_ref()
            .map(|why| format!("; accepted over the gate by {why}"))
            .unwrap_or_default();
        match (&dest.diverted, holds) {
            (_, false) => {
                self.store().set_landing(self.run_id, &task.id, None)?;
                self.transition(
                    &task.id,
                    n,
                    TaskState::Accepted,
                    Some(format!(
                        "not merged: {} did not hold the landing commit when re-read",
                        dest.branch
                    )),
                )
            }
            (None, true) => self.transition(
                &task.id,
                n,
                TaskState::Merged,
                Some(format!(
                    "merged into {target} as {}{extra}{forced}",
                    short(landing)
                )),
            ),
            (Some((_, dirty)), true) => self.transition(
                &task.id,
                n,
                TaskState::Accepted,
                Some(format!(
                    "landed on {} as {}, not on {target}: its checkout has uncommitted changes in {}; {}",
                    dest.branch,
                    short(landing),
                    self.rules.redact_text(&dirty.join(", ")),
                    catch_up(&dest.branch, self.run_id)
                )),
            ),
        }
    }

    /// A fresh integration branch at `tip`: `ccfan/<run>/integration`, or `…-2`, `…-3` when an earlier one
    /// exists (it may hold work the user built on; ccfan never moves it).
    fn integration_branch(&self, tip: &CommitId) -> Result<String, PipelineError> {
        let base = integration_branch(self.run_id);
        for n in 1..100 {
            let name = if n == 1 {
                base.clone()
            } else {
                format!("{base}-{n}")
            };
            let full = format!("refs/heads/{name}");
            match git::ref_target(self.repo, &full)? {
                Some(existing) if existing == *tip => return Ok(name),
                Some(_) => continue,
                None => {
                    git::set_ref(
                        self.repo,
                        &full,
                        tip,
                        "ccfan: integration branch (the target's checkout has uncommitted changes)",
                    )?;
                    return Ok(name);
                }
            }
        }
        Ok(base)
    }

    /// The gate on a landing commit: every stage, with the target tip as base, so scope, secrets and tests judge
    /// exactly what would land. Its report goes to the attempt's `landing/` folder.
    fn landing_gate(
        &self,
        task: &TaskRow,
        latest: &crate::store::AttemptRow,
        tip: &CommitId,
        landing: &CommitId,
    ) -> Result<(crate::report::VerifyReport, Verdict), PipelineError> {
        let checker = self.gate(self.cancel.of(&task.id));
        let exit = ExitStatus::Code { code: 0 };
        let env = self.resources.env_of(self.run_id, &task.id);
        let reference = AttemptRef {
            run_id: self.run_id,
            task: &task.spec,
            attempt: latest.n,
            base: tip,
            commit: Some(landing),
            dir: &latest.dir,
            exit: Some(&exit),
            tampered: &[],
            in_budget: 1,
            landing: true,
            env: &env,
            token: &latest.token,
        };
        checker.check(&reference, tip)
    }
}

impl Carrier<'_> {
    /// A task whose change `commit` is already on `branch` (at `tip`): it lands no commit, and says which task of
    /// the run brought the change there (the first merged one whose landing holds the same change).
    fn already_there(
        &self,
        task: &TaskRow,
        n: u32,
        commit: &str,
        tip: &str,
        branch: &str,
    ) -> Result<(), PipelineError> {
        let mut by = None;
        for other in self.store().tasks(self.run_id)? {
            let (Some(landing), Some(on)) = (&other.landing, &other.landed_on) else {
                continue;
            };
            if other.id == task.id || other.state != TaskState::Merged || on != branch {
                continue;
            }
            let Some(parent) = git::first_parent(self.repo, landing)? else {
                continue;
            };
            if let MergePreview::Clean { commit: again } =
                git::land_commit(self.repo, &parent, commit, "probe")?
                && git::same_tree(self.repo, &again, landing)?
            {
                by = Some((other.id.clone(), landing.clone()));
                break;
            }
        }
        let reason = match &by {
            Some((other, landing)) => format!(
                "its change is already on {branch}, landed by {other} as {}; no commit of its own",
                short(landing)
            ),
            None => format!(
                "its change is already on {branch} (at {}); no commit of its own",
                short(tip)
            ),
        };
        let mut store = self.store();
        store.set_landing(self.run_id, &task.id, None)?;
        store.set_landed_with(
            self.run_id,
            &task.id,
            Some(by.as_ref().map_or("", |(other, _)| other.as_str())),
        )?;
        drop(store);
        self.transition(&task.id, n, TaskState::Merged, Some(reason))
    }
}
