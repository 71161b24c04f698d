//! `ccfan verify` and `ccfan scan`: thin adapters over the gate and the scanner, with human, JSON and SARIF
//! renderings. Exit codes: 0 nothing blocks, 1 something does, 2 bad input, 3 internal.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::args::{FormatArgs, ScanArgs, VerifyArgs};
use super::render::{self, short};
use super::sarif::{self, SarifResult};
use super::{CliError, Exit};
use crate::pipeline::{self, PipelineError, gate};
use crate::report::{Level, StageStatus, Verdict};
use crate::secrets::{self, FileScanReport, RulePack};

/// `ccfan verify --json`.
#[derive(Debug, Serialize)]
struct VerifyDocument<'a> {
    schema: u32,
    run_id: &'a str,
    tasks: &'a [gate::TaskVerification],
}

fn level(level: Level) -> &'static str {
    match level {
        Level::Error => "error",
        Level::Warning => "warning",
        Level::Info => "note",
    }
}

/// Runs `ccfan verify`.
pub fn verify(start: &Path, args: VerifyArgs) -> Result<Exit, CliError> {
    let VerifyArgs {
        target,
        policy,
        format,
    } = args;
    let (run_id, task) = match target.split_once('/') {
        Some((run, task)) => (run.to_string(), Some(task.to_string())),
        None => (target.clone(), None),
    };
    let repo = super::repo_at(start)?;
    let policy_file = policy.map(|path| super::absolute(start, &path));
    let policy = pipeline::load_policy(&repo, policy_file.as_deref())?;
    let rules = pipeline::load_rules(&policy).map_err(PipelineError::from)?;
    let (mut store, _) = pipeline::open_state(&repo)?;
    let scratch =
        crate::paths::worktree_base(&repo, policy.worktree_root.as_deref()).join(".verify");
    let cancel = super::cancel_flag();
    let checker = gate::Gate {
        repo: &repo,
        policy: &policy,
        rules: &rules,
        scratch_root: &scratch,
        cancel: &cancel,
    };
    let results = checker.reverify(&mut store, &run_id, task.as_deref())?;
    let text = match format {
        FormatArgs { json: true, .. } => render::json(&VerifyDocument {
            schema: 1,
            run_id: &run_id,
            tasks: &results,
        }),
        FormatArgs { sarif: true, .. } => {
            let findings: Vec<SarifResult> = results
                .iter()
                .flat_map(|task| task.report.findings().map(move |finding| (task, finding)))
                .map(|(task, finding)| SarifResult {
                    rule: finding.rule.clone(),
                    rule_description: format!("{} check", finding.stage),
                    level: level(finding.level),
                    message: format!("[{}] {}", task.task_id, finding.message),
                    path: finding.path.clone(),
                    line: finding.line,
                    fingerprint: finding.fingerprint.clone(),
                })
                .collect();
            render::json(&sarif::log(&findings))
        }
        FormatArgs { .. } => human_verify(&run_id, &results),
    };
    render::out(&text)?;
    let all_accepted = !results.is_empty()
        && results
            .iter()
            .all(|task| matches!(task.verdict, Verdict::Accept));
    Ok(if all_accepted {
        Exit::Success
    } else {
        Exit::NotAllSucceeded
    })
}

fn human_verify(run_id: &str, results: &[gate::TaskVerification]) -> String {
    if results.is_empty() {
        return format!("run {run_id} has no recorded attempt to verify\n");
    }
    let mut text = String::new();
    for task in results {
        let report = &task.report;
        let diff = &report.diff;
        text.push_str(&format!(
            "{run_id}/{} attempt {}: {}\n  {} file(s), +{} -{}, risk {}{}\n",
            task.task_id,
            task.attempt,
            task.verdict.name().to_uppercase(),
            diff.files_changed,
            diff.lines_added,
            diff.lines_removed,
            diff.risk_score,
            if diff.risk_reasons.is_empty() {
                String::new()
            } else {
                format!(" ({})", diff.risk_reasons.join(", "))
            }
        ));
        for file in &diff.files {
            let change = &file.change;
            let from = change
                .old_path
                .as_deref()
                .map(|old| format!("{old} → "))
                .unwrap_or_default();
            let link = file
                .symlink_target
                .as_deref()
                .map(|t| format!(" -> {t}"))
                .unwrap_or_default();
            text.push_str(&format!(
                "    {:<12} {from}{}{link}  +{} -{}{}\n",
                format!("{:?}", change.kind).to_lowercase(),
                change.path,
                change.added,
                change.removed,
                if change.binary { " (binary)" } else { "" }
            ));
        }
        for stage in &report.stages {
            let status = match stage.status {
                StageStatus::Pass => "pass",
                StageStatus::Fail => "FAIL",
                StageStatus::Skipped => "skipped",
                StageStatus::Error => "ERROR",
            };
            text.push_str(&format!(
                "  {:<13} {status:<8} {} ms",
                stage.stage.as_str(),
                stage.duration_ms
            ));
            if let (StageStatus::Skipped | StageStatus::Error, Some(note)) =
                (stage.status, &stage.note)
            {
                text.push_str(&format!("  {note}"));
            }
            text.push('\n');
            for finding in &stage.findings {
                let place = match (&finding.path, finding.line) {
                    (Some(path), Some(line)) => format!("{path}:{line}: "),
                    (Some(path), None) => format!("{path}: "),
                    (None, _) => String::new(),
                };
                let message = finding.message.lines().next().unwrap_or_default();
                text.push_str(&format!(
                    "    {} {} {place}{message}\n",
                    level(finding.level),
                    finding.rule
                ));
            }
        }
        match &task.verdict {
            Verdict::Accept => {}
            Verdict::Rework { findings } => text.push_str(&format!(
                "  → rework: {} finding(s) go back to the worker\n",
                findings.len()
            )),
            Verdict::Rollback { reasons, .. } => {
                for reason in reasons {
                    text.push_str(&format!("  → rollback: {reason}\n"));
                }
            }
        }
        text.push('\n');
    }
    text
}

