//! `ccfan hooks install/uninstall/status/run`: a thin adapter over [`crate::hooks`] and the hooks' gate. `run` is
//! what the installed scripts call: silent when nothing blocks, and when something does, a short message on stderr
//! — what was found, where (redacted), how to fix it, and the explicit bypass.

use std::io::{IsTerminal, Read};
use std::path::Path;

use super::args::{FormatArgs, HookRunArgs, HooksArgs, HooksCommand};
use super::render::{self};
use super::{CliError, Exit};
use crate::hooks::{self, HookName, Installed, Uninstalled};
use crate::pipeline::{self, PipelineError};

/// Runs `ccfan hooks …`.
pub fn hooks(start: &Path, command: HooksCommand) -> Result<Exit, CliError> {
    match command {
        HooksCommand::Install(args) => install(start, args),
        HooksCommand::Uninstall(args) => uninstall(start, args),
        HooksCommand::Status(args) => status(start, args),
        HooksCommand::Run(args) => run(start, args),
    }
}

fn failed(error: hooks::HooksError) -> CliError {
    let exit = match &error {
        hooks::HooksError::Refused { .. } => Exit::BadInput,
        hooks::HooksError::Io { .. } | hooks::HooksError::Git(_) => Exit::Internal,
    };
    CliError {
        exit,
        error: error.into(),
    }
}

/// This ccfan, as the scripts will call it (not resolved through symlinks: a package manager's stable link
/// outlives its versioned target).
fn binary() -> Result<std::path::PathBuf, CliError> {
    Ok(std::env::current_exe()?)
}

fn json_out<T: serde::Serialize>(dir: &hooks::HooksDir, hooks: &T) -> Result<Exit, CliError> {
    render::out(&render::json(
        &serde_json::json!({"schema": 1, "dir": dir, "hooks": hooks}),
    ))?;
    Ok(Exit::Success)
}

fn install(start: &Path, args: HooksArgs) -> Result<Exit, CliError> {
    let repo = super::repo_at(start)?;
    let chosen = HookName::chosen(&args.hooks);
    let (dir, done) = hooks::install(&repo, &binary()?, &chosen, args.shared).map_err(failed)?;
    if args.json {
        return json_out(&dir, &done);
    }
    let mut text = render::where_line(&dir);
    for hook in &done {
        let what = match &hook.outcome {
            Installed::New => "installed".to_string(),
            Installed::Updated => "updated to call this ccfan".to_string(),
            Installed::Unchanged => "already installed".to_string(),
            Installed::Chained { chained } => format!(
                "installed; your hook moved to {} and runs first",
                chained.display()
            ),
        };
        text.push_str(&format!("  {:<17} {what}\n", hook.hook.as_str()));
    }
    text.push_str("`ccfan hooks uninstall` removes them and puts back what was there.\n");
    render::out(&text)?;
    Ok(Exit::Success)
}

fn uninstall(start: &Path, args: HooksArgs) -> Result<Exit, CliError> {
    let repo = super::repo_at(start)?;
    let chosen = HookName::chosen(&args.hooks);
    let (dir, done) = hooks::uninstall(&repo, &binary()?, &chosen).map_err(failed)?;
    if args.json {
        return json_out(&dir, &done);
    }
    let mut text = render::where_line(&dir);
    for hook in &done {
        let what = match &hook.outcome {
            Uninstalled::Removed => "removed".to_string(),
            Uninstalled::Restored => "removed; your own hook is back".to_string(),
            Uninstalled::NotOurs { chained_left: None } => {
                "not ccfan's hook: left alone".to_string()
            }
            Uninstalled::NotOurs {
                chained_left: Some(left),
            } => format!(
                "not ccfan's hook: left alone; a hook ccfan chained earlier is still at {}",
                left.display()
            ),
            Uninstalled::Absent => "not installed".to_string(),
        };
        text.push_str(&format!("  {:<17} {what}\n", hook.hook.as_str()));
    }
    render::out(&text)?;
    Ok(Exit::Success)
}

