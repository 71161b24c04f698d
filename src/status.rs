//! Read-only views of stored runs for `ccfan status` (human and `--json`) and, later, MCP: one shape for both.

use serde::Serialize;

use crate::model::{
    CommitId, JSON_SCHEMA_VERSION, RunId, RunState, RunView, TaskId, TaskState, TaskView,
};
use crate::store::{Store, StoreError};
use crate::util::{format_millis, now_millis};

/// One line of the run list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunSummary {
    /// Run id.
    pub run_id: RunId,
    /// Run state.
    pub state: RunState,
    /// Start time (RFC 3339).
    pub created_at: String,
    /// Base commit.
    pub base: CommitId,
    /// Number of tasks per state, in life-cycle order, zero counts left out.
    pub tasks: Vec<(TaskState, usize)>,
}

/// The run list (`ccfan status --json` without a run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunList {
    /// Schema version.
    pub schema: u32,
    /// Runs, newest first.
    pub runs: Vec<RunSummary>,
}

/// Every run, newest first.
pub fn list_runs(store: &Store) -> Result<RunList, StoreError> {
    let mut runs = Vec::new();
    for run in store.runs()? {
        let tasks = store.tasks(&run.id)?;
        let counts = TaskState::ALL
            .into_iter()
            .map(|state| (state, tasks.iter().filter(|t| t.state == state).count()))
            .filter(|(_, count)| *count > 0)
            .collect();
        runs.push(RunSummary {
            run_id: run.id,
            state: run.state,
            created_at: format_millis(run.created_at),
            base: run.base_sha,
            tasks: counts,
        });
    }
    Ok(RunList {
        schema: JSON_SCHEMA_VERSION,
        runs,
    })
}

/// The tasks whose work dependants may start from: landed (with `--no-merge`, or HEAD detached, accepted).
fn landed(rows: &[crate::store::TaskRow], stops_at_accepted: bool) -> Vec<TaskId> {
    rows.iter()
        .filter(|row| {
            row.state == TaskState::Merged
                || (row.state == TaskState::Accepted
                    && (row.landing.is_some() || stops_at_accepted))
        })
        .map(|row| row.id.clone())
        .collect()
}

/// While `task` waits: its prerequisites not `landed` yet.
fn waits_for(task: &crate::store::TaskRow, landed: &[TaskId]) -> Vec<TaskId> {
    if task.state != TaskState::Waiting {
        return Vec::new();
    }
    task.spec
        .after
        .iter()
        .filter(|id| !landed.contains(id))
        .cloned()
        .collect()
}

/// What a task's attempts cost (`None`: no attempt's cost is known), each added to the run's ledger.
fn attempts_cost(
    task: &crate::store::TaskRow,
    attempts: &[crate::store::AttemptRow],
    agents: &[(u32, crate::agents::tally::AgentSummary)],
    prices: &crate::cost::PriceTable,
    ledger: &mut crate::model::ledger::Ledger,
) -> Option<f64> {
    let mut task_cost = None;
    for (n, summary) in agents {
        let cost = prices.cost(summary.agent, summary.model.as_deref(), &summary.usage);
        let started = attempts.iter().find(|attempt| attempt.n == *n);
        let day = started.map_or_else(String::new, |attempt| {
            format_millis(attempt.started_at).chars().take(10).collect()
        });
        ledger.add(&task.spec.worker.name, &day, &summary.usage, cost.as_ref());
        if let Some(cost) = &cost {
            *task_cost.get_or_insert(0.0) += cost.usd;
        }
    }
    task_cost
}

