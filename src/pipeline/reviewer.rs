//! Stage 4g's worker: runs a task's reviewer (its `review` profile — Codex, Claude Code or a command) through the
//! same door as any worker (stage 3), on the merge-preview tree made read-only, with a prompt and task file of its
//! own. Its answer goes back to the review stage to be validated; its usage is kept for the task's cost.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;

use super::run_worker::{self, AttemptContext};
use super::verify::review::{ReviewRequest, Reviewer};
use crate::agents::tally::AgentSummary;
use crate::git::RepoPaths;
use crate::model::review::{ANSWER_FORMAT, ReviewMode, ReviewOutcome, ReviewSpec};
use crate::model::{AttemptMode, CommitId, ExitStatus, ReviewBrief, RunId, TaskSpec};
use crate::paths::AttemptDir;
use crate::policy::Policy;
use crate::secrets::RulePack;

/// The process token a reviewer of the attempt with process token `token` runs under (recovery kills both).
pub fn review_token(token: &str) -> String {
    format!("{token}-review")
}

/// The most of a reviewer's answer read.
const MAX_ANSWER: u64 = 256 * 1024;

/// How a review ended, for the store: the reviewer, the outcome and its agent's usage.
#[derive(Debug, Clone)]
pub struct ReviewRecord {
    /// The reviewer's worker profile.
    pub reviewer: String,
    /// How it ended.
    pub outcome: ReviewOutcome,
    /// Its agent's summary (agent reviewers that started).
    pub agent: Option<AgentSummary>,
}

/// The reviewer of one attempt of a task.
pub struct TaskReviewer<'a> {
    /// The task under review.
    pub task: &'a TaskSpec,
    /// Who reviews it.
    pub spec: &'a ReviewSpec,
    /// Its run.
    pub run_id: &'a RunId,
    /// The attempt under review.
    pub attempt: u32,
    /// The attempt's base.
    pub base: &'a CommitId,
    /// The repository.
    pub repo: &'a RepoPaths,
    /// The policy (sandbox settings).
    pub policy: &'a Policy,
    /// Redacts what the reviewer printed.
    pub rules: &'a RulePack,
    /// Where the review's files go (`<attempt>/review`).
    pub dir: PathBuf,
    /// The task's resources (its ports), for a reviewer that runs the code.
    pub env: &'a [(String, String)],
    /// The attempt's process token (the reviewer runs as `<token>-review`).
    pub token: &'a str,
    /// Stops the reviewer.
    pub cancel: &'a AtomicBool,
    /// Filled as the review ends.
    pub record: Mutex<Option<ReviewRecord>>,
}

impl std::fmt::Debug for TaskReviewer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TaskReviewer({} for {})",
            self.spec.profile.name, self.task.id
        )
    }
}

