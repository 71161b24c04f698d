//! Queries on runs, tasks, attempts and transitions. Each state change and its transition record are written in
//! one transaction.

use std::path::PathBuf;

use rusqlite::{OptionalExtension, Row, params};

use super::{Store, StoreError, query};
use crate::model::{CommitId, ExitStatus, RunId, RunState, TaskId, TaskSpec, TaskState};
use crate::util::now_millis;

/// A run about to be recorded.
#[derive(Debug, Clone)]
pub struct NewRun<'a> {
    /// Run id.
    pub id: &'a RunId,
    /// Recorded base commit.
    pub base_sha: &'a CommitId,
    /// What the user named as base.
    pub base_rev: &'a str,
    /// Branch checked out when the run started.
    pub target_branch: Option<&'a str>,
    /// Tasks file path.
    pub tasks_file: &'a std::path::Path,
    /// Parallel jobs.
    pub jobs: usize,
    /// Owning process id.
    pub owner_pid: u32,
    /// Owning process start token (tells a reused pid apart).
    pub owner_start: &'a str,
    /// `--no-merge`: accepted is the end of this run.
    pub no_merge: bool,
    /// `--plan`: each task plans first and runs only once a person approved its plan.
    pub plan_mode: bool,
}

/// A task about to be recorded.
#[derive(Debug, Clone)]
pub struct NewTask<'a> {
    /// Its spec.
    pub spec: &'a TaskSpec,
    /// Its branch.
    pub branch: &'a str,
    /// Its worktree path.
    pub worktree: &'a std::path::Path,
}

/// An attempt about to start.
#[derive(Debug, Clone, Copy)]
pub struct NewAttempt<'a> {
    /// Attempt number.
    pub n: u32,
    /// The commit its chain starts from.
    pub base: &'a CommitId,
    /// Its artifacts folder.
    pub dir: &'a std::path::Path,
    /// Its log file.
    pub log_path: &'a std::path::Path,
    /// The token in its worker's environment.
    pub token: &'a str,
}

/// A stored run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    /// Run id.
    pub id: RunId,
    /// Start time (ms).
    pub created_at: i64,
    /// State.
    pub state: RunState,
    /// Base commit.
    pub base_sha: CommitId,
    /// Base as named.
    pub base_rev: String,
    /// Target branch.
    pub target_branch: Option<String>,
    /// Tasks file.
    pub tasks_file: PathBuf,
    /// Owning process.
    pub owner_pid: i64,
    /// Owning process start token.
    pub owner_start: String,
    /// Made with `--no-merge`.
    pub no_merge: bool,
    /// Made with `--plan`.
    pub plan_mode: bool,
}

/// A stored task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRow {
    /// Task id.
    pub id: TaskId,
    /// Spec.
    pub spec: TaskSpec,
    /// State.
    pub state: TaskState,
    /// Reason of the last transition.
    pub reason: Option<String>,
    /// Branch.
    pub branch: String,
    /// Worktree path.
    pub worktree: PathBuf,
    /// The `.git` link file content as created.
    pub git_link: Option<String>,
    /// Attempts started.
    pub attempts: u32,
    /// Whether `gc` removed its worktree and branch.
    pub removed: bool,
    /// The first attempt of its current rework budget (`retry` starts a new one).
    pub budget_from: u32,
    /// The commit it lands (or landed) as, set before the branch moves.
    pub landing: Option<CommitId>,
    /// The branch `landing` is meant for.
    pub landed_on: Option<String>,
    /// Another process asked for it to be cancelled.
    pub cancel_requested: bool,
    /// Set when a person accepted it over the gate's verdict: who and why.
    pub forced: Option<String>,
    /// Set when its change was already on the target when it landed, so it landed no commit of its own: the task
    /// whose landing brought it (empty: it was there before).
    pub landed_with: Option<String>,
}

/// A stored attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRow {
    /// Attempt number.
    pub n: u32,
    /// `running`, `recorded` or `interrupted`.
    pub state: String,
    /// Start (ms).
    pub started_at: i64,
    /// End (ms).
    pub finished_at: Option<i64>,
    /// How the worker ended.
    pub exit: Option<ExitStatus>,
    /// The attempt commit.
    pub commit: Option<CommitId>,
    /// The salvage ref.
    pub salvage_ref: Option<String>,
    /// Artifacts folder.
    pub dir: PathBuf,
    /// Log file.
    pub log_path: PathBuf,
    /// The token in the worker's environment (finds its processes).
    pub token: String,
    /// The gate's verdict.
    pub verdict: Option<crate::report::Verdict>,
    /// The commit the attempt started from (`None` in old databases: the run's base).
    pub base: Option<CommitId>,
}

