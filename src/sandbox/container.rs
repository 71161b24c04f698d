//! The door to a container engine (Podman or Docker, through their Docker-compatible API with bollard): one
//! container per portable attempt from the policy's image, the attempt's files copied in and out through the API
//! (so the engine may be another machine), the network off unless the worker's profile says otherwise, memory,
//! CPU and process limits, a wall-clock limit and cancellation that kill the container, and labels naming the
//! run, task and attempt so that recovery after a crash can remove what was left.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, DownloadFromContainerOptions, KillContainerOptions, LogsOptions,
    RemoveContainerOptions, UploadToContainerOptions,
};
use futures_util::StreamExt;

use crate::model::ExitStatus;
use crate::policy::{ContainerSettings, SandboxBackend, SandboxLimits};

/// Where an attempt's files live inside its container.
pub const ROOT: &str = "/ccfan";
/// The label every container of ccfan carries: the attempt's process token.
pub const TOKEN_LABEL: &str = "io.ccfan.token";
/// The most bytes copied back out of a container.
const MAX_OUT: u64 = 1 << 30;
/// How often a running container is checked against its time limit and cancellation.
const POLL: Duration = Duration::from_millis(200);

/// Why a container could not be run.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// The engine refused or failed a call.
    #[error("the {engine} engine at {socket}: {what}: {message}")]
    Engine {
        /// `podman` or `docker`.
        engine: &'static str,
        /// Its socket.
        socket: String,
        /// What ccfan asked.
        what: &'static str,
        /// What the engine said.
        message: String,
    },
    /// A file of the attempt could not be read or written.
    #[error("{context}")]
    Io {
        /// What ccfan was doing.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// One attempt's container.
#[derive(Debug)]
pub struct ContainerRun<'a> {
    /// `podman` or `docker`.
    pub backend: SandboxBackend,
    /// The image and engine.
    pub settings: &'a ContainerSettings,
    /// The folder copied in as `/ccfan/in`.
    pub input: &'a Path,
    /// The folder `/ccfan/out` is copied back into.
    pub output: &'a Path,
    /// The container's command.
    pub argv: Vec<String>,
    /// Its environment (host values passed by name are in it: the engine gets them, no file does).
    pub env: Vec<(String, String)>,
    /// Whether it reaches the network.
    pub network: bool,
    /// Memory and process limits.
    pub limits: SandboxLimits,
    /// Wall-clock limit.
    pub timeout: Duration,
    /// Stops it early.
    pub cancel: &'a AtomicBool,
    /// Labels (the token among them, see [`TOKEN_LABEL`]).
    pub labels: Vec<(String, String)>,
    /// Where the container's own output (the runner's) goes.
    pub log: &'a Path,
    /// Where the worker's output is appended while it runs, when the backend streams it (the attempt's log, and
    /// an agent's event stream).
    pub live: Option<super::live::Live<'a>>,
}

/// How a container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerOutcome {
    /// Its main process's end (the runner's, not the worker's: that one is in the manifest).
    pub exit: ExitStatus,
    /// Wall time.
    pub duration: Duration,
}

/// The engine's socket: the policy's, else `$DOCKER_HOST`, else the engine's usual one.
pub fn socket(backend: SandboxBackend, settings: &ContainerSettings) -> String {
    settings
        .socket
        .clone()
        .or_else(|| {
            std::env::var("DOCKER_HOST")
                .ok()
                .filter(|host| !host.is_empty())
        })
        .unwrap_or_else(|| match backend {
            SandboxBackend::Docker => "unix:///var/run/docker.sock".to_string(),
            _ => "unix:///run/podman/podman.sock".to_string(),
        })
}

fn engine_name(backend: SandboxBackend) -> &'static str {
    match backend {
        SandboxBackend::Docker => "docker",
        _ => "podman",
    }
}

pub(super) struct Engine {
    pub(super) docker: Docker,
    pub(super) name: &'static str,
    pub(super) socket: String,
}

