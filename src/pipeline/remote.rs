//! Stage 3 in a container (`[sandbox] backend = "podman"` or `"docker"`): the attempt goes out as a portable
//! attempt (the task's tree as a bundle, its task file, the worker's order), `ccfan runner` runs it in a container
//! of the policy's image, and what comes back is received through its checks and checked out into the task's
//! worktree. From there on the attempt is like any other: recorded by ccfan here, judged by the gate, reworked,
//! salvaged and landed.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::portable::{self, Order};
use crate::agents::tally::AgentSummary;
use crate::model::{ExitStatus, RunId, TaskSpec};
use crate::paths::AttemptDir;
use crate::policy::Policy;
use crate::sandbox::Outcome;
use crate::sandbox::container::{self, ContainerRun};

/// Where the runner works in the container or pod (the task's tree is `tree` in it).
pub(super) const CONTAINER_WORK: &str = "/ccfan/work";

/// What runs in the container: a command worker's command line, or an agent made ready here.
#[derive(Debug, Clone, Copy)]
pub(super) enum Worker<'a> {
    /// A command worker's program and arguments.
    Command(&'a [String]),
    /// An agent worker.
    Agent(&'a super::portable_agent::AgentPlan),
}

/// Time the container gets past the worker's own limit (the runner enforces that one; this is for the copies).
const GRACE: Duration = Duration::from_secs(120);

/// Where an attempt is, on this machine.
#[derive(Debug, Clone, Copy)]
pub(super) struct Where<'a> {
    /// Run id.
    pub run_id: &'a RunId,
    /// Attempt number.
    pub attempt: u32,
    /// The task's worktree (its files become the attempt's once it came back).
    pub worktree: &'a Path,
    /// The attempt's folder.
    pub dir: &'a Path,
    /// The attempt's process token (the container's label).
    pub token: &'a str,
    /// The secret rules: what the container printed is redacted before it reaches a message.
    pub rules: &'a crate::secrets::RulePack,
}

/// How an attempt in a container ended, with the runner's summary of an agent's stream when one came back.
pub(super) struct Ran {
    /// The attempt's outcome.
    pub outcome: Outcome,
    /// The runner's summary of the agent's whole stream (not redacted yet).
    pub agent: Option<crate::agents::tally::AgentSummary>,
}

/// Runs `task`'s attempt in a container; a not-started outcome (with the reason in its log) when it cannot. `Err`:
/// the attempt's folder could not be made (the path and why).
pub(super) fn run(
    task: &TaskSpec,
    policy: &Policy,
    context: &Where<'_>,
    cancel: &AtomicBool,
    extra: &[(String, String)],
    worker: &Worker<'_>,
) -> Result<Ran, (std::path::PathBuf, std::io::Error)> {
    let log = AttemptDir::of(context.dir).log();
    let started = std::time::Instant::now();
    let not_started = |message: String| {
        let message = context.rules.redact_text(&message);
        // Appended: what the worker printed live, before the attempt failed to come back, stays.
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .and_then(|mut file| {
                std::io::Write::write_all(&mut file, format!("ccfan: {message}\n").as_bytes())
            });
        if let Err(error) = appended {
            tracing::warn!("cannot write {}: {error}", log.display());
        }
        Ok(Ran {
            outcome: Outcome::not_started(message),
            agent: None,
        })
    };
    let Some(settings) = &policy.sandbox.container else {
        return not_started(
            "the policy runs workers in containers but names no [sandbox.container] image".into(),
        );
    };
    let remote = context.dir.join("remote");
    let (input, output, _) = portable::folders(&remote);
    if remote.exists() {
        std::fs::remove_dir_all(&remote).map_err(|source| (remote.clone(), source))?;
    }
    std::fs::create_dir_all(&output).map_err(|source| (output.clone(), source))?;
    let steps = Steps {
        task,
        policy,
        context,
        cancel,
        input: &input,
        output: &output,
        worker,
    };
    let carried = steps.carry(settings, extra, started);
    // Nothing of the container's is kept, whatever happened: what mattered is in the worktree, the log and the
    // report now (its files may hold what the worker printed, unscrubbed).
    let _ = std::fs::remove_dir_all(&remote);
    match carried {
        Ok((outcome, agent)) => Ok(Ran {
            outcome: redacted(outcome, context.rules),
            agent,
        }),
        Err(why) => not_started(why),
    }
}

