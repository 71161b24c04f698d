//! Stage 3, run: start the task's worker in its worktree through the sandbox door, with the `CCFAN_*` variables
//! and the task file, its output in the attempt's log (never on ccfan's stdout), a timeout and a whole-tree kill.
//! An agent worker (Codex, Claude Code) also gets its prompt, a private home, and its event stream read live
//! into progress and usage.

use crate::paths::AttemptDir;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

mod agent_stream;
mod container;
mod context;

use crate::agents::tally::AgentSummary;
use crate::agents::{self, Agent, probe};
use crate::model::{AgentConfig, AttemptMode, TaskFileDoc, TaskSpec};
use crate::policy::Policy;
use crate::sandbox::{self, EventStream, Launch, Outcome, SandboxPolicy, Tree};
use agent_stream::{Reader, finish_agent};
use container::in_container;
pub(crate) use container::tree_seen;
pub(crate) use context::write;
pub use context::{AttemptContext, RunWorkerError, WorkerRun};

/// Writes the task file and runs the worker to its end. `on_progress` sees the agent's summary as it changes.
pub fn run_worker(
    task: &TaskSpec,
    policy: &Policy,
    context: &AttemptContext<'_>,
    cancel: &AtomicBool,
    on_spawn: impl FnMut(u32),
    on_progress: &mut dyn FnMut(&AgentSummary),
) -> Result<WorkerRun, RunWorkerError> {
    let (task_file, outbox) = write_task_file(task, context)?;
    let report_file = AttemptDir::of(context.dir).report_file();
    let lossy = |path: &Path| path.to_string_lossy().into_owned();
    let mut extra = vec![
        ("CCFAN_RUN_ID".to_string(), context.run_id.to_string()),
        ("CCFAN_TASK_ID".to_string(), task.id.to_string()),
        ("CCFAN_ATTEMPT".to_string(), context.attempt.to_string()),
        ("CCFAN_WORKTREE".to_string(), lossy(context.worktree)),
        ("CCFAN_BASE_SHA".to_string(), context.base_sha.to_string()),
        ("CCFAN_TASK_FILE".to_string(), lossy(&task_file)),
        ("CCFAN_REPORT_FILE".to_string(), lossy(&report_file)),
    ];
    extra.extend(context.resources.iter().cloned());
    extra.extend(mode_env(context.plan));
    if let Some(candidate) = &task.candidate {
        extra.push(("CCFAN_CANDIDATE".to_string(), candidate.n.to_string()));
        extra.push(("CCFAN_CANDIDATES".to_string(), candidate.total.to_string()));
    }
    if let Some(ran) = in_container(task, policy, context, cancel, &extra, on_progress) {
        return ran;
    }
    let mut env = sandbox::worker_env(&policy.sandbox, &task.worker, &extra);
    let mut sandbox_policy = SandboxPolicy::for_worker(
        &policy.sandbox,
        &task.worker,
        Tree {
            worktree: context.worktree,
            common_dir: context.common_dir,
            checkout: context.checkout,
            outbox: Some(&outbox),
        },
        task.timeout,
        policy.log_limit,
    );
    let log = AttemptDir::of(context.dir).log();
    if matches!(context.plan, AttemptMode::Planning | AttemptMode::Review(_)) {
        // A planning worker or a reviewer reads the tree and changes nothing: ccfan's sandbox makes it read-only.
        sandbox_policy.read_only_tree(context.worktree);
        if let Some(why) = not_read_only(policy, &sandbox_policy, context.worktree) {
            return not_started(&log, why);
        }
    }
    let mut reader = None;
    let argv = match task.worker.kind.agent() {
        None => task.worker.kind.command().unwrap_or_default().to_vec(),
        Some((agent, config)) => {
            let setup = Setup {
                env: &mut env,
                sandbox: &mut sandbox_policy,
                reader: &mut reader,
            };
            match prepare_agent(agent, config, task, policy, context, setup, on_progress)? {
                Ok(argv) => argv,
                Err(message) => return not_started(&log, message),
            }
        }
    };
    let events = AttemptDir::of(context.dir).events();
    let outcome = sandbox::run(
        Launch {
            argv: &argv,
            cwd: context.worktree,
            env,
            log_path: &log,
            token: context.token,
            cancel,
            sandbox: &sandbox_policy,
            stream: reader.as_mut().map(|reader| EventStream {
                path: &events,
                handler: reader,
            }),
        },
        on_spawn,
    )?;
    let Some(reader) = reader else {
        return Ok(WorkerRun {
            outcome,
            agent: None,
        });
    };
    let summary = finish_agent(task, context, reader, None)?;
    Ok(WorkerRun {
        outcome,
        agent: Some(summary),
    })
}

