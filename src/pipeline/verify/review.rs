//! Stage 4g, review: once every stage before it passed, a reviewer — a worker profile that [`Reviewer`] runs
//! read-only on the merge-preview tree — reads the task and the exact diff (also written to a file) and answers
//! `approve` or `request_changes`. The answer is validated here and becomes findings; a malformed or missing
//! answer is never an approval.

use std::path::{Path, PathBuf};

use super::{Running, VerifyInput};
use crate::model::review::{ReviewAnswer, ReviewMode, ReviewOutcome, ReviewVerdict, parse_answer};
use crate::report::{DiffSummary, Finding, Level, Stage, StageReport, StageStatus};

/// The most of the diff written to the reviewer's file.
const MAX_DIFF_FILE: usize = 8 * 1024 * 1024;
/// The most of the diff quoted in an agent reviewer's prompt (the file holds all of it; the prompt is one argument,
/// and Linux caps one at 128 KiB).
pub const MAX_DIFF_PROMPT: usize = 64 * 1024;

/// What a reviewer is asked to review.
#[derive(Debug)]
pub struct ReviewRequest<'a> {
    /// The merge-preview tree (read-only to the reviewer).
    pub tree: &'a Path,
    /// The merge-preview commit.
    pub preview: &'a str,
    /// The whole diff from base to attempt, secrets redacted.
    pub diff_file: &'a Path,
    /// Its first [`MAX_DIFF_PROMPT`] bytes, on a line end.
    pub diff_excerpt: &'a str,
    /// Whether the excerpt is all of it.
    pub diff_whole: bool,
    /// The files the change touches.
    pub changed: &'a [String],
    /// The gate's findings so far (none blocking).
    pub findings: &'a [Finding],
}

/// Runs a reviewer: built by the pipeline for the task under review, so this stage needs no worker of its own.
pub trait Reviewer: Sync {
    /// The reviewer's worker profile.
    fn name(&self) -> &str;
    /// Whether its verdict blocks.
    fn mode(&self) -> ReviewMode;
    /// The folder the review's files go to (emptied first): the diff, the reviewer's log and answer.
    fn dir(&self) -> &Path;
    /// Runs the reviewer to its end: its answer's text, or why it gave none.
    fn review(&self, request: &ReviewRequest<'_>) -> Result<String, String>;
    /// Told how the review ended (it is stored with the reviewer's usage).
    fn ended(&self, outcome: ReviewOutcome);
}

/// Whether and how an attempt is reviewed.
#[derive(Clone)]
pub enum ReviewStep<'a> {
    /// The task has no reviewer (or this is the hooks' gate): no review stage at all.
    None,
    /// Shown as skipped, with why.
    Skip(&'a str),
    /// The landing gate: the same change was reviewed before it was accepted; that review stands, with its
    /// comments, in the landing's report.
    Carried(StageReport),
    /// Reviewed by this reviewer.
    Run(&'a dyn Reviewer),
}

impl std::fmt::Debug for ReviewStep<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReviewStep::None => f.write_str("None"),
            ReviewStep::Skip(why) => write!(f, "Skip({why:?})"),
            ReviewStep::Carried(report) => write!(f, "Carried({:?})", report.status),
            ReviewStep::Run(reviewer) => write!(f, "Run({})", reviewer.name()),
        }
    }
}

/// The review stage, after `earlier` (every stage run before it, the worker's included).
pub(super) fn run(
    reviewer: &dyn Reviewer,
    input: &VerifyInput<'_>,
    summary: &DiffSummary,
    earlier: &[StageReport],
    running: &mut Running,
) -> StageReport {
    if let Some(why) = not_ready(earlier) {
        return super::skipped(Stage::Review, &why);
    }
    let Some(commit) = input.commit else {
        return super::skipped(
            Stage::Review,
            "the attempt changed nothing: nothing to review",
        );
    };
    let (tree, preview) = match super::preview_tree(Stage::Review, input, running, true) {
        Ok(made) => made,
        Err(report) => {
            reviewer.ended(ReviewOutcome::Failed);
            return report;
        }
    };
    let diff_file = match write_diff(reviewer.dir(), input, commit) {
        Ok(path) => path,
        Err(why) => {
            reviewer.ended(ReviewOutcome::Failed);
            return judge(
                reviewer.mode(),
                reviewer.name(),
                Err(Unanswered::Failed(why)),
            )
            .0;
        }
    };
    let whole = std::fs::read(&diff_file).unwrap_or_default();
    let (excerpt, diff_whole) = excerpt(&whole);
    // What goes to the reviewer (a prompt, maybe another vendor's model) is redacted like everything shown.
    let redact = |text: &str| input.rules.redact_text(text);
    let changed: Vec<String> = summary
        .files
        .iter()
        .map(|file| redact(&file.change.path))
        .collect();
    let findings: Vec<Finding> = earlier
        .iter()
        .flat_map(|stage| stage.findings.iter().cloned())
        .map(|mut finding| {
            finding.message = redact(&finding.message);
            finding.path = finding.path.as_deref().map(redact);
            finding
        })
        .collect();
    let request = ReviewRequest {
        tree: &tree,
        preview: &preview,
        diff_file: &diff_file,
        diff_excerpt: &excerpt,
        diff_whole,
        changed: &changed,
        findings: &findings,
    };
    let answer = reviewer
        .review(&request)
        .map_err(Unanswered::Failed)
        .and_then(|text| parse_answer(&text, &tree).map_err(Unanswered::Invalid));
    let (report, outcome) = judge(reviewer.mode(), reviewer.name(), answer);
    reviewer.ended(outcome);
    report
}