/// `outcome` with what the container or the cluster said (its notes, its failure) redacted of secrets.
fn redacted(mut outcome: Outcome, rules: &crate::secrets::RulePack) -> Outcome {
    outcome.notes = outcome
        .notes
        .iter()
        .map(|note| rules.redact_text(note))
        .collect();
    outcome.exit = match outcome.exit {
        ExitStatus::SpawnFailed { message } => ExitStatus::SpawnFailed {
            message: rules.redact_text(&message),
        },
        ExitStatus::Lost { message } => ExitStatus::Lost {
            message: rules.redact_text(&message),
        },
        ExitStatus::OverLimit { limit } => ExitStatus::OverLimit {
            limit: rules.redact_text(&limit),
        },
        other => other,
    };
    outcome
}

/// One container attempt's parts.
struct Steps<'a> {
    task: &'a TaskSpec,
    policy: &'a Policy,
    context: &'a Where<'a>,
    cancel: &'a AtomicBool,
    input: &'a Path,
    output: &'a Path,
    worker: &'a Worker<'a>,
}

impl Steps<'_> {
    /// Out, run, back: the container's outcome, or why the attempt could not be carried.
    fn carry(
        &self,
        settings: &crate::policy::ContainerSettings,
        extra: &[(String, String)],
        started: std::time::Instant,
    ) -> Result<(Outcome, Option<AgentSummary>), String> {
        let (task, context) = (self.task, self.context);
        let repo = crate::git::discover(context.worktree).map_err(|e| e.to_string())?;
        let base = crate::git::head_commit(&repo)
            .map_err(|e| e.to_string())?
            .ok_or("the task's tree has no commit checked out")?;
        let (order, engine_env) = self.order(&base, extra);
        let task_file = crate::util::read_regular(
            &AttemptDir::of(context.dir).task_file(),
            crate::util::MAX_WORKER_FILE,
        )
        .map_err(|e| format!("cannot read the task file: {e}"))?;
        portable::pack(&repo, &order, &task_file, self.input).map_err(|e| e.to_string())?;
        std::fs::write(self.input.join(portable::RULES), context.rules.source())
            .map_err(|e| format!("cannot write the secret rules: {e}"))?;
        if let Worker::Agent(plan) = self.worker {
            super::portable_agent::pack_home(&plan.home, self.input)?;
        }
        let attempt_log = AttemptDir::of(context.dir).log();
        let attempt_events = AttemptDir::of(context.dir).events();
        let container_run = ContainerRun {
            backend: self.policy.sandbox.backend,
            settings,
            input: self.input,
            output: self.output,
            argv: [
                "ccfan",
                "runner",
                "--input",
                "/ccfan/in",
                "--output",
                "/ccfan/out",
                "--work",
                CONTAINER_WORK,
                "--echo",
            ]
            .map(String::from)
            .to_vec(),
            env: engine_env,
            network: task.worker.network.unwrap_or(self.policy.sandbox.network),
            limits: self.policy.sandbox.limits,
            timeout: task.timeout + GRACE,
            cancel: self.cancel,
            labels: vec![
                (
                    container::TOKEN_LABEL.to_string(),
                    context.token.to_string(),
                ),
                ("io.ccfan.run".to_string(), context.run_id.to_string()),
                ("io.ccfan.task".to_string(), task.id.to_string()),
                ("io.ccfan.attempt".to_string(), context.attempt.to_string()),
            ],
            log: &context.dir.join("remote/container.log"),
            // The container's or pod's log is followed while it runs (the runner echoes the worker's output there,
            // and an agent's event stream).
            live: Some(crate::sandbox::live::Live {
                log: &attempt_log,
                events: match self.worker {
                    Worker::Agent(_) => Some(&attempt_events),
                    Worker::Command(_) => None,
                },
                cap: self.policy.log_limit,
            }),
        };
        let ran = match self.policy.sandbox.backend {
            crate::policy::SandboxBackend::Kubernetes => {
                match crate::sandbox::kubernetes::run(
                    &container_run,
                    &self.policy.sandbox.kubernetes,
                ) {
                    Ok(ran) => ran,
                    // The attempt ran, but how it ended is not known: interrupted, with what came back.
                    Err(crate::sandbox::kubernetes::KubeError::Lost(message)) => {
                        container::ContainerOutcome {
                            exit: ExitStatus::Lost { message },
                            duration: started.elapsed(),
                        }
                    }
                    Err(error) => return Err(error.to_string()),
                }
            }
            _ => container::run(&container_run).map_err(|e| e.to_string())?,
        };
        self.back(&repo, &base, ran, settings, started)
    }

    /// The worker's order, and the host's values of the variables it may see: those go to the engine, never into
    /// a file.
    fn order(&self, base: &str, extra: &[(String, String)]) -> (Order, Vec<(String, String)>) {
        let (task, context) = (self.task, self.context);
        let (argv, agent_env, agent) = match self.worker {
            Worker::Command(argv) => (argv.to_vec(), Vec::new(), None),
            Worker::Agent(plan) => (plan.argv.clone(), plan.env.clone(), Some(&plan.order)),
        };
        let engine_env: Vec<(String, String)> =
            crate::sandbox::worker_env(&self.policy.sandbox, &task.worker, &[])
                .into_iter()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .filter(|(name, _)| !task.worker.env.iter().any(|(known, _)| known == name))
                // This machine's paths and identity mean nothing there: the image and the runner set their own.
                .filter(|(name, _)| {
                    !matches!(
                        name.as_str(),
                        "PATH" | "HOME" | "SHELL" | "TMPDIR" | "USER" | "LOGNAME" | "PWD"
                    ) && agent.is_none_or(|agent| *name != agent.home_variable)
                })
                .collect();
        let order = Order {
            schema: 1,
            run_id: context.run_id.to_string(),
            task_id: task.id.to_string(),
            attempt: context.attempt,
            goal: task.goal.clone(),
            worker: task.worker.name.clone(),
            base: base.to_string(),
            argv,
            env: task
                .worker
                .env
                .iter()
                .cloned()
                .chain(extra.iter().filter(|(name, _)| !host_path(name)).cloned())
                .chain(agent_env)
                .collect(),
            agent: agent.cloned(),
            pass_env: engine_env.iter().map(|(name, _)| name.clone()).collect(),
            timeout_secs: task.timeout.as_secs().max(1),
            log_limit: self.policy.log_limit,
        };
        (order, engine_env)
    }

    /// Takes what came back in and makes it the worktree's; the outcome as the container and runner report it.
    fn back(
        &self,
        repo: &crate::git::RepoPaths,
        base: &str,
        ran: container::ContainerOutcome,
        settings: &crate::policy::ContainerSettings,
        started: std::time::Instant,
    ) -> Result<(Outcome, Option<AgentSummary>), String> {
        let context = self.context;
        let mut agent = None;
        let mut notes = vec![format!(
            "ran in a {} container of {}",
            self.policy.sandbox.backend.as_str(),
            settings.image
        )];
        let (exit, output_bytes, log_capped) = match ran.exit {
            ExitStatus::TimedOut | ExitStatus::Cancelled | ExitStatus::Lost { .. } => {
                (ran.exit, 0, false)
            }
            // The runner reports the worker's end in its manifest; its own failure is the attempt's.
            ExitStatus::Code { code: 0 } => match self.received(repo, base) {
                Ok((manifest, more, summary)) => {
                    agent = summary;
                    notes.extend(
                        manifest
                            .tampered
                            .iter()
                            .map(|what| format!("in the container: {what}")),
                    );
                    notes.extend(more);
                    write_tampered(context.dir, &manifest.tampered);
                    (
                        reported_exit(manifest.exit),
                        manifest.output_bytes,
                        manifest.log_capped,
                    )
                }
                Err(error) => {
                    notes.push(format!("what came back was refused: {error}"));
                    (
                        spawn_failed(format!(
                            "the container's attempt did not come back: {error}"
                        )),
                        0,
                        false,
                    )
                }
            },
            other => (
                spawn_failed(format!(
                    "the runner in the container ended with {other}: {}",
                    tail(&context.dir.join("remote/container.log"))
                )),
                0,
                false,
            ),
        };
        let outcome = Outcome {
            exit,
            output_bytes,
            log_capped,
            duration: started.elapsed(),
            leftovers_killed: 0,
            backend: self.policy.sandbox.backend.as_str(),
            git_protected: false,
            notes,
        };
        Ok((outcome, agent))
    }

    /// Takes the attempt back: received through its checks, its change checked out into the worktree (put back to
    /// the base if that fails half-way), its log and report copied as the attempt's, and an agent's stream and home
    /// taken back. The manifest, and notes on what could not be taken back.
    fn received(
        &self,
        repo: &crate::git::RepoPaths,
        base: &str,
    ) -> Result<(portable::Manifest, Vec<String>, Option<AgentSummary>), String> {
        let context = self.context;
        let mut notes = Vec::new();
        let mut summary = None;
        let kept = format!(
            "refs/ccfan/{}/{}/remote-{}",
            context.run_id, self.task.id, context.attempt
        );
        let received =
            portable::receive(repo, self.output, base, &kept).map_err(|e| e.to_string())?;
        if let Some(commit) = &received.manifest.commit
            && let Err(error) = crate::git::materialize(context.worktree, commit)
        {
            let _ = super::tree::reset(context.worktree, base);
            return Err(format!("cannot check the change out: {error}"));
        }
        let files = AttemptDir::of(context.dir);
        copy_capped(
            &self.output.join(portable::LOG),
            &files.log(),
            self.policy.log_limit,
        );
        let report = self
            .output
            .join(portable::OUTBOX)
            .join(crate::paths::FINAL_REPORT);
        if report.is_file() {
            let _ = std::fs::create_dir_all(files.outbox());
            copy_capped(&report, &files.report_file(), crate::util::MAX_WORKER_FILE);
        }
        if let Worker::Agent(plan) = self.worker {
            summary = super::portable_agent::summary_back(self.output, &plan.order);
            copy_capped(
                &self.output.join(super::portable_agent::EVENTS),
                &files.events(),
                self.policy.log_limit,
            );
            // The change is whole without it: a home that cannot be taken back only means a rework starts anew.
            if let Err(why) =
                super::portable_agent::bring_home(plan.order.agent, self.output, &plan.home)
            {
                notes.push(why);
            }
        }
        Ok((received.manifest, notes, summary))
    }
}

