//! Stage 4, verify: ccfan itself checks an attempt — never trusting what the worker says — with stages ordered
//! cheap to expensive (policy `gate.stages`, with optional fail-fast), and writes a typed [`VerifyReport`].

// 4a
pub mod diff;
// 4b
pub mod scope;
// 4c
pub mod secrets;
// after an agent attempt: its private home scrubbed of the same secrets
pub mod agent_home;
// 4d and 4f
pub mod commands;
// 4e
pub mod completeness;
// 4g: last, once the others passed
pub mod review;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use crate::git::{self, GitError, MergePreview, RepoPaths};
use crate::policy::Policy;
use crate::report::{
    Finding, REPORT_SCHEMA_VERSION, Stage, StageReport, StageStatus, VerifyReport,
};
use crate::secrets::RulePack;

/// Everything the gate needs to check one change.
#[derive(Debug)]
pub struct VerifyInput<'a> {
    /// The repository.
    pub repo: &'a RepoPaths,
    /// The policy.
    pub policy: &'a Policy,
    /// The compiled secret rules.
    pub rules: &'a RulePack,
    /// What is being checked (`run/task attempt n`, a range, …).
    pub subject: String,
    /// The recorded base commit.
    pub base: &'a str,
    /// The change's commit (`None`: nothing changed).
    pub commit: Option<&'a str>,
    /// Allowed globs.
    pub allowed: &'a [String],
    /// Denied globs.
    pub denied: &'a [String],
    /// The tip the change would land on (the merge preview is this + the change).
    pub target_tip: &'a str,
    /// Worker output to scan for secrets (and scrub).
    pub logs: Vec<PathBuf>,
    /// The lines to scan for secrets when they are not simply base→commit's: each commit's own lines, for a range
    /// whose history lands too.
    pub history: Option<Vec<git::AddedLines>>,
    /// Honour inline allow markers on secrets (the hooks' `inline_allow`; never for a worker).
    pub inline_allow: bool,
    /// Where stage logs are written.
    pub artifacts: &'a Path,
    /// A folder (not yet existing) for the verification checkout.
    pub scratch: PathBuf,
    /// The ignored files copied into the verification checkout (`.worktreeinclude`).
    pub includes: &'a crate::pipeline::tree::TreeFiles,
    /// Extra environment for the gate's commands: the task's resources (index, port block).
    pub env: &'a [(String, String)],
    /// The worker's final report when the completeness stage applies (`Some(None)`: it gave none).
    pub final_report: Option<Option<String>>,
    /// Stops long stages.
    pub cancel: &'a AtomicBool,
    /// The worker stage, judged by the caller: first in the report, and counted by the review's "did the rest pass".
    pub worker_stage: Option<StageReport>,
    /// Whether a reviewer reviews the change once every other stage passed.
    pub review: review::ReviewStep<'a>,
}

/// Errors that stop verification altogether (a failing stage is a report, not this).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Git could not read the change.
    #[error(transparent)]
    Git(#[from] GitError),
}

/// The merge-preview checkout, made on first use and removed at the end.
#[derive(Default)]
struct Checkout {
    preview: Option<Result<String, String>>,
    made: Option<Result<(PathBuf, String), String>>,
    /// The reviewer's own clean checkout, when one was made.
    clean: Option<PathBuf>,
}

impl Checkout {
    /// The merge-preview commit, computed once (`merge-conflict:PATHS` when it does not merge).
    fn preview(&mut self, input: &VerifyInput<'_>) -> Result<String, String> {
        self.preview
            .get_or_insert_with(|| match input.commit {
                None => Ok(input.target_tip.to_string()),
                Some(commit) => match git::merge_preview(input.repo, input.target_tip, commit) {
                    Ok(MergePreview::Clean { commit }) => Ok(commit.to_string()),
                    Ok(MergePreview::Conflicts(paths)) => {
                        Err(format!("merge-conflict:{}", paths.join(", ")))
                    }
                    Err(error) => Err(error.to_string()),
                },
            })
            .clone()
    }

