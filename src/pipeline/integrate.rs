//! Stage 6, integrate: land accepted tasks on the target branch one at a time, in task-file order whatever order
//! they finished in. Each lands as one commit on the target's tip, the gate runs again on exactly that tree, and
//! the branch moves by compare-and-swap; a conflict (or a gate failure on the merged tree) sends the task back for
//! a rework on the new tip while its budget lasts. A user's uncommitted change is never touched: if it is in the
//! way, the result goes to `ccfan/<run>/integration` instead, with what to run.

use std::collections::BTreeMap;

use super::PipelineError;
use super::carry::{Carrier, Cursor};
use super::gate::{self, AttemptRef};
use crate::events::Event;
use crate::git::{self, MergePreview};
use crate::model::{ExitStatus, TaskState};
use crate::report::{Finding, Stage, Verdict};
use crate::store::{TaskRow, task_head};
use crate::util::short;

/// How many times a landing is retried when the target moves under it.
const MAX_RACES: u32 = 5;

/// Where landings go: the target branch, or the integration branch once the user's checkout was in the way.
#[derive(Debug, Clone)]
struct Destination {
    branch: String,
    /// Set once diverted: the user's checkout and the dirty paths that were in the way.
    diverted: Option<(std::path::PathBuf, Vec<String>)>,
}

/// The outcome of trying to move a branch.
pub(super) enum Move {
    Moved,
    /// The branch moved meanwhile.
    Raced,
    /// The branch is checked out with uncommitted changes in paths the update touches.
    InTheWay(std::path::PathBuf, Vec<String>),
}

/// The integration branch of a run.
pub fn integration_branch(run_id: &str) -> String {
    format!("ccfan/{run_id}/integration")
}

