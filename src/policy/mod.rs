//! Policy: load `ccfan.toml` over an embedded preset (`policies/*.toml`), validate every key once, and hand the
//! pipeline resolved values (durations, sizes, compiled-checked globs, worker profiles) — never raw strings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::input::InputError;
use crate::model::WorkerProfile;
use crate::util::{parse_duration, parse_size};

mod budget;
mod gate;
mod hooks;
pub mod init;
mod kubernetes;
pub mod review;
mod sandbox;
mod setup;
mod worker;

pub use budget::BudgetSettings;
pub use hooks::HooksSettings;
pub use kubernetes::KubernetesSettings;
pub use review::ReviewSettings;
pub use sandbox::{ContainerSettings, SandboxBackend, SandboxLimits, SandboxSettings};
pub use setup::SetupSettings;
pub use worker::{WorkerSection, add_installed_agents};

/// The presets compiled into the binary: `(name, file text)`.
pub const PRESETS: [(&str, &str); 2] = [
    ("default", include_str!("../../policies/default.toml")),
    ("strict", include_str!("../../policies/strict.toml")),
];

/// Environment variable listing extra paths (`:`-separated) that sandboxed processes may write.
pub const WRITABLE_ENV: &str = "CCFAN_SANDBOX_WRITABLE";

/// The policy file name looked up at the repository root.
pub const POLICY_FILE: &str = "ccfan.toml";

/// The test command run by the gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestSettings {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Wall-clock limit.
    pub timeout: Duration,
}

/// When the completeness stage runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completeness {
    /// For agent workers only (command workers give no final message unless they write one).
    Auto,
    /// For every worker.
    On,
    /// Never.
    Off,
}

/// A custom check run like the tests stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSettings {
    /// Its name (in findings and logs).
    pub name: String,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Wall-clock limit.
    pub timeout: Duration,
}

/// How the gate runs and decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateSettings {
    /// Stages in the order they run.
    pub stages: Vec<crate::report::Stage>,
    /// Stop at the first stage that fails.
    pub fail_fast: bool,
    /// The secret rule pack: a built-in name or a file.
    pub rules: String,
    /// Scan the worker's own output for secrets too.
    pub scan_logs: bool,
    /// When the completeness stage runs.
    pub completeness: Completeness,
    /// Stages or rule ids whose blocking findings are never sent back for rework (a rollback instead).
    pub not_reworkable: Vec<String>,
    /// Custom checks.
    pub checks: Vec<CheckSettings>,
}

/// What `ccfan run` does with tasks whose allowed globs can match the same files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlap {
    /// Run them in parallel and warn (they land in task-file order, each re-checked on top of the earlier).
    Warn,
    /// Run overlapping tasks one after another, in task-file order.
    Serialize,
}

/// How task trees and verification checkouts are made (`run.trees`; `CCFAN_TREES` overrides it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trees {
    /// Copy-on-write views of the prepared base layer where this machine can mount them, else full checkouts
    /// (and the run says so).
    Auto,
    /// Copy-on-write views only: a run stops with the reason when they cannot be mounted.
    CopyOnWrite,
    /// Full checkouts, as `git worktree add` makes them.
    Checkout,
}

