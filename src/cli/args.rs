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
    /// Build a demo repository with fixture workers and run it (needs no repository and no API key).
    Demo(DemoArgs),
    /// Re-run the gate on a run's stored attempts (diff, scope, secrets, tests, completeness, checks).
    Verify(VerifyArgs),
    /// Scan files, folders or a git range for secrets.
    Scan(ScanArgs),
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
pub struct VerifyArgs {
    /// `<run>` or `<run>/<task>`.
    pub target: String,
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
    /// Print one JSON document instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// `ccfan status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// A run id (default: list all runs).
    pub run: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `ccfan gc`.
#[derive(Debug, Args)]
pub struct GcArgs {
    /// Only these runs (default: every finished run).
    pub runs: Vec<String>,
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
