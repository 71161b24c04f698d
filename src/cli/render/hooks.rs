//! How the hooks read: where the hooks folder is, what each hook's state is, and the short message a blocked
//! hook prints (what was found, where, redacted; how to fix it; the explicit bypass).

use super::short;
use crate::hooks::{self, HookName, HookState};
use crate::pipeline::change::ChangeVerification;
use crate::report::{Stage, StageStatus};

pub fn where_line(dir: &hooks::HooksDir) -> String {
    match &dir.hooks_path {
        Some(raw) => format!(
            "hooks folder: {} (core.hooksPath = {raw}{})\n",
            dir.path.display(),
            if dir.shared {
                ", set outside this repository"
            } else {
                ""
            }
        ),
        None => format!("hooks folder: {}\n", dir.path.display()),
    }
}

pub fn describe_hook(state: &HookState) -> String {
    match state {
        HookState::Absent => "not installed".to_string(),
        HookState::Edited => "ccfan's script, edited by hand (ccfan leaves it alone)".to_string(),
        HookState::Other {
            tracked: true,
            manager: _,
        } => "another hook, tracked in the repository (ccfan will not change it)".to_string(),
        HookState::Other {
            tracked: false,
            manager: Some(manager),
        } => format!("{manager}'s hook (add ccfan to your {manager} set-up instead)"),
        HookState::Other {
            tracked: false,
            manager: None,
        } => "another hook (installing runs it first, then ccfan)".to_string(),
        HookState::Installed {
            binary,
            binary_found,
            on_path,
            current,
            chained,
        } => {
            let mut what = format!("installed, calls {}", binary.as_deref().unwrap_or("?"));
            match (binary_found, on_path) {
                (true, _) => {}
                (false, Some(found)) => {
                    what.push_str(&format!(" (gone: falls back to {})", found.display()))
                }
                (false, None) => what.push_str(
                    " (MISSING, and no ccfan on PATH: commits are stopped until you reinstall)",
                ),
            }
            if !current {
                what.push_str("; not this ccfan (`ccfan hooks install` points it here)");
            }
            if let Some(chained) = chained {
                what.push_str(&format!("; runs {} first", chained.display()));
            }
            what
        }
    }
}

/// The short message a blocked hook prints.
pub fn blocked_message(hook: HookName, results: &[ChangeVerification]) -> String {
    let mut text = format!(
        "ccfan: {} stopped by the gate ({hook} hook)\n",
        hook.action()
    );
    let mut stages_failed: Vec<Stage> = Vec::new();
    let mut history = false;
    for result in results.iter().filter(|result| !result.passed) {
        text.push_str(&format!("  {}:\n", result.subject));
        history |= result.commits > 0;
        for stage in &result.report.stages {
            if stage.status == StageStatus::Error {
                text.push_str(&format!(
                    "    {:<8} could not run: {}\n",
                    stage.stage.as_str(),
                    stage.note.as_deref().unwrap_or("no reason given")
                ));
                stages_failed.push(stage.stage);
            }
            for finding in stage
                .findings
                .iter()
                .filter(|finding| finding.is_blocking())
            {
                let place = match (&finding.path, finding.line) {
                    (Some(path), Some(line)) => format!("{path}:{line}  "),
                    (Some(path), None) => format!("{path}  "),
                    (None, _) => String::new(),
                };
                let message = finding.message.lines().next().unwrap_or_default();
                text.push_str(&format!(
                    "    {:<8} {place}{} — {message}\n",
                    finding.stage.as_str(),
                    finding.rule
                ));
                stages_failed.push(finding.stage);
            }
        }
    }
    stages_failed.sort_by_key(|stage| stage.as_str());
    stages_failed.dedup();
    text.push_str("How to fix:\n");
    for stage in &stages_failed {
        let hint = match stage {
            Stage::Secrets if history => {
                "a secret in a commit stays in history: rewrite the commit that added it (e.g. `git rebase -i`), \
                 and rotate the key if it was ever real"
            }
            Stage::Secrets => {
                "remove the secret from the file and `git add` it again; rotate the key if it was ever real"
            }
            Stage::Scope if hook == HookName::PrePush => {
                "that path is outside what `[hooks]` in ccfan.toml allows: take the change out of the pushed commits, \
                 or change hooks.allowed / hooks.denied (committed)"
            }
            Stage::Scope => {
                "that path is outside what `[hooks]` in ccfan.toml allows: unstage it (`git restore --staged PATH`), \
                 or change hooks.allowed / hooks.denied (committed)"
            }
            Stage::Diff => "resolve the merge conflict and remove its markers",
            Stage::Tests | Stage::Checks => {
                "make the tests and checks pass (their logs are under <git-common-dir>/ccfan/verify/)"
            }
            Stage::Worker | Stage::Completeness | Stage::Review => "see the findings above",
        };
        text.push_str(&format!("  - {hint}\n"));
    }
    let full = match (hook, results.iter().find(|result| !result.passed)) {
        (HookName::PrePush, Some(result)) => {
            let tip = result.report.commit.as_deref().unwrap_or("HEAD");
            match crate::git::is_empty_tree(&result.report.base) {
                true => format!("ccfan scan --range {}", short(tip)),
                false => format!(
                    "ccfan verify --range {}..{}",
                    short(&result.report.base),
                    short(tip)
                ),
            }
        }
        (HookName::PreCommit | HookName::PreMergeCommit | HookName::PrePush, _) => {
            "ccfan verify --staged".to_string()
        }
    };
    text.push_str(&format!(
        "`{full}` shows the full report. Bypass once, on purpose: {}\n",
        hook.bypass()
    ));
    text
}
