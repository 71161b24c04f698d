//! The MCP front end — an edge, like the CLI: it serves ccfan's tools to an orchestrating agent over stdio or
//! Streamable HTTP, on the same durable state (`<git-common-dir>/ccfan/state.db`) that `ccfan status` reads.
//! Long work is handed to detached ccfan processes (`jobs`), so every tool answers quickly and the work survives
//! the session; stdout carries only the protocol (logs go to stderr).

mod errors;
mod evidence;
mod jobs;
pub(crate) mod ops;
mod server;
mod status;
pub mod stdio;
pub mod types;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rmcp::ServiceExt;

pub use errors::{ErrorCode, Failure, ToolError};
pub use server::CcfanServer;

use crate::git::RepoPaths;
use crate::paths::StateLayout;
use crate::store::Store;

/// How often a long-lived server looks for runs whose ccfan process died.
const RECOVER_EVERY: Duration = Duration::from_millis(500);

/// Why the server stopped.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    /// The transport failed.
    #[error("MCP server: {0}")]
    Serve(String),
    /// The HTTP address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A non-loopback address without the flag that allows it.
    #[error(
        "{0} is not a loopback address: the MCP server has no authentication; pass --allow-remote only behind your own access control"
    )]
    NotLoopback(SocketAddr),
}

/// What every handler shares: the repository, the ccfan binary that carries handed-off work, and one open
/// store connection for the fast reads (`status` is called often).
pub struct Shared {
    /// The repository served.
    pub repo: RepoPaths,
    /// The `ccfan` executable to hand work to.
    pub exe: PathBuf,
    /// Environment changes for the ccfan processes work is handed to (`None` removes a variable); empty for
    /// `ccfan mcp`, which passes its own environment on.
    pub child_env: Vec<(OsString, Option<OsString>)>,
    store: Mutex<Option<(Store, Instant)>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("repo", &self.repo.workdir)
            .field("exe", &self.exe)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Shared state for `repo`, handing work to `exe` (run with `child_env` applied).
    pub fn new(
        repo: RepoPaths,
        exe: PathBuf,
        child_env: Vec<(OsString, Option<OsString>)>,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            repo,
            exe,
            child_env,
            store: Mutex::new(None),
        })
    }

    /// Runs `act` on the store (opened on first use), after marking runs whose ccfan died as interrupted. In a
    /// repository ccfan never ran in, a look-up sees an empty store and leaves no file behind;
    /// [`Shared::with_store_creating`] is for what must be kept.
    pub fn with_store<T>(
        &self,
        act: impl FnOnce(&mut Store) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let database = StateLayout::of(&self.repo).database();
        let opened = self
            .store
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some();
        if !opened && !database.exists() {
            return act(&mut Store::open_or_empty(&database)?);
        }
        self.with_store_creating(act)
    }

    /// [`Shared::with_store`], creating the database when there is none (a delegation is recorded there).
    pub fn with_store_creating<T>(
        &self,
        act: impl FnOnce(&mut Store) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let mut slot = self.store.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            let store = Store::open(&StateLayout::of(&self.repo).database())?;
            *slot = Some((store, Instant::now() - RECOVER_EVERY));
        }
        let Some((store, recovered)) = slot.as_mut() else {
            return Err(Failure::tool(
                ErrorCode::Internal,
                "the state database is not open",
            ));
        };
        if recovered.elapsed() >= RECOVER_EVERY {
            crate::pipeline::recover(&self.repo, store)?;
            *recovered = Instant::now();
        }
        act(store)
    }
}

/// The repositories one server serves: the one it was started in, if any, and any other a tool call names with
/// `repo`. A globally registered server thus works from every folder, and a call outside any repository gets a
/// tool error saying how to name one.
pub struct Repos {
    /// Where the server started (relative `repo` paths are resolved from here).
    start: PathBuf,
    /// The `ccfan` executable to hand work to.
    exe: PathBuf,
    /// Environment changes for handed-off ccfan processes.
    child_env: Vec<(OsString, Option<OsString>)>,
    /// Set for a server on the network (Streamable HTTP): the one checkout it serves, so any process that reaches
    /// the port cannot point it at another repository of this user.
    only: Option<PathBuf>,
    /// Each checkout's shared state, by its working tree (linked worktrees of one repository are told apart: each
    /// has its own HEAD, so delegating or merging there must use it).
    known: Mutex<std::collections::HashMap<PathBuf, Arc<Shared>>>,
}

impl std::fmt::Debug for Repos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repos")
            .field("start", &self.start)
            .finish_non_exhaustive()
    }
}