impl Carrier<'_> {
    /// Lands every accepted task of the run that has not landed yet, in task-file order.
    pub(super) fn integrate(&self) -> Result<(), PipelineError> {
        for task in self.store().tasks(self.run_id)? {
            if task.state == TaskState::Merging {
                self.settle_merging(&task, "an earlier landing did not finish")?;
            }
        }
        let tasks = self.store().tasks(self.run_id)?;
        let accepted: Vec<&TaskRow> = tasks
            .iter()
            .filter(|task| task.state == TaskState::Accepted)
            .collect();
        if accepted.is_empty() {
            return Ok(());
        }
        let Some(target) = self.target_branch else {
            for task in accepted {
                self.transition(
                    &task.id,
                    task.attempts,
                    TaskState::Accepted,
                    Some(format!(
                        "accepted, not merged: HEAD was detached when the run started; `ccfan merge {} --into BRANCH` lands it",
                        self.run_id
                    )),
                )?;
            }
            return Ok(());
        };
        let overlaps = self.overlaps(&accepted)?;
        let mut dest = Destination {
            branch: target.to_string(),
            diverted: None,
        };
        for task in accepted {
            if self.cancel.all() {
                break;
            }
            self.land(&task.id, target, &mut dest, overlaps.get(&task.id))?;
        }
        if let Some((checkout, dirty)) = &dest.diverted {
            self.sink.emit(Event::Warning {
                message: format!(
                    "{target} was not updated: your checkout {} has uncommitted changes in {} that the merge changes. \
                     The merged result is on {}. {}",
                    checkout.display(),
                    dirty.join(", "),
                    dest.branch,
                    catch_up(&dest.branch, self.run_id)
                ),
            });
        }
        Ok(())
    }

    /// Tasks whose actual diffs touch the same files: warned about, and noted on each.
    fn overlaps(&self, accepted: &[&TaskRow]) -> Result<BTreeMap<String, String>, PipelineError> {
        let run = self.store().run(self.run_id)?;
        let mut touched: Vec<(&str, Vec<String>)> = Vec::new();
        for task in accepted {
            let attempts = self.store().attempts(self.run_id, &task.id)?;
            let Some(head) = task_head(&attempts, &run.base_sha) else {
                continue;
            };
            let Some(commit) = head.commit else { continue };
            let mut paths: Vec<String> = git::diff_files(self.repo, &head.base, &commit)?
                .into_iter()
                .flat_map(|change| std::iter::once(change.path).chain(change.old_path))
                .collect();
            paths.sort();
            paths.dedup();
            touched.push((&task.id, paths));
        }
        let mut notes: BTreeMap<String, String> = BTreeMap::new();
        for (i, (first, first_paths)) in touched.iter().enumerate() {
            for (second, second_paths) in &touched[i + 1..] {
                let shared: Vec<&str> = first_paths
                    .iter()
                    .filter(|path| second_paths.contains(path))
                    .map(String::as_str)
                    .collect();
                if shared.is_empty() {
                    continue;
                }
                let files = shared.join(", ");
                self.sink.emit(Event::Warning {
                    message: format!(
                        "tasks {first} and {second} both change {files}: {first} lands first and {second} is merged and re-checked on top of it"
                    ),
                });
                notes.insert(second.to_string(), format!("overlaps {first} on {files}"));
                notes
                    .entry(first.to_string())
                    .or_insert_with(|| format!("overlaps {second} on {files}"));
            }
        }
        Ok(notes)
    }

    /// Settles a task left `merging` (an error or a kill between storing its landing commit and reporting): merged
    /// if the branch holds the landing commit, else accepted with nothing landed. Git is the truth.
    pub(super) fn settle_merging(&self, task: &TaskRow, why: &str) -> Result<(), PipelineError> {
        let holds = match (&task.landing, &task.landed_on) {
            (Some(landing), Some(branch)) => {
                match git::ref_target(self.repo, &format!("refs/heads/{branch}"))? {
                    Some(tip) => tip == *landing || git::is_ancestor(self.repo, landing, &tip)?,
                    None => false,
                }
            }
            _ => false,
        };
        match (&task.landing, &task.landed_on) {
            (Some(landing), Some(branch)) if holds && !branch.starts_with("ccfan/") => self
                .transition(
                    &task.id,
                    task.attempts,
                    TaskState::Merged,
                    Some(format!(
                        "merged into {branch} as {} ({why}; checked on the branch)",
                        short(landing)
                    )),
                ),
            _ => {
                if !holds {
                    self.store().set_landing(self.run_id, &task.id, None)?;
                }
                self.transition(
                    &task.id,
                    task.attempts,
                    TaskState::Accepted,
                    Some(format!(
                        "not merged: {why}; `ccfan merge {}` tries again",
                        self.run_id
                    )),
                )
            }
        }
    }

    /// The task as stored now.
    fn fresh(&self, task_id: &str) -> Result<TaskRow, PipelineError> {
        self.store()
            .tasks(self.run_id)?
            .into_iter()
            .find(|task| task.id == task_id)
            .ok_or_else(|| {
                crate::store::StoreError::NoSuchTask {
                    run: self.run_id.to_string(),
                    task: task_id.to_string(),
                }
                .into()
            })
    }

    /// Lands one accepted task (reworking it on the new tip after a conflict, while its budget lasts).
    fn land(
        &self,
        task_id: &str,
        target: &str,
        dest: &mut Destination,
        overlap: Option<&String>,
    ) -> Result<(), PipelineError> {
        let run = self.store().run(self.run_id)?;
        let cancel = self.cancel.of(task_id);
        let task = self.fresh(task_id)?;
        // Landed already: on the integration branch earlier, then brought into the target by the user.
        if let Some(landing) = &task.landing
            && let Some(tip) = git::ref_target(self.repo, &format!("refs/heads/{target}"))?
            && (tip == *landing || git::is_ancestor(self.repo, landing, &tip)?)
        {
            let from = task
                .landed_on
                .clone()
                .unwrap_or_else(|| "another branch".into());
            self.store()
                .set_landing(self.run_id, &task.id, Some((landing, target)))?;
            return self.transition(
                &task.id,
                task.attempts,
                TaskState::Merged,
                Some(format!(
                    "merged into {target} as {} (found there after landing on {from})",
                    short(landing)
                )),
            );
        }
        let mut races = 0;
        loop {
            let task = self.fresh(task_id)?;
            if cancel.load(std::sync::atomic::Ordering::SeqCst) {
                return self.transition(
                    &task.id,
                    task.attempts,
                    TaskState::Accepted,
                    Some("not merged: the landing was cancelled; nothing landed".into()),
                );
            }
            let attempts = self.store().attempts(self.run_id, &task.id)?;
            let Some(head) = task_head(&attempts, &run.base_sha) else {
                return Ok(());
            };
            let n = head.latest.n;
            let Some(commit) = head.commit.clone() else {
                return self.transition(
                    &task.id,
                    n,
                    TaskState::Merged,
                    Some("nothing to merge: the accepted task changed nothing".into()),
                );
            };
            let Some(tip) = git::ref_target(self.repo, &format!("refs/heads/{}", dest.branch))?
            else {
                return self.transition(
                    &task.id,
                    n,
                    TaskState::Accepted,
                    Some(format!(
                        "accepted, not merged: branch {} does not exist (any more)",
                        dest.branch
                    )),
                );
            };
            let message = landing_message(&task.spec.goal, &task.id, self.run_id, n);
            let landing = match git::land_commit(self.repo, &tip, &commit, &message)? {
                MergePreview::Conflicts(paths) => {
                    let findings = paths
                        .iter()
                        .map(|path| {
                            Finding::error(
                                Stage::Diff,
                                "merge-conflict",
                                format!(
                                    "conflicts with {} at {}: the file now holds conflict markers; resolve them keeping both changes' intent",
                                    dest.branch,
                                    short(&tip)
                                ),
                            )
                            .at(path, None)
                        })
                        .collect();
                    let why = format!(
                        "merge onto {} ({}) conflicts in {}",
                        dest.branch,
                        short(&tip),
                        paths.join(", ")
                    );
                    if self.rework_on(&task, &tip, &commit, findings, TaskState::Conflict, &why)? {
                        continue;
                    }
                    return Ok(());
                }
                MergePreview::Clean { commit } => commit,
            };
            // The gate again, on exactly the tree that would land.
            let (report, verdict) = self.landing_gate(&task, head.latest, &tip, &landing)?;
            if cancel.load(std::sync::atomic::Ordering::SeqCst) {
                continue; // reported as cancelled at the top of the loop
            }
            if verdict != Verdict::Accept {
                if let Some(forced) = &task.forced {
                    tracing::warn!(task = %task.id, "landing over the gate's verdict: {forced}");
                } else {
                    let (_, reason) = gate::verdict_state(&verdict, &report);
                    let why = format!(
                        "the gate failed on the merged tree ({} + {}): {reason}",
                        dest.branch,
                        short(&commit)
                    );
                    let broken = report
                        .stages
                        .iter()
                        .any(|stage| stage.status == crate::report::StageStatus::Error);
                    return match verdict {
                        Verdict::Rework { findings } => {
                            if self.rework_on(
                                &task,
                                &tip,
                                &commit,
                                findings,
                                TaskState::Rework,
                                &why,
                            )? {
                                continue;
                            }
                            Ok(())
                        }
                        // A stage that could not run says nothing about the task: it stays accepted.
                        Verdict::Accept | Verdict::Rollback { .. } if broken => self.transition(
                            &task.id,
                            n,
                            TaskState::Accepted,
                            Some(format!(
                                "not merged: {why}; fix that, then `ccfan merge {}`",
                                self.run_id
                            )),
                        ),
                        Verdict::Accept | Verdict::Rollback { .. } => {
                            if let Err(error) = git::reset_worktree(&task.worktree, &head.base) {
                                tracing::warn!(task = %task.id, "cannot reset the rolled-back worktree: {error}");
                            }
                            self.transition(&task.id, n, TaskState::RolledBack, Some(why))
                        }
                    };
                }
            }
            self.store()
                .set_landing(self.run_id, &task.id, Some((&landing, &dest.branch)))?;
            self.transition(
                &task.id,
                n,
                TaskState::Merging,
                Some(format!("landing as {} on {}", short(&landing), dest.branch)),
            )?;
            let moved = move_branch(
                self.repo,
                &dest.branch,
                &tip,
                &landing,
                dest.diverted.is_none(),
            );
            let moved = match moved {
                Ok(moved) => moved,
                Err(error) => {
                    // Whatever failed, git says whether the commit landed; nothing stays `merging`.
                    let task = self.fresh(task_id)?;
                    return self
                        .settle_merging(&task, &format!("moving {} failed: {error}", dest.branch));
                }
            };
            match moved {
                Move::Moved => {}
                Move::Raced if races < MAX_RACES => {
                    races += 1;
                    self.store().set_landing(self.run_id, &task.id, None)?;
                    self.transition(
                        &task.id,
                        n,
                        TaskState::Accepted,
                        Some(format!(
                            "{} moved during the landing; merging again onto its new tip",
                            dest.branch
                        )),
                    )?;
                    continue;
                }
                Move::Raced => {
                    self.store().set_landing(self.run_id, &task.id, None)?;
                    return self.transition(
                        &task.id,
                        n,
                        TaskState::Accepted,
                        Some(format!(
                            "not merged: {} kept moving during {MAX_RACES} landings; `ccfan merge {}` tries again",
                            dest.branch, self.run_id
                        )),
                    );
                }
                Move::InTheWay(checkout, dirty) => {
                    let integration = self.integration_branch(&tip)?;
                    self.store().set_landing(self.run_id, &task.id, None)?;
                    self.transition(
                        &task.id,
                        n,
                        TaskState::Accepted,
                        Some(format!(
                            "{} is checked out with uncommitted changes in {}: landing on {integration} instead",
                            dest.branch,
                            dirty.join(", ")
                        )),
                    )?;
                    dest.branch = integration;
                    dest.diverted = Some((checkout, dirty));
                    continue;
                }
            }
            // Report only what the branch really holds.
            let now = git::ref_target(self.repo, &format!("refs/heads/{}", dest.branch))?;
            let holds = match &now {
                Some(now) => now == &landing || git::is_ancestor(self.repo, &landing, now)?,
                None => false,
            };
            let extra = overlap.map(|note| format!(" ({note})")).unwrap_or_default();
            let forced = task
                .forced
                .as_ref()
                .map(|why| format!("; accepted over the gate by {why}"))
                .unwrap_or_default();
            return match (&dest.diverted, holds) {
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
                        short(&landing)
                    )),
                ),
                (Some((_, dirty)), true) => self.transition(
                    &task.id,
                    n,
                    TaskState::Accepted,
                    Some(format!(
                        "landed on {} as {}, not on {target}: its checkout has uncommitted changes in {}; {}",
                        dest.branch,
                        short(&landing),
                        dirty.join(", "),
                        catch_up(&dest.branch, self.run_id)
                    )),
                ),
            };
        }
    }

    /// A fresh integration branch at `tip`: `ccfan/<run>/integration`, or `…-2`, `…-3` when an earlier one
    /// exists (it may hold work the user built on; ccfan never moves it).
    fn integration_branch(&self, tip: &str) -> Result<String, PipelineError> {
        let base = integration_branch(self.run_id);
        for n in 1..100 {
            let name = if n == 1 {
                base.clone()
            } else {
                format!("{base}-{n}")
            };
            let full = format!("refs/heads/{name}");
            match git::ref_target(self.repo, &full)? {
                Some(existing) if existing == tip => return Ok(name),
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
        tip: &str,
        landing: &str,
    ) -> Result<(crate::report::VerifyReport, Verdict), PipelineError> {
        let checker = gate::Gate {
            repo: self.repo,
            policy: self.policy,
            rules: self.rules,
            scratch_root: &self.scratch_root,
            cancel: self.cancel.of(&task.id),
        };
        let exit = ExitStatus::Code { code: 0 };
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
        };
        checker.check(&reference, tip)
    }

    /// Sends a task whose landing failed back for another attempt on `tip`, with `findings`, if its budget allows;
    /// otherwise blocks it. Returns whether the rework was accepted (then it is landed again).
    fn rework_on(
        &self,
        task: &TaskRow,
        tip: &str,
        commit: &str,
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
        if git::has_uncommitted_changes(&row.worktree, commit)? {
            super::gc::salvage_leftovers(self.repo, &mut self.store(), self.run_id, row, commit)?;
        }
        git::replay_onto(&row.worktree, tip, commit)?;
        let cursor = Cursor {
            base: tip.to_string(),
            tip: tip.to_string(),
            next: row.attempts + 1,
            budget_from: row.budget_from,
            findings,
        };
        let settled = self.continue_from(&row.spec, &row.worktree, &link, cursor)?;
        Ok(matches!(settled, Some(Verdict::Accept)))
    }

    /// The task's worktree, re-created at `at` if `gc` removed it; returns its `.git` link.
    pub(super) fn ensure_worktree(
        &self,
        task: &TaskRow,
        at: &str,
    ) -> Result<String, PipelineError> {
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
        let link = super::fan_out::prepare(self.repo, &task.worktree, &task.branch, at)?;
        self.store().set_recreated(self.run_id, &task.id, &link)?;
        Ok(link)
    }
}

