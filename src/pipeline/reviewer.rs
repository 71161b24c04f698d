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

    fn brief(&self, request: &ReviewRequest<'_>) -> ReviewBrief {
        let shown = crate::agents::prompt::ReviewShown {
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
            answer_format: ANSWER_FORMAT,
        }
    }

    /// What the reviewer answered: its report file, else its agent's last message, else (a command) its output.
    fn answer(&self, files: AttemptDir<'_>) -> Option<String> {
        let read = |path: &Path| {
            crate::util::read_regular(path, MAX_ANSWER)
                .ok()
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .filter(|text| !text.trim().is_empty())
        };
        read(&files.final_report()).or_else(|| match self.spec.profile.kind.agent() {
            Some(_) => None,
            None => read(&files.log()),
        })
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
        let token = format!(
            "{}-{}-{}-review-{}",
            self.run_id,
            self.task.id,
            self.attempt,
            crate::util::random_hex(4)
        );
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
        self.answer(files)
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