/// An attempt that was in flight when its owner died.
#[derive(Debug, Clone, PartialEq)]
pub struct RecoveredAttempt {
    /// Run id.
    pub run_id: RunId,
    /// Task id.
    pub task_id: TaskId,
    /// The worker's token.
    pub token: String,
}

fn corrupt(what: String) -> StoreError {
    StoreError::Corrupt(what)
}

fn run_row(row: &Row<'_>) -> rusqlite::Result<(RunRow, String)> {
    let state: String = row.get(2)?;
    Ok((
        RunRow {
            id: row.get(0)?,
            created_at: row.get(1)?,
            state: RunState::Running,
            base_sha: row.get(3)?,
            base_rev: row.get(4)?,
            target_branch: row.get(5)?,
            tasks_file: PathBuf::from(row.get::<_, String>(6)?),
            owner_pid: row.get(7)?,
            owner_start: row.get(8)?,
            no_merge: row.get(9)?,
            plan_mode: row.get(10)?,
        },
        state,
    ))
}

const RUN_COLUMNS: &str = "id, created_at, state, base_sha, base_rev, target_branch, tasks_file, owner_pid, owner_start, no_merge, plan_mode";

fn finish_run_row((mut run, state): (RunRow, String)) -> Result<RunRow, StoreError> {
    run.state = RunState::parse(&state).ok_or_else(|| corrupt(format!("run state `{state}`")))?;
    Ok(run)
}

