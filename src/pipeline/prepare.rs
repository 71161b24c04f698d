//! Stage 1, around the plan: the run request resolved (policy, plan, rule pack, base, jobs, target branch, the
//! worktree folder) and checked before anything is made; the run registered with its tasks; and the warnings a
//! person should read before workers start (sandbox fallback, globs that match nothing, overlapping tasks).

use std::path::{Path, PathBuf};

use super::{PipelineError, RunRequest, plan};
use crate::events::{Event, EventSink};
use crate::git::{self, GitError, RepoPaths};
use crate::input::InputError;
use crate::model::{CommitId, RunId};
use crate::paths;
use crate::policy::{self, Policy};
use crate::sandbox;
use crate::secrets::RulePack;
use crate::store::{NewRun, NewTask, Store, StoreError};
use crate::tasks_file;

/// A run request with every input loaded and every default applied.
pub struct Resolved {
    /// The policy.
    pub policy: Policy,
    /// The planned tasks.
    pub plan: plan::Plan,
    /// The compiled secret rules.
    pub rules: RulePack,
    /// The base as given (`HEAD`, a branch, …).
    pub base_rev: String,
    /// The base commit.
    pub base_sha: CommitId,
    /// Tasks carried at once.
    pub jobs: usize,
    /// The branch accepted tasks land on.
    pub target_branch: Option<String>,
    /// The tasks file, canonical.
    pub tasks_file: PathBuf,
    /// The folder this repository's worktrees go in.
    pub worktree_folder: PathBuf,
    /// The ignored files copied into every task tree (`.worktreeinclude`).
    pub includes: super::include::Includes,
    /// How task trees are made.
    pub trees: super::tree::Mode,
}

/// The run as stored: its id, and each task's branch and worktree (in plan order).
pub struct Registered {
    /// The run id.
    pub run_id: RunId,
    /// Task branches.
    pub branches: Vec<String>,
    /// Task worktrees.
    pub worktrees: Vec<PathBuf>,
}

/// Loads and checks everything a run needs, touching no state.
pub fn resolve(request: &RunRequest) -> Result<Resolved, PipelineError> {
    let (policy, plan, rules) = load_plan(request)?;
    let base_rev = request.base.clone().unwrap_or_else(|| policy.base.clone());
    let base_sha = git::resolve_commit(&request.repo, &base_rev).map_err(|error| match error {
        GitError::BadRevision { rev, .. } => PipelineError::Input(match &request.base {
            Some(_) => InputError::new(
                Path::new("<command line>"),
                format!("`{rev}` does not name a commit"),
            )
            .key("--base")
            .fix("pass a branch, tag or commit that exists, e.g. --base HEAD"),
            None => InputError::new(
                &request
                    .policy_file
                    .clone()
                    .unwrap_or_else(|| request.repo.workdir.join(policy::POLICY_FILE)),
                format!("`{rev}` does not name a commit"),
            )
            .key("run.base")
            .fix("set run.base to a branch, tag or commit that exists, or pass --base"),
        }),
        other => other.into(),
    })?;
    let jobs = request
        .jobs
        .or(policy.jobs)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from))
        .max(1);
    let target_branch = match &request.into {
        Some(branch) => Some(existing_branch(&request.repo, branch)?),
        None => git::current_branch(&request.repo)?,
    };
    let tasks_file = request
        .tasks_file
        .canonicalize()
        .unwrap_or_else(|_| request.tasks_file.clone());
    let worktree_folder = paths::worktree_base(&request.repo, policy.worktree_root.as_deref());
    if worktree_folder.starts_with(&request.repo.workdir) {
        return Err(InputError::new(
            &request.repo.workdir.join(policy::POLICY_FILE),
            format!(
                "worktrees would be made inside the repository's working tree ({})",
                worktree_folder.display()
            ),
        )
        .key("run.worktree_root")
        .fix("point run.worktree_root (or CCFAN_WORKTREE_ROOT) at a folder outside the repository, e.g. \"../worktrees\"")
        .into());
    }
    let includes = super::include::Includes::load(&request.repo)?;
    let trees = super::tree::select(&request.repo, &policy, &worktree_folder)?;
    Ok(Resolved {
        trees,
        policy,
        plan,
        rules,
        base_rev,
        base_sha,
        jobs,
        target_branch,
        tasks_file,
        worktree_folder,
        includes,
    })
}

