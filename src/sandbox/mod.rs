//! The one door that spawns worker, test and check processes: each runs in an OS sandbox (bubblewrap by
//! default, Landlock as the weaker fallback, none only when the policy says so), with a cleaned environment,
//! its own session, cgroup limits, a capped log, a timeout and a whole-tree kill. The library never spawns a
//! process any other way.

pub mod archive;
mod backend;
mod bwrap;
mod cgroup;
pub mod container;
pub mod detach;
pub mod doctor;
pub mod engine;
pub mod kubernetes;
mod landlock;
pub mod live;
mod log;
pub mod overlay;
pub mod proc;
mod seccomp;
mod spec;

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub use backend::{Backend, Selected, Unavailable, select};
pub use spec::{SandboxPolicy, Tree, command_env, resolve_program, worker_env};

use crate::model::ExitStatus;

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
    /// The sandbox the policy asks for cannot run here (ccfan fails closed).
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
    /// The sandbox could not be prepared (a seccomp filter, a Landlock ruleset).
    #[error("cannot prepare the sandbox: {0}")]
    Setup(String),
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

/// Reads a worker's event stream on ccfan's supervising thread.
pub trait StreamHandler {
    /// Takes one line, in order. Returns why the worker must stop, when the line shows it went past a limit
    /// ccfan enforces.
    fn line(&mut self, line: &str) -> Option<String>;
    /// Called on every poll, lines or not (at most every few milliseconds): a chance to pass on what was held back.
    /// Returns why the worker must stop, when a limit ccfan enforces ran out in the meantime.
    fn idle(&mut self) -> Option<String> {
        None
    }
}

/// A worker whose stdout is an event stream (an agent CLI's JSONL): kept apart from stderr, in its own capped
/// file, each line handed to the handler while the worker runs. Lines queue in a bounded channel and each poll
/// takes a bounded number, so a flood of lines slows the worker down rather than ccfan's timeout and cancel checks.
pub struct EventStream<'a> {
    /// Where the stream is kept.
    pub path: &'a Path,
    /// What reads the lines.
    pub handler: &'a mut dyn StreamHandler,
}

impl std::fmt::Debug for EventStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Lines of an event stream waiting for ccfan (past this, the pump waits and the worker's writes block).
const LINE_QUEUE: usize = 4096;
/// Lines handled per poll, so that timeout, cancel and limit checks keep running under a flood.
const LINES_PER_POLL: usize = 512;

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
    /// The attempt token (also put in the environment as [`TOKEN_ENV`]).
    pub token: &'a str,
    /// Set to stop the process early.
    pub cancel: &'a AtomicBool,
    /// What the sandbox allows and limits.
    pub sandbox: &'a SandboxPolicy,
    /// Set when stdout is an event stream rather than part of the log.
    pub stream: Option<EventStream<'a>>,
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
    /// The sandbox backend it ran in.
    pub backend: &'static str,
    /// Whether the process could not write git's metadata (see [`Outcome::kept_git_metadata`]).
    pub git_protected: bool,
    /// Limits it ran into, and limits this machine could not enforce.
    pub notes: Vec<String>,
}

impl Outcome {
    /// Whether the worker could not write git's metadata (the worktree's index among it): true in bubblewrap and
    /// Landlock, which keep the git dirs read-only. Then what git recorded about the tree before the worker ran
    /// (the index's stat cache) can be trusted when its attempt is recorded.
    pub fn kept_git_metadata(&self) -> bool {
        self.git_protected
    }

    /// The outcome of a worker ccfan refused to start (its binary is missing or lacks a flag ccfan needs).
    pub fn not_started(message: String) -> Outcome {
        Outcome {
            exit: ExitStatus::SpawnFailed { message },
            output_bytes: 0,
            log_capped: false,
            duration: Duration::ZERO,
            leftovers_killed: 0,
            backend: "not started",
            git_protected: false,
            notes: Vec::new(),
        }
    }
}

/// A private temporary folder on the host (the Landlock and `none` backends; bubblewrap uses a tmpfs): made
/// with a random name and mode 0700, never an existing folder, removed when dropped.
struct PrivateTmp(tempfile::TempDir);

