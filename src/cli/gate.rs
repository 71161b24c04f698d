//! `ccfan verify` and `ccfan scan`: thin adapters over the gate and the scanner, with human, JSON and SARIF
//! renderings. Exit codes: 0 nothing blocks, 1 something does, 2 bad input, 3 internal.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::args::{FormatArgs, ScanArgs, VerifyArgs};
use super::render::{self};
use super::{CliError, Exit};
use crate::pipeline::{self, PipelineError, change, gate};
use crate::report::Verdict;
use crate::secrets::{self, RulePack};

/// `ccfan verify --json`.
#[derive(Debug, Serialize)]
struct VerifyDocument<'a> {
    schema: u32,
    run_id: &'a str,
    tasks: &'a [gate::TaskVerification],
}

/// Runs `ccfan verify`: a run's stored attempts, or a change no worker made (`--staged`, `--range`, `--commit`).
pub fn verify(start: &Path, args: VerifyArgs) -> Result<Exit, CliError> {
    let VerifyArgs {
        target,
        staged,
        range,
        commit,
        policy,
        format,
    } = args;
    let change = match (staged, range, commit) {
        (true, _, _) => Some(change::Target::Staged {
            index_file: hook_index_file(start),
            merging: merging_heads(),
        }),
        (false, Some(spec), _) => Some(change::Target::Range { spec }),
        (false, None, Some(rev)) => Some(change::Target::Commit { rev }),
        (false, None, None) => None,
    };
    let repo = super::repo_at(start)?;
    let policy_file = policy.map(|path| super::absolute(start, &path));
    let policy = pipeline::load_policy(&repo, policy_file.as_deref())?;
    let parts = GateParts::new(&repo, &policy)?;
    let checker = parts.gate(&repo, &policy);
    let (text, all_passed) = match (change, target) {
        (Some(target), _) => {
            let change = change::resolve(&repo, &target)?;
            let result = checker.check_change(&change, &policy.hooks.stages)?;
            let results = [result];
            (render_changes(&results, &format), results[0].passed)
        }
        (None, Some(target)) => verify_run(&checker, &target, &format)?,
        (None, None) => {
            return Err(PipelineError::from(
                crate::input::InputError::new(Path::new("<command line>"), "nothing to verify")
                    .fix("name a run (`ccfan verify RUN`), or pass --staged, --range A..B or --commit REV"),
            )
            .into());
        }
    };
    render::out(&text)?;
    Ok(if all_passed {
        Exit::Success
    } else {
        Exit::NotAllSucceeded
    })
}

/// What a [`gate::Gate`] borrows besides the repository and policy: the compiled rules, where verification
/// checkouts go, the ignored files they get, and the Ctrl-C flag.
pub(super) struct GateParts {
    rules: RulePack,
    scratch: PathBuf,
    includes: pipeline::tree::TreeFiles,
    cancel: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl GateParts {
    pub(super) fn new(
        repo: &crate::git::RepoPaths,
        policy: &crate::policy::Policy,
    ) -> Result<GateParts, CliError> {
        Ok(GateParts {
            rules: pipeline::load_rules(policy).map_err(PipelineError::from)?,
            scratch: gate::scratch_root(repo, policy),
            includes: pipeline::layer::tree_files(
                // A broken `.worktreeinclude` in the working tree never blocks a commit: it only copies less.
                pipeline::include::Includes::load(repo).unwrap_or_else(|error| {
                    tracing::warn!("ignoring .worktreeinclude: {error}");
                    pipeline::include::Includes::default()
                }),
                pipeline::layer::ready_for(repo, policy),
                pipeline::tree::select(repo, policy, &gate::scratch_root(repo, policy))
                    .is_ok_and(|mode| mode.copy_on_write),
            ),
            cancel: super::cancel_flag(),
        })
    }

    pub(super) fn gate<'a>(
        &'a self,
        repo: &'a crate::git::RepoPaths,
        policy: &'a crate::policy::Policy,
    ) -> gate::Gate<'a> {
        gate::Gate::new(
            repo,
            policy,
            &self.rules,
            &self.scratch,
            &self.includes,
            &self.cancel,
        )
    }
}

/// The index git gave a hook (`GIT_INDEX_FILE`, relative to where git ran the hook), if any.
fn hook_index_file(start: &Path) -> Option<PathBuf> {
    std::env::var_os("GIT_INDEX_FILE")
        .filter(|value| !value.is_empty())
        .map(|value| super::absolute(start, Path::new(&value)))
}

/// The commits `git merge` is merging, as it names them to its hooks.
fn merging_heads() -> Vec<String> {
    let names: Vec<String> = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .collect();
    crate::hooks::gate::merging_heads(names.iter().map(String::as_str))
}

