//! Stage 3 (run worker), agent workers: before the first attempt, ask the agent binary once for its version and
//! help, and check that every flag ccfan drives it with exists — a clear "codex 0.30 lacks `exec --json`" beats a
//! worker that dies on an unknown flag. `ccfan doctor` shows the same report. The probe runs inside the sandbox
//! like any worker: the program may come from a tasks file.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;

use super::Agent;
use crate::model::ExitStatus;
use crate::policy::SandboxSettings;
use crate::sandbox::{self, Launch, SandboxPolicy};

/// How long a `--version` or `--help` may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// What ccfan found out about an agent binary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeReport {
    /// Which agent.
    pub agent: Agent,
    /// The program as configured.
    pub program: String,
    /// Where it was found, if anywhere.
    pub path: Option<PathBuf>,
    /// Its version, when it answered.
    pub version: Option<String>,
    /// Flags ccfan needs that its help does not list.
    pub missing_flags: Vec<String>,
    /// Why it cannot be used, when it cannot.
    pub problem: Option<String>,
}

impl ProbeReport {
    /// Whether ccfan can drive it.
    pub fn usable(&self) -> bool {
        self.problem.is_none()
    }
}

/// The flags ccfan uses, and which help text (arguments after the program) must list them.
fn needs(agent: Agent) -> (&'static [&'static str], &'static [&'static str]) {
    match agent {
        Agent::Codex => (
            &["exec", "--help"],
            &["--json", "--skip-git-repo-check", "--config", "resume"],
        ),
        Agent::Claude => (
            &["--help"],
            &[
                "--print",
                "--output-format",
                "--verbose",
                "--resume",
                "--permission-mode",
            ],
        ),
    }
}

type Cache = Mutex<HashMap<(Agent, PathBuf), ProbeReport>>;

fn cache() -> &'static Cache {
    static CACHE: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();
    CACHE.get_or_init(Cache::default)
}

/// The folder an agent binary was installed in: its nearest `node_modules` ancestor (the `codex` command is a
/// script that starts a platform binary from there), else its own folder.
pub fn install_root(program: &Path) -> PathBuf {
    let real = std::fs::canonicalize(program).unwrap_or_else(|_| program.to_path_buf());
    real.ancestors()
        .find(|dir| dir.file_name().is_some_and(|name| name == "node_modules"))
        .or_else(|| real.parent())
        .map_or(real.clone(), Path::to_path_buf)
}

/// Runs `program args…` in the sandbox and returns what it printed, or why it could not.
fn capture(
    program: &Path,
    args: &[&str],
    env: &[(OsString, OsString)],
    settings: &SandboxSettings,
) -> Result<String, String> {
    let scratch = tempfile::Builder::new()
        .prefix("ccfan-probe-")
        .tempdir()
        .map_err(|error| format!("cannot make a scratch folder: {error}"))?;
    let log = scratch.path().join("probe.log");
    let mut argv = vec![program.to_string_lossy().into_owned()];
    argv.extend(args.iter().map(|arg| (*arg).to_string()));
    let cancel = AtomicBool::new(false);
    let policy = SandboxPolicy::for_probe(
        settings,
        scratch.path(),
        &install_root(program),
        PROBE_TIMEOUT,
    );
    let outcome = sandbox::run(
        Launch {
            argv: &argv,
            cwd: scratch.path(),
            env: env.to_vec(),
            log_path: &log,
            token: &format!("probe-{}", crate::util::random_hex(4)),
            cancel: &cancel,
            sandbox: &policy,
            stream: None,
        },
        |_| {},
    )
    .map_err(|error| error.to_string())?;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    match outcome.exit {
        ExitStatus::Code { code: 0 } => Ok(text),
        exit => Err(format!(
            "`{} {}` {exit}: {}",
            program.display(),
            args.join(" "),
            text.lines().last().unwrap_or("no message").trim()
        )),
    }
}

/// Probes `program` (looked up on the `PATH` of `env`) in the sandbox `settings` describe, once per binary per
/// process.
pub fn probe(
    agent: Agent,
    program: &str,
    env: &[(OsString, OsString)],
    settings: &SandboxSettings,
) -> ProbeReport {
    let mut report = ProbeReport {
        agent,
        program: program.to_string(),
        path: None,
        version: None,
        missing_flags: Vec::new(),
        problem: None,
    };
    let Some(path) = sandbox::resolve_program(program, Path::new("/"), env) else {
        report.problem = Some(format!(
            "`{program}` is not on the worker's PATH; install it (`{}`) or set `program` in the worker profile",
            agent.install_hint()
        ));
        return report;
    };
    report.path = Some(path.clone());
    let key = (agent, path.clone());
    if let Some(known) = cache()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&key)
    {
        return ProbeReport {
            program: program.to_string(),
            ..known.clone()
        };
    }
    let probe_env: Vec<(OsString, OsString)> = env
        .iter()
        .filter(|(name, _)| name == "PATH" || name == "HOME")
        .cloned()
        .collect();
    match capture(&path, &["--version"], &probe_env, settings) {
        Ok(text) => report.version = parse_version(&text),
        Err(error) => report.problem = Some(format!("it does not run: {error}")),
    }
    if report.problem.is_none() {
        let (help, flags) = needs(agent);
        match capture(&path, help, &probe_env, settings) {
            Ok(text) => {
                report.missing_flags = missing(&text, flags);
                if !report.missing_flags.is_empty() {
                    report.problem = Some(format!(
                        "{agent} {} lacks {} that ccfan drives it with (`{} {}`); upgrade it (`{}`)",
                        report.version.as_deref().unwrap_or("(unknown version)"),
                        report
                            .missing_flags
                            .iter()
                            .map(|f| format!("`{f}`"))
                            .collect::<Vec<_>>()
                            .join(", "),
                        program,
                        help.join(" "),
                        agent.install_hint()
                    ));
                }
            }
            Err(error) => report.problem = Some(format!("its help does not run: {error}")),
        }
    }
    // A binary that answered is remembered; one that failed (busy machine, timeout) is asked again next time.
    if report.problem.is_none() || !report.missing_flags.is_empty() {
        cache()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, report.clone());
    }
    report
}

