//! Plan mode's evidence: the plan a task's worker wrote without changing anything, and who approved it, when and
//! with which note — kept with the task, so what ran is always traceable to the plan a person read.

use serde::{Deserialize, Serialize};

/// A person's approval of a task's plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Approval {
    /// Who approved (git's `user.name <user.email>`, else the login name; an MCP client says which).
    pub by: String,
    /// When (RFC 3339, UTC).
    pub at: String,
    /// The planning attempt whose plan was approved.
    pub plan_attempt: u32,
    /// SHA-256 of the approved plan's text, as stored.
    pub plan_sha256: String,
    /// The approver's note, handed to the worker with the plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A task's plan, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanView {
    /// The planning attempt that wrote it.
    pub attempt: u32,
    /// The stored plan (secrets redacted).
    pub path: std::path::PathBuf,
    /// SHA-256 of its text.
    pub sha256: String,
    /// Set once a person approved it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
}
