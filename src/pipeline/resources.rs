//! Per-task resources: a stable index and a leased block of TCP ports, handed to the worker and to the gate's
//! commands as `CCFAN_TASK_INDEX`, `CCFAN_PORT_BASE` and `CCFAN_PORT_COUNT`, so the dev servers and test databases
//! of tasks running side by side do not collide. A lease is an exclusive lock on a file under the user's runtime
//! folder, machine-wide (other runs and other repositories see it), held by the ccfan process that carries the task
//! and released by the kernel when that process ends — a killed ccfan leaves no stale lease behind.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Mutex;

use crate::ids::{RunId, TaskId};

/// Where port blocks are leased from: below Linux's default range for outgoing connections (32768–60999), so a
/// leased port is not also handed out as some connection's local port.
pub const PORT_RANGE: std::ops::Range<u32> = 20_000..32_000;

/// One task's block of ports, held while this value lives.
#[derive(Debug)]
pub struct PortLease {
    /// The first port.
    pub base: u16,
    /// How many ports, from `base`.
    pub count: u16,
    _lock: File,
}

/// The resources of the tasks a process carries: their index in the run and their port leases.
#[derive(Debug, Default)]
pub struct Resources {
    index: HashMap<TaskId, usize>,
    ports_per_task: u16,
    leases: Mutex<HashMap<TaskId, PortLease>>,
}

impl Resources {
    /// The resources of a run whose tasks are `tasks` in task-file order, each leased `ports_per_task` ports
    /// (0: none) when it first asks.
    pub fn new(tasks: impl IntoIterator<Item = TaskId>, ports_per_task: u16) -> Resources {
        Resources {
            index: tasks
                .into_iter()
                .enumerate()
                .map(|(n, id)| (id, n))
                .collect(),
            ports_per_task,
            leases: Mutex::new(HashMap::new()),
        }
    }

    /// The environment a task's worker and gate commands get: its index, and its port block when one could be
    /// leased (a machine with every block taken gets none, with a warning).
    pub fn env_of(&self, run: &RunId, task: &TaskId) -> Vec<(String, String)> {
        let mut env = Vec::new();
        if let Some(index) = self.index.get(task) {
            env.push(("CCFAN_TASK_INDEX".to_string(), index.to_string()));
        }
        if self.ports_per_task == 0 {
            return env;
        }
        let mut leases = self
            .leases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !leases.contains_key(task) {
            match lease_ports(self.ports_per_task, &format!("{run}/{task}")) {
                Ok(Some(lease)) => {
                    leases.insert(task.clone(), lease);
                }
                Ok(None) => tracing::warn!(
                    "no free block of {} ports for task {task}",
                    self.ports_per_task
                ),
                Err(error) => tracing::warn!("cannot lease ports for task {task}: {error}"),
            }
        }
        if let Some(lease) = leases.get(task) {
            env.push(("CCFAN_PORT_BASE".to_string(), lease.base.to_string()));
            env.push(("CCFAN_PORT_COUNT".to_string(), lease.count.to_string()));
        }
        env
    }
}

/// The folder holding the lease files: `$XDG_RUNTIME_DIR/ccfan/ports`, else a private folder in the temp dir.
fn lease_dir() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let runtime = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute() && dir.is_dir());
    let root = match runtime {
        Some(dir) => dir.join("ccfan"),
        None => std::env::temp_dir().join(format!("ccfan-{}", rustix::process::getuid().as_raw())),
    };
    let dir = root.join("ports");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    // A folder someone else made in a shared temp dir is not trusted.
    let owner = std::fs::symlink_metadata(&root)?.uid();
    if owner != rustix::process::getuid().as_raw() {
        return Err(std::io::Error::other(format!(
            "{} belongs to another user",
            root.display()
        )));
    }
    Ok(dir)
}

/// Leases a free block of `count` ports, looking first where `key` hashes to (so a task tends to get the same block
/// again). A block is free when no process holds its lock and none of its ports is bound on loopback right now.
pub fn lease_ports(count: u16, key: &str) -> std::io::Result<Option<PortLease>> {
    let dir = lease_dir()?;
    let width = u32::from(count.max(1));
    let blocks = ((PORT_RANGE.end - PORT_RANGE.start) / width).max(1);
    let first =
        u32::try_from(crate::util::stable_hash(key.as_bytes()) % u64::from(blocks)).unwrap_or(0);
    for step in 0..blocks {
        let block = (first + step) % blocks;
        let Ok(base) = u16::try_from(PORT_RANGE.start + block * width) else {
            continue;
        };
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(format!("{base}.lock")))?;
        if file.try_lock().is_err() {
            continue;
        }
        let bound = (0..count).any(|offset| {
            std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, base + offset)).is_err()
        });
        if bound {
            continue; // dropping the file releases the lock
        }
        return Ok(Some(PortLease {
            base,
            count,
            _lock: file,
        }));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::fixtures::{run, task};

    #[test]
    fn tasks_get_their_index_and_disjoint_port_blocks_while_held() {
        let resources = Resources::new([task("a"), task("b")], 5);
        let a = resources.env_of(&run("r"), &task("a"));
        let b = resources.env_of(&run("r"), &task("b"));
        let get = |env: &[(String, String)], key: &str| {
            env.iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.parse::<u32>().unwrap())
        };
        assert_eq!(get(&a, "CCFAN_TASK_INDEX"), Some(0));
        assert_eq!(get(&b, "CCFAN_TASK_INDEX"), Some(1));
        let (base_a, base_b) = (
            get(&a, "CCFAN_PORT_BASE").unwrap(),
            get(&b, "CCFAN_PORT_BASE").unwrap(),
        );
        assert!(base_a.abs_diff(base_b) >= 5, "{base_a} {base_b}");
        assert_eq!(get(&a, "CCFAN_PORT_COUNT"), Some(5));
        // Asked again, a task keeps its block; another holder cannot take it meanwhile.
        assert_eq!(resources.env_of(&run("r"), &task("a")), a);
        let other = lease_ports(5, "r/a").unwrap().unwrap();
        assert_ne!(u32::from(other.base), base_a);
        assert_ne!(u32::from(other.base), base_b);
        // Released when the holder goes: the same key finds its block again.
        drop(resources);
        let again = lease_ports(5, "r/a").unwrap().unwrap();
        assert_eq!(u32::from(again.base), base_a);
    }

    #[test]
    fn no_ports_asked_means_only_the_index() {
        let resources = Resources::new([task("a")], 0);
        assert_eq!(
            resources.env_of(&run("r"), &task("a")),
            vec![("CCFAN_TASK_INDEX".to_string(), "0".to_string())]
        );
    }
}
