//! MCP operations that change runs: `delegate` (plan checked here, run handed to its own ccfan process, answered
//! as soon as the run exists), the follow-ups `rework`, `retry`, `accept`, `merge`, `rollback` (each handed off the
//! same way and answered once it started, or finished within the wait) and `cancel`.

use crate::pipeline::job::JobRequest;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rmcp::RoleServer;
use rmcp::service::RequestContext;

use super::Shared;
use super::errors::{ErrorCode, Failure, ToolError, from_pipeline};
use super::jobs::{Job, Waited};
use super::status::{MAX_WAIT_SECS, compact};
use super::types::{DelegateParams, DelegateResult, Duplicate, OperationResult};
use crate::model::{RunId, RunState, TaskId, TaskState};
use crate::paths::StateLayout;
use crate::pipeline::{self, RunRequest};
use crate::store::{Registration, Store, StoreError, request_fingerprint};

/// How long a handed-off operation may take to show that it started.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// A claimed run with no transition yet counts as started after this.
const QUIET_START: Duration = Duration::from_secs(3);
/// Most tasks one call may delegate.
const MAX_TASKS: usize = 256;

/// Checks the tasks and writes them as a tasks file (JSON) for the run's ccfan process.
fn write_tasks_file(
    params: &DelegateParams,
    dir: &std::path::Path,
    run_id: &RunId,
) -> Result<(PathBuf, Vec<TaskId>), Failure> {
    if params.tasks.is_empty() || params.tasks.len() > MAX_TASKS {
        return Err(Failure::invalid(
            "tasks",
            format!(
                "{} task(s) given: delegate 1 to {MAX_TASKS}",
                params.tasks.len()
            ),
            "pass a list of tasks, each with a goal and allowed globs",
        ));
    }
    if params.jobs == Some(0) {
        return Err(Failure::invalid(
            "jobs",
            "0 tasks at a time runs nothing",
            "pass 1 or more, or leave jobs out",
        ));
    }
    let mut ids = Vec::new();
    let mut tasks = Vec::new();
    for (index, task) in params.tasks.iter().enumerate() {
        let id = delegated_task_id(task.id.as_ref(), index);
        if ids.contains(&id) {
            return Err(Failure::invalid(
                &format!("tasks[{index}].id"),
                format!("`{id}` is used twice"),
                "give every task its own id",
            ));
        }
        let mut task = task.clone();
        task.id = Some(id.clone());
        ids.push(id);
        tasks.push(task);
    }
    std::fs::create_dir_all(dir).map_err(|error| {
        Failure::tool(
            ErrorCode::Internal,
            format!("cannot create {}: {error}", dir.display()),
        )
    })?;
    let path = dir.join(format!("{run_id}.tasks.json"));
    let text = serde_json::json!({ "task": tasks }).to_string();
    std::fs::write(&path, text).map_err(|error| {
        Failure::tool(
            ErrorCode::Internal,
            format!("cannot write {}: {error}", path.display()),
        )
    })?;
    Ok((path, ids))
}

/// A task starting that waits for one not started (it duplicates an active task elsewhere): refused, since
/// that work will never land in this run.
fn waits_for_a_duplicate(params: &DelegateParams, starting: &[TaskId]) -> Option<Failure> {
    let (index, task, needed) = params.tasks.iter().enumerate().find_map(|(index, task)| {
        let id = delegated_task_id(task.id.as_ref(), index);
        let needed = task.after.iter().find(|after| !starting.contains(after))?;
        starting.contains(&id).then(|| (index, id, needed.clone()))
    })?;
    Some(Failure::invalid(
        &format!("tasks[{index}].after"),
        format!(
            "task `{task}` waits for `{needed}`, which is not started: an identical task is active in another run (see duplicates)"
        ),
        "delegate it again once that run's task has landed, without the after, or drop the duplicate",
    ))
}

/// Each task as it runs (a best-of-N task as its candidates), with the task of the call it comes from.
fn origins(plan: &crate::pipeline::plan::Plan) -> Vec<(TaskId, TaskId)> {
    plan.tasks
        .iter()
        .map(|t| {
            let of = t.candidate.as_ref().map_or(&t.id, |c| &c.of);
            (t.id.clone(), of.clone())
        })
        .collect()
}

