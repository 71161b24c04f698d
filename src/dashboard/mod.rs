//! `ccfan dashboard`: the fleet as a live web page on loopback. The page is embedded in the binary (no CDN, works
//! offline) and kept live by server-sent events from the state database ([`feed`]); its actions call the same
//! operations as the CLI and MCP ([`actions`]). Only the holder of the printed link gets in: the link carries a
//! one-time token in its fragment (never sent in a request line, a referrer or a log), which the page trades once
//! for this start's session secret; every data request carries that secret in an `Authorization` header — no
//! cookie, so neither another site nor another local port can borrow it — and must name this server's own host
//! (no DNS rebinding).

mod actions;
pub mod feed;
mod reads;
pub mod view;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;

use crate::git::RepoPaths;
use crate::mcp::Shared;
use crate::secrets::RulePack;

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

/// The link to give the person: the page's address with the one-time token in its fragment.
#[derive(Debug, Clone)]
pub struct Link {
    /// `http://127.0.0.1:PORT/#token=…`.
    pub url: String,
    /// The port served.
    pub port: u16,
}

/// Everything a request needs.
struct App {
    shared: Arc<Shared>,
    feed: Arc<feed::Feed>,
    rules: RulePack,
    /// The link's token until the page trades it for the session; `None` once spent.
    token: Mutex<Option<String>>,
    session: String,
    port: u16,
    /// Cancelled when the server stops: open event streams end, so stopping never waits on a page.
    stopping: CancellationToken,
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

/// Serves the dashboard of `repo` until `shutdown` resolves; `ready` gets the link to open once the port is
/// bound.
pub async fn serve(
    repo: RepoPaths,
    rules: RulePack,
    options: Options,
    ready: impl FnOnce(&Link),
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
    let token = secret()?;
    let stopping = CancellationToken::new();
    let app = Arc::new(App {
        shared: Shared::new(repo.clone(), options.exe, options.child_env),
        feed: feed.clone(),
        rules,
        token: Mutex::new(Some(token.clone())),
        session: secret()?,
        port,
        stopping: stopping.clone(),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (stop, repo) = (stop.clone(), repo.clone());
        std::thread::Builder::new()
            .name("ccfan-dashboard-feed".into())
            .spawn(move || feed::watch(&feed, &repo, &stop))
            .map_err(DashboardError::Serve)?
    };
    ready(&Link {
        url: format!("http://127.0.0.1:{port}/#token={token}"),
        port,
    });
    let router = Router::new()
        .route("/", get(reads::index))
        .route(
            "/app.js",
            get(|| async { reads::asset(reads::SCRIPT, "text/javascript") }),
        )
        .route(
            "/app.css",
            get(|| async { reads::asset(reads::STYLE, "text/css") }),
        )
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/api/session", post(session))
        .route("/api/state", get(reads::state))
        .route("/api/events", get(reads::events))
        .route("/api/scorecard", get(reads::scorecard))
        .route("/api/runs/{run}/tasks/{task}", get(reads::task_detail))
        .route("/api/runs/{run}/actions", post(actions::act))
        .layer(axum::middleware::map_response(harden_all))
        .with_state(app);
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown.await;
            stopping.cancel();
        })
        .await
        .map_err(DashboardError::Serve);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = watcher.join();
    served
}

async fn harden_all(response: Response) -> Response {
    harden(response)
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

    /// Whether the request carries this start's session secret (`Authorization: Bearer …`).
    fn signed_in(&self, headers: &HeaderMap) -> bool {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .is_some_and(|given| same(given.trim(), &self.session))
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
    /// It carries no valid session secret.
    SignedOut,
    /// A write from another origin.
    CrossSite,
    /// The link's token was wrong or already traded.
    Spent,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::WrongHost => refuse(StatusCode::FORBIDDEN, "wrong host"),
            Refused::SignedOut => refuse(
                StatusCode::UNAUTHORIZED,
                "signed out: open the link `ccfan dashboard` printed (restart it for a new link)",
            ),
            Refused::Spent => refuse(
                StatusCode::UNAUTHORIZED,
                "this link was already used, or is not this dashboard's: restart `ccfan dashboard` for a new one",
            ),
            Refused::CrossSite => refuse(
                StatusCode::FORBIDDEN,
                "cross-site request refused: actions come only from the dashboard's own page",
            ),
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Trade {
    token: String,
}

/// `POST /api/session {"token": …}`: trades the link's one-time token for this start's session secret. The token
/// works once: a link seen later (in a terminal's scrollback, a process list, a shell history) opens nothing.
async fn session(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !app.own_host(&headers) {
        return Refused::WrongHost.into_response();
    }
    let Ok(Trade { token }) = serde_json::from_slice::<Trade>(&body) else {
        return Refused::Spent.into_response();
    };
    let mut slot = app.token.lock().unwrap_or_else(PoisonError::into_inner);
    match slot.as_deref() {
        Some(expected) if same(&token, expected) => {
            *slot = None;
            axum::Json(serde_json::json!({ "session": app.session })).into_response()
        }
        _ => Refused::Spent.into_response(),
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