/// What a planning worker or a reviewer is told in its environment.
fn mode_env(mode: AttemptMode<'_>) -> Vec<(String, String)> {
    match mode {
        AttemptMode::Planning => vec![("CCFAN_PLAN".to_string(), "1".to_string())],
        AttemptMode::Review(brief) => vec![
            ("CCFAN_REVIEW".to_string(), "1".to_string()),
            (
                "CCFAN_REVIEW_DIFF".to_string(),
                brief.diff_file.to_string_lossy().into_owned(),
            ),
        ],
        AttemptMode::Work | AttemptMode::Approved { .. } => Vec::new(),
    }
}

/// Writes the task file the worker reads and makes its outbox; returns both paths.
pub(super) fn write_task_file(
    task: &TaskSpec,
    context: &AttemptContext<'_>,
) -> Result<(PathBuf, PathBuf), RunWorkerError> {
    let task_file = AttemptDir::of(context.dir).task_file();
    let doc = TaskFileDoc {
        schema: 1,
        run_id: context.run_id,
        task_id: &task.id,
        attempt: context.attempt,
        goal: &task.goal,
        allowed: &task.allowed,
        denied: &task.denied,
        constraints: &task.constraints,
        acceptance: &task.acceptance,
        rework: context
            .rework
            .iter()
            .filter_map(|finding| serde_json::to_value(finding).ok())
            .collect(),
        after: context.handoffs,
        mode: match context.plan {
            AttemptMode::Work => None,
            AttemptMode::Planning => Some("plan"),
            AttemptMode::Approved { .. } => Some("execute"),
            AttemptMode::Review(_) => Some("review"),
        },
        plan: match context.plan {
            AttemptMode::Approved { plan, .. } => Some(plan),
            AttemptMode::Work | AttemptMode::Planning | AttemptMode::Review(_) => None,
        },
        plan_note: match context.plan {
            AttemptMode::Approved { note, .. } => note,
            AttemptMode::Work | AttemptMode::Planning | AttemptMode::Review(_) => None,
        },
        review: match context.plan {
            AttemptMode::Review(brief) => Some(brief),
            AttemptMode::Work | AttemptMode::Planning | AttemptMode::Approved { .. } => None,
        },
    };
    let json = serde_json::to_vec_pretty(&doc).unwrap_or_default();
    write(&task_file, &json)?;
    let outbox = AttemptDir::of(context.dir).outbox();
    std::fs::create_dir_all(&outbox).map_err(|source| RunWorkerError::TaskFile {
        path: outbox.clone(),
        source,
    })?;
    Ok((task_file, outbox))
}

/// What preparing an agent worker changes: its environment, its sandbox, and the reader of its stream.
struct Setup<'s, 'a, 'p> {
    env: &'s mut Vec<(OsString, OsString)>,
    sandbox: &'s mut SandboxPolicy,
    reader: &'s mut Option<Reader<'a, 'p>>,
}

