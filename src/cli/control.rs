//! `ccfan merge|rework|retry|accept|rollback|cancel|salvage`: thin adapters over `pipeline::control` and
//! `pipeline::salvage`. Exit codes: 0 when the command did what was asked and the tasks it acted on ended as wanted,
//! 1 when it refused (with why) or they did not, 2 bad input, 3 internal.

use std::io::IsTerminal;
use std::path::Path;

use super::args::{
    AcceptArgs, CancelArgs, DecisionArgs, MergeArgs, OpenArgs, ReworkArgs, SalvageCommand,
    TargetArgs, TaskArgs,
};
use super::{CliError, Exit, render};
use crate::model::{TaskId, TaskState};
use crate::pipeline::control::{Control, ControlOutcome, Target};
use crate::pipeline::{self, PipelineError, salvage};
use crate::util::short;

/// What makes a follow-up command a success.
enum Wanted<'a> {
    /// It was not refused.
    NotRefused,
    /// This task ended as wanted (merged, or accepted in a `--no-merge` run).
    Task(Option<&'a TaskId>),
    /// These tasks ended merged (or accepted, in a `--no-merge` run).
    Tasks(Vec<TaskId>),
    /// These tasks ended as wanted in this run (a best-of-N candidate: when one of its task's did).
    Succeeded(Vec<TaskId>),
}

impl Wanted<'_> {
    fn met(&self, view: &crate::model::RunView) -> bool {
        match self {
            Wanted::NotRefused => true,
            Wanted::Task(only) => view
                .tasks
                .iter()
                .filter(|task| only.is_none_or(|id| *id == task.id))
                .all(|task| view.task_succeeded(task)),
            Wanted::Tasks(ids) => view
                .tasks
                .iter()
                .filter(|task| ids.contains(&task.id))
                .all(|task| task.state == TaskState::Merged),
            Wanted::Succeeded(ids) => view
                .tasks
                .iter()
                .filter(|task| ids.contains(&task.id))
                .all(|task| view.task_succeeded(task)),
        }
    }
}