/// The call's tasks less those not starting (identical to a task active elsewhere), each with its id set.
fn without_duplicates(
    params: &DelegateParams,
    origin: &[(TaskId, TaskId)],
    starting: &[TaskId],
) -> DelegateParams {
    let mut kept = params.clone();
    kept.tasks = params
        .tasks
        .iter()
        .enumerate()
        .filter(|(index, task)| {
            let id = delegated_task_id(task.id.as_ref(), *index);
            origin
                .iter()
                .any(|(runs, of)| *of == id && starting.contains(runs))
        })
        .map(|(index, task)| {
            let mut task = task.clone();
            task.id = Some(delegated_task_id(task.id.as_ref(), index));
            task
        })
        .collect();
    kept
}

/// `delegate`.
pub async fn delegate(
    shared: &Shared,
    params: DelegateParams,
    context: &RequestContext<RoleServer>,
) -> Result<DelegateResult, Failure> {
    let repo = shared.repo.clone();
    let handoff = StateLayout::of(&repo).handoff_dir();
    let run_id = shared.with_store(|store| Ok(crate::pipeline::allocate_run_id(store, None)?))?;
    let (tasks_file, _) = write_tasks_file(&params, &handoff, &run_id)?;
    let request = RunRequest {
        repo: repo.clone(),
        tasks_file: tasks_file.clone(),
        policy_file: None,
        base: params.base.clone(),
        jobs: params.jobs.map(usize::from),
        into: params.into.clone(),
        no_merge: !params.merge,
        plan: params.plan,
        run_id: Some(run_id.clone()),
    };
    // Everything the run's process would reject at once is checked here, so it comes back as this call's error.
    let base = params.base.clone();
    let checked = tokio::task::spawn_blocking(move || -> Result<_, pipeline::PipelineError> {
        let (policy, plan, _) = pipeline::load_plan(&request)?;
        crate::sandbox::select(policy.sandbox.backend)?;
        if let Some(base) = &base {
            crate::git::resolve_commit(&request.repo, base)?;
        }
        Ok(plan)
    })
    .await
    .map_err(|error| Failure::tool(ErrorCode::Internal, error.to_string()))?;
    let plan = match checked {
        Ok(plan) => plan,
        Err(error) => {
            let _ = std::fs::remove_file(&tasks_file);
            return Err(from_pipeline(error, Some(&tasks_file)));
        }
    };
    let mut shape = serde_json::to_value(&params).unwrap_or_default();
    if let Some(object) = shape.as_object_mut() {
        object.remove("client_request_id");
    }
    let fingerprint = request_fingerprint(&shape.to_string());
    let key = params
        .client_request_id
        .clone()
        .unwrap_or_else(|| format!("auto:{run_id}"));
    let specs: Vec<(&TaskId, &crate::model::TaskSpec)> =
        plan.tasks.iter().map(|t| (&t.id, t)).collect();
    let registration = shared.with_store_creating(|store| {
        Ok(store.register_delegation(
            &key,
            &fingerprint,
            &run_id,
            &specs,
            crate::sandbox::proc::owner_alive,
        )?)
    })?;
    let duplicates = match registration {
        Registration::Existing {
            run_id: earlier,
            same: true,
        } => {
            let _ = std::fs::remove_file(&tasks_file);
            let task_ids = shared
                .with_store(|store| Ok(store.tasks(&earlier)?))
                .map(|tasks| tasks.into_iter().map(|t| t.id).collect())
                .unwrap_or_default();
            return Ok(DelegateResult {
                next: format!("this request started run {earlier} before; poll it with status"),
                run_id: Some(earlier),
                task_ids,
                existing: true,
                duplicates: Vec::new(),
            });
        }
        Registration::Existing {
            run_id: earlier, ..
        } => {
            let _ = std::fs::remove_file(&tasks_file);
            return Err(ToolError::new(
                ErrorCode::Conflict,
                format!(
                    "client_request_id `{key}` started run {earlier} with a different request; use a new id for new work"
                ),
            )
            .details(serde_json::json!({ "run_id": earlier }))
            .into());
        }
        Registration::New { duplicates } => duplicates,
    };
    let duplicates: Vec<Duplicate> = duplicates
        .into_iter()
        .map(|d| Duplicate {
            task_id: d.task_id,
            active_run: d.active_run,
            active_task: d.active_task,
        })
        .collect();
    let origin = origins(&plan);
    let starting: Vec<TaskId> = origin
        .iter()
        .map(|(id, _)| id.clone())
        .filter(|id| !duplicates.iter().any(|d| &d.task_id == id))
        .collect();
    if starting.is_empty() {
        let _ = std::fs::remove_file(&tasks_file);
        shared.with_store(|store| Ok(store.forget_delegation(&key)?))?;
        return Ok(DelegateResult {
            run_id: None,
            task_ids: Vec::new(),
            existing: false,
            next: "every task is already active elsewhere (see duplicates); poll those runs with status"
                .to_string(),
            duplicates,
        });
    }
    if let Some(failure) = waits_for_a_duplicate(&params, &starting) {
        let _ = std::fs::remove_file(&tasks_file);
        shared.with_store(|store| Ok(store.forget_delegation(&key)?))?;
        return Err(failure);
    }
    if !duplicates.is_empty() {
        write_tasks_file(
            &without_duplicates(&params, &origin, &starting),
            &handoff,
            &run_id,
        )?;
    }
    let request = JobRequest::Run {
        tasks_file,
        run_id: run_id.clone(),
        no_merge: !params.merge,
        plan: params.plan,
        base: params.base.clone(),
        into: params.into.clone(),
        jobs: params.jobs,
    };
    let forget = |error: ToolError| -> Failure {
        let _ = shared.with_store(|store| Ok(store.forget_delegation(&key)?));
        error.into()
    };
    let mut job =
        Job::spawn(&shared.exe, &shared.child_env, &repo, &run_id, &request).map_err(forget)?;
    let exists = || {
        shared
            .with_store(|store| Ok(store.run(&run_id).is_ok()))
            .unwrap_or(false)
    };
    let waited = job
        .wait(Instant::now() + START_TIMEOUT, &context.ct, exists)
        .await;
    if let Waited::Exited(status) = waited
        && !exists()
    {
        return Err(forget(job.failure(status)));
    }
    job.detach();
    Ok(DelegateResult {
        next: format!(
            "call status with run_id {run_id} and wait_seconds (e.g. 60) until done; then verify or diff each task, then merge"
        ),
        run_id: Some(run_id),
        task_ids: starting,
        existing: false,
        duplicates,
    })
}