/// `ccfan verify --staged/--range/--commit` output, and `hooks run`'s JSON.
pub(super) fn render_changes(
    results: &[change::ChangeVerification],
    format: &FormatArgs,
) -> String {
    let judged: Vec<render::Judged<'_>> = results
        .iter()
        .map(|result| render::Judged {
            title: result.subject.clone(),
            outcome: if result.passed { "PASS" } else { "BLOCKED" }.to_string(),
            verdict: &result.verdict,
            report: &result.report,
            attempt: false,
        })
        .collect();
    match format {
        FormatArgs { json: true, .. } => render::json(&ChangeDocument {
            schema: 1,
            changes: results,
        }),
        FormatArgs { sarif: true, .. } => render::sarif_text(&judged),
        FormatArgs { .. } => render::human_verify(&judged),
    }
}

/// `ccfan verify --staged/--range/--commit --json`.
#[derive(Debug, Serialize)]
struct ChangeDocument<'a> {
    schema: u32,
    changes: &'a [change::ChangeVerification],
}

fn verify_run(
    checker: &gate::Gate<'_>,
    target: &str,
    format: &FormatArgs,
) -> Result<(String, bool), CliError> {
    let pipeline::control::Target { run: run_id, task } = pipeline::control::Target::parse(target)?;
    let (mut store, _) = pipeline::open_state(checker.repo)?;
    let results = checker.reverify(&mut store, &run_id, task.as_ref())?;
    if results.is_empty() {
        return Ok((
            match format {
                FormatArgs { json: true, .. } => render::json(&VerifyDocument {
                    schema: 1,
                    run_id: &run_id,
                    tasks: &results,
                }),
                FormatArgs { sarif: true, .. } => render::sarif_text(&[]),
                FormatArgs { .. } => format!("run {run_id} has no recorded attempt to verify\n"),
            },
            false,
        ));
    }
    let judged: Vec<render::Judged<'_>> = results
        .iter()
        .map(|task| render::Judged {
            title: format!("{run_id}/{} attempt {}", task.task_id, task.attempt),
            outcome: task.verdict.name().to_uppercase(),
            verdict: &task.verdict,
            report: &task.report,
            attempt: true,
        })
        .collect();
    let text = match format {
        FormatArgs { json: true, .. } => render::json(&VerifyDocument {
            schema: 1,
            run_id: &run_id,
            tasks: &results,
        }),
        FormatArgs { sarif: true, .. } => render::sarif_text(&judged),
        FormatArgs { .. } => render::human_verify(&judged),
    };
    let all_accepted = results
        .iter()
        .all(|task| matches!(task.verdict, Verdict::Accept));
    Ok((text, all_accepted))
}

/// Runs `ccfan scan`.
pub fn scan(start: &Path, args: ScanArgs) -> Result<Exit, CliError> {
    let ScanArgs {
        paths,
        range,
        rules,
        format,
    } = args;
    let pack = match rules {
        Some(path) => RulePack::from_file(&super::absolute(start, &path)),
        None => RulePack::builtin("default"),
    }
    .map_err(PipelineError::from)?;
    let report = match range {
        Some(range) => {
            let repo = super::repo_at(start)?;
            secrets::scan_range(&repo, &pack, &range).map_err(|error| match error {
                crate::git::GitError::BadRevision { rev, .. } => PipelineError::Input(
                    crate::input::InputError::new(
                        Path::new("<command line>"),
                        format!("`{rev}` is not a range or revision"),
                    )
                    .key("--range")
                    .fix("write A..B, e.g. origin/main..HEAD"),
                ),
                other => other.into(),
            })?
        }
        None => {
            let roots: Vec<PathBuf> = if paths.is_empty() {
                vec![start.to_path_buf()]
            } else {
                paths.iter().map(|p| super::absolute(start, p)).collect()
            };
            for root in &roots {
                if !root.exists() {
                    return Err(PipelineError::from(
                        crate::input::InputError::new(root, "no such file or folder")
                            .fix("pass existing paths"),
                    )
                    .into());
                }
            }
            secrets::scan_files(&pack, &secrets::collect_files(&roots))
        }
    };
    let text = match format {
        FormatArgs { json: true, .. } => render::json(&report),
        FormatArgs { sarif: true, .. } => render::scan_sarif(&report),
        FormatArgs { .. } => render::human_scan(&report),
    };
    render::out(&text)?;
    Ok(if report.hits.is_empty() {
        Exit::Success
    } else {
        Exit::NotAllSucceeded
    })
}
