//! Command-line arguments (clap). Only shapes here; `cli::run` resolves them once into library requests.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Fan delegated coding tasks out to parallel workers in isolated git worktrees, and keep every attempt safe.
#[derive(Debug, Parser)]
#[command(name = "ccfan", version, about, propagate_version = true)]
pub struct Cli {
    /// Run as if started in DIR (like `git -C`).
    #[arg(short = 'C', global = true, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// More log output on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fan the tasks of a tasks file out to workers, one worktree each.
    Run(RunArgs),
    /// List runs, or show one run's tasks.
    Status(StatusArgs),
    /// Remove finished runs' worktrees and branches, after keeping all their work on salvage refs.
    Gc(GcArgs),
    /// How each worker profile and model did across runs: acceptance, reworks, findings, time, cost.
    Scorecard(ScorecardArgs),
    /// A run as one self-contained HTML file (a CI artifact) or a Markdown summary (a pull-request comment).
    Report(ReportArgs),
    /// A live web page of every run on loopback: what needs you, what is working, what is done, with actions.
    Dashboard(DashboardArgs),
    /// Build a demo repository with fixture workers and run it (needs no repository and no API key).
    Demo(DemoArgs),
    /// Re-run the gate on a run's stored attempts (diff, scope, secrets, tests, completeness, checks).
    Verify(VerifyArgs),
    /// Scan files, folders or a git range for secrets.
    Scan(ScanArgs),
    /// Land a run's accepted tasks on the target branch, in task-file order (after --no-merge or a review).
    Merge(MergeArgs),
    /// Ask for another attempt of a task with a person's note (fresh rework budget).
    Rework(ReworkArgs),
    /// Plan mode: approve a task's plan (or every planned task of a run), recording who and when, and run it.
    Approve(DecisionArgs),
    /// Plan mode: reject a task's plan (or every planned task of a run); the task ends without running.
    Reject(DecisionArgs),
    /// Give a blocked, failed, interrupted, cancelled or over-budget task a fresh rework budget and another
    /// attempt (an over-budget one starts only once its `[budget]` cap was raised).
    Retry(TaskArgs),
    /// Accept a task over the gate's verdict (recorded with who and why), then land it.
    Accept(AcceptArgs),
    /// Roll a task (or a whole run) back: not merged, or reverted if merged; every attempt stays salvaged.
    Rollback(TargetArgs),
    /// Stop a run's (or one task's) running workers, whole process trees, and mark them cancelled.
    Cancel(CancelArgs),
    /// Say which sandbox backend works on this machine (and why the others do not) and what limits hold.
    Doctor(DoctorArgs),
    /// See and bring back any recorded attempt.
    #[command(subcommand)]
    Salvage(SalvageCommand),
    /// Print a task's worktree (made again on its branch if gc removed it), or open a shell in it.
    Open(OpenArgs),
    /// Write a first ccfan.toml: the detected test command and the installed agents as workers.
    Init(InitArgs),
    /// Serve ccfan's tools over MCP (stdio by default) for an orchestrating agent.
    Mcp(McpArgs),
    /// Put the gate in front of commits, merges and pushes as local git hooks.
    #[command(subcommand)]
    Hooks(HooksCommand),
    /// Carry out a job request the MCP server handed over (JSON; not for people).
    #[command(hide = true)]
    Job(JobArgs),
    /// Run a portable attempt where the worker is (a container, a pod): check the base out of its bundle, run the
    /// worker, record its change and bundle it back (not for people).
    #[command(hide = true)]
    Runner(RunnerArgs),
}

/// `ccfan runner`.
#[derive(Debug, Args)]
pub struct RunnerArgs {
    /// The folder holding what the attempt was given (base.bundle, task.json, order.json).
    #[arg(long, required_unless_present_any = ["take_input", "give_output", "hold"])]
    pub input: Option<PathBuf>,
    /// The folder to write what comes back into (attempt.bundle, manifest.json, worker.log, outbox/).
    #[arg(long, required_unless_present_any = ["take_input", "give_output", "hold"])]
    pub output: Option<PathBuf>,
    /// Where the base is checked out and the worker runs (made if missing).
    #[arg(long, required_unless_present_any = ["take_input", "give_output", "hold"])]
    pub work: Option<PathBuf>,
    /// Wait up to this many seconds for the input folder to be marked ready (a pod's input arrives after start).
    #[arg(long, value_name = "SECONDS")]
    pub await_input: Option<u64>,
    /// Echo the worker's output to stdout as it is written (the container's log is how ccfan follows it live).
    #[arg(long)]
    pub echo: bool,
    /// In a pod: unpack the attempt's input from the tar on stdin into this folder, then mark it ready.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["input", "output", "work", "give_output", "hold"])]
    pub take_input: Option<PathBuf>,
    /// In a pod: write this output folder to stdout as a tar.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["input", "output", "work", "hold"])]
    pub give_output: Option<PathBuf>,
    /// In a pod: keep the pod up this many seconds, so the runner's output can be taken once it ended.
    #[arg(long, value_name = "SECONDS", conflicts_with_all = ["input", "output", "work"])]
    pub hold: Option<u64>,
}