impl PrivateTmp {
    fn create(token: &str) -> Result<PrivateTmp, SandboxError> {
        tempfile::Builder::new()
            .prefix(&format!("ccfan-tmp-{token}-"))
            .tempdir()
            .map(PrivateTmp)
            .map_err(|error| SandboxError::Setup(format!("cannot create a private tmp: {error}")))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

/// The command for the chosen backend, with what the child must do before exec and the fds to keep open
/// until the spawn returns.
struct Prepared {
    command: Command,
    setup: proc::ChildSetup,
    keep: Vec<OwnedFd>,
    info: Option<std::io::PipeReader>,
    _tmp: Option<PrivateTmp>,
}

fn prepare(
    selected: &Backend,
    launch: &Launch<'_>,
    program: &Path,
    args: &[String],
    env: &mut Vec<(OsString, OsString)>,
) -> Result<Prepared, SandboxError> {
    let policy = launch.sandbox;
    let mut setup = proc::ChildSetup::default();
    let mut keep: Vec<OwnedFd> = Vec::new();
    let mut set_tmp = |value: OsString| {
        env.retain(|(name, _)| name != "TMPDIR");
        env.push(("TMPDIR".into(), value));
    };
    match selected {
        Backend::None | Backend::Landlock(_) => {
            let tmp = PrivateTmp::create(launch.token)?;
            set_tmp(tmp.path().as_os_str().to_owned());
            if let Backend::Landlock(_) = selected {
                let mut writable = policy.writable.clone();
                writable.push(tmp.path().to_path_buf());
                let ruleset =
                    landlock::ruleset(&writable, policy.network).map_err(SandboxError::Setup)?;
                setup.landlock = Some(ruleset.as_raw_fd());
                keep.push(ruleset);
                setup.seccomp = seccomp::programs(policy.network).map_err(SandboxError::Setup)?;
            }
            #[expect(
                clippy::disallowed_methods,
                reason = "the sandbox is the one door to processes"
            )]
            let mut command = Command::new(program);
            command.args(args);
            Ok(Prepared {
                command,
                setup,
                keep,
                info: None,
                _tmp: Some(tmp),
            })
        }
        Backend::Bubblewrap(bwrap_path) => {
            set_tmp("/tmp".into());
            let mut seccomp_fds = Vec::new();
            for program in seccomp::programs(policy.network).map_err(SandboxError::Setup)? {
                let (reader, mut writer) = std::io::pipe().map_err(SandboxError::Pipe)?;
                writer
                    .write_all(&seccomp::to_bytes(&program))
                    .map_err(SandboxError::Pipe)?;
                drop(writer);
                let fd = OwnedFd::from(reader);
                seccomp_fds.push(fd.as_raw_fd());
                keep.push(fd);
            }
            let (info, info_writer) = std::io::pipe().map_err(SandboxError::Pipe)?;
            let info_fd = OwnedFd::from(info_writer);
            setup.inherit.extend(seccomp_fds.iter().copied());
            setup.inherit.push(info_fd.as_raw_fd());
            let bwrap_args = bwrap::args(
                policy,
                launch.cwd,
                program,
                &seccomp_fds,
                Some(info_fd.as_raw_fd()),
            );
            keep.push(info_fd);
            #[expect(
                clippy::disallowed_methods,
                reason = "the sandbox is the one door to processes"
            )]
            let mut command = Command::new(bwrap_path);
            command.args(bwrap_args).args(args);
            Ok(Prepared {
                command,
                setup,
                keep,
                info: Some(info),
                _tmp: None,
            })
        }
    }
}

/// Whether bubblewrap reported that it started the program (`--info-fd` got the child's pid).
fn sandbox_started(info: Option<std::io::PipeReader>) -> bool {
    let Some(reader) = info else {
        return true;
    };
    let fd = OwnedFd::from(reader);
    let _ = rustix::fs::fcntl_setfl(&fd, rustix::fs::OFlags::NONBLOCK);
    let mut buffer = [0u8; 256];
    rustix::io::read(&fd, &mut buffer).is_ok_and(|read| read > 0)
}

/// The last line bubblewrap wrote about why it could not start the program.
fn bwrap_error(log: &Path) -> String {
    crate::util::read_regular(log, crate::util::MAX_WORKER_FILE)
        .ok()
        .and_then(|bytes| {
            String::from_utf8_lossy(&bytes)
                .lines()
                .rev()
                .find(|line| line.starts_with("bwrap:"))
                .map(str::to_string)
        })
        .unwrap_or_else(|| "bubblewrap exited before starting the program".to_string())
}