/// Why the stages before the review do not let it run, if they do not.
fn not_ready(earlier: &[StageReport]) -> Option<String> {
    let failed: Vec<&str> = earlier
        .iter()
        .filter(|stage| {
            matches!(stage.status, StageStatus::Fail | StageStatus::Error)
                || stage.findings.iter().any(Finding::is_blocking)
        })
        .map(|stage| stage.stage.as_str())
        .collect();
    (!failed.is_empty()).then(|| {
        format!(
            "not reviewed: the {} stage(s) did not pass, and a reviewer only reviews a change the gate would \
             otherwise accept",
            failed.join(", ")
        )
    })
}

/// Writes the change's whole diff (redacted, at most [`MAX_DIFF_FILE`]) into `dir/diff.patch`, `dir` emptied first.
fn write_diff(dir: &Path, input: &VerifyInput<'_>, commit: &str) -> Result<PathBuf, String> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| format!("cannot empty {}: {e}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let (patch, cut) = crate::git::patch_text(input.repo, input.base, commit, MAX_DIFF_FILE)
        .map_err(|error| format!("cannot read the diff: {error}"))?;
    let mut text = input.rules.redact_text(&patch);
    if cut {
        text.push_str(&format!(
            "\n… (the diff is cut at {} MiB)\n",
            MAX_DIFF_FILE / 1024 / 1024
        ));
    }
    let path = dir.join("diff.patch");
    std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// The first [`MAX_DIFF_PROMPT`] bytes of the diff on a line end, and whether that is all of it.
fn excerpt(diff: &[u8]) -> (String, bool) {
    if diff.len() <= MAX_DIFF_PROMPT {
        return (String::from_utf8_lossy(diff).into_owned(), true);
    }
    let head = &diff[..MAX_DIFF_PROMPT];
    let end = head
        .iter()
        .rposition(|byte| *byte == b'\n')
        .map_or(MAX_DIFF_PROMPT, |at| at + 1);
    (String::from_utf8_lossy(&diff[..end]).into_owned(), false)
}

/// Why a review has no valid answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unanswered {
    /// The reviewer did not finish (not started, timed out, failed).
    Failed(String),
    /// Its answer was malformed.
    Invalid(String),
}

