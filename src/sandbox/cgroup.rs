//! A cgroup v2 per attempt, where this machine lets ccfan make one: `cgroup.kill` ends every process in it at once,
//! whatever sessions or parents they have. Where no writable cgroup v2 exists, the token scan in `proc` does the job.

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;

/// One attempt's cgroup.
#[derive(Debug)]
pub struct Cgroup {
    dir: PathBuf,
    procs: Option<File>,
}

impl Cgroup {
    /// Makes `<cgroup2 mount>/ccfan/<token>` if possible.
    pub fn create(token: &str) -> Option<Cgroup> {
        let dir = base()?.join(token);
        std::fs::create_dir_all(&dir).ok()?;
        if !dir.join("cgroup.kill").exists() {
            let _ = std::fs::remove_dir(&dir);
            return None;
        }
        let procs = File::options()
            .write(true)
            .open(dir.join("cgroup.procs"))
            .ok();
        if procs.is_none() {
            let _ = std::fs::remove_dir(&dir);
            return None;
        }
        Some(Cgroup { dir, procs })
    }

    /// The cgroup of an earlier attempt, if it still exists.
    pub fn existing(token: &str) -> Option<Cgroup> {
        let dir = base()?.join(token);
        dir.is_dir().then_some(Cgroup { dir, procs: None })
    }

    /// The open `cgroup.procs` file the child writes itself into.
    pub fn procs_fd(&self) -> RawFd {
        self.procs.as_ref().map_or(-1, AsRawFd::as_raw_fd)
    }

    /// Kills every process in the cgroup.
    pub fn kill(&self) {
        let _ = std::fs::write(self.dir.join("cgroup.kill"), "1");
    }

    /// Whether no process is left in it.
    pub fn is_empty(&self) -> bool {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .map_or(true, |procs| procs.trim().is_empty())
    }

    /// Removes the (empty) cgroup.
    pub fn remove(self) {
        drop(self.procs);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// `<cgroup2 mount>/ccfan`, found in `/proc/self/mountinfo`.
fn base() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mount = mountinfo.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        (after.split_whitespace().next()? == "cgroup2")
            .then(|| before.split_whitespace().nth(4).map(PathBuf::from))?
    })?;
    Some(mount.join("ccfan"))
}