/// Times bubblewrap is started again when the host's mount table changed under it while it set up.
pub(crate) const MOUNT_RACE_TRIES: u32 = 6;

/// Whether bubblewrap failed before starting the program because a mount it was copying went away meanwhile
/// (another task's tree unmounted): nothing ran, so starting again is safe. Bubblewrap reports the child's pid
/// before the child sets up its mounts, so such a failure can also look like the program exiting 1: then the log
/// holds bubblewrap's one line and nothing else.
fn lost_a_mount_race(outcome: &Outcome, log: &Path) -> bool {
    let race = mount_race;
    match &outcome.exit {
        ExitStatus::SpawnFailed { message } => {
            race(message.trim_start_matches("the sandbox could not start: "))
        }
        ExitStatus::Code { code: 1 } if outcome.output_bytes < 4096 => {
            crate::util::read_regular(log, 4096).is_ok_and(|bytes| {
                let text = String::from_utf8_lossy(&bytes);
                text.trim().lines().count() == 1 && race(text.trim())
            })
        }
        _ => false,
    }
}

/// Whether bubblewrap's message says a mount it was copying went away meanwhile: remounting a submount of the
/// host's root failed (ENOENT when it is gone, EINVAL while it is being taken down), or a bind found its mount
/// point gone.
pub(crate) fn mount_race(text: &str) -> bool {
    text.starts_with("bwrap: ")
        && (text.contains("Unable to apply mount flags: remount")
            || (text.contains("No such file or directory")
                && (text.contains("Can't bind mount") || text.contains("Failed to make"))))
}

/// Runs `launch` to its end (exit, timeout, output limit or cancel) inside the sandbox its policy asks for,
/// then makes sure no process of its tree survives. Fails closed when that sandbox cannot run here. Copy-on-write
/// task trees are mounts that come and go while other sandboxes start: bubblewrap copies the host's mount table,
/// and one that vanished mid-copy fails its start before anything ran; such a start is tried again (6 times at most).
/// `on_spawn` hears every process started (a start tried again has a new pid).
pub fn run(mut launch: Launch<'_>, mut on_spawn: impl FnMut(u32)) -> Result<Outcome, SandboxError> {
    let mut stream = launch.stream.take();
    let mut tries = 1;
    loop {
        let mut outcome = run_once(&launch, &mut stream, &mut on_spawn)?;
        if tries < MOUNT_RACE_TRIES && lost_a_mount_race(&outcome, launch.log_path) {
            tracing::debug!("bubblewrap lost a race with a mount going away; starting it again");
            std::thread::sleep(Duration::from_millis(25 * u64::from(tries)));
            tries += 1;
            continue;
        }
        if tries > 1 {
            outcome.notes.push(format!(
                "the sandbox was started {tries} times: a mount went away while it started"
            ));
        }
        return Ok(outcome);
    }
}

