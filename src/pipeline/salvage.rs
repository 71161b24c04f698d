//! Salvage, beside the stages: every attempt ccfan recorded stays on a ref under `refs/ccfan/<run>/<task>/` until
//! the user removes it. `ccfan salvage list|show|restore` sees those refs and brings any attempt back onto a branch
//! of its own — never into the user's checkout; `ccfan salvage drop` removes one when the user says so (an attempt
//! that holds a secret, say).

use serde::Serialize;

use super::PipelineError;
use crate::git::{self, FileChange, RepoPaths};
use crate::input::InputError;
use crate::model::{CommitId, RunId, TaskId};
use crate::store::Store;

/// One salvaged attempt (or leftover work) of a task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SalvageEntry {
    /// Run id.
    pub run_id: RunId,
    /// Task id.
    pub task_id: TaskId,
    /// The ref's last component: `attempt-<n>`, `leftover-<time>` or `branch-<sha>`.
    pub name: String,
    /// The full ref.
    pub reference: String,
    /// The commit it holds.
    pub commit: CommitId,
    /// The attempt number, when the ref is an attempt's.
    pub attempt: Option<u32>,
    /// The gate's verdict on that attempt, when it had one.
    pub verdict: Option<crate::report::Verdict>,
}

/// One salvaged attempt in full: what it changed against its parent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SalvageDetail {
    /// The entry.
    #[serde(flatten)]
    pub entry: SalvageEntry,
    /// Its parent commit.
    pub parent: Option<String>,
    /// Files it changed against its parent.
    pub files: Vec<FileChange>,
}

/// The salvage refs of a run (or one task of it), in ref order.
pub fn list(
    repo: &RepoPaths,
    store: &Store,
    run_id: &RunId,
    task_id: Option<&TaskId>,
) -> Result<Vec<SalvageEntry>, PipelineError> {
    let tasks = store.tasks(run_id)?;
    if let Some(task) = task_id
        && !tasks.iter().any(|t| &t.id == task)
    {
        return Err(crate::store::StoreError::NoSuchTask {
            run: run_id.to_string(),
            task: task.to_string(),
        }
        .into());
    }
    let mut entries = Vec::new();
    for task in tasks
        .iter()
        .filter(|t| task_id.is_none_or(|id| *id == t.id))
    {
        let attempts = store.attempts(run_id, &task.id)?;
        let prefix = format!("refs/ccfan/{run_id}/{}/", task.id);
        for (reference, commit) in git::refs_under(repo, &prefix)? {
            let name = reference.trim_start_matches(&prefix).to_string();
            let attempt = name
                .strip_prefix("attempt-")
                .and_then(|n| n.parse::<u32>().ok());
            let verdict = attempt
                .and_then(|n| attempts.iter().find(|a| a.n == n))
                .and_then(|a| a.verdict.clone());
            entries.push(SalvageEntry {
                run_id: run_id.clone(),
                task_id: task.id.clone(),
                name,
                reference,
                commit,
                attempt,
                verdict,
            });
        }
    }
    entries.sort_by(|a, b| (&a.task_id, a.attempt, &a.name).cmp(&(&b.task_id, b.attempt, &b.name)));
    Ok(entries)
}

/// Resolves `<run>/<task>/<attempt>` (an attempt number or a ref name such as `leftover-…`).
fn find(repo: &RepoPaths, store: &Store, spec: &str) -> Result<SalvageEntry, PipelineError> {
    let bad = |why: &str| -> PipelineError {
        InputError::new(std::path::Path::new("<command line>"), why.to_string())
            .key("salvage")
            .fix("write <run>/<task>/<attempt>, e.g. 20261121-abc/fix/2 (`ccfan salvage list <run>` lists them)")
            .into()
    };
    let mut parts = spec.splitn(3, '/');
    let (Some(run), Some(task), Some(which)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad(&format!("`{spec}` does not name an attempt")));
    };
    let run = RunId::parse(run).map_err(|error| bad(&error.to_string()))?;
    let task = TaskId::parse(task).map_err(|error| bad(&error.to_string()))?;
    let entries = list(repo, store, &run, Some(&task))?;
    let wanted = which.parse::<u32>().ok();
    entries
        .into_iter()
        .find(|entry| match wanted {
            Some(n) => entry.attempt == Some(n),
            None => entry.name == which,
        })
        .ok_or_else(|| {
            bad(&format!(
                "run {run} task {task} has no salvaged attempt `{which}`"
            ))
        })
}

