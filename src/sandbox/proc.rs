//! Process trees: start every worker in a session of its own (dying with its parent), and kill a whole tree —
//! the session's group, the attempt's cgroup where one could be made, and every process that still carries the
//! attempt's token in its environment, which finds `setsid` children and daemons that left the group.

use std::os::fd::{BorrowedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

use super::TOKEN_ENV;
use super::cgroup::Cgroups;

/// What the child does between fork and exec, prepared by the parent (the child may not allocate).
#[derive(Debug, Default)]
pub struct ChildSetup {
    /// Open `cgroup.procs` files to write itself into.
    pub cgroup_procs: Vec<RawFd>,
    /// Descriptors the program must inherit (bubblewrap's seccomp and info fds).
    pub inherit: Vec<RawFd>,
    /// A Landlock ruleset to restrict itself with.
    pub landlock: Option<RawFd>,
    /// Seccomp filters to install, last of all.
    pub seccomp: Vec<seccompiler::BpfProgram>,
}

/// Makes the child a session leader that gets SIGKILL if ccfan dies, moves it into the attempt's cgroups, and
/// (for the Landlock backend) restricts it, all before it runs any of the worker's code.
pub fn prepare_child(command: &mut Command, setup: ChildSetup) {
    #[expect(
        unsafe_code,
        reason = "pre_exec runs between fork and exec; it only makes async-signal-safe syscalls"
    )]
    // SAFETY: the closure allocates nothing and makes only raw syscalls (setsid, prctl, write, fcntl,
    // landlock_restrict_self, seccomp); every fd it uses was opened by the parent and outlives the spawn.
    unsafe {
        command.pre_exec(move || {
            rustix::process::setsid()?;
            rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
            for &fd in &setup.cgroup_procs {
                let fd = BorrowedFd::borrow_raw(fd);
                rustix::io::write(fd, b"0")?;
            }
            for &fd in &setup.inherit {
                let fd = BorrowedFd::borrow_raw(fd);
                rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
            }
            if let Some(fd) = setup.landlock {
                super::landlock::restrict(fd)?;
            }
            for program in &setup.seccomp {
                seccompiler::apply_filter(program)
                    .map_err(|_| std::io::Error::from_raw_os_error(libc::EPERM))?;
            }
            Ok(())
        });
    }
}

/// Asks the tree to stop (SIGTERM), waits up to `grace` for the leader to exit, then kills what is left.
pub fn terminate_tree(leader: u32, token: &str, cgroups: &Cgroups, grace: Duration) {
    signal_tree(leader, token, Signal::TERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && is_running(leader) {
        std::thread::sleep(Duration::from_millis(20));
    }
    kill_tree(leader, token, cgroups);
}

/// SIGKILLs the tree until nothing of it is left (or ~3 s pass). `leader` 0 means "no known leader".
/// Returns how many processes (other than the leader) were killed.
pub fn kill_tree(leader: u32, token: &str, cgroups: &Cgroups) -> usize {
    let mut killed = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        cgroups.kill();
        if let Some(pid) = pid(leader) {
            let _ = rustix::process::kill_process_group(pid, Signal::KILL);
        }
        let found = processes_with_token(token);
        for &other in &found {
            if let Some(pid) = pid(other) {
                let _ = rustix::process::kill_process(pid, Signal::KILL);
            }
            if other != leader {
                killed.insert(other);
            }
        }
        let cgroup_empty = cgroups.is_empty();
        if (found.is_empty() && cgroup_empty) || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    killed.len()
}

fn signal_tree(leader: u32, token: &str, signal: Signal) {
    if let Some(pid) = pid(leader) {
        let _ = rustix::process::kill_process_group(pid, signal);
    }
    for other in processes_with_token(token) {
        if let Some(pid) = pid(other) {
            let _ = rustix::process::kill_process(pid, signal);
        }
    }
}

fn pid(raw: u32) -> Option<Pid> {
    i32::try_from(raw).ok().and_then(Pid::from_raw)
}

/// Whether `pid` exists and is not a zombie.
fn is_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat_field(&stat, 3).is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Field `n` (1-based, as in proc(5)) of a `/proc/<pid>/stat` line; the command name may hold spaces.
fn stat_field(stat: &str, n: usize) -> Option<&str> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(n.checked_sub(3)?)
}

/// Pids (other than ours) whose environment holds `CCFAN_ATTEMPT_TOKEN=<token>`.
pub fn processes_with_token(token: &str) -> Vec<u32> {
    let needle = format!("\0{TOKEN_ENV}={token}\0").into_bytes();
    let own = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == own {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let mut haystack = Vec::with_capacity(environ.len() + 2);
        haystack.push(0);
        haystack.extend_from_slice(&environ);
        haystack.push(0);
        if haystack
            .windows(needle.len())
            .any(|window| window == needle.as_slice())
            && is_running(pid)
        {
            found.push(pid);
        }
    }
    found
}

/// A token that tells this process apart from a later one that reuses its pid: its start time in clock ticks.
pub fn start_token(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_field(&stat, 22).map(str::to_string)
}

/// Whether the process `pid` that had start token `start` is still alive.
pub fn owner_alive(pid: i64, start: &str) -> bool {
    u32::try_from(pid)
        .ok()
        .filter(|&pid| is_running(pid))
        .and_then(start_token)
        .is_some_and(|token| token == start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_survive_odd_names() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194304 0 0 0 0 0 0 0 0 20 0 1 0 12345 0";
        assert_eq!(stat_field(stat, 3), Some("S"));
        assert_eq!(stat_field(stat, 4), Some("1"));
        assert_eq!(stat_field(stat, 22), Some("12345"));
    }

    #[test]
    fn this_process_is_alive_and_a_made_up_one_is_not() {
        let me = std::process::id();
        let token = start_token(me).unwrap();
        assert!(owner_alive(i64::from(me), &token));
        assert!(!owner_alive(i64::from(me), "0"));
        assert!(!owner_alive(i64::from(u32::MAX), &token));
    }
}