/// What the answer (or its absence) means for the change under `mode`: the stage's report and how the review
/// ended. Required: `request_changes` blocks (its comments go back to the author), and no valid answer is an error
/// that rolls the change back rather than approving it. Advisory: everything is a warning at most.
pub fn judge(
    mode: ReviewMode,
    reviewer: &str,
    answer: Result<ReviewAnswer, Unanswered>,
) -> (StageReport, ReviewOutcome) {
    let required = mode == ReviewMode::Required;
    let report = |status, findings, note: String| StageReport {
        stage: Stage::Review,
        status,
        findings,
        duration_ms: 0,
        note: Some(note),
    };
    let answer = match answer {
        Ok(answer) => answer,
        Err(unanswered) => {
            let (rule, outcome, why) = match unanswered {
                Unanswered::Failed(why) => ("review-failed", ReviewOutcome::Failed, why),
                Unanswered::Invalid(why) => ("review-invalid", ReviewOutcome::Invalid, why),
            };
            let message = format!("the reviewer `{reviewer}` gave no valid answer: {why}");
            return if required {
                let finding = Finding::error(Stage::Review, rule, message.clone());
                (
                    report(
                        StageStatus::Error,
                        vec![finding],
                        format!(
                            "{message} (a required review without a valid answer never approves)"
                        ),
                    ),
                    outcome,
                )
            } else {
                let finding = Finding::warning(Stage::Review, rule, message.clone());
                (report(StageStatus::Pass, vec![finding], message), outcome)
            };
        }
    };
    let blocking = required && answer.verdict == ReviewVerdict::RequestChanges;
    let mut findings = Vec::new();
    if answer.verdict == ReviewVerdict::RequestChanges {
        let message = if answer.summary.is_empty() {
            format!("the reviewer `{reviewer}` requested changes (see its comments)")
        } else {
            format!(
                "the reviewer `{reviewer}` requested changes: {}",
                answer.summary
            )
        };
        findings.push(if blocking {
            Finding::error(Stage::Review, "changes-requested", message)
        } else {
            Finding::warning(Stage::Review, "changes-requested", message)
        });
    }
    for comment in &answer.comments {
        // A comment blocks only with a required `request_changes`, and then only when it is more than a note.
        let level = match (blocking, comment.severity) {
            (_, Level::Info) => Level::Info,
            (true, Level::Error | Level::Warning) => Level::Error,
            (false, Level::Error | Level::Warning) => Level::Warning,
        };
        let mut finding =
            Finding::warning(Stage::Review, "review-comment", comment.message.clone());
        finding.level = level;
        finding.path = comment.path.clone();
        finding.line = comment.line;
        findings.push(finding);
    }
    let (outcome, said) = match answer.verdict {
        ReviewVerdict::Approve => (ReviewOutcome::Approve, "approved"),
        ReviewVerdict::RequestChanges => (ReviewOutcome::RequestChanges, "requested changes"),
    };
    let mut note = format!(
        "{} review by `{reviewer}`: {said} with {} comment(s)",
        mode.as_str(),
        answer.comments.len()
    );
    if !answer.summary.is_empty() {
        note.push_str(&format!(": {}", answer.summary));
    }
    let status = if blocking {
        StageStatus::Fail
    } else {
        StageStatus::Pass
    };
    (report(status, findings, note), outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::review::ReviewComment;

    fn answer(verdict: ReviewVerdict, severities: &[Level]) -> ReviewAnswer {
        ReviewAnswer {
            verdict,
            summary: "the summary".into(),
            comments: severities
                .iter()
                .map(|severity| ReviewComment {
                    path: Some("src/a.rs".into()),
                    line: Some(2),
                    severity: *severity,
                    message: "fix this".into(),
                })
                .collect(),
        }
    }

    fn blocking(report: &StageReport) -> usize {
        report.findings.iter().filter(|f| f.is_blocking()).count()
    }

    #[test]
    fn a_required_request_for_changes_blocks_with_its_comments() {
        let (report, outcome) = judge(
            ReviewMode::Required,
            "cl",
            Ok(answer(
                ReviewVerdict::RequestChanges,
                &[Level::Warning, Level::Info],
            )),
        );
        assert_eq!(outcome, ReviewOutcome::RequestChanges);
        assert_eq!(report.status, StageStatus::Fail);
        assert_eq!(blocking(&report), 2, "{report:?}");
        assert_eq!(report.findings[1].path.as_deref(), Some("src/a.rs"));
        assert_eq!(report.findings[1].line, Some(2));
        assert_eq!(report.findings[2].level, Level::Info);
    }

    #[test]
    fn an_approval_or_an_advisory_review_never_blocks() {
        for (mode, verdict) in [
            (ReviewMode::Required, ReviewVerdict::Approve),
            (ReviewMode::Advisory, ReviewVerdict::Approve),
            (ReviewMode::Advisory, ReviewVerdict::RequestChanges),
        ] {
            let (report, _) = judge(mode, "cl", Ok(answer(verdict, &[Level::Error])));
            assert_eq!(report.status, StageStatus::Pass, "{mode:?} {verdict:?}");
            assert_eq!(blocking(&report), 0, "{report:?}");
            assert!(report.findings.iter().any(|f| f.rule == "review-comment"));
        }
    }

    #[test]
    fn no_valid_answer_never_approves_a_required_review() {
        for (unanswered, rule, outcome) in [
            (
                Unanswered::Invalid("garbage".into()),
                "review-invalid",
                ReviewOutcome::Invalid,
            ),
            (
                Unanswered::Failed("timed out".into()),
                "review-failed",
                ReviewOutcome::Failed,
            ),
        ] {
            let (report, got) = judge(ReviewMode::Required, "cl", Err(unanswered.clone()));
            assert_eq!(got, outcome);
            assert_eq!(report.status, StageStatus::Error);
            assert_eq!(report.findings[0].rule, rule);
            assert!(report.findings[0].is_blocking());
            let (advisory, _) = judge(ReviewMode::Advisory, "cl", Err(unanswered));
            assert_eq!(advisory.status, StageStatus::Pass);
            assert_eq!(blocking(&advisory), 0);
        }
    }

    #[test]
    fn the_prompt_excerpt_ends_on_a_line() {
        let diff = "+line\n".repeat(MAX_DIFF_PROMPT / 6 + 10);
        let (excerpt, whole) = excerpt(diff.as_bytes());
        assert!(!whole);
        assert!(excerpt.ends_with('\n') && excerpt.len() <= MAX_DIFF_PROMPT);
        assert_eq!(super::excerpt(b"+a\n"), ("+a\n".to_string(), true));
    }
}