fn run_once(
    launch: &Launch<'_>,
    stream: &mut Option<EventStream<'_>>,
    on_spawn: &mut dyn FnMut(u32),
) -> Result<Outcome, SandboxError> {
    let started = Instant::now();
    let selected = select(launch.sandbox.backend)?.backend;
    let git_protected = protects_git(&selected, launch.sandbox);
    let Some((program, args)) = launch.argv.split_first() else {
        return Ok(spawn_failed("the command is empty", &selected, started));
    };
    let mut env = launch.env.clone();
    let Some(resolved) = spec::resolve_program(program, launch.cwd, &env) else {
        return Ok(spawn_failed(
            &format!("{program}: no such executable (looked on the worker's PATH)"),
            &selected,
            started,
        ));
    };
    let limits = launch.sandbox.limits;
    let Outputs {
        log,
        reader,
        writer,
        writer_err,
        stream_io,
    } = open_outputs(launch, stream.as_ref())?;
    let cgroups = cgroup::Cgroups::create(launch.token, &limits);
    let mut notes = unenforced(&cgroups, &limits);
    let Prepared {
        mut command,
        mut setup,
        keep,
        info,
        _tmp,
    } = match prepare(&selected, launch, &resolved, args, &mut env) {
        Ok(prepared) => prepared,
        Err(error) => {
            cgroups.remove();
            return Err(error);
        }
    };
    setup.cgroup_procs = cgroups.procs_fds();
    command
        .current_dir(launch.cwd)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env(TOKEN_ENV, launch.token)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(writer_err);
    proc::prepare_child(&mut command, setup);
    let spawned = command.spawn();
    drop(command); // closes our copies of the pipe's write end
    drop(keep); // and of bubblewrap's seccomp and info fds
    let mut child = match spawned {
        Ok(child) => child,
        Err(error) => {
            drop(reader);
            let _ = log.finish();
            if let Some((file, _)) = stream_io {
                let _ = file.finish();
            }
            cgroups.remove();
            return Ok(spawn_failed(
                &format!("{program}: {error}"),
                &selected,
                started,
            ));
        }
    };
    let pid = child.id();
    on_spawn(pid);
    let pump = log.pump(reader);
    let (line_sender, lines) = std::sync::mpsc::sync_channel::<String>(LINE_QUEUE);
    let stream_pump =
        stream_io.map(|(file, stream_reader)| file.pump_lines(stream_reader, Some(line_sender)));
    let supervised = supervise(
        &mut child,
        launch,
        &cgroups,
        stream,
        &lines,
        (&pump, stream_pump.as_ref()),
        started,
    );
    let (status, stopped) = match supervised {
        Ok(ended) => ended,
        Err(error) => {
            cgroups.remove();
            return Err(error);
        }
    };
    // Whatever the worker left running (setsid children, daemons) dies with it.
    let leftovers_killed = proc::kill_tree(pid, launch.token, &cgroups);
    let (mut output_bytes, mut log_capped) = pump.finish(Duration::from_secs(3));
    if let Some(stream_pump) = stream_pump {
        let (bytes, capped) = drain_stream(stream, &lines, &stream_pump);
        output_bytes += bytes;
        log_capped |= capped;
    }
    // The lines sent just before the pump finished.
    if let Some(events) = stream.as_mut() {
        for line in lines.try_iter() {
            events.handler.line(&line);
        }
        let _ = events.handler.idle();
    }
    let started_ok = sandbox_started(info);
    let events = cgroups.events();
    let memory_exceeded = cgroups.memory_exceeded();
    cgroups.remove();
    notes.extend(events);
    let exit = stopped.unwrap_or_else(|| exit_of(status, started_ok, memory_exceeded, launch));
    Ok(Outcome {
        exit,
        output_bytes,
        log_capped,
        duration: started.elapsed(),
        leftovers_killed,
        backend: selected.name(),
        git_protected,
        notes,
    })
}

/// Where a worker's output goes: its log (stderr, and stdout unless an event stream takes it) and the pipes.
struct Outputs {
    log: log::CappedLog,
    /// What the log's pump reads.
    reader: std::io::PipeReader,
    /// The worker's stdout: the log's pipe, or the event stream's.
    writer: std::io::PipeWriter,
    /// The worker's stderr.
    writer_err: std::io::PipeWriter,
    /// The event stream's file and what its pump reads.
    stream_io: Option<(log::CappedLog, std::io::PipeReader)>,
}

/// Opens the worker's log, and its event stream's file when it has one, with their pipes.
fn open_outputs(
    launch: &Launch<'_>,
    stream: Option<&EventStream<'_>>,
) -> Result<Outputs, SandboxError> {
    let capped = |path: &std::path::Path| {
        log::CappedLog::create(path, launch.sandbox.log_limit).map_err(|source| SandboxError::Log {
            path: path.to_path_buf(),
            source,
        })
    };
    let log = capped(launch.log_path)?;
    let (reader, writer_err) = std::io::pipe().map_err(SandboxError::Pipe)?;
    // stdout: the log too, or the event stream's own pipe and file.
    let (stream_io, writer) = match stream {
        None => (None, writer_err.try_clone().map_err(SandboxError::Pipe)?),
        Some(events) => {
            let file = capped(events.path)?;
            let (stream_reader, stream_writer) = std::io::pipe().map_err(SandboxError::Pipe)?;
            (Some((file, stream_reader)), stream_writer)
        }
    };
    Ok(Outputs {
        log,
        reader,
        writer,
        writer_err,
        stream_io,
    })
}

