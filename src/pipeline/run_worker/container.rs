//! Stage 3 on a container backend: the task's work runs in a container or pod as a portable attempt, an agent's
//! stream followed live while it runs and its summary taken from what comes back; planning stays here.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use super::agent_stream::{Reader, finish_agent};
use super::context::{AttemptContext, RunWorkerError, WorkerRun};
use crate::agents::tally::AgentSummary;
use crate::model::{AgentConfig, AttemptMode, TaskSpec};
use crate::paths::AttemptDir;
use crate::pipeline::portable_agent::AgentPlan;
use crate::policy::Policy;
use crate::sandbox;

/// Whether an attempt in `step` runs in a container (planning reads the tree on this machine).
fn runs_in_container(policy: &Policy, step: AttemptMode<'_>) -> bool {
    policy.sandbox.backend.is_container()
        && matches!(step, AttemptMode::Work | AttemptMode::Approved { .. })
}

/// The folder an attempt in `step` works in as the worker sees it: the container's tree, or the worktree here.
pub(crate) fn tree_seen(policy: &Policy, worktree: &Path, step: AttemptMode<'_>) -> PathBuf {
    if runs_in_container(policy, step) {
        Path::new(crate::pipeline::remote::CONTAINER_WORK).join("tree")
    } else {
        worktree.to_path_buf()
    }
}

/// An agent worker made ready to run in the container (its home prepared here), with its profile; `None` for a
/// command worker.
fn agent_plan<'t>(
    task: &'t TaskSpec,
    policy: &Policy,
    context: &AttemptContext<'_>,
    extra: &[(String, String)],
) -> Result<Option<(AgentPlan, &'t AgentConfig)>, RunWorkerError> {
    let Some((agent, config)) = task.worker.kind.agent() else {
        return Ok(None);
    };
    let host_env = sandbox::worker_env(&policy.sandbox, &task.worker, extra);
    crate::pipeline::portable_agent::plan(
        agent,
        config,
        context.agent_home,
        &host_env,
        &context.prompt(task),
        context.resume.map(|session| (session, context.baseline)),
    )
    .map(|plan| Some((plan, config)))
    .map_err(|source| RunWorkerError::TaskFile {
        path: context.agent_home.to_path_buf(),
        source,
    })
}

/// A container backend runs the task's own work in a container (planning and reviewing read the tree here):
/// `None` when this attempt runs here. An agent worker's stream comes back with it and is read into its summary.
pub(super) fn in_container(
    task: &TaskSpec,
    policy: &Policy,
    context: &AttemptContext<'_>,
    cancel: &AtomicBool,
    extra: &[(String, String)],
    on_progress: &mut dyn FnMut(&AgentSummary),
) -> Option<Result<WorkerRun, RunWorkerError>> {
    if !runs_in_container(policy, context.plan) {
        return None;
    }
    let at = crate::pipeline::remote::Where {
        run_id: context.run_id,
        attempt: context.attempt,
        worktree: context.worktree,
        dir: context.dir,
        token: context.token,
        rules: context.rules,
    };
    let plan = match agent_plan(task, policy, context, extra) {
        Ok(plan) => plan,
        Err(error) => return Some(Err(error)),
    };
    let worker = match &plan {
        None => {
            crate::pipeline::remote::Worker::Command(task.worker.kind.command().unwrap_or_default())
        }
        Some((plan, _)) => crate::pipeline::remote::Worker::Agent(plan),
    };
    let Some((plan, config)) = &plan else {
        return Some(
            crate::pipeline::remote::run(task, policy, &at, cancel, extra, &worker)
                .map(|ran| WorkerRun {
                    outcome: ran.outcome,
                    agent: None,
                })
                .map_err(|(path, source)| RunWorkerError::TaskFile { path, source }),
        );
    };
    // The agent's stream is followed while it comes (the runner sends it along with the log), with the paths as
    // the container has them, for progress. The attempt's summary is the runner's, whose tally read every line
    // (what comes back of the stream is capped); without one (the attempt did not come back), what came live.
    let tree = tree_seen(policy, context.worktree, context.plan);
    let events = AttemptDir::of(context.dir).events();
    let mut reader = Reader::new(plan.order.agent, config, context, &tree, on_progress);
    let ran = std::thread::scope(|scope| {
        let running =
            scope.spawn(|| crate::pipeline::remote::run(task, policy, &at, cancel, extra, &worker));
        // A panic here stops the container rather than waiting it out.
        let _stop = CancelOnPanic(cancel);
        reader.follow(&events, || running.is_finished());
        running.join()
    });
    let ran = match ran {
        Ok(Ok(ran)) => ran,
        Ok(Err((path, source))) => return Some(Err(RunWorkerError::TaskFile { path, source })),
        Err(panic) => std::panic::resume_unwind(panic),
    };
    let nothing_came = std::fs::metadata(&events).map_or(true, |meta| meta.len() == 0);
    if ran.agent.is_none()
        && nothing_came
        && matches!(
            ran.outcome.exit,
            crate::model::ExitStatus::SpawnFailed { .. }
        )
    {
        // It never started (as at home: no agent summary).
        return Some(Ok(WorkerRun {
            outcome: ran.outcome,
            agent: None,
        }));
    }
    // A runner that sent no summary (it did not finish): the stream that is here, read again from its start (what
    // came live may have missed lines).
    let reader = match ran.agent {
        Some(_) => reader,
        None => reader.replay(&events, |on_progress| {
            Reader::new(plan.order.agent, config, context, &tree, on_progress)
        }),
    };
    Some(
        finish_agent(task, context, reader, ran.agent).map(|summary| WorkerRun {
            outcome: ran.outcome,
            agent: Some(summary),
        }),
    )
}

/// Sets a cancel flag if the thread panics while it is held.
struct CancelOnPanic<'a>(&'a AtomicBool);

impl Drop for CancelOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
}