/// A task's reviews as `status` shows them, their usage and cost added to the run's ledger (as the reviewer's
/// profile, marked `(review)`). `None` for a task without a review stage.
fn review_view(
    spec: &crate::model::TaskSpec,
    rows: &[crate::store::ReviewRow],
    prices: &crate::cost::PriceTable,
    ledger: &mut crate::model::ledger::Ledger,
) -> Option<crate::model::review::ReviewView> {
    let review = spec.review.as_ref()?;
    let mut cost_usd = None;
    for row in rows {
        let Some(summary) = &row.agent else {
            continue;
        };
        let cost = prices.cost(summary.agent, summary.model.as_deref(), &summary.usage);
        let day: String = format_millis(row.at).chars().take(10).collect();
        ledger.add(
            &format!("{} (review)", row.reviewer),
            &day,
            &summary.usage,
            cost.as_ref(),
        );
        if let Some(cost) = cost {
            *cost_usd.get_or_insert(0.0) += cost.usd;
        }
    }
    Some(crate::model::review::ReviewView {
        reviewer: review.profile.name.clone(),
        mode: review.mode,
        cross: review.cross,
        reviews: u32::try_from(rows.len()).unwrap_or(u32::MAX),
        latest: rows.last().map(|row| row.outcome),
        usage: rows
            .iter()
            .filter_map(|row| row.agent.as_ref().map(|summary| summary.usage))
            .reduce(crate::agents::Usage::plus),
        cost_usd,
    })
}

/// The full view of one run.
pub fn run_view(store: &Store, run_id: &RunId) -> Result<RunView, StoreError> {
    let run = store.run(run_id)?;
    let prices = crate::cost::PriceTable::load().unwrap_or_else(|error| {
        tracing::warn!("{error}; costs use the built-in price table");
        crate::cost::PriceTable::builtin()
    });
    let mut ledger = crate::model::ledger::Ledger::default();
    let mut tasks = Vec::new();
    let rows = store.tasks(run_id)?;
    let landed = landed(&rows, run.no_merge || run.target_branch.is_none());
    for task in rows {
        let waits_for = waits_for(&task, &landed);
        let attempts = store.attempts(run_id, &task.id)?;
        let latest = attempts.last();
        let agents = store.attempt_agents(run_id, &task.id)?;
        let mut task_cost = attempts_cost(&task, &attempts, &agents, &prices, &mut ledger);
        let agent = agents
            .last()
            .filter(|(n, _)| latest.is_some_and(|attempt| attempt.n == *n))
            .map(|(_, summary)| crate::model::AgentView::of(summary));
        let review = review_view(
            &task.spec,
            &store.reviews(run_id, &task.id)?,
            &prices,
            &mut ledger,
        );
        if let Some(cost) = review.as_ref().and_then(|review| review.cost_usd) {
            *task_cost.get_or_insert(0.0) += cost;
        }
        let usage = agents
            .iter()
            .map(|(_, summary)| summary.usage)
            .chain(review.as_ref().and_then(|review| review.usage))
            .reduce(crate::agents::Usage::plus);
        let elapsed_secs = latest.map(|attempt| {
            let end = attempt.finished_at.unwrap_or_else(now_millis);
            (end - attempt.started_at).max(0) as f64 / 1000.0
        });
        tasks.push(TaskView {
            already_landed: task
                .landed_with
                .as_ref()
                .map(|with| crate::model::AlreadyLanded {
                    by_task: (!with.is_empty()).then(|| with.clone()),
                }),
            worktree_present: !task.removed && task.worktree.exists(),
            after: task.spec.after.clone(),
            candidate: task.spec.candidate.clone(),
            waits_for,
            plan: if run.plan_mode {
                store.plan(run_id, &task.id)?
            } else {
                None
            },
            id: task.id,
            state: task.state,
            reason: task.reason,
            attempts: task.attempts,
            branch: task.branch,
            worktree: task.worktree,
            commit: attempts
                .iter()
                .rev()
                .find_map(|attempt| attempt.commit.clone()),
            exit_status: latest.and_then(|attempt| attempt.exit.clone()),
            salvage_refs: attempts
                .iter()
                .filter_map(|attempt| attempt.salvage_ref.clone())
                .collect(),
            log: latest.map(|attempt| attempt.log_path.clone()),
            elapsed_secs,
            verdict: latest.and_then(|attempt| attempt.verdict.clone()),
            agent,
            usage,
            cost_usd: task_cost,
            review,
        });
    }
    let usage = tasks
        .iter()
        .filter_map(|task| task.usage)
        .reduce(crate::agents::Usage::plus);
    Ok(RunView {
        schema: JSON_SCHEMA_VERSION,
        run_id: run.id,
        state: run.state,
        created_at: format_millis(run.created_at),
        base: run.base_sha,
        base_rev: run.base_rev,
        target_branch: run.target_branch,
        tasks_file: run.tasks_file,
        no_merge: run.no_merge,
        plan_mode: run.plan_mode,
        tasks,
        usage,
        ledger: (ledger.total.attempts > 0).then_some(ledger),
    })
}

