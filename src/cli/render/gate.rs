//! How the gate's results read: a judged attempt or change as text or SARIF, and a secret scan as text.

use super::super::sarif::{self, SarifResult};
use super::short;
use crate::report::{Level, StageStatus, Verdict, VerifyReport};
use crate::secrets::FileScanReport;

fn level(level: Level) -> &'static str {
    match level {
        Level::Error => "error",
        Level::Warning => "warning",
        Level::Info => "note",
    }
}

/// One judged change or attempt, for rendering.
pub struct Judged<'a> {
    /// The heading's subject (`run/task attempt n`, `staged changes`, …).
    pub title: String,
    /// What the verdict is called here: a run's tasks say ACCEPT/REWORK/ROLLBACK, a person's change PASS/BLOCKED.
    pub outcome: String,
    pub verdict: &'a Verdict,
    pub report: &'a VerifyReport,
    /// A worker's attempt (its findings go back to it), not a person's change.
    pub attempt: bool,
}

/// The SARIF log of judged changes or attempts.
pub fn sarif_text(judged: &[Judged<'_>]) -> String {
    let findings: Vec<SarifResult> = judged
        .iter()
        .flat_map(|entry| entry.report.findings().map(move |finding| (entry, finding)))
        .map(|(entry, finding)| SarifResult {
            rule: finding.rule.clone(),
            rule_description: format!("{} check", finding.stage),
            level: level(finding.level),
            message: format!("[{}] {}", entry.title, finding.message),
            path: finding.path.clone(),
            line: finding.line,
            fingerprint: finding.fingerprint.clone(),
        })
        .collect();
    super::json(&sarif::log(&findings))
}

/// The human report of judged changes or attempts.
pub fn human_verify(judged: &[Judged<'_>]) -> String {
    let mut text = String::new();
    for entry in judged {
        let report = entry.report;
        let diff = &report.diff;
        text.push_str(&format!(
            "{}: {}\n  {} file(s), +{} -{}, risk {}{}\n",
            entry.title,
            entry.outcome,
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
            // A skipped or failed-to-run stage says why; the review stage always says what the reviewer concluded.
            if let Some(note) = &stage.note
                && (matches!(stage.status, StageStatus::Skipped | StageStatus::Error)
                    || stage.stage == crate::report::Stage::Review)
            {
                text.push_str(&format!("  {}", note.lines().next().unwrap_or_default()));
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
        match entry.verdict {
            Verdict::Accept => {}
            Verdict::Rework { findings } if !entry.attempt => {
                text.push_str(&format!("  → blocked by {} finding(s)\n", findings.len()))
            }
            Verdict::Rework { findings } => text.push_str(&format!(
                "  → rework: {} finding(s) go back to the worker\n",
                findings.len()
            )),
            Verdict::Rollback { reasons, .. } => {
                let word = if entry.attempt { "rollback" } else { "blocked" };
                for reason in reasons {
                    text.push_str(&format!("  → {word}: {reason}\n"));
                }
            }
        }
        text.push('\n');
    }
    text
}

/// The human report of a secret scan.
pub fn human_scan(report: &FileScanReport) -> String {
    let mut text = String::new();
    for hit in &report.hits {
        let commit = hit
            .commit
            .as_deref()
            .map(|c| format!("{} ", short(c)))
            .unwrap_or_default();
        let place = match hit.hit.line {
            0 => format!("{} (in the file name)", hit.path),
            line => format!("{}:{line}:{}", hit.path, hit.hit.column),
        };
        text.push_str(&format!(
            "{commit}{place}  {}  {}  (fingerprint {})\n",
            hit.hit.rule, hit.hit.redacted, hit.hit.fingerprint
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

/// The SARIF log of a secret scan (a secret in a file's name has no line).
pub fn scan_sarif(report: &FileScanReport) -> String {
    let findings: Vec<SarifResult> = report
        .hits
        .iter()
        .map(|hit| SarifResult {
            rule: hit.hit.rule.clone(),
            rule_description: hit.hit.description.clone(),
            level: "error",
            message: format!("{}: {}", hit.hit.description, hit.hit.redacted),
            path: Some(hit.path.clone()),
            // Line 0: the secret is in the file's name.
            line: (hit.hit.line > 0).then_some(hit.hit.line),
            fingerprint: Some(hit.hit.fingerprint.clone()),
        })
        .collect();
    super::json(&sarif::log(&findings))
}