impl Engine {
    pub(super) fn connect(
        backend: SandboxBackend,
        settings: &ContainerSettings,
    ) -> Result<Engine, ContainerError> {
        let socket = socket(backend, settings);
        let name = engine_name(backend);
        if socket.starts_with("tcp://") || socket.starts_with("http://") {
            // Plain HTTP would carry the worker's variables (API keys) in the clear.
            return Err(ContainerError::Engine {
                engine: name,
                socket,
                what: "connect",
                message: "engines over tcp:// are not supported yet (no TLS): use the engine's unix socket, or \
                          forward it over ssh to a local one"
                    .to_string(),
            });
        }
        let docker = Docker::connect_with_unix(&socket, 120, bollard::API_DEFAULT_VERSION)
            .map_err(|error| ContainerError::Engine {
                engine: name,
                socket: socket.clone(),
                what: "connect",
                message: error.to_string(),
            })?;
        Ok(Engine {
            docker,
            name,
            socket,
        })
    }

    pub(super) fn failed(
        &self,
        what: &'static str,
    ) -> impl FnOnce(bollard::errors::Error) -> ContainerError + '_ {
        move |error| ContainerError::Engine {
            engine: self.name,
            socket: self.socket.clone(),
            what,
            message: error.to_string(),
        }
    }
}

/// Runs `work` on a runtime of its own, on a thread of its own: callers may be inside another runtime (the MCP
/// server recovers runs from its async handlers), where blocking on a second one would panic.
pub(super) fn block_on<T: Send, E: Send + From<ClientFailed>>(
    work: impl std::future::Future<Output = Result<T, E>> + Send,
) -> Result<T, E> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|source| E::from(ClientFailed(source)))?
                    .block_on(work)
            })
            .join()
            .unwrap_or_else(|_| Err(E::from(ClientFailed(std::io::Error::other("panicked")))))
    })
}

/// The client of an engine or a cluster could not be started, or stopped.
#[derive(Debug)]
pub(super) struct ClientFailed(pub std::io::Error);

impl From<ClientFailed> for ContainerError {
    fn from(failed: ClientFailed) -> Self {
        ContainerError::Io {
            context: "the container engine's client could not run".to_string(),
            source: failed.0,
        }
    }
}

/// Runs one attempt's container to its end: created, its input copied in, started, waited for (killed past its
/// time limit or when cancelled), its output copied back, and removed whatever happened.
pub fn run(run: &ContainerRun<'_>) -> Result<ContainerOutcome, ContainerError> {
    use futures_util::FutureExt;
    block_on(async {
        let engine = Engine::connect(run.backend, run.settings)?;
        let id = within(&engine, "create the container", CALL, create(&engine, run)).await?;
        // Removed whatever happened while it ran, a panic included.
        let result = std::panic::AssertUnwindSafe(carry(&engine, &id, run))
            .catch_unwind()
            .await;
        let removed = within(&engine, "remove the container", CALL, async {
            engine
                .docker
                .remove_container(
                    &id,
                    Some(RemoveContainerOptions {
                        force: true,
                        ..Default::default()
                    }),
                )
                .await
                .map_err(engine.failed("remove the container"))
        })
        .await;
        if let Err(error) = removed {
            tracing::warn!("cannot remove container {id}: {error}");
        }
        result.unwrap_or_else(|_| {
            Err(ContainerError::Io {
                context: "the container's attempt stopped unexpectedly (its container was removed)"
                    .to_string(),
                source: std::io::Error::other("panicked"),
            })
        })
    })
}

/// How long one call to the engine may take (a copy of the attempt's files: [`COPY`]).
const CALL: Duration = Duration::from_secs(120);
/// How long copying an attempt's files in or out may take.
const COPY: Duration = Duration::from_secs(600);

/// `work`, or an error naming `what` when the engine does not finish it within `limit`.
async fn within<T>(
    engine: &Engine,
    what: &'static str,
    limit: Duration,
    work: impl std::future::Future<Output = Result<T, ContainerError>>,
) -> Result<T, ContainerError> {
    tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
        Err(ContainerError::Engine {
            engine: engine.name,
            socket: engine.socket.clone(),
            what,
            message: format!("no answer within {} s", limit.as_secs()),
        })
    })
}

