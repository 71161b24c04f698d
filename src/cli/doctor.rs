//! `ccfan doctor`: what this machine offers ccfan — which sandbox backend works and why the others do not, which
//! one the policy picks, which limits the cgroups enforce, which agent CLIs are installed (version, and whether
//! each has the flags ccfan drives it with). Exit 1 when the policy's backend, or an agent worker profile of the
//! policy, cannot run here. Also `ccfan init`, which writes a first policy from what the same probes find.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::args::{DoctorArgs, InitArgs};
use super::{CliError, Exit, render};
use crate::agents::probe::{ProbeReport, WorkerKindReport, worker_kinds};
use crate::sandbox::doctor::{self, SandboxReport};
use crate::{git, pipeline, policy};

#[derive(Debug, Serialize)]
struct Report {
    version: &'static str,
    /// Where the policy came from.
    policy: Vec<String>,
    sandbox: SandboxReport,
    /// The worker kinds: `command`, then each agent CLI (its default program, and every other program a profile
    /// of the policy names).
    workers: Vec<WorkerKindReport>,
    /// How task trees are made, and what each one gets.
    trees: TreesReport,
    /// The price table that costs agent attempts.
    prices: PricesReport,
}

/// The price table: the built-in one's date, and the user's table if there is one (with its error, if broken).
#[derive(Debug, Serialize)]
struct PricesReport {
    /// Where the user's table would be.
    user_table: Option<std::path::PathBuf>,
    /// Whether it exists.
    user_table_present: bool,
    /// Why it cannot be used, when it is broken.
    problem: Option<String>,
}

fn prices() -> PricesReport {
    let user_table = crate::cost::user_table();
    let present = user_table.as_ref().is_some_and(|path| path.exists());
    PricesReport {
        user_table,
        user_table_present: present,
        problem: crate::cost::PriceTable::load()
            .err()
            .map(|error| error.to_string()),
    }
}

/// How task trees are made here: their mode, the base layer's setup, what `.worktreeinclude` selects, the ports.
#[derive(Debug, Serialize)]
struct TreesReport {
    /// `copy-on-write`: task trees and verification checkouts are overlay views of the base layer; `checkout`:
    /// full checkouts of their commit.
    mode: &'static str,
    /// What that means, or why not copy-on-write.
    note: String,
    /// The `[setup]` command, if any.
    setup: Option<String>,
    /// Whether a layer is prepared for HEAD (setup will not run again for the next run).
    layer_ready: bool,
    /// Files `.worktreeinclude` selects from the checkout (`None`: no repository, or the list is invalid).
    included_files: Option<usize>,
    /// Ports leased to each task.
    ports_per_task: u16,
}

/// Runs `ccfan doctor`.
pub fn doctor(start: &Path, args: DoctorArgs) -> Result<Exit, CliError> {
    let policy = match git::discover(start) {
        Ok(repo) => pipeline::load_policy(&repo, args.policy.as_deref())?,
        Err(_) => policy::load(args.policy.as_deref()).map_err(pipeline::PipelineError::from)?,
    };
    let report = Report {
        version: env!("CARGO_PKG_VERSION"),
        policy: policy.sources.clone(),
        sandbox: doctor::report(&policy.sandbox),
        workers: worker_kinds(&policy),
        trees: trees(start, &policy),
        prices: prices(),
    };
    let profiles_work = report.workers.iter().all(|kind| {
        kind.profiles.is_empty() || kind.probe.as_ref().is_none_or(ProbeReport::usable)
    });
    render::out(&if args.json {
        render::json(&report)
    } else {
        human(&report)
    })?;
    let engine_works = report
        .sandbox
        .container
        .as_ref()
        .is_none_or(|engine| engine.works);
    Ok(
        if report.sandbox.selected.is_some() && profiles_work && engine_works {
            Exit::Success
        } else {
            Exit::NotAllSucceeded
        },
    )
}

fn trees(start: &Path, policy: &policy::Policy) -> TreesReport {
    let repo = git::discover(start).ok();
    let selected = repo.as_ref().map(|repo| {
        let folder = crate::paths::worktree_base(repo, policy.worktree_root.as_deref());
        pipeline::tree::select(repo, policy, &folder)
    });
    let (mode, note) = match selected {
        None => (
            "unknown",
            "not in a git repository: run ccfan doctor inside one to see how its trees are made".to_string(),
        ),
        Some(selected) => match selected {
        Ok(mode) if mode.copy_on_write => (
            "copy-on-write",
            "each task tree and verification checkout is an overlay view of the base layer; it holds only what its worker changed".to_string(),
        ),
        Ok(mode) => (
            "checkout",
            mode.fallback.unwrap_or_else(|| {
                "run.trees (or CCFAN_TREES) = \"checkout\": each task tree is a full checkout, with the layer's ignored files copied in".to_string()
            }),
        ),
        Err(error) => ("none", format!("no run can start: {error}")),
        },
    };
    TreesReport {
        mode,
        note,
        setup: policy.setup.as_ref().map(|setup| setup.argv.join(" ")),
        layer_ready: repo
            .as_ref()
            .is_some_and(|repo| pipeline::layer::ready_for(repo, policy).is_some()),
        included_files: repo.as_ref().and_then(|repo| {
            pipeline::include::Includes::load(repo)
                .ok()
                .map(|includes| includes.files().len())
        }),
        ports_per_task: policy.ports_per_task,
    }
}

