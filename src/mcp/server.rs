//! The MCP tool list: each tool is a thin call into `ops`, `status`, `evidence` or the library, with a
//! description written for the model that calls it. The handler holds only an `Arc` of the shared state, so
//! Streamable HTTP can build one per request.

use crate::pipeline::job::JobRequest;
use std::sync::Arc;

use rmcp::service::RequestContext;
use rmcp::{Json, RoleServer, tool, tool_handler, tool_router};

use super::Repos;
use super::errors::{ErrorCode, Failure, Parameters};
use super::types::*;
use super::{evidence, ops, status};

/// The ccfan MCP server.
#[derive(Clone)]
pub struct CcfanServer {
    repos: Arc<Repos>,
}

impl CcfanServer {
    /// A handler over the repositories a server serves.
    pub fn new(repos: Arc<Repos>) -> Self {
        CcfanServer { repos }
    }
}

fn seconds(value: Option<u32>, default: u32) -> u32 {
    value.unwrap_or(default).min(status::MAX_WAIT_SECS)
}

#[tool_router]
impl CcfanServer {
    #[tool(
        description = "Delegate coding tasks to run in parallel, each in its own git worktree from one base commit with a \
        sandboxed worker; the gate checks scope, secrets and tests and decides accept, rework (findings sent back, \
        capped) or rollback (kept on a salvage ref). Returns run_id and task ids at once; poll with status. Tasks \
        stop at `accepted` unless merge is true; `after` waits for other tasks to land; `candidates` runs best-of-N. \
        client_request_id makes a retry safe; an identical active task is not rerun (duplicates).",
        annotations(
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = true
        )
    )]
    async fn delegate(
        &self,
        Parameters(params): Parameters<DelegateParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<DelegateResult>, Failure> {
        let shared = self.repos.at(params.repo.as_deref())?;
        ops::delegate(&shared, params, &context).await.map(Json)
    }

    #[tool(
        description = "Wait for a run and see its tasks, compact: state, verdict, attempt, elapsed seconds, last event. With \
        wait_seconds (up to 300) it waits for a change or the end, sending progress; `done` is true once nothing is \
        in flight. detail adds the full view (or a task's history).",
        annotations(read_only_hint = true)
    )]
    async fn status(
        &self,
        Parameters(params): Parameters<StatusParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<StatusResult>, Failure> {
        let shared = self.repos.at(params.repo.as_deref())?;
        status::status(&shared, &params, &context).await.map(Json)
    }

    #[tool(
        description = "Verify a run: the gate's evidence per task (verdict, findings with secrets redacted, stage outcomes, \
        diff summary with risk); a summary per task unless detail, at most 24 KiB. Stored reports; rerun runs the \
        gate again with the current policy.",
        annotations(read_only_hint = true)
    )]
    async fn verify(
        &self,
        Parameters(params): Parameters<VerifyParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<VerifyResult>, Failure> {
        let shared = self.repos.at(params.repo.as_deref())?;
        evidence::verify(&shared, params, &context.ct)
            .await
            .map(Json)
    }

    #[tool(
        description = "What a task's attempt changed: files with line counts and the unified patch (secrets \
        redacted, cut at max_bytes).",
        annotations(read_only_hint = true)
    )]
    async fn diff(
        &self,
        Parameters(params): Parameters<DiffParams>,
    ) -> Result<Json<DiffResult>, Failure> {
        let shared = self.repos.at(params.repo.as_deref())?;
        evidence::diff(&shared, params).await.map(Json)
    }

    #[tool(
        description = "Scan repository files or folders (or the lines added by a git range) for secrets. Hits are \
        shown redacted with a fingerprint, never in full.",
        annotations(read_only_hint = true)
    )]
    async fn scan(
        &self,
        Parameters(params): Parameters<ScanParams>,
    ) -> Result<Json<ScanResult>, Failure> {
        let shared = self.repos.at(params.repo.as_deref())?;
        evidence::scan(&shared, params).await.map(Json)
    }

    #[tool(
        description = "Preflight a scope before delegating: which of these paths a task with these allowed/denied \
        globs (or a stored task's) may change, and the gate's reason for each it may not.",
        annotations(read_only_hint = true)
    )]
    async fn check_scope(
        &self,
        Parameters(params): Parameters<CheckScopeParams>,
    ) -> Result<Json<CheckScopeResult>, Failure> {
        let shared = self.repos.at(params.repo.as_deref())?;
        evidence::check_scope(&shared, params).map(Json)
    }

    #[tool(
        description = "Another attempt of a finished task, with your note as a finding (the worker resumes its \
        session when it can). Answers once the attempt started; wait_seconds waits for it to finish.",
        annotations(destructive_hint = false)
    )]
    async fn rework(
        &self,
        Parameters(params): Parameters<ReworkParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<OperationResult>, Failure> {
        let shared = self.repos.at(params.repo.as_deref())?;
        if params.note.trim().is_empty() {
            return Err(Failure::invalid(
                "note",
                "the rework note is empty",
                "say what the worker should do differently",
            ));
        }
        let request = ops::FollowUp {
            request: JobRequest::Rework {
                run_id: params.run_id,
                task_id: params.task_id,
                note: params.note,
            },
            wait_seconds: params.wait_seconds,
        };
        ops::follow_up(&shared, request, &context.ct)
            .await
            .map(Json)
    }

    #[tool(
        description = "Accept a task over the gate's verdict (recorded with the reason), then land it unless the run \
        stops at accepted. The landing still checks the merged tree.",
        annotations(destructive_hint = true)
    )]
    async fn accept(
        &self,
        Parameters(params): Parameters<AcceptParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<OperationResult>, Failure> {
        let shared = self.repos.at(params.repo.as_deref())?;
        if params.reason.trim().is_empty() {
            return Err(Failure::invalid(
                "reason",
                "the reason is empty",
                "say why the gate's verdict is overridden",
            ));
        }
        let request = ops::FollowUp {
            request: JobRequest::Accept {
                run_id: params.run_id,
                task_id: params.task_id,
                reason: params.reason,
            },
            wait_seconds: params.wait_seconds,
        };
        ops::follow_up(&shared, request, &context.ct)
            .await
            .map(Json)
    }

    #[tool(
        description = "Plan mode (delegate with plan: true): approve a planned task's plan (or every one of the run), \
        recorded with your note, and run it; reject: true ends it instead. Read plans with status task_id + detail.",
        annotations(destructive_hint = true)
    )]
    async fn approve(
        &self,
        Parameters(params): Parameters<ApproveParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<OperationResult>, Failure> {
        let shared = self.repos.at(params.repo.as_deref())?;
        let client = context.peer.peer_info().map_or_else(
            || "an MCP client".to_string(),
            |info| info.client_info.name.clone(),
        );
        // The client decided: it is named as the approver, with the person it runs for.
        let by = Some(format!(
            "MCP client {client} (for {})",
            crate::git::user_identity(&shared.repo)
        ));
        let (run_id, task_id, note) = (params.run_id, params.task_id, params.note);
        let request = ops::FollowUp {
            request: match params.reject {
                false => JobRequest::Approve {
                    run_id,
                    task_id,
                    note,
                    plan: params.plan_sha256,
                    by,
                },
                true => JobRequest::Reject {
                    run_id,
                    task_id,
                    note,
                    by,
                },
            },
            wait_seconds: params.wait_seconds,
        };
        ops::follow_up(&shared, request, &context.ct)
            .await
            .map(Json)
    }

    #[tool(
        description = "Roll a task (or every task of a run) back: not merged, or reverted by a new commit if merged. \
        Every attempt stays on its salvage ref; nothing is lost.",
        annotations(destructive_hint = true)
    )]
    async fn rollback(
        &self,
        Parameters(params): Parameters<TargetParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<OperationResult>, Failure> {
        let shared = self.repos.at(params.repo.as_deref())?;
        let request = ops::FollowUp {
            request: JobRequest::Rollback {
                run_id: params.run_id,
                task_id: params.task_id,
            },
            wait_seconds: seconds(params.wait_seconds, 30),
        };
        ops::follow_up(&shared, request, &context.ct)
            .await
            .map(Json)
    }

    #[tool(
        description = "Another attempt of a blocked, failed, timed-out, interrupted, cancelled or over-budget task, \
        with a fresh rework budget and its last findings.",
        annotations(destructive_hint = false)
    )]
    async fn retry(
        &self,
        Parameters(params): Parameters<TaskParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<OperationResult>, Failure> {
        let shared = self.repos.at(params.repo.as_deref())?;
        let request = ops::FollowUp {
            request: JobRequest::Retry {
                run_id: params.run_id,
                task_id: params.task_id,
            },
            wait_seconds: params.wait_seconds,
        };
        ops::follow_up(&shared, request, &context.ct)
            .await
            .map(Json)
    }

    #[tool(
        description = "Stop a run's (or one task's) workers, whole process trees: they end `cancelled`, partial work \
        salvaged. Waits up to wait_seconds (default 30).",
        annotations(destructive_hint = true)
    )]
    async fn cancel(
        &self,
        Parameters(params): Parameters<TargetParams>,
    ) -> Result<Json<OperationResult>, Failure> {
        let shared = self.repos.at(params.repo.as_deref())?;
        let wait = seconds(params.wait_seconds, 30);
        ops::cancel(&shared, params.run_id, params.task_id, wait)
            .await
            .map(Json)
    }

    #[tool(
        description = "Merge a run: land its accepted tasks on the target branch, in task order; each is checked again on the \
        tree that will really land. Waits up to wait_seconds (default 60).",
        annotations(destructive_hint = false)
    )]
    async fn merge(
        &self,
        Parameters(params): Parameters<MergeParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<OperationResult>, Failure> {
        let shared = self.repos.at(params.repo.as_deref())?;
        let request = ops::FollowUp {
            request: JobRequest::Merge {
                run_id: params.run_id,
                into: params.into,
            },
            wait_seconds: seconds(params.wait_seconds, 60),
        };
        ops::follow_up(&shared, request, &context.ct)
            .await
            .map(Json)
    }

    #[tool(
        description = "The repository's runs, newest first, with task counts per state.",
        annotations(read_only_hint = true)
    )]
    async fn list_runs(
        &self,
        Parameters(params): Parameters<ListRunsParams>,
    ) -> Result<Json<ListRunsResult>, Failure> {
        let shared = self.repos.at(params.repo.as_deref())?;
        let limit = params.limit.unwrap_or(20).max(1);
        shared
            .with_store(|store| status::list_runs(store, limit))
            .map(Json)
    }

    #[tool(
        description = "ccfan's version, the repository, the sandbox backend workers run under, and which worker kinds \
        (command, codex, claude) can run here.",
        annotations(read_only_hint = true)
    )]
    async fn health(
        &self,
        Parameters(params): Parameters<RepoParams>,
    ) -> Result<Json<HealthResult>, Failure> {
        let shared = self.repos.at(params.repo.as_deref())?;
        super::health(&shared).await.map(Json)
    }

    #[tool(
        description = "Remove finished runs' worktrees and branches after keeping every attempt on salvage refs. \
        dry_run says what would go.",
        annotations(destructive_hint = true)
    )]
    async fn gc(
        &self,
        Parameters(params): Parameters<GcParams>,
    ) -> Result<Json<GcResult>, Failure> {
        let shared = self.repos.at(params.repo.as_deref())?;
        let repo = shared.repo.clone();
        tokio::task::spawn_blocking(move || -> Result<GcResult, Failure> {
            let (mut store, _) = crate::pipeline::open_state(&repo)?;
            let root = crate::pipeline::load_policy(&repo, None)
                .ok()
                .and_then(|policy| policy.worktree_root);
            let verify_root =
                crate::paths::verify_root(&crate::paths::worktree_base(&repo, root.as_deref()));
            let report = crate::pipeline::gc::gc(
                &repo,
                &mut store,
                &params.runs,
                params.dry_run,
                Some(&verify_root),
            )?;
            const LISTED: usize = 200;
            let (removed, skipped) = (report.removed.len(), report.skipped.len());
            let mut report = report;
            report.removed.truncate(LISTED);
            report.skipped.truncate(LISTED);
            Ok(GcResult {
                report: serde_json::to_value(&report).unwrap_or_default(),
                note: (removed > LISTED || skipped > LISTED).then(|| {
                    format!(
                        "{removed} removed and {skipped} skipped in all; the lists stop at {LISTED} (`ccfan gc --json` in a shell lists all)"
                    )
                }),
            })
        })
        .await
        .map_err(|error| Failure::tool(ErrorCode::Internal, error.to_string()))?
        .map(Json)
    }
}

