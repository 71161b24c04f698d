//! Durable state for the decision loop's control: who carries a run (so two ccfan processes never run the same
//! task twice), cancel requests from another process, renewed rework budgets, and the commit a task lands as —
//! written before the target branch moves, so a ccfan killed mid-merge can be told apart from one that finished.

use rusqlite::params;

use super::{RecoveredAttempt, Store, StoreError, query};
use crate::model::{CommitId, RunId, RunState, TaskId, TaskState};
use crate::util::now_millis;

impl Store {
    /// Makes this process the owner of `run_id` for a follow-up command (merge, rework, retry, …). Refused while
    /// another live ccfan process carries it.
    pub fn claim_run(
        &mut self,
        run_id: &RunId,
        owner_pid: u32,
        owner_start: &str,
        owner_alive: impl Fn(i64, &str) -> bool,
    ) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(query("starting a transaction"))?;
        let (state, pid, start): (String, i64, String) = tx
            .query_row(
                "SELECT state, owner_pid, owner_start FROM runs WHERE id = ?1",
                [run_id],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .map_err(|error| match error {
                rusqlite::Error::QueryReturnedNoRows => StoreError::NoSuchRun(run_id.to_string()),
                other => StoreError::Query {
                    context: "reading a run".to_string(),
                    source: other,
                },
            })?;
        if state == RunState::Running.as_str()
            && pid != i64::from(owner_pid)
            && owner_alive(pid, &start)
        {
            return Err(StoreError::Busy {
                run: run_id.to_string(),
                pid,
            });
        }
        tx.execute(
            "UPDATE runs SET state = 'running', owner_pid = ?2, owner_start = ?3, finished_at = NULL, reason = NULL
             WHERE id = ?1",
            params![run_id, i64::from(owner_pid), owner_start],
        )
        .map_err(query("claiming a run"))?;
        // Cancel requests were for the process that carried the run before.
        tx.execute(
            "UPDATE tasks SET cancel_requested = 0 WHERE run_id = ?1",
            params![run_id],
        )
        .map_err(query("claiming a run"))?;
        tx.commit().map_err(query("claiming a run"))
    }

    /// Points a run at another target branch (`--into`).
    pub fn set_target_branch(&mut self, run_id: &RunId, branch: &str) -> Result<(), StoreError> {
        self.update(
            "setting a run's target branch",
            "UPDATE runs SET target_branch = ?2 WHERE id = ?1",
            params![run_id, branch],
        )
    }

    /// Starts a fresh rework budget for a task at attempt `from`.
    pub fn set_budget_from(
        &mut self,
        run_id: &RunId,
        task_id: &TaskId,
        from: u32,
    ) -> Result<(), StoreError> {
        self.update(
            "renewing a rework budget",
            "UPDATE tasks SET budget_from = ?3 WHERE run_id = ?1 AND id = ?2",
            params![run_id, task_id, from],
        )
    }

    /// Records the commit a task is about to land as on `branch` (before the branch moves), or clears it.
    pub fn set_landing(
        &mut self,
        run_id: &RunId,
        task_id: &TaskId,
        landing: Option<(&CommitId, &str)>,
    ) -> Result<(), StoreError> {
        let (commit, branch) = landing.unzip();
        self.update(
            "recording a landing commit",
            "UPDATE tasks SET landing = ?3, landed_on = ?4 WHERE run_id = ?1 AND id = ?2",
            params![run_id, task_id, commit, branch],
        )
    }

    /// Records that a task's change was already on its target (see [`crate::store::TaskRow::landed_with`]), or
    /// clears it.
    pub fn set_landed_with(
        &mut self,
        run_id: &RunId,
        task_id: &TaskId,
        with: Option<&str>,
    ) -> Result<(), StoreError> {
        self.update(
            "recording a change already landed",
            "UPDATE tasks SET landed_with = ?3 WHERE run_id = ?1 AND id = ?2",
            params![run_id, task_id, with],
        )
    }

    /// Records that a person accepted a task over the gate's verdict (who and why), or clears it.
    pub fn set_forced(
        &mut self,
        run_id: &RunId,
        task_id: &TaskId,
        forced: Option<&str>,
    ) -> Result<(), StoreError> {
        self.update(
            "recording a forced acceptance",
            "UPDATE tasks SET forced = ?3 WHERE run_id = ?1 AND id = ?2",
            params![run_id, task_id, forced],
        )
    }

