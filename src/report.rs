//! Plain data of the gate: findings, stage reports, the `VerifyReport` written beside each attempt, and the
//! `Verdict` that `decide` returns. Serialised as the versioned JSON of `ccfan verify --json`; never holds a raw
//! secret (secret findings carry only a redacted value and a fingerprint).

use serde::{Deserialize, Serialize};

use crate::git::FileChange;

/// Version of the `verify --json` document and of `verify.json`.
pub const REPORT_SCHEMA_VERSION: u32 = 1;

/// A stage of the gate, cheap to expensive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// How the worker ended (not configurable: an attempt whose worker failed is never accepted).
    Worker,
    /// Diff summary and risk.
    Diff,
    /// Allowed/denied paths.
    Scope,
    /// Secret scan of added lines and the worker's output.
    Secrets,
    /// The test command on the merge-preview tree.
    Tests,
    /// The worker's final report against what really changed.
    Completeness,
    /// Custom `[[checks]]` commands.
    Checks,
    /// A reviewer's verdict on the change (not configurable: it runs last, when the task has a reviewer and the
    /// stages before it passed).
    Review,
}

impl Stage {
    /// Every stage in default order.
    pub const ALL: [Stage; 6] = [
        Stage::Diff,
        Stage::Scope,
        Stage::Secrets,
        Stage::Tests,
        Stage::Completeness,
        Stage::Checks,
    ];

    /// The name used in policies and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Worker => "worker",
            Stage::Diff => "diff",
            Stage::Scope => "scope",
            Stage::Secrets => "secrets",
            Stage::Tests => "tests",
            Stage::Completeness => "completeness",
            Stage::Checks => "checks",
            Stage::Review => "review",
        }
    }

    /// Parses a stage name.
    pub fn parse(name: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|stage| stage.as_str() == name)
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a stage ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StageStatus {
    /// Nothing blocking found.
    Pass,
    /// Blocking findings.
    Fail,
    /// Not run (not configured, not applicable, or after a fail-fast stop).
    Skipped,
    /// ccfan could not run the stage.
    Error,
}

/// How much a finding matters.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// For information.
    Info,
    /// Worth a look; does not block.
    Warning,
    /// Blocks acceptance.
    Error,
}

/// One thing the gate found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Finding {
    /// The stage that found it.
    pub stage: Stage,
    /// A stable rule id (`out-of-scope`, `aws-access-key-id`, `tests-failed`, …).
    pub rule: String,
    /// The file, when there is one.
    pub path: Option<String>,
    /// The 1-based line, when there is one.
    pub line: Option<usize>,
    /// What is wrong (redacted; safe to show anywhere).
    pub message: String,
    /// How much it matters.
    pub level: Level,
    /// A secret's fingerprint (secret findings only).
    pub fingerprint: Option<String>,
}

impl Finding {
    /// A blocking finding.
    pub fn error(stage: Stage, rule: &str, message: impl Into<String>) -> Finding {
        Finding {
            stage,
            rule: rule.to_string(),
            path: None,
            line: None,
            message: message.into(),
            level: Level::Error,
            fingerprint: None,
        }
    }

    /// A warning.
    pub fn warning(stage: Stage, rule: &str, message: impl Into<String>) -> Finding {
        Finding {
            level: Level::Warning,
            ..Finding::error(stage, rule, message)
        }
    }

    /// Sets the path.
    pub fn at(mut self, path: &str, line: Option<usize>) -> Finding {
        self.path = Some(path.to_string());
        self.line = line;
        self
    }

    /// Whether it blocks acceptance.
    pub fn is_blocking(&self) -> bool {
        self.level == Level::Error
    }
}

/// One stage's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StageReport {
    /// The stage.
    pub stage: Stage,
    /// How it ended.
    pub status: StageStatus,
    /// What it found.
    pub findings: Vec<Finding>,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// A remark (why skipped, what errored, the test output tail, …), redacted.
    pub note: Option<String>,
}

/// One changed file with what makes it risky.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FileSummary {
    /// The change.
    #[serde(flatten)]
    pub change: FileChange,
    /// Where a symlink points (new side).
    pub symlink_target: Option<String>,
    /// Why this file adds risk.
    pub risk: Vec<String>,
}

/// The diff stage's summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DiffSummary {
    /// Changed files.
    pub files: Vec<FileSummary>,
    /// Number of changed files.
    pub files_changed: usize,
    /// Lines added.
    pub lines_added: usize,
    /// Lines removed.
    pub lines_removed: usize,
    /// Risk score, 0-100.
    pub risk_score: u32,
    /// Why the score is what it is.
    pub risk_reasons: Vec<String>,
}

/// What the gate concluded. A value, not an error: Rework and Rollback are normal outcomes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Nothing blocks: the attempt may land.
    Accept,
    /// Send these findings back to the worker for another attempt.
    Rework {
        /// The findings to fix.
        findings: Vec<Finding>,
    },
    /// Do not land and do not retry automatically; the attempt stays on its salvage ref.
    Rollback {
        /// Why.
        reasons: Vec<String>,
        /// The findings were reworkable but the rework budget is spent: the task is blocked (a person decides)
        /// rather than rolled back.
        #[serde(default)]
        budget_spent: bool,
    },
}

impl Verdict {
    /// `accept`, `rework` or `rollback`.
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Accept => "accept",
            Verdict::Rework { .. } => "rework",
            Verdict::Rollback { .. } => "rollback",
        }
    }
}

/// The gate's report on one attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct VerifyReport {
    /// Schema version.
    pub schema: u32,
    /// What was checked: `<run>/<task>` attempt n, or a git range for hooks.
    pub subject: String,
    /// The recorded base commit the diff is taken against.
    pub base: String,
    /// The attempt commit (`None`: an empty attempt).
    pub commit: Option<String>,
    /// The merge-preview commit the tests ran on, when they ran.
    pub preview: Option<String>,
    /// The diff summary.
    pub diff: DiffSummary,
    /// Every stage, in the order run.
    pub stages: Vec<StageReport>,
}

impl VerifyReport {
    /// Every finding of every stage.
    pub fn findings(&self) -> impl Iterator<Item = &Finding> {
        self.stages.iter().flat_map(|stage| stage.findings.iter())
    }
}
