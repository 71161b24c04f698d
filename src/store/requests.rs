//! Durable state for delegation over MCP: which run a `client_request_id` started (so a client that retries a
//! call gets the same run back), and which delegated tasks are still active (so an identical task is reported,
//! not started twice) — both decided in one write transaction, so two servers on one repository agree.

use rusqlite::{OptionalExtension, params};
use sha2::{Digest, Sha256};

use super::{Store, StoreError, query};
use crate::model::{RunId, RunState, TaskId, TaskSpec};
use crate::util::now_millis;

/// How long a registered delegation counts as starting before its run appears (its ccfan process then failed).
const PENDING_MS: i64 = 120_000;

/// A task that is already active elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveTask {
    /// The new task that duplicates it.
    pub task_id: TaskId,
    /// Where the identical task is active.
    pub active_run: RunId,
    /// Its id there.
    pub active_task: TaskId,
}

/// What registering a delegation found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// Registered under the new run id; these of its tasks duplicate active ones and must be left out.
    New {
        /// Tasks identical to active ones.
        duplicates: Vec<ActiveTask>,
    },
    /// The request id was seen before: its run, and whether the request was the same.
    Existing {
        /// The run it started.
        run_id: RunId,
        /// Whether the earlier request had the same content.
        same: bool,
    },
}

/// What identifies a task's work: goal, scope, constraints, acceptance, worker and prerequisites (not its id or
/// timeout).
pub fn task_fingerprint(spec: &TaskSpec) -> String {
    let mut key = serde_json::json!([
        spec.goal.trim(),
        spec.allowed,
        spec.denied,
        spec.constraints,
        spec.acceptance,
        spec.worker.name,
    ]);
    // Only when set, so the fingerprints of tasks without prerequisites stay what they were.
    if !spec.after.is_empty()
        && let Some(parts) = key.as_array_mut()
    {
        parts.push(serde_json::json!(spec.after));
    }
    hex(&Sha256::digest(key.to_string().as_bytes()))
}