/// The first word that looks like a version: `codex-cli 0.169.0` → `0.169.0`.
fn parse_version(text: &str) -> Option<String> {
    text.split_whitespace()
        .find(|word| word.chars().next().is_some_and(|c| c.is_ascii_digit()) && word.contains('.'))
        .map(|word| {
            word.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                .to_string()
        })
}

/// Flags from `flags` that `help` does not mention as a whole word.
fn missing(help: &str, flags: &[&str]) -> Vec<String> {
    flags
        .iter()
        .filter(|flag| {
            !help.match_indices(**flag).any(|(at, _)| {
                let after = help[at + flag.len()..].chars().next();
                !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            })
        })
        .map(|flag| (*flag).to_string())
        .collect()
}

/// The agent CLIs whose default program is on ccfan's `PATH` (a lookup only, nothing is run): the agents a
/// repository without a `ccfan.toml` gets built-in profiles for.
pub fn installed_agents() -> Vec<Agent> {
    let env: Vec<(OsString, OsString)> = std::env::var_os("PATH")
        .map(|path| vec![(OsString::from("PATH"), path)])
        .unwrap_or_default();
    Agent::ALL
        .into_iter()
        .filter(|agent| {
            sandbox::resolve_program(agent.default_program(), Path::new("/"), &env).is_some()
        })
        .collect()
}

/// One worker kind and whether it can run here (`ccfan doctor`, MCP `health`).
#[derive(Debug, Clone, Serialize)]
pub struct WorkerKindReport {
    /// `command`, `codex` or `claude`.
    pub kind: &'static str,
    /// Profiles of the policy that use this program.
    pub profiles: Vec<String>,
    /// For agents: the probe of the program.
    #[serde(flatten)]
    pub probe: Option<ProbeReport>,
}

/// Every worker kind: `command`, and each agent program the policy's profiles name (the agent's default program
/// when no profile names one), each listed once and probed with ccfan's own `PATH`.
pub fn worker_kinds(policy: &crate::policy::Policy) -> Vec<WorkerKindReport> {
    let env: Vec<(OsString, OsString)> = ["PATH", "HOME"]
        .into_iter()
        .filter_map(|name| std::env::var_os(name).map(|value| (OsString::from(name), value)))
        .collect();
    let mut reports = vec![WorkerKindReport {
        kind: "command",
        profiles: policy
            .workers
            .values()
            .filter(|profile| profile.kind.agent().is_none())
            .map(|profile| profile.name.clone())
            .collect(),
        probe: None,
    }];
    for agent in Agent::ALL {
        // Each program the profiles of this agent use, once; the default program only when no profile names one.
        let mut programs: Vec<String> = Vec::new();
        for profile in policy.workers.values() {
            if let Some((kind, config)) = profile.kind.agent()
                && kind == agent
                && !programs.contains(&config.program)
            {
                programs.push(config.program.clone());
            }
        }
        if programs.is_empty() {
            programs.push(agent.default_program().to_string());
        }
        for program in programs {
            reports.push(WorkerKindReport {
                kind: agent.name(),
                profiles: policy
                    .workers
                    .values()
                    .filter(|p| {
                        p.kind
                            .agent()
                            .is_some_and(|(k, c)| k == agent && c.program == program)
                    })
                    .map(|p| p.name.clone())
                    .collect(),
                probe: Some(probe(agent, &program, &env, &policy.sandbox)),
            });
        }
    }
    reports
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_flags_are_read_from_help() {
        assert_eq!(
            parse_version("codex-cli 0.169.0\n").as_deref(),
            Some("0.169.0")
        );
        assert_eq!(
            parse_version("2.1.330 (Claude Code)").as_deref(),
            Some("2.1.330")
        );
        assert_eq!(parse_version("no version here"), None);
        let help = "  --json  Print events\n  --jsonl-out x\n  --verbose-ish\n";
        assert_eq!(
            missing(help, &["--json", "--verbose", "--print"]),
            ["--verbose", "--print"]
        );
    }

    #[test]
    fn a_missing_binary_says_how_to_install_it() {
        let env = vec![(OsString::from("PATH"), OsString::from("/nonexistent"))];
        let settings = crate::policy::load(None).unwrap().sandbox;
        let report = probe(Agent::Codex, "codex", &env, &settings);
        assert!(!report.usable());
        assert!(
            report
                .problem
                .unwrap()
                .contains("npm install -g @openai/codex"),
            "install hint"
        );
    }
}
