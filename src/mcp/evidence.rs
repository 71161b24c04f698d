//! MCP tools that read the gate's evidence without changing a run: `verify` (stored reports, or the gate run
//! again), `diff` (summary and a capped, redacted patch), `scan` (secrets in paths or a range) and `check_scope`
//! (a preflight of paths against globs, as the gate's scope stage would judge them).

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::Shared;
use super::errors::{ErrorCode, Failure};
use super::types::{
    CheckScopeParams, CheckScopeResult, DiffParams, DiffResult, PathScope, ScanParams, ScanResult,
    StageOutcome, TaskEvidence, VerifyParams, VerifyResult,
};
use crate::model::{RunId, TaskId};
use crate::pipeline::verify::scope::Scope;
use crate::pipeline::{self, PipelineError, gate};
use crate::report::{Finding, Verdict, VerifyReport};
use crate::store::{Store, StoreError};

const DEFAULT_PATCH_BYTES: usize = 64 * 1024;
const MAX_PATCH_BYTES: usize = 1024 * 1024;

/// Findings a summary shows per task, and how much of a stage's note.
const SUMMARY_FINDINGS: usize = 5;
const SUMMARY_NOTE_CHARS: usize = 400;
/// The most a `verify` result may hold, serialised; tasks past it are left out with a note.
const VERIFY_CAP_BYTES: usize = 24 * 1024;

fn evidence(task_id: TaskId, attempt: u32, verdict: Verdict, report: VerifyReport) -> TaskEvidence {
    let findings: Vec<Finding> = report.findings().cloned().collect();
    TaskEvidence {
        task_id,
        attempt,
        verdict,
        findings_total: findings.len(),
        findings,
        stages: report
            .stages
            .iter()
            .map(|stage| StageOutcome {
                stage: stage.stage.to_string(),
                status: stage.status,
                note: stage.note.clone(),
            })
            .collect(),
        diff: report.diff,
    }
}

/// The stored gate report of each task's latest attempt (the landing check's, when the task was landed).
fn stored(
    store: &Store,
    run_id: &RunId,
    only: Option<&TaskId>,
) -> Result<Vec<TaskEvidence>, Failure> {
    store.run(run_id)?;
    let tasks = store.tasks(run_id)?;
    if let Some(id) = only
        && !tasks.iter().any(|t| &t.id == id)
    {
        return Err(StoreError::NoSuchTask {
            run: run_id.to_string(),
            task: id.to_string(),
        }
        .into());
    }
    let mut out = Vec::new();
    for task in tasks.iter().filter(|t| only.is_none_or(|id| t.id == *id)) {
        let attempts = store.attempts(run_id, &task.id)?;
        let Some(latest) = attempts.iter().rev().find(|a| a.verdict.is_some()) else {
            continue;
        };
        let report = crate::paths::AttemptDir::of(&latest.dir)
            .latest_report()
            .and_then(|bytes| serde_json::from_slice::<VerifyReport>(&bytes).ok());
        if let (Some(report), Some(verdict)) = (report, latest.verdict.clone()) {
            out.push(evidence(task.id.clone(), latest.n, verdict, report));
        }
    }
    Ok(out)
}

