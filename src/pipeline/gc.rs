//! Housekeeping: remove the worktrees and task branches of finished runs — but only after every bit of work in
//! them is on a salvage ref. Uncommitted partial work (an interrupted attempt) is committed and kept first; a branch
//! tip that no salvage ref holds gets one. Salvage refs themselves are never removed here.

use serde::Serialize;

use super::PipelineError;
use super::record::{self, AttemptFacts};
use crate::git::{self, RepoPaths};
use crate::model::{RunId, RunState, TaskId};
use crate::paths::salvage_ref;
use crate::store::{RunRow, Store, TaskRow};
use crate::util::now_millis;

/// What `gc` did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    /// Schema version.
    pub schema: u32,
    /// Worktrees and branches removed.
    pub removed: Vec<GcRemoved>,
    /// Runs left alone, with why.
    pub skipped: Vec<GcSkipped>,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// Verification checkouts left behind by a gate that was cut short, removed.
    pub verify_checkouts_removed: usize,
    /// Base layers removed: half-prepared ones, failed setups' logs, and every prepared layer but the last used.
    pub layers_removed: usize,
}

/// One task's worktree and branch removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GcRemoved {
    /// Run id.
    pub run_id: RunId,
    /// Task id.
    pub task_id: TaskId,
    /// The worktree folder.
    pub worktree: std::path::PathBuf,
    /// The branch.
    pub branch: String,
    /// Salvage refs written just now to keep work that no ref held yet.
    pub salvaged: Vec<String>,
}

/// A run (or one task of it) `gc` did not touch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GcSkipped {
    /// Run id.
    pub run_id: RunId,
    /// Task id, when only one task was left alone.
    pub task_id: Option<TaskId>,
    /// Why.
    pub reason: String,
}

/// Keeps what a task's worktree holds beyond `parent` (an interrupted attempt, a reviewer's edits) on a salvage
/// ref, if anything; used before ccfan resets or replays a worktree.
pub(super) fn salvage_if_dirty(
    repo: &RepoPaths,
    store: &mut Store,
    run_id: &RunId,
    task: &TaskRow,
    parent: &str,
) -> Result<Vec<String>, PipelineError> {
    super::tree::ensure(&task.worktree)?;
    if git::has_uncommitted_changes(&task.worktree, parent)? {
        salvage_leftovers(repo, store, run_id, task, parent)
    } else {
        Ok(Vec::new())
    }
}

/// Keeps whatever the task's worktree holds beyond `parent` on a salvage ref, then resets the worktree to
/// `reset_to`: the one way ccfan clears a worktree someone may have edited.
pub(super) fn salvage_then_reset(
    repo: &RepoPaths,
    store: &mut Store,
    run_id: &RunId,
    task: &TaskRow,
    parent: &str,
    reset_to: &str,
) -> Result<(), PipelineError> {
    salvage_if_dirty(repo, store, run_id, task, parent)?;
    super::tree::reset(&task.worktree, reset_to)?;
    Ok(())
}

/// Commits what an interrupted attempt left uncommitted in a task's worktree (on top of `parent`) and keeps it on a
/// salvage ref; returns the refs written.
pub(super) fn salvage_leftovers(
    repo: &RepoPaths,
    store: &mut Store,
    run_id: &RunId,
    task: &TaskRow,
    parent: &str,
) -> Result<Vec<String>, PipelineError> {
    let mut salvaged = Vec::new();
    let attempts = store.attempts(run_id, &task.id)?;
    let open = attempts
        .iter()
        .rev()
        .find(|attempt| attempt.commit.is_none() && attempt.state != "recorded");
    let n = open.map_or(task.attempts, |attempt| attempt.n);
    let mut name = salvage_ref(run_id, &task.id, n);
    if git::ref_target(repo, &name)?.is_some() {
        name = format!(
            "refs/ccfan/{}/{}/leftover-{}",
            run_id,
            task.id,
            now_millis()
        );
    }
    let facts = AttemptFacts {
        run_id,
        task_id: &task.id,
        attempt: n,
        goal: &task.spec.goal,
        worker: &task.spec.worker.name,
        exit: None,
        // Whatever was left (a worker killed with ccfan, a person's edits) is read in full.
        index_kept: false,
    };
    let recorded = record::record(
        repo,
        &task.worktree,
        task.git_link.as_deref(),
        &facts,
        Some(name),
        &task.branch,
        parent,
    )?;
    if let (Some(commit), Some(name)) = (&recorded.commit, &recorded.salvage_ref) {
        if open.is_some() {
            store.finish_attempt(run_id, &task.id, n, None, Some(commit), Some(name))?;
        }
        salvaged.push(name.clone());
    }
    Ok(salvaged)
}

