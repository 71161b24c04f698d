//! Stage 3 in a container (`[sandbox] backend = "podman"` or `"docker"`): the attempt goes out as a portable
//! attempt (the task's tree as a bundle, its task file, the worker's order), `ccfan runner` runs it in a container
//! of the policy's image, and what comes back is received through its checks and checked out into the task's
//! worktree. From there on the attempt is like any other: recorded by ccfan here, judged by the gate, reworked,
//! salvaged and landed.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::portable::{self, Order};
use crate::model::{ExitStatus, RunId, TaskSpec};
use crate::paths::AttemptDir;
use crate::policy::Policy;
use crate::sandbox::Outcome;
use crate::sandbox::container::{self, ContainerRun};

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
}

/// Runs `task`'s attempt in a container; a not-started outcome (with the reason in its log) when it cannot. `Err`:
/// the attempt's folder could not be made (the path and why).
pub(super) fn run(
    task: &TaskSpec,
    policy: &Policy,
    context: &Where<'_>,
    cancel: &AtomicBool,
    extra: &[(String, String)],
) -> Result<Outcome, (std::path::PathBuf, std::io::Error)> {
    let log = AttemptDir::of(context.dir).log();
    let started = std::time::Instant::now();
    let not_started = |message: String| {
        let _ = std::fs::write(&log, format!("ccfan: {message}\n"));
        Ok(Outcome::not_started(message))
    };
    let Some(settings) = &policy.sandbox.container else {
        return not_started(
            "the policy runs workers in containers but names no [sandbox.container] image".into(),
        );
    };
    let Some(argv) = task.worker.kind.command() else {
        return not_started(format!(
            "{} workers do not run in containers yet: use a command worker (its program in the image), or \
             sandbox.backend = \"auto\"",
            task.worker
                .kind
                .agent()
                .map_or("agent", |(agent, _)| agent.name())
        ));
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
    };
    match steps.carry(settings, argv, extra, started) {
        Ok(run) => Ok(run),
        Err(why) => not_started(why),
    }
}

/// One container attempt's parts.
struct Steps<'a> {
    task: &'a TaskSpec,
    policy: &'a Policy,
    context: &'a Where<'a>,
    cancel: &'a AtomicBool,
    input: &'a Path,
    output: &'a Path,
}

impl Steps<'_> {
    /// Out, run, back: the container's outcome, or why the attempt could not be carried.
    fn carry(
        &self,
        settings: &crate::policy::ContainerSettings,
        argv: &[String],
        extra: &[(String, String)],
        started: std::time::Instant,
    ) -> Result<Outcome, String> {
        let (task, context) = (self.task, self.context);
        let repo = crate::git::discover(context.worktree).map_err(|e| e.to_string())?;
        let base = crate::git::head_commit(&repo)
            .map_err(|e| e.to_string())?
            .ok_or("the task's tree has no commit checked out")?;
        // The host's values of the variables the worker may see go to the engine, never into a file.
        let engine_env: Vec<(String, String)> =
            crate::sandbox::worker_env(&self.policy.sandbox, &task.worker, &[])
                .into_iter()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .filter(|(name, _)| !task.worker.env.iter().any(|(known, _)| known == name))
                .collect();
        let order = Order {
            schema: 1,
            run_id: context.run_id.to_string(),
            task_id: task.id.to_string(),
            attempt: context.attempt,
            goal: task.goal.clone(),
            worker: task.worker.name.clone(),
            base: base.clone(),
            argv: argv.to_vec(),
            env: task
                .worker
                .env
                .iter()
                .cloned()
                .chain(extra.iter().filter(|(name, _)| !host_path(name)).cloned())
                .collect(),
            pass_env: engine_env.iter().map(|(name, _)| name.clone()).collect(),
            timeout_secs: task.timeout.as_secs().max(1),
            log_limit: self.policy.log_limit,
        };
        let task_file = crate::util::read_regular(
            &AttemptDir::of(context.dir).task_file(),
            crate::util::MAX_WORKER_FILE,
        )
        .map_err(|e| format!("cannot read the task file: {e}"))?;
        portable::pack(&repo, &order, &task_file, self.input).map_err(|e| e.to_string())?;
        let ran = container::run(&ContainerRun {
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
                "/ccfan/work",
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
        })
        .map_err(|e| e.to_string())?;
        self.back(&repo, &base, ran, settings, started)
    }

    /// Takes what came back in and makes it the worktree's; the outcome as the container and runner report it.
    fn back(
        &self,
        repo: &crate::git::RepoPaths,
        base: &str,
        ran: container::ContainerOutcome,
        settings: &crate::policy::ContainerSettings,
        started: std::time::Instant,
    ) -> Result<Outcome, String> {
        let context = self.context;
        let files = AttemptDir::of(context.dir);
        let mut notes = vec![format!(
            "ran in a {} container of {}",
            self.policy.sandbox.backend.as_str(),
            settings.image
        )];
        let killed = matches!(ran.exit, ExitStatus::TimedOut | ExitStatus::Cancelled);
        let came_back = (!killed)
            .then(|| {
                let kept = format!(
                    "refs/ccfan/{}/{}/remote-{}",
                    context.run_id, self.task.id, context.attempt
                );
                portable::receive(repo, self.output, base, &kept)
            })
            .transpose();
        // The worker's log and report are the attempt's, wherever it ran.
        let _ = std::fs::copy(self.output.join(portable::LOG), files.log());
        let report = self
            .output
            .join(portable::OUTBOX)
            .join(crate::paths::FINAL_REPORT);
        if crate::util::read_regular(&report, crate::util::MAX_WORKER_FILE).is_ok() {
            let _ = std::fs::create_dir_all(files.outbox());
            let _ = std::fs::copy(&report, files.report_file());
        }
        let (exit, output_bytes, log_capped) = match came_back {
            Ok(Some(received)) => {
                if let Some(commit) = &received.manifest.commit {
                    crate::git::materialize(context.worktree, commit).map_err(|e| e.to_string())?;
                }
                notes.extend(
                    received
                        .manifest
                        .tampered
                        .iter()
                        .map(|what| format!("in the container: {what}")),
                );
                let manifest = received.manifest;
                (manifest.exit, manifest.output_bytes, manifest.log_capped)
            }
            Ok(None) => (ran.exit, 0, false),
            Err(error) => {
                notes.push(format!("what came back was refused: {error}"));
                (
                    ExitStatus::SpawnFailed {
                        message: format!("the container's attempt did not come back: {error}"),
                    },
                    0,
                    false,
                )
            }
        };
        Ok(Outcome {
            exit,
            output_bytes,
            log_capped,
            duration: started.elapsed(),
            leftovers_killed: 0,
            backend: match self.policy.sandbox.backend {
                crate::policy::SandboxBackend::Docker => "docker",
                _ => "podman",
            },
            git_protected: false,
            notes,
        })
    }
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
            | "CCFAN_BASE_SHA"
    )
}
