//! Where ccfan keeps things: state and artifacts under the repository's git common dir (so they follow the
//! repository and never touch the user's working tree), worktrees in a ccfan-managed folder outside it.

use std::path::{Path, PathBuf};

use crate::git::RepoPaths;
use crate::model::{RunId, TaskId};
use crate::util::stable_hash;

/// Environment variable that overrides where worktrees are made.
pub const WORKTREE_ROOT_ENV: &str = "CCFAN_WORKTREE_ROOT";

/// Size of the disk reserve ccfan keeps beside its state (see [`StateLayout::reserve`]).
const DISK_RESERVE: u64 = 1 << 20;

/// ccfan's folders for one repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateLayout {
    /// `<git-common-dir>/ccfan`.
    pub root: PathBuf,
}

impl StateLayout {
    /// The layout of `repo`.
    pub fn of(repo: &RepoPaths) -> Self {
        StateLayout {
            root: repo.common_dir.join("ccfan"),
        }
    }

    /// Where the repository's prepared base layers live.
    pub fn layers(&self) -> PathBuf {
        self.root.join("layers")
    }

    /// The SQLite database.
    pub fn database(&self) -> PathBuf {
        self.root.join("state.db")
    }

    /// A reserve file (1 MiB) that ccfan deletes when the disk fills up, so it can still store why its tasks
    /// stopped; made again at the next run.
    pub fn reserve(&self) -> PathBuf {
        self.root.join("disk-reserve")
    }

    /// Makes the disk reserve when it is missing and the disk has room for it several times over.
    pub fn keep_reserve(&self) {
        let path = self.reserve();
        let missing = std::fs::metadata(&path).map_or(true, |meta| meta.len() < DISK_RESERVE);
        let room = crate::util::free_bytes(&self.root).is_some_and(|free| free > 8 * DISK_RESERVE);
        if missing && room {
            let _ = std::fs::write(&path, vec![0u8; DISK_RESERVE as usize]);
        }
    }

    /// An agent worker's private home for one task (its config copy, credentials copy and sessions), kept across
    /// attempts so that a rework resumes the session; removed with the task's worktree.
    pub fn agent_home(&self, run_id: &RunId, task_id: &TaskId) -> PathBuf {
        self.root
            .join("runs")
            .join(run_id)
            .join(task_id)
            .join("agent-home")
    }

    /// Files of operations the MCP server handed to their own ccfan process (the tasks file of a delegation,
    /// each process's JSON output and log).
    pub fn handoff_dir(&self) -> PathBuf {
        self.root.join("mcp")
    }

    /// The file `ccfan dashboard --open` hands the browser: a redirect to the link, readable only by its owner.
    pub fn dashboard_link(&self, port: u16) -> PathBuf {
        self.root
            .join("dashboard")
            .join(format!("open-{port}.html"))
    }

    /// Artifacts of one attempt (log, task file, events).
    pub fn attempt_dir(&self, run_id: &RunId, task_id: &TaskId, attempt: u32) -> PathBuf {
        self.root
            .join("runs")
            .join(run_id)
            .join(task_id)
            .join(format!("attempt-{attempt}"))
    }
}

/// One attempt's folder, `<git-common-dir>/ccfan/runs/<run>/<task>/attempt-<n>/`: the one place that names the
/// files in it, so every stage and front end finds them the same way.
#[derive(Debug, Clone, Copy)]
pub struct AttemptDir<'a>(&'a Path);

/// The file a worker may write its final report to (`CCFAN_REPORT_FILE`), in its outbox.
pub const FINAL_REPORT: &str = "final_report.md";
/// The gate's report.
const VERIFY_REPORT: &str = "verify.json";

impl<'a> AttemptDir<'a> {
    /// The attempt folder at `dir`.
    pub fn of(dir: &'a Path) -> Self {
        AttemptDir(dir)
    }