impl Repos {
    /// A server started in `start`, handing work to `exe` (run with `child_env` applied).
    pub fn new(
        start: PathBuf,
        exe: PathBuf,
        child_env: Vec<(OsString, Option<OsString>)>,
    ) -> Arc<Repos> {
        Arc::new(Repos {
            start,
            exe,
            child_env,
            only: None,
            known: Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// A server that serves only the checkout `start` is in (for Streamable HTTP, reachable by other processes).
    pub fn only_start(
        start: PathBuf,
        exe: PathBuf,
        child_env: Vec<(OsString, Option<OsString>)>,
    ) -> Result<Arc<Repos>, crate::git::GitError> {
        let repo = crate::git::discover(&start)?;
        Ok(Arc::new(Repos {
            start,
            exe,
            child_env,
            only: Some(repo.workdir),
            known: Mutex::new(std::collections::HashMap::new()),
        }))
    }

    /// The shared state of the repository `repo` names (a path inside it, relative to where the server started),
    /// else of the one the server started in; a tool error naming the fix when that is no repository.
    pub fn at(&self, repo: Option<&str>) -> Result<Arc<Shared>, Failure> {
        let (folder, named) = match repo {
            Some(path) => (self.start.join(path), true),
            None => (self.start.clone(), false),
        };
        let paths = crate::git::discover(&folder).map_err(|error| {
            let fix = if named {
                "pass the path of a folder inside a git repository as `repo`"
            } else {
                "pass `repo` (the path of the repository to work in), or start the server inside a repository"
            };
            Failure::from(
                ToolError::new(ErrorCode::NotFound, format!("{error}; {fix}"))
                    .details(serde_json::json!({ "field": "repo", "fix": fix })),
            )
        })?;
        if let Some(only) = &self.only
            && &paths.workdir != only
        {
            return Err(ToolError::new(
                ErrorCode::Refused,
                format!(
                    "this HTTP server serves only {}; start another (`ccfan -C DIR mcp --http ADDR`) for {}",
                    only.display(),
                    paths.workdir.display()
                ),
            )
            .details(serde_json::json!({ "field": "repo" }))
            .into());
        }
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        let shared = known
            .entry(paths.workdir.clone())
            .or_insert_with(|| Shared::new(paths, self.exe.clone(), self.child_env.clone()));
        Ok(Arc::clone(shared))
    }
}

/// `health`.
async fn health(shared: &Shared) -> Result<types::HealthResult, Failure> {
    let repo = shared.repo.clone();
    let active_runs = shared.with_store(|store| {
        Ok(store
            .runs()?
            .iter()
            .filter(|run| run.state == crate::model::RunState::Running)
            .count())
    })?;
    tokio::task::spawn_blocking(move || {
        let policy = crate::pipeline::load_policy(&repo, None)?;
        let (sandbox, sandbox_problem) = match crate::sandbox::select(policy.sandbox.backend) {
            Ok(selected) => (Some(selected.backend.name().to_string()), selected.fallback),
            Err(error) => (None, Some(error.to_string())),
        };
        let workers = crate::agents::probe::worker_kinds(&policy)
            .into_iter()
            .map(|kind| types::WorkerKind {
                kind: kind.kind.to_string(),
                usable: kind.probe.as_ref().is_none_or(|p| p.usable()),
                version: kind.probe.as_ref().and_then(|p| p.version.clone()),
                path: kind
                    .probe
                    .as_ref()
                    .and_then(|p| p.path.as_ref())
                    .map(|p| p.display().to_string()),
                problem: kind.probe.as_ref().and_then(|p| p.problem.clone()),
                profiles: kind.profiles,
            })
            .collect();
        Ok(types::HealthResult {
            version: env!("CARGO_PKG_VERSION").to_string(),
            repository: repo.workdir.display().to_string(),
            state: StateLayout::of(&repo).database().display().to_string(),
            sandbox,
            sandbox_problem,
            workers,
            policy: policy.sources.clone(),
            active_runs,
        })
    })
    .await
    .map_err(|error| Failure::tool(ErrorCode::Internal, error.to_string()))?
}

/// Serves MCP over stdin/stdout until the client closes the connection.
pub async fn serve_stdio(repos: Arc<Repos>) -> Result<(), McpError> {
    let serve_error = |error: &dyn std::fmt::Display| McpError::Serve(error.to_string());
    // Client lines go through a checking filter first (broken ones are answered with a parse error there); rmcp
    // reads the rest from a pipe and writes to another, which is copied to stdout a whole line at a time.
    let (filter_side, rmcp_input) = tokio::io::duplex(1 << 16);
    let (rmcp_output, forward_side) = tokio::io::duplex(1 << 16);
    let stdout = Arc::new(tokio::sync::Mutex::new(tokio::io::stdout()));
    let filter = tokio::spawn(stdio::filter_input(
        tokio::io::stdin(),
        filter_side,
        stdout.clone(),
        stdio::MAX_MESSAGE_BYTES,
    ));
    let forward = tokio::spawn(stdio::forward_output(forward_side, stdout));
    let service = CcfanServer::new(repos)
        .serve((rmcp_input, rmcp_output))
        .await
        .map_err(|error| serve_error(&error))?;
    service
        .waiting()
        .await
        .map_err(|error| serve_error(&error))?;
    // rmcp has stopped and dropped its end of the output pipe: the copy ends once every reply is on stdout. The
    // filter may still wait on stdin (when rmcp stopped first); nothing it could read matters now.
    let forwarded = forward.await;
    filter.abort();
    match forwarded {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => {
            tracing::debug!("MCP stdio: {error}");
            Ok(())
        }
        Err(error) => Err(serve_error(&error)),
    }
}

/// Binds the Streamable HTTP address: loopback only, unless `allow_remote`.
pub async fn bind_http(
    addr: SocketAddr,
    allow_remote: bool,
) -> Result<tokio::net::TcpListener, McpError> {
    if !addr.ip().is_loopback() && !allow_remote {
        return Err(McpError::NotLoopback(addr));
    }
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| McpError::Bind { addr, source })
}

/// Serves MCP over Streamable HTTP on `listener` (path `/mcp`) until `shutdown` resolves. A handler is built per
/// request; they share `repos`.
pub async fn serve_http(
    repos: Arc<Repos>,
    listener: tokio::net::TcpListener,
    allow_remote: bool,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), McpError> {
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let mut config = StreamableHttpServerConfig::default();
    config.cancellation_token = cancel.child_token();
    if allow_remote {
        config = config.disable_allowed_hosts();
    }
    let service = StreamableHttpService::new(
        move || Ok(CcfanServer::new(Arc::clone(&repos))),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let router = axum::Router::new().nest_service("/mcp", service);
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown.await;
            cancel.cancel();
        })
        .await
        .map_err(|error| McpError::Serve(error.to_string()))
}
