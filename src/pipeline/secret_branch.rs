//! Stage 5's aftermath for secrets: once a task ends, its branch (`refs/heads/ccfan/<run>/<task>`, which
//! `git push --all` would publish) reaches no attempt that held a secret. Nothing is lost — every attempt stays
//! on its salvage ref under `refs/ccfan/`, and the worktree keeps its files — but a push cannot leak the key.

use super::PipelineError;
use crate::git::{self, RepoPaths};
use crate::model::{CommitId, RunId, TaskId, TaskState};
use crate::paths::{AttemptDir, salvage_ref, task_branch};
use crate::report::{Finding, Stage, VerifyReport};
use crate::store::AttemptRow;
use crate::util::short;

/// Whether `findings` hold a blocking secret.
fn holds_secret<'f>(findings: impl IntoIterator<Item = &'f Finding>) -> bool {
    findings
        .into_iter()
        .any(|f| f.stage == Stage::Secrets && f.is_blocking())
}

/// Whether the gate found a secret in an attempt (its newest stored report).
fn attempt_held_secret(attempt: &AttemptRow) -> bool {
    AttemptDir::of(&attempt.dir)
        .latest_report()
        .and_then(|bytes| serde_json::from_slice::<VerifyReport>(&bytes).ok())
        .is_some_and(|report| holds_secret(report.findings()))
}

/// One task's chain of attempts as it ends: the attempts built on `base` (oldest first), the tip the chain
/// reached, and the state the task ends in.
pub(super) struct Chain<'a> {
    /// The repository.
    pub repo: &'a RepoPaths,
    /// Run and task.
    pub run_id: &'a RunId,
    /// The task.
    pub task_id: &'a TaskId,
    /// The commit the chain started from.
    pub base: &'a CommitId,
    /// Its attempts, oldest first.
    pub attempts: &'a [AttemptRow],
    /// The chain's last commit.
    pub tip: &'a CommitId,
    /// The state the task ends in.
    pub state: TaskState,
}

/// Moves the task branch off every secret-bearing attempt: an accepted task's branch gets one commit with the
/// accepted tree straight on the base (the gate judged that tree clean); any other task's branch goes back to the
/// last commit before the first attempt that held a secret, or to the base. Returns the note for `status`.
pub(super) fn keep_secrets_off_branch(chain: &Chain<'_>) -> Result<Option<String>, PipelineError> {
    let Some(first) = chain.attempts.iter().position(attempt_held_secret) else {
        return Ok(None);
    };
    let held = &chain.attempts[first];
    let accepted = matches!(chain.state, TaskState::Accepted | TaskState::Merged);
    let (moved_to, how) = if accepted {
        let message = format!(
            "ccfan: {}/{}, attempts squashed\n\nAn earlier attempt held a secret; every attempt stays on its salvage ref.\n",
            chain.run_id, chain.task_id
        );
        let squashed = git::squash_commit(chain.repo, chain.tip, chain.base, &message)?;
        (squashed, "holds the accepted change in one commit")
    } else {
        let clean = chain.attempts[..first]
            .iter()
            .rev()
            .find_map(|attempt| attempt.commit.clone())
            .unwrap_or_else(|| chain.base.clone());
        (clean, "is back before it")
    };
    let branch = task_branch(chain.run_id, chain.task_id);
    git::set_ref(
        chain.repo,
        &format!("refs/heads/{branch}"),
        &moved_to,
        "ccfan: keep secret-bearing attempts off the task branch",
    )?;
    Ok(Some(format!(
        "attempt {} held a secret: branch {branch} {how} ({}); the attempt is kept on {}",
        held.n,
        short(&moved_to),
        salvage_ref(chain.run_id, chain.task_id, held.n)
    )))
}