/// Gets an agent worker ready: the sandbox check, the binary probe, the private home, the prompt. Returns its
/// command line, or (inner `Err`) why it must not start.
fn prepare_agent<'a, 'p>(
    agent: Agent,
    config: &AgentConfig,
    task: &TaskSpec,
    policy: &Policy,
    context: &AttemptContext<'a>,
    setup: Setup<'_, 'a, 'p>,
    on_progress: &'p mut dyn FnMut(&AgentSummary),
) -> Result<Result<Vec<String>, String>, RunWorkerError> {
    let Setup {
        env,
        sandbox: sandbox_policy,
        reader,
    } = setup;
    // ccfan turns the agents' own sandboxes and permission prompts off: only its own sandbox may stand in.
    if policy.sandbox.backend == crate::policy::SandboxBackend::None {
        return Ok(Err(format!(
            "{agent} workers need ccfan's sandbox (ccfan turns the agent's own sandbox off), but the policy says \
             sandbox.backend = \"none\"; set it to \"auto\""
        )));
    }
    // The binary must have every flag ccfan uses (probed inside the sandbox).
    let probed = probe::probe(agent, &config.program, env, &policy.sandbox);
    let (Some(program), None) = (&probed.path, &probed.problem) else {
        return Ok(Err(probed
            .problem
            .unwrap_or_else(|| format!("{agent}: not found"))));
    };
    let (variable, home) =
        agents::home::prepare(agent, context.agent_home, env).map_err(|source| {
            RunWorkerError::TaskFile {
                path: context.agent_home.to_path_buf(),
                source,
            }
        })?;
    set_env(env, variable, home.as_os_str());
    for (name, value) in agents::fixed_env(agent) {
        set_env(env, name, value.as_ref());
    }
    sandbox_policy
        .writable
        .push(crate::paths::real_path(context.agent_home));
    // The agent's installation stays visible (read-only) even where the sandbox hides a folder (an npm prefix
    // under /tmp): the whole `node_modules` tree, since `codex` is a script that starts a platform binary there.
    sandbox_policy.read_only.push(probe::install_root(program));
    let text = context.prompt(task);
    let mut resolved = AgentConfig {
        program: program.to_string_lossy().into_owned(),
        ..config.clone()
    };
    if agent == Agent::Claude && matches!(context.plan, AttemptMode::Review(_)) {
        // The tree under review is the author's: its project settings (hooks, permissions) never run in its reviewer.
        resolved
            .args
            .extend(["--setting-sources".to_string(), "user".to_string()]);
    }
    *reader = Some(Reader::new(
        agent,
        config,
        context,
        context.worktree,
        on_progress,
    ));
    Ok(Ok(agent.argv(
        &resolved,
        &text,
        context.resume,
        context.plan == AttemptMode::Planning,
    )))
}

/// Why a planning worker's or a reviewer's tree would not be read-only, if it would not: no sandbox, or a writable
/// root (the policy's or the profile's) that holds it.
fn not_read_only(policy: &Policy, sandbox: &SandboxPolicy, worktree: &Path) -> Option<String> {
    if policy.sandbox.backend == crate::policy::SandboxBackend::None {
        return Some(
            "plan mode needs a sandbox to keep the planning worker's (or the reviewer's) tree read-only, and the \
             policy says sandbox.backend = \"none\""
                .to_string(),
        );
    }
    let tree = crate::paths::real_path(worktree);
    sandbox
        .writable
        .iter()
        .find(|root| tree.starts_with(root))
        .map(|root| {
            format!(
                "cannot keep the tree read-only (plan mode, review): the writable root {} holds it \
                 (sandbox.writable or the profile's writable)",
                root.display()
            )
        })
}

/// A worker ccfan refused to start, with the reason in its log.
fn not_started(log: &Path, message: String) -> Result<WorkerRun, RunWorkerError> {
    let _ = std::fs::write(log, format!("ccfan: {message}\n"));
    Ok(WorkerRun {
        outcome: Outcome::not_started(message),
        agent: None,
    })
}

fn set_env(env: &mut Vec<(OsString, OsString)>, name: &str, value: &std::ffi::OsStr) {
    env.retain(|(key, _)| key != name);
    env.push((name.into(), value.to_os_string()));
}

/// Reads an attempt's stored agent summary, if its worker was an agent.
pub fn read_agent(dir: &Path) -> Option<AgentSummary> {
    let bytes =
        crate::util::read_regular(&AttemptDir::of(dir).agent(), crate::util::MAX_WORKER_FILE)
            .ok()?;
    serde_json::from_slice(&bytes).ok()
}