async fn create(engine: &Engine, run: &ContainerRun<'_>) -> Result<String, ContainerError> {
    let host_config = HostConfig {
        memory: run
            .limits
            .memory
            .and_then(|bytes| i64::try_from(bytes).ok()),
        pids_limit: run.limits.pids.and_then(|pids| i64::try_from(pids).ok()),
        nano_cpus: run.settings.cpus.map(|cpus| (cpus * 1e9) as i64),
        network_mode: (!run.network).then(|| "none".to_string()),
        security_opt: Some(vec!["no-new-privileges".to_string()]),
        ..Default::default()
    };
    let body = ContainerCreateBody {
        image: Some(run.settings.image.clone()),
        cmd: Some(run.argv.clone()),
        env: Some(run.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        labels: Some(run.labels.iter().cloned().collect()),
        working_dir: Some(ROOT.to_string()),
        host_config: Some(host_config),
        ..Default::default()
    };
    let created = engine
        .docker
        .create_container(None::<CreateContainerOptions>, body)
        .await
        .map_err(engine.failed("create the container"))?;
    Ok(created.id)
}

async fn carry(
    engine: &Engine,
    id: &str,
    run: &ContainerRun<'_>,
) -> Result<ContainerOutcome, ContainerError> {
    // Packed to a file beside the input and streamed from there: a base can be large.
    let packed = run.input.with_extension("tar");
    let opened = super::archive::pack_input_to(run.input, &packed)
        .and_then(|()| std::fs::File::open(&packed))
        .map_err(|source| ContainerError::Io {
            context: format!("cannot pack {}", run.input.display()),
            source,
        });
    let _ = std::fs::remove_file(&packed);
    let file = tokio::fs::File::from_std(opened?);
    let chunks = futures_util::stream::try_unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut chunk = vec![0u8; 256 * 1024];
        let read = file.read(&mut chunk).await?;
        chunk.truncate(read);
        Ok::<_, std::io::Error>((read > 0).then(|| (bytes::Bytes::from(chunk), file)))
    });
    let upload = async {
        engine
            .docker
            .upload_to_container(
                id,
                Some(UploadToContainerOptions {
                    path: "/".to_string(),
                    ..Default::default()
                }),
                bollard::body_try_stream(chunks),
            )
            .await
            .map_err(engine.failed("copy the attempt's input in"))
    };
    within(engine, "copy the attempt's input in", COPY, upload).await?;
    let started = Instant::now();
    let start = async {
        engine
            .docker
            .start_container(id, None)
            .await
            .map_err(engine.failed("start the container"))
    };
    within(engine, "start the container", CALL, start).await?;
    // The worker's output (the runner echoes it) goes to the attempt's log while the container runs.
    let follower = run.live.map(|live| {
        tokio::spawn(super::live::follow_container(
            engine.docker.clone(),
            id.to_string(),
            super::live::LiveLog::open(live),
        ))
    });
    let exit = wait(engine, id, run, started).await;
    if let Some(follower) = follower
        && tokio::time::timeout(Duration::from_secs(5), follower)
            .await
            .is_err()
    {
        tracing::debug!("the log of container {id} did not end");
    }
    let exit = exit?;
    let duration = started.elapsed();
    let logs = async {
        save_logs(engine, id, run.log).await;
        Ok(())
    };
    if let Err(error) = within(engine, "read the container's output", CALL, logs).await {
        tracing::warn!("{error}");
    }
    within(
        engine,
        "copy the attempt's output out",
        COPY,
        copy_out(engine, id, run.output),
    )
    .await?;
    Ok(ContainerOutcome { exit, duration })
}

