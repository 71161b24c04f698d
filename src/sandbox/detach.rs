//! The sandbox door, for ccfan itself and the person at the terminal: starts another ccfan process (not a worker,
//! so no sandbox) detached in its own process group, so the MCP server can hand it long work that outlives the
//! server; and opens a person's shell in a task tree (`ccfan open --shell`), unsandboxed — it is theirs.

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

/// Runs the person's shell (`$SHELL`, else `sh`) in `dir`, attached to the terminal, and waits for it; returns its
/// exit code (1 when a signal ended it).
pub fn person_shell(dir: &Path) -> std::io::Result<i32> {
    let shell = std::env::var_os("SHELL")
        .filter(|shell| !shell.is_empty())
        .unwrap_or_else(|| OsString::from("sh"));
    #[expect(
        clippy::disallowed_methods,
        reason = "the sandbox module is the one door to processes"
    )]
    let status = Command::new(shell).current_dir(dir).status()?;
    Ok(status.code().unwrap_or(1))
}

/// Opens `url` in the person's browser (`$BROWSER`, else `xdg-open`), detached from ccfan, its output dropped.
pub fn open_browser(url: &str) -> std::io::Result<()> {
    let program = std::env::var_os("BROWSER")
        .filter(|value| !value.is_empty())
        .unwrap_or_else(|| "xdg-open".into());
    #[expect(
        clippy::disallowed_methods,
        reason = "the sandbox module is the one door to processes; a browser is the person's own program"
    )]
    let mut child = std::process::Command::new(&program)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()?;
    // Reaped in the background: xdg-open returns once the browser has the page.
    std::thread::spawn(move || child.wait());
    Ok(())
}
