//! The scorecard: how each worker profile and model did across runs — tasks, accepted on the first attempt, mean
//! reworks, scope violations, secrets caught, failed tests, median time and cost per accepted task — read from the
//! stored runs and each attempt's gate report, so a person can choose workers by evidence rather than by feel.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::cost::PriceTable;
use crate::model::TaskState;
use crate::paths::AttemptDir;
use crate::report::{Level, Stage, Verdict, VerifyReport};
use crate::store::{Store, StoreError};

/// One worker profile and model's record.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Row {
    /// The worker profile.
    pub profile: String,
    /// The model its agent ran (`-` for command workers; `unknown` when an agent named none).
    pub model: String,
    /// Tasks it carried.
    pub tasks: u32,
    /// Tasks the gate accepted (merged or not).
    pub accepted: u32,
    /// Tasks accepted on their first attempt.
    pub accepted_first_attempt: u32,
    /// Reworks the gate asked for, per task.
    pub mean_reworks: f64,
    /// Paths written outside the allowed globs (each once per task).
    pub scope_violations: u32,
    /// Secrets the gate caught (each once per task, by fingerprint).
    pub secrets_caught: u32,
    /// Attempts whose tests failed.
    pub tests_failed: u32,
    /// Median time per task, first attempt's start to last attempt's end, in seconds.
    pub median_secs: Option<f64>,
    /// What its attempts cost, in US dollars (where known).
    pub cost_usd: f64,
    /// Cost per accepted task.
    pub cost_per_accepted_usd: Option<f64>,
    /// Attempts with tokens but no known cost.
    pub unpriced_attempts: u32,
    #[serde(skip)]
    reworks: u32,
    #[serde(skip)]
    times: Vec<f64>,
}

/// The scorecard.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scorecard {
    /// Schema version of the JSON document.
    pub schema: u32,
    /// Runs counted.
    pub runs: u32,
    /// Only runs created at or after this (milliseconds since the epoch), when asked.
    pub since_millis: Option<i64>,
    /// One row per worker profile and model, by profile then model.
    pub rows: Vec<Row>,
}

/// What a task's gate reports found, each thing once: the gate judges all of a task's commits at every attempt,
/// and a secret is found both where it was written and where it was printed.
#[derive(Debug, Default)]
struct Caught {
    /// Paths written outside the allowed globs.
    scope: std::collections::BTreeSet<String>,
    /// Secrets, by fingerprint (else rule and path).
    secrets: std::collections::BTreeSet<String>,
    /// Attempts whose tests failed.
    tests_failed: u32,
}

impl Caught {
    fn add(&mut self, report: &VerifyReport) {
        let blocking = |stage: Stage| {
            report
                .findings()
                .filter(move |finding| finding.stage == stage && finding.level == Level::Error)
        };
        self.scope.extend(
            blocking(Stage::Scope)
                .map(|finding| finding.path.clone().unwrap_or_else(|| finding.rule.clone())),
        );
        self.secrets.extend(blocking(Stage::Secrets).map(|finding| {
            finding.fingerprint.clone().unwrap_or_else(|| {
                format!("{}:{}", finding.rule, finding.path.as_deref().unwrap_or(""))
            })
        }));
        self.tests_failed += u32::from(blocking(Stage::Tests).next().is_some());
    }
}

