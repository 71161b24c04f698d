//! Stage 3b, record: the worker does not commit; ccfan does, outside the worker's reach. Everything the attempt
//! changed becomes one commit on the task branch (libgit2: no hooks, no fsmonitor), kept on a salvage ref
//! `refs/ccfan/<run>/<task>/attempt-<n>` that only an explicit user command removes.

use std::path::Path;

use serde::Serialize;

use crate::git::{self, FileChange, GitError, RepoPaths};
use crate::model::{CommitId, ExitStatus, RunId, TaskId};
use crate::paths::salvage_ref;

/// What recording an attempt produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recorded {
    /// The attempt commit (`None`: the worker changed nothing).
    pub commit: Option<CommitId>,
    /// The salvage ref holding it.
    pub salvage_ref: Option<String>,
    /// Set when the worktree's `.git` link had been changed (ccfan restored it before committing).
    pub link_tampered: bool,
    /// Git state the worker changed that ccfan put back (its HEAD, its branch): a sign of trying to get around
    /// the gate, reported as a `sandbox-escape` finding.
    pub tampered: Vec<String>,
}

/// Facts that go into the attempt commit's message.
#[derive(Debug, Clone)]
pub struct AttemptFacts<'a> {
    /// Run id.
    pub run_id: &'a RunId,
    /// Task id.
    pub task_id: &'a TaskId,
    /// Attempt number.
    pub attempt: u32,
    /// The task goal.
    pub goal: &'a str,
    /// The worker profile.
    pub worker: &'a str,
    /// How the worker ended (`None`: salvaged after an interruption).
    pub exit: Option<&'a ExitStatus>,
    /// The worker could not write git's metadata (it ran sandboxed), so the worktree index's stat cache still
    /// describes the tree as ccfan left it and recording reads only the files that changed.
    pub index_kept: bool,
}

/// Commits the worktree's changes and keeps them on the attempt's salvage ref. `git_link` is the `.git` file
/// content recorded when the worktree was made; if the worker changed it, it is restored first so that ccfan's
/// git calls never follow a link the worker wrote.
pub fn record(
    repo: &RepoPaths,
    worktree: &Path,
    git_link: Option<&str>,
    facts: &AttemptFacts<'_>,
    ref_name: Option<String>,
    branch: &str,
    parent: &str,
) -> Result<Recorded, GitError> {
    // A copy-on-write tree whose mount went away (a reboot) is shown again before anything reads it.
    super::tree::ensure(worktree)?;
    let mut link_tampered = false;
    if let Some(expected) = git_link {
        let link = worktree.join(".git");
        let current = crate::util::read_regular(&link, git::SMALL_FILE)
            .ok()
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
        if current.as_deref() != Some(expected) {
            link_tampered = true;
            if link.is_dir() {
                std::fs::remove_dir_all(&link)
            } else {
                std::fs::remove_file(&link).or_else(|e| if link.exists() { Err(e) } else { Ok(()) })
            }
            // A new file, never through a symlink something recreated in between.
            .and_then(|()| {
                use std::io::Write;
                std::fs::File::options()
                    .write(true)
                    .create_new(true)
                    .open(&link)
                    .and_then(|mut file| file.write_all(expected.as_bytes()))
            })
            .map_err(|source| GitError::Io {
                context: format!("cannot restore {}", link.display()),
                source,
            })?;
        }
    }
    let message = attempt_message(&MessageFacts {
        run_id: facts.run_id.as_str(),
        task_id: facts.task_id.as_str(),
        attempt: facts.attempt,
        goal: facts.goal,
        worker: facts.worker,
        exit: facts.exit,
    });
    let mut tampered = match git_link {
        Some(link) => git::check_admin(repo, worktree, link)?,
        None => Vec::new(),
    };
    let admin = git_link.and_then(|link| git::admin_dir(worktree, link));
    // A copy-on-write tree's upper layer lists every path the worker touched: only those are read.
    let changed = super::tree::changed_paths(worktree)?;
    let scope = match &changed {
        Some((lower, changed)) => git::Scope::Paths { lower, changed },
        None => git::Scope::Everything {
            trust_index: facts.index_kept,
        },
    };
    let recorded =
        git::commit_worktree(worktree, admin.as_deref(), branch, parent, &message, scope)?;
    let commit = recorded.commit;
    tampered.extend(recorded.tampered);
    if link_tampered {
        tampered.push("the worktree's .git link had been rewritten".to_string());
    }
    let salvage = match &commit {
        Some(sha) => {
            let name =
                ref_name.unwrap_or_else(|| salvage_ref(facts.run_id, facts.task_id, facts.attempt));
            git::set_ref(repo, &name, sha, "ccfan: keep attempt")?;
            Some(name)
        }
        None => None,
    };
    Ok(Recorded {
        commit,
        salvage_ref: salvage,
        link_tampered,
        tampered,
    })
}

