//! The follow-up commands' work on one task: another attempt on a fresh budget (rework, retry), and rolling back
//! (a revert commit for a merged task; a reset worktree, after salvaging, otherwise).

use crate::git::{self, MergePreview};
use crate::model::{TaskId, TaskState};
use crate::pipeline::PipelineError;
use crate::pipeline::carry::{Carrier, Cursor};
use crate::pipeline::integrate::{Move, move_branch};
use crate::pipeline::lifecycle::{self, Operation, Refusal};
use crate::report::Finding;
use crate::store::{TaskRow, task_head};
use crate::util::short;

impl Carrier<'_> {
    /// Another attempt of a finished task with `findings`, on a fresh rework budget, in its worktree as it was
    /// left (re-created if `gc` removed it); then landing, unless the run was made with `--no-merge`.
    /// A task that never ran starts where its prerequisites' work is, and is refused while that is not there.
    pub(super) fn again(
        &self,
        task: &TaskRow,
        findings: Vec<Finding>,
    ) -> Result<Option<Refusal>, PipelineError> {
        // Plan mode: a task nobody approved plans again; it never runs unapproved.
        if self.store().run(self.run_id)?.plan_mode
            && self.store().approval(self.run_id, &task.id)?.is_none()
        {
            let planned = self
                .ensure_worktree(task, self.base_sha)
                .and_then(|_| Ok(self.store().clear_cancel(self.run_id, &task.id)?))
                .and_then(|()| self.plan_attempt(&task.spec, &task.worktree, task.attempts + 1));
            if let Err(error) = planned {
                self.fail(Some(&task.id), error);
            }
            return Ok(None);
        }
        let attempts = self.store().attempts(self.run_id, &task.id)?;
        let (base, tip) = match task_head(&attempts, self.base_sha) {
            Some(head) => {
                let tip = head.commit.clone().unwrap_or_else(|| head.base.clone());
                (head.base, tip)
            }
            None => match self.start_of(&task.spec)? {
                Ok(start) => (start.clone(), start),
                Err(why) => {
                    return Ok(Some(Refusal::Prerequisites {
                        task: task.id.clone(),
                        why,
                    }));
                }
            },
        };
        let next = task.attempts + 1;
        self.store().set_budget_from(self.run_id, &task.id, next)?;
        self.store().set_forced(self.run_id, &task.id, None)?;
        self.store().set_landing(self.run_id, &task.id, None)?;
        self.store().set_landed_with(self.run_id, &task.id, None)?;
        self.store().clear_cancel(self.run_id, &task.id)?;
        let link = self.ensure_worktree(task, &tip)?;
        // Work left uncommitted by an interrupted attempt is kept on a salvage ref before the worktree is reset.
        crate::pipeline::gc::salvage_then_reset(
            self.repo,
            &mut self.store(),
            self.run_id,
            task,
            &tip,
            &tip,
        )?;
        let cursor = Cursor {
            base,
            tip,
            next,
            budget_from: next,
            findings,
        };
        let settled = self.continue_from(&task.spec, &task.worktree, &link, cursor)?;
        let run = self.store().run(self.run_id)?;
        if settled.is_some() && !run.no_merge {
            self.integrate()?;
        }
        Ok(None)
    }

    /// Rolls one task back; returns why not, if it refused.
    pub(super) fn roll_back(&self, task: &TaskRow) -> Result<Option<Refusal>, PipelineError> {
        if let Err(refusal) = lifecycle::allows(Operation::Rollback, &task.id, task.state) {
            return Ok(Some(refusal));
        }
        match task.state {
            TaskState::RolledBack => return Ok(None),
            TaskState::Merged => return self.revert(task),
            _ => {}
        }
        let attempts = self.store().attempts(self.run_id, &task.id)?;
        let base = task_head(&attempts, self.base_sha)
            .map_or_else(|| self.base_sha.clone(), |head| head.base);
        if !task.removed && task.worktree.is_dir() {
            let tip = task_head(&attempts, self.base_sha)
                .and_then(|head| head.commit)
                .unwrap_or_else(|| base.clone());
            crate::pipeline::gc::salvage_then_reset(
                self.repo,
                &mut self.store(),
                self.run_id,
                task,
                &tip,
                &base,
            )?;
        }
        self.transition(
            &task.id,
            task.attempts,
            TaskState::RolledBack,
            Some(
                "rolled back by request: not merged; every attempt stays on its salvage ref".into(),
            ),
        )?;
        Ok(None)
    }

    /// Undoes a merged task with a revert commit on the branch it landed on.
    fn revert(&self, task: &TaskRow) -> Result<Option<Refusal>, PipelineError> {
        if let Some(with) = &task.landed_with {
            return Ok(Some(Refusal::LandedNothing {
                task: task.id.clone(),
                with: TaskId::parse(with.as_str()).ok(),
            }));
        }
        let refuse = |why: String| {
            Ok(Some(Refusal::Revert {
                task: task.id.clone(),
                why,
            }))
        };
        let (Some(landing), Some(branch)) = (&task.landing, &task.landed_on) else {
            return refuse(format!(
                "task {} is merged but its landing commit is not recorded (it changed nothing?)",
                task.id
            ));
        };
        for _ in 0..5 {
            let Some(tip) = git::ref_target(self.repo, &format!("refs/heads/{branch}"))? else {
                return refuse(format!("branch {branch} does not exist any more"));
            };
            if !(tip == *landing || git::is_ancestor(self.repo, landing, &tip)?) {
                return refuse(format!(
                    "{branch} no longer holds task {}'s commit {}: nothing to revert",
                    task.id,
                    short(landing)
                ));
            }
            let message = format!(
                "Revert task `{}` of run {}\n\nThis reverts commit {landing} (rolled back with ccfan).\n\nCcfan-Run: {}\nCcfan-Task: {}\n",
                task.id, self.run_id, self.run_id, task.id
            );
            let revert = match git::revert_commit(self.repo, &tip, landing, &message)? {
                MergePreview::Clean { commit } => commit,
                MergePreview::Conflicts(paths) => {
                    return refuse(format!(
                        "reverting task {} conflicts with later changes on {branch} in {}: revert {} by hand",
                        task.id,
                        paths.join(", "),
                        short(landing)
                    ));
                }
            };
            match move_branch(self.repo, branch, &tip, &revert, true)? {
                Move::Moved => {
                    self.store().set_landing(self.run_id, &task.id, None)?;
                    self.transition(
                        &task.id,
                        task.attempts,
                        TaskState::RolledBack,
                        Some(format!(
                            "rolled back by request: reverted on {branch} by {} (history kept); every attempt stays on its salvage ref",
                            short(&revert)
                        )),
                    )?;
                    return Ok(None);
                }
                Move::Raced => continue,
                Move::InTheWay(checkout, dirty) => {
                    return refuse(format!(
                        "not reverted: your checkout {} has uncommitted changes in {} that the revert changes; commit or stash them and run the rollback again",
                        checkout.display(),
                        dirty.join(", ")
                    ));
                }
            }
        }
        refuse(format!("{branch} kept moving: try the rollback again"))
    }
}
