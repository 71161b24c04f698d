//! `ccfan dashboard`: the fleet as a live web page on loopback. The page is embedded in the binary (no CDN, works
//! offline) and kept live by server-sent events from the state database ([`feed`]); its actions call the same
//! operations as the CLI and MCP ([`actions`]). Only the person holding the printed link gets in: the link's token
//! is exchanged for a same-site, HTTP-only cookie, every request must name this server's own host (no DNS
//! rebinding), and every action also needs the page's anti-forgery token in a header no other site can set.

mod actions;
pub mod feed;
pub mod view;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::BroadcastStream;

use crate::git::RepoPaths;
use crate::mcp::Shared;
use crate::model::{RunId, TaskId};
use crate::secrets::RulePack;

const PAGE: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/app.css");
/// The cookie a valid link is exchanged for.
const COOKIE: &str = "ccfan_dashboard";
/// The header every action carries with the page's anti-forgery token.
const CSRF_HEADER: &str = "x-ccfan-csrf";

/// Why the dashboard could not serve.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// The port could not be bound.
    #[error(
        "cannot listen on 127.0.0.1:{port}: {source} (pick another with --port, or 0 for any free port)"
    )]
    Bind {
        /// The port asked for.
        port: u16,
        /// Why.
        source: std::io::Error,
    },
    /// No unguessable token could be made.
    #[error("cannot read /dev/urandom for the dashboard's access token: {0}")]
    Random(std::io::Error),
    /// The server stopped with an error.
    #[error("the dashboard server failed: {0}")]
    Serve(std::io::Error),
}

/// How to serve.
#[derive(Debug, Clone)]
pub struct Options {
    /// The port on 127.0.0.1 (0: any free one).
    pub port: u16,
    /// The `ccfan` executable actions hand their work to.
    pub exe: PathBuf,
    /// Environment changes for those processes.
    pub child_env: Vec<(OsString, Option<OsString>)>,
}

/// Everything a request needs.
struct App {
    shared: Arc<Shared>,
    feed: Arc<feed::Feed>,
    rules: RulePack,
    token: String,
    session: String,
    csrf: String,
    port: u16,
}

/// An unguessable token (128 bits from the kernel).
fn secret() -> Result<String, DashboardError> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut file| file.read_exact(&mut bytes))
        .map_err(DashboardError::Random)?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// Serves the dashboard of `repo` until `shutdown` resolves; `ready` gets the link to open (with its token)
/// once the port is bound.
pub async fn serve(
    repo: RepoPaths,
    rules: RulePack,
    options: Options,
    ready: impl FnOnce(&str),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), DashboardError> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], options.port)))
        .await
        .map_err(|source| DashboardError::Bind {
            port: options.port,
            source,
        })?;
    let port = listener
        .local_addr()
        .map_err(|source| DashboardError::Bind {
            port: options.port,
            source,
        })?
        .port();
    let feed = feed::Feed::new(rules.clone());
    let app = Arc::new(App {
        shared: Shared::new(repo.clone(), options.exe, options.child_env),
        feed: feed.clone(),
        rules,
        token: secret()?,
        session: secret()?,
        csrf: secret()?,
        port,
    });
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (stop, repo) = (stop.clone(), repo.clone());
        std::thread::Builder::new()
            .name("ccfan-dashboard-feed".into())
            .spawn(move || feed::watch(&feed, &repo, &stop))
            .map_err(DashboardError::Serve)?
    };
    ready(&format!("http://127.0.0.1:{port}/?token={}", app.token));
    let router = Router::new()
        .route("/", get(index))
        .route(
            "/app.js",
            get(|| async { asset(SCRIPT, "text/javascript") }),
        )
        .route("/app.css", get(|| async { asset(STYLE, "text/css") }))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/api/state", get(state))
        .route("/api/events", get(events))
        .route("/api/scorecard", get(scorecard))
        .route("/api/runs/{run}/tasks/{task}", get(task_detail))
        .route("/api/runs/{run}/actions", post(actions::act))
        .with_state(app);
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(DashboardError::Serve);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = watcher.join();
    served
}

