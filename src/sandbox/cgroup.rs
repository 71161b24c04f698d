//! Sandbox, limits and kill: a cgroup set per process tree — cgroup v2 where a writable cgroup2 mount exists
//! (`cgroup.kill` ends everything at once), the v1 `memory`, `pids` and `freezer` hierarchies where those are the
//! writable ones — so that a fork bomb, a memory hog or a `setsid` survivor cannot outgrow or outlive its attempt.

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use crate::policy::SandboxLimits;

/// What one cgroup folder is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A cgroup v2 folder (kill, and memory/pids when those controllers are on).
    V2,
    /// The v1 memory hierarchy.
    Memory,
    /// The v1 pids hierarchy.
    Pids,
    /// The v1 freezer hierarchy (a whole-tree kill without races).
    Freezer,
}

#[derive(Debug)]
struct Dir {
    path: PathBuf,
    kind: Kind,
}

/// The cgroups of one process tree (possibly none, where this machine lets ccfan make none).
#[derive(Debug, Default)]
pub struct Cgroups {
    dirs: Vec<Dir>,
    procs: Vec<File>,
}

/// Which limits a [`Cgroups`] enforces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Enforced {
    /// Memory (`memory.max` or `memory.limit_in_bytes`).
    pub memory: bool,
    /// Processes (`pids.max`).
    pub pids: bool,
    /// A whole-tree kill (`cgroup.kill` or the freezer).
    pub kill: bool,
}

