//! MCP hand-off: long operations (a delegated run, rework, retry, accept, merge, rollback) run in their own ccfan
//! process, detached from the server, so the tool answers at once and the work outlives the MCP session (a client
//! that restarts its server loses nothing). The child claims the run in the store like any CLI command — that
//! claim is the lease that keeps two processes from carrying one task — and the server waits only until the
//! operation has visibly started (or ended early, e.g. refused).

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::errors::{ErrorCode, ToolError};
use crate::git::RepoPaths;
use crate::paths::StateLayout;

/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(25);

/// A detached ccfan process doing one operation.
#[derive(Debug)]
pub struct Job {
    child: Child,
    /// Its stdout (the command's `--json` document).
    pub out: PathBuf,
    /// Its stderr (progress and errors).
    pub log: PathBuf,
}

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    /// The process ended.
    Exited(ExitStatus),
    /// The condition held.
    Met,
    /// The time ran out.
    TimedOut,
    /// The client cancelled the request.
    Cancelled,
}

impl Job {
    /// Writes `request` to the hand-off folder and starts `ccfan -C <repo> job <request>` in its own process
    /// group, with its output there too (`<name>.request.json`, `<name>.json`, `<name>.log`).
    pub fn spawn(
        exe: &Path,
        env: &[(OsString, Option<OsString>)],
        repo: &RepoPaths,
        name: &str,
        request: &crate::pipeline::job::JobRequest,
    ) -> Result<Job, ToolError> {
        let dir = StateLayout::of(repo).handoff_dir();
        let failed = |what: &str, error: std::io::Error| {
            ToolError::new(
                ErrorCode::StartFailed,
                format!("cannot start the ccfan process ({what}): {error}"),
            )
        };
        std::fs::create_dir_all(&dir).map_err(|e| failed("hand-off folder", e))?;
        let out = dir.join(format!("{name}.json"));
        let log = dir.join(format!("{name}.log"));
        let stdout = File::create(&out).map_err(|e| failed("output file", e))?;
        let stderr = File::create(&log).map_err(|e| failed("log file", e))?;
        let request_file = dir.join(format!("{name}.request.json"));
        request
            .write(&request_file)
            .map_err(|e| failed("request file", e))?;
        let args: Vec<OsString> = vec!["job".into(), request_file.into_os_string()];
        let mut full: Vec<OsString> = vec!["-C".into(), repo.workdir.clone().into_os_string()];
        full.extend(args.iter().cloned());
        let child = crate::sandbox::detach::spawn_ccfan(exe, &full, env, stdout, stderr)
            .map_err(|e| failed(&exe.display().to_string(), e))?;
        tracing::info!(
            pid = child.id(),
            operation = request.operation(),
            "handed an operation to its own ccfan process"
        );
        Ok(Job { child, out, log })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the process exits, `met()` holds, `deadline` passes or the client cancels.
    pub async fn wait(
        &mut self,
        deadline: Instant,
        cancel: &CancellationToken,
        mut met: impl FnMut() -> bool,
    ) -> Waited {
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Waited::Exited(status);
            }
            if met() {
                return Waited::Met;
            }
            if Instant::now() >= deadline {
                return Waited::TimedOut;
            }
            tokio::select! {
                () = cancel.cancelled() => return Waited::Cancelled,
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// The command's JSON document, once it exited.
    pub fn output(&self) -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(&self.out).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Why it failed, from its exit status and the end of its log.
    pub fn failure(&self, status: ExitStatus) -> ToolError {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let error = log
            .lines()
            .rev()
            .find_map(|line| line.strip_prefix("error: "))
            .map(str::to_string);
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        let message = error.unwrap_or_else(|| format!("the ccfan process ended with {status}"));
        // `ccfan job` says why it could not start as a typed code on stdout.
        let typed = self
            .output()
            .and_then(|doc| doc["error"]["code"].as_str().map(str::to_string));
        let code = if typed.as_deref() == Some("busy") {
            ErrorCode::Busy
        } else if status.code() == Some(2) {
            ErrorCode::InvalidConfig
        } else {
            ErrorCode::StartFailed
        };
        ToolError::new(code, message).details(serde_json::json!({
            "exit_code": status.code(),
            "log": self.log.display().to_string(),
            "log_tail": tail.join("\n"),
        }))
    }

    /// Leaves the process running on its own; a thread reaps it when it ends.
    pub fn detach(self) {
        let mut child = self.child;
        let spawned = std::thread::Builder::new()
            .name("ccfan-reaper".to_string())
            .spawn(move || {
                let _ = child.wait();
            });
        if let Err(error) = spawned {
            tracing::warn!("cannot watch a handed-off ccfan process: {error}");
        }
    }
}
