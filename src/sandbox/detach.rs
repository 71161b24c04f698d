//! The sandbox door, for ccfan itself: starts another ccfan process (not a worker, so no sandbox) detached in its
//! own process group, so the MCP server can hand it long work that outlives the server.

use std::ffi::OsString;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Starts `exe args…` (with `env` changes: `None` removes a variable) with stdin closed and stdout/stderr into the given files, in a new process group (a
/// Ctrl-C for the caller's group, or the caller's exit, does not reach it).
pub fn spawn_ccfan(
    exe: &Path,
    args: &[OsString],
    env: &[(OsString, Option<OsString>)],
    stdout: File,
    stderr: File,
) -> std::io::Result<Child> {
    #[expect(
        clippy::disallowed_methods,
        reason = "the sandbox module is the one door to processes"
    )]
    let mut command = Command::new(exe);
    for (name, value) in env {
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
    }
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0);
    command.spawn()
}
