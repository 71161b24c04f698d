//! MCP `status` and `list_runs`: compact views of the stored runs (the same state `ccfan status` reads), and the
//! long-poll — wait for a change of state, attempt or verdict, sending progress notifications meanwhile and
//! stopping when the client cancels.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rmcp::RoleServer;
use rmcp::model::ProgressNotificationParam;
use rmcp::service::RequestContext;

use super::Shared;
use super::errors::Failure;
use super::types::{ListRunsResult, RunSummary, StatusParams, StatusResult, TaskStatus};
use crate::model::{RunId, RunState, RunView, TaskId, TaskView};
use crate::store::{Store, StoreError};

/// The longest wait a call may ask for.
pub const MAX_WAIT_SECS: u32 = 300;
/// The most a `status` detail may hold, serialised.
const DETAIL_CAP_BYTES: usize = 24 * 1024;

/// How often a wait reads the store again.
const POLL: Duration = Duration::from_millis(100);

/// One task, compact. `landing_pending`: the run is still carried and lands what is accepted, so an accepted task
/// is not done yet (it will move to merging and merged) — which keeps `done` of the tasks and of the run in step.
fn task_status(task: &TaskView, landing_pending: bool) -> TaskStatus {
    let waiting_to_land = landing_pending && task.state == crate::model::TaskState::Accepted;
    let running = !task.state.is_final() || waiting_to_land;
    let last_event = match (&task.agent, &task.reason) {
        (Some(agent), _) if running && agent.current.is_some() => agent.current.clone(),
        (_, Some(reason)) => Some(reason.clone()),
        (_, None) => None,
    };
    TaskStatus {
        id: task.id.clone(),
        state: task.state.as_str().to_string(),
        verdict: task.verdict.as_ref().map(|v| v.name().to_string()),
        attempt: task.attempts,
        elapsed_secs: task.elapsed_secs.map(|secs| (secs * 10.0).round() / 10.0),
        last_event: last_event.map(|text| clip(&text, 300)),
        done: !running,
        waits_for: task.waits_for.clone(),
        review: task
            .review
            .as_ref()
            .map(crate::model::review::ReviewView::line),
    }
}

fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// The compact status of a run (or one of its tasks), with the full view when `detail` asks for it.
pub fn compact(
    store: &Store,
    run_id: &RunId,
    task_id: Option<&TaskId>,
    detail: bool,
) -> Result<StatusResult, Failure> {
    let view: RunView = crate::status::run_view(store, run_id)?;
    let tasks: Vec<&TaskView> = view
        .tasks
        .iter()
        .filter(|task| task_id.is_none_or(|id| task.id == *id))
        .collect();
    if let Some(id) = task_id
        && tasks.is_empty()
    {
        return Err(StoreError::NoSuchTask {
            run: run_id.to_string(),
            task: id.to_string(),
        }
        .into());
    }
    let mut counts = BTreeMap::new();
    for task in &tasks {
        *counts.entry(task.state.as_str().to_string()).or_insert(0) += 1;
    }
    let landing_pending = view.state == RunState::Running && !view.no_merge;
    let (compact_tasks, listed_note) = listed(
        tasks
            .iter()
            .map(|task| task_status(task, landing_pending))
            .collect(),
    );
    let detail = if !detail {
        None
    } else if let Some(id) = task_id {
        let history = crate::status::task_history(store, run_id, id)?;
        serde_json::to_value(history).ok()
    } else {
        serde_json::to_value(&view).ok()
    };
    // A detail past the cap is left out with a note: one task's detail at a time is the way to read it.
    let size = detail
        .as_ref()
        .and_then(|value| serde_json::to_vec(value).ok())
        .map_or(0, |json| json.len());
    let (detail, note) = if size > DETAIL_CAP_BYTES {
        let how = match task_id {
            Some(id) => format!(
                "the history of {id} is {} KiB, past the {} KiB cap; `ccfan status {run_id}/{id} --json` in a shell shows all of it",
                size / 1024,
                DETAIL_CAP_BYTES / 1024
            ),
            None => format!(
                "the run's detail is {} KiB, past the {} KiB cap; call status with task_id and detail for one task at a time",
                size / 1024,
                DETAIL_CAP_BYTES / 1024
            ),
        };
        (None, Some(how))
    } else {
        (detail, None)
    };
    let note = match (note, listed_note) {
        (Some(first), Some(second)) => Some(format!("{first}; {second}")),
        (first, second) => first.or(second),
    };
    Ok(StatusResult {
        run_id: view.run_id.clone(),
        state: view.state.as_str().to_string(),
        done: view.state != RunState::Running,
        changed: false,
        waited_secs: 0.0,
        counts,
        // Unknown, not zero, while no attempt could be priced.
        cost_usd: view
            .ledger
            .as_ref()
            .filter(|ledger| ledger.total.attempts > ledger.total.unpriced)
            .map(|ledger| ledger.total.cost_usd),
        tasks: compact_tasks,
        detail,
        note,
    })
}