/// The tools as listed to a client: full input schemas, and each output schema cut to its top level (property names
/// and types). What a result holds is said in the tool's description; the whole list stays small enough for a
/// client's tool search (`tools/list` under 20 KB) instead of spending ~50 KB of a model's context on nested types.
fn listed() -> rmcp::handler::server::router::tool::ToolRouter<CcfanServer> {
    let mut router = CcfanServer::tool_router();
    for route in router.map.values_mut() {
        if let Some(schema) = &route.attr.output_schema {
            route.attr.output_schema = Some(Arc::new(top_level(schema)));
        }
    }
    router
}

/// An object schema's top level: each property with its type when it has a plain one, and what is required.
fn top_level(schema: &rmcp::model::JsonObject) -> rmcp::model::JsonObject {
    let mut out = rmcp::model::JsonObject::new();
    out.insert("type".to_string(), serde_json::json!("object"));
    if let Some(serde_json::Value::Object(properties)) = schema.get("properties") {
        let shown: serde_json::Map<String, serde_json::Value> = properties
            .iter()
            .map(|(name, property)| {
                let kind = property.get("type").cloned();
                let shape = kind.map_or_else(
                    || serde_json::json!({}),
                    |kind| serde_json::json!({ "type": kind }),
                );
                (name.clone(), shape)
            })
            .collect();
        out.insert("properties".to_string(), serde_json::Value::Object(shown));
    }
    if let Some(required) = schema.get("required") {
        out.insert("required".to_string(), required.clone());
    }
    out
}

#[tool_handler(
    name = "ccfan",
    router = listed(),
    instructions = "ccfan: delegate coding tasks to parallel workers (Codex, Claude Code, commands), each in its own git worktree, sandboxed; a gate checks scope, secrets and tests before it lands. Loop: delegate, then status (wait_seconds) until done, then verify/diff, then merge (or rework, retry, accept, rollback). A rework or rollback verdict is a normal result, not an error; tool errors carry {code, message, retryable, details}. Every tool takes an optional repo (a path in the repository; default: where the server started)."
)]
impl rmcp::ServerHandler for CcfanServer {}