fn human(report: &Report) -> String {
    let mut text = format!(
        "ccfan {} (policy: {})\n\nsandbox backends\n",
        report.version,
        report.policy.join(" + ")
    );
    let sandbox = &report.sandbox;
    for status in sandbox.backends.iter().chain([&sandbox.seccomp]) {
        let mark = if status.works { "ok " } else { "no " };
        let _ = writeln!(text, "  {mark} {:<11} {}", status.name, status.detail);
    }
    let _ = writeln!(
        text,
        "\npolicy asks for `{}`: {}",
        sandbox.configured,
        match sandbox.selected {
            Some(name) => format!("workers run under {name}"),
            None => "no worker can run (ccfan fails closed)".to_string(),
        }
    );
    if let Some(problem) = &sandbox.problem {
        let _ = writeln!(text, "  {problem}");
    }
    if let Some(engine) = &sandbox.container {
        let mark = if engine.works { "ok " } else { "no " };
        let _ = writeln!(
            text,
            "  {mark} workers run in containers: {}",
            engine.detail
        );
    }
    text.push_str("\nlimits\n");
    for line in &sandbox.cgroups {
        let _ = writeln!(text, "  {line}");
    }
    text.push_str("\nworker kinds\n");
    for kind in &report.workers {
        let used = if kind.profiles.is_empty() {
            String::new()
        } else {
            format!(" (profiles: {})", kind.profiles.join(", "))
        };
        let line = match &kind.probe {
            None => format!("ok  {:<8} any program, run with its argv{used}", kind.kind),
            Some(probe) => match (&probe.problem, &probe.path) {
                (None, Some(path)) => format!(
                    "ok  {:<8} {} at {} — every flag ccfan needs is there{used}",
                    kind.kind,
                    probe.version.as_deref().unwrap_or("(unknown version)"),
                    path.display()
                ),
                (Some(problem), _) => format!("no  {:<8} {problem}{used}", kind.kind),
                (None, None) => format!("no  {:<8} not found{used}", kind.kind),
            },
        };
        let _ = writeln!(text, "  {line}");
    }
    let trees = &report.trees;
    let _ = writeln!(
        text,
        "\ntask trees\n  mode     {} ({})",
        trees.mode, trees.note
    );
    let _ = writeln!(
        text,
        "  setup    {}",
        match (&trees.setup, trees.layer_ready) {
            (None, _) => "none ([setup] is not set)".to_string(),
            (Some(command), true) => format!("`{command}`, layer ready for HEAD"),
            (Some(command), false) => format!("`{command}`, runs before the next run's first task"),
        }
    );
    let _ = writeln!(
        text,
        "  include  {}",
        match trees.included_files {
            Some(0) | None => "no ignored files copied in (.worktreeinclude)".to_string(),
            Some(n) => format!("{n} ignored file(s) copied into each tree (.worktreeinclude)"),
        }
    );
    let _ = writeln!(
        text,
        "  ports    {} per task (CCFAN_PORT_BASE)",
        trees.ports_per_task
    );
    let prices = &report.prices;
    let _ = writeln!(
        text,
        "\nprices
  {}",
        match (&prices.problem, prices.user_table_present, &prices.user_table) {
            (Some(problem), _, _) => format!("your table is broken, the built-in one is used: {problem}"),
            (None, true, Some(path)) => format!("your table {} over the built-in one (data/prices.toml)", path.display()),
            (None, _, _) => "the built-in table (data/prices.toml); put your own in $XDG_CONFIG_HOME/ccfan/prices.toml".to_string(),
        }
    );
    text
}

/// `ccfan init`: writes `ccfan.toml` at the top of the repository (never over an existing one) with the detected
/// test command and the agent CLIs that work here as worker profiles; `--print` shows it instead.
pub fn init(start: &Path, args: InitArgs) -> Result<Exit, CliError> {
    let repo = super::repo_at(start)?;
    let file = repo.workdir.join(policy::POLICY_FILE);
    let tests = policy::init::detect_tests(&repo.workdir);
    let defaults = policy::load(None).map_err(pipeline::PipelineError::from)?;
    let mut agents: Vec<crate::model::agent::Agent> = Vec::new();
    for kind in worker_kinds(&defaults) {
        if let Some(probe) = kind.probe.filter(ProbeReport::usable)
            && !agents.contains(&probe.agent)
        {
            agents.push(probe.agent);
        }
    }
    let text = policy::init::starter(tests.as_ref(), &agents);
    if args.print {
        render::out(&text)?;
        return Ok(Exit::Success);
    }
    let refuse = || -> CliError {
        pipeline::PipelineError::from(
            crate::input::InputError::new(
                &file,
                "a ccfan.toml is already here: `ccfan init` never overwrites one",
            )
            .fix("edit it, or move it away and run `ccfan init` again (`ccfan init --print` shows what it would write)"),
        )
        .into()
    };
    let written = std::fs::File::options()
        .write(true)
        .create_new(true)
        .open(&file)
        .and_then(|mut out| std::io::Write::write_all(&mut out, text.as_bytes()));
    match written {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => return Err(refuse()),
        Err(error) => return Err(error.into()),
    }
    let names: Vec<&str> = agents.iter().map(|agent| agent.name()).collect();
    render::out(&format!(
        "wrote {}\n  tests:   {}\n  workers: {}\n",
        file.display(),
        tests.map_or_else(
            || "none found (set [tests] command)".to_string(),
            |tests| format!("`{}` (from {})", tests.argv.join(" "), tests.because)
        ),
        if names.is_empty() {
            "no agent CLI found on PATH (codex, claude)".to_string()
        } else {
            names.join(", ")
        }
    ))?;
    Ok(Exit::Success)
}