/// The task list as answered: all of it up to [`DETAIL_CAP_BYTES`]; past it, the tasks still in flight first, then
/// finished ones while they fit, with a note (the counts always cover every task).
fn listed(tasks: Vec<TaskStatus>) -> (Vec<TaskStatus>, Option<String>) {
    let size = |task: &TaskStatus| serde_json::to_vec(task).map_or(0, |json| json.len());
    if tasks.iter().map(size).sum::<usize>() <= DETAIL_CAP_BYTES {
        return (tasks, None);
    }
    let total = tasks.len();
    let (mut kept, mut used) = (Vec::new(), 0);
    let (moving, done): (Vec<TaskStatus>, Vec<TaskStatus>) =
        tasks.into_iter().partition(|task| !task.done);
    for task in moving.into_iter().chain(done) {
        let bytes = size(&task);
        if used + bytes > DETAIL_CAP_BYTES {
            continue;
        }
        used += bytes;
        kept.push(task);
    }
    let left = total - kept.len();
    (
        kept,
        Some(format!(
            "{left} of {total} tasks left out for size (tasks in flight are listed first; counts has them all); call status with task_id for any other"
        )),
    )
}

/// What a wait watches: a change here ends it.
fn signature(status: &StatusResult) -> Vec<(Option<TaskId>, String, u32, Option<String>)> {
    let mut signature: Vec<_> = status
        .tasks
        .iter()
        .map(|t| {
            (
                Some(t.id.clone()),
                t.state.clone(),
                t.attempt,
                t.verdict.clone(),
            )
        })
        .collect();
    signature.push((None, status.state.clone(), 0, None));
    // The counts cover tasks a long list leaves out.
    signature.push((None, format!("{:?}", status.counts), 0, None));
    signature
}

/// A progress line: tasks done, and the latest activity.
fn progress_message(status: &StatusResult) -> String {
    let done = status.tasks.iter().filter(|t| t.done).count();
    let busy: Vec<String> = status
        .tasks
        .iter()
        .filter(|t| !t.done)
        .take(3)
        .map(|t| match &t.last_event {
            Some(event) => format!("{}: {} ({})", t.id, t.state, clip(event, 80)),
            None => format!("{}: {}", t.id, t.state),
        })
        .collect();
    format!(
        "{done}/{} task(s) done{}{}",
        status.tasks.len(),
        if busy.is_empty() { "" } else { " · " },
        busy.join(" · ")
    )
}