/// A new run id: `chosen` (by whoever starts the run, e.g. the MCP server) when it is valid and free, else a fresh
/// one. The one place run ids are allocated.
pub fn allocate_run_id(store: &Store, chosen: Option<&RunId>) -> Result<RunId, PipelineError> {
    let free = |id: &RunId| matches!(store.run(id), Err(StoreError::NoSuchRun(_)));
    match chosen {
        Some(chosen) if free(chosen) => Ok(chosen.clone()),
        Some(chosen) => Err(InputError::new(
            Path::new("<command line>"),
            format!("`{chosen}` cannot be a new run id: a run of that id exists"),
        )
        .key("--run-id")
        .fix("leave --run-id out to get a fresh id")
        .into()),
        None => loop {
            let candidate = RunId::generate();
            if free(&candidate) {
                break Ok(candidate);
            }
        },
    }
}

/// Stores the run and its tasks (each queued, with its branch and worktree to be).
pub fn register(
    store: &mut Store,
    request: &RunRequest,
    resolved: &Resolved,
) -> Result<Registered, PipelineError> {
    let run_id = allocate_run_id(store, request.run_id.as_ref())?;
    let worktree_base = resolved.worktree_folder.join(&run_id);
    let tasks = &resolved.plan.tasks;
    let branches: Vec<String> = tasks
        .iter()
        .map(|t| paths::task_branch(&run_id, &t.id))
        .collect();
    let worktrees: Vec<PathBuf> = tasks.iter().map(|t| worktree_base.join(&t.id)).collect();
    let new_tasks: Vec<NewTask<'_>> = tasks
        .iter()
        .zip(&branches)
        .zip(&worktrees)
        .map(|((spec, branch), worktree)| NewTask {
            spec,
            branch,
            worktree,
        })
        .collect();
    let owner_pid = std::process::id();
    let owner_start = sandbox::proc::start_token(owner_pid).unwrap_or_default();
    store.create_run(
        &NewRun {
            id: &run_id,
            base_sha: &resolved.base_sha,
            base_rev: &resolved.base_rev,
            target_branch: resolved.target_branch.as_deref(),
            tasks_file: &resolved.tasks_file,
            jobs: resolved.jobs,
            owner_pid,
            owner_start: &owner_start,
            no_merge: request.no_merge,
            plan_mode: request.plan,
        },
        &new_tasks,
    )?;
    Ok(Registered {
        run_id,
        branches,
        worktrees,
    })
}

/// Stage 1b: the base layer for the run (prepared, or reused), and so what every task tree gets copied in. When
/// setup fails, every task ends in `error` with the reason and the run is finished before any worker started; when
/// it was stopped by Ctrl-C, every task ends `cancelled` and the answer is `None` (the run is over).
pub fn prepare_layer(
    store: &mut Store,
    repo: &RepoPaths,
    resolved: &Resolved,
    run: &Registered,
    sink: &dyn EventSink,
    cancel: &std::sync::atomic::AtomicBool,
) -> Result<Option<super::tree::TreeFiles>, PipelineError> {
    let input = super::layer::LayerInput {
        repo,
        policy: &resolved.policy,
        rules: &resolved.rules,
        base: &resolved.base_sha,
        includes: &resolved.includes,
        cancel,
    };
    if let Some(setup) = &resolved.policy.setup {
        sink.emit(Event::Note {
            message: format!(
                "base layer: `{}` runs once for these inputs (an earlier run's layer is reused)",
                setup.argv.join(" ")
            ),
        });
    }
    let copy_on_write = resolved.trees.copy_on_write;
    match super::layer::prepare(&input, copy_on_write) {
        Ok(layer) => Ok(Some(super::layer::tree_files(
            resolved.includes.clone(),
            layer,
            copy_on_write,
        ))),
        Err(error) => {
            let stopped = cancel.load(std::sync::atomic::Ordering::SeqCst);
            let (state, reason) = if stopped {
                (
                    crate::model::TaskState::Cancelled,
                    "cancelled while the base layer was being prepared; no task started"
                        .to_string(),
                )
            } else {
                (
                    crate::model::TaskState::Error,
                    resolved
                        .rules
                        .redact_text(&format!("no task started: {error}")),
                )
            };
            for task in &resolved.plan.tasks {
                store.set_task_state(&run.run_id, &task.id, state, Some(&reason))?;
            }
            store.finish_run(&run.run_id, crate::model::RunState::Finished, Some(&reason))?;
            if stopped {
                sink.emit(Event::RunFinished {
                    run_id: run.run_id.clone(),
                });
                return Ok(None);
            }
            Err(error)
        }
    }
}

