//! Stages 4+5 together for one stored attempt: verify it, decide, and keep the report beside the attempt. Used by
//! `ccfan run` right after each worker and by `ccfan verify`, which re-runs the gate and never trusts a stored
//! report.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use super::PipelineError;
use super::decide::decide;
use super::record;
use super::reviewer::{ReviewRecord, TaskReviewer};
use super::verify::review::ReviewStep;
use super::verify::{self, VerifyInput};
use crate::git::{self, RepoPaths};
use crate::model::ExitStatus;
use crate::model::{CommitId, RunId, TaskId, TaskSpec, TaskState};
use crate::paths::AttemptDir;
use crate::policy::{Completeness, Policy};
use crate::report::{Verdict, VerifyReport};
use crate::secrets::RulePack;
use crate::store::Store;

mod stages;
pub(super) use stages::scrub_report;
use stages::{carried_review, worker_stage};

/// One attempt to put through the gate.
#[derive(Debug, Clone)]
pub struct AttemptRef<'a> {
    /// Run id.
    pub run_id: &'a RunId,
    /// The task.
    pub task: &'a TaskSpec,
    /// Attempt number.
    pub attempt: u32,
    /// The commit the attempt's chain started from (its diff is judged against this).
    pub base: &'a CommitId,
    /// The attempt commit (`None`: empty attempt).
    pub commit: Option<&'a CommitId>,
    /// The attempt's folder.
    pub dir: &'a Path,
    /// How its worker ended.
    pub exit: Option<&'a ExitStatus>,
    /// Git state the worker changed (HEAD, branch, `.git` link) that ccfan had to put back.
    pub tampered: &'a [String],
    /// Which attempt of the current rework budget this is (1 = the first).
    pub in_budget: u32,
    /// The gate on a landing commit (the merged tree): its report and logs go to `<dir>/landing/`, and the worker's
    /// logs and final report, judged already, are not read again.
    pub landing: bool,
    /// The task's resources for the gate's commands (index, port block).
    pub env: &'a [(String, String)],
    /// The attempt's process token: its reviewer runs as `<token>-review`, so that recovery after a crash finds it.
    pub token: &'a str,
}

/// The tip an attempt would land on: the run's target branch now, else its base.
pub fn target_tip(
    repo: &RepoPaths,
    target_branch: Option<&str>,
    base: &CommitId,
) -> Result<CommitId, PipelineError> {
    if let Some(branch) = target_branch
        && let Some(tip) = git::ref_target(repo, &format!("refs/heads/{branch}"))?
    {
        return Ok(tip);
    }
    Ok(base.clone())
}

/// The gate's fixed inputs: where, with which policy and rules, and how to stop.
#[derive(Debug, Clone, Copy)]
pub struct Gate<'a> {
    /// The repository.
    pub repo: &'a RepoPaths,
    /// The policy.
    pub policy: &'a Policy,
    /// The compiled secret rules.
    pub rules: &'a RulePack,
    /// Where verification checkouts are made.
    pub scratch_root: &'a Path,
    /// The ignored files copied into every verification checkout (`.worktreeinclude`).
    pub includes: &'a super::tree::TreeFiles,
    /// Stops long stages.
    pub cancel: &'a AtomicBool,
}

/// Where the gate makes its verification checkouts for a repository under `policy`.
pub fn scratch_root(repo: &RepoPaths, policy: &Policy) -> std::path::PathBuf {
    crate::paths::verify_root(&crate::paths::worktree_base(
        repo,
        policy.worktree_root.as_deref(),
    ))
}

impl<'a> Gate<'a> {
    /// The one place a gate is put together (for a run's attempts and landings, `verify` and the hooks alike).
    pub fn new(
        repo: &'a RepoPaths,
        policy: &'a Policy,
        rules: &'a RulePack,
        scratch_root: &'a Path,
        includes: &'a super::tree::TreeFiles,
        cancel: &'a AtomicBool,
    ) -> Gate<'a> {
        Gate {
            repo,
            policy,
            rules,
            scratch_root,
            includes,
            cancel,
        }
    }
}

