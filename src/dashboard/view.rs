//! What the dashboard shows, as pure values: which group a task belongs to (needs you, working, done) and why,
//! its compact row, and which rows changed between two looks at the state database — so the page gets only the
//! rows that changed, and a run of 500 tasks stays cheap to keep live.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::{RunView, TaskState, TaskView};
use crate::report::Verdict;

/// Where a task stands for the person watching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    /// A person decides what happens next.
    NeedsYou,
    /// ccfan is carrying it.
    Working,
    /// Nothing more will happen to it.
    Done,
}

/// The group of a task in `state`, and what it needs when it needs you. `carried`: a live ccfan process owns the
/// run (so a task in flight moves on, and an accepted one is about to land); `no_merge`: the run stops at
/// accepted.
pub fn group(state: TaskState, carried: bool, no_merge: bool) -> (Group, Option<&'static str>) {
    use TaskState as S;
    match state {
        S::Queued
        | S::Waiting
        | S::Preparing
        | S::Running
        | S::Completed
        | S::Verifying
        | S::Rework
        | S::Merging => match carried {
            true => (Group::Working, None),
            false => (
                Group::NeedsYou,
                Some("no ccfan process carries it any more: retry or roll back"),
            ),
        },
        S::Accepted if carried && !no_merge => (Group::Working, None),
        S::Accepted if no_merge => (Group::NeedsYou, Some("accepted, not landed: merge it")),
        S::Accepted => (
            Group::NeedsYou,
            Some("accepted, waiting to be integrated: merge it"),
        ),
        S::Blocked => (
            Group::NeedsYou,
            Some("decide: rework, retry, accept or roll back"),
        ),
        S::Conflict => (
            Group::NeedsYou,
            Some("conflict: rework on the new tip, or roll back"),
        ),
        S::Failed | S::TimedOut | S::OverBudget | S::Interrupted | S::Error => {
            (Group::NeedsYou, Some("did not finish: retry or roll back"))
        }
        S::Planned => (
            Group::NeedsYou,
            Some("its plan waits for you: approve or reject it"),
        ),
        S::Rejected | S::NotChosen => (Group::Done, None),
        S::Skipped => (
            Group::NeedsYou,
            Some("skipped: a prerequisite did not land; settle it, then retry this one"),
        ),
        S::Merged | S::RolledBack | S::Cancelled => (Group::Done, None),
    }
}

/// When a task last changed, and when its latest attempt started and finished (ms since the epoch).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timing {
    /// Its last change of state.
    pub since_ms: Option<i64>,
    /// Its latest attempt's start.
    pub started_ms: Option<i64>,
    /// Its latest attempt's end, once it ended.
    pub finished_ms: Option<i64>,
}

/// One task as a row of the dashboard.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// The task.
    pub id: String,
    /// Its state.
    pub state: TaskState,
    /// Its group.
    pub group: Group,
    /// What it needs from you, when it does.
    pub needs: Option<&'static str>,
    /// Attempts so far.
    pub attempt: u32,
    /// Seconds its latest attempt ran, once it ended.
    pub elapsed_secs: Option<f64>,
    /// When its latest attempt started, while it runs (the page counts the time itself, so a running row does
    /// not change with every look).
    pub started_ms: Option<i64>,
    /// When it last changed state (ms since the epoch; the page measures how fresh its view is against it).
    pub since_ms: Option<i64>,
    /// The agent's current or last action.
    pub action: Option<String>,
    /// The gate's verdict on its latest judged attempt.
    pub verdict: Option<&'static str>,
    /// The verdict's findings or reasons, one line each.
    pub findings: Vec<String>,
    /// Tokens used (input and output, all attempts).
    pub tokens: Option<u64>,
    /// Cost in US dollars, when known.
    pub cost_usd: Option<f64>,
    /// Why it is where it is.
    pub reason: Option<String>,
    /// Plan mode: the SHA-256 of its latest plan (what an approval from the page names).
    pub plan_sha256: Option<String>,
    /// With a review stage: who reviews, how the latest review ended, what the reviews cost.
    pub review: Option<String>,
}

/// The row of `task`, with its `timing`.
pub fn row(task: &TaskView, timing: Timing, carried: bool, no_merge: bool) -> Row {
    let (group, needs) = group(task.state, carried, no_merge);
    let (verdict, findings) = match &task.verdict {
        None => (None, Vec::new()),
        Some(Verdict::Accept) => (Some("accept"), Vec::new()),
        Some(Verdict::Rework { findings }) => (
            Some("rework"),
            findings
                .iter()
                .map(|finding| match (&finding.path, finding.line) {
                    (Some(path), Some(line)) => {
                        format!("{} at {path}:{line}: {}", finding.rule, finding.message)
                    }
                    (Some(path), None) => {
                        format!("{} at {path}: {}", finding.rule, finding.message)
                    }
                    (None, _) => format!("{}: {}", finding.rule, finding.message),
                })
                .collect(),
        ),
        Some(Verdict::Rollback { reasons, .. }) => (Some("rollback"), reasons.clone()),
    };
    let action = task
        .agent
        .as_ref()
        .and_then(|agent| agent.current.clone().or_else(|| agent.last_command.clone()));
    Row {
        id: task.id.to_string(),
        state: task.state,
        group,
        needs,
        attempt: task.attempts,
        elapsed_secs: timing
            .started_ms
            .zip(timing.finished_ms)
            .map(|(start, end)| ((end - start).max(0) / 100) as f64 / 10.0),
        started_ms: timing.started_ms.filter(|_| timing.finished_ms.is_none()),
        since_ms: timing.since_ms,
        action,
        verdict,
        findings,
        tokens: task
            .usage
            .map(|usage| usage.input_tokens + usage.output_tokens),
        cost_usd: task.cost_usd,
        reason: task.reason.clone(),
        plan_sha256: task.plan.as_ref().map(|plan| plan.sha256.clone()),
        review: task
            .review
            .as_ref()
            .map(crate::model::review::ReviewView::line),
    }
}