/// Keeps every bit of one task's work on a salvage ref, then removes its worktree and branch. Returns the salvage
/// refs written just now. An error leaves the worktree and branch where they are.
fn collect_task(
    repo: &RepoPaths,
    store: &mut Store,
    run: &RunRow,
    task: &TaskRow,
    branch_ref: &str,
) -> Result<Vec<String>, PipelineError> {
    let mut salvaged = Vec::new();
    // Uncommitted work exists only if a worker ran (a task interrupted while preparing holds a partial checkout).
    // `record` restores a rewritten `.git` link, and rebuilds the tree from the files: "nothing changed" is its
    // finding, not the worktree's own index or HEAD.
    let worker_ran = task.attempts > 0;
    if worker_ran && task.worktree.is_dir() {
        let attempts = store.attempts(&run.id, &task.id)?;
        // On top of the task's latest chain: its newest commit, else the base that chain started from.
        let parent = crate::store::task_head(&attempts, &run.base_sha)
            .map(|head| head.commit.unwrap_or(head.base))
            .or_else(|| attempts.last().and_then(|attempt| attempt.base.clone()))
            .unwrap_or_else(|| run.base_sha.clone());
        salvaged.extend(salvage_leftovers(repo, store, &run.id, task, &parent)?);
    }
    if let Some(tip) = git::ref_target(repo, branch_ref)? {
        let kept = git::refs_under(repo, &format!("refs/ccfan/{}/{}/", run.id, task.id))?;
        let held = tip == run.base_sha || kept.iter().any(|(_, target)| *target == tip);
        if !held {
            let name = format!(
                "refs/ccfan/{}/{}/branch-{}",
                run.id,
                task.id,
                &tip[..12.min(tip.len())]
            );
            git::set_ref(repo, &name, &tip, "ccfan gc: keep branch tip")?;
            salvaged.push(name);
        }
    }
    super::tree::remove(repo, &task.worktree)?;
    git::delete_branch(repo, &task.branch)?;
    store.set_removed(&run.id, &task.id)?;
    // An agent's private home holds a copy of its credentials: it goes with the worktree.
    let home = crate::paths::StateLayout::of(repo).agent_home(&run.id, &task.id);
    if home.is_dir()
        && let Err(error) = std::fs::remove_dir_all(&home)
    {
        tracing::warn!("cannot remove {}: {error}", home.display());
    }
    // The run's folder goes once its last worktree has (remove_dir only removes empty folders).
    if let Some(run_folder) = task.worktree.parent() {
        let _ = std::fs::remove_dir(run_folder);
    }
    Ok(salvaged)
}