/// `status`: answers at once, or waits up to `wait_seconds` for a change (or the run's end).
pub async fn status(
    shared: &Shared,
    params: &StatusParams,
    context: &RequestContext<RoleServer>,
) -> Result<StatusResult, Failure> {
    let read = |detail: bool| {
        shared.with_store(|store| compact(store, &params.run_id, params.task_id.as_ref(), detail))
    };
    let first = read(params.detail)?;
    let wait = params.wait_seconds.min(MAX_WAIT_SECS);
    if wait == 0 || first.done {
        return Ok(first);
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(u64::from(wait));
    let token = context.meta.get_progress_token();
    let before = signature(&first);
    let mut last_message = String::new();
    let mut sent = 0u32;
    loop {
        tokio::select! {
            () = context.ct.cancelled() => {
                return Err(Failure::tool(
                    super::errors::ErrorCode::Cancelled,
                    "the client cancelled the wait",
                ));
            }
            () = tokio::time::sleep(POLL) => {}
        }
        let now = read(false)?;
        let changed = signature(&now) != before;
        if let Some(token) = &token {
            let message = progress_message(&now);
            if message != last_message {
                sent += 1;
                let param = ProgressNotificationParam::new(token.clone(), f64::from(sent))
                    .with_message(message.clone());
                if let Err(error) = context.peer.notify_progress(param).await {
                    tracing::debug!("cannot send a progress notification: {error}");
                }
                last_message = message;
            }
        }
        if changed || now.done || Instant::now() >= deadline {
            let mut result = if params.detail { read(true)? } else { now };
            result.changed = changed;
            result.waited_secs = (started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
            return Ok(result);
        }
    }
}

/// `list_runs`: newest first, at most `limit`.
pub fn list_runs(store: &Store, limit: usize) -> Result<ListRunsResult, Failure> {
    let list = crate::status::list_runs(store)?;
    let more = list.runs.len().saturating_sub(limit);
    let runs = list
        .runs
        .into_iter()
        .take(limit)
        .map(|run| RunSummary {
            run_id: run.run_id,
            state: run.state.as_str().to_string(),
            created_at: run.created_at,
            base: run.base,
            counts: run
                .tasks
                .into_iter()
                .map(|(state, count)| (state.as_str().to_string(), count))
                .collect(),
        })
        .collect();
    Ok(ListRunsResult { runs, more })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TaskState;

    fn view(state: TaskState) -> TaskView {
        TaskView {
            id: crate::ids::fixtures::task("t"),
            state,
            reason: None,
            after: Vec::new(),
            candidate: None,
            review: None,
            waits_for: Vec::new(),
            plan: None,
            attempts: 1,
            branch: "ccfan/r/t".to_string(),
            worktree: "/w/t".into(),
            worktree_present: true,
            commit: None,
            exit_status: None,
            salvage_refs: Vec::new(),
            log: None,
            elapsed_secs: None,
            verdict: None,
            agent: None,
            usage: None,
            cost_usd: None,
            already_landed: None,
        }
    }

    #[test]
    fn a_detail_past_its_cap_is_left_out_with_how_to_read_it() {
        use crate::ids::fixtures::{commit, run};
        use crate::store::{NewRun, NewTask};
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("state.db")).unwrap();
        let spec = |n: usize| crate::model::TaskSpec {
            id: crate::ids::fixtures::task(&format!("task-{n}")),
            goal: "x".repeat(100),
            allowed: vec!["src/**".to_string()],
            denied: Vec::new(),
            constraints: Vec::new(),
            acceptance: Vec::new(),
            worker: crate::model::WorkerProfile {
                name: "w".to_string(),
                kind: crate::model::WorkerKind::Command {
                    argv: vec!["true".to_string()],
                },
                timeout: None,
                env: Vec::new(),
                pass_env: Vec::new(),
                network: None,
                writable: Vec::new(),
            },
            timeout: Duration::from_secs(5),
            after: Vec::new(),
            candidate: None,
            review: None,
        };
        let specs: Vec<_> = (0..120).map(spec).collect();
        let branches: Vec<String> = (0..120).map(|n| format!("ccfan/r/task-{n}")).collect();
        let tasks: Vec<NewTask<'_>> = specs
            .iter()
            .zip(&branches)
            .map(|(spec, branch)| NewTask {
                spec,
                branch,
                worktree: std::path::Path::new("/w"),
            })
            .collect();
        let (id, base) = (run("r"), commit("ab"));
        store
            .create_run(
                &NewRun {
                    id: &id,
                    base_sha: &base,
                    base_rev: "HEAD",
                    target_branch: Some("main"),
                    tasks_file: std::path::Path::new("t.toml"),
                    jobs: 2,
                    owner_pid: 1,
                    owner_start: "x",
                    no_merge: false,
                    plan_mode: false,
                },
                &tasks,
            )
            .unwrap();
        let whole = compact(&store, &id, None, true).unwrap();
        assert!(whole.detail.is_none());
        assert!(whole.note.unwrap().contains("task_id"));
        assert_eq!(whole.tasks.len(), 120, "the compact list of 120 tasks fits");
        let listed = listed(vec![task_status(&view(TaskState::Running), false); 400]);
        assert!(listed.0.len() < 400);
        assert!(serde_json::to_vec(&listed.0).unwrap().len() <= DETAIL_CAP_BYTES + 400);
        assert!(listed.1.unwrap().contains("left out for size"));
        let one = compact(&store, &id, Some(&specs[3].id), true).unwrap();
        assert!(one.detail.is_some() && one.note.is_none());
    }

    #[test]
    fn an_accepted_task_is_done_only_when_nothing_will_land_it() {
        assert!(!task_status(&view(TaskState::Accepted), true).done);
        assert!(task_status(&view(TaskState::Accepted), false).done);
        assert!(task_status(&view(TaskState::Merged), true).done);
        assert!(!task_status(&view(TaskState::Running), false).done);
    }
}