/// Runs `act` with a control context (progress on stderr or live, Ctrl-C wired), then prints the outcome.
fn control(
    start: &Path,
    json: bool,
    wanted: Wanted<'_>,
    act: impl FnOnce(&Control<'_>) -> Result<ControlOutcome, PipelineError>,
) -> Result<Exit, CliError> {
    let repo = super::repo_at(start)?;
    let progress = render::Progress::new(!json && std::io::stdout().is_terminal());
    let cancel = super::cancel_flag();
    let context = Control {
        repo: &repo,
        sink: &progress,
        cancel: &cancel,
    };
    let outcome = act(&context)?;
    render::out(&if json {
        render::json(&serde_json::json!({
            "schema": 1,
            "refused": outcome.refused.as_ref().map(ToString::to_string),
            "run": outcome.view,
        }))
    } else {
        render::run_view(&outcome.view)
    })?;
    if let Some(why) = &outcome.refused {
        render::err(&format!("ccfan: {why}\n"));
        return Ok(Exit::NotAllSucceeded);
    }
    Ok(if wanted.met(&outcome.view) {
        Exit::Success
    } else {
        Exit::NotAllSucceeded
    })
}

/// `ccfan merge`: done when every task it tried to land is merged.
pub fn merge(start: &Path, args: MergeArgs) -> Result<Exit, CliError> {
    let MergeArgs { run, into, json } = args;
    let mut acted = Vec::new();
    let exit = control(start, json, Wanted::NotRefused, |c| {
        let (outcome, tried) = c.merge(&run, into.as_deref())?;
        acted = tried;
        Ok(outcome)
    })?;
    judge_after(start, exit, &run, &Wanted::Tasks(acted))
}

/// A command's exit once it ran: what `control` said, unless that was success and the run's tasks as stored now
/// are not as `wanted`.
fn judge_after(
    start: &Path,
    exit: Exit,
    run: &crate::model::RunId,
    wanted: &Wanted<'_>,
) -> Result<Exit, CliError> {
    if exit != Exit::Success {
        return Ok(exit);
    }
    let repo = super::repo_at(start)?;
    let (store, _) = pipeline::open_state(&repo)?;
    let view = crate::status::run_view(&store, run).map_err(PipelineError::from)?;
    Ok(if wanted.met(&view) {
        Exit::Success
    } else {
        Exit::NotAllSucceeded
    })
}

/// `ccfan rework`.
pub fn rework(start: &Path, args: ReworkArgs) -> Result<Exit, CliError> {
    let target = Target::parse(&args.target)?;
    let task = target.task.clone();
    control(start, args.json, Wanted::Task(task.as_ref()), |c| {
        c.rework(&target, &args.note)
    })
}

/// `ccfan retry`.
pub fn retry(start: &Path, args: TaskArgs) -> Result<Exit, CliError> {
    let target = Target::parse(&args.target)?;
    let task = target.task.clone();
    control(start, args.json, Wanted::Task(task.as_ref()), |c| {
        c.retry(&target)
    })
}

/// `ccfan accept --force --reason`.
pub fn accept(start: &Path, args: AcceptArgs) -> Result<Exit, CliError> {
    let target = Target::parse(&args.target)?;
    let task = target.task.clone();
    let repo = super::repo_at(start)?;
    let who = crate::git::user_identity(&repo);
    control(start, args.json, Wanted::Task(task.as_ref()), |c| {
        c.accept(&target, &who, &args.reason)
    })
}

/// `ccfan approve` (done when what it approved landed, or with `--no-merge` was accepted) and `ccfan reject`
/// (done when nothing was refused), as `by` (default: git's user).
pub fn decide(
    start: &Path,
    args: DecisionArgs,
    by: Option<String>,
    approve: bool,
) -> Result<Exit, CliError> {
    let target = Target::parse(&args.target)?;
    let who = match by {
        Some(by) => by,
        None => crate::git::user_identity(&super::repo_at(start)?),
    };
    let note = args.note.as_deref();
    if approve {
        let mut approved = Vec::new();
        let exit = control(start, args.json, Wanted::NotRefused, |c| {
            let (outcome, ids) = c.approve(&target, &who, note, args.plan.as_deref())?;
            approved = ids;
            Ok(outcome)
        })?;
        // Done when what it approved landed (or, in a `--no-merge` run, was accepted).
        judge_after(start, exit, &target.run, &Wanted::Succeeded(approved))
    } else {
        control(start, args.json, Wanted::NotRefused, |c| {
            c.reject(&target, &who, note)
        })
    }
}

/// `ccfan rollback`: success when nothing was refused.
pub fn rollback(start: &Path, args: TargetArgs) -> Result<Exit, CliError> {
    let target = Target::parse(&args.target)?;
    control(start, args.json, Wanted::NotRefused, |c| {
        c.rollback(&target)
    })
}

/// `ccfan cancel`: success when the tasks stopped (or there was nothing to stop).
pub fn cancel(start: &Path, args: CancelArgs) -> Result<Exit, CliError> {
    let target = Target::parse(&args.target)?;
    control(start, args.json, Wanted::NotRefused, |c| {
        c.cancel(&target, args.wait)
    })
}

/// `ccfan salvage list|show|restore`.
pub fn salvage(start: &Path, command: SalvageCommand) -> Result<Exit, CliError> {
    let repo = super::repo_at(start)?;
    let (store, _) = pipeline::open_state(&repo)?;
    let text = match command {
        SalvageCommand::List(TargetArgs { target, json }) => {
            let target = Target::parse(&target)?;
            let entries = salvage::list(&repo, &store, &target.run, target.task.as_ref())?;
            if json {
                render::json(&entries)
            } else {
                render::salvage_list(&entries)
            }
        }
        SalvageCommand::Show(TaskArgs { target, json }) => {
            let detail = salvage::show(&repo, &store, &target)?;
            if json {
                render::json(&detail)
            } else {
                render::salvage_detail(&detail)
            }
        }
        SalvageCommand::Drop(TaskArgs { target, json }) => {
            let (entry, reaching) = salvage::drop_attempt(&repo, &store, &target)?;
            if json {
                render::json(&serde_json::json!({
                    "schema": 1,
                    "dropped": entry,
                    "still_reached_from": reaching,
                }))
            } else if reaching.is_empty() {
                format!(
                    "dropped {} (was {}); until git prunes it, `git branch NAME {}` brings it back\n",
                    entry.reference, entry.commit, entry.commit
                )
            } else {
                format!(
                    "dropped {} (was {}), but {} still reach its commit, so git keeps it; drop those too to let git prune it\n",
                    entry.reference,
                    entry.commit,
                    reaching.join(", ")
                )
            }
        }
        SalvageCommand::Restore(args) => {
            let (entry, branch) =
                salvage::restore(&repo, &store, &args.target, args.branch.as_deref())?;
            if args.json {
                render::json(&serde_json::json!({
                    "schema": 1,
                    "restored": entry,
                    "branch": branch,
                }))
            } else {
                format!(
                    "restored {} ({}) onto new branch {branch}\n  look:   git log -p -1 {branch}\n  use it: git switch {branch}   (or git merge {branch})\n",
                    entry.reference,
                    short(&entry.commit)
                )
            }
        }
    };
    render::out(&text)?;
    Ok(Exit::Success)
}

/// `ccfan open`: the worktree's path (made again if gc removed it), or the person's shell in it.
pub fn open(start: &Path, args: OpenArgs) -> Result<Exit, CliError> {
    let target = Target::parse(&args.target)?;
    let repo = super::repo_at(start)?;
    let cancel = super::cancel_flag();
    let progress = render::Progress::new(false);
    let context = Control {
        repo: &repo,
        sink: &progress,
        cancel: &cancel,
    };
    let tree = context.open(&target)?;
    if tree.recreated {
        render::err(&format!(
            "ccfan: made the worktree of {}/{} again on its branch\n",
            tree.run_id, tree.task_id
        ));
    }
    if args.shell {
        render::err(&format!(
            "ccfan: shell in {} (task {}, {}); exit to return\n",
            tree.path.display(),
            tree.task_id,
            tree.state
        ));
        let code = crate::sandbox::detach::person_shell(&tree.path)?;
        return Ok(if code == 0 {
            Exit::Success
        } else {
            Exit::NotAllSucceeded
        });
    }
    render::out(&if args.json {
        render::json(&tree)
    } else {
        format!("{}\n", tree.path.display())
    })?;
    Ok(Exit::Success)
}
