//! The one door that spawns worker processes (and, with the gate, tests and checks). Today it runs a worker as a
//! plain child with a cleaned environment, its own session, a capped log, a timeout and a whole-tree kill; the
//! sandbox issue adds OS isolation (bubblewrap, landlock) behind this same door.

mod cgroup;
mod log;
pub mod proc;

use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::model::{ExitStatus, WorkerProfile};
use crate::policy::SandboxSettings;

/// Name of the variable that marks every process of one attempt (inherited by its descendants).
pub const TOKEN_ENV: &str = "CCFAN_ATTEMPT_TOKEN";

/// How long a process tree gets between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_millis(1500);

/// Errors that stop ccfan from supervising a process at all (a worker that fails is an [`Outcome`], not this).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The log file could not be created.
    #[error("cannot create the log file {}", path.display())]
    Log {
        /// The log file.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A pipe for the worker's output could not be made.
    #[error("cannot create a pipe for the worker's output")]
    Pipe(#[source] std::io::Error),
    /// Waiting for the worker failed.
    #[error("cannot wait for the worker (pid {pid})")]
    Wait {
        /// The worker's pid.
        pid: u32,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// What to run and how.
#[derive(Debug)]
pub struct Launch<'a> {
    /// Program and arguments.
    pub argv: &'a [String],
    /// Working folder.
    pub cwd: &'a Path,
    /// The complete environment (nothing else is inherited).
    pub env: Vec<(OsString, OsString)>,
    /// Where stdout and stderr go (interleaved).
    pub log_path: &'a Path,
    /// Bytes of output kept.
    pub log_limit: u64,
    /// Wall-clock limit.
    pub timeout: Duration,
    /// The attempt token (also put in the environment as [`TOKEN_ENV`]).
    pub token: &'a str,
    /// Set to stop the process early.
    pub cancel: &'a AtomicBool,
}

/// How a supervised process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Its exit.
    pub exit: ExitStatus,
    /// Bytes of output it wrote.
    pub output_bytes: u64,
    /// Whether output was dropped past the limit.
    pub log_capped: bool,
    /// Wall time.
    pub duration: Duration,
    /// Processes of its tree still alive after it exited (or was stopped) that ccfan killed.
    pub leftovers_killed: usize,
}

/// Builds a worker's environment: the policy's allowlist and the profile's pass-through names from the host,
/// then the profile's own variables, then `extra` (ccfan's `CCFAN_*`).
pub fn worker_env(
    settings: &SandboxSettings,
    profile: &WorkerProfile,
    extra: &[(String, String)],
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = Vec::new();
    let mut set = |name: OsString, value: OsString| {
        env.retain(|(existing, _)| existing != &name);
        env.push((name, value));
    };
    for name in settings.env_allow.iter().chain(&profile.pass_env) {
        if let Some(value) = std::env::var_os(name) {
            set(name.into(), value);
        }
    }
    for (name, value) in profile.env.iter().chain(extra) {
        set(name.into(), value.into());
    }
    env
}

/// The environment of a test or check command: the policy's allowlist from the host, plus `extra`.
pub fn command_env(
    settings: &SandboxSettings,
    extra: &[(String, String)],
) -> Vec<(OsString, OsString)> {
    let plain = WorkerProfile {
        name: String::new(),
        kind: crate::model::WorkerKind::Command { argv: Vec::new() },
        timeout: None,
        env: Vec::new(),
        pass_env: Vec::new(),
    };
    worker_env(settings, &plain, extra)
}

/// Runs `launch` to its end (exit, timeout or cancel), then makes sure no process of its tree survives.
pub fn run(launch: Launch<'_>, on_spawn: impl FnOnce(u32)) -> Result<Outcome, SandboxError> {
    let started = Instant::now();
    let Some((program, args)) = launch.argv.split_first() else {
        return Ok(spawn_failed("the command is empty", started));
    };
    let log = log::CappedLog::create(launch.log_path, launch.log_limit).map_err(|source| {
        SandboxError::Log {
            path: launch.log_path.to_path_buf(),
            source,
        }
    })?;
    let (reader, writer) = std::io::pipe().map_err(SandboxError::Pipe)?;
    let writer_err = writer.try_clone().map_err(SandboxError::Pipe)?;
    let cgroup = cgroup::Cgroup::create(launch.token);
    #[expect(
        clippy::disallowed_methods,
        reason = "the sandbox is the one door to worker processes"
    )]
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(launch.cwd)
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .env(TOKEN_ENV, launch.token)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(writer_err);
    proc::prepare_child(&mut command, cgroup.as_ref().map(cgroup::Cgroup::procs_fd));
    let spawned = command.spawn();
    drop(command); // closes our copies of the pipe's write end
    let mut child = match spawned {
        Ok(child) => child,
        Err(error) => {
            drop(reader);
            let _ = log.finish();
            if let Some(cgroup) = cgroup {
                cgroup.remove();
            }
            return Ok(spawn_failed(&format!("{program}: {error}"), started));
        }
    };
    let pid = child.id();
    on_spawn(pid);
    let pump = log.pump(reader);

    let deadline = started + launch.timeout;
    let mut stopped: Option<ExitStatus> = None;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(source) => return Err(SandboxError::Wait { pid, source }),
        }
        if stopped.is_none() {
            if launch.cancel.load(Ordering::SeqCst) {
                stopped = Some(ExitStatus::Cancelled);
            } else if Instant::now() >= deadline {
                stopped = Some(ExitStatus::TimedOut);
            }
            if stopped.is_some() {
                proc::terminate_tree(pid, launch.token, cgroup.as_ref(), GRACE);
            }
        }
        std::thread::sleep(Duration::from_millis(15));
    };
    // Whatever the worker left running (setsid children, daemons) dies with it.
    let leftovers_killed = proc::kill_tree(pid, launch.token, cgroup.as_ref());
    let (output_bytes, log_capped) = pump.finish(Duration::from_secs(3));
    if let Some(cgroup) = cgroup {
        cgroup.remove();
    }
    let exit = stopped.unwrap_or_else(|| {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => ExitStatus::Code { code },
            (None, Some(signal)) => ExitStatus::Signal { signal },
            (None, None) => ExitStatus::Code { code: -1 },
        }
    });
    Ok(Outcome {
        exit,
        output_bytes,
        log_capped,
        duration: started.elapsed(),
        leftovers_killed,
    })
}

fn spawn_failed(message: &str, started: Instant) -> Outcome {
    Outcome {
        exit: ExitStatus::SpawnFailed {
            message: message.to_string(),
        },
        output_bytes: 0,
        log_capped: false,
        duration: started.elapsed(),
        leftovers_killed: 0,
    }
}

/// Kills every process still carrying `token` (used when recovering runs whose ccfan died). Returns how many.
pub fn kill_leftovers(token: &str) -> usize {
    proc::kill_tree(0, token, cgroup::Cgroup::existing(token).as_ref())
}