/// Gives the warnings a person should read before workers start, and groups the tasks: one group each, or
/// overlapping tasks together when the policy says to run them one after another.
pub fn warn_and_group(
    sink: &dyn EventSink,
    sandbox: &sandbox::Selected,
    repo: &RepoPaths,
    resolved: &Resolved,
) -> Result<Vec<Vec<usize>>, PipelineError> {
    let plan = &resolved.plan;
    if let Some(fallback) = &resolved.trees.fallback {
        sink.emit(Event::Warning {
            message: fallback.clone(),
        });
    }
    if let Some(fallback) = &sandbox.fallback {
        sink.emit(Event::Warning {
            message: fallback.clone(),
        });
    }
    if sandbox.backend == sandbox::Backend::None {
        sink.emit(Event::Warning {
            message: "workers run without a sandbox ([sandbox] backend = \"none\"): they can write anywhere \
                      this user can"
                .to_string(),
        });
    }
    for warning in unmatched_globs(repo, &resolved.base_sha, plan)? {
        sink.emit(Event::Warning { message: warning });
    }
    let overlaps = plan::overlaps(&plan.tasks);
    let serialize = resolved.policy.overlap == policy::Overlap::Serialize;
    if !overlaps.is_empty() {
        let pairs: Vec<String> = overlaps
            .iter()
            .map(|overlap| {
                format!(
                    "{} (`{}`) and {} (`{}`)",
                    plan.tasks[overlap.first].id,
                    overlap.first_glob,
                    plan.tasks[overlap.second].id,
                    overlap.second_glob
                )
            })
            .collect();
        let shown = pairs.iter().take(4).cloned().collect::<Vec<_>>().join(", ");
        let more = pairs.len().saturating_sub(4);
        sink.emit(Event::Warning {
            message: format!(
                "tasks may change the same files: {shown}{}; {}",
                if more > 0 { format!(" and {more} more pair(s)") } else { String::new() },
                if serialize {
                    "they run one after another (run.overlap = \"serialize\")"
                } else {
                    "they run in parallel and land in task-file order, each re-checked on top of the ones before; \
                     narrow their allowed globs, or set run.overlap = \"serialize\" to run them one after another"
                }
            ),
        });
    }
    Ok(if serialize {
        plan::serial_groups(plan.tasks.len(), &overlaps)
    } else {
        (0..plan.tasks.len()).map(|i| vec![i]).collect()
    })
}

/// Loads the policy and the tasks file and plans the run, without touching any state.
pub fn load_plan(request: &RunRequest) -> Result<(Policy, plan::Plan, RulePack), PipelineError> {
    let policy = load_policy(&request.repo, request.policy_file.as_deref())?;
    let tasks = tasks_file::read(&request.tasks_file)?;
    let plan = plan::plan(&tasks, &policy)?;
    if request.plan {
        check_plan_mode(request, &policy, &plan)?;
    }
    if policy.sandbox.backend == policy::SandboxBackend::None
        && let Some(task) = plan.tasks.iter().find(|task| task.review.is_some())
    {
        return Err(InputError::new(
            &request
                .policy_file
                .clone()
                .unwrap_or_else(|| request.repo.workdir.join(policy::POLICY_FILE)),
            format!(
                "task `{}` has a review stage, which needs a sandbox: it is what keeps the reviewer from writing, \
                 and the policy says sandbox.backend = \"none\"",
                task.id
            ),
        )
        .key("sandbox.backend")
        .fix("set sandbox.backend = \"auto\", or turn the review off ([review] enabled = false)")
        .into());
    }
    let rules = load_rules(&policy)?;
    Ok((policy, plan, rules))
}

/// Plan mode needs a sandbox (it is what makes a planning worker's tree read-only) and, for now, independent tasks.
fn check_plan_mode(
    request: &RunRequest,
    policy: &Policy,
    plan: &plan::Plan,
) -> Result<(), InputError> {
    if policy.sandbox.backend == policy::SandboxBackend::None {
        return Err(InputError::new(
            &request
                .policy_file
                .clone()
                .unwrap_or_else(|| request.repo.workdir.join(policy::POLICY_FILE)),
            "plan mode needs a sandbox: it is what keeps a planning worker from writing, and the policy says \
             sandbox.backend = \"none\"",
        )
        .key("sandbox.backend")
        .fix("set sandbox.backend = \"auto\", or run without --plan"));
    }
    if let Some(task) = plan.tasks.iter().find(|task| task.candidate.is_some()) {
        return Err(InputError::new(
            &request.tasks_file,
            format!(
                "task `{}` runs as candidates (best-of-N), which plan mode does not combine with yet",
                task.id
            ),
        )
        .key("candidates")
        .fix("run the candidates without --plan, or plan one worker"));
    }
    if let Some(task) = plan.tasks.iter().find(|task| !task.after.is_empty()) {
        return Err(InputError::new(
            &request.tasks_file,
            format!(
                "task `{}` waits for other tasks (after), which plan mode does not combine with yet",
                task.id
            ),
        )
        .key("after")
        .fix("plan and approve the phases in separate runs, or run without --plan"));
    }
    Ok(())
}

