//! The dashboard's actions — rework with a note, retry, accept with a reason, rollback, cancel, merge — as the
//! same operations MCP runs: long ones handed to their own ccfan process (so they outlive the page and the
//! request), cancel asked of the process carrying the run. Each needs this start's session secret in a header
//! (which no other site or port can know or make a browser send), this server's host and, when the browser says
//! where the request came from, this origin; the page asks before anything destructive.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{App, Refused};
use crate::mcp::Failure;
use crate::mcp::ops::{self, FollowUp};
use crate::model::{RunId, TaskId};
use crate::pipeline::job::JobRequest;

/// What the page asks for.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Action {
    /// rework, retry, accept, rollback, cancel, merge, approve or reject.
    action: String,
    /// The task (rework, retry and accept need one; rollback and cancel act on the whole run without).
    task: Option<String>,
    /// The note a rework sends the worker.
    note: Option<String>,
    /// Why a task is accepted over the gate.
    reason: Option<String>,
    /// The SHA-256 of the plan the person approves (the one the page showed).
    plan: Option<String>,
}

/// A write is allowed only from this dashboard's own page: own host, signed in (the secret travels in a header
/// no cross-site form can set), and same origin whenever the browser says where the request came from.
fn guard_write(app: &App, headers: &HeaderMap) -> Result<(), Refused> {
    app.guard(headers)?;
    let origin_ok = headers
        .get(header::ORIGIN)
        .and_then(|value| value.to_str().ok())
        .is_none_or(|origin| {
            origin == format!("http://127.0.0.1:{}", app.port)
                || origin == format!("http://localhost:{}", app.port)
        });
    let site_ok = headers
        .get("sec-fetch-site")
        .and_then(|value| value.to_str().ok())
        .is_none_or(|site| site == "same-origin");
    if origin_ok && site_ok {
        Ok(())
    } else {
        Err(Refused::CrossSite)
    }
}

/// The request `action` stands for, or what is missing.
fn request(run_id: RunId, action: &Action) -> Result<Option<JobRequest>, String> {
    let task = action
        .task
        .as_deref()
        .map(TaskId::parse)
        .transpose()
        .map_err(|error| format!("task: {error}"))?;
    let needs_task = |task: Option<TaskId>| {
        task.ok_or_else(|| format!("{}: name the task it acts on", action.action))
    };
    let text = |value: &Option<String>, field: &str| {
        value
            .as_deref()
            .map(str::trim)
            .filter(|text| !text.is_empty())
            .map(str::to_string)
            .ok_or_else(|| format!("{}: {field} is required", action.action))
    };
    Ok(Some(match action.action.as_str() {
        "rework" => JobRequest::Rework {
            run_id,
            task_id: needs_task(task)?,
            note: text(&action.note, "a note for the worker")?,
        },
        "retry" => JobRequest::Retry {
            run_id,
            task_id: needs_task(task)?,
        },
        "accept" => JobRequest::Accept {
            run_id,
            task_id: needs_task(task)?,
            reason: text(&action.reason, "a reason")?,
        },
        "rollback" => JobRequest::Rollback {
            run_id,
            task_id: task,
        },
        "merge" => JobRequest::Merge { run_id, into: None },
        "approve" => JobRequest::Approve {
            run_id,
            task_id: Some(needs_task(task)?),
            note: action.note.clone().filter(|note| !note.trim().is_empty()),
            plan: Some(text(&action.plan, "the plan's SHA-256 (as shown)")?),
            by: None,
        },
        "reject" => JobRequest::Reject {
            run_id,
            task_id: Some(needs_task(task)?),
            note: action.note.clone().filter(|note| !note.trim().is_empty()),
            by: None,
        },
        "cancel" => return Ok(None),
        other => {
            return Err(format!(
                "unknown action `{other}`: use rework, retry, accept, rollback, cancel, merge, approve or reject"
            ));
        }
    }))
}

fn failed(status: StatusCode, message: String) -> Response {
    (
        status,
        Json(serde_json::json!({ "ok": false, "error": message })),
    )
        .into_response()
}

/// `POST /api/runs/{run}/actions`.
pub(super) async fn act(
    State(app): State<Arc<App>>,
    Path(run): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(refused) = guard_write(&app, &headers) {
        return refused.into_response();
    }
    let action: Action = match serde_json::from_slice(&body) {
        Ok(action) => action,
        Err(error) => {
            return failed(
                StatusCode::BAD_REQUEST,
                format!("the request is not an action: {error}"),
            );
        }
    };
    let run_id = match RunId::parse(run) {
        Ok(run_id) => run_id,
        Err(error) => return failed(StatusCode::BAD_REQUEST, format!("run: {error}")),
    };
    let request = match request(run_id.clone(), &action) {
        Ok(request) => request,
        Err(message) => return failed(StatusCode::BAD_REQUEST, message),
    };
    // In a task of its own: a page that goes away mid-request leaves the handed-off process watched and reaped.
    let shared = app.shared.clone();
    let task = action.task.as_deref().and_then(|id| TaskId::parse(id).ok());
    let done = tokio::spawn(async move {
        let never = tokio_util::sync::CancellationToken::new();
        match request {
            Some(request) => {
                let follow = FollowUp {
                    request,
                    wait_seconds: 0,
                };
                ops::follow_up(&shared, follow, &never).await
            }
            None => ops::cancel(&shared, run_id, task, 0).await,
        }
    })
    .await;
    match done {
        Ok(Ok(result)) => Json(serde_json::json!({ "ok": true, "result": result })).into_response(),
        Ok(Err(Failure::Tool(error))) => {
            failed(StatusCode::CONFLICT, app.rules.redact_text(&error.message))
        }
        Ok(Err(Failure::Invalid(error))) => {
            failed(StatusCode::BAD_REQUEST, error.message.to_string())
        }
        Err(_) => failed(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the action stopped unexpectedly".to_string(),
        ),
    }
}