fn status(start: &Path, args: HooksArgs) -> Result<Exit, CliError> {
    let repo = super::repo_at(start)?;
    let chosen = HookName::chosen(&args.hooks);
    let (dir, states) = hooks::status(&repo, &binary()?, &chosen).map_err(failed)?;
    if args.json {
        return json_out(&dir, &states);
    }
    let mut text = render::where_line(&dir);
    for hook in &states {
        let mut what = render::describe_hook(&hook.state);
        if let Some(stray) = &hook.stray_chained {
            what.push_str(&format!(
                "; a hook chained by an earlier install is still at {}",
                stray.display()
            ));
        }
        text.push_str(&format!("  {:<17} {what}\n", hook.hook.as_str()));
    }
    render::out(&text)?;
    Ok(Exit::Success)
}

/// Runs `ccfan hooks run <hook>`: gathers what git gave the hook (environment, arguments, standard input when the
/// hook needs it), runs the hooks' gate, and prints the result.
fn run(start: &Path, args: HookRunArgs) -> Result<Exit, CliError> {
    let HookRunArgs {
        hook,
        args,
        policy,
        json,
    } = args;
    let Some(hook) = HookName::parse(&hook) else {
        return Err(PipelineError::from(
            crate::input::InputError::new(
                Path::new("<command line>"),
                format!("`{hook}` is not a hook ccfan runs"),
            )
            .fix("use pre-commit, pre-merge-commit or pre-push"),
        )
        .into());
    };
    let repo = super::repo_at(start)?;
    // The policy as committed, so that an uncommitted edit cannot switch the gate off (`--policy` to try one).
    let policy = match policy {
        Some(path) => pipeline::load_policy(&repo, Some(&super::absolute(start, &path)))?,
        None => pipeline::load_committed_policy(&repo)?,
    };
    // Names must be UTF-8 to be ours (`GITHEAD_<sha>`, `PRE_COMMIT_*`); values are taken whatever their bytes.
    let env: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(name, value)| Some((name.into_string().ok()?, value)))
        .filter(|(name, _)| name.starts_with("GITHEAD_") || name.starts_with("PRE_COMMIT"))
        .map(|(name, value)| (name, value.to_string_lossy().into_owned()))
        .collect();
    let index_file = std::env::var_os("GIT_INDEX_FILE")
        .filter(|value| !value.is_empty())
        .map(|value| super::absolute(start, Path::new(&value)));
    let mut stdin = || -> Result<String, crate::input::InputError> {
        let source = Path::new("<standard input>");
        if std::io::stdin().is_terminal() {
            return Err(crate::input::InputError::new(
                source,
                "pre-push reads the pushed refs git gives on standard input, and this is a terminal",
            )
            .fix("let git run it (`git push`), or pipe `<local ref> <local sha> <remote ref> <remote sha>` lines in"));
        }
        // Bounded, and an error past the cap: a cut list of refs would leave some pushed commits unjudged.
        let cap = crate::input::max_input_bytes();
        let mut input = String::new();
        std::io::stdin()
            .take(cap.saturating_add(1))
            .read_to_string(&mut input)
            .map_err(|error| {
                crate::input::InputError::new(source, format!("cannot read it: {error}"))
            })?;
        if input.len() as u64 > cap {
            return Err(crate::input::too_big(source, "pre-push input", cap));
        }
        Ok(input)
    };
    let parts = super::gate::GateParts::new(&repo, &policy)?;
    let checker = parts.gate(&repo, &policy);
    let (hook, results) = hooks::gate::verify_hook(
        &repo,
        &policy,
        &checker,
        &mut hooks::gate::HookInvocation {
            hook,
            args: &args,
            env: &env,
            index_file,
            stdin: &mut stdin,
        },
    )?;
    if json {
        render::out(&super::gate::render_changes(
            &results,
            &FormatArgs {
                json: true,
                sarif: false,
            },
        ))?;
    }
    if results.iter().all(|result| result.passed) {
        return Ok(Exit::Success);
    }
    render::err(&render::blocked_message(hook, &results));
    Ok(Exit::NotAllSucceeded)
}