/// One stored transition of a task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TransitionView {
    /// When (RFC 3339).
    pub at: String,
    /// The state entered.
    pub state: TaskState,
    /// Why.
    pub reason: Option<String>,
}

/// One attempt of a task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttemptView {
    /// Attempt number.
    pub attempt: u32,
    /// The commit its chain started from.
    pub base: Option<CommitId>,
    /// Its commit, if it changed anything.
    pub commit: Option<CommitId>,
    /// Its salvage ref.
    pub salvage_ref: Option<String>,
    /// How its worker ended.
    pub exit_status: Option<crate::model::ExitStatus>,
    /// The gate's verdict.
    pub verdict: Option<crate::report::Verdict>,
    /// Its agent's summary (agent workers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<crate::agents::tally::AgentSummary>,
}

/// `ccfan status <run>/<task>`: the task, its attempts and every transition with its reason.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskHistory {
    /// Schema version.
    pub schema: u32,
    /// Run id.
    pub run_id: RunId,
    /// The task now.
    pub task: TaskView,
    /// Its attempts, oldest first.
    pub attempts: Vec<AttemptView>,
    /// Its transitions, oldest first.
    pub transitions: Vec<TransitionView>,
    /// Plan mode: the text of its latest plan (secrets redacted when it was stored).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
}

/// The history of one task.
pub fn task_history(
    store: &Store,
    run_id: &RunId,
    task_id: &TaskId,
) -> Result<TaskHistory, StoreError> {
    let view = run_view(store, run_id)?;
    let task = view
        .tasks
        .into_iter()
        .find(|task| &task.id == task_id)
        .ok_or_else(|| StoreError::NoSuchTask {
            run: run_id.to_string(),
            task: task_id.to_string(),
        })?;
    history_of(store, run_id, task)
}

/// The history of `task` (a task of the run's view), its attempts and transitions read from `store`.
pub fn history_of(
    store: &Store,
    run_id: &RunId,
    task: TaskView,
) -> Result<TaskHistory, StoreError> {
    let task_id = &task.id.clone();
    let mut agents = store.attempt_agents(run_id, task_id)?;
    let attempts = store
        .attempts(run_id, task_id)?
        .into_iter()
        .map(|attempt| AttemptView {
            agent: agents
                .iter()
                .position(|(n, _)| *n == attempt.n)
                .map(|at| agents.remove(at).1),
            attempt: attempt.n,
            base: attempt.base,
            commit: attempt.commit,
            salvage_ref: attempt.salvage_ref,
            exit_status: attempt.exit,
            verdict: attempt.verdict,
        })
        .collect();
    let transitions = store
        .transitions(run_id, task_id)?
        .into_iter()
        .map(|(at, state, reason)| TransitionView {
            at: format_millis(at),
            state,
            reason,
        })
        .collect();
    let plan = task
        .plan
        .as_ref()
        .and_then(|plan| std::fs::read_to_string(&plan.path).ok());
    Ok(TaskHistory {
        schema: JSON_SCHEMA_VERSION,
        run_id: run_id.clone(),
        task,
        attempts,
        transitions,
        plan,
    })
}