/// `ccfan open`.
#[derive(Debug, Args)]
pub struct OpenArgs {
    /// `<run>/<task>`.
    pub target: String,
    /// Start your shell (`$SHELL`) in the worktree instead of printing its path.
    #[arg(long, conflicts_with = "json")]
    pub shell: bool,
    /// Print JSON (run, task, state, path, whether it was made again).
    #[arg(long)]
    pub json: bool,
}

/// `ccfan init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Print the file instead of writing it.
    #[arg(long)]
    pub print: bool,
}

/// `ccfan job`.
#[derive(Debug, Args)]
pub struct JobArgs {
    /// The request file.
    pub file: PathBuf,
}

/// `ccfan hooks`.
#[derive(Debug, Subcommand)]
pub enum HooksCommand {
    /// Install the hooks (chaining any hook already there, which keeps running first).
    Install(HooksArgs),
    /// Remove ccfan's hooks and put back exactly what they chained.
    Uninstall(HooksArgs),
    /// Show where the hooks live and what is installed.
    Status(HooksArgs),
    /// Run one hook's gate: what the installed scripts call (pre-push reads git's ref lines on stdin).
    Run(HookRunArgs),
}

/// `ccfan hooks install/uninstall/status`.
#[derive(Debug, Args)]
pub struct HooksArgs {
    /// Only this hook (repeatable; default: pre-commit, pre-merge-commit and pre-push).
    #[arg(long = "hook", value_name = "HOOK", value_parser = ["pre-commit", "pre-merge-commit", "pre-push"])]
    pub hooks: Vec<String>,
    /// Install into a `core.hooksPath` set outside this repository (every repository using it gets the hooks).
    #[arg(long)]
    pub shared: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `ccfan hooks run`.
#[derive(Debug, Args)]
pub struct HookRunArgs {
    /// The hook git is running.
    #[arg(value_parser = ["pre-commit", "pre-merge-commit", "pre-push"])]
    pub hook: String,
    /// The arguments git gave the hook (pre-push: the remote's name and URL).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
    /// The policy file (default: ccfan.toml at the repository root, if any).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Print the full report as JSON on stdout (the short message still goes to stderr).
    #[arg(long)]
    pub json: bool,
}

/// `ccfan mcp`.
#[derive(Debug, Args)]
pub struct McpArgs {
    /// Serve Streamable HTTP on this address (path /mcp) instead of stdio, e.g. 127.0.0.1:8765.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<std::net::SocketAddr>,
    /// Allow a non-loopback --http address (the server has no authentication: put your own access control in
    /// front of it).
    #[arg(long, requires = "http")]
    pub allow_remote: bool,
}

/// `ccfan merge`.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The run.
    pub run: crate::model::RunId,
    /// Merge into this branch instead of the run's target.
    #[arg(long, value_name = "BRANCH")]
    pub into: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// A command on one task.
#[derive(Debug, Args)]
pub struct TaskArgs {
    /// `<run>/<task>`.
    pub target: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// A command on a run or one task.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// `<run>` or `<run>/<task>`.
    pub target: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `ccfan rework`.
#[derive(Debug, Args)]
pub struct ReworkArgs {
    /// `<run>/<task>`.
    pub target: String,
    /// What the worker should do differently (handed to it as a finding).
    #[arg(long, value_name = "TEXT")]
    pub note: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `ccfan approve`, `ccfan reject`.
#[derive(Debug, Args)]
pub struct DecisionArgs {
    /// `<run>/<task>`, or `<run>` for every task whose plan waits.
    pub target: String,
    /// A note recorded with the decision (handed to the worker with an approved plan).
    #[arg(long, value_name = "TEXT")]
    pub note: Option<String>,
    /// Approve only if the stored plan is this one: its SHA-256, or a prefix of 8+ digits (`ccfan status
    /// <run>/<task> --json` shows it as plan.sha256).
    #[arg(long, value_name = "SHA")]
    pub plan: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `ccfan accept`.
#[derive(Debug, Args)]
pub struct AcceptArgs {
    /// `<run>/<task>`.
    pub target: String,
    /// Required: this overrides the gate.
    #[arg(long, required = true)]
    pub force: bool,
    /// Why (recorded with your name).
    #[arg(long, value_name = "TEXT")]
    pub reason: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `ccfan cancel`.
#[derive(Debug, Args)]
pub struct CancelArgs {
    /// `<run>` or `<run>/<task>`.
    pub target: String,
    /// How long to wait for the tasks to stop.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = crate::util::parse_duration)]
    pub wait: std::time::Duration,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `ccfan salvage`.
#[derive(Debug, Subcommand)]
pub enum SalvageCommand {
    /// List the salvaged attempts of a run or task.
    List(TargetArgs),
    /// Show one attempt (`<run>/<task>/<attempt>`) and what it changed.
    Show(TaskArgs),
    /// Put one attempt (`<run>/<task>/<attempt>`) on a new branch.
    Restore(RestoreArgs),
    /// Remove one attempt's salvage ref (`<run>/<task>/<attempt>`), e.g. one that holds a secret.
    Drop(TaskArgs),
}

/// `ccfan salvage restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// `<run>/<task>/<attempt>`.
    pub target: String,
    /// The new branch (default: ccfan/restore/<run>/<task>/attempt-<n>).
    #[arg(long, value_name = "NAME")]
    pub branch: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// How a report is printed.
#[derive(Debug, Args)]
#[group(multiple = false)]
pub struct FormatArgs {
    /// Print JSON (a documented, versioned schema).
    #[arg(long)]
    pub json: bool,
    /// Print SARIF 2.1.0 (for code-scanning tools).
    #[arg(long)]
    pub sarif: bool,
}

/// `ccfan verify`.
#[derive(Debug, Args)]
#[group(id = "what", required = true, multiple = false, args = ["target", "staged", "range", "commit"])]
pub struct VerifyArgs {
    /// `<run>` or `<run>/<task>`: re-run the gate on the run's recorded attempts.
    pub target: Option<String>,
    /// Judge the staged changes (the index against HEAD), as the pre-commit hook does, with the policy's `[hooks]`.
    #[arg(long)]
    pub staged: bool,
    /// Judge the commits of a range (`A..B`): the net change, and every commit's own lines for secrets.
    #[arg(long, value_name = "A..B")]
    pub range: Option<String>,
    /// Judge one commit against its first parent.
    #[arg(long, value_name = "REV")]
    pub commit: Option<String>,
    /// The policy file (default: ccfan.toml at the repository root, if any).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Output format.
    #[command(flatten)]
    pub format: FormatArgs,
}

/// `ccfan scan`.
#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Files or folders to scan (folders honour .gitignore). Default: the current folder.
    pub paths: Vec<PathBuf>,
    /// Scan the lines added by each commit of a git range instead (`A..B`, or a revision for all its history).
    #[arg(long, value_name = "A..B", conflicts_with = "paths")]
    pub range: Option<String>,
    /// A rules file (ccfan's format or a gitleaks config) instead of the built-in pack.
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
    /// Output format.
    #[command(flatten)]
    pub format: FormatArgs,
}

/// `ccfan run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The tasks file (TOML, or JSON with the same shape).
    #[arg(long, short = 't', value_name = "FILE")]
    pub tasks: PathBuf,
    /// The policy file (default: ccfan.toml at the repository root, if any).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// The commit every worktree starts from (default: the policy's run.base, HEAD).
    #[arg(long, value_name = "REV")]
    pub base: Option<String>,
    /// Tasks at a time (default: the policy's run.jobs, else the machine's cores).
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub jobs: Option<u16>,
    /// Merge accepted tasks into this branch (default: the branch checked out now).
    #[arg(long, value_name = "BRANCH")]
    pub into: Option<String>,
    /// Stop at accepted: merge nothing (land later with `ccfan merge <run>`).
    #[arg(long)]
    pub no_merge: bool,
    /// Plan first: each worker writes a plan on a read-only tree and the task waits `planned` until
    /// `ccfan approve` (or `ccfan reject`).
    #[arg(long)]
    pub plan: bool,
    /// Use this id for the new run (the MCP server picks it so it can answer at once).
    #[arg(long, value_name = "ID", hide = true)]
    pub run_id: Option<crate::model::RunId>,
    /// When the run ends, write its report here (HTML, or Markdown for a `.md` file).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Print one JSON document instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// `ccfan status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// A run id (default: list all runs), or `<run>/<task>` for one task's attempts and every transition.
    pub run: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `ccfan doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The policy file (default: ccfan.toml at the repository root, else the default preset).
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `ccfan report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The run.
    pub run: crate::model::RunId,
    /// Write it here (default: print it).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// `html` or `md` (default: from --out's extension; `md` when printed).
    #[arg(long, value_parser = ["html", "md"])]
    pub format: Option<String>,
}

/// `ccfan dashboard`.
#[derive(Debug, Args)]
pub struct DashboardArgs {
    /// The port on 127.0.0.1 (default: any free port).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Open the page in the browser (`$BROWSER`, else `xdg-open`).
    #[arg(long)]
    pub open: bool,
}

/// `ccfan scorecard`.
#[derive(Debug, Args)]
pub struct ScorecardArgs {
    /// Only runs since then: a date (`2026-12-01`) or a time ago (`7d`, `24h`).
    #[arg(long)]
    pub since: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `ccfan gc`.
#[derive(Debug, Args)]
pub struct GcArgs {
    /// Only these runs (default: every finished run).
    pub runs: Vec<crate::model::RunId>,
    /// Say what would be removed, remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `ccfan demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// A new or empty folder for the demo (default: a fresh folder under the system's temp dir).
    pub dir: Option<PathBuf>,
    /// Tasks at a time.
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub jobs: Option<u16>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}