/// A follow-up command for a ccfan process.
pub struct FollowUp {
    /// rework, retry, accept, merge or rollback.
    pub request: JobRequest,
    /// Seconds to wait for it to finish.
    pub wait_seconds: u32,
}

/// Hands a follow-up to its own ccfan process; answers once it started, or finished within the wait.
pub async fn follow_up(
    shared: &Shared,
    request: FollowUp,
    cancelled: &tokio_util::sync::CancellationToken,
) -> Result<OperationResult, Failure> {
    let FollowUp {
        request,
        wait_seconds,
    } = request;
    let (operation, run_id) = (request.operation(), request.run_id().clone());
    let task_id = request.task_id().cloned();
    let before = shared.with_store(|store| {
        let run = store.run(&run_id)?;
        if let Some(task) = &task_id
            && !store.tasks(&run_id)?.iter().any(|t| &t.id == task)
        {
            return Err(StoreError::NoSuchTask {
                run: run_id.to_string(),
                task: task.to_string(),
            }
            .into());
        }
        if run.state == RunState::Running
            && crate::sandbox::proc::owner_alive(run.owner_pid, &run.owner_start)
        {
            return Err(busy(store, &run_id, run.owner_pid, operation)?);
        }
        Ok(store.last_transition(&run_id)?)
    })?;
    let name = format!("{run_id}.{operation}.{}", crate::util::random_hex(3));
    let mut job = Job::spawn(
        &shared.exe,
        &shared.child_env,
        &shared.repo,
        &name,
        &request,
    )?;
    let pid = i64::from(job.pid());
    let spawned = Instant::now();
    let started = || {
        shared
            .with_store(|store| {
                let run = store.run(&run_id)?;
                let claimed = run.owner_pid == pid && run.state == RunState::Running;
                Ok(store.last_transition(&run_id)? > before
                    || (claimed && spawned.elapsed() >= QUIET_START))
            })
            .unwrap_or(false)
    };
    let mut waited = job.wait(spawned + START_TIMEOUT, cancelled, started).await;
    if matches!(waited, Waited::Met | Waited::TimedOut) && wait_seconds > 0 {
        let deadline = spawned + Duration::from_secs(u64::from(wait_seconds.min(MAX_WAIT_SECS)));
        waited = job.wait(deadline, cancelled, || false).await;
    }
    let finished = match waited {
        Waited::Exited(status) => {
            let output = job.output();
            let refused = output
                .as_ref()
                .and_then(|doc| doc.get("refused"))
                .and_then(serde_json::Value::as_str)
                .map(str::to_string);
            match (output, refused) {
                (_, Some(why)) => return Err(Failure::tool(ErrorCode::Refused, why)),
                (None, None) => return Err(job.failure(status).into()),
                (Some(_), None) => true,
            }
        }
        Waited::Met | Waited::TimedOut | Waited::Cancelled => false,
    };
    job.detach();
    let status = shared.with_store(|store| compact(store, &run_id, task_id.as_ref(), false))?;
    // A finished merge says where the work is, so a diverted landing is not read as done.
    let landing = if finished && operation == "merge" {
        Some(
            shared
                .with_store(|store| Ok(crate::pipeline::integrate::landing_of(store, &run_id)?))?,
        )
    } else {
        None
    };
    Ok(OperationResult {
        operation: operation.to_string(),
        run_id,
        task_id,
        finished,
        landed: landing.as_ref().map(|landing| landing.landed),
        landed_on: landing.as_ref().and_then(|landing| landing.branch.clone()),
        next: landing.and_then(|landing| landing.next),
        status,
    })
}