/// `verify`.
pub async fn verify(
    shared: &Shared,
    params: VerifyParams,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<VerifyResult, Failure> {
    if !params.rerun {
        let tasks =
            shared.with_store(|store| stored(store, &params.run_id, params.task_id.as_ref()))?;
        return Ok(sized(params.run_id, false, tasks, params.detail));
    }
    let repo = shared.repo.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let watcher = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            cancel.cancelled().await;
            flag.store(true, Ordering::SeqCst);
        })
    };
    let (run_id, task_id) = (params.run_id.clone(), params.task_id.clone());
    let results = tokio::task::spawn_blocking(move || -> Result<_, PipelineError> {
        let policy = pipeline::load_policy(&repo, None)?;
        let rules = pipeline::load_rules(&policy)?;
        let (mut store, _) = pipeline::open_state(&repo)?;
        let scratch = crate::paths::verify_root(&crate::paths::worktree_base(
            &repo,
            policy.worktree_root.as_deref(),
        ));
        let includes = pipeline::layer::tree_files(
            pipeline::include::Includes::load(&repo)?,
            pipeline::layer::ready_for(&repo, &policy),
            pipeline::tree::select(&repo, &policy, &scratch).is_ok_and(|mode| mode.copy_on_write),
        );
        let checker = gate::Gate::new(&repo, &policy, &rules, &scratch, &includes, &stop);
        checker.reverify(&mut store, &run_id, task_id.as_ref())
    })
    .await
    .map_err(|error| Failure::tool(ErrorCode::Internal, error.to_string()));
    watcher.abort();
    let results = results??;
    let tasks = results
        .into_iter()
        .map(|t| evidence(t.task_id, t.attempt, t.verdict, t.report))
        .collect();
    Ok(sized(params.run_id, true, tasks, params.detail))
}

/// A task's evidence as a summary: the first findings (blocking ones first), the verdict's own lists cut the same
/// way, notes only of stages that did not pass (cut), and the diff's counts and risk without its file list.
fn summary(mut task: TaskEvidence) -> TaskEvidence {
    task.findings
        .sort_by_key(|finding| std::cmp::Reverse(finding.level));
    task.findings.truncate(SUMMARY_FINDINGS);
    match &mut task.verdict {
        Verdict::Accept => {}
        Verdict::Rework { findings } => {
            findings.sort_by_key(|finding| std::cmp::Reverse(finding.level));
            findings.truncate(SUMMARY_FINDINGS);
        }
        Verdict::Rollback { reasons, .. } => reasons.truncate(SUMMARY_FINDINGS),
    }
    for stage in &mut task.stages {
        stage.note = match stage.status {
            crate::report::StageStatus::Pass | crate::report::StageStatus::Skipped => None,
            crate::report::StageStatus::Fail | crate::report::StageStatus::Error => stage
                .note
                .take()
                .map(|note| last_chars(&note, SUMMARY_NOTE_CHARS)),
        };
    }
    task.diff.files.clear();
    task
}

/// The end of `text`, at most `max` characters (a test's output says the most at its end), marked when cut.
fn last_chars(text: &str, max: usize) -> String {
    let count = text.chars().count();
    if count <= max {
        return text.to_string();
    }
    let kept: String = text.chars().skip(count - max).collect();
    format!("…{kept}")
}

/// The `verify` result: summaries unless `detail`, and never more than [`VERIFY_CAP_BYTES`] — tasks past the cap are
/// left out, with a note naming them and how to ask for each.
fn sized(run_id: RunId, rerun: bool, tasks: Vec<TaskEvidence>, detail: bool) -> VerifyResult {
    let summarised = !detail
        && tasks
            .iter()
            .any(|task| task.findings_total > SUMMARY_FINDINGS);
    let tasks: Vec<TaskEvidence> = if detail {
        tasks
    } else {
        tasks.into_iter().map(summary).collect()
    };
    let mut kept = Vec::new();
    let mut left_out = Vec::new();
    let mut size = 0;
    for task in tasks {
        let bytes = serde_json::to_vec(&task).map_or(0, |json| json.len());
        if size + bytes > VERIFY_CAP_BYTES && !kept.is_empty() {
            left_out.push(task.task_id.to_string());
            continue;
        }
        size += bytes;
        kept.push(task);
    }
    let note = match (left_out.is_empty(), summarised) {
        (false, _) => Some(format!(
            "cut at {} KiB: {} task(s) left out ({}); call verify with task_id for each",
            VERIFY_CAP_BYTES / 1024,
            left_out.len(),
            left_out.join(", ")
        )),
        (true, true) => Some(format!(
            "summary: at most {SUMMARY_FINDINGS} findings per task (findings_total has the count); call verify with task_id and detail = true for all of a task's evidence"
        )),
        (true, false) => None,
    };
    VerifyResult {
        run_id,
        rerun,
        tasks: kept,
        note,
    }
}