/// Moves `branch` from `tip` to `new`. When `branch` is checked out somewhere and `update_checkout` is set, its
/// files follow — but only if none of the paths the update changes has an uncommitted change there.
pub(super) fn move_branch(
    repo: &git::RepoPaths,
    branch: &str,
    tip: &str,
    new: &str,
    update_checkout: bool,
) -> Result<Move, PipelineError> {
    let log = format!("ccfan: {} -> {}", short(tip), short(new));
    if update_checkout && let Some(checkout) = git::checked_out_in(repo, branch)? {
        let changed: Vec<String> = git::diff_files(repo, tip, new)?
            .into_iter()
            .flat_map(|change| std::iter::once(change.path).chain(change.old_path))
            .collect();
        let dirty = git::dirty_paths(&checkout, &changed)?;
        if !dirty.is_empty() {
            return Ok(Move::InTheWay(checkout, dirty));
        }
        if git::ref_target(repo, &format!("refs/heads/{branch}"))?.as_deref() != Some(tip) {
            return Ok(Move::Raced);
        }
        return match git::fast_forward_checkout(&checkout, new) {
            Ok(()) => Ok(Move::Moved),
            Err(error) => {
                if git::ref_target(repo, &format!("refs/heads/{branch}"))?.as_deref() != Some(tip) {
                    Ok(Move::Raced)
                } else {
                    Err(error.into())
                }
            }
        };
    }
    Ok(if git::update_branch_cas(repo, branch, new, tip, &log)? {
        Move::Moved
    } else {
        Move::Raced
    })
}