    /// The checkout of the preview at `path`, with `files` copied in.
    fn make(
        input: &VerifyInput<'_>,
        path: &Path,
        preview: &str,
        files: &crate::pipeline::tree::TreeFiles,
    ) -> Result<(), String> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        // Half made, `make` leaves nothing behind.
        crate::pipeline::tree::make(
            input.repo,
            path,
            crate::pipeline::tree::Start::Detached,
            preview,
            files,
        )
        .map(drop)
        .map_err(|error| error.to_string())
    }

    /// The checkout the tests and checks run in (with the task tree's includes), made on first use.
    fn get(&mut self, input: &VerifyInput<'_>) -> Result<(PathBuf, String), String> {
        if self.made.is_none() {
            let made = self.preview(input).and_then(|preview| {
                Self::make(input, &input.scratch, &preview, input.includes)
                    .map(|()| (input.scratch.clone(), preview))
            });
            self.made = Some(made);
        }
        self.made
            .clone()
            .unwrap_or_else(|| Err("no checkout".to_string()))
    }

    /// A checkout of the preview commit only, for a reviewer: nothing a test or check wrote, no ignored files copied
    /// in (a `.env` an include brings holds real secrets).
    fn clean(&mut self, input: &VerifyInput<'_>) -> Result<(PathBuf, String), String> {
        let preview = self.preview(input)?;
        let mut path = input.scratch.clone().into_os_string();
        path.push("-review");
        let path = PathBuf::from(path);
        Self::make(input, &path, &preview, &Default::default())?;
        self.clean = Some(path.clone());
        Ok((path, preview))
    }

    fn remove(self, repo: &RepoPaths) {
        let made = self.made.and_then(Result::ok).map(|(path, _)| path);
        for path in made.into_iter().chain(self.clean) {
            if let Err(error) = crate::pipeline::tree::remove(repo, &path) {
                tracing::warn!(
                    "cannot remove the verification checkout {}: {error}",
                    path.display()
                );
            }
        }
    }
}

/// The gate runs the test and check commands on the attempt's own tree: a changed file those commands name (a test
/// script, say) deserves a reviewer's eye, so it becomes a risk reason and a warning.
fn flag_edited_commands(
    policy: &Policy,
    summary: &mut crate::report::DiffSummary,
    findings: &mut Vec<Finding>,
) {
    let words: Vec<&str> = policy
        .tests
        .iter()
        .flat_map(|tests| tests.argv.iter())
        .chain(
            policy
                .gate
                .checks
                .iter()
                .flat_map(|check| check.argv.iter()),
        )
        .flat_map(|arg| arg.split_whitespace())
        .map(|word| word.trim_start_matches("./"))
        .collect();
    for file in &mut summary.files {
        if words.iter().any(|word| *word == file.change.path) {
            let reason = "changes a script the gate's test or check commands run".to_string();
            findings.push(
                Finding::warning(Stage::Diff, "risk", reason.clone()).at(&file.change.path, None),
            );
            summary.risk_score = (summary.risk_score + 25).min(100);
            summary.risk_reasons.push(reason.clone());
            file.risk.push(reason);
        }
    }
}

fn skipped(stage: Stage, why: &str) -> StageReport {
    StageReport {
        stage,
        status: StageStatus::Skipped,
        findings: vec![],
        duration_ms: 0,
        note: Some(why.to_string()),
    }
}

fn judged(stage: Stage, findings: Vec<Finding>, note: Option<String>) -> StageReport {
    let status = if findings.iter().any(Finding::is_blocking) {
        StageStatus::Fail
    } else {
        StageStatus::Pass
    };
    StageReport {
        stage,
        status,
        findings,
        duration_ms: 0,
        note,
    }
}

