//! Stage 6, moving branches: compare-and-swap on a ref, or a fast-forward of the user's checkout only when none of
//! the paths it changes is dirty there; and the words a landing writes (commit message, what to run).

use crate::git::{self};
use crate::model::{RunId, TaskId};
use crate::pipeline::PipelineError;
use crate::util::short;

/// The outcome of trying to move a branch.
pub(in crate::pipeline) enum Move {
    Moved,
    /// The branch moved meanwhile.
    Raced,
    /// The branch is checked out with uncommitted changes in paths the update touches.
    InTheWay(std::path::PathBuf, Vec<String>),
}

/// The integration branch of a run.
pub fn integration_branch(run_id: &RunId) -> String {
    format!("ccfan/{run_id}/integration")
}

/// Moves `branch` from `tip` to `new`. When `branch` is checked out somewhere and `update_checkout` is set, its
/// files follow — but only if none of the paths the update changes has an uncommitted change there.
pub(in crate::pipeline) fn move_branch(
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

/// Where a run's merged tasks landed: on their target branch, or diverted to the run's integration branch because the
/// target's checkout had uncommitted changes in the way — with what to run to bring them in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Landing {
    /// True when merged tasks are on the target branch itself (false: diverted, or nothing merged).
    pub landed: bool,
    /// The branch the merged tasks are on.
    pub branch: Option<String>,
    /// What to run next, when the work is not on the target yet.
    pub next: Option<String>,
}

/// The landing of run `run_id`, from its stored tasks.
pub fn landing_of(
    store: &crate::store::Store,
    run_id: &RunId,
) -> Result<Landing, crate::store::StoreError> {
    let integration = integration_branch(run_id);
    let tasks = store.tasks(run_id)?;
    // A diverted task stays `accepted`, its landing recorded on the integration branch.
    let diverted = tasks
        .iter()
        .filter_map(|task| task.landed_on.as_ref())
        .find(|branch| branch.starts_with(&integration));
    let merged: Vec<&String> = tasks
        .iter()
        .filter(|task| task.state == crate::model::TaskState::Merged)
        .filter_map(|task| task.landed_on.as_ref())
        .collect();
    Ok(match diverted {
        Some(diverted) => Landing {
            landed: false,
            branch: Some(diverted.clone()),
            next: Some(catch_up(diverted, run_id)),
        },
        None => Landing {
            landed: !merged.is_empty(),
            branch: merged.first().map(|branch| (*branch).clone()),
            next: None,
        },
    })
}

/// What to run to bring a diverted landing into the target.
pub(super) fn catch_up(integration: &str, run_id: &RunId) -> String {
    format!(
        "Stash your changes (`git stash`), run `git merge --ff-only {integration}`, then `git stash pop`; \
         or commit them and run `ccfan merge {run_id}`"
    )
}

/// The message of a landing commit: the goal's first line, then where it came from.
pub(super) fn landing_message(goal: &str, task: &TaskId, run: &RunId, attempt: u32) -> String {
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
        let message = landing_message(
            "Add a farewell\nmore words",
            &crate::ids::fixtures::task("bye"),
            &crate::ids::fixtures::run("r1"),
            2,
        );
        assert!(message.starts_with("Add a farewell\n\n"));
        assert!(message.contains("Ccfan-Task: bye\n"));
        assert!(message.contains("attempt 2"));
    }
}