/// A validated policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Where it came from, for messages (preset name, then the file if any).
    pub sources: Vec<String>,
    /// Tasks at a time (`None`: the machine's cores).
    pub jobs: Option<usize>,
    /// Default base revision.
    pub base: String,
    /// Default attempt timeout.
    pub timeout: Duration,
    /// Rework cap.
    pub max_reworks: u32,
    /// What to do with tasks whose allowed globs overlap.
    pub overlap: Overlap,
    /// How task trees and verification checkouts are made.
    pub trees: Trees,
    /// Default worker profile name.
    pub default_worker: Option<String>,
    /// Bytes of worker output kept per attempt.
    pub log_limit: u64,
    /// Where worktrees live, if set.
    pub worktree_root: Option<PathBuf>,
    /// TCP ports leased to each task (`CCFAN_PORT_BASE`, `CCFAN_PORT_COUNT`); 0 leases none.
    pub ports_per_task: u16,
    /// Default allowed globs.
    pub allowed: Vec<String>,
    /// Globs denied for every task.
    pub denied: Vec<String>,
    /// The test command, if any.
    pub tests: Option<TestSettings>,
    /// Sandbox settings.
    pub sandbox: SandboxSettings,
    /// Worker profiles by name.
    pub workers: BTreeMap<String, WorkerProfile>,
    /// The gate.
    pub gate: GateSettings,
    /// The local git hooks' gate (`[hooks]`).
    pub hooks: HooksSettings,
    /// The command that prepares the base layer once (`[setup]`), if any.
    pub setup: Option<SetupSettings>,
    /// Spending caps (`[budget]`).
    pub budget: BudgetSettings,
    /// The review stage (`[review]`), when set.
    pub review: Option<ReviewSettings>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    extends: Option<Spanned<String>>,
    run: Option<RunSection>,
    scope: Option<ScopeSection>,
    tests: Option<TestsSection>,
    sandbox: Option<sandbox::SandboxSection>,
    #[serde(default)]
    workers: BTreeMap<String, WorkerSection>,
    gate: Option<gate::GateSection>,
    checks: Option<Vec<Spanned<gate::CheckSection>>>,
    hooks: Option<hooks::HooksSection>,
    setup: Option<setup::SetupSection>,
    budget: Option<budget::BudgetSection>,
    review: Option<review::ReviewSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunSection {
    jobs: Option<Spanned<i64>>,
    base: Option<String>,
    timeout: Option<Spanned<String>>,
    max_reworks: Option<u32>,
    overlap: Option<Spanned<String>>,
    worker: Option<String>,
    log_limit: Option<Spanned<String>>,
    worktree_root: Option<String>,
    ports: Option<u16>,
    trees: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopeSection {
    allowed: Option<Vec<Spanned<String>>>,
    denied: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestsSection {
    command: Option<Spanned<Vec<String>>>,
    timeout: Option<Spanned<String>>,
}

/// Parses a duration value, naming the key and line on failure.
pub fn duration(
    file: &Path,
    source: &str,
    key: &str,
    value: &Spanned<String>,
) -> Result<Duration, InputError> {
    parse_duration(value.get_ref()).map_err(|message| {
        InputError::new(
            file,
            format!("`{}` is not a duration: {message}", value.get_ref()),
        )
        .key(key)
        .at_offset(source, Some(value.span().start))
        .fix(r#"write e.g. "90s", "10m" or "1h 30m""#)
    })
}

/// Why a scope glob points outside the repository (it could never match a path of a change), if it does.
pub fn leaves_repository(glob: &str) -> Option<&'static str> {
    if glob.starts_with('/') {
        Some("is an absolute path: scope globs match paths inside the repository")
    } else if glob.starts_with('~') {
        Some("starts with `~`: scope globs match paths inside the repository")
    } else if glob.split(['/', '\\']).any(|part| part == "..") {
        Some("climbs out with `..`: scope globs match paths inside the repository")
    } else {
        None
    }
}

/// Checks that every glob compiles and stays inside the repository, naming the key and line of the first bad one.
pub fn check_globs(
    file: &Path,
    source: &str,
    key: &str,
    globs: &[Spanned<String>],
) -> Result<Vec<String>, InputError> {
    globs
        .iter()
        .map(|glob| {
            if let Some(why) = leaves_repository(glob.get_ref()) {
                return Err(InputError::new(
                    file,
                    format!("glob `{}` {why}", glob.get_ref()),
                )
                .key(key)
                .at_offset(source, Some(glob.span().start))
                .fix("globs are relative to the repository root, e.g. \"src/**\"; no leading `/`, `~` or `..`"));
            }
            globset::GlobBuilder::new(glob.get_ref())
                .literal_separator(true)
                .build()
                .map(|_| glob.get_ref().clone())
                .map_err(|error| {
                    InputError::new(
                        file,
                        format!("invalid glob `{}`: {}", glob.get_ref(), error.kind()),
                    )
                    .key(key)
                    .at_offset(source, Some(glob.span().start))
                    .fix("check brackets and braces; `**` matches any number of folders")
                })
        })
        .collect()
}

fn parse_file(file: &Path, source: &str) -> Result<PolicyFile, InputError> {
    toml::from_str(source).map_err(|error| InputError::from_toml(file, source, &error))
}

/// Loads the policy: `file` (if it exists) over the preset it names (default: `default`).
pub fn load(file: Option<&Path>) -> Result<Policy, InputError> {
    let user = match file {
        Some(path) if path.exists() => {
            let source = crate::input::read_text(path, "policy")?;
            Some((path.to_path_buf(), source))
        }
        Some(_) | None => None,
    };
    load_source(user)
}

/// Loads the policy from `user` (a name for messages, whose folder relative paths start from, and the text) over
/// the preset it names; `None`: the default preset, with hooks checking secrets only.
pub fn load_source(user: Option<(PathBuf, String)>) -> Result<Policy, InputError> {
    let user_parsed = match &user {
        Some((path, source)) => Some(parse_file(path, source)?),
        None => None,
    };
    let preset_name = user_parsed
        .as_ref()
        .and_then(|parsed| parsed.extends.as_ref())
        .map_or("default", |name| name.get_ref().as_str());
    let Some((_, preset_source)) = PRESETS.iter().find(|(name, _)| *name == preset_name) else {
        let (path, source) = user
            .as_ref()
            .map_or((PathBuf::new(), ""), |(p, s)| (p.clone(), s.as_str()));
        let span = user_parsed
            .as_ref()
            .and_then(|p| p.extends.as_ref())
            .map(|e| e.span().start);
        let known: Vec<&str> = PRESETS.iter().map(|(name, _)| *name).collect();
        return Err(
            InputError::new(&path, format!("unknown preset `{preset_name}`"))
                .key("extends")
                .at_offset(source, span)
                .fix(format!("use one of: {}", known.join(", "))),
        );
    };
    let preset_path = PathBuf::from(format!("<preset {preset_name}>"));
    let mut policy = resolve(
        &preset_path,
        preset_source,
        parse_file(&preset_path, preset_source)?,
        None,
    )?;
    policy.sources = vec![format!("preset {preset_name}")];
    if let (Some((path, source)), Some(parsed)) = (&user, user_parsed) {
        policy = resolve(path, source, parsed, Some(policy))?;
        policy.sources.push(path.display().to_string());
    } else {
        // No policy in the repository: the hooks judge secrets only.
        policy.hooks = HooksSettings::secrets_only();
    }
    // Machine-specific extra writable paths (a CI cache, say) that do not belong in the repository's policy.
    if let Some(extra) = std::env::var_os(WRITABLE_ENV).filter(|value| !value.is_empty()) {
        let cwd = std::env::current_dir().unwrap_or_default();
        for path in std::env::split_paths(&extra) {
            policy.sandbox.writable.push(cwd.join(path));
        }
        policy.sources.push(format!("${WRITABLE_ENV}"));
    }
    Ok(policy)
}

/// Applies one parsed file over `base` (or over nothing, for a preset).
fn resolve(
    file: &Path,
    source: &str,
    parsed: PolicyFile,
    base: Option<Policy>,
) -> Result<Policy, InputError> {
    let run = parsed.run.unwrap_or_default();
    let scope = parsed.scope.unwrap_or_default();
    let base_dir = file.parent().unwrap_or(Path::new("."));
    let jobs = resolve_jobs(file, source, run.jobs.as_ref(), base.as_ref())?;
    let (timeout, log_limit) = run_limits(file, source, &run, base.as_ref())?;
    let (overlap, trees, ports_per_task) = run_choices(file, source, &run, base.as_ref())?;
    let allowed = match &scope.allowed {
        Some(globs) => check_globs(file, source, "scope.allowed", globs)?,
        None => base.as_ref().map(|b| b.allowed.clone()).unwrap_or_default(),
    };
    let denied = match &scope.denied {
        Some(globs) => check_globs(file, source, "scope.denied", globs)?,
        None => base.as_ref().map(|b| b.denied.clone()).unwrap_or_default(),
    };
    let tests = match parsed.tests {
        Some(section) => resolve_tests(
            file,
            source,
            section,
            base.as_ref().and_then(|b| b.tests.clone()),
        )?,
        None => base.as_ref().and_then(|b| b.tests.clone()),
    };
    let mut workers = base.as_ref().map(|b| b.workers.clone()).unwrap_or_default();
    for (name, section) in &parsed.workers {
        workers.insert(name.clone(), section.resolve(name, file, source, base_dir)?);
    }
    let default_worker = run
        .worker
        .or_else(|| base.as_ref().and_then(|b| b.default_worker.clone()));
    let gate = gate::resolve(
        file,
        source,
        parsed.gate,
        parsed.checks,
        base.as_ref().map(|b| &b.gate),
        base_dir,
    )?;
    let hooks = hooks::resolve(file, source, parsed.hooks, base.as_ref().map(|b| &b.hooks))?;
    let budget = budget::resolve(
        file,
        source,
        parsed.budget,
        base.as_ref().map(|b| &b.budget),
    )?;
    let base_review = base.as_ref().and_then(|b| b.review.as_ref());
    let review = review::resolve(file, source, parsed.review, base_review)?;
    let setup = setup::resolve(
        file,
        source,
        parsed.setup,
        base.as_ref().and_then(|b| b.setup.as_ref()),
        base_dir,
    )?;
    Ok(Policy {
        sources: Vec::new(),
        overlap,
        trees,
        jobs,
        base: run
            .base
            .or_else(|| base.as_ref().map(|b| b.base.clone()))
            .unwrap_or_else(|| "HEAD".to_string()),
        timeout,
        max_reworks: run
            .max_reworks
            .or(base.as_ref().map(|b| b.max_reworks))
            .unwrap_or(3),
        default_worker,
        log_limit,
        worktree_root: run
            .worktree_root
            .map(|root| base_dir.join(root))
            .or_else(|| base.as_ref().and_then(|b| b.worktree_root.clone())),
        ports_per_task,
        allowed,
        denied,
        tests,
        sandbox: sandbox::resolve(
            file,
            source,
            parsed.sandbox,
            base.as_ref().map(|b| &b.sandbox),
            base_dir,
        )?,
        workers,
        gate,
        hooks,
        setup,
        budget,
        review,
    })
}

/// `run.timeout` and `run.log_limit`, else the base's.
fn run_limits(
    file: &Path,
    source: &str,
    run: &RunSection,
    base: Option<&Policy>,
) -> Result<(Duration, u64), InputError> {
    let missing =
        |key: &str| InputError::new(file, "the preset does not set this key").key(key.to_string());
    let timeout = match &run.timeout {
        Some(value) => duration(file, source, "run.timeout", value)?,
        None => base
            .map(|b| b.timeout)
            .ok_or_else(|| missing("run.timeout"))?,
    };
    let log_limit = match &run.log_limit {
        Some(value) => parse_size(value.get_ref()).map_err(|message| {
            InputError::new(file, message)
                .key("run.log_limit")
                .at_offset(source, Some(value.span().start))
                .fix(r#"write e.g. "8MiB""#)
        })?,
        None => base
            .map(|b| b.log_limit)
            .ok_or_else(|| missing("run.log_limit"))?,
    };
    Ok((timeout, log_limit))
}

/// `run.overlap`, `run.trees` and `run.ports`, else the base's.
fn run_choices(
    file: &Path,
    source: &str,
    run: &RunSection,
    base: Option<&Policy>,
) -> Result<(Overlap, Trees, u16), InputError> {
    let overlap = resolve_choice(
        (file, source),
        run.overlap.as_ref(),
        "run.overlap",
        &[("warn", Overlap::Warn), ("serialize", Overlap::Serialize)],
        r#"write overlap = "warn" (report overlapping tasks) or "serialize" (run them one after another)"#,
        base.map_or(Overlap::Warn, |b| b.overlap),
    )?;
    let trees = resolve_choice(
        (file, source),
        run.trees.as_ref(),
        "run.trees",
        &[
            ("auto", Trees::Auto),
            ("copy-on-write", Trees::CopyOnWrite),
            ("checkout", Trees::Checkout),
        ],
        r#"write trees = "auto" (copy-on-write where this machine can mount it, else checkouts), "copy-on-write" or "checkout""#,
        base.map_or(Trees::Auto, |b| b.trees),
    )?;
    let ports = match run.ports {
        Some(ports) if ports > 1000 => {
            return Err(
                InputError::new(file, format!("{ports} ports per task is too many"))
                    .key("run.ports")
                    .fix("lease at most 1000 ports per task (0 leases none)"),
            );
        }
        Some(ports) => ports,
        None => base.map_or(10, |b| b.ports_per_task),
    };
    Ok((overlap, trees, ports))
}

/// `run.jobs`: a count of at least 1, else the base's (`None`: the machine's cores).
fn resolve_jobs(
    file: &Path,
    source: &str,
    jobs: Option<&Spanned<i64>>,
    base: Option<&Policy>,
) -> Result<Option<usize>, InputError> {
    Ok(match jobs {
        Some(jobs) => match usize::try_from(*jobs.get_ref()) {
            Ok(value) if value > 0 => Some(value),
            Ok(_) | Err(_) => {
                return Err(InputError::new(
                    file,
                    format!("`{}` is not a job count", jobs.get_ref()),
                )
                .key("run.jobs")
                .at_offset(source, Some(jobs.span().start))
                .fix("write a whole number of at least 1, or remove the key to use all cores"));
            }
        },
        None => base.and_then(|b| b.jobs),
    })
}

/// A setting that names one of a few `choices`: the value named, else `default`; anything else is bad input naming
/// `key` and the `fix`.
fn resolve_choice<T: Copy>(
    at: (&Path, &str),
    value: Option<&Spanned<String>>,
    key: &str,
    choices: &[(&str, T)],
    fix: &str,
    default: T,
) -> Result<T, InputError> {
    let Some(name) = value else {
        return Ok(default);
    };
    choices
        .iter()
        .find(|(choice, _)| *choice == name.get_ref().as_str())
        .map(|(_, chosen)| *chosen)
        .ok_or_else(|| {
            InputError::new(at.0, format!("`{}` is not a {key} setting", name.get_ref()))
                .key(key)
                .at_offset(at.1, Some(name.span().start))
                .fix(fix)
        })
}

fn resolve_tests(
    file: &Path,
    source: &str,
    section: TestsSection,
    base: Option<TestSettings>,
) -> Result<Option<TestSettings>, InputError> {
    let argv = match section.command {
        Some(command) if command.get_ref().is_empty() => {
            return Err(InputError::new(file, "`command` must not be empty")
                .key("tests.command")
                .at_offset(source, Some(command.span().start))
                .fix(r#"write command = ["cargo", "test"], or remove [tests]"#));
        }
        Some(command) => command.into_inner(),
        None => match &base {
            Some(base) => base.argv.clone(),
            None => return Ok(None),
        },
    };
    let timeout = match &section.timeout {
        Some(value) => duration(file, source, "tests.timeout", value)?,
        None => base.map_or(Duration::from_secs(600), |b| b.timeout),
    };
    Ok(Some(TestSettings { argv, timeout }))
}

#[cfg(test)]
mod tests;