/// Runs the gate's stages on one change.
pub fn verify(input: &VerifyInput<'_>) -> Result<VerifyReport, VerifyError> {
    let gate = &input.policy.gate;
    let (mut diff_summary, mut diff_findings) =
        diff::summarize(input.repo, input.base, input.commit)?;
    // The lines the change adds, read once: the diff stage looks for conflict markers, the secrets stage for keys.
    let added = match input.commit {
        Some(commit) => Some(git::added_lines(input.repo, Some(input.base), commit)?),
        None => None,
    };
    if let Some(files) = &added {
        diff_findings.extend(diff::conflict_markers(files));
    }
    flag_edited_commands(input.policy, &mut diff_summary, &mut diff_findings);
    let changed: Vec<String> = diff_summary
        .files
        .iter()
        .map(|file| file.change.path.clone())
        .collect();
    let facts = Facts {
        diff_findings,
        added,
        changed,
        old_paths: diff_summary
            .files
            .iter()
            .filter_map(|file| file.change.old_path.clone())
            .collect(),
    };
    let mut running = Running {
        raw: Vec::new(),
        checkout: Checkout::default(),
        preview: None,
    };
    let mut stages: Vec<StageReport> = input.worker_stage.iter().cloned().collect();
    let mut stopped_by: Option<Stage> = None;
    for &stage in &gate.stages {
        if let Some(failed) = stopped_by {
            stages.push(skipped(
                stage,
                &format!("skipped: the {failed} stage failed and gate.fail_fast is on"),
            ));
            continue;
        }
        let started = Instant::now();
        let mut report = run_stage(stage, input, &diff_summary, &facts, &mut running)?;
        report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        if gate.fail_fast && matches!(report.status, StageStatus::Fail | StageStatus::Error) {
            stopped_by = Some(stage);
        }
        stages.push(report);
    }
    match &input.review {
        review::ReviewStep::None => {}
        review::ReviewStep::Skip(why) => stages.push(skipped(Stage::Review, why)),
        review::ReviewStep::Carried(report) => stages.push(report.clone()),
        review::ReviewStep::Run(reviewer) => {
            let started = Instant::now();
            let mut report = review::run(*reviewer, input, &diff_summary, &stages, &mut running);
            report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            stages.push(report);
        }
    }
    running.checkout.remove(input.repo);
    Ok(VerifyReport {
        schema: REPORT_SCHEMA_VERSION,
        subject: input.subject.clone(),
        base: input.base.to_string(),
        commit: input.commit.map(str::to_string),
        preview: running.preview,
        diff: diff_summary,
        stages,
    })
}

/// What the stages judge, read once: the diff stage's findings, the added lines, the changed paths and the other
/// side of renames.
struct Facts {
    diff_findings: Vec<Finding>,
    added: Option<Vec<git::AddedLines>>,
    changed: Vec<String>,
    old_paths: Vec<String>,
}

/// What the stages carry from one to the next: the raw secrets found (to scrub command output), the merge-preview
/// checkout (made once, for tests and checks) and its commit.
struct Running {
    raw: Vec<secrets::RawSecret>,
    checkout: Checkout,
    preview: Option<String>,
}

