//! The command-line front end: a thin adapter that resolves arguments once, calls the same library functions MCP
//! will call, and renders results. Exit codes: 0 all good, 1 some task did not end as wanted, 2 bad input, 3 internal.

pub mod args;
mod control;
mod dashboard;
mod doctor;
mod gate;
mod hooks;
mod mcp;
pub mod render;
mod sarif;
mod scorecard;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::demo;
use crate::git::{self, RepoPaths};
use crate::model::{RunId, TaskId};
use crate::pipeline::{self, PipelineError, RunRequest, gc};
use crate::status;
use args::{
    AcceptArgs, Cli, Command, DecisionArgs, DemoArgs, GcArgs, JobArgs, MergeArgs, ReworkArgs,
    RunArgs, StatusArgs, TargetArgs, TaskArgs,
};

/// How the process ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything ended as wanted.
    Success = 0,
    /// Some task did not end as wanted (failed, timed out, …).
    NotAllSucceeded = 1,
    /// Bad input or usage.
    BadInput = 2,
    /// ccfan itself failed.
    Internal = 3,
}

/// A command's failure, with the exit code it maps to.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct CliError {
    /// The exit code.
    pub exit: Exit,
    /// What went wrong.
    #[source]
    pub error: anyhow::Error,
}

impl From<PipelineError> for CliError {
    fn from(error: PipelineError) -> Self {
        let exit = if error.is_bad_input() {
            Exit::BadInput
        } else if matches!(error, PipelineError::SetupFailed { .. }) {
            // Like a gate that says no: the project's own command failed, not ccfan.
            Exit::NotAllSucceeded
        } else {
            Exit::Internal
        };
        CliError {
            exit,
            error: error.into(),
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(error: std::io::Error) -> Self {
        CliError {
            exit: Exit::Internal,
            error: error.into(),
        }
    }
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<Exit, CliError> {
    let start = match &cli.dir {
        Some(dir) => dir.clone(),
        None => std::env::current_dir()?,
    };
    match cli.command {
        Command::Run(args) => run_tasks(&start, args),
        Command::Status(args) => show_status(&start, args),
        Command::Gc(args) => collect_garbage(&start, args),
        Command::Scorecard(args) => scorecard::scorecard(&start, args),
        Command::Report(args) => scorecard::report(&start, args),
        Command::Dashboard(args) => dashboard::serve(&start, args),
        Command::Demo(args) => run_demo(args),
        Command::Verify(args) => gate::verify(&start, args),
        Command::Scan(args) => gate::scan(&start, args),
        Command::Merge(args) => control::merge(&start, args),
        Command::Rework(args) => control::rework(&start, args),
        Command::Retry(args) => control::retry(&start, args),
        Command::Accept(args) => control::accept(&start, args),
        Command::Approve(args) => control::decide(&start, args, None, true),
        Command::Reject(args) => control::decide(&start, args, None, false),
        Command::Rollback(args) => control::rollback(&start, args),
        Command::Cancel(args) => control::cancel(&start, args),
        Command::Salvage(command) => control::salvage(&start, command),
        Command::Open(args) => control::open(&start, args),
        Command::Init(args) => doctor::init(&start, args),
        Command::Doctor(args) => doctor::doctor(&start, args),
        Command::Mcp(args) => mcp::serve(&start, args),
        Command::Hooks(command) => hooks::hooks(&start, command),
        Command::Job(args) => job(&start, args),
        Command::Runner(args) => runner(args),
    }
}

/// `ccfan runner`: one portable attempt, where its worker is; the manifest goes to stdout as well.
/// In a pod it also takes the input in from stdin, gives the output out on stdout, or holds the pod up.
fn runner(args: args::RunnerArgs) -> Result<Exit, CliError> {
    use crate::pipeline::portable::PortableError;
    let cancel = cancel_flag();
    let failed = |error: PortableError| CliError {
        exit: match error {
            PortableError::Refused(_) => Exit::BadInput,
            _ => Exit::Internal,
        },
        error: error.into(),
    };
    let io = |context: String| move |source| failed(PortableError::Io { context, source });
    if let Some(input) = &args.take_input {
        crate::sandbox::archive::take_input(std::io::stdin().lock(), input).map_err(io(
            format!("cannot take the input into {}", input.display()),
        ))?;
        return Ok(Exit::Success);
    }
    if let Some(output) = &args.give_output {
        crate::sandbox::archive::give_output(output, std::io::stdout().lock())
            .map_err(io(format!("cannot give {} out", output.display())))?;
        return Ok(Exit::Success);
    }
    if let Some(seconds) = args.hold {
        crate::pipeline::pod::hold(std::time::Duration::from_secs(seconds), &cancel);
        return Ok(Exit::Success);
    }
    let (Some(input), Some(output), Some(work)) = (&args.input, &args.output, &args.work) else {
        return Err(failed(PortableError::Refused(
            "give --input, --output and --work (or --take-input, --give-output or --hold)"
                .to_string(),
        )));
    };
    if let Some(seconds) = args.await_input {
        crate::pipeline::pod::await_input(input, std::time::Duration::from_secs(seconds), &cancel)
            .map_err(|why| failed(PortableError::Refused(why)))?;
    }
    let live = args
        .echo
        .then(|| Box::new(std::io::stdout()) as Box<dyn std::io::Write + Send>);
    let manifest =
        crate::pipeline::portable::run(input, output, work, &cancel, live).map_err(failed)?;
    render::out(&render::json(&manifest))?;
    Ok(Exit::Success)
}

/// `ccfan job FILE`: what the request names, exactly as its command does it, with `--json` output. When it cannot
/// be done, stdout carries `{"schema": 1, "error": {"code", "message"}}` instead, so the MCP server reads a typed
/// reason (`busy`: another ccfan process carries the run) rather than matching words in a log.
fn job(start: &Path, args: JobArgs) -> Result<Exit, CliError> {
    let result = run_job(start, args);
    if let Err(failure) = &result {
        let busy = failure.error.chain().any(|cause| {
            matches!(
                cause.downcast_ref::<PipelineError>(),
                Some(PipelineError::Store(crate::store::StoreError::Busy { .. }))
            )
        });
        let code = match (busy, failure.exit) {
            (true, _) => "busy",
            (false, Exit::BadInput) => "invalid",
            (false, _) => "failed",
        };
        render::out(&render::json(&serde_json::json!({
            "schema": 1,
            "error": {"code": code, "message": format!("{:#}", failure.error)},
        })))?;
    }
    result
}

fn run_job(start: &Path, args: JobArgs) -> Result<Exit, CliError> {
    use crate::pipeline::job::JobRequest;
    let request = JobRequest::read(&absolute(start, &args.file)).map_err(PipelineError::from)?;
    let target = |run: &RunId, task: Option<&TaskId>| match task {
        Some(task) => format!("{run}/{task}"),
        None => run.to_string(),
    };
    let on = target(request.run_id(), request.task_id());
    match request {
        JobRequest::Run {
            tasks_file,
            run_id,
            no_merge,
            plan,
            base,
            into,
            jobs,
        } => run_tasks(
            start,
            RunArgs {
                tasks: tasks_file,
                policy: None,
                base,
                jobs,
                into,
                no_merge,
                plan,
                run_id: Some(run_id),
                json: true,
                report: None,
            },
        ),
        JobRequest::Rework { note, .. } => control::rework(
            start,
            ReworkArgs {
                target: on,
                note,
                json: true,
            },
        ),
        JobRequest::Retry { .. } => control::retry(
            start,
            TaskArgs {
                target: on,
                json: true,
            },
        ),
        JobRequest::Approve { note, plan, by, .. } => control::decide(
            start,
            DecisionArgs {
                target: on,
                note,
                plan,
                json: true,
            },
            by,
            true,
        ),
        JobRequest::Reject { note, by, .. } => control::decide(
            start,
            DecisionArgs {
                target: on,
                note,
                plan: None,
                json: true,
            },
            by,
            false,
        ),
        JobRequest::Accept { reason, .. } => control::accept(
            start,
            AcceptArgs {
                target: on,
                force: true,
                reason,
                json: true,
            },
        ),
        JobRequest::Rollback { .. } => control::rollback(
            start,
            TargetArgs {
                target: on,
                json: true,
            },
        ),
        JobRequest::Merge { run_id, into } => control::merge(
            start,
            MergeArgs {
                run: run_id,
                into,
                json: true,
            },
        ),
    }
}

fn repo_at(start: &Path) -> Result<RepoPaths, CliError> {
    git::discover(start).map_err(|error| PipelineError::from(error).into())
}

/// Ctrl-C and SIGTERM set the returned flag; the pipeline then stops workers and marks them cancelled.
fn cancel_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(error) = signal_hook::flag::register(signal, Arc::clone(&flag)) {
            tracing::warn!("cannot watch for signal {signal}: {error}");
        }
    }
    flag
}

fn execute(request: &RunRequest, json: bool) -> Result<crate::model::RunView, CliError> {
    let live = !json && std::io::stdout().is_terminal();
    let progress = render::Progress::new(live);
    let cancel = cancel_flag();
    Ok(pipeline::run(request, &progress, &cancel)?)
}

fn run_tasks(start: &Path, args: RunArgs) -> Result<Exit, CliError> {
    let RunArgs {
        tasks,
        policy,
        base,
        jobs,
        into,
        no_merge,
        plan,
        run_id,
        json,
        report,
    } = args;
    let repo = repo_at(start)?;
    let report_repo = repo.clone();
    let request = RunRequest {
        repo,
        tasks_file: absolute(start, &tasks),
        policy_file: policy.map(|path| absolute(start, &path)),
        base,
        jobs: jobs.map(usize::from),
        into,
        no_merge,
        plan,
        run_id,
    };
    let view = execute(&request, json)?;
    if let Some(out) = &report
        && let Err(error) = scorecard::write_report(
            &report_repo,
            &view.run_id,
            Some(&absolute(start, out)),
            None,
        )
    {
        // The run's own result still shows, with its exit code; only the report is missing.
        render::err(&format!(
            "ccfan: warning: no report written: {error}; `ccfan report {}` writes it again",
            view.run_id
        ));
    }
    render::out(&if json {
        render::json(&view)
    } else {
        render::run_view(&view)
    })?;
    Ok(if view.all_succeeded() {
        Exit::Success
    } else {
        Exit::NotAllSucceeded
    })
}

fn show_status(start: &Path, args: StatusArgs) -> Result<Exit, CliError> {
    let StatusArgs { run, json } = args;
    let repo = repo_at(start)?;
    let (store, _) = pipeline::open_state(&repo)?;
    let target = run
        .map(|text| pipeline::control::Target::parse(&text))
        .transpose()?;
    let text = match target {
        Some(pipeline::control::Target {
            run: run_id,
            task: Some(task_id),
        }) => {
            let history =
                status::task_history(&store, &run_id, &task_id).map_err(PipelineError::from)?;
            if json {
                render::json(&history)
            } else {
                render::task_history(&history)
            }
        }
        Some(pipeline::control::Target {
            run: run_id,
            task: None,
        }) => {
            let view = status::run_view(&store, &run_id).map_err(PipelineError::from)?;
            if json {
                render::json(&view)
            } else {
                render::run_view(&view)
            }
        }
        None => {
            let list = status::list_runs(&store).map_err(PipelineError::from)?;
            if json {
                render::json(&list)
            } else {
                render::run_list(&list)
            }
        }
    };
    render::out(&text)?;
    Ok(Exit::Success)
}

fn collect_garbage(start: &Path, args: GcArgs) -> Result<Exit, CliError> {
    let GcArgs {
        runs,
        dry_run,
        json,
    } = args;
    let repo = repo_at(start)?;
    let (mut store, _) = pipeline::open_state(&repo)?;
    // Where verification checkouts live (from the policy's worktree root; the default if the policy cannot load).
    let worktree_root = pipeline::load_policy(&repo, None)
        .ok()
        .and_then(|policy| policy.worktree_root);
    let verify_root = crate::paths::verify_root(&crate::paths::worktree_base(
        &repo,
        worktree_root.as_deref(),
    ));
    let report = gc::gc(&repo, &mut store, &runs, dry_run, Some(&verify_root))?;
    render::out(&if json {
        render::json(&report)
    } else {
        render::gc_report(&report)
    })?;
    let left_in_place = report
        .skipped
        .iter()
        .any(|skipped| skipped.task_id.is_some());
    Ok(if left_in_place {
        Exit::NotAllSucceeded
    } else {
        Exit::Success
    })
}

fn run_demo(args: DemoArgs) -> Result<Exit, CliError> {
    let DemoArgs { dir, jobs, json } = args;
    let root = match dir {
        Some(dir) => dir,
        None => std::env::temp_dir().join(format!("ccfan-demo-{}", crate::util::random_hex(3))),
    };
    let layout = demo::create(&root)?;
    let request = RunRequest {
        repo: repo_at(&layout.repo)?,
        tasks_file: layout.tasks_file.clone(),
        policy_file: None,
        base: None,
        jobs: jobs.map(usize::from),
        into: None,
        no_merge: false,
        plan: false,
        run_id: None,
    };
    let view = execute(&request, json)?;
    let as_expected = demo::EXPECTED.iter().all(|(id, expected)| {
        view.tasks
            .iter()
            .any(|task| task.id == *id && task.state == *expected)
    });
    if json {
        render::out(&render::json(&view))?;
    } else {
        // The hints name this very binary: after `cargo run`, `ccfan` is not on PATH yet.
        let exe = std::env::current_exe()
            .map_or_else(|_| "ccfan".to_string(), |path| path.display().to_string());
        let mut text = render::run_view(&view);
        text.push_str(&format!(
            "\ndemo folder: {}\n  repository: {}\n  tasks file: {}\n  workers:    {}\n\
             \nlook around:\n  {exe} -C {repo} status {run}\n  {exe} -C {repo} verify {run}\n  git -C {repo} log --oneline --all\n  {exe} -C {repo} gc\n",
            layout.root.display(),
            layout.repo.display(),
            layout.tasks_file.display(),
            layout.workers.display(),
            repo = layout.repo.display(),
            run = view.run_id,
        ));
        if !as_expected {
            text.push_str(
                "\nsome demo tasks did not end as the demo expects; see the NOTE column\n",
            );
        }
        render::out(&text)?;
    }
    Ok(if as_expected {
        Exit::Success
    } else {
        Exit::NotAllSucceeded
    })
}

fn absolute(start: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        start.join(path)
    }
}
