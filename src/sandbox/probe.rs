//! The sandbox door, probes: runs a trusted host program briefly (`codex --version`, `claude --help`) to learn
//! what it supports, with a minimal environment, no stdin and a deadline, and returns what it printed.

use std::ffi::OsString;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `program args…` and returns its stdout (with stderr after it), or why it could not.
pub fn capture(
    program: &Path,
    args: &[&str],
    env: &[(OsString, OsString)],
    timeout: Duration,
) -> Result<String, String> {
    #[expect(
        clippy::disallowed_methods,
        reason = "the sandbox is the one door to processes"
    )]
    let mut command = Command::new(program);
    let (mut reader, writer) = std::io::pipe().map_err(|e| e.to_string())?;
    let writer_err = writer.try_clone().map_err(|e| e.to_string())?;
    let mut child = command
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(writer_err)
        .spawn()
        .map_err(|error| format!("{}: {error}", program.display()))?;
    drop(command);
    let (sender, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = reader.by_ref().take(1 << 20).read_to_end(&mut out);
        let _ = sender.send(out);
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "`{} {}` did not answer within {}s",
                    program.display(),
                    args.join(" "),
                    timeout.as_secs()
                ));
            }
            Err(error) => return Err(format!("{}: {error}", program.display())),
        }
    };
    // A grandchild that kept the pipe open must not hold ccfan up.
    let output = received
        .recv_timeout(Duration::from_secs(2))
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&output).into_owned();
    if status.success() {
        Ok(text)
    } else {
        Err(format!(
            "`{} {}` failed ({status}): {}",
            program.display(),
            args.join(" "),
            text.lines().last().unwrap_or("no message").trim()
        ))
    }
}