impl TaskReviewer<'_> {
    /// How the review ended, once it did.
    pub fn take_record(&self) -> Option<ReviewRecord> {
        self.record.lock().ok().and_then(|mut record| record.take())
    }

    /// What the review of the previous attempt said (its findings), when there was one: the reviewer checks that
    /// its comments were addressed instead of starting over.
    fn earlier(&self) -> Vec<crate::report::Finding> {
        let attempt_dir = self.dir.parent();
        let previous = attempt_dir
            .and_then(Path::parent)
            .filter(|_| self.attempt > 1)
            .map(|task_dir| task_dir.join(format!("attempt-{}", self.attempt - 1)));
        let Some(previous) = previous else {
            return Vec::new();
        };
        let path = AttemptDir::verify_report(&AttemptDir::of(&previous).artifacts(false));
        crate::util::read_regular(&path, crate::util::MAX_WORKER_FILE)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<crate::report::VerifyReport>(&bytes).ok())
            .map(|report| {
                report
                    .findings()
                    .filter(|f| f.stage == crate::report::Stage::Review)
                    .filter(|f| f.rule == "review-comment" || f.rule == "changes-requested")
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    fn brief(&self, request: &ReviewRequest<'_>) -> ReviewBrief {
        let earlier = self.earlier();
        let shown = crate::agents::prompt::ReviewShown {
            earlier: &earlier,
            diff_file: request.diff_file,
            diff: request.diff_excerpt,
            whole: request.diff_whole,
            changed: request.changed,
            findings: request.findings,
            answer_format: ANSWER_FORMAT,
        };
        ReviewBrief {
            prompt: crate::agents::prompt::review(self.task, &shown),
            diff_file: request.diff_file.to_path_buf(),
            changed: request.changed.to_vec(),
            findings: request.findings.to_vec(),
            earlier,
            answer_format: ANSWER_FORMAT,
        }
    }

    /// What the reviewer answered. An agent: only its last message, as ccfan read it from its stream (a file in its
    /// outbox could be written by anything the reviewed tree makes it run). A command: its report file, else the
    /// end of its output (where a verdict printed last is).
    fn answer(&self, files: AttemptDir<'_>, agent: Option<&AgentSummary>) -> Option<String> {
        let text = match self.spec.profile.kind.agent() {
            Some(_) => agent.and_then(|agent| agent.final_message.clone()),
            None => crate::util::read_regular(&files.report_file(), MAX_ANSWER)
                .or_else(|_| crate::util::read_regular_tail(&files.log(), MAX_ANSWER))
                .ok()
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
        };
        text.filter(|text| !text.trim().is_empty())
    }
}

impl Reviewer for TaskReviewer<'_> {
    fn name(&self) -> &str {
        &self.spec.profile.name
    }

    fn mode(&self) -> ReviewMode {
        self.spec.mode
    }

    fn dir(&self) -> &Path {
        &self.dir
    }

    fn review(&self, request: &ReviewRequest<'_>) -> Result<String, String> {
        let brief = self.brief(request);
        // The task as its reviewer runs it: the reviewer's profile and time limit, the author's goal and scope.
        let task = TaskSpec {
            worker: self.spec.profile.clone(),
            timeout: self.spec.timeout,
            ..self.task.clone()
        };
        let token = review_token(self.token);
        let agent_home = self.dir.join("agent-home");
        let context = AttemptContext {
            run_id: self.run_id,
            attempt: self.attempt,
            base_sha: self.base,
            worktree: request.tree,
            dir: &self.dir,
            resources: self.env,
            common_dir: &self.repo.common_dir,
            checkout: &self.repo.workdir,
            token: &token,
            rework: &[],
            resume: None,
            agent_home: &agent_home,
            rules: self.rules,
            baseline: crate::agents::Usage::default(),
            handoffs: &[],
            plan: AttemptMode::Review(&brief),
        };
        let ran = run_worker::run_worker(
            &task,
            self.policy,
            &context,
            self.cancel,
            |_| {},
            &mut |_| {},
        )
        .map_err(|error| format!("the reviewer could not run: {error}"));
        let files = AttemptDir::of(&self.dir);
        // What the reviewer printed is scrubbed like any worker's output before it is read or kept.
        super::verify::secrets::scrub_log(self.rules, &files.log(), &[]);
        let ran = ran?;
        if let Ok(mut record) = self.record.lock() {
            *record = Some(ReviewRecord {
                reviewer: self.spec.profile.name.clone(),
                outcome: ReviewOutcome::Failed,
                agent: ran.agent.clone(),
            });
        }
        if ran.outcome.exit != (ExitStatus::Code { code: 0 }) {
            let (_, reason) = crate::model::outcome_state(&ran.outcome.exit, task.timeout);
            return Err(format!(
                "the reviewer did not finish: {} (its log: {})",
                reason.unwrap_or_else(|| ran.outcome.exit.to_string()),
                files.log().display()
            ));
        }
        if let Some(problem) = ran.agent.as_ref().and_then(|agent| {
            agent
                .problems(&ran.outcome.exit)
                .into_iter()
                .find(|p| p.blocking)
        }) {
            return Err(format!("the reviewer did not finish: {}", problem.message));
        }
        self.answer(files, ran.agent.as_ref())
            .map(|text| self.rules.redact_text(&text))
            .ok_or_else(|| {
                "the reviewer wrote no answer (to $CCFAN_REPORT_FILE, or as its last message)"
                    .to_string()
            })
    }

    fn ended(&self, outcome: ReviewOutcome) {
        if let Ok(mut record) = self.record.lock() {
            let agent = record.take().and_then(|record| record.agent);
            *record = Some(ReviewRecord {
                reviewer: self.spec.profile.name.clone(),
                outcome,
                agent,
            });
        }
    }
}