/// Waits for the worker, feeding its event stream's lines to their handler, and stops its whole tree (after a
/// grace period) when it is cancelled, past its deadline, over its output limit or at a limit the handler saw:
/// how it ended, and why ccfan stopped it if it did. On a failed wait its tree is killed.
fn supervise(
    child: &mut std::process::Child,
    launch: &Launch<'_>,
    cgroups: &cgroup::Cgroups,
    stream: &mut Option<EventStream<'_>>,
    lines: &std::sync::mpsc::Receiver<String>,
    (pump, stream_pump): (&log::Pump, Option<&log::Pump>),
    started: Instant,
) -> Result<(std::process::ExitStatus, Option<ExitStatus>), SandboxError> {
    let pid = child.id();
    let limits = &launch.sandbox.limits;
    let deadline = started + launch.sandbox.timeout;
    let mut limit_hit: Option<String> = None;
    let mut stopped: Option<ExitStatus> = None;
    let mut poll = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok((status, stopped)),
            Ok(None) => {}
            Err(source) => {
                proc::kill_tree(pid, launch.token, cgroups);
                return Err(SandboxError::Wait { pid, source });
            }
        }
        if let Some(events) = stream.as_mut() {
            for line in lines.try_iter().take(LINES_PER_POLL) {
                if let Some(reason) = events.handler.line(&line) {
                    limit_hit.get_or_insert(reason);
                }
            }
            if let Some(reason) = events.handler.idle() {
                limit_hit.get_or_insert(reason);
            }
        }
        if stopped.is_none() {
            let output = pump.bytes() + stream_pump.map_or(0, log::Pump::bytes);
            if launch.cancel.load(Ordering::SeqCst) {
                stopped = Some(ExitStatus::Cancelled);
            } else if Instant::now() >= deadline {
                stopped = Some(ExitStatus::TimedOut);
            } else if output > limits.max_output {
                stopped = Some(ExitStatus::OverLimit {
                    limit: format!("output of {} bytes", limits.max_output),
                });
            } else if let Some(limit) = limit_hit.take() {
                stopped = Some(ExitStatus::OverLimit { limit });
            }
            if stopped.is_some() {
                proc::terminate_tree(pid, launch.token, cgroups, GRACE);
            }
        }
        // Short first polls, so that a quick process is not billed a whole poll interval.
        std::thread::sleep(poll);
        poll = (poll * 2).min(Duration::from_millis(15));
    }
}

/// Notes for the limits asked for that no cgroup on this machine can enforce.
fn unenforced(cgroups: &cgroup::Cgroups, limits: &crate::policy::SandboxLimits) -> Vec<String> {
    let enforced = cgroups.enforced(limits);
    let mut notes = Vec::new();
    if limits.memory.is_some() && !enforced.memory {
        notes.push(
            "memory limit not enforced: no writable memory cgroup on this machine".to_string(),
        );
    }
    if limits.pids.is_some() && !enforced.pids {
        notes.push(
            "process limit not enforced: no writable pids cgroup on this machine".to_string(),
        );
    }
    notes
}

/// Reads the event stream's last lines into its handler while its pump reads the last of the pipe (it waits
/// whenever the queue is full), for 3 s at most; the bytes it kept and whether it capped them.
fn drain_stream(
    stream: &mut Option<EventStream<'_>>,
    lines: &std::sync::mpsc::Receiver<String>,
    pump: &log::Pump,
) -> (u64, bool) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        if let Some(events) = stream.as_mut() {
            for line in lines.try_iter() {
                events.handler.line(&line);
            }
        }
        match pump.done() {
            Some(done) => return done,
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            None => return (pump.bytes(), false),
        }
    }
}

/// How a worker that ccfan did not stop ended: its code or signal, a sandbox that never started, or the memory
/// limit (a SIGKILL when the cgroup says memory ran out).
fn exit_of(
    status: std::process::ExitStatus,
    started_ok: bool,
    memory_exceeded: bool,
    launch: &Launch<'_>,
) -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(_), _) if !started_ok => ExitStatus::SpawnFailed {
            message: format!(
                "the sandbox could not start: {}",
                bwrap_error(launch.log_path)
            ),
        },
        // bubblewrap reports a child killed by SIGKILL as exit code 137.
        (Some(137), _) | (_, Some(9)) if memory_exceeded => ExitStatus::OverLimit {
            limit: format!(
                "memory of {} bytes",
                launch.sandbox.limits.memory.unwrap_or_default()
            ),
        },
        (Some(code), _) => ExitStatus::Code { code },
        (None, Some(signal)) => ExitStatus::Signal { signal },
        (None, None) => ExitStatus::Code { code: -1 },
    }
}