/// Runs `ccfan scan`.
pub fn scan(start: &Path, args: ScanArgs) -> Result<Exit, CliError> {
    let ScanArgs {
        paths,
        range,
        rules,
        format,
    } = args;
    let pack = match rules {
        Some(path) => RulePack::from_file(&super::absolute(start, &path)),
        None => RulePack::builtin("default"),
    }
    .map_err(PipelineError::from)?;
    let report = match range {
        Some(range) => {
            let repo = super::repo_at(start)?;
            secrets::scan_range(&repo, &pack, &range).map_err(|error| match error {
                crate::git::GitError::BadRevision { rev, .. } => PipelineError::Input(
                    crate::input::InputError::new(
                        Path::new("<command line>"),
                        format!("`{rev}` is not a range or revision"),
                    )
                    .key("--range")
                    .fix("write A..B, e.g. origin/main..HEAD"),
                ),
                other => other.into(),
            })?
        }
        None => {
            let roots: Vec<PathBuf> = if paths.is_empty() {
                vec![start.to_path_buf()]
            } else {
                paths.iter().map(|p| super::absolute(start, p)).collect()
            };
            for root in &roots {
                if !root.exists() {
                    return Err(PipelineError::from(
                        crate::input::InputError::new(root, "no such file or folder")
                            .fix("pass existing paths"),
                    )
                    .into());
                }
            }
            secrets::scan_files(&pack, &secrets::collect_files(&roots))
        }
    };
    let text = match format {
        FormatArgs { json: true, .. } => render::json(&report),
        FormatArgs { sarif: true, .. } => {
            let findings: Vec<SarifResult> = report
                .hits
                .iter()
                .map(|hit| SarifResult {
                    rule: hit.hit.rule.clone(),
                    rule_description: hit.hit.description.clone(),
                    level: "error",
                    message: format!("{}: {}", hit.hit.description, hit.hit.redacted),
                    path: Some(hit.path.clone()),
                    line: Some(hit.hit.line),
                    fingerprint: Some(hit.hit.fingerprint.clone()),
                })
                .collect();
            render::json(&sarif::log(&findings))
        }
        FormatArgs { .. } => human_scan(&report),
    };
    render::out(&text)?;
    Ok(if report.hits.is_empty() {
        Exit::Success
    } else {
        Exit::NotAllSucceeded
    })
}

fn human_scan(report: &FileScanReport) -> String {
    let mut text = String::new();
    for hit in &report.hits {
        let commit = hit
            .commit
            .as_deref()
            .map(|c| format!("{} ", short(c)))
            .unwrap_or_default();
        text.push_str(&format!(
            "{commit}{}:{}:{}  {}  {}  (fingerprint {})\n",
            hit.path,
            hit.hit.line,
            hit.hit.column,
            hit.hit.rule,
            hit.hit.redacted,
            hit.hit.fingerprint
        ));
    }
    text.push_str(&format!(
        "{} secret(s) in {} file(s) scanned ({:.1} MB){}{}\n",
        report.hits.len(),
        report.files_scanned,
        report.bytes_scanned as f64 / 1e6,
        if report.skipped_binary.is_empty() {
            String::new()
        } else {
            format!("; {} binary file(s) skipped", report.skipped_binary.len())
        },
        if report.unreadable.is_empty() {
            String::new()
        } else {
            format!("; {} unreadable", report.unreadable.len())
        },
    ));
    text
}