/// Removes finished runs' worktrees and branches (all runs, or those in `only`).
pub fn gc(
    repo: &RepoPaths,
    store: &mut Store,
    only: &[RunId],
    dry_run: bool,
    verify_root: Option<&std::path::Path>,
) -> Result<GcReport, PipelineError> {
    let rules = super::display_rules(repo)?;
    let mut report = GcReport {
        schema: 1,
        dry_run,
        ..GcReport::default()
    };
    let runs = store.runs()?;
    for wanted in only {
        if !runs.iter().any(|run| &run.id == wanted) {
            return Err(crate::store::StoreError::NoSuchRun(wanted.to_string()).into());
        }
    }
    for run in runs
        .iter()
        .filter(|run| only.is_empty() || only.contains(&run.id))
    {
        match run.state {
            RunState::Running => {
                report.skipped.push(GcSkipped {
                    run_id: run.id.clone(),
                    task_id: None,
                    reason: format!("still running (ccfan pid {})", run.owner_pid),
                });
                continue;
            }
            RunState::Finished | RunState::Interrupted => {}
        }
        for task in store.tasks(&run.id)? {
            if task.removed {
                continue;
            }
            let branch_ref = format!("refs/heads/{}", task.branch);
            let exists = task.worktree.exists() || git::ref_target(repo, &branch_ref)?.is_some();
            if !exists {
                // Never made (queued when its run ended) or removed by hand: only the record is left to update.
                if !dry_run {
                    store.set_removed(&run.id, &task.id)?;
                }
                continue;
            }
            let salvaged = if dry_run {
                Vec::new()
            } else {
                match collect_task(repo, store, run, &task, &branch_ref) {
                    Ok(salvaged) => salvaged,
                    Err(error) => {
                        report.skipped.push(GcSkipped {
                            run_id: run.id.clone(),
                            task_id: Some(task.id.clone()),
                            // Git's error may quote a file name a worker chose.
                            reason: rules
                                .redact_text(&format!("left in place, nothing removed: {error}")),
                        });
                        continue;
                    }
                }
            };
            report.removed.push(GcRemoved {
                run_id: run.id.clone(),
                task_id: task.id.clone(),
                worktree: task.worktree.clone(),
                branch: task.branch.clone(),
                salvaged,
            });
        }
        let left = report.skipped.iter().any(|s| s.run_id == run.id);
        if !dry_run && !left {
            remove_handoff_files(repo, &run.id);
        }
    }
    // Verification checkouts are scratch: when no run is going, any that is left was abandoned by a gate cut short.
    let any_running = runs.iter().any(|run| run.state == RunState::Running);
    if let (Some(root), false, false) = (verify_root, any_running, dry_run) {
        report.verify_checkouts_removed = remove_verify_checkouts(repo, root);
    }
    if !any_running && !dry_run {
        // Layers below the copy-on-write trees of runs not collected stay.
        report.layers_removed = super::layer::collect(repo, &layers_below(store, &runs));
    }
    if !dry_run {
        git::prune_worktrees(repo)?;
    }
    Ok(report)
}

/// Removes the verification checkouts under `root` (with their private layers); returns how many went.
fn remove_verify_checkouts(repo: &RepoPaths, root: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(root) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        // `.cow` holds the checkouts' private layers; each goes with its checkout.
        if entry.file_name() == ".cow" {
            continue;
        }
        if super::tree::remove(repo, &path).is_err() || path.exists() {
            let _ = std::fs::remove_dir_all(&path);
        }
        removed += 1;
    }
    removed
}

/// The keys of the layers the copy-on-write trees of `runs` stand on.
fn layers_below(store: &Store, runs: &[crate::store::RunRow]) -> std::collections::HashSet<String> {
    runs.iter()
        .filter_map(|run| store.tasks(&run.id).ok())
        .flatten()
        .filter_map(|task| super::tree::layer_below(&task.worktree))
        .collect()
}

/// The files of operations the MCP server handed off for a collected run (its tasks file, each process's output
/// and log): named `<run>.…` in the hand-off folder.
fn remove_handoff_files(repo: &RepoPaths, run_id: &RunId) {
    let dir = crate::paths::StateLayout::of(repo).handoff_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    let prefix = format!("{run_id}.");
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix)
            && let Err(error) = std::fs::remove_file(entry.path())
        {
            tracing::warn!("cannot remove {}: {error}", entry.path().display());
        }
    }
}
