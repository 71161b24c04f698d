//! Policy, `[sandbox]`: which isolation backend runs workers, tests and checks, whether they reach the network,
//! what they may write besides their worktree, and the limits (memory, processes, private tmp, output) they get.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::kubernetes::{KubernetesSection, KubernetesSettings};
use crate::input::InputError;
use crate::util::parse_size;

/// Which sandbox backend the policy asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxBackend {
    /// bubblewrap where it works, else landlock (with a warning); never falls back to no sandbox.
    Auto,
    /// bubblewrap: mount, PID and network namespaces, read-only git metadata, private tmp.
    Bubblewrap,
    /// Landlock: weaker (the worktree's `.git` pointer stays writable; ccfan checks and restores it).
    Landlock,
    /// No OS isolation: a plain child with a cleaned environment and whole-tree kill. Only when asked for.
    None,
    /// Workers run in Podman containers (its Docker-compatible API), one per attempt, as portable attempts; ccfan's
    /// own commands (tests, checks, probes) run locally as with `auto`.
    Podman,
    /// Workers run in Docker containers, as with `podman`.
    Docker,
    /// Workers run in Kubernetes Jobs, one per attempt, as portable attempts (`[sandbox.kubernetes]`).
    Kubernetes,
}

impl SandboxBackend {
    /// The name used in the policy file.
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxBackend::Auto => "auto",
            SandboxBackend::Bubblewrap => "bubblewrap",
            SandboxBackend::Landlock => "landlock",
            SandboxBackend::None => "none",
            SandboxBackend::Podman => "podman",
            SandboxBackend::Docker => "docker",
            SandboxBackend::Kubernetes => "kubernetes",
        }
    }

    /// Whether workers run in containers elsewhere (`podman`, `docker`, `kubernetes`) as portable attempts.
    pub fn is_container(self) -> bool {
        matches!(
            self,
            SandboxBackend::Podman | SandboxBackend::Docker | SandboxBackend::Kubernetes
        )
    }
}

/// `[sandbox.container]`: the engine and image workers run in with `backend = "podman"` or `"docker"`.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSettings {
    /// The worker image (it must hold ccfan, for `ccfan runner`; see the repository's `Containerfile`).
    pub image: String,
    /// The engine's API socket (`unix:///…` or `tcp://…`); `None`: `$DOCKER_HOST`, else the engine's default.
    pub socket: Option<String>,
    /// CPUs per attempt (`None`: no limit).
    pub cpus: Option<f64>,
}

impl Eq for ContainerSettings {}