/// What an attempt commit's message says.
#[derive(Debug, Clone, Copy)]
pub struct MessageFacts<'a> {
    /// Run id.
    pub run_id: &'a str,
    /// Task id.
    pub task_id: &'a str,
    /// Attempt number.
    pub attempt: u32,
    /// The task goal (its first line is used).
    pub goal: &'a str,
    /// The worker profile.
    pub worker: &'a str,
    /// How the worker ended (`None`: salvaged after an interruption).
    pub exit: Option<&'a ExitStatus>,
}

/// The message of an attempt commit, wherever it is recorded (here, or by the runner of a portable attempt).
pub fn attempt_message(facts: &MessageFacts<'_>) -> String {
    let exit = facts.exit.map_or_else(
        || "interrupted (salvaged by ccfan)".to_string(),
        ToString::to_string,
    );
    let goal_line = facts.goal.lines().next().unwrap_or_default();
    format!(
        "ccfan: attempt {n} of {run}/{task}\n\n{goal_line}\n\nCcfan-Run: {run}\nCcfan-Task: {task}\nCcfan-Attempt: {n}\nCcfan-Worker: {worker}\nCcfan-Exit: {exit}\n",
        n = facts.attempt,
        run = facts.run_id,
        task = facts.task_id,
        worker = facts.worker,
    )
}

/// The attempt's summary, written as `attempt.json` beside its log: what ran, how it ended, what it changed.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptRecord<'a> {
    /// Schema version.
    pub schema: u32,
    /// Run id.
    pub run_id: &'a RunId,
    /// Task id.
    pub task_id: &'a TaskId,
    /// Attempt number.
    pub attempt: u32,
    /// Worker profile.
    pub worker: &'a str,
    /// The base the attempt started from.
    pub base: &'a str,
    /// How the worker ended.
    pub exit: &'a ExitStatus,
    /// Wall time in seconds.
    pub duration_secs: f64,
    /// Bytes the worker wrote to stdout and stderr.
    pub output_bytes: u64,
    /// Whether its log was capped.
    pub log_capped: bool,
    /// Processes it left running that ccfan killed.
    pub leftovers_killed: usize,
    /// The sandbox backend it ran in.
    pub sandbox: &'a str,
    /// Limits it ran into, or that this machine could not enforce.
    pub sandbox_notes: &'a [String],
    /// The attempt commit and its salvage ref.
    pub recorded: &'a Recorded,
    /// Files changed against the attempt's parent.
    pub changes: Vec<FileChange>,
}

/// Writes `attempt.json` into the attempt folder (the changes are read from git when there is a commit).
/// Every path and note in it is redacted with `rules` (a worker names its files).
pub fn write_record(
    repo: &RepoPaths,
    rules: &crate::secrets::RulePack,
    dir: &Path,
    mut record: AttemptRecord<'_>,
    parent: &str,
) -> Result<(), GitError> {
    if let Some(commit) = &record.recorded.commit {
        record.changes = git::diff_files(repo, parent, commit)?;
        rules.redact_changes(&mut record.changes);
    }
    let recorded = Recorded {
        tampered: record
            .recorded
            .tampered
            .iter()
            .map(|note| rules.redact_text(note))
            .collect(),
        ..record.recorded.clone()
    };
    let notes: Vec<String> = record
        .sandbox_notes
        .iter()
        .map(|note| rules.redact_text(note))
        .collect();
    let record = AttemptRecord {
        recorded: &recorded,
        sandbox_notes: &notes,
        ..record
    };
    let path = crate::paths::AttemptDir::of(dir).record();
    let json = serde_json::to_vec_pretty(&record).unwrap_or_default();
    std::fs::write(&path, json).map_err(|source| GitError::Io {
        context: format!("cannot write {}", path.display()),
        source,
    })
}

/// The tampering an attempt's `attempt.json` recorded (for `ccfan verify`, which re-judges stored attempts).
pub fn stored_tampering(dir: &Path) -> Vec<String> {
    crate::util::read_regular(
        &crate::paths::AttemptDir::of(dir).record(),
        crate::util::MAX_WORKER_FILE,
    )
    .ok()
    .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
    .and_then(|doc| {
        doc["recorded"]["tampered"].as_array().map(|list| {
            list.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
    })
    .unwrap_or_default()
}