/// Waits for the container's end; past its time limit, or once cancelled, it is killed.
async fn wait(
    engine: &Engine,
    id: &str,
    run: &ContainerRun<'_>,
    started: Instant,
) -> Result<ExitStatus, ContainerError> {
    let mut waiting = Box::pin(engine.docker.wait_container(id, None));
    let mut stopped: Option<ExitStatus> = None;
    let mut stopped_at = None;
    loop {
        // A container that does not end within a minute of its kill is left to removal.
        if let (Some(why), Some(at)) = (&stopped, stopped_at)
            && Instant::now().duration_since(at) > Duration::from_secs(60)
        {
            return Ok(why.clone());
        }
        tokio::select! {
            ended = waiting.next() => {
                if let Some(stopped) = stopped {
                    return Ok(stopped);
                }
                return match ended {
                    Some(Ok(response)) => Ok(code(response.status_code)),
                    Some(Err(bollard::errors::Error::DockerContainerWaitError { code: status, .. })) => Ok(code(status)),
                    Some(Err(error)) => Err(engine.failed("wait for the container")(error)),
                    None => Err(ContainerError::Engine {
                        engine: engine.name,
                        socket: engine.socket.clone(),
                        what: "wait for the container",
                        message: "the engine closed the wait without an exit".to_string(),
                    }),
                };
            }
            () = tokio::time::sleep(POLL) => {
                if stopped.is_some() {
                    continue;
                }
                let why = if run.cancel.load(Ordering::SeqCst) {
                    Some(ExitStatus::Cancelled)
                } else if started.elapsed() >= run.timeout {
                    Some(ExitStatus::TimedOut)
                } else {
                    None
                };
                if let Some(why) = why {
                    stopped = Some(why);
                    stopped_at = Some(Instant::now());
                    let killed = engine
                        .docker
                        .kill_container(id, Some(KillContainerOptions { signal: "KILL".to_string() }))
                        .await;
                    if let Err(error) = killed {
                        tracing::warn!("cannot kill container {id}: {error}");
                    }
                }
            }
        }
    }
}

fn code(status: i64) -> ExitStatus {
    ExitStatus::Code {
        code: i32::try_from(status).unwrap_or(i32::MAX),
    }
}

/// The runner's own messages (its stderr; the worker's output, echoed on stdout, comes back as a file), best
/// effort.
async fn save_logs(engine: &Engine, id: &str, log: &Path) {
    let options = LogsOptions {
        stdout: false,
        stderr: true,
        tail: "200".to_string(),
        ..Default::default()
    };
    let mut stream = engine.docker.logs(id, Some(options));
    let mut text = Vec::new();
    while let Some(Ok(chunk)) = stream.next().await {
        if text.len() < 1 << 20 {
            text.extend_from_slice(&chunk.into_bytes());
        }
    }
    if let Err(error) = std::fs::write(log, &text) {
        tracing::warn!("cannot write {}: {error}", log.display());
    }
}

/// Copies `/ccfan/out` back into `output`: regular files and folders only, every path inside it, at most
/// [`MAX_OUT`] bytes — what a container hands back is not trusted.
async fn copy_out(engine: &Engine, id: &str, output: &Path) -> Result<(), ContainerError> {
    use std::io::Write;
    let options = DownloadFromContainerOptions {
        path: format!("{ROOT}/out"),
    };
    let mut stream = engine.docker.download_from_container(id, Some(options));
    // Streamed to a file beside the output, never held in memory, and cut off past the limit.
    let spooled = output.with_extension("tar");
    let io = |source| ContainerError::Io {
        context: format!("cannot write {}", spooled.display()),
        source,
    };
    let mut file = std::fs::File::create(&spooled).map_err(io)?;
    let mut written = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(engine.failed("copy the attempt's output out"))?;
        written += chunk.len() as u64;
        if written > MAX_OUT {
            let _ = std::fs::remove_file(&spooled);
            return Err(ContainerError::Io {
                context: format!("the container's output is over {MAX_OUT} bytes"),
                source: std::io::Error::from(std::io::ErrorKind::FileTooLarge),
            });
        }
        file.write_all(&chunk).map_err(io)?;
    }
    drop(file);
    let unpacked = std::fs::File::open(&spooled).map_err(io).and_then(|file| {
        super::archive::unpack_output(file, output).map_err(|source| ContainerError::Io {
            context: "cannot take the container's output".to_string(),
            source,
        })
    });
    let _ = std::fs::remove_file(&spooled);
    unpacked
}