/// Whether `backend` keeps git's metadata of `policy` (the common dir, where a worktree's index lives) read-only:
/// bubblewrap always (its read-only binds go over the writable ones); Landlock only when no writable root contains
/// it, since it cannot take back inside a writable root what it granted; no sandbox never. (A worktree's `.git`
/// pointer is writable under Landlock; ccfan checks and restores it before any git call, so it is not counted.)
fn protects_git(backend: &Backend, policy: &SandboxPolicy) -> bool {
    let pointer = |kept: &std::path::Path| {
        kept.file_name() == Some(std::ffi::OsStr::new(".git"))
            && kept
                .parent()
                .is_some_and(|tree| policy.writable.iter().any(|writable| writable == tree))
    };
    match backend {
        Backend::Bubblewrap(_) => true,
        Backend::Landlock(_) => policy
            .read_only
            .iter()
            .filter(|kept| !pointer(kept))
            .all(|kept| {
                !policy
                    .writable
                    .iter()
                    .any(|writable| kept.starts_with(writable))
            }),
        Backend::None => false,
    }
}

fn spawn_failed(message: &str, backend: &Backend, started: Instant) -> Outcome {
    Outcome {
        exit: ExitStatus::SpawnFailed {
            message: message.to_string(),
        },
        output_bytes: 0,
        log_capped: false,
        duration: started.elapsed(),
        leftovers_killed: 0,
        backend: backend.name(),
        git_protected: false,
        notes: Vec::new(),
    }
}

/// Kills every process still carrying `token` (used when recovering runs whose ccfan died). Returns how many.
pub fn kill_leftovers(token: &str) -> usize {
    proc::kill_tree(0, token, &cgroup::Cgroups::existing(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_mount_that_vanished_under_bubblewrap_is_a_race_worth_another_start() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let race = "bwrap: Can't bind mount /oldroot/ on /newroot/: Unable to apply mount flags: remount \
                    \"/newroot/w/t\": No such file or directory";
        let failed = |message: &str| spawn_failed(message, &Backend::None, Instant::now());
        assert!(lost_a_mount_race(
            &failed(&format!("the sandbox could not start: {race}")),
            &log
        ));
        assert!(!lost_a_mount_race(
            &failed(
                "the sandbox could not start: bwrap: Can't find source path /x: No such file or directory"
            ),
            &log
        ));
        assert!(!lost_a_mount_race(&failed("x: no such executable"), &log));
        // Reported as the program's exit 1, with bubblewrap's line as the whole log.
        let exited = |output: &str| {
            std::fs::write(&log, output).unwrap();
            let mut outcome = failed("");
            outcome.exit = ExitStatus::Code { code: 1 };
            outcome.output_bytes = output.len() as u64;
            lost_a_mount_race(&outcome, &log)
        };
        assert!(exited(&format!("{race}\n")));
        assert!(exited(
            "bwrap: Can't bind mount /oldroot/ on /newroot/: Unable to apply mount flags: remount \"/newroot/t/w\": \
             Invalid argument\n"
        ));
        assert!(!exited(&format!("the program ran\n{race}\n")));
        assert!(!exited("bwrap: something else\n"));
    }

    #[test]
    fn landlock_protects_git_only_when_no_writable_root_holds_the_common_dir() {
        let settings = crate::policy::load_source(None).unwrap().sandbox;
        let tree = Tree {
            worktree: Path::new("/wt/run/t"),
            common_dir: Path::new("/repo/.git"),
            checkout: Path::new("/repo"),
            outbox: Some(Path::new("/repo/.git/ccfan/runs/r/t/attempt-1/outbox")),
        };
        let mut policy =
            SandboxPolicy::for_command(&settings, tree, Duration::from_secs(1), 1 << 20);
        let landlock = Backend::Landlock(4);
        assert!(protects_git(&landlock, &policy), "{policy:?}");
        assert!(protects_git(
            &Backend::Bubblewrap("/usr/bin/bwrap".into()),
            &policy
        ));
        assert!(!protects_git(&Backend::None, &policy));
        policy.writable.push("/repo".into());
        assert!(
            !protects_git(&landlock, &policy),
            "a writable /repo holds .git"
        );
        assert!(protects_git(
            &Backend::Bubblewrap("/usr/bin/bwrap".into()),
            &policy
        ));
    }
}
