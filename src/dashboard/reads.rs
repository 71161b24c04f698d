//! The dashboard's reads: the page shell and its assets (no data in them), every run's panel as JSON, the live
//! feed as server-sent events (ended when the server stops, so Ctrl-C never waits on an open page), one task's
//! detail as an HTML fragment rendered by the report's code, and the scorecard.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use futures_util::StreamExt as _;
use serde::Deserialize;
use tokio_stream::wrappers::BroadcastStream;

use super::{App, Refused, refuse};
use crate::model::{RunId, TaskId};
use crate::store::StoreError;

pub(super) const PAGE: &str = include_str!("assets/index.html");
pub(super) const SCRIPT: &str = include_str!("assets/app.js");
pub(super) const STYLE: &str = include_str!("assets/app.css");

pub(super) fn asset(body: &'static str, kind: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The page: a shell with no data (the script signs in with the link's fragment and fetches the rest).
pub(super) async fn index(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if !app.own_host(&headers) {
        return Refused::WrongHost.into_response();
    }
    let name = app
        .shared
        .repo
        .workdir
        .file_name()
        .map_or_else(String::new, |name| name.to_string_lossy().into_owned());
    Html(PAGE.replace("{{REPO}}", &html_escape(&name))).into_response()
}

/// Every run's panel now, as JSON (the page gets the same as its first event).
pub(super) async fn state(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Err(refused) = app.guard(&headers) {
        return refused.into_response();
    }
    app.feed.ready().await;
    let (snapshot, _) = app.feed.subscribe();
    ([(header::CONTENT_TYPE, "application/json")], snapshot).into_response()
}

/// The live feed: a snapshot, then the deltas, as server-sent events, until the server stops.
pub(super) async fn events(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Err(refused) = app.guard(&headers) {
        return refused.into_response();
    }
    app.feed.ready().await;
    let (snapshot, receiver) = app.feed.subscribe();
    let first = futures_util::stream::once(async move {
        Ok::<Event, std::convert::Infallible>(Event::default().event("snapshot").data(snapshot))
    });
    let rest = BroadcastStream::new(receiver).map(|item| {
        Ok(match item {
            Ok(payload) => Event::default().event("delta").data(payload.as_ref()),
            // Fell behind: the page loads a fresh snapshot.
            Err(_) => Event::default().event("stale").data("{}"),
        })
    });
    let stopping = app.stopping.clone().cancelled_owned();
    Sse::new(first.chain(rest).take_until(stopping))
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[derive(Deserialize)]
pub(super) struct AttemptQuery {
    attempt: Option<u32>,
}

/// One task's detail (timeline, gate stages, the diff and log of the asked attempt) as an HTML fragment rendered
/// by the report's code, every worker text redacted there.
pub(super) async fn task_detail(
    State(app): State<Arc<App>>,
    Path((run, task)): Path<(String, String)>,
    Query(query): Query<AttemptQuery>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = app.guard(&headers) {
        return refused.into_response();
    }
    let (Ok(run), Ok(task)) = (RunId::parse(run), TaskId::parse(task)) else {
        return refuse(StatusCode::BAD_REQUEST, "not a run or task id");
    };
    let worker = app.clone();
    let fragment = tokio::task::spawn_blocking(move || {
        worker.shared.with_store(|store| {
            let view = match crate::status::run_view(store, &run) {
                Ok(view) => view,
                Err(StoreError::NoSuchRun(_)) => return Ok(None),
                Err(error) => return Err(error.into()),
            };
            let Some(found) = view.tasks.iter().find(|t| t.id == task).cloned() else {
                return Ok(None);
            };
            let part = crate::run_report::task_part(
                &worker.shared.repo,
                store,
                &worker.rules,
                &view,
                found,
                query.attempt,
            )?;
            Ok(Some(crate::run_report::task_html(&part, &worker.rules)))
        })
    })
    .await;
    match fragment {
        Ok(Ok(Some(html))) => Html(html).into_response(),
        Ok(Ok(None)) => refuse(StatusCode::NOT_FOUND, "no such run or task"),
        Ok(Err(_)) | Err(_) => refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot read that task from the state database",
        ),
    }
}

/// The scorecard across runs, as JSON.
pub(super) async fn scorecard(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Err(refused) = app.guard(&headers) {
        return refused.into_response();
    }
    let worker = app.clone();
    let card = tokio::task::spawn_blocking(move || {
        let prices = crate::cost::PriceTable::load().unwrap_or_else(|error| {
            tracing::warn!("{error}; costs use the built-in price table");
            crate::cost::PriceTable::builtin()
        });
        worker
            .shared
            .with_store(|store| Ok(crate::scorecard::scorecard(store, &prices, None)?))
    })
    .await;
    match card {
        Ok(Ok(card)) => axum::Json(card).into_response(),
        Ok(Err(_)) | Err(_) => refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot read the scorecard from the state database",
        ),
    }
}