/// `diff`.
pub async fn diff(shared: &Shared, params: DiffParams) -> Result<DiffResult, Failure> {
    let (base, commit, attempt, note) = shared.with_store(|store| {
        let run = store.run(&params.run_id)?;
        if !store
            .tasks(&params.run_id)?
            .iter()
            .any(|t| t.id == params.task_id)
        {
            return Err(StoreError::NoSuchTask {
                run: params.run_id.to_string(),
                task: params.task_id.to_string(),
            }
            .into());
        }
        let attempts = store.attempts(&params.run_id, &params.task_id)?;
        let chosen = match params.attempt {
            Some(n) => attempts.iter().find(|a| a.n == n).ok_or_else(|| {
                Failure::tool(
                    ErrorCode::NotFound,
                    format!("task {} has no attempt {n}", params.task_id),
                )
            })?,
            None => attempts
                .iter()
                .rev()
                .find(|a| a.commit.is_some())
                .ok_or_else(|| {
                    Failure::tool(
                        ErrorCode::NotFound,
                        format!("task {} has no recorded change yet", params.task_id),
                    )
                })?,
        };
        let commit = chosen.commit.clone().ok_or_else(|| {
            Failure::tool(
                ErrorCode::NotFound,
                format!(
                    "attempt {} of task {} changed nothing",
                    chosen.n, params.task_id
                ),
            )
        })?;
        let base = chosen.base.clone().unwrap_or(run.base_sha);
        let latest = attempts.last().map_or(chosen.n, |attempt| attempt.n);
        let note = (params.attempt.is_none() && latest > chosen.n).then(|| {
            format!(
                "attempt {latest} is the latest, but attempts {}..={latest} changed nothing on top of it: this is attempt {}, the latest with a change",
                chosen.n + 1,
                chosen.n
            )
        });
        Ok((base, commit, chosen.n, note))
    })?;
    let max = params
        .max_bytes
        .unwrap_or(DEFAULT_PATCH_BYTES)
        .clamp(1024, MAX_PATCH_BYTES);
    let repo = shared.repo.clone();
    let (from, to) = (base.clone(), commit.clone());
    let (files, patch, truncated, redacted) =
        tokio::task::spawn_blocking(move || -> Result<_, PipelineError> {
            let policy = pipeline::load_policy(&repo, None)?;
            let rules = pipeline::load_rules(&policy)?;
            let mut files = crate::git::diff_files(&repo, &from, &to)?;
            rules.redact_changes(&mut files);
            let (patch, truncated) = crate::git::patch_text(&repo, &from, &to, max)?;
            let redacted = rules.scan_with("", patch.as_bytes(), false).len();
            Ok((files, rules.redact_text(&patch), truncated, redacted))
        })
        .await
        .map_err(|error| Failure::tool(ErrorCode::Internal, error.to_string()))??;
    Ok(DiffResult {
        run_id: params.run_id,
        task_id: params.task_id,
        attempt,
        base,
        commit,
        lines_added: files.iter().map(|f| f.added).sum(),
        lines_removed: files.iter().map(|f| f.removed).sum(),
        files,
        patch,
        truncated,
        redacted,
        note,
    })
}

/// A repository-relative path that stays inside the repository.
fn inside(root: &Path, path: &str, field: &str) -> Result<PathBuf, Failure> {
    let relative = Path::new(path);
    let escapes = relative.is_absolute()
        || relative
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::Prefix(_)));
    if escapes {
        return Err(Failure::invalid(
            field,
            format!("`{path}` is not a path inside the repository"),
            "pass paths relative to the repository root, without `..`",
        ));
    }
    let full = root.join(relative);
    if !full.exists() {
        return Err(Failure::invalid(
            field,
            format!("`{path}` does not exist"),
            "pass existing files or folders",
        ));
    }
    Ok(full)
}

