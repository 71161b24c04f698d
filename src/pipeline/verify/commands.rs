//! Stages 4d and 4f, tests and custom checks: commands run against the merge-preview tree — exactly what would
//! land (target tip + this attempt) — in a separate verification checkout, never in the worker's worktree, through
//! the sandbox door (timeout, whole-tree kill, capped log), keeping a redacted tail of the output in the report.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::model::ExitStatus;
use crate::report::{Finding, Stage, StageReport, StageStatus};
use crate::sandbox::{self, Launch, SandboxPolicy, Tree};

use super::secrets;

/// Bytes of output kept in the report.
const TAIL: usize = 4000;

/// One command to run in the verification checkout.
#[derive(Debug, Clone)]
pub struct CommandSpec<'a> {
    /// Its name (`tests`, or the check's name).
    pub name: &'a str,
    /// Program and arguments.
    pub argv: &'a [String],
    /// Wall-clock limit.
    pub timeout: Duration,
}

/// The last `TAIL` bytes of a log, scrubbed of known secrets.
pub(crate) fn tail(log: &Path, raw: &[secrets::RawSecret]) -> String {
    let Ok(text) = crate::util::read_regular(log, crate::util::MAX_WORKER_FILE) else {
        return String::new();
    };
    let clean = super::secrets::scrub_bytes(&text, raw);
    let start = clean.len().saturating_sub(TAIL);
    let mut tail = String::from_utf8_lossy(&clean[start..]).into_owned();
    if start > 0 {
        tail.insert(0, '…');
    }
    tail
}

/// Runs `spec` in `checkout` for the gate of `input` and turns its end into a stage report; the log goes to the
/// gate's artifacts folder. The command's environment is the policy's, plus `CCFAN_VERIFY=1` and the task's own
/// resources (its index and port block).
pub fn run(
    stage: Stage,
    spec: &CommandSpec<'_>,
    checkout: &Path,
    input: &super::VerifyInput<'_>,
    raw_secrets: &[secrets::RawSecret],
) -> StageReport {
    let (policy, repo, rules, cancel) = (input.policy, input.repo, input.rules, input.cancel);
    let started = std::time::Instant::now();
    let log: PathBuf = input
        .artifacts
        .join(format!("{}.log", spec.name.replace(['/', ' '], "_")));
    let mut extra = vec![("CCFAN_VERIFY".to_string(), "1".to_string())];
    extra.extend(input.env.iter().cloned());
    let env = sandbox::command_env(&policy.sandbox, &extra);
    let token = format!(
        "verify-{}-{}",
        spec.name.replace(['/', ' '], "_"),
        crate::util::random_hex(6)
    );
    let launch = Launch {
        argv: spec.argv,
        cwd: checkout,
        env,
        log_path: &log,
        token: &token,
        cancel,
        sandbox: &SandboxPolicy::for_command(
            &policy.sandbox,
            Tree {
                worktree: checkout,
                common_dir: &repo.common_dir,
                checkout: &repo.workdir,
                outbox: None,
            },
            spec.timeout,
            policy.log_limit,
        ),
        stream: None,
    };
    let outcome = sandbox::run(launch, |_| {});
    // Test output may print secrets (from the tree, the environment, anywhere): scan it like a worker's log.
    let raw_secrets = &secrets::scrub_log(rules, &log, raw_secrets);
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let rule = match stage {
        Stage::Tests => "tests-failed".to_string(),
        Stage::Worker
        | Stage::Diff
        | Stage::Scope
        | Stage::Secrets
        | Stage::Completeness
        | Stage::Checks
        | Stage::Review => {
            format!("check-{}", spec.name)
        }
    };
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(error) => {
            return StageReport {
                stage,
                status: StageStatus::Error,
                findings: vec![],
                duration_ms,
                note: Some(error.to_string()),
            };
        }
    };
    let output = tail(&log, raw_secrets);
    let (status, finding) = match judge_exit(&outcome.exit, spec) {
        Ok(judged) => judged,
        Err(note) => {
            return StageReport {
                stage,
                status: StageStatus::Error,
                findings: vec![],
                duration_ms,
                note: Some(note),
            };
        }
    };
    let findings = finding
        .map(|message| {
            vec![Finding::error(
                stage,
                &rule,
                format!("{message}; output tail:\n{output}"),
            )]
        })
        .unwrap_or_default();
    StageReport {
        stage,
        status,
        findings,
        duration_ms,
        note: (!output.is_empty()).then_some(output),
    }
}

/// How a command's end reads as a stage: pass, or fail with what happened — or `Err` with why the stage could
/// not judge at all (cancelled, not started).
fn judge_exit(
    exit: &ExitStatus,
    spec: &CommandSpec<'_>,
) -> Result<(StageStatus, Option<String>), String> {
    let what = format!("`{}`", spec.argv.join(" "));
    match exit {
        ExitStatus::Code { code: 0 } => Ok((StageStatus::Pass, None)),
        ExitStatus::Code { code } => Ok((
            StageStatus::Fail,
            Some(format!("{what} exited with code {code}")),
        )),
        ExitStatus::Signal { signal } => Ok((
            StageStatus::Fail,
            Some(format!("{what} was killed by signal {signal}")),
        )),
        ExitStatus::TimedOut => Ok((
            StageStatus::Fail,
            Some(format!(
                "{what} ran past its timeout of {}",
                humantime::format_duration(spec.timeout)
            )),
        )),
        ExitStatus::OverLimit { limit } => Ok((
            StageStatus::Fail,
            Some(format!("{what} was stopped past its {limit} limit")),
        )),
        ExitStatus::Cancelled => Err("cancelled".into()),
        ExitStatus::SpawnFailed { message } => Err(format!("cannot start {what}: {message}")),
        ExitStatus::Lost { message } => Err(format!("lost {what}: {message}")),
    }
}