    /// The folder itself.
    pub fn path(self) -> &'a Path {
        self.0
    }

    /// What the worker printed (stdout and stderr, capped; scrubbed of secrets).
    pub fn log(self) -> PathBuf {
        self.0.join("worker.log")
    }

    /// An agent's raw event stream (scrubbed of secrets like the log).
    pub fn events(self) -> PathBuf {
        self.0.join("events.jsonl")
    }

    /// An agent's summary of the attempt.
    pub fn agent(self) -> PathBuf {
        self.0.join("agent.json")
    }

    /// Plan mode: the plan a planning attempt wrote (secrets redacted).
    pub fn plan(self) -> PathBuf {
        self.0.join("plan.md")
    }

    /// The task file the worker reads (`CCFAN_TASK_FILE`).
    pub fn task_file(self) -> PathBuf {
        self.0.join("task.json")
    }

    /// The attempt's summary: what ran, how it ended, what it changed.
    pub fn record(self) -> PathBuf {
        self.0.join("attempt.json")
    }

    /// The folder the worker hands files back in: the one place in ccfan's state it may write.
    pub fn outbox(self) -> PathBuf {
        self.0.join("outbox")
    }

    /// Where the worker writes its final report (`CCFAN_REPORT_FILE`).
    pub fn report_file(self) -> PathBuf {
        self.outbox().join(FINAL_REPORT)
    }

    /// Where ccfan writes an agent's last message as its final report (beside the log, where the worker cannot
    /// plant a symlink), when the agent wrote none itself.
    pub fn report_from_agent(self) -> PathBuf {
        self.0.join(FINAL_REPORT)
    }

    /// The final report the gate reads: the worker's own, else the one ccfan wrote from the agent's message.
    pub fn final_report(self) -> PathBuf {
        let own = self.report_file();
        if own.exists() || !self.report_from_agent().exists() {
            own
        } else {
            self.report_from_agent()
        }
    }

    /// Where the gate writes its report and stage logs: the folder itself, or `landing/` for the gate on a
    /// landing commit.
    pub fn artifacts(self, landing: bool) -> PathBuf {
        if landing {
            self.0.join("landing")
        } else {
            self.0.to_path_buf()
        }
    }

    /// The gate's report in `artifacts`.
    pub fn verify_report(artifacts: &Path) -> PathBuf {
        artifacts.join(VERIFY_REPORT)
    }

    /// The newest gate report kept: the landing gate's, else the attempt's (at most the worker-file cap read).
    pub fn latest_report(self) -> Option<Vec<u8>> {
        [true, false].iter().find_map(|&landing| {
            crate::util::read_regular(
                &Self::verify_report(&self.artifacts(landing)),
                crate::util::MAX_WORKER_FILE,
            )
            .ok()
        })
    }
}

/// Where the gate makes its verification checkouts for a repository whose worktrees live at `worktree_base`.
pub fn verify_root(worktree_base: &Path) -> PathBuf {
    worktree_base.join(".verify")
}

/// The folder that holds this repository's worktrees: `$CCFAN_WORKTREE_ROOT`, else the policy's
/// `run.worktree_root`, else `$XDG_DATA_HOME/ccfan/worktrees` (default `~/.local/share/ccfan/worktrees`), each
/// followed by `<repo-name>-<hash>` so that two repositories never share a folder.
pub fn worktree_base(repo: &RepoPaths, policy_root: Option<&Path>) -> PathBuf {
    let root = std::env::var_os(WORKTREE_ROOT_ENV)
        .filter(|value| !value.is_empty())
        .map(PathBuf::from)
        .or_else(|| policy_root.map(Path::to_path_buf))
        .or_else(|| {
            std::env::var_os("XDG_DATA_HOME")
                .filter(|value| !value.is_empty())
                .map(|data| PathBuf::from(data).join("ccfan").join("worktrees"))
        })
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|value| !value.is_empty())
                .map(|home| PathBuf::from(home).join(".local/share/ccfan/worktrees"))
        })
        .unwrap_or_else(|| repo.common_dir.join("ccfan").join("worktrees"));
    let root = if root.is_relative() {
        std::env::current_dir().map_or(root.clone(), |cwd| cwd.join(&root))
    } else {
        root
    };
    // Compare real locations: a root reached through a symlink into the repository is still inside it.
    let root = real_path(&root);
    let name = repo.workdir.file_name().map_or_else(
        || "repo".to_string(),
        |name| name.to_string_lossy().into_owned(),
    );
    let hash = stable_hash(repo.common_dir.as_os_str().as_encoded_bytes());
    normalize(&root.join(format!("{name}-{:08x}", hash & 0xffff_ffff)))
}

/// The canonical form of the deepest existing ancestor of `path`, with the rest appended.
pub fn real_path(path: &Path) -> PathBuf {
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (
            existing.file_name().map(|n| n.to_os_string()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return normalize(path),
        }
    }
    let mut real = existing.canonicalize().unwrap_or(existing);
    for name in rest.into_iter().rev() {
        real.push(name);
    }
    normalize(&real)
}

/// Cleans `.` and `..` out of a path without touching the file system (`/a/b/../c` → `/a/c`).
pub fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !clean.pop() {
                    clean.push("..");
                }
            }
            Component::Prefix(_) | Component::RootDir | Component::Normal(_) => {
                clean.push(component)
            }
        }
    }
    clean
}

/// The task branch: `ccfan/<run>/<task>`.
pub fn task_branch(run_id: &RunId, task_id: &TaskId) -> String {
    format!("ccfan/{run_id}/{task_id}")
}

/// The salvage ref of one attempt: `refs/ccfan/<run>/<task>/attempt-<n>`.
pub fn salvage_ref(run_id: &RunId, task_id: &TaskId, attempt: u32) -> String {
    format!("refs/ccfan/{run_id}/{task_id}/attempt-{attempt}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_is_lexical() {
        assert_eq!(
            normalize(Path::new("/a/b/../c/./d")),
            PathBuf::from("/a/c/d")
        );
        assert_eq!(normalize(Path::new("a/../../b")), PathBuf::from("../b"));
    }
}
