//! `ccfan approve` and `ccfan reject` (plan mode): a person's decision on a task's plan, recorded first; an
//! approved task then runs with its plan (several at once, `run.jobs` at a time) and lands as usual.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Control, ControlOutcome, Layer, Refusal, Target, find_task};
use crate::model::{TaskId, TaskState};
use crate::pipeline::PipelineError;
use crate::pipeline::carry::{Carrier, Cursor};
use crate::pipeline::lifecycle::{self, Operation, PlanRefusal};
use crate::store::TaskRow;

impl Control<'_> {
    /// `ccfan approve <run>[/<task>] [--note] [--plan SHA]`: records that `by` approved the plan of the task (or
    /// of every planned task of the run), then runs them with their plans and lands what the gate accepts.
    /// `shown`: the plan the person read (its SHA-256 or a prefix); refused if the stored one is another. Returns
    /// the outcome and the tasks it approved.
    pub fn approve(
        &self,
        target: &Target,
        by: &str,
        note: Option<&str>,
        shown: Option<&str>,
    ) -> Result<(ControlOutcome, Vec<TaskId>), PipelineError> {
        let (refused, approved) =
            self.with_carrier(&target.run, None, Layer::Prepare, |carrier| {
                let (picked, mut refused) = decide(carrier, target, Operation::Approve)?;
                let mut approved = Vec::new();
                for task in picked {
                    match carrier.approve(&task, by, note, shown) {
                        Ok(None) => approved.push(task),
                        Ok(Some(refusal)) => refused = Some(join(refused, refusal)),
                        Err(error) => carrier.fail(Some(&task.id), error),
                    }
                }
                run_approved(carrier, &approved);
                let run = carrier.store().run(carrier.run_id)?;
                if !approved.is_empty() && !run.no_merge {
                    carrier.integrate_or_fail();
                }
                Ok((refused, approved.into_iter().map(|task| task.id).collect()))
            })?;
        Ok((self.outcome(&target.run, refused)?, approved))
    }

    /// `ccfan reject <run>[/<task>] [--note]`: ends the task (or every planned task of the run) without running
    /// it, recording who and why.
    pub fn reject(
        &self,
        target: &Target,
        by: &str,
        note: Option<&str>,
    ) -> Result<ControlOutcome, PipelineError> {
        let refused = self.with_carrier(&target.run, None, Layer::IfReady, |carrier| {
            let (picked, refused) = decide(carrier, target, Operation::Reject)?;
            for task in &picked {
                if let Err(error) = carrier.reject(task, by, note) {
                    carrier.fail(Some(&task.id), error);
                }
            }
            Ok(refused)
        })?;
        self.outcome(&target.run, refused)
    }
}

/// The tasks `op` acts on: the one named, or every planned task of the run; and why not, for the others.
fn decide(
    carrier: &Carrier<'_>,
    target: &Target,
    op: Operation,
) -> Result<(Vec<TaskRow>, Option<Refusal>), PipelineError> {
    let tasks = match &target.task {
        Some(id) => vec![find_task(carrier, id)?],
        None => carrier
            .store()
            .tasks(carrier.run_id)?
            .into_iter()
            .filter(|task| task.state == TaskState::Planned)
            .collect(),
    };
    if tasks.is_empty() {
        return Ok((
            Vec::new(),
            Some(Refusal::Plan(PlanRefusal::NothingPlanned {
                run: carrier.run_id.clone(),
            })),
        ));
    }
    let mut picked = Vec::new();
    let mut refusals = Vec::new();
    for task in tasks {
        match lifecycle::allows(op, &task.id, task.state) {
            Ok(()) => picked.push(task),
            Err(refusal) => refusals.push(refusal),
        }
    }
    let refused = match refusals.len() {
        0 => None,
        1 => refusals.pop(),
        _ => Some(Refusal::Several(refusals)),
    };
    Ok((picked, refused))
}

/// Two refusals as one.
fn join(earlier: Option<Refusal>, refusal: Refusal) -> Refusal {
    match earlier {
        None => refusal,
        Some(Refusal::Several(mut all)) => {
            all.push(refusal);
            Refusal::Several(all)
        }
        Some(one) => Refusal::Several(vec![one, refusal]),
    }
}

/// Runs the approved tasks, `run.jobs` at a time, each in its planned tree from the run's base on a fresh rework
/// budget, until a verdict ends it.
fn run_approved(carrier: &Carrier<'_>, tasks: &[TaskRow]) {
    let jobs = carrier
        .policy
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from))
        .clamp(1, tasks.len().max(1));
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                while let Some(task) = tasks.get(next.fetch_add(1, Ordering::SeqCst)) {
                    if let Err(error) = execute(carrier, task) {
                        carrier.fail(Some(&task.id), error);
                    }
                }
            });
        }
    });
}

/// One approved task's attempts, in the tree its plan was made in (put back at the base first: whatever is there
/// beyond it is kept on a salvage ref, never carried into the work).
fn execute(carrier: &Carrier<'_>, task: &TaskRow) -> Result<(), PipelineError> {
    let link = carrier.ensure_worktree(task, carrier.base_sha)?;
    crate::pipeline::gc::salvage_then_reset(
        carrier.repo,
        &mut carrier.store(),
        carrier.run_id,
        task,
        carrier.base_sha,
        carrier.base_sha,
    )?;
    let next = task.attempts + 1;
    carrier
        .store()
        .set_budget_from(carrier.run_id, &task.id, next)?;
    let cursor = Cursor {
        base: carrier.base_sha.clone(),
        tip: carrier.base_sha.clone(),
        next,
        budget_from: next,
        findings: Vec::new(),
    };
    carrier
        .continue_from(&task.spec, &task.worktree, &link, cursor)
        .map(drop)
}