/// `ccfan salvage show`: one attempt and what it changed.
pub fn show(repo: &RepoPaths, store: &Store, spec: &str) -> Result<SalvageDetail, PipelineError> {
    let entry = find(repo, store, spec)?;
    let parent = git::first_parent(repo, &entry.commit)?;
    let mut files = match &parent {
        Some(parent) => git::diff_files(repo, parent, &entry.commit)?,
        None => Vec::new(),
    };
    super::display_rules(repo)?.redact_changes(&mut files);
    Ok(SalvageDetail {
        entry,
        parent,
        files,
    })
}

/// `ccfan salvage drop`: removes one attempt's salvage ref (a task still running keeps its refs). Its commit stays
/// in the object store, reachable by its id, until git prunes unreachable objects.
/// Returns the entry and the refs that still reach its commit (a later attempt built on it, the task branch):
/// while any does, git keeps the commit.
pub fn drop_attempt(
    repo: &RepoPaths,
    store: &Store,
    spec: &str,
) -> Result<(SalvageEntry, Vec<String>), PipelineError> {
    let entry = find(repo, store, spec)?;
    let task = store
        .tasks(&entry.run_id)?
        .into_iter()
        .find(|task| task.id == entry.task_id);
    if let Some(task) = task.filter(|task| !task.state.is_final()) {
        return Err(InputError::new(
            std::path::Path::new("<command line>"),
            format!(
                "task {} is {}: its attempts are still in use",
                task.id, task.state
            ),
        )
        .key("salvage drop")
        .fix(format!(
            "wait for it to finish, or `ccfan cancel {}/{}` first",
            entry.run_id, entry.task_id
        ))
        .into());
    }
    git::delete_ref(repo, &entry.reference)?;
    let mut reaching = Vec::new();
    for (name, target) in git::refs_under(repo, "refs/")? {
        if git::is_ancestor(repo, &entry.commit, &target)? {
            reaching.push(name);
        }
    }
    Ok((entry, reaching))
}

/// `ccfan salvage restore`: puts the attempt on a new branch (default `ccfan/restore/<run>/<task>/<name>`) and
/// returns its name; refuses to move a branch that exists.
pub fn restore(
    repo: &RepoPaths,
    store: &Store,
    spec: &str,
    branch: Option<&str>,
) -> Result<(SalvageEntry, String), PipelineError> {
    let entry = find(repo, store, spec)?;
    let name = branch.map_or_else(
        || {
            format!(
                "ccfan/restore/{}/{}/{}",
                entry.run_id, entry.task_id, entry.name
            )
        },
        str::to_string,
    );
    let full = format!("refs/heads/{name}");
    if !git2::Reference::is_valid_name(&full) {
        return Err(InputError::new(
            std::path::Path::new("<command line>"),
            format!("`{name}` is not a valid branch name"),
        )
        .key("--branch")
        .fix("use a git branch name without spaces, `..`, `~`, `^`, `:` or a trailing `/`")
        .into());
    }
    if git::ref_target(repo, &full)?.is_some() {
        return Err(InputError::new(
            std::path::Path::new("<command line>"),
            format!("branch {name} exists already"),
        )
        .key("--branch")
        .fix("name a new branch with --branch NAME (ccfan never moves an existing one)")
        .into());
    }
    git::set_ref(repo, &full, &entry.commit, "ccfan salvage restore")?;
    Ok((entry, name))
}
