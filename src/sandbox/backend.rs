//! Sandbox, backend choice: find out once per process which backends work on this machine (bubblewrap really
//! started, the kernel's Landlock ABI, seccomp), pick the one the policy asks for, and fail closed — with what to
//! install or configure — when it cannot run. `auto` falls back from bubblewrap to Landlock, never to nothing.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::policy::SandboxBackend;

/// A backend that works here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// bubblewrap at this path.
    Bubblewrap(PathBuf),
    /// Landlock (with this ABI version).
    Landlock(i64),
    /// No isolation.
    None,
}

impl Backend {
    /// Its name, as in the policy.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Bubblewrap(_) => "bubblewrap",
            Backend::Landlock(_) => "landlock",
            Backend::None => "none",
        }
    }
}

/// What the probes found.
#[derive(Debug, Clone)]
pub struct Probe {
    /// bubblewrap's path and version, or why it cannot run.
    pub bubblewrap: Result<(PathBuf, String), String>,
    /// Landlock's ABI version, or why it cannot be used.
    pub landlock: Result<i64, String>,
    /// Whether seccomp filters can be installed (and ccfan's compile).
    pub seccomp: Result<(), String>,
}

/// The backend the policy asked for cannot run here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {backend} sandbox cannot run here: {reason}\n  fix: {fix}")]
pub struct Unavailable {
    /// The backend asked for.
    pub backend: &'static str,
    /// Why not.
    pub reason: String,
    /// What to install or configure.
    pub fix: String,
}

/// The backend chosen for a policy, and the reason when `auto` fell back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    /// The backend.
    pub backend: Backend,
    /// Set when `auto` could not use bubblewrap.
    pub fallback: Option<String>,
}

const INSTALL_BWRAP: &str = "install bubblewrap (Debian/Ubuntu: `apt-get install bubblewrap`, Fedora: `dnf install bubblewrap`)";

/// Runs the probes once per process.
pub fn probe() -> &'static Probe {
    static PROBE: OnceLock<Probe> = OnceLock::new();
    PROBE.get_or_init(|| Probe {
        bubblewrap: probe_bwrap(),
        landlock: super::landlock::abi_version(),
        seccomp: probe_seccomp(),
    })
}

fn probe_seccomp() -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if !status.lines().any(|line| line.starts_with("Seccomp:")) {
        return Err("the kernel was built without seccomp".to_string());
    }
    super::seccomp::programs(false).map(|_| ())
}

fn probe_bwrap() -> Result<(PathBuf, String), String> {
    let Some(path) = super::bwrap::find() else {
        return Err("`bwrap` is not on the PATH".to_string());
    };
    #[expect(
        clippy::disallowed_methods,
        reason = "the sandbox is the one door to processes"
    )]
    let mut command = Command::new(&path);
    let version = command
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .map_err(|error| format!("{}: {error}", path.display()))?;
    // The same namespaces and binds a worker gets, on a trivial program; started again when it only lost a race
    // with a task tree being unmounted (a machine with runs going must not conclude bubblewrap is broken).
    let mut tries = 1;
    let output = loop {
        #[expect(
            clippy::disallowed_methods,
            reason = "the sandbox is the one door to processes"
        )]
        let mut command = Command::new(&path);
        let output = command
            .args(super::bwrap::ISOLATION)
            .args([
                "--unshare-net",
                "--size",
                "1048576",
                "--tmpfs",
                "/tmp",
                "--bind-try",
                "/tmp",
                "/tmp",
            ])
            .args(["--", "true"])
            .stdin(Stdio::null())
            .output()
            .map_err(|error| format!("{}: {error}", path.display()))?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.success()
            || tries >= super::MOUNT_RACE_TRIES
            || !super::mount_race(stderr.trim())
        {
            break output;
        }
        std::thread::sleep(std::time::Duration::from_millis(25 * u64::from(tries)));
        tries += 1;
    };
    if output.status.success() {
        Ok((path, version))
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(format!(
            "`{}` failed: {}",
            path.display(),
            stderr.lines().last().unwrap_or("no message").trim()
        ))
    }
}

fn bubblewrap_unavailable(reason: &str) -> Unavailable {
    let fix = if reason.contains("not on the PATH") {
        format!("{INSTALL_BWRAP}, or set `[sandbox] backend = \"landlock\"` (weaker) in ccfan.toml")
    } else {
        "let bubblewrap create namespaces (unprivileged user namespaces must be allowed: \
         `sysctl kernel.unprivileged_userns_clone=1`; on Ubuntu 24.04 an AppArmor profile for bwrap), \
         or set `[sandbox] backend = \"landlock\"` (weaker) in ccfan.toml"
            .to_string()
    };
    Unavailable {
        backend: "bubblewrap",
        reason: reason.to_string(),
        fix,
    }
}

fn landlock_unavailable(reason: &str) -> Unavailable {
    Unavailable {
        backend: "landlock",
        reason: reason.to_string(),
        fix: format!(
            "use a kernel with Landlock enabled (5.13 or newer, `lsm=…,landlock`), or {INSTALL_BWRAP} and set \
             `[sandbox] backend = \"bubblewrap\"`; `backend = \"none\"` runs workers without any isolation"
        ),
    }
}

/// Picks the backend for `configured`, or says why it cannot run and how to fix that.
pub fn select(configured: SandboxBackend) -> Result<Selected, Unavailable> {
    let probe = probe();
    let needs_seccomp = |backend: &'static str| -> Result<(), Unavailable> {
        probe.seccomp.clone().map_err(|reason| Unavailable {
            backend,
            reason,
            fix: "use a kernel with seccomp filters (CONFIG_SECCOMP_FILTER)".to_string(),
        })
    };
    match configured {
        SandboxBackend::None => Ok(Selected {
            backend: Backend::None,
            fallback: None,
        }),
        SandboxBackend::Bubblewrap => {
            needs_seccomp("bubblewrap")?;
            match &probe.bubblewrap {
                Ok((path, _)) => Ok(Selected {
                    backend: Backend::Bubblewrap(path.clone()),
                    fallback: None,
                }),
                Err(reason) => Err(bubblewrap_unavailable(reason)),
            }
        }
        SandboxBackend::Landlock => {
            needs_seccomp("landlock")?;
            match &probe.landlock {
                Ok(abi) => Ok(Selected {
                    backend: Backend::Landlock(*abi),
                    fallback: None,
                }),
                Err(reason) => Err(landlock_unavailable(reason)),
            }
        }
        // Container backends run workers in containers; ccfan's own commands run here as with `auto`.
        SandboxBackend::Auto
        | SandboxBackend::Podman
        | SandboxBackend::Docker
        | SandboxBackend::Kubernetes => {
            needs_seccomp("auto")?;
            match (&probe.bubblewrap, &probe.landlock) {
                (Ok((path, _)), _) => Ok(Selected {
                    backend: Backend::Bubblewrap(path.clone()),
                    fallback: None,
                }),
                (Err(why), Ok(abi)) => Ok(Selected {
                    backend: Backend::Landlock(*abi),
                    fallback: Some(format!(
                        "bubblewrap cannot run here ({why}); using the weaker Landlock sandbox — {}",
                        bubblewrap_unavailable(why).fix
                    )),
                }),
                (Err(bwrap), Err(landlock)) => Err(Unavailable {
                    backend: "auto",
                    reason: format!("bubblewrap: {bwrap}; landlock: {landlock}"),
                    fix: format!(
                        "{INSTALL_BWRAP}; or set `[sandbox] backend = \"none\"` in ccfan.toml to run workers \
                         without isolation"
                    ),
                }),
            }
        }
    }
}
