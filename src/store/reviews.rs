//! Durable state of the review stage: one row per review of an attempt — who reviewed, how it ended, and its
//! agent's usage — so a task's review cost is shown per task and counts toward `[budget]` like its own attempts.

use rusqlite::params;

use super::{Store, StoreError, query};
use crate::agents::tally::AgentSummary;
use crate::model::review::ReviewOutcome;
use crate::model::{RunId, TaskId};

/// One stored review.
#[derive(Debug, Clone)]
pub struct ReviewRow {
    /// The attempt reviewed.
    pub attempt: u32,
    /// When it ended (milliseconds since the epoch).
    pub at: i64,
    /// The reviewer's worker profile.
    pub reviewer: String,
    /// How it ended.
    pub outcome: ReviewOutcome,
    /// Its agent's summary (agent reviewers).
    pub agent: Option<AgentSummary>,
}

impl Store {
    /// Records one review of `task`'s attempt `attempt`.
    pub fn add_review(
        &mut self,
        run_id: &RunId,
        task_id: &TaskId,
        attempt: u32,
        reviewer: &str,
        outcome: ReviewOutcome,
        agent: Option<&AgentSummary>,
    ) -> Result<(), StoreError> {
        let agent = agent.map(|summary| serde_json::to_string(summary).unwrap_or_default());
        self.update(
            "recording a review",
            "INSERT INTO reviews (run_id, task_id, attempt, at, reviewer, outcome, agent)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                run_id,
                task_id,
                attempt,
                crate::util::now_millis(),
                reviewer,
                outcome.as_str(),
                agent
            ],
        )
    }

    /// A task's reviews, oldest first.
    pub fn reviews(&self, run_id: &RunId, task_id: &TaskId) -> Result<Vec<ReviewRow>, StoreError> {
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT attempt, at, reviewer, outcome, agent FROM reviews
                 WHERE run_id = ?1 AND task_id = ?2 ORDER BY seq",
            )
            .map_err(query("listing reviews"))?;
        let rows = statement
            .query_map(params![run_id, task_id], |row| {
                Ok((
                    row.get::<_, u32>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, Option<String>>(4)?,
                ))
            })
            .map_err(query("listing reviews"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(query("listing reviews"))?;
        // A row written by a newer ccfan that this one cannot read is left out, not an error.
        Ok(rows
            .into_iter()
            .filter_map(|(attempt, at, reviewer, outcome, agent)| {
                Some(ReviewRow {
                    attempt,
                    at,
                    reviewer,
                    outcome: ReviewOutcome::parse(&outcome)?,
                    agent: agent.and_then(|json| serde_json::from_str(&json).ok()),
                })
            })
            .collect())
    }
}
