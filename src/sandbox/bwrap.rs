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

/// The namespaces, capabilities and base mounts every sandboxed process gets.
pub const ISOLATION: &[&str] = &[
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
];

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
    push(ISOLATION);
    if !policy.network {
        push(&["--unshare-net"]);
    }
    for hidden in HIDDEN {
        let path = Path::new(hidden);
        let is_dir = std::fs::symlink_metadata(path).is_ok_and(|meta| meta.is_dir());
        if is_dir || *hidden == "/dev/shm" {
            // Every private tmpfs is capped: an uncapped one takes up to half the machine's memory.
            push(&[
                "--size",
                &policy.limits.tmp_size.to_string(),
                "--tmpfs",
                hidden,
            ]);
        }
    }
    let mut binds: Vec<(PathBuf, Mode)> = Vec::new();
    // What the worker must still see inside a hidden folder: its program, DNS settings kept in /run.
    let hidden_parent = |path: &Path| HIDDEN.iter().any(|hidden| path.starts_with(hidden));
    if hidden_parent(program) {
        binds.push((program.to_path_buf(), Mode::ReadOnly));
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
        // A read-only path that exists must be protected (`--ro-bind` fails the start if it cannot); one that does
        // not exist has nothing to protect. Extra writable roots may be missing on this machine.
        let exists = std::fs::symlink_metadata(path).is_ok();
        args.push(
            match mode {
                Mode::ReadOnly if exists => "--ro-bind",
                Mode::ReadOnly => continue,
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
        let root = tempfile::tempdir().unwrap();
        let tree = root.path().join("tree");
        let common = root.path().join("repo/.git");
        let outbox = common.join("ccfan/runs/r/t/a/outbox");
        std::fs::create_dir_all(&tree).unwrap();
        std::fs::create_dir_all(&outbox).unwrap();
        std::fs::write(tree.join(".git"), "gitdir: x").unwrap();
        let mut policy = policy(false);
        policy.writable = vec![tree.clone(), outbox.clone()];
        policy.read_only = vec![tree.join(".git"), common.clone()];
        let args = text(&args(
            &policy,
            &tree,
            Path::new("/bin/sh"),
            &[5, 6],
            Some(7),
        ));
        let (tree, common, outbox) = (tree.display(), common.display(), outbox.display());
        assert!(
            args.starts_with("--die-with-parent --new-session --unshare-pid"),
            "{args}"
        );
        assert!(args.contains("--cap-drop ALL --ro-bind / /"), "{args}");
        assert!(args.contains("--unshare-net"), "{args}");
        assert!(args.contains("--size 1024 --tmpfs /tmp"), "{args}");
        assert!(args.contains("--size 1024 --tmpfs /run"), "{args}");
        let at = |needle: String| {
            args.find(&needle)
                .unwrap_or_else(|| panic!("{needle}: {args}"))
        };
        let tree_at = at(format!("--bind-try {tree} {tree}"));
        let pointer_at = at(format!("--ro-bind {tree}/.git {tree}/.git"));
        let common_at = at(format!("--ro-bind {common} {common}"));
        let outbox_at = at(format!("--bind-try {outbox} {outbox}"));
        assert!(tree_at < pointer_at && common_at < outbox_at, "{args}");
        assert!(
            args.ends_with(&format!(
                "--add-seccomp-fd 5 --add-seccomp-fd 6 --info-fd 7 --chdir {tree} -- /bin/sh"
            )),
            "{args}"
        );
    }

    #[test]
    fn network_keeps_the_namespace_and_only_the_program_under_tmp_stays_visible() {
        let missing = text(&args(
            &policy(true),
            Path::new("/w"),
            Path::new("/tmp/ccfan-none/w.sh"),
            &[],
            None,
        ));
        assert!(!missing.contains("--unshare-net"), "{missing}");
        assert!(
            !missing.contains("--ro-bind /tmp/"),
            "a missing path is not bound: {missing}"
        );
        let dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
        let program = dir.path().join("w.sh");
        std::fs::write(&program, "").unwrap();
        let args = text(&args(&policy(true), Path::new("/w"), &program, &[], None));
        let shown = program.display();
        assert!(
            args.contains(&format!("--ro-bind {shown} {shown}")),
            "{args}"
        );
        assert!(
            !args.contains(&format!("--ro-bind {} ", dir.path().display())),
            "{args}"
        );
    }
}
