//! Sandbox, `ccfan doctor`: which backends work on this machine and why the others do not, which one the policy
//! picks, and which limits the machine's cgroups can enforce.

use serde::Serialize;

use super::backend::{probe, select};

/// One backend's status.
#[derive(Debug, Clone, Serialize)]
pub struct BackendStatus {
    /// `bubblewrap`, `landlock` or `none`.
    pub name: &'static str,
    /// Whether it works here.
    pub works: bool,
    /// Version, or why it does not work.
    pub detail: String,
}

/// What `ccfan doctor` reports about sandboxing.
#[derive(Debug, Clone, Serialize)]
pub struct SandboxReport {
    /// Every backend.
    pub backends: Vec<BackendStatus>,
    /// seccomp filters.
    pub seccomp: BackendStatus,
    /// The backend the policy asks for.
    pub configured: &'static str,
    /// The backend that will run workers, if any.
    pub selected: Option<&'static str>,
    /// Why `auto` fell back, or why the configured backend cannot run (with the fix).
    pub problem: Option<String>,
    /// What the cgroups can enforce here.
    pub cgroups: Vec<String>,
    /// With a container backend: whether its engine answers and holds the image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<BackendStatus>,
}

/// Probes the machine for the policy's sandbox settings.
pub fn report(settings: &crate::policy::SandboxSettings) -> SandboxReport {
    let configured = settings.backend;
    let probe = probe();
    let backends = vec![
        BackendStatus {
            name: "bubblewrap",
            works: probe.bubblewrap.is_ok(),
            detail: match &probe.bubblewrap {
                Ok((path, version)) => format!("{version} at {}", path.display()),
                Err(why) => why.clone(),
            },
        },
        BackendStatus {
            name: "landlock",
            works: probe.landlock.is_ok(),
            detail: match &probe.landlock {
                Ok(abi) => format!(
                    "ABI {abi} (weaker: the worktree's .git pointer stays writable, so ccfan restores it; host processes stay visible)"
                ),
                Err(why) => why.clone(),
            },
        },
        BackendStatus {
            name: "none",
            works: true,
            detail: "no isolation: only a cleaned environment, limits and a whole-tree kill"
                .to_string(),
        },
    ];
    let seccomp = BackendStatus {
        name: "seccomp",
        works: probe.seccomp.is_ok(),
        detail: match &probe.seccomp {
            Ok(()) => "filters compile and the kernel supports them".to_string(),
            Err(why) => why.clone(),
        },
    };
    let (selected, problem) = match select(configured) {
        Ok(selected) => (Some(selected.backend.name()), selected.fallback),
        Err(unavailable) => (None, Some(unavailable.to_string())),
    };
    SandboxReport {
        backends,
        seccomp,
        configured: configured.as_str(),
        selected,
        problem,
        cgroups: super::cgroup::describe(),
        container: settings
            .container
            .as_ref()
            .filter(|_| configured.is_container())
            .map(|container| {
                let checked = match configured {
                    crate::policy::SandboxBackend::Kubernetes => {
                        super::kubernetes::check(&settings.kubernetes, &container.image)
                    }
                    _ => super::engine::check(configured, container),
                };
                BackendStatus {
                    name: configured.as_str(),
                    works: checked.is_ok(),
                    detail: checked.unwrap_or_else(|why| why),
                }
            }),
    }
}
