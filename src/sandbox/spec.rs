//! Sandbox, what a process may do: a [`SandboxPolicy`] resolved once from the policy file and the worker profile
//! (writable roots, read-only git metadata, network, limits) and the cleaned environment it starts with.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::model::WorkerProfile;
use crate::policy::{SandboxBackend, SandboxLimits, SandboxSettings};

/// Everything the sandbox enforces on one process tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxPolicy {
    /// The backend the policy asks for.
    pub backend: SandboxBackend,
    /// Paths it may write (its worktree, its outbox, the policy's and profile's extra roots).
    pub writable: Vec<PathBuf>,
    /// Paths kept read-only even inside a writable root (the worktree's `.git` pointer, the git common dir).
    pub read_only: Vec<PathBuf>,
    /// Whether it reaches the network.
    pub network: bool,
    /// Memory, processes, private tmp, output.
    pub limits: SandboxLimits,
    /// Wall-clock limit.
    pub timeout: Duration,
    /// Bytes of output kept in the log.
    pub log_limit: u64,
}

/// The worktree-specific paths of a sandboxed process.
#[derive(Debug, Clone, Copy)]
pub struct Tree<'a> {
    /// The worktree (or verification checkout) it runs in, writable.
    pub worktree: &'a Path,
    /// The repository's git common dir, read-only.
    pub common_dir: &'a Path,
    /// The user's checkout, read-only (visible even when it lies in a folder the sandbox hides, like `/tmp`).
    pub checkout: &'a Path,
    /// A folder for files it hands back to ccfan (the final report), writable.
    pub outbox: Option<&'a Path>,
}

fn real(path: &Path) -> PathBuf {
    crate::paths::real_path(path)
}

impl SandboxPolicy {
    fn new(
        settings: &SandboxSettings,
        tree: Tree<'_>,
        network: bool,
        timeout: Duration,
        log_limit: u64,
    ) -> Self {
        let mut writable = vec![real(tree.worktree)];
        writable.extend(tree.outbox.map(real));
        writable.extend(settings.writable.iter().map(|path| real(path)));
        let read_only = vec![
            real(tree.checkout),
            real(&tree.worktree.join(".git")),
            real(tree.common_dir),
        ];
        SandboxPolicy {
            backend: settings.backend,
            writable,
            read_only,
            network,
            limits: settings.limits,
            timeout,
            log_limit,
        }
    }

    /// A worker's policy: network as its profile (else the policy) says, its profile's extra writable roots.
    pub fn for_worker(
        settings: &SandboxSettings,
        profile: &WorkerProfile,
        tree: Tree<'_>,
        timeout: Duration,
        log_limit: u64,
    ) -> Self {
        let network = profile.network.unwrap_or(settings.network);
        let mut policy = SandboxPolicy::new(settings, tree, network, timeout, log_limit);
        policy
            .writable
            .extend(profile.writable.iter().map(|path| real(path)));
        policy
    }

    /// No sandbox of ccfan's own around a process in `tree`: for the runner of a portable attempt, inside a
    /// container or pod that is the boundary (and already holds only what the attempt was given).
    pub fn unconfined(tree: &Path, timeout: Duration, log_limit: u64) -> Self {
        SandboxPolicy {
            backend: SandboxBackend::None,
            writable: vec![real(tree)],
            read_only: Vec::new(),
            network: true,
            limits: SandboxLimits {
                memory: None,
                pids: None,
                tmp_size: 1 << 30,
                max_output: 1 << 30,
            },
            timeout,
            log_limit,
        }
    }

    /// Keeps `worktree` visible but read-only (plan mode: the worker reads the tree and changes nothing).
    pub fn read_only_tree(&mut self, worktree: &Path) {
        let tree = real(worktree);
        self.writable.retain(|path| *path != tree);
        self.read_only.push(tree);
    }

    /// A probe's policy (`codex --version`, `claude --help`): no network, nothing writable but `scratch`, and
    /// `install` (the program's installation) visible read-only even in a folder the sandbox hides.
    pub fn for_probe(
        settings: &SandboxSettings,
        scratch: &Path,
        install: &Path,
        timeout: Duration,
    ) -> Self {
        SandboxPolicy {
            backend: settings.backend,
            writable: vec![real(scratch)],
            read_only: vec![real(install)],
            network: false,
            limits: settings.limits,
            timeout,
            log_limit: 1 << 20,
        }
    }

    /// A test's or check's policy: network only when `sandbox.test_network` says so.
    pub fn for_command(
        settings: &SandboxSettings,
        tree: Tree<'_>,
        timeout: Duration,
        log_limit: u64,
    ) -> Self {
        SandboxPolicy::new(settings, tree, settings.test_network, timeout, log_limit)
    }
}

/// Builds a worker's environment: the policy's allowlist and the profile's pass-through names from the host,
/// then the profile's own variables, then `extra` (ccfan's `CCFAN_*`). Nothing else reaches the worker.
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
        network: None,
        writable: Vec::new(),
    };
    worker_env(settings, &plain, extra)
}

/// Finds `program` the way `execvp` would with the `PATH` of `env` (a name with a `/` is taken as a path).
pub fn resolve_program(program: &str, cwd: &Path, env: &[(OsString, OsString)]) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |path: &Path| {
        std::fs::metadata(path)
            .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let path = cwd.join(program);
        return executable(&path).then_some(path);
    }
    let path = env.iter().find(|(name, _)| name == "PATH").map_or_else(
        || OsString::from("/usr/local/bin:/usr/bin:/bin"),
        |(_, value)| value.clone(),
    );
    std::env::split_paths(&path)
        .map(|dir| cwd.join(dir).join(program))
        .find(|candidate| executable(candidate))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_resolve_like_execvp() {
        let env = vec![(
            OsString::from("PATH"),
            OsString::from("/nonexistent:/bin:/usr/bin"),
        )];
        let sh = resolve_program("sh", Path::new("/"), &env).unwrap();
        assert!(sh.ends_with("sh"), "{}", sh.display());
        assert_eq!(
            resolve_program("no-such-program-ccfan", Path::new("/"), &env),
            None
        );
        assert_eq!(resolve_program("./missing.sh", Path::new("/"), &env), None);
    }
}
