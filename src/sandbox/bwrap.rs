//! Sandbox, bubblewrap backend (the default): the whole filesystem read-only (`--ro-bind / /`), a private sized
//! tmpfs over `/tmp` and the host's socket and shared-memory folders, the writable roots bound back writable and
//! the git metadata read-only over them (deepest bind last), new PID, IPC, UTS and (when the network is off)
//! network namespaces, every capability dropped, a new session, and death with ccfan.

use std::ffi::OsString;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

use super::SandboxPolicy;

/// Host folders replaced by an empty private tmpfs: temporary files and the usual homes of UNIX sockets
/// (a read-only bind does not stop `connect()` to a socket).
const HIDDEN: &[&str] = &["/tmp", "/var/tmp", "/run", "/dev/shm"];

/// Finds `bwrap` on the PATH.
pub fn find() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("bwrap"))
        .find(|candidate| candidate.is_file())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    ReadOnly,
    Writable,
}

/// The arguments that run `program` (already resolved to a path) under `policy`, in `cwd`.
pub fn args(
    policy: &SandboxPolicy,
    cwd: &Path,
    program: &Path,
    seccomp_fds: &[RawFd],
    info_fd: Option<RawFd>,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    let mut push = |items: &[&str]| args.extend(items.iter().map(OsString::from));
    push(&[
        "--die-with-parent",
        "--new-session",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--cap-drop",
        "ALL",
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
    ]);
    if !policy.network {
        push(&["--unshare-net"]);
    }
    for hidden in HIDDEN {
        let path = Path::new(hidden);
        let is_dir = std::fs::symlink_metadata(path).is_ok_and(|meta| meta.is_dir());
        if is_dir || *hidden == "/dev/shm" {
            if *hidden == "/tmp" {
                push(&["--size", &policy.limits.tmp_size.to_string()]);
            }
            push(&["--tmpfs", hidden]);
        }
    }
    let mut binds: Vec<(PathBuf, Mode)> = Vec::new();
    // What the worker must still see inside a hidden folder: its program's folder, DNS settings kept in /run.
    let hidden_parent = |path: &Path| HIDDEN.iter().any(|hidden| path.starts_with(hidden));
    if let Some(dir) = program.parent().filter(|dir| hidden_parent(dir)) {
        binds.push((dir.to_path_buf(), Mode::ReadOnly));
    }
    let resolv = std::fs::canonicalize("/etc/resolv.conf").ok();
    if let Some(target) = resolv.filter(|target| policy.network && hidden_parent(target)) {
        binds.push((target, Mode::ReadOnly));
    }
    binds.extend(
        policy
            .read_only
            .iter()
            .map(|path| (path.clone(), Mode::ReadOnly)),
    );
    binds.extend(
        policy
            .writable
            .iter()
            .map(|path| (path.clone(), Mode::Writable)),
    );
    // Shallow first, so that a read-only path inside a writable root (the `.git` pointer) wins, and a writable
    // root inside a read-only one (an attempt's outbox in the git common dir) wins too. At equal depth, read-only.
    binds.sort_by_key(|(path, mode)| (path.components().count(), *mode == Mode::ReadOnly));
    for (path, mode) in &binds {
        args.push(
            match mode {
                Mode::ReadOnly => "--ro-bind-try",
                Mode::Writable => "--bind-try",
            }
            .into(),
        );
        args.push(path.into());
        args.push(path.into());
    }
    for fd in seccomp_fds {
        args.push("--add-seccomp-fd".into());
        args.push(fd.to_string().into());
    }
    if let Some(fd) = info_fd {
        args.push("--info-fd".into());
        args.push(fd.to_string().into());
    }
    args.push("--chdir".into());
    args.push(cwd.into());
    args.push("--".into());
    args.push(program.into());
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::SandboxLimits;
    use std::time::Duration;

    fn policy(network: bool) -> SandboxPolicy {
        SandboxPolicy {
            backend: crate::policy::SandboxBackend::Bubblewrap,
            writable: vec![
                PathBuf::from("/w/tree"),
                PathBuf::from("/repo/.git/ccfan/runs/r/t/a/outbox"),
            ],
            read_only: vec![PathBuf::from("/w/tree/.git"), PathBuf::from("/repo/.git")],
            network,
            limits: SandboxLimits {
                memory: None,
                pids: None,
                tmp_size: 1024,
                max_output: 1 << 20,
            },
            timeout: Duration::from_secs(1),
            log_limit: 1024,
        }
    }

    fn text(args: &[OsString]) -> String {
        args.iter()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn read_only_git_metadata_is_bound_after_the_writable_roots() {
        let args = text(&args(
            &policy(false),
            Path::new("/w/tree"),
            Path::new("/bin/sh"),
            &[5, 6],
            Some(7),
        ));
        assert!(
            args.starts_with("--die-with-parent --new-session --unshare-pid"),
            "{args}"
        );
        assert!(args.contains("--cap-drop ALL --ro-bind / /"), "{args}");
        assert!(args.contains("--unshare-net"), "{args}");
        assert!(args.contains("--size 1024 --tmpfs /tmp"), "{args}");
        let tree = args.find("--bind-try /w/tree /w/tree").unwrap();
        let pointer = args
            .find("--ro-bind-try /w/tree/.git /w/tree/.git")
            .unwrap();
        let common = args.find("--ro-bind-try /repo/.git /repo/.git").unwrap();
        let outbox = args
            .find("--bind-try /repo/.git/ccfan/runs/r/t/a/outbox")
            .unwrap();
        assert!(tree < pointer && common < outbox, "{args}");
        assert!(
            args.ends_with(
                "--add-seccomp-fd 5 --add-seccomp-fd 6 --info-fd 7 --chdir /w/tree -- /bin/sh"
            ),
            "{args}"
        );
    }

    #[test]
    fn network_keeps_the_namespace_and_programs_under_tmp_stay_visible() {
        let args = text(&args(
            &policy(true),
            Path::new("/w/tree"),
            Path::new("/tmp/t/workers/w.sh"),
            &[],
            None,
        ));
        assert!(!args.contains("--unshare-net"), "{args}");
        assert!(
            args.contains("--ro-bind-try /tmp/t/workers /tmp/t/workers"),
            "{args}"
        );
    }
}