    /// A task's transitions, oldest first: (time in ms, state, reason).
    pub fn transitions(
        &self,
        run_id: &RunId,
        task_id: &TaskId,
    ) -> Result<Vec<(i64, TaskState, Option<String>)>, StoreError> {
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT at, state, reason FROM transitions WHERE run_id = ?1 AND task_id = ?2 ORDER BY seq",
            )
            .map_err(query("listing transitions"))?;
        let rows = statement
            .query_map(rusqlite::params![run_id, task_id], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, row.get(2)?))
            })
            .map_err(query("listing transitions"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(query("listing transitions"))?;
        rows.into_iter()
            .map(|(at, state, reason)| {
                let state = TaskState::parse(&state)
                    .ok_or_else(|| StoreError::Corrupt(format!("task state `{state}`")))?;
                Ok((at, state, reason))
            })
            .collect()
    }

    /// Each run's newest transition (its sequence number), by run id: one query for every run, so a watcher can
    /// tell which runs changed.
    pub fn newest_transitions(
        &self,
    ) -> Result<std::collections::BTreeMap<String, i64>, StoreError> {
        let mut statement = self
            .conn
            .prepare_cached("SELECT run_id, MAX(seq) FROM transitions GROUP BY run_id")
            .map_err(query("listing transitions"))?;
        statement
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
            })
            .map_err(query("listing transitions"))?
            .collect::<Result<_, _>>()
            .map_err(query("listing transitions"))
    }

    /// When each task of a run last changed state (ms since the epoch), by task id.
    pub fn last_changes(
        &self,
        run_id: &RunId,
    ) -> Result<std::collections::BTreeMap<String, i64>, StoreError> {
        let mut statement = self
            .conn
            .prepare_cached("SELECT task_id, MAX(at) FROM transitions WHERE run_id = ?1 AND task_id IS NOT NULL GROUP BY task_id")
            .map_err(query("listing transitions"))?;
        statement
            .query_map([run_id], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
            })
            .map_err(query("listing transitions"))?
            .collect::<Result<_, _>>()
            .map_err(query("listing transitions"))
    }

    /// When each task's latest attempt started and (if it did) finished, in ms since the epoch, by task id.
    pub fn latest_attempt_times(
        &self,
        run_id: &RunId,
    ) -> Result<std::collections::BTreeMap<String, (i64, Option<i64>)>, StoreError> {
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT task_id, started_at, finished_at FROM attempts a WHERE run_id = ?1 AND n = \
                 (SELECT MAX(n) FROM attempts b WHERE b.run_id = a.run_id AND b.task_id = a.task_id)",
            )
            .map_err(query("listing attempts"))?;
        statement
            .query_map([run_id], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    (row.get::<_, i64>(1)?, row.get(2)?),
                ))
            })
            .map_err(query("listing attempts"))?
            .collect::<Result<_, _>>()
            .map_err(query("listing attempts"))
    }

    /// A number that changes whenever another connection committed a change to the database (SQLite's
    /// `data_version`): a watcher looks again only then.
    pub fn data_version(&self) -> Result<i64, StoreError> {
        self.conn
            .pragma_query_value(None, "data_version", |row| row.get(0))
            .map_err(query("reading the data version"))
    }

    /// Asks whoever carries the run to cancel one task (or every task); returns how many tasks were asked.
    pub fn request_cancel(
        &mut self,
        run_id: &RunId,
        task_id: Option<&TaskId>,
    ) -> Result<usize, StoreError> {
        self.conn
            .execute(
                "UPDATE tasks SET cancel_requested = 1 WHERE run_id = ?1 AND (?2 IS NULL OR id = ?2)",
                params![run_id, task_id],
            )
            .map_err(query("requesting a cancel"))
    }

    /// Clears a task's cancel request (a later `rework` or `retry` starts afresh).
    pub fn clear_cancel(&mut self, run_id: &RunId, task_id: &TaskId) -> Result<(), StoreError> {
        self.update(
            "clearing a cancel request",
            "UPDATE tasks SET cancel_requested = 0 WHERE run_id = ?1 AND id = ?2",
            params![run_id, task_id],
        )
    }

    /// Tasks of a run that another process asked to cancel.
    pub fn cancel_requests(&self, run_id: &RunId) -> Result<Vec<TaskId>, StoreError> {
        let mut statement = self
            .conn
            .prepare_cached("SELECT id FROM tasks WHERE run_id = ?1 AND cancel_requested = 1")
            .map_err(query("reading cancel requests"))?;
        statement
            .query_map([run_id], |row| row.get(0))
            .map_err(query("reading cancel requests"))?
            .collect::<Result<Vec<TaskId>, _>>()
            .map_err(query("reading cancel requests"))
    }

    /// Marks every run whose owner is gone (per `owner_alive`) as interrupted, with its in-flight tasks and
    /// attempts; returns those attempts so the caller can kill processes they left behind. A task killed while
    /// merging is settled by `landed(commit, branch)` — whether its landing commit is on the branch — as merged
    /// or as accepted (nothing landed), never left half-way.
    pub fn recover(
        &mut self,
        owner_alive: impl Fn(i64, &str) -> bool,
        landed: impl Fn(&CommitId, &str) -> bool,
    ) -> Result<Vec<RecoveredAttempt>, StoreError> {
        let orphaned: Vec<_> = self
            .runs()?
            .into_iter()
            .filter(|run| {
                run.state == RunState::Running && !owner_alive(run.owner_pid, &run.owner_start)
            })
            .collect();
        let mut recovered = Vec::new();
        for run in orphaned {
            let why = format!(
                "the ccfan process (pid {}) that ran it ended",
                run.owner_pid
            );
            for task in self.tasks(&run.id)? {
                if task.state.is_final() {
                    continue;
                }
                if task.state == TaskState::Merging {
                    let (state, reason) = match (&task.landing, &task.landed_on) {
                        (Some(commit), Some(branch)) if landed(commit, branch) => (
                            TaskState::Merged,
                            format!(
                                "{why} during its merge; {branch} holds its commit {} (checked after the restart)",
                                crate::util::short(commit)
                            ),
                        ),
                        _ => (
                            TaskState::Accepted,
                            format!(
                                "{why} during its merge, before the branch moved: nothing landed; `ccfan merge {}` lands it",
                                run.id
                            ),
                        ),
                    };
                    if state == TaskState::Accepted {
                        self.set_landing(&run.id, &task.id, None)?;
                    }
                    self.set_task_state(&run.id, &task.id, state, Some(&reason))?;
                    continue;
                }
                let reason = match task.state {
                    TaskState::Queued | TaskState::Waiting => format!(
                        "{why} while the task was {} (it never started); `ccfan retry {}/{}` starts it",
                        task.state, run.id, task.id
                    ),
                    _ => format!(
                        "{why} while the task was {}; its worktree and partial work are kept",
                        task.state
                    ),
                };
                let attempts = self.attempts(&run.id, &task.id)?;
                // A task killed while verifying may have left its tests or its reviewer running under its latest
                // recorded attempt's token: that attempt is named too (and stays recorded).
                if task.state == TaskState::Verifying
                    && let Some(attempt) = attempts.iter().rev().find(|a| a.state == "recorded")
                {
                    recovered.push(RecoveredAttempt {
                        run_id: run.id.clone(),
                        task_id: task.id.clone(),
                        token: attempt.token.clone(),
                    });
                }
                for attempt in attempts {
                    if attempt.state == "running" {
                        recovered.push(RecoveredAttempt {
                            run_id: run.id.clone(),
                            task_id: task.id.clone(),
                            token: attempt.token.clone(),
                        });
                        self.conn
                            .execute(
                                "UPDATE attempts SET state = 'interrupted', finished_at = ?4
                                 WHERE run_id = ?1 AND task_id = ?2 AND n = ?3",
                                params![run.id, task.id, attempt.n, now_millis()],
                            )
                            .map_err(query("marking an attempt interrupted"))?;
                    }
                }
                self.set_task_state(&run.id, &task.id, TaskState::Interrupted, Some(&reason))?;
            }
            self.finish_run(&run.id, RunState::Interrupted, Some(&why))?;
        }
        Ok(recovered)
    }
}
