//! Stage 6 back to stage 3: a task whose landing conflicted (or failed the gate on the merged tree) is reworked on
//! the new tip while its budget lasts, in its worktree (re-created if `gc` removed it).

use crate::git::{self};
use crate::model::{CommitId, TaskState};
use crate::pipeline::PipelineError;
use crate::pipeline::carry::{Carrier, Cursor};
use crate::report::{Finding, Verdict};
use crate::store::TaskRow;
use crate::util::short;

impl Carrier<'_> {
    /// Sends a task whose landing failed back for another attempt on `tip`, with `findings`, if its budget allows;
    /// otherwise blocks it. Returns whether the rework was accepted (then it is landed again).
    pub(super) fn rework_on(
        &self,
        task: &TaskRow,
        tip: &CommitId,
        commit: &CommitId,
        findings: Vec<Finding>,
        state: TaskState,
        why: &str,
    ) -> Result<bool, PipelineError> {
        let fresh = self.store().tasks(self.run_id)?;
        let row = fresh.iter().find(|t| t.id == task.id).unwrap_or(task);
        let used = row.attempts.saturating_sub(row.budget_from);
        if self.no_merge || used >= self.policy.max_reworks {
            self.transition(
                &task.id,
                row.attempts,
                TaskState::Blocked,
                Some(format!(
                    "{why}; the rework budget (run.max_reworks = {}) is spent",
                    self.policy.max_reworks
                )),
            )?;
            return Ok(false);
        }
        self.transition(&task.id, row.attempts, state, Some(why.to_string()))?;
        // The new attempt is judged afresh: an earlier `accept --force` does not carry over.
        self.store().set_forced(self.run_id, &task.id, None)?;
        let link = self.ensure_worktree(row, tip)?;
        // Edits someone made in the worktree since (a reviewer's, say) are kept on a salvage ref first.
        crate::pipeline::gc::salvage_if_dirty(
            self.repo,
            &mut self.store(),
            self.run_id,
            row,
            commit,
        )?;
        git::replay_onto(&row.worktree, tip, commit)?;
        let cursor = Cursor {
            base: tip.clone(),
            tip: tip.clone(),
            next: row.attempts + 1,
            budget_from: row.budget_from,
            findings,
        };
        let settled = self.continue_from(&row.spec, &row.worktree, &link, cursor)?;
        Ok(matches!(settled, Some(Verdict::Accept)))
    }

    /// The task's worktree, re-created at `at` if `gc` removed it; returns its `.git` link.
    pub(in crate::pipeline) fn ensure_worktree(
        &self,
        task: &TaskRow,
        at: &str,
    ) -> Result<String, PipelineError> {
        if !task.removed {
            crate::pipeline::tree::ensure(&task.worktree)?;
        }
        if !task.removed && task.worktree.join(".git").is_file() {
            return match &task.git_link {
                Some(link) => Ok(link.clone()),
                None => Ok(git::git_link(&task.worktree)?),
            };
        }
        git::prune_worktrees(self.repo)?;
        if let Some(tip) = git::ref_target(self.repo, &format!("refs/heads/{}", task.branch))? {
            let kept = git::refs_under(
                self.repo,
                &format!("refs/ccfan/{}/{}/", self.run_id, task.id),
            )?
            .iter()
            .any(|(_, target)| *target == tip);
            if !kept && tip != at {
                return Err(PipelineError::Io {
                    context: format!(
                        "cannot re-create the worktree of task {}: branch {} holds {} that no salvage ref keeps; check it out and look before removing it",
                        task.id,
                        task.branch,
                        short(&tip)
                    ),
                    source: std::io::Error::other("unsalvaged branch"),
                });
            }
            git::delete_branch(self.repo, &task.branch)?;
        }
        let link = crate::pipeline::fan_out::prepare(
            self.repo,
            &task.worktree,
            &task.branch,
            at,
            self.includes,
        )?;
        self.store().set_git_link(self.run_id, &task.id, &link)?;
        Ok(link)
    }
}