impl SandboxSettings {
    /// No sandbox of ccfan's own: the settings of a runner inside a container, which is the sandbox there.
    pub fn unconfined() -> SandboxSettings {
        SandboxSettings {
            backend: SandboxBackend::None,
            network: true,
            test_network: true,
            env_allow: Vec::new(),
            writable: Vec::new(),
            limits: SandboxLimits {
                memory: None,
                pids: None,
                tmp_size: 1 << 30,
                max_output: 1 << 30,
            },
            container: None,
            kubernetes: super::KubernetesSettings::default(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ContainerSection {
    image: Option<Spanned<String>>,
    socket: Option<String>,
    cpus: Option<Spanned<f64>>,
}

/// Resource limits of one sandboxed process tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SandboxLimits {
    /// Memory in bytes (a cgroup limit; `None`: unlimited).
    pub memory: Option<u64>,
    /// Processes and threads (a cgroup `pids.max`; `None`: unlimited).
    pub pids: Option<u64>,
    /// Size of the private tmp in bytes.
    pub tmp_size: u64,
    /// Output in bytes after which the process tree is stopped (the log keeps less: `run.log_limit`).
    pub max_output: u64,
}

/// Sandbox settings resolved from the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxSettings {
    /// The backend asked for.
    pub backend: SandboxBackend,
    /// Whether workers reach the network (a worker profile's `network` wins).
    pub network: bool,
    /// Whether tests and custom checks reach the network.
    pub test_network: bool,
    /// Host variables passed to every worker.
    pub env_allow: Vec<String>,
    /// Paths workers, tests and checks may write besides their worktree (absolute).
    pub writable: Vec<PathBuf>,
    /// Limits.
    pub limits: SandboxLimits,
    /// The container engine and image (`backend = "podman"`, `"docker"` or `"kubernetes"`).
    pub container: Option<ContainerSettings>,
    /// The cluster (`backend = "kubernetes"`).
    pub kubernetes: KubernetesSettings,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SandboxSection {
    backend: Option<Spanned<String>>,
    network: Option<bool>,
    test_network: Option<bool>,
    env_allow: Option<Vec<String>>,
    writable: Option<Vec<String>>,
    memory: Option<Spanned<String>>,
    pids: Option<Spanned<i64>>,
    tmp_size: Option<Spanned<String>>,
    max_output: Option<Spanned<String>>,
    container: Option<ContainerSection>,
    kubernetes: Option<KubernetesSection>,
}

/// Expands `~/` against `$HOME` and makes a relative path absolute against `base_dir`.
pub fn expand_path(text: &str, base_dir: &Path) -> PathBuf {
    let home = || {
        std::env::var_os("HOME")
            .filter(|home| !home.is_empty())
            .map(PathBuf::from)
    };
    if let Some(home) = home().filter(|_| text == "~") {
        return home;
    }
    if let (Some(rest), Some(home)) = (text.strip_prefix("~/"), home()) {
        return home.join(rest);
    }
    base_dir.join(text)
}

fn size(
    file: &Path,
    source: &str,
    key: &str,
    value: &Spanned<String>,
    allow_off: bool,
) -> Result<Option<u64>, InputError> {
    if allow_off && value.get_ref().trim() == "off" {
        return Ok(None);
    }
    match parse_size(value.get_ref()) {
        Ok(0) | Err(_) => Err(InputError::new(
            file,
            format!("`{}` is not a size", value.get_ref()),
        )
        .key(key)
        .at_offset(source, Some(value.span().start))
        .fix(if allow_off {
            r#"write e.g. "512MiB" or "4GiB", or "off" for no limit"#
        } else {
            r#"write e.g. "512MiB" or "4GiB""#
        })),
        Ok(bytes) => Ok(Some(bytes)),
    }
}

/// Applies a `[sandbox]` section over `base` (the preset's settings).
pub(super) fn resolve(
    file: &Path,
    source: &str,
    section: Option<SandboxSection>,
    base: Option<&SandboxSettings>,
    base_dir: &Path,
) -> Result<SandboxSettings, InputError> {
    let section = section.unwrap_or_default();
    let backend = match &section.backend {
        Some(name) => match name.get_ref().as_str() {
            "auto" => SandboxBackend::Auto,
            "bubblewrap" | "bwrap" => SandboxBackend::Bubblewrap,
            "landlock" => SandboxBackend::Landlock,
            "none" => SandboxBackend::None,
            "podman" => SandboxBackend::Podman,
            "docker" => SandboxBackend::Docker,
            "kubernetes" | "k8s" => SandboxBackend::Kubernetes,
            other => {
                return Err(InputError::new(
                    file,
                    format!("`{other}` is not a sandbox backend"),
                )
                .key("sandbox.backend")
                .at_offset(source, Some(name.span().start))
                .fix(r#"write backend = "auto" (bubblewrap, else landlock), "bubblewrap", "landlock", "none" (no isolation), or "podman" / "docker" (workers in containers), or "kubernetes" (workers in Jobs)"#));
            }
        },
        None => base.map_or(SandboxBackend::Auto, |b| b.backend),
    };
    let base_limits = base.map(|b| b.limits);
    let memory = match &section.memory {
        Some(value) => size(file, source, "sandbox.memory", value, true)?,
        None => base_limits.and_then(|l| l.memory),
    };
    let pids = match &section.pids {
        Some(value) if *value.get_ref() == 0 => None,
        Some(value) => Some(u64::try_from(*value.get_ref()).map_err(|_| {
            InputError::new(
                file,
                format!("`{}` is not a process count", value.get_ref()),
            )
            .key("sandbox.pids")
            .at_offset(source, Some(value.span().start))
            .fix("write a whole number such as 2048, or 0 for no limit")
        })?),
        None => base_limits.and_then(|l| l.pids),
    };
    let tmp_size = match &section.tmp_size {
        Some(value) => size(file, source, "sandbox.tmp_size", value, false)?,
        None => base_limits.map(|l| l.tmp_size),
    }
    .unwrap_or(1 << 30);
    let max_output = match &section.max_output {
        Some(value) => size(file, source, "sandbox.max_output", value, false)?,
        None => base_limits.map(|l| l.max_output),
    }
    .unwrap_or(256 << 20);
    let writable = match &section.writable {
        Some(paths) => paths.iter().map(|p| expand_path(p, base_dir)).collect(),
        None => base.map(|b| b.writable.clone()).unwrap_or_default(),
    };
    Ok(SandboxSettings {
        backend,
        network: section.network.or(base.map(|b| b.network)).unwrap_or(false),
        test_network: section
            .test_network
            .or(base.map(|b| b.test_network))
            .unwrap_or(false),
        env_allow: section
            .env_allow
            .or_else(|| base.map(|b| b.env_allow.clone()))
            .unwrap_or_default(),
        writable,
        limits: SandboxLimits {
            memory,
            pids,
            tmp_size,
            max_output,
        },
        container: container(
            file,
            source,
            backend,
            section.container,
            base.and_then(|b| b.container.clone()),
        )?,
        kubernetes: super::kubernetes::resolve(
            file,
            source,
            section.kubernetes,
            base.map(|b| &b.kubernetes),
        )?,
    })
}

/// `[sandbox.container]` over the base's; required (with an image) when workers run in containers.
fn container(
    file: &Path,
    source: &str,
    backend: SandboxBackend,
    section: Option<ContainerSection>,
    base: Option<ContainerSettings>,
) -> Result<Option<ContainerSettings>, InputError> {
    let settings = match section {
        None => base,
        Some(section) => {
            let cpus = match section.cpus {
                Some(cpus) if cpus.get_ref().is_finite() && *cpus.get_ref() > 0.0 => {
                    Some(*cpus.get_ref())
                }
                Some(cpus) => {
                    return Err(InputError::new(
                        file,
                        format!("{} is not a CPU count", cpus.get_ref()),
                    )
                    .key("sandbox.container.cpus")
                    .at_offset(source, Some(cpus.span().start))
                    .fix("give a positive number, e.g. 2 or 0.5; leave it out for no limit"));
                }
                None => base.as_ref().and_then(|b| b.cpus),
            };
            let image = section
                .image
                .map(|image| image.into_inner())
                .or_else(|| base.as_ref().map(|b| b.image.clone()))
                .filter(|image| !image.trim().is_empty());
            image.map(|image| ContainerSettings {
                image,
                socket: section
                    .socket
                    .or_else(|| base.as_ref().and_then(|b| b.socket.clone())),
                cpus,
            })
        }
    };
    if backend.is_container() && settings.is_none() {
        return Err(InputError::new(
            file,
            format!("backend = \"{}\" runs workers in containers, but names no image", backend.as_str()),
        )
        .key("sandbox.container.image")
        .fix("add [sandbox.container] image = \"localhost/ccfan-worker\" (built from the repository's Containerfile; scripts/worker-image.sh builds one from local files)"));
    }
    Ok(settings)
}
