//! Stage 6, integrate: land accepted tasks on the target branch one at a time, in task-file order whatever order
//! they finished in. Each lands as one commit on the target's tip, the gate runs again on exactly that tree, and
//! the branch moves by compare-and-swap; a conflict (or a gate failure on the merged tree) sends the task back for
//! a rework on the new tip while its budget lasts. A user's uncommitted change is never touched: if it is in the
//! way, the result goes to `ccfan/<run>/integration` instead, with what to run.

mod branch;
mod land;
mod rework;

use branch::catch_up;
pub use branch::{Landing, integration_branch, landing_of};
pub(super) use branch::{Move, move_branch};

use std::collections::BTreeMap;

use super::PipelineError;
use super::carry::{Carrier, Destination};
use crate::events::Event;
use crate::git::{self};
use crate::model::{TaskId, TaskState};
use crate::store::{TaskRow, task_head};
use crate::util::short;

/// How many times a landing is retried when the target moves under it.
pub(super) const MAX_RACES: u32 = 5;

impl Carrier<'_> {
    /// Lands every accepted task of the run that has not landed yet: prerequisites first, otherwise in task-file
    /// order.
    pub(super) fn integrate(&self) -> Result<(), PipelineError> {
        // Best-of-N: only the chosen candidate of a task is left accepted.
        self.pick_candidates()?;
        for task in self.store().tasks(self.run_id)? {
            if task.state == TaskState::Merging {
                self.settle_merging(&task, "an earlier landing did not finish")?;
            }
        }
        let tasks = self.store().tasks(self.run_id)?;
        let specs: Vec<crate::model::TaskSpec> =
            tasks.iter().map(|task| task.spec.clone()).collect();
        let accepted: Vec<&TaskRow> =
            crate::pipeline::order::topological(&crate::pipeline::order::prerequisites(&specs))
                .into_iter()
                .map(|index| &tasks[index])
                .filter(|task| task.state == TaskState::Accepted)
                .collect();
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
        let mut dest = self.destination();
        if accepted.is_empty() && dest.is_none() {
            return Ok(());
        }
        let dest = dest.get_or_insert_with(|| Destination::to(target));
        self.land_each(&accepted, target, dest, &overlaps)?;
        // Best-of-N: a chosen candidate that did not land gives way to the next best, which lands in turn.
        for _ in 0..crate::pipeline::candidates::MAX_CANDIDATES {
            let changed = self.pick_candidates()?;
            if changed.is_empty() || self.cancel.all() {
                break;
            }
            let tasks = self.store().tasks(self.run_id)?;
            let next: Vec<&TaskRow> = tasks
                .iter()
                .filter(|task| task.state == TaskState::Accepted)
                .filter(|task| {
                    task.spec
                        .candidate
                        .as_ref()
                        .is_some_and(|c| changed.contains(&c.of))
                })
                .collect();
            self.land_each(&next, target, dest, &BTreeMap::new())?;
        }
        if let Some((checkout, dirty)) = &dest.diverted {
            self.sink.emit(Event::Warning {
                message: format!(
                    "{target} was not updated: your checkout {} has uncommitted changes in {} that the merge changes. \
                     The merged result is on {}. {}",
                    checkout.display(),
                    self.rules.redact_text(&dirty.join(", ")),
                    dest.branch,
                    catch_up(&dest.branch, self.run_id)
                ),
            });
        }
        Ok(())
    }

    /// Lands `accepted` in order: a dependant only on its prerequisites' landed work (one rolled back or reworked
    /// since must not come along inside it), and no second candidate of a best-of-N task.
    fn land_each(
        &self,
        accepted: &[&TaskRow],
        target: &str,
        dest: &mut Destination,
        overlaps: &BTreeMap<TaskId, String>,
    ) -> Result<(), PipelineError> {
        for task in accepted {
            if self.cancel.all() {
                break;
            }
            if let Some(why) = self.outpicked(&task.spec)? {
                self.transition(&task.id, task.attempts, TaskState::NotChosen, Some(why))?;
                continue;
            }
            if let Some(why) = self.unlanded_prerequisite(&task.spec)? {
                self.transition(
                    &task.id,
                    task.attempts,
                    TaskState::Accepted,
                    Some(format!(
                        "not merged: {why}; land it first, then `ccfan merge {}`",
                        self.run_id
                    )),
                )?;
                continue;
            }
            self.land(&task.id, target, dest, overlaps.get(&task.id))?;
        }
        Ok(())
    }

    /// Tasks whose actual diffs touch the same files: warned about, and noted on each.
    fn overlaps(&self, accepted: &[&TaskRow]) -> Result<BTreeMap<TaskId, String>, PipelineError> {
        let run = self.store().run(self.run_id)?;
        let mut touched: Vec<(&TaskId, Vec<String>)> = Vec::new();
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
        let mut notes: BTreeMap<TaskId, String> = BTreeMap::new();
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
                let files = self.rules.redact_text(&shared.join(", "));
                self.sink.emit(Event::Warning {
                    message: format!(
                        "tasks {first} and {second} both change {files}: {first} lands first and {second} is merged and re-checked on top of it"
                    ),
                });
                notes.insert((*second).clone(), format!("overlaps {first} on {files}"));
                notes
                    .entry((*first).clone())
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
    pub(super) fn fresh(&self, task_id: &TaskId) -> Result<TaskRow, PipelineError> {
        self.store()
            .tasks(self.run_id)?
            .into_iter()
            .find(|task| &task.id == task_id)
            .ok_or_else(|| {
                crate::store::StoreError::NoSuchTask {
                    run: self.run_id.to_string(),
                    task: task_id.to_string(),
                }
                .into()
            })
    }
}