/// `scan`.
pub async fn scan(shared: &Shared, params: ScanParams) -> Result<ScanResult, Failure> {
    let repo = shared.repo.clone();
    let roots: Vec<PathBuf> = if params.paths.is_empty() {
        vec![repo.workdir.clone()]
    } else {
        params
            .paths
            .iter()
            .map(|path| inside(&repo.workdir, path, "paths"))
            .collect::<Result<_, _>>()?
    };
    let report = tokio::task::spawn_blocking(move || -> Result<_, Failure> {
        let policy = pipeline::load_policy(&repo, None)?;
        let rules = pipeline::load_rules(&policy).map_err(PipelineError::from)?;
        match &params.range {
            Some(range) => {
                crate::secrets::scan_range(&repo, &rules, range).map_err(|error| match error {
                    crate::git::GitError::BadRevision { rev, .. } => Failure::invalid(
                        "range",
                        format!("`{rev}` is not a range or revision"),
                        "write A..B, e.g. origin/main..HEAD",
                    ),
                    other => other.into(),
                })
            }
            None => {
                // Named relative to the repository, as the caller gives paths.
                let files: Vec<(PathBuf, String)> = crate::secrets::collect_files(&roots)
                    .into_iter()
                    .map(|(path, name)| match path.strip_prefix(&repo.workdir) {
                        Ok(relative) => {
                            let relative = relative.to_string_lossy().into_owned();
                            (path, relative)
                        }
                        Err(_) => (path, name),
                    })
                    .collect();
                Ok(crate::secrets::scan_files(&rules, &files))
            }
        }
    })
    .await
    .map_err(|error| Failure::tool(ErrorCode::Internal, error.to_string()))??;
    Ok(capped_scan(report))
}

/// Hits, skipped and unreadable files listed in a `scan` result, at most each.
const SCAN_LIST_CAP: usize = 200;

/// A scan's result with its lists cut to [`SCAN_LIST_CAP`] entries each, saying so.
fn capped_scan(mut report: crate::secrets::FileScanReport) -> ScanResult {
    let hits = report.hits.len();
    let cut = hits > SCAN_LIST_CAP
        || report.skipped_binary.len() > SCAN_LIST_CAP
        || report.unreadable.len() > SCAN_LIST_CAP;
    report.hits.truncate(SCAN_LIST_CAP);
    report.skipped_binary.truncate(SCAN_LIST_CAP);
    report.unreadable.truncate(SCAN_LIST_CAP);
    ScanResult {
        report,
        hits_total: (hits > SCAN_LIST_CAP).then_some(hits),
        note: cut.then(|| {
            format!(
                "lists cut at {SCAN_LIST_CAP} entries; scan fewer paths, or run `ccfan scan --json` in a shell for all of them"
            )
        }),
    }
}