/// A run as the dashboard shows it: its facts and its rows, in task-file order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunPanel {
    /// The run.
    pub run_id: String,
    /// `running`, `finished` or `interrupted`.
    pub state: &'static str,
    /// A live ccfan process carries it.
    pub carried: bool,
    /// When it started.
    pub created_at: String,
    /// Its base commit.
    pub base: String,
    /// Where it lands (`None`: it stops at accepted).
    pub target: Option<String>,
    /// It stops at accepted.
    pub no_merge: bool,
    /// Its total cost, when known.
    pub cost_usd: Option<f64>,
    /// Its tasks.
    pub rows: Vec<Row>,
}

/// The panel of `view`; `times` gives each task's timing, by task id.
pub fn panel(view: &RunView, carried: bool, times: &BTreeMap<String, Timing>) -> RunPanel {
    RunPanel {
        run_id: view.run_id.to_string(),
        state: view.state.as_str(),
        carried,
        created_at: view.created_at.clone(),
        base: view.base.to_string(),
        target: (!view.no_merge)
            .then(|| view.target_branch.clone())
            .flatten(),
        no_merge: view.no_merge,
        cost_usd: view
            .ledger
            .as_ref()
            .map(|ledger| &ledger.total)
            .filter(|total| total.attempts > total.unpriced)
            .map(|total| total.cost_usd),
        rows: view
            .tasks
            .iter()
            .map(|task| {
                row(
                    task,
                    times.get(task.id.as_str()).copied().unwrap_or_default(),
                    carried,
                    view.no_merge,
                )
            })
            .collect(),
    }
}

/// What changed in a run between two looks: its facts (when they did) and the rows that differ.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delta {
    /// The run.
    pub run_id: String,
    /// Its facts without rows, when they changed (or it is new).
    pub run: Option<RunPanel>,
    /// Rows new or changed.
    pub rows: Vec<Row>,
}

/// The change from `before` (if the run was seen) to `after`; `None` when nothing changed.
pub fn delta(before: Option<&RunPanel>, after: &RunPanel) -> Option<Delta> {
    let facts = |panel: &RunPanel| RunPanel {
        rows: Vec::new(),
        ..panel.clone()
    };
    let run = match before {
        Some(old) if facts(old) == facts(after) => None,
        _ => Some(facts(after)),
    };
    let seen: std::collections::HashMap<&str, &Row> = before
        .map(|old| old.rows.iter().map(|row| (row.id.as_str(), row)).collect())
        .unwrap_or_default();
    let rows: Vec<Row> = after
        .rows
        .iter()
        .filter(|row| seen.get(row.id.as_str()).is_none_or(|old| *old != *row))
        .cloned()
        .collect();
    (run.is_some() || !rows.is_empty()).then(|| Delta {
        run_id: after.run_id.clone(),
        run,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_has_a_group_and_what_needs_you_says_what_to_do() {
        for state in TaskState::ALL {
            let (group, needs) = group(state, false, false);
            assert_eq!(group == Group::NeedsYou, needs.is_some(), "{state:?}");
        }
        assert_eq!(group(TaskState::Accepted, true, false).0, Group::Working);
        assert_eq!(group(TaskState::Accepted, true, true).0, Group::NeedsYou);
        assert_eq!(group(TaskState::Accepted, false, false).0, Group::NeedsYou);
        assert_eq!(group(TaskState::Blocked, true, false).0, Group::NeedsYou);
        assert_eq!(group(TaskState::Merged, false, false).0, Group::Done);
        assert_eq!(group(TaskState::Running, true, false).0, Group::Working);
        // Its process died: nothing will move it, so it needs you.
        assert_eq!(group(TaskState::Running, false, false).0, Group::NeedsYou);
    }

    fn sample(rows: &[(&str, TaskState)]) -> RunPanel {
        RunPanel {
            run_id: "r".into(),
            state: "running",
            carried: true,
            created_at: "now".into(),
            base: "abc".into(),
            target: None,
            no_merge: true,
            cost_usd: None,
            rows: rows
                .iter()
                .map(|(id, state)| Row {
                    id: (*id).into(),
                    state: *state,
                    group: Group::Working,
                    needs: None,
                    attempt: 1,
                    elapsed_secs: None,
                    started_ms: None,
                    since_ms: None,
                    action: None,
                    verdict: None,
                    findings: Vec::new(),
                    plan_sha256: None,
                    review: None,
                    tokens: None,
                    cost_usd: None,
                    reason: None,
                })
                .collect(),
        }
    }

    #[test]
    fn a_delta_holds_only_what_changed() {
        let old = sample(&[("a", TaskState::Running), ("b", TaskState::Running)]);
        assert_eq!(delta(Some(&old), &old), None);
        let new = sample(&[("a", TaskState::Running), ("b", TaskState::Accepted)]);
        let change = delta(Some(&old), &new).unwrap();
        assert_eq!(change.run, None);
        assert_eq!(change.rows.len(), 1);
        assert_eq!(change.rows[0].id, "b");
        let first = delta(None, &new).unwrap();
        assert!(first.run.is_some() && first.rows.len() == 2);
        let finished = RunPanel {
            state: "finished",
            ..new.clone()
        };
        let change = delta(Some(&new), &finished).unwrap();
        assert!(change.run.is_some() && change.rows.is_empty());
    }
}