/// Loads the policy's secret rule pack (a built-in name or a rules file).
pub fn load_rules(policy: &Policy) -> Result<RulePack, InputError> {
    let rules = &policy.gate.rules;
    if rules.contains('/') || rules.ends_with(".toml") {
        RulePack::from_file(Path::new(rules))
    } else {
        RulePack::builtin(rules)
    }
}

/// The rule pack that redacts what a read-only command shows (the policy's, else the built-in default): showing
/// stored evidence must not fail because the policy has an error, and must never show a secret raw either.
pub fn display_rules(repo: &RepoPaths) -> Result<RulePack, InputError> {
    match load_policy(repo, None).map(|policy| load_rules(&policy)) {
        Ok(Ok(rules)) => Ok(rules),
        Ok(Err(_)) | Err(_) => RulePack::builtin("default"),
    }
}

/// Loads the repository's policy (`ccfan.toml` at its root, or `policy_file`).
pub fn load_policy(repo: &RepoPaths, policy_file: Option<&Path>) -> Result<Policy, PipelineError> {
    let path = match policy_file {
        Some(path) if !path.exists() => {
            return Err(InputError::new(path, "the policy file does not exist")
                .fix("pass an existing file with --policy, or leave it out to use ccfan.toml at the repository root")
                .into());
        }
        Some(path) => path.to_path_buf(),
        None => repo.workdir.join(policy::POLICY_FILE),
    };
    let mut policy = policy::load(Some(&path))?;
    policy::add_installed_agents(&mut policy, &crate::agents::probe::installed_agents());
    Ok(policy)
}

/// The policy as committed at HEAD (`ccfan.toml` at the root of HEAD's tree), for the git hooks: an uncommitted
/// edit cannot switch the gate off. No committed policy: the default preset, hooks checking secrets only.
pub fn load_committed_policy(repo: &RepoPaths) -> Result<Policy, PipelineError> {
    let Some(head) = git::head_commit(repo)? else {
        return Ok(policy::load_source(None)?);
    };
    let named = PathBuf::from(format!(
        "{}@HEAD",
        repo.workdir.join(policy::POLICY_FILE).display()
    ));
    let source = match git::blob_at(repo, &head, policy::POLICY_FILE)? {
        Some(bytes) if bytes.len() as u64 > crate::input::max_input_bytes() => {
            let cap = crate::input::max_input_bytes();
            return Err(crate::input::too_big(&named, "policy", cap).into());
        }
        Some(bytes) => Some((named, String::from_utf8_lossy(&bytes).into_owned())),
        None => None,
    };
    Ok(policy::load_source(source)?)
}

/// `--into BRANCH`, checked to name a local branch.
pub(crate) fn existing_branch(repo: &RepoPaths, branch: &str) -> Result<String, PipelineError> {
    let name = branch.strip_prefix("refs/heads/").unwrap_or(branch);
    if !git2::Reference::is_valid_name(&format!("refs/heads/{name}")) {
        return Err(InputError::new(
            Path::new("<command line>"),
            format!("`{branch}` is not a valid branch name"),
        )
        .key("--into")
        .fix("name an existing local branch; git branch names have no spaces, `..`, `~`, `^`, `:`, `?`, `*`, `[`, `\\`, `@{`, no leading `-` and no trailing `/` or `.lock`")
        .into());
    }
    if git::ref_target(repo, &format!("refs/heads/{name}"))?.is_none() {
        return Err(InputError::new(
            Path::new("<command line>"),
            format!("`{branch}` is not a local branch"),
        )
        .key("--into")
        .fix("name an existing local branch, e.g. --into main (create it first with `git branch NAME`)")
        .into());
    }
    Ok(name.to_string())
}

/// Allowed globs that match no file at the base: worth a warning (a typo?), though a task may create such files.
fn unmatched_globs(
    repo: &RepoPaths,
    base: &str,
    plan: &plan::Plan,
) -> Result<Vec<String>, PipelineError> {
    let paths = git::tree_paths(repo, base)?;
    let mut warnings = Vec::new();
    for task in &plan.tasks {
        for glob in &task.allowed {
            let Ok(matcher) = globset::GlobBuilder::new(glob)
                .literal_separator(true)
                .build()
            else {
                continue;
            };
            let matcher = matcher.compile_matcher();
            if !paths.iter().any(|path| matcher.is_match(path)) {
                warnings.push(format!(
                    "task {}: allowed glob `{glob}` matches no file at the base (fine if the task creates such files)",
                    task.id
                ));
            }
        }
    }
    Ok(warnings)
}