/// `cancel`: asks the process carrying the run to stop the tasks, and waits for them.
pub async fn cancel(
    shared: &Shared,
    run_id: RunId,
    task_id: Option<TaskId>,
    wait_seconds: u32,
) -> Result<OperationResult, Failure> {
    let repo = shared.repo.clone();
    let target = crate::pipeline::control::Target {
        run: run_id.clone(),
        task: task_id.clone(),
    };
    let wait = Duration::from_secs(u64::from(wait_seconds.min(MAX_WAIT_SECS)));
    let outcome = tokio::task::spawn_blocking(move || {
        let stop = std::sync::atomic::AtomicBool::new(false);
        let control = crate::pipeline::control::Control {
            repo: &repo,
            sink: &crate::events::NullSink,
            cancel: &stop,
        };
        control.cancel(&target, wait)
    })
    .await
    .map_err(|error| Failure::tool(ErrorCode::Internal, error.to_string()))??;
    let finished = match outcome.refused {
        Some(refusal @ crate::pipeline::lifecycle::Refusal::NotRunning { .. }) => {
            return Err(Failure::tool(ErrorCode::Refused, refusal.to_string()));
        }
        Some(_) => false,
        None => true,
    };
    let status = shared.with_store(|store| compact(store, &run_id, task_id.as_ref(), false))?;
    Ok(OperationResult {
        operation: "cancel".to_string(),
        run_id,
        task_id,
        finished,
        landed: None,
        landed_on: None,
        next: None,
        status,
    })
}

/// The `busy` answer for a follow-up on a run another ccfan process carries: what that process is still doing
/// (its tasks that are not final, and accepted ones it is about to land), and when to call again.
fn busy(store: &Store, run_id: &RunId, pid: i64, operation: &str) -> Result<Failure, Failure> {
    let run = store.run(run_id)?;
    let mut doing: BTreeMap<&'static str, usize> = BTreeMap::new();
    for task in store.tasks(run_id)? {
        let pending =
            !task.state.is_final() || (task.state == TaskState::Accepted && !run.no_merge);
        if pending {
            *doing.entry(task.state.as_str()).or_insert(0) += 1;
        }
    }
    let what = if doing.is_empty() {
        "finishing the run".to_string()
    } else {
        let parts: Vec<String> = doing
            .iter()
            .map(|(state, n)| match *state {
                "accepted" => format!("{n} accepted to land"),
                other => format!("{n} {other}"),
            })
            .collect();
        parts.join(", ")
    };
    Ok(ToolError::new(
        ErrorCode::Busy,
        format!(
            "run {run_id} is still carried by another ccfan process (pid {pid}): {what}; call status with wait_seconds until done, then {operation} again"
        ),
    )
    .details(serde_json::json!({ "run_id": run_id, "pid": pid }))
    .into())
}

/// A delegated task's id: its own, else `task-1`, `task-2`, … by position (as the `delegate` schema documents).
fn delegated_task_id(given: Option<&TaskId>, index: usize) -> TaskId {
    given
        .cloned()
        .unwrap_or_else(|| TaskId::delegated_at(index))
}
