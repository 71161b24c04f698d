//! Durable state for plan mode: the approval of a task's plan (who, when, which plan), written before the task
//! runs, so a task of a `--plan` run never runs without one and an approved plan survives a crash.

use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError, query};
use crate::model::plan::{Approval, PlanView};
use crate::model::{RunId, TaskId, TaskState};
use crate::paths::AttemptDir;
use crate::util::now_millis;

/// The SHA-256 of a plan's text, in lower-case hex: what an approval names.
pub fn plan_sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Store {
    /// Records (or, with `None`, clears) the approval of a task's plan.
    pub fn set_approval(
        &mut self,
        run_id: &RunId,
        task_id: &TaskId,
        approval: Option<&Approval>,
    ) -> Result<(), StoreError> {
        let json = approval
            .map(serde_json::to_string)
            .transpose()
            .map_err(|error| StoreError::Corrupt(error.to_string()))?;
        self.update(
            "recording an approval",
            "UPDATE tasks SET approval = ?3 WHERE run_id = ?1 AND id = ?2",
            params![run_id, task_id, json],
        )
    }

    /// A person's decision on a task's plan, in one transaction: its approval (or, rejected, none) with the
    /// task's new state and the transition — so a crash never leaves an approval on a task that looks undecided.
    pub fn decide_plan(
        &mut self,
        run_id: &RunId,
        task_id: &TaskId,
        approval: Option<&Approval>,
        state: TaskState,
        reason: &str,
    ) -> Result<(), StoreError> {
        let json = approval
            .map(serde_json::to_string)
            .transpose()
            .map_err(|error| StoreError::Corrupt(error.to_string()))?;
        let now = now_millis();
        let tx = self
            .conn
            .transaction()
            .map_err(query("starting a transaction"))?;
        tx.execute(
            "UPDATE tasks SET approval = ?3, state = ?4, reason = ?5, updated_at = ?6 WHERE run_id = ?1 AND id = ?2",
            params![run_id, task_id, json, state.as_str(), reason, now],
        )
        .map_err(query("recording a decision on a plan"))?;
        tx.execute(
            "INSERT INTO transitions (run_id, task_id, at, state, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![run_id, task_id, now, state.as_str(), reason],
        )
        .map_err(query("recording a transition"))?;
        tx.commit()
            .map_err(query("committing a decision on a plan"))
    }

    /// A task's latest plan (plan mode: the last attempt that stored one), with its approval once given.
    pub fn plan(&self, run_id: &RunId, task_id: &TaskId) -> Result<Option<PlanView>, StoreError> {
        let attempts = self.attempts(run_id, task_id)?;
        let Some((attempt, path)) = attempts.iter().rev().find_map(|attempt| {
            let path = AttemptDir::of(&attempt.dir).plan();
            path.is_file().then_some((attempt.n, path))
        }) else {
            return Ok(None);
        };
        let Ok(text) = std::fs::read(&path) else {
            return Ok(None);
        };
        Ok(Some(PlanView {
            attempt,
            path,
            sha256: plan_sha256(&text),
            approval: self.approval(run_id, task_id)?,
        }))
    }

    /// The approval of a task's plan, if a person gave one.
    pub fn approval(
        &self,
        run_id: &RunId,
        task_id: &TaskId,
    ) -> Result<Option<Approval>, StoreError> {
        let json: Option<String> = self
            .conn
            .query_row(
                "SELECT approval FROM tasks WHERE run_id = ?1 AND id = ?2",
                params![run_id, task_id],
                |row| row.get(0),
            )
            .optional()
            .map_err(query("reading an approval"))?
            .flatten();
        json.map(|text| {
            serde_json::from_str(&text)
                .map_err(|error| StoreError::Corrupt(format!("task {task_id}'s approval: {error}")))
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::fixtures::{run, task};

    #[test]
    fn an_approval_is_kept_and_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = crate::store::runs::tests::two_task_run(dir.path());
        assert_eq!(store.approval(&run("r"), &task("a")).unwrap(), None);
        let approval = Approval {
            by: "Ann <ann@example.com>".into(),
            at: "2026-12-03T08:00:00Z".into(),
            plan_attempt: 1,
            plan_sha256: "ab".repeat(32),
            note: Some("keep it small".into()),
        };
        store
            .set_approval(&run("r"), &task("a"), Some(&approval))
            .unwrap();
        assert_eq!(
            store.approval(&run("r"), &task("a")).unwrap(),
            Some(approval)
        );
        store.set_approval(&run("r"), &task("a"), None).unwrap();
        assert_eq!(store.approval(&run("r"), &task("a")).unwrap(), None);
    }
}