/// One stage of the gate.
fn run_stage(
    stage: Stage,
    input: &VerifyInput<'_>,
    diff_summary: &crate::report::DiffSummary,
    facts: &Facts,
    running: &mut Running,
) -> Result<StageReport, VerifyError> {
    let gate = &input.policy.gate;
    Ok(match stage {
        // Not configurable: `gate::gate_attempt` adds the worker's own outcome.
        Stage::Worker => skipped(stage, "the worker's outcome is judged by the caller"),
        Stage::Diff => judged(stage, facts.diff_findings.clone(), None),
        Stage::Scope => match scope::Scope::new(input.allowed, input.denied) {
            Ok(scope) => judged(stage, scope::run(&scope, &diff_summary.files), None),
            Err(error) => StageReport {
                stage,
                status: StageStatus::Error,
                findings: vec![],
                duration_ms: 0,
                note: Some(error),
            },
        },
        Stage::Secrets => {
            let logs: &[PathBuf] = if gate.scan_logs { &input.logs } else { &[] };
            let lines = input.history.as_deref().or(facts.added.as_deref());
            let outcome = secrets::run(
                input.rules,
                lines,
                &facts.old_paths,
                logs,
                input.inline_allow,
            )?;
            running.raw.extend(outcome.raw);
            judged(stage, outcome.findings, outcome.note)
        }
        Stage::Tests => match &input.policy.tests {
            None => skipped(stage, "no test command: set [tests] command in ccfan.toml"),
            Some(tests) => {
                let spec = commands::CommandSpec {
                    name: "tests",
                    argv: &tests.argv,
                    timeout: tests.timeout,
                };
                run_command(stage, &[spec], input, running)
            }
        },
        Stage::Completeness => match &input.final_report {
            None => skipped(stage, "off for this worker (gate.completeness)"),
            Some(message) => judged(
                stage,
                completeness::check(message.as_deref(), &facts.changed),
                None,
            ),
        },
        Stage::Review => skipped(
            stage,
            "the review stage runs last, when the task has a reviewer",
        ),
        Stage::Checks if gate.checks.is_empty() => skipped(stage, "no [[checks]] in the policy"),
        Stage::Checks => {
            let specs: Vec<commands::CommandSpec<'_>> = gate
                .checks
                .iter()
                .map(|check| commands::CommandSpec {
                    name: &check.name,
                    argv: &check.argv,
                    timeout: check.timeout,
                })
                .collect();
            run_command(stage, &specs, input, running)
        }
    })
}

/// The merge-preview checkout (made on first use; `clean`: the reviewer's own, with nothing else in it) and its
/// commit; else the stage's report: a conflict is a finding, anything else an error.
fn preview_tree(
    stage: Stage,
    input: &VerifyInput<'_>,
    running: &mut Running,
    clean: bool,
) -> Result<(PathBuf, String), StageReport> {
    let made = if clean {
        running.checkout.clean(input)
    } else {
        running.checkout.get(input)
    };
    match made {
        Ok((path, commit)) => {
            running.preview = Some(commit.clone());
            Ok((path, commit))
        }
        Err(error) => {
            if let Some(paths) = error.strip_prefix("merge-conflict:") {
                let finding = Finding::error(
                    stage,
                    "merge-conflict",
                    format!(
                        "the attempt does not merge cleanly onto the target: conflicts in {paths}"
                    ),
                );
                return Err(judged(stage, vec![finding], None));
            }
            Err(StageReport {
                stage,
                status: StageStatus::Error,
                findings: vec![],
                duration_ms: 0,
                note: Some(error),
            })
        }
    }
}

fn run_command(
    stage: Stage,
    specs: &[commands::CommandSpec<'_>],
    input: &VerifyInput<'_>,
    running: &mut Running,
) -> StageReport {
    let path = match preview_tree(stage, input, running, false) {
        Ok((path, _)) => path,
        Err(report) => return report,
    };
    let mut merged = StageReport {
        stage,
        status: StageStatus::Pass,
        findings: vec![],
        duration_ms: 0,
        note: None,
    };
    let mut notes = Vec::new();
    for spec in specs {
        let report = commands::run(stage, spec, &path, input, &running.raw);
        merged.status = match (merged.status, report.status) {
            (StageStatus::Error, _) | (_, StageStatus::Error) => StageStatus::Error,
            (StageStatus::Fail, _) | (_, StageStatus::Fail) => StageStatus::Fail,
            (
                StageStatus::Pass | StageStatus::Skipped,
                StageStatus::Pass | StageStatus::Skipped,
            ) => StageStatus::Pass,
        };
        merged.findings.extend(report.findings);
        if let Some(note) = report.note {
            notes.push(if specs.len() > 1 {
                format!("[{}] {note}", spec.name)
            } else {
                note
            });
        }
    }
    merged.note = (!notes.is_empty()).then(|| notes.join("\n"));
    merged
}