impl Gate<'_> {
    /// Verifies one attempt, decides, and writes `verify.json` into its folder.
    pub fn check(
        &self,
        attempt: &AttemptRef<'_>,
        target_tip: &str,
    ) -> Result<(VerifyReport, Verdict), PipelineError> {
        self.check_reviewed(attempt, target_tip)
            .map(|(report, verdict, _)| (report, verdict))
    }

    /// [`Gate::check`], with how its review ended when the task has a reviewer and one ran (for the store).
    pub fn check_reviewed(
        &self,
        attempt: &AttemptRef<'_>,
        target_tip: &str,
    ) -> Result<(VerifyReport, Verdict, Option<ReviewRecord>), PipelineError> {
        let Gate {
            repo,
            policy,
            rules,
            scratch_root,
            includes,
            cancel,
        } = *self;
        let artifacts = AttemptDir::of(attempt.dir).artifacts(attempt.landing);
        std::fs::create_dir_all(&artifacts).map_err(|source| PipelineError::Io {
            context: format!("cannot create {}", artifacts.display()),
            source,
        })?;
        let agent = super::run_worker::read_agent(attempt.dir);
        let final_report = final_report(policy, attempt);
        let reviewer = self.reviewer(attempt, &artifacts);
        let judged = attempt.commit.map(|commit| commit.as_str());
        let review = match &reviewer {
            None => ReviewStep::None,
            Some(reviewer) => carried_review(attempt.dir, judged, attempt.landing)
                .unwrap_or(ReviewStep::Run(reviewer)),
        };
        let scratch: PathBuf = scratch_root.join(format!(
            "{}-{}-{}-{}",
            attempt.run_id,
            attempt.task.id,
            attempt.attempt,
            crate::util::random_hex(3)
        ));
        let input = VerifyInput {
            repo,
            policy,
            rules,
            subject: format!(
                "{}/{} attempt {}",
                attempt.run_id, attempt.task.id, attempt.attempt
            ),
            base: attempt.base,
            commit: attempt.commit.map(|commit| commit.as_str()),
            allowed: &attempt.task.allowed,
            denied: &attempt.task.denied,
            target_tip,
            logs: if attempt.landing {
                Vec::new()
            } else {
                vec![
                    AttemptDir::of(attempt.dir).log(),
                    AttemptDir::of(attempt.dir).events(),
                    AttemptDir::of(attempt.dir).final_report(),
                ]
            },
            history: None,
            inline_allow: false,
            artifacts: &artifacts,
            scratch,
            includes,
            env: attempt.env,
            final_report,
            cancel,
            worker_stage: Some(worker_stage(attempt.exit, attempt.tampered, agent.as_ref())),
            review,
        };
        let mut report = verify::verify(&input).map_err(|error| match error {
            verify::VerifyError::Git(git) => PipelineError::Git(git),
        })?;
        scrub_report(&mut report, rules);
        // A report of a gate cut short may rest on a stage that was stopped (a review, the tests): the report kept
        // from before stands.
        if !cancel.load(std::sync::atomic::Ordering::SeqCst) {
            let path = AttemptDir::verify_report(&artifacts);
            let json = serde_json::to_vec_pretty(&report).unwrap_or_default();
            std::fs::write(&path, json).map_err(|source| PipelineError::Io {
                context: format!("cannot write {}", path.display()),
                source,
            })?;
        }
        let budget = super::lifecycle::Budget::Attempt {
            attempt: attempt.in_budget,
            max_reworks: policy.max_reworks,
        };
        let verdict = decide(&report, policy, budget);
        let record = reviewer.and_then(|reviewer| reviewer.take_record());
        Ok((report, verdict, record))
    }

    /// The reviewer of `attempt`, when its task has one; its files go to `<artifacts>/review`.
    fn reviewer<'r>(
        &'r self,
        attempt: &'r AttemptRef<'r>,
        artifacts: &Path,
    ) -> Option<TaskReviewer<'r>> {
        attempt.task.review.as_ref().map(|spec| TaskReviewer {
            task: attempt.task,
            spec,
            run_id: attempt.run_id,
            attempt: attempt.attempt,
            base: attempt.base,
            repo: self.repo,
            policy: self.policy,
            rules: self.rules,
            dir: artifacts.join("review"),
            env: attempt.env,
            token: attempt.token,
            cancel: self.cancel,
            record: std::sync::Mutex::new(None),
        })
    }
}

/// The worker's final report when the completeness stage applies to `attempt` (`Some(None)`: it gave none).
fn final_report(policy: &Policy, attempt: &AttemptRef<'_>) -> Option<Option<String>> {
    match policy.gate.completeness {
        _ if attempt.landing => None,
        Completeness::Off => None,
        Completeness::Auto if attempt.task.worker.kind.agent().is_none() => None,
        Completeness::Auto | Completeness::On => Some(
            crate::util::read_regular(
                &AttemptDir::of(attempt.dir).final_report(),
                crate::util::MAX_WORKER_FILE,
            )
            .ok()
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
        ),
    }
}