impl Store {
    /// Records a run and its queued tasks in one transaction.
    pub fn create_run(
        &mut self,
        run: &NewRun<'_>,
        tasks: &[NewTask<'_>],
    ) -> Result<(), StoreError> {
        let now = now_millis();
        let tx = self
            .conn
            .transaction()
            .map_err(query("starting a transaction"))?;
        tx.execute(
            "INSERT INTO runs (id, created_at, state, base_sha, base_rev, target_branch, tasks_file, jobs, owner_pid, owner_start, no_merge, plan_mode)
             VALUES (?1, ?2, 'running', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                run.id,
                now,
                run.base_sha,
                run.base_rev,
                run.target_branch,
                run.tasks_file.to_string_lossy(),
                i64::try_from(run.jobs).unwrap_or(i64::MAX),
                i64::from(run.owner_pid),
                run.owner_start,
                run.no_merge,
                run.plan_mode
            ],
        )
        .map_err(query("recording the run"))?;
        for (seq, task) in tasks.iter().enumerate() {
            let spec = serde_json::to_string(task.spec).map_err(|e| corrupt(e.to_string()))?;
            tx.execute(
                "INSERT INTO tasks (run_id, id, seq, spec, state, branch, worktree, updated_at)
                 VALUES (?1, ?2, ?3, ?4, 'queued', ?5, ?6, ?7)",
                params![
                    run.id,
                    task.spec.id,
                    seq as i64,
                    spec,
                    task.branch,
                    task.worktree.to_string_lossy(),
                    now
                ],
            )
            .map_err(query("recording a task"))?;
            tx.execute(
                "INSERT INTO transitions (run_id, task_id, at, state) VALUES (?1, ?2, ?3, 'queued')",
                params![run.id, task.spec.id, now],
            )
            .map_err(query("recording a transition"))?;
        }
        tx.commit().map_err(query("committing the run"))
    }

    /// Moves a task to `state`, recording the transition with its reason.
    pub fn set_task_state(
        &mut self,
        run_id: &RunId,
        task_id: &TaskId,
        state: TaskState,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        let now = now_millis();
        let tx = self
            .conn
            .transaction()
            .map_err(query("starting a transaction"))?;
        tx.execute(
            "UPDATE tasks SET state = ?3, reason = ?4, updated_at = ?5 WHERE run_id = ?1 AND id = ?2",
            params![run_id, task_id, state.as_str(), reason, now],
        )
        .map_err(query("updating a task"))?;
        tx.execute(
            "INSERT INTO transitions (run_id, task_id, at, state, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![run_id, task_id, now, state.as_str(), reason],
        )
        .map_err(query("recording a transition"))?;
        tx.commit().map_err(query("committing a transition"))
    }

    /// Records the `.git` link file content of a task's new (or re-created) worktree, marking it present.
    pub fn set_git_link(
        &mut self,
        run_id: &RunId,
        task_id: &TaskId,
        link: &str,
    ) -> Result<(), StoreError> {
        self.update(
            "recording a worktree",
            "UPDATE tasks SET git_link = ?3, removed = 0 WHERE run_id = ?1 AND id = ?2",
            params![run_id, task_id, link],
        )
    }

    /// Marks a task's worktree and branch as removed by `gc`.
    pub fn set_removed(&mut self, run_id: &RunId, task_id: &TaskId) -> Result<(), StoreError> {
        self.update(
            "marking a worktree removed",
            "UPDATE tasks SET removed = 1 WHERE run_id = ?1 AND id = ?2",
            params![run_id, task_id],
        )
    }

    /// Records the start of an attempt (before the worker is spawned).
    pub fn start_attempt(
        &mut self,
        run_id: &RunId,
        task_id: &TaskId,
        attempt: &NewAttempt<'_>,
    ) -> Result<(), StoreError> {
        let NewAttempt {
            n,
            base,
            dir,
            log_path,
            token,
        } = *attempt;
        let tx = self
            .conn
            .transaction()
            .map_err(query("starting a transaction"))?;
        tx.execute(
            "INSERT INTO attempts (run_id, task_id, n, state, started_at, dir, log_path, token, base)
             VALUES (?1, ?2, ?3, 'running', ?4, ?5, ?6, ?7, ?8)",
            params![
                run_id,
                task_id,
                n,
                now_millis(),
                dir.to_string_lossy(),
                log_path.to_string_lossy(),
                token,
                base
            ],
        )
        .map_err(query("recording an attempt"))?;
        tx.execute(
            "UPDATE tasks SET attempts = ?3 WHERE run_id = ?1 AND id = ?2",
            params![run_id, task_id, n],
        )
        .map_err(query("counting attempts"))?;
        tx.commit().map_err(query("committing an attempt"))
    }

    /// Records the worker's pid once it is spawned.
    pub fn set_attempt_pid(
        &mut self,
        run_id: &RunId,
        task_id: &TaskId,
        n: u32,
        pid: u32,
    ) -> Result<(), StoreError> {
        self.update(
            "recording a worker pid",
            "UPDATE attempts SET pid = ?4 WHERE run_id = ?1 AND task_id = ?2 AND n = ?3",
            params![run_id, task_id, n, pid],
        )
    }

    /// Records how an attempt ended and where its work is kept.
    pub fn finish_attempt(
        &mut self,
        run_id: &RunId,
        task_id: &TaskId,
        n: u32,
        exit: Option<&ExitStatus>,
        commit: Option<&CommitId>,
        salvage_ref: Option<&str>,
    ) -> Result<(), StoreError> {
        let exit = exit.map(|e| serde_json::to_string(e).unwrap_or_default());
        self.update(
            "recording an attempt's end",
            "UPDATE attempts SET state = 'recorded', finished_at = ?4, exit = coalesce(?5, exit),
                 commit_sha = ?6, salvage_ref = ?7 WHERE run_id = ?1 AND task_id = ?2 AND n = ?3",
            params![run_id, task_id, n, now_millis(), exit, commit, salvage_ref],
        )
    }

    /// Records the gate's verdict on an attempt.
    pub fn set_verdict(
        &mut self,
        run_id: &RunId,
        task_id: &TaskId,
        n: u32,
        verdict: &crate::report::Verdict,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(verdict).map_err(|e| corrupt(e.to_string()))?;
        self.update(
            "recording a verdict",
            "UPDATE attempts SET verdict = ?4 WHERE run_id = ?1 AND task_id = ?2 AND n = ?3",
            params![run_id, task_id, n, json],
        )
    }

    /// Marks a run finished or interrupted.
    pub fn finish_run(
        &mut self,
        run_id: &RunId,
        state: RunState,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        self.update(
            "finishing a run",
            "UPDATE runs SET state = ?2, finished_at = ?3, reason = ?4 WHERE id = ?1",
            params![run_id, state.as_str(), now_millis(), reason],
        )
    }

    /// All runs, newest first.
    pub fn runs(&self) -> Result<Vec<RunRow>, StoreError> {
        let mut statement = self
            .conn
            .prepare_cached(&format!(
                "SELECT {RUN_COLUMNS} FROM runs ORDER BY created_at DESC, id DESC"
            ))
            .map_err(query("listing runs"))?;
        let rows = statement
            .query_map([], run_row)
            .map_err(query("listing runs"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(query("listing runs"))?;
        rows.into_iter().map(finish_run_row).collect()
    }

    /// One run.
    pub fn run(&self, run_id: &RunId) -> Result<RunRow, StoreError> {
        let row = self
            .conn
            .query_row(
                &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"),
                [run_id],
                run_row,
            )
            .optional()
            .map_err(query("reading a run"))?
            .ok_or_else(|| StoreError::NoSuchRun(run_id.to_string()))?;
        finish_run_row(row)
    }

    /// A run's tasks in task-file order.
    pub fn tasks(&self, run_id: &RunId) -> Result<Vec<TaskRow>, StoreError> {
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT id, spec, state, reason, branch, worktree, git_link, attempts, removed,
                        budget_from, landing, landed_on, cancel_requested, forced, landed_with
                 FROM tasks WHERE run_id = ?1 ORDER BY seq",
            )
            .map_err(query("listing tasks"))?;
        let raw = statement
            .query_map([run_id], |row| {
                Ok((
                    row.get::<_, TaskId>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, Option<String>>(3)?,
                    row.get::<_, String>(4)?,
                    row.get::<_, String>(5)?,
                    row.get::<_, Option<String>>(6)?,
                    row.get::<_, u32>(7)?,
                    row.get::<_, bool>(8)?,
                    (
                        row.get::<_, u32>(9)?,
                        row.get::<_, Option<CommitId>>(10)?,
                        row.get::<_, Option<String>>(11)?,
                        row.get::<_, bool>(12)?,
                        row.get::<_, Option<String>>(13)?,
                        row.get::<_, Option<String>>(14)?,
                    ),
                ))
            })
            .map_err(query("listing tasks"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(query("listing tasks"))?;
        raw.into_iter()
            .map(
                |(
                    id,
                    spec,
                    state,
                    reason,
                    branch,
                    worktree,
                    git_link,
                    attempts,
                    removed,
                    (budget_from, landing, landed_on, cancel_requested, forced, landed_with),
                )| {
                    Ok(TaskRow {
                        spec: serde_json::from_str(&spec)
                            .map_err(|e| corrupt(format!("task {id}: {e}")))?,
                        state: TaskState::parse(&state)
                            .ok_or_else(|| corrupt(format!("task state `{state}`")))?,
                        id,
                        reason,
                        branch,
                        worktree: PathBuf::from(worktree),
                        git_link,
                        attempts,
                        removed,
                        budget_from,
                        landing,
                        landed_on,
                        cancel_requested,
                        forced,
                        landed_with,
                    })
                },
            )
            .collect()
    }

    /// A task's attempts, oldest first.
    pub fn attempts(
        &self,
        run_id: &RunId,
        task_id: &TaskId,
    ) -> Result<Vec<AttemptRow>, StoreError> {
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT n, state, started_at, finished_at, exit, commit_sha, salvage_ref, dir, log_path, token, verdict, base
                 FROM attempts WHERE run_id = ?1 AND task_id = ?2 ORDER BY n",
            )
            .map_err(query("listing attempts"))?;
        let rows = statement
            .query_map(rusqlite::params![run_id, task_id], |row| {
                Ok((
                    AttemptRow {
                        n: row.get(0)?,
                        state: row.get(1)?,
                        started_at: row.get(2)?,
                        finished_at: row.get(3)?,
                        exit: None,
                        commit: row.get(5)?,
                        salvage_ref: row.get(6)?,
                        dir: PathBuf::from(row.get::<_, String>(7)?),
                        log_path: PathBuf::from(row.get::<_, String>(8)?),
                        token: row.get(9)?,
                        verdict: None,
                        base: row.get(11)?,
                    },
                    row.get::<_, Option<String>>(4)?,
                    row.get::<_, Option<String>>(10)?,
                ))
            })
            .map_err(query("listing attempts"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(query("listing attempts"))?;
        rows.into_iter()
            .map(|(mut attempt, exit, verdict)| {
                attempt.verdict = verdict
                    .map(|text| {
                        serde_json::from_str(&text)
                            .map_err(|e| corrupt(format!("attempt verdict: {e}")))
                    })
                    .transpose()?;
                attempt.exit = exit
                    .map(|text| {
                        serde_json::from_str(&text)
                            .map_err(|e| corrupt(format!("attempt exit: {e}")))
                    })
                    .transpose()?;
                Ok(attempt)
            })
            .collect()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::ids::fixtures::{commit, run, task};
    use crate::model::{WorkerKind, WorkerProfile};

    fn spec(id: &str) -> TaskSpec {
        TaskSpec {
            id: task(id),
            goal: "g".to_string(),
            allowed: vec!["**".to_string()],
            denied: vec![],
            constraints: vec![],
            acceptance: vec![],
            worker: WorkerProfile {
                name: "w".to_string(),
                kind: WorkerKind::Command {
                    argv: vec!["true".to_string()],
                },
                timeout: None,
                env: vec![],
                pass_env: vec![],
                network: None,
                writable: vec![],
            },
            timeout: Duration::from_secs(5),
            after: Vec::new(),
            candidate: None,
            review: None,
        }
    }

    /// A store holding run `r` with queued tasks `a` and `b`.
    pub(in crate::store) fn two_task_run(dir: &Path) -> Store {
        let mut store = Store::open(&dir.join("state.db")).unwrap();
        let (a, b) = (spec("a"), spec("b"));
        let tasks = [
            NewTask {
                spec: &a,
                branch: "ccfan/r/a",
                worktree: Path::new("/w/a"),
            },
            NewTask {
                spec: &b,
                branch: "ccfan/r/b",
                worktree: Path::new("/w/b"),
            },
        ];
        let (id, base) = (run("r"), commit("abc"));
        let run = NewRun {
            id: &id,
            base_sha: &base,
            base_rev: "HEAD",
            target_branch: Some("main"),
            tasks_file: Path::new("tasks.toml"),
            jobs: 2,
            owner_pid: 1,
            owner_start: "x",
            no_merge: false,
            plan_mode: false,
        };
        store.create_run(&run, &tasks).unwrap();
        store
    }

    #[test]
    fn run_life_cycle_and_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = two_task_run(dir.path());
        store
            .set_task_state(&run("r"), &task("a"), TaskState::Running, None)
            .unwrap();
        store
            .start_attempt(
                &run("r"),
                &task("a"),
                &NewAttempt {
                    n: 1,
                    base: &commit("abc"),
                    dir: Path::new("/d"),
                    log_path: Path::new("/d/log"),
                    token: "tok",
                },
            )
            .unwrap();
        store
            .set_task_state(&run("r"), &task("b"), TaskState::Accepted, None)
            .unwrap();

        // The owner is alive: nothing changes.
        assert!(store.recover(|_, _| true, |_, _| false).unwrap().is_empty());
        // The owner is gone: in-flight work is marked interrupted, finished work untouched.
        let recovered = store.recover(|_, _| false, |_, _| false).unwrap();
        assert_eq!(recovered.len(), 1);
        assert_eq!(recovered[0].token, "tok");
        let tasks = store.tasks(&run("r")).unwrap();
        assert_eq!(tasks[0].state, TaskState::Interrupted);
        assert!(tasks[0].reason.as_deref().unwrap().contains("pid 1"));
        assert_eq!(tasks[1].state, TaskState::Accepted);
        assert_eq!(store.run(&run("r")).unwrap().state, RunState::Interrupted);
        assert_eq!(
            store.attempts(&run("r"), &task("a")).unwrap()[0].state,
            "interrupted"
        );
        assert!(matches!(
            store.run(&run("zzz")),
            Err(StoreError::NoSuchRun(_))
        ));
    }

    #[test]
    fn a_task_killed_mid_merge_is_settled_from_git() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = two_task_run(dir.path());
        for (id, landing) in [("a", commit("a1")), ("b", commit("b2"))] {
            store
                .set_landing(&run("r"), &task(id), Some((&landing, "main")))
                .unwrap();
            store
                .set_task_state(&run("r"), &task(id), TaskState::Merging, None)
                .unwrap();
        }
        store
            .recover(
                |_, _| false,
                |landing, branch| *landing == commit("a1") && branch == "main",
            )
            .unwrap();
        let tasks = store.tasks(&run("r")).unwrap();
        assert_eq!(tasks[0].state, TaskState::Merged);
        assert!(tasks[0].reason.as_deref().unwrap().contains("main holds"));
        assert_eq!(tasks[1].state, TaskState::Accepted);
        assert!(
            tasks[1]
                .reason
                .as_deref()
                .unwrap()
                .contains("nothing landed")
        );
        assert_eq!(tasks[1].landing, None);
    }
}
