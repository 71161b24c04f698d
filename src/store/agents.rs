//! Durable state for agent workers: the session a task's reworks resume, and each attempt's agent summary —
//! written as the agent works (so `ccfan status` from another process shows live progress) and once it ended
//! (usage and cost per attempt, summed per task and run by the views).

use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError, query};
use crate::agents::tally::AgentSummary;
use crate::model::{RunId, TaskId};

impl Store {
    /// Remembers the agent session a task's next rework resumes.
    pub fn set_agent_session(
        &mut self,
        run_id: &RunId,
        task_id: &TaskId,
        session: &str,
    ) -> Result<(), StoreError> {
        self.update(
            "recording an agent session",
            "UPDATE tasks SET agent_session = ?3 WHERE run_id = ?1 AND id = ?2",
            params![run_id, task_id, session],
        )
    }

    /// The agent session a task's next rework resumes, if any.
    pub fn agent_session(
        &self,
        run_id: &RunId,
        task_id: &TaskId,
    ) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row(
                "SELECT agent_session FROM tasks WHERE run_id = ?1 AND id = ?2",
                rusqlite::params![run_id, task_id],
                |row| row.get::<_, Option<String>>(0),
            )
            .optional()
            .map(Option::flatten)
            .map_err(query("reading an agent session"))
    }

    /// Stores an attempt's agent summary (progress so far, or the final tally).
    pub fn set_attempt_agent(
        &mut self,
        run_id: &RunId,
        task_id: &TaskId,
        n: u32,
        summary: &AgentSummary,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(summary).unwrap_or_default();
        self.update(
            "recording agent progress",
            "UPDATE attempts SET agent = ?4 WHERE run_id = ?1 AND task_id = ?2 AND n = ?3",
            params![run_id, task_id, n, json],
        )
    }

    /// Every agent summary of a run's attempts, live ones included, and of its reviews, with its task (what
    /// `[budget]` weighs).
    pub fn run_attempt_agents(
        &self,
        run_id: &RunId,
    ) -> Result<Vec<(TaskId, AgentSummary)>, StoreError> {
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT task_id, agent FROM attempts WHERE run_id = ?1 AND agent IS NOT NULL
                 UNION ALL SELECT task_id, agent FROM reviews WHERE run_id = ?1 AND agent IS NOT NULL",
            )
            .map_err(query("listing a run's agent summaries"))?;
        let rows = statement
            .query_map(rusqlite::params![run_id], |row| {
                Ok((row.get::<_, TaskId>(0)?, row.get::<_, String>(1)?))
            })
            .map_err(query("listing a run's agent summaries"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(query("listing a run's agent summaries"))?;
        Ok(rows
            .into_iter()
            .filter_map(|(task, json)| serde_json::from_str(&json).ok().map(|s| (task, s)))
            .collect())
    }

    /// The agent summaries of a task's attempts, oldest first (attempts of other workers are left out).
    pub fn attempt_agents(
        &self,
        run_id: &RunId,
        task_id: &TaskId,
    ) -> Result<Vec<(u32, AgentSummary)>, StoreError> {
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT n, agent FROM attempts
                 WHERE run_id = ?1 AND task_id = ?2 AND agent IS NOT NULL ORDER BY n",
            )
            .map_err(query("listing agent summaries"))?;
        let rows = statement
            .query_map(rusqlite::params![run_id, task_id], |row| {
                Ok((row.get::<_, u32>(0)?, row.get::<_, String>(1)?))
            })
            .map_err(query("listing agent summaries"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(query("listing agent summaries"))?;
        // A summary written by a newer ccfan that this one cannot read is left out, not an error.
        Ok(rows
            .into_iter()
            .filter_map(|(n, json)| serde_json::from_str(&json).ok().map(|s| (n, s)))
            .collect())
    }
}