/// A short digest of any request text.
pub fn request_fingerprint(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Store {
    /// Registers a delegation in one write transaction: returns the run an earlier request with `key` started,
    /// or records `run_id` for `key` and reports which of `tasks` (id, spec) are identical to a task still
    /// active — in a running run carried by a live process (`owner_alive`), or in a delegation still starting.
    /// Only the tasks that are not duplicates are remembered as starting.
    pub fn register_delegation(
        &mut self,
        key: &str,
        fingerprint: &str,
        run_id: &RunId,
        tasks: &[(&TaskId, &TaskSpec)],
        owner_alive: impl Fn(i64, &str) -> bool,
    ) -> Result<Registration, StoreError> {
        let context = "registering a delegation";
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(query(context))?;
        let earlier: Option<(RunId, String)> = tx
            .query_row(
                "SELECT run_id, fingerprint FROM requests WHERE key = ?1",
                [key],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(query(context))?;
        if let Some((run_id, earlier_fingerprint)) = earlier {
            return Ok(Registration::Existing {
                run_id,
                same: earlier_fingerprint == fingerprint,
            });
        }
        // Active work: (fingerprint, run, task).
        let mut active: Vec<(String, RunId, TaskId)> = Vec::new();
        {
            let mut runs = tx
                .prepare("SELECT id, owner_pid, owner_start FROM runs WHERE state = ?1")
                .map_err(query(context))?;
            let running: Vec<(RunId, i64, String)> = runs
                .query_map([RunState::Running.as_str()], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })
                .map_err(query(context))?
                .collect::<Result<_, _>>()
                .map_err(query(context))?;
            let mut tasks_of = tx
                .prepare("SELECT id, spec, state FROM tasks WHERE run_id = ?1")
                .map_err(query(context))?;
            for (run, pid, start) in running {
                if !owner_alive(pid, &start) {
                    continue;
                }
                let rows: Vec<(TaskId, String, String)> = tasks_of
                    .query_map([&run], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
                    .map_err(query(context))?
                    .collect::<Result<_, _>>()
                    .map_err(query(context))?;
                for (task, spec, state) in rows {
                    let finished = crate::model::TaskState::parse(&state)
                        .is_none_or(crate::model::TaskState::is_final);
                    if finished {
                        continue;
                    }
                    if let Ok(spec) = serde_json::from_str::<TaskSpec>(&spec) {
                        active.push((task_fingerprint(&spec), run.clone(), task));
                    }
                }
            }
            let mut pending = tx
                .prepare(
                    "SELECT r.run_id, r.tasks FROM requests r
                     WHERE r.created_at > ?1 AND NOT EXISTS (SELECT 1 FROM runs WHERE id = r.run_id)",
                )
                .map_err(query(context))?;
            let starting: Vec<(RunId, String)> = pending
                .query_map([now_millis() - PENDING_MS], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })
                .map_err(query(context))?
                .collect::<Result<_, _>>()
                .map_err(query(context))?;
            for (run, list) in starting {
                let list: Vec<(TaskId, String)> = serde_json::from_str(&list).unwrap_or_default();
                active.extend(
                    list.into_iter()
                        .map(|(task, print)| (print, run.clone(), task)),
                );
            }
        }
        let mut duplicates = Vec::new();
        let mut starting = Vec::new();
        for (task_id, spec) in tasks {
            let print = task_fingerprint(spec);
            match active.iter().find(|(other, _, _)| *other == print) {
                Some((_, run, task)) => duplicates.push(ActiveTask {
                    task_id: (*task_id).clone(),
                    active_run: run.clone(),
                    active_task: task.clone(),
                }),
                None => starting.push(((*task_id).clone(), print)),
            }
        }
        let list = serde_json::to_string(&starting)
            .map_err(|error| StoreError::Corrupt(error.to_string()))?;
        tx.execute(
            "INSERT INTO requests (key, fingerprint, run_id, tasks, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![key, fingerprint, run_id, list, now_millis()],
        )
        .map_err(query(context))?;
        tx.commit().map_err(query(context))?;
        Ok(Registration::New { duplicates })
    }

    /// The sequence number of a run's latest stored transition (0 if none): a follow-up command started by
    /// another process has begun once this grows.
    pub fn last_transition(&self, run_id: &RunId) -> Result<i64, StoreError> {
        self.conn
            .query_row(
                "SELECT COALESCE(MAX(seq), 0) FROM transitions WHERE run_id = ?1",
                [run_id],
                |row| row.get(0),
            )
            .map_err(query("reading transitions"))
    }

    /// Forgets a delegation whose run never started (its ccfan process failed), so the request can be sent again.
    pub fn forget_delegation(&mut self, key: &str) -> Result<(), StoreError> {
        self.update(
            "forgetting a delegation",
            "DELETE FROM requests WHERE key = ?1",
            [key],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::fixtures::{run, task};
    use crate::model::{WorkerKind, WorkerProfile};

    fn spec(goal: &str) -> TaskSpec {
        TaskSpec {
            id: task("t"),
            goal: goal.to_string(),
            allowed: vec!["src/**".to_string()],
            denied: Vec::new(),
            constraints: Vec::new(),
            acceptance: Vec::new(),
            worker: WorkerProfile {
                name: "w".to_string(),
                kind: WorkerKind::Command {
                    argv: vec!["true".to_string()],
                },
                timeout: None,
                env: Vec::new(),
                pass_env: Vec::new(),
                network: None,
                writable: Vec::new(),
            },
            timeout: std::time::Duration::from_secs(60),
            after: Vec::new(),
            candidate: None,
            review: None,
        }
    }

    #[test]
    fn a_request_id_returns_its_run_and_identical_pending_tasks_are_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("state.db")).unwrap();
        let a = spec("add a test");
        let b = spec("fix the parser");
        let first = store
            .register_delegation(
                "req-1",
                "fp1",
                &run("run-1"),
                &[(&task("a"), &a)],
                |_, _| true,
            )
            .unwrap();
        assert_eq!(first, Registration::New { duplicates: vec![] });
        let again = store
            .register_delegation(
                "req-1",
                "fp2",
                &run("run-9"),
                &[(&task("a"), &a)],
                |_, _| true,
            )
            .unwrap();
        assert_eq!(
            again,
            Registration::Existing {
                run_id: run("run-1"),
                same: false
            }
        );
        // run-1 has not appeared yet: its task counts as starting.
        let other = store
            .register_delegation(
                "req-2",
                "fp3",
                &run("run-2"),
                &[(&task("x"), &a), (&task("y"), &b)],
                |_, _| true,
            )
            .unwrap();
        assert_eq!(
            other,
            Registration::New {
                duplicates: vec![ActiveTask {
                    task_id: task("x"),
                    active_run: run("run-1"),
                    active_task: task("a"),
                }]
            }
        );
        store.forget_delegation("req-1").unwrap();
        let fresh = store
            .register_delegation(
                "req-1",
                "fp1",
                &run("run-3"),
                &[(&task("a"), &b)],
                |_, _| true,
            )
            .unwrap();
        // b is starting under req-2 now.
        assert!(matches!(fresh, Registration::New { duplicates } if duplicates.len() == 1));
    }
}
