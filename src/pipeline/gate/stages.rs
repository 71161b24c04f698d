//! Stages 4+5's own stages: the worker's outcome (first in every report), the landing gate's carried review, and
//! the last redaction pass over a report before it is stored or shown.

use std::path::Path;

use crate::model::ExitStatus;
use crate::paths::AttemptDir;
use crate::pipeline::verify::review::ReviewStep;
use crate::report::{Finding, Stage, StageReport, StageStatus, VerifyReport};
use crate::secrets::RulePack;

/// The review the attempt's own gate report holds of `commit` (`None`: of whatever the attempt judged), when it
/// holds a valid one (the reviewer answered; not a stage that could not run, nor a review with no valid answer).
fn earlier_review(dir: &Path, commit: Option<Option<&str>>) -> Option<StageReport> {
    let path = AttemptDir::verify_report(&AttemptDir::of(dir).artifacts(false));
    let report = crate::util::read_regular(&path, crate::util::MAX_WORKER_FILE)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<VerifyReport>(&bytes).ok())?;
    if let Some(commit) = commit
        && report.commit.as_deref() != commit
    {
        return None;
    }
    report.stages.into_iter().find(|stage| {
        stage.stage == Stage::Review
            && matches!(stage.status, StageStatus::Pass | StageStatus::Fail)
            && !stage
                .findings
                .iter()
                .any(|f| f.rule == "review-invalid" || f.rule == "review-failed")
    })
}

/// A review judges the change, not the tip it lands on: once a reviewer gave a valid answer on an attempt, the
/// landing gate and any re-verification (`ccfan verify`) carry that answer, comments included, instead of asking
/// again — so a verdict cannot be re-rolled until it approves. `None`: no such review; the reviewer runs (or, on
/// landing, the stage says so).
pub(super) fn carried_review(
    dir: &Path,
    commit: Option<&str>,
    landing: bool,
) -> Option<ReviewStep<'static>> {
    // The landing gate judges the landing commit; the review it carries is of the accepted attempt's change.
    match earlier_review(dir, (!landing).then_some(commit)) {
        Some(mut stage) => {
            stage.note = Some(format!(
                "reviewed before (the same change): {}",
                stage.note.as_deref().unwrap_or("no note")
            ));
            stage.duration_ms = 0;
            Some(ReviewStep::Carried(stage))
        }
        None if landing => Some(ReviewStep::Skip(
            "no valid review of the accepted attempt was found",
        )),
        None => None,
    }
}

/// One last pass over every string of a report that may quote what the worker controls (messages, notes, output
/// tails, paths, symlink targets): whatever the rule pack finds there is redacted before anything is stored or
/// shown.
pub(in crate::pipeline) fn scrub_report(report: &mut VerifyReport, rules: &RulePack) {
    let clean = |text: &mut String| *text = rules.redact_text(text);
    for stage in &mut report.stages {
        stage.note.iter_mut().for_each(clean);
        for finding in &mut stage.findings {
            clean(&mut finding.message);
            finding.path.iter_mut().for_each(clean);
        }
    }
    for file in &mut report.diff.files {
        clean(&mut file.change.path);
        file.change.old_path.iter_mut().for_each(clean);
        file.symlink_target.iter_mut().for_each(clean);
    }
}

/// The worker stage: an attempt whose worker did not exit 0 is a blocking (reworkable) finding; so is what an
/// agent reported going wrong (a failed turn, an API error, its turns used up, a stream cut short), and its
/// denied tool calls are warnings.
pub(super) fn worker_stage(
    exit: Option<&ExitStatus>,
    tampered: &[String],
    agent: Option<&crate::agents::tally::AgentSummary>,
) -> StageReport {
    let finding = match exit {
        Some(ExitStatus::Code { code: 0 }) => None,
        Some(ExitStatus::TimedOut) => Some((
            "worker-timed-out",
            "the worker ran past its timeout".to_string(),
        )),
        Some(ExitStatus::Cancelled) => {
            Some(("worker-cancelled", "the worker was cancelled".to_string()))
        }
        Some(ExitStatus::OverLimit { limit }) => Some((
            "worker-over-limit",
            format!("the worker went past its {limit} limit and was stopped"),
        )),
        Some(ExitStatus::SpawnFailed { message }) => Some((
            "worker-not-started",
            format!("the worker could not be started: {message}"),
        )),
        Some(ExitStatus::Lost { message }) => Some((
            "worker-interrupted",
            format!("the link to where the worker ran was lost: {message}"),
        )),
        Some(other) => Some((
            "worker-failed",
            format!("the worker did not finish cleanly ({other})"),
        )),
        None => Some((
            "worker-interrupted",
            "the attempt was interrupted before its worker ended".to_string(),
        )),
    };
    let mut findings: Vec<Finding> = finding
        .into_iter()
        .map(|(rule, message)| Finding::error(Stage::Worker, rule, message))
        .collect();
    if let (Some(agent), Some(exit)) = (agent, exit) {
        findings.extend(agent.problems(exit).into_iter().map(|problem| {
            if problem.blocking {
                Finding::error(Stage::Worker, problem.rule, problem.message)
            } else {
                Finding::warning(Stage::Worker, problem.rule, problem.message)
            }
        }));
    }
    for what in tampered {
        findings.push(Finding::error(
            Stage::Worker,
            "sandbox-escape",
            format!(
                "the worker changed git metadata ccfan owns: {what} (put back before recording)"
            ),
        ));
    }
    let status = if findings.iter().any(Finding::is_blocking) {
        StageStatus::Fail
    } else {
        StageStatus::Pass
    };
    StageReport {
        stage: Stage::Worker,
        status,
        findings,
        duration_ms: 0,
        note: None,
    }
}