/// `check_scope`.
pub fn check_scope(shared: &Shared, params: CheckScopeParams) -> Result<CheckScopeResult, Failure> {
    let (allowed, denied) = match (&params.run_id, &params.task_id) {
        (Some(run), Some(task)) => shared.with_store(|store| {
            let row = store
                .tasks(run)?
                .into_iter()
                .find(|t| &t.id == task)
                .ok_or_else(|| StoreError::NoSuchTask {
                    run: run.to_string(),
                    task: task.to_string(),
                })?;
            Ok((row.spec.allowed, row.spec.denied))
        })?,
        (None, None) => (params.allowed.clone(), params.denied.clone()),
        _ => {
            return Err(Failure::invalid(
                "task_id",
                "run_id and task_id go together",
                "pass both to use a stored task's scope, or neither and pass allowed/denied",
            ));
        }
    };
    if allowed.is_empty() {
        return Err(Failure::invalid(
            "allowed",
            "no allowed globs",
            "pass the globs a task would get, e.g. [\"src/**\"]",
        ));
    }
    let scope = Scope::new(&allowed, &denied)
        .map_err(|message| Failure::invalid("allowed", message, "fix the glob's syntax"))?;
    let paths: Vec<PathScope> = params
        .paths
        .iter()
        .map(|path| match scope.violation(path) {
            Some(violation) => PathScope {
                path: path.clone(),
                allowed: false,
                rule: Some(violation.rule),
                message: Some(violation.reason),
            },
            None => PathScope {
                path: path.clone(),
                allowed: true,
                rule: None,
                message: None,
            },
        })
        .collect();
    Ok(CheckScopeResult {
        all_allowed: paths.iter().all(|p| p.allowed),
        paths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::fixtures::{run, task};
    use crate::report::{Level, Stage, StageStatus};

    fn noisy(id: &str, findings: usize) -> TaskEvidence {
        let mut all: Vec<Finding> = (0..findings)
            .map(|n| {
                let mut finding = Finding::error(
                    Stage::Secrets,
                    "generic-api-key",
                    format!("hit {n} {}", "x".repeat(200)),
                );
                if n % 2 == 0 {
                    finding.level = Level::Warning;
                }
                finding
            })
            .collect();
        all.rotate_left(1);
        TaskEvidence {
            task_id: task(id),
            attempt: 1,
            verdict: Verdict::Rework {
                findings: all.clone(),
            },
            findings_total: all.len(),
            findings: all,
            stages: vec![
                StageOutcome {
                    stage: "tests".to_string(),
                    status: StageStatus::Fail,
                    note: Some("y".repeat(2000)),
                },
                StageOutcome {
                    stage: "scope".to_string(),
                    status: StageStatus::Pass,
                    note: Some("fine".to_string()),
                },
            ],
            diff: crate::report::DiffSummary::default(),
        }
    }

    #[test]
    fn a_summary_keeps_the_blocking_findings_first_and_says_how_to_get_the_rest() {
        let result = sized(run("r"), false, vec![noisy("a", 10)], false);
        let a = &result.tasks[0];
        assert_eq!(a.findings.len(), SUMMARY_FINDINGS);
        assert_eq!(a.findings_total, 10);
        assert!(
            a.findings
                .iter()
                .all(|finding| finding.level == Level::Error)
        );
        assert_eq!(
            a.stages[0].note.as_ref().unwrap().chars().count(),
            SUMMARY_NOTE_CHARS + 1
        );
        assert_eq!(a.stages[1].note, None, "a passing stage's note is left out");
        assert!(result.note.unwrap().contains("detail = true"));
        let full = sized(run("r"), false, vec![noisy("a", 10)], true);
        assert_eq!(full.tasks[0].findings.len(), 10);
        assert_eq!(full.note, None);
    }

    #[test]
    fn a_scan_with_many_hits_lists_the_first_and_counts_them_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.txt");
        // Distinct, key-like values: 16 characters of A-Z2-7 from a hash of the line number.
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        let text: String = (0u64..250)
            .map(|n| {
                let mut seed = crate::util::stable_hash(&n.to_le_bytes());
                let body: String = (0..16)
                    .map(|_| {
                        let pick = alphabet[(seed % 32) as usize] as char;
                        seed = seed.rotate_right(5) ^ 0x9e37_79b9_7f4a_7c15;
                        pick
                    })
                    .collect();
                format!("aws_access_key_id = AKIA{body}\n")
            })
            .collect();
        std::fs::write(&path, text).unwrap();
        let pack = crate::secrets::RulePack::builtin("default").unwrap();
        let report = crate::secrets::scan_files(&pack, &[(path, "keys.txt".to_string())]);
        assert!(report.hits.len() > SCAN_LIST_CAP, "{}", report.hits.len());
        let total = report.hits.len();
        let result = capped_scan(report);
        assert_eq!(result.report.hits.len(), SCAN_LIST_CAP);
        assert_eq!(result.hits_total, Some(total));
        assert!(result.note.unwrap().contains("ccfan scan --json"));
    }

    #[test]
    fn a_result_past_its_cap_leaves_tasks_out_and_names_them() {
        let tasks: Vec<TaskEvidence> = (0..60).map(|n| noisy(&format!("t{n}"), 3)).collect();
        let result = sized(run("r"), false, tasks, false);
        let size = serde_json::to_vec(&result).unwrap().len();
        assert!(size <= VERIFY_CAP_BYTES + 1024, "{size} bytes");
        assert!(result.tasks.len() < 60);
        let note = result.note.unwrap();
        assert!(note.contains("t59") && note.contains("task_id"), "{note}");
    }
}