/// The cgroup mounts of this machine: `(kind, mount point)`.
fn mounts() -> Vec<(Kind, PathBuf)> {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for line in mountinfo.lines() {
        let Some((before, after)) = line.split_once(" - ") else {
            continue;
        };
        let Some(point) = before.split_whitespace().nth(4).map(PathBuf::from) else {
            continue;
        };
        let mut fields = after.split_whitespace();
        let fstype = fields.next().unwrap_or_default();
        let options = fields.nth(1).unwrap_or_default();
        match fstype {
            "cgroup2" => found.push((Kind::V2, point)),
            "cgroup" => {
                for option in options.split(',') {
                    match option {
                        "memory" => found.push((Kind::Memory, point.clone())),
                        "pids" => found.push((Kind::Pids, point.clone())),
                        "freezer" => found.push((Kind::Freezer, point.clone())),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    found
}

fn controllers(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default()
}

impl Cgroups {
    /// Makes `<mount>/ccfan/<token>` in every hierarchy that allows it and applies `limits`.
    pub fn create(token: &str, limits: &SandboxLimits) -> Cgroups {
        let mut cgroups = Cgroups::default();
        let mut v2_memory = false;
        let mut v2_pids = false;
        for (kind, mount) in mounts() {
            let parent = mount.join("ccfan");
            let dir = parent.join(token);
            if std::fs::create_dir_all(&dir).is_err() {
                continue;
            }
            let Ok(procs) = File::options().write(true).open(dir.join("cgroup.procs")) else {
                let _ = std::fs::remove_dir(&dir);
                continue;
            };
            if kind == Kind::V2 {
                // Hand the memory and pids controllers down to the attempt's folder where the mount has them.
                for level in [&mount, &parent] {
                    let _ = std::fs::write(level.join("cgroup.subtree_control"), "+memory +pids");
                }
                let available = controllers(&dir);
                if let Some(bytes) = limits.memory.filter(|_| available.contains("memory")) {
                    v2_memory = std::fs::write(dir.join("memory.max"), bytes.to_string()).is_ok();
                    // Without this a memory hog moves to swap instead of meeting its limit.
                    let _ = std::fs::write(dir.join("memory.swap.max"), "0");
                }
                if let Some(max) = limits.pids.filter(|_| available.contains("pids")) {
                    v2_pids = std::fs::write(dir.join("pids.max"), max.to_string()).is_ok();
                }
            }
            cgroups.dirs.push(Dir { path: dir, kind });
            cgroups.procs.push(procs);
        }
        for dir in &cgroups.dirs {
            match dir.kind {
                Kind::Memory if !v2_memory => {
                    if let Some(bytes) = limits.memory {
                        let _ = std::fs::write(
                            dir.path.join("memory.limit_in_bytes"),
                            bytes.to_string(),
                        );
                        // Swap counts too where the kernel accounts it (set after the memory limit).
                        let _ = std::fs::write(
                            dir.path.join("memory.memsw.limit_in_bytes"),
                            bytes.to_string(),
                        );
                    }
                }
                Kind::Pids if !v2_pids => {
                    if let Some(max) = limits.pids {
                        let _ = std::fs::write(dir.path.join("pids.max"), max.to_string());
                    }
                }
                Kind::V2 | Kind::Memory | Kind::Pids | Kind::Freezer => {}
            }
        }
        cgroups
    }

    /// The cgroups an earlier process tree with `token` left behind.
    pub fn existing(token: &str) -> Cgroups {
        let dirs = mounts()
            .into_iter()
            .map(|(kind, mount)| Dir {
                path: mount.join("ccfan").join(token),
                kind,
            })
            .filter(|dir| dir.path.is_dir())
            .collect();
        Cgroups {
            dirs,
            procs: Vec::new(),
        }
    }

    /// The open `cgroup.procs` files the child writes itself into before it runs the worker's code.
    pub fn procs_fds(&self) -> Vec<RawFd> {
        self.procs.iter().map(AsRawFd::as_raw_fd).collect()
    }

    /// Which limits are in force.
    pub fn enforced(&self, limits: &SandboxLimits) -> Enforced {
        // A limit counts only if it reads back as set (a write may have failed).
        let has = |kind: Kind, file: &str| {
            self.dirs.iter().any(|dir| {
                dir.kind == kind
                    && std::fs::read_to_string(dir.path.join(file)).is_ok_and(|value| {
                        let value = value.trim();
                        value != "max" && value.parse::<u64>().is_ok_and(|v| v < (1 << 62))
                    })
            })
        };
        let v2_has = |file: &str| {
            self.dirs.iter().any(|dir| {
                dir.kind == Kind::V2
                    && std::fs::read_to_string(dir.path.join(file))
                        .is_ok_and(|value| value.trim() != "max")
            })
        };
        Enforced {
            memory: limits.memory.is_some()
                && (v2_has("memory.max") || has(Kind::Memory, "memory.limit_in_bytes")),
            pids: limits.pids.is_some() && (v2_has("pids.max") || has(Kind::Pids, "pids.max")),
            kill: self.dirs.iter().any(|dir| {
                (dir.kind == Kind::V2 && dir.path.join("cgroup.kill").exists())
                    || (dir.kind == Kind::Freezer && dir.path.join("freezer.state").exists())
            }),
        }
    }

    /// Kills every process in the cgroups: `cgroup.kill` where there is one, else freeze, kill each, thaw.
    pub fn kill(&self) {
        let mut killed_at_once = false;
        for dir in self.dirs.iter().filter(|dir| dir.kind == Kind::V2) {
            killed_at_once |= std::fs::write(dir.path.join("cgroup.kill"), "1").is_ok();
        }
        if killed_at_once {
            return;
        }
        let freezer = self.dirs.iter().find(|dir| dir.kind == Kind::Freezer);
        if let Some(freezer) = freezer {
            let _ = std::fs::write(freezer.path.join("freezer.state"), "FROZEN");
        }
        for dir in &self.dirs {
            for pid in pids_in(&dir.path) {
                if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
        }
        if let Some(freezer) = freezer {
            let _ = std::fs::write(freezer.path.join("freezer.state"), "THAWED");
        }
    }

    /// Whether no process is left in any of them.
    pub fn is_empty(&self) -> bool {
        self.dirs.iter().all(|dir| pids_in(&dir.path).is_empty())
    }

    /// Limits the tree ran into, for the attempt's record ("memory limit reached", …).
    pub fn events(&self) -> Vec<String> {
        let counter = |path: PathBuf, key: &str| -> u64 {
            std::fs::read_to_string(path)
                .ok()
                .and_then(|text| {
                    text.lines().find_map(|line| {
                        let (name, value) = line.split_once(' ')?;
                        (name == key).then(|| value.trim().parse().ok())?
                    })
                })
                .unwrap_or(0)
        };
        let mut oom = 0;
        let mut forks_refused = 0;
        for dir in &self.dirs {
            match dir.kind {
                Kind::V2 => {
                    oom += counter(dir.path.join("memory.events"), "oom_kill");
                    forks_refused += counter(dir.path.join("pids.events"), "max");
                }
                Kind::Memory => oom += counter(dir.path.join("memory.oom_control"), "oom_kill"),
                Kind::Pids => forks_refused += counter(dir.path.join("pids.events"), "max"),
                Kind::Freezer => {}
            }
        }
        let mut events = Vec::new();
        if oom > 0 {
            events.push(format!(
                "memory limit reached: the kernel killed {oom} process(es)"
            ));
        }
        if forks_refused > 0 {
            events.push(format!(
                "process limit reached: {forks_refused} fork(s) refused"
            ));
        }
        events
    }

    /// Whether the memory limit killed a process.
    pub fn memory_exceeded(&self) -> bool {
        self.events()
            .iter()
            .any(|event| event.starts_with("memory"))
    }

    /// Removes the (empty) cgroups.
    pub fn remove(self) {
        drop(self.procs);
        for dir in &self.dirs {
            let _ = std::fs::remove_dir(&dir.path);
        }
    }
}

fn pids_in(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|text| {
            text.lines()
                .filter_map(|line| line.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// A one-line account of what this machine's cgroups allow, for `ccfan doctor`.
pub fn describe() -> Vec<String> {
    let probe = Cgroups::create(
        &format!("doctor-{}", std::process::id()),
        &SandboxLimits {
            memory: Some(1 << 30),
            pids: Some(1024),
            tmp_size: 0,
            max_output: 0,
        },
    );
    let enforced = probe.enforced(&SandboxLimits {
        memory: Some(1),
        pids: Some(1),
        tmp_size: 0,
        max_output: 0,
    });
    let kinds: Vec<String> = probe
        .dirs
        .iter()
        .map(|dir| {
            let name = match dir.kind {
                Kind::V2 => "v2",
                Kind::Memory => "v1 memory",
                Kind::Pids => "v1 pids",
                Kind::Freezer => "v1 freezer",
            };
            format!(
                "{name} ({})",
                dir.path
                    .parent()
                    .map_or_else(String::new, |p| p.display().to_string())
            )
        })
        .collect();
    probe.remove();
    let yes_no = |on: bool| {
        if on {
            "enforced"
        } else {
            "NOT enforced (no writable cgroup controller)"
        }
    };
    vec![
        format!(
            "writable cgroups: {}",
            if kinds.is_empty() {
                "none".to_string()
            } else {
                kinds.join(", ")
            }
        ),
        format!("memory limit: {}", yes_no(enforced.memory)),
        format!("process limit: {}", yes_no(enforced.pids)),
        format!(
            "whole-tree kill: {}",
            if enforced.kill {
                "cgroup"
            } else {
                "process scan only"
            }
        ),
    ]
}