fn spawn_failed(message: String) -> ExitStatus {
    ExitStatus::SpawnFailed { message }
}

/// How the worker ended, as the runner reports it: only the ends a worker can have (a runner cannot claim the
/// attempt was cancelled or never started).
fn reported_exit(exit: ExitStatus) -> ExitStatus {
    match exit {
        ExitStatus::Code { .. }
        | ExitStatus::Signal { .. }
        | ExitStatus::TimedOut
        | ExitStatus::OverLimit { .. } => exit,
        other => ExitStatus::Code {
            code: if other == ExitStatus::Cancelled {
                130
            } else {
                127
            },
        },
    }
}

/// Copies at most `max` bytes of the regular file `from` to a new `to` (never through a link).
fn copy_capped(from: &Path, to: &Path, max: u64) {
    if let Ok(bytes) = crate::util::read_regular(from, max) {
        let _ = std::fs::remove_file(to);
        let _ = std::fs::write(to, bytes);
    }
}

/// The last lines of the container's own output, for a runner that failed.
fn tail(log: &Path) -> String {
    let bytes = crate::util::read_regular_tail(log, 2048).unwrap_or_default();
    let text: String = String::from_utf8_lossy(&bytes)
        .chars()
        .filter(|c| !c.is_control() || *c == '\n')
        .collect();
    let text = text.trim();
    if text.is_empty() {
        "it printed nothing".to_string()
    } else {
        text.replace('\n', " / ")
    }
}