/// Headers every answer carries: no framing, no sniffing, no referrer (the link holds the token), and only this
/// origin's own script and style.
fn harden(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; \
             frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

fn asset(body: &'static str, kind: &'static str) -> Response {
    harden(([(header::CONTENT_TYPE, kind)], body).into_response())
}

fn refuse(status: StatusCode, why: &str) -> Response {
    harden((status, why.to_string()).into_response())
}

impl App {
    /// Whether the request names this server itself (a page of another site reaching it through a rebound DNS name
    /// names that site's host).
    fn own_host(&self, headers: &HeaderMap) -> bool {
        let host = headers
            .get(header::HOST)
            .and_then(|value| value.to_str().ok());
        host.is_some_and(|host| {
            host == format!("127.0.0.1:{}", self.port) || host == format!("localhost:{}", self.port)
        })
    }

    /// Whether the request carries the session cookie.
    fn signed_in(&self, headers: &HeaderMap) -> bool {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .any(|(name, value)| name == COOKIE && same(value, &self.session))
    }

    /// Checks a read: own host and signed in.
    fn guard(&self, headers: &HeaderMap) -> Result<(), Refused> {
        if !self.own_host(headers) {
            return Err(Refused::WrongHost);
        }
        if !self.signed_in(headers) {
            return Err(Refused::SignedOut);
        }
        Ok(())
    }
}

/// Why a request was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    /// It names another host (DNS rebinding).
    WrongHost,
    /// It carries no valid session cookie.
    SignedOut,
    /// A write without this page's origin and anti-forgery token.
    CrossSite,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::WrongHost => refuse(StatusCode::FORBIDDEN, "wrong host"),
            Refused::SignedOut => refuse(
                StatusCode::UNAUTHORIZED,
                "open the link `ccfan dashboard` printed (it holds this session's token)",
            ),
            Refused::CrossSite => refuse(
                StatusCode::FORBIDDEN,
                "cross-site request refused: actions come only from the dashboard's own page",
            ),
        }
    }
}

/// Compares two tokens in time that does not depend on where they differ.
fn same(given: &str, expected: &str) -> bool {
    given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// The page; the link's token is exchanged for the session cookie and dropped from the address bar.
async fn index(
    State(app): State<Arc<App>>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
) -> Response {
    if !app.own_host(&headers) {
        return Refused::WrongHost.into_response();
    }
    if let Some(token) = query.token {
        if !same(&token, &app.token) {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "this link's token is not this dashboard's: open the link `ccfan dashboard` printed",
            );
        }
        let mut response = Redirect::to("/").into_response();
        let cookie = format!(
            "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/",
            app.session
        );
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
        return harden(response);
    }
    if let Err(refused) = app.guard(&headers) {
        return refused.into_response();
    }
    let page = PAGE.replace("{{CSRF}}", &app.csrf).replace(
        "{{REPO}}",
        &html_escape(&app.shared.repo.workdir.display().to_string()),
    );
    harden(Html(page).into_response())
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Every run's panel now, as JSON (the page gets the same as its first event).
async fn state(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Err(refused) = app.guard(&headers) {
        return refused.into_response();
    }
    app.feed.ready().await;
    let (snapshot, _) = app.feed.subscribe();
    harden(([(header::CONTENT_TYPE, "application/json")], snapshot).into_response())
}

/// The live feed: a snapshot, then the deltas, as server-sent events.
async fn events(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Err(refused) = app.guard(&headers) {
        return refused.into_response();
    }
    app.feed.ready().await;
    let (snapshot, receiver) = app.feed.subscribe();
    let first = tokio_stream::once(Ok::<Event, std::convert::Infallible>(
        Event::default().event("snapshot").data(snapshot),
    ));
    let rest = BroadcastStream::new(receiver).map(|item| {
        Ok(match item {
            Ok(payload) => Event::default().event("delta").data(payload.as_ref()),
            // Fell behind: the page reloads its snapshot.
            Err(_) => Event::default().event("stale").data("{}"),
        })
    });
    harden(
        Sse::new(first.chain(rest))
            .keep_alive(KeepAlive::default())
            .into_response(),
    )
}

#[derive(Deserialize)]
struct AttemptQuery {
    attempt: Option<u32>,
}

/// One task's detail (timeline, gate stages, diff of the asked attempt, log tail) as an HTML fragment rendered
/// by the same code as the report, every worker text redacted.
async fn task_detail(
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
            let view = crate::status::run_view(store, &run)?;
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
        Ok(Ok(Some(html))) => harden(Html(app.rules.redact_text(&html)).into_response()),
        Ok(Ok(None)) => refuse(StatusCode::NOT_FOUND, "no such task in that run"),
        Ok(Err(_)) | Err(_) => refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot read that task from the state database",
        ),
    }
}

/// The scorecard across runs, as JSON.
async fn scorecard(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
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
        Ok(Ok(card)) => harden(axum::Json(card).into_response()),
        Ok(Err(_)) | Err(_) => refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot read the scorecard from the state database",
        ),
    }
}