/// What to run to bring a diverted landing into the target.
fn catch_up(integration: &str, run_id: &str) -> String {
    format!(
        "Stash your changes (`git stash`), run `git merge --ff-only {integration}`, then `git stash pop`; \
         or commit them and run `ccfan merge {run_id}`"
    )
}

/// The message of a landing commit: the goal's first line, then where it came from.
fn landing_message(goal: &str, task: &str, run: &str, attempt: u32) -> String {
    let line = goal.lines().next().unwrap_or(task).trim();
    let title = if line.chars().count() <= 72 {
        line.to_string()
    } else {
        let cut: String = line.chars().take(71).collect();
        let cut = cut.rsplit_once(' ').map_or(cut.as_str(), |(head, _)| head);
        format!("{cut}…")
    };
    format!(
        "{title}\n\nLanded by ccfan from task `{task}` of run {run} (attempt {attempt}); the gate passed on this tree.\n\nCcfan-Run: {run}\nCcfan-Task: {task}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn landing_message_has_title_and_trailers() {
        let message = landing_message("Add a farewell\nmore words", "bye", "r1", 2);
        assert!(message.starts_with("Add a farewell\n\n"));
        assert!(message.contains("Ccfan-Task: bye\n"));
        assert!(message.contains("attempt 2"));
    }
}