/// The scorecard of every run in `store` (created at or after `since`, in milliseconds, when given).
pub fn scorecard(
    store: &Store,
    prices: &PriceTable,
    since: Option<i64>,
) -> Result<Scorecard, StoreError> {
    let mut rows: BTreeMap<(String, String), Row> = BTreeMap::new();
    let mut runs = 0;
    for run in store.runs()? {
        if since.is_some_and(|since| run.created_at < since) {
            continue;
        }
        runs += 1;
        for task in store.tasks(&run.id)? {
            let attempts = store.attempts(&run.id, &task.id)?;
            if attempts.is_empty() {
                continue;
            }
            let agents = store.attempt_agents(&run.id, &task.id)?;
            let model = match (task.spec.worker.kind.agent(), agents.last()) {
                (None, _) => "-".to_string(),
                (Some(_), Some((_, summary))) => {
                    summary.model.clone().unwrap_or_else(|| "unknown".into())
                }
                (Some((_, config)), None) => {
                    config.model.clone().unwrap_or_else(|| "unknown".into())
                }
            };
            let row = rows
                .entry((task.spec.worker.name.clone(), model.clone()))
                .or_insert_with(|| Row {
                    profile: task.spec.worker.name.clone(),
                    model,
                    ..Row::default()
                });
            row.tasks += 1;
            // Accepted by the gate: a person's `accept --force` over it does not count.
            // A best-of-N candidate the gate accepted but another won counts as accepted too.
            let accepted = matches!(
                task.state,
                TaskState::Accepted | TaskState::Merged | TaskState::NotChosen
            ) && task.forced.is_none();
            row.accepted += u32::from(accepted);
            let first_accepted = attempts
                .first()
                .and_then(|attempt| attempt.verdict.as_ref())
                == Some(&Verdict::Accept);
            row.accepted_first_attempt += u32::from(accepted && first_accepted);
            let mut found = Caught::default();
            for attempt in &attempts {
                row.reworks += u32::from(matches!(attempt.verdict, Some(Verdict::Rework { .. })));
                let report = crate::util::read_regular(
                    &AttemptDir::verify_report(&AttemptDir::of(&attempt.dir).artifacts(false)),
                    crate::util::MAX_WORKER_FILE,
                )
                .ok()
                .and_then(|bytes| serde_json::from_slice::<VerifyReport>(&bytes).ok());
                if let Some(report) = &report {
                    found.add(report);
                }
            }
            row.scope_violations += found.scope.len() as u32;
            row.secrets_caught += found.secrets.len() as u32;
            row.tests_failed += found.tests_failed;
            let start = attempts.iter().map(|attempt| attempt.started_at).min();
            let end = attempts
                .iter()
                .filter_map(|attempt| attempt.finished_at)
                .max();
            if let (Some(start), Some(end)) = (start, end) {
                row.times.push((end - start).max(0) as f64 / 1000.0);
            }
            for (_, summary) in &agents {
                match prices.cost(summary.agent, summary.model.as_deref(), &summary.usage) {
                    Some(cost) => row.cost_usd += cost.usd,
                    None if !summary.usage.is_empty() => row.unpriced_attempts += 1,
                    None => {}
                }
            }
        }
    }
    Ok(Scorecard {
        schema: 1,
        runs,
        since_millis: since,
        rows: rows.into_values().map(finish).collect(),
    })
}

/// The row's derived figures: mean reworks, median time, cost per accepted task.
fn finish(mut row: Row) -> Row {
    row.mean_reworks = if row.tasks == 0 {
        0.0
    } else {
        f64::from(row.reworks) / f64::from(row.tasks)
    };
    row.times.sort_by(f64::total_cmp);
    row.median_secs = match row.times.len() {
        0 => None,
        n if n % 2 == 1 => Some(row.times[n / 2]),
        n => Some((row.times[n / 2 - 1] + row.times[n / 2]) / 2.0),
    };
    row.cost_per_accepted_usd = (row.accepted > 0).then(|| row.cost_usd / f64::from(row.accepted));
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_figures_are_means_and_medians_of_what_was_counted() {
        let row = finish(Row {
            tasks: 4,
            accepted: 2,
            reworks: 3,
            cost_usd: 1.0,
            times: vec![4.0, 1.0, 3.0, 2.0],
            ..Row::default()
        });
        assert!((row.mean_reworks - 0.75).abs() < 1e-9);
        assert_eq!(row.median_secs, Some(2.5));
        assert_eq!(row.cost_per_accepted_usd, Some(0.5));
        let none = finish(Row::default());
        assert_eq!((none.median_secs, none.cost_per_accepted_usd), (None, None));
    }
}