/// The task state a verdict leads to, with a one-line reason.
pub fn verdict_state(verdict: &Verdict, report: &VerifyReport) -> (TaskState, String) {
    match verdict {
        Verdict::Accept => {
            let warnings = report.findings().filter(|f| !f.is_blocking()).count();
            let reason = if warnings == 0 {
                "the gate passed".to_string()
            } else {
                format!("the gate passed with {warnings} warning(s)")
            };
            (TaskState::Accepted, reason)
        }
        Verdict::Rework { findings } => {
            let first: Vec<String> = findings
                .iter()
                .take(3)
                .map(|f| {
                    format!(
                        "{} {}{}",
                        f.stage,
                        f.rule,
                        f.path
                            .as_deref()
                            .map(|p| format!(" {p}"))
                            .unwrap_or_default()
                    )
                })
                .collect();
            let more = if findings.len() > 3 {
                format!(" and {} more", findings.len() - 3)
            } else {
                String::new()
            };
            (TaskState::Rework, format!("{}{more}", first.join("; ")))
        }
        Verdict::Rollback {
            reasons,
            budget_spent: true,
        } => (TaskState::Blocked, reasons.join("; ")),
        Verdict::Rollback {
            reasons,
            budget_spent: false,
        } => (TaskState::RolledBack, reasons.join("; ")),
    }
}

/// One task re-verified by `ccfan verify`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TaskVerification {
    /// Task id.
    pub task_id: TaskId,
    /// The attempt checked.
    pub attempt: u32,
    /// The verdict.
    pub verdict: Verdict,
    /// The report.
    pub report: VerifyReport,
}

impl Gate<'_> {
    /// Re-runs the gate on the latest recorded attempt of each task of `run_id` (or only `only_task`), with the
    /// repository's current policy, records the verdicts and moves tasks whose state is a verdict.
    pub fn reverify(
        &self,
        store: &mut Store,
        run_id: &RunId,
        only_task: Option<&TaskId>,
    ) -> Result<Vec<TaskVerification>, PipelineError> {
        let repo = self.repo;
        let run = store.run(run_id)?;
        let tasks = store.tasks(run_id)?;
        if let Some(wanted) = only_task
            && !tasks.iter().any(|task| &task.id == wanted)
        {
            return Err(crate::store::StoreError::NoSuchTask {
                run: run_id.to_string(),
                task: wanted.to_string(),
            }
            .into());
        }
        let tip = target_tip(repo, run.target_branch.as_deref(), &run.base_sha)?;
        let resources = super::resources::Resources::new(
            tasks.iter().map(|task| task.id.clone()),
            self.policy.ports_per_task,
        );
        let mut results = Vec::new();
        for task in tasks
            .iter()
            .filter(|task| only_task.is_none_or(|wanted| *wanted == task.id))
        {
            let attempts = store.attempts(run_id, &task.id)?;
            let Some(latest) = attempts
                .iter()
                .rev()
                .find(|attempt| attempt.state == "recorded")
            else {
                continue;
            };
            // Judged by everything the task committed so far (a last attempt that changed nothing still carries
            // the earlier ones).
            let Some(head) = crate::store::task_head(&attempts, &run.base_sha) else {
                continue;
            };
            let judged = head.commit;
            let tampered = record::stored_tampering(&latest.dir);
            let env = resources.env_of(run_id, &task.id);
            let reference = AttemptRef {
                run_id,
                task: &task.spec,
                attempt: latest.n,
                base: &head.base,
                commit: judged.as_ref(),
                dir: &latest.dir,
                exit: latest.exit.as_ref(),
                tampered: &tampered,
                in_budget: (latest.n + 1).saturating_sub(task.budget_from).max(1),
                landing: false,
                env: &env,
                token: &latest.token,
            };
            let (report, verdict, review) = self.check_reviewed(&reference, &tip)?;
            if let Some(review) = review {
                store.add_review(
                    run_id,
                    &task.id,
                    latest.n,
                    &review.reviewer,
                    review.outcome,
                    review.agent.as_ref(),
                )?;
            }
            if self.cancel.load(std::sync::atomic::Ordering::SeqCst) {
                break; // cut short: keep the stored verdicts as they were
            }
            store.set_verdict(run_id, &task.id, latest.n, &verdict)?;
            if matches!(
                task.state,
                TaskState::Completed
                    | TaskState::Accepted
                    | TaskState::Rework
                    | TaskState::RolledBack
                    | TaskState::Blocked
            ) {
                let (state, reason) = verdict_state(&verdict, &report);
                store.set_task_state(
                    run_id,
                    &task.id,
                    state,
                    Some(&format!("re-verified: {reason}")),
                )?;
            }
            results.push(TaskVerification {
                task_id: task.id.clone(),
                attempt: latest.n,
                verdict,
                report,
            });
        }
        Ok(results)
    }
}