/// Where the runner's report of what the worker tampered with is kept for the gate (the attempt's folder).
fn tampered_file(dir: &Path) -> std::path::PathBuf {
    dir.join("remote-tampered.json")
}

fn write_tampered(dir: &Path, tampered: &[String]) {
    if !tampered.is_empty() {
        let _ = std::fs::write(
            tampered_file(dir),
            serde_json::to_vec(tampered).unwrap_or_default(),
        );
    }
}

/// What the runner of the attempt in `dir` reported the worker tampered with in its container (git state it
/// changed): the gate judges it as it does the same thing here.
pub(super) fn tampered(dir: &Path) -> Vec<String> {
    crate::util::read_regular(&tampered_file(dir), 64 * 1024)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Vec<String>>(&bytes).ok())
        .unwrap_or_default()
        .into_iter()
        .map(|what| format!("in its container: {what}"))
        .collect()
}

/// Variables whose values are paths on this machine, which mean nothing in the container (the runner sets its own).
fn host_path(name: &str) -> bool {
    matches!(
        name,
        "CCFAN_WORKTREE"
            | "CCFAN_TASK_FILE"
            | "CCFAN_REPORT_FILE"
            | "CCFAN_RUN_ID"
            | "CCFAN_TASK_ID"
            | "CCFAN_ATTEMPT"
    )
}
