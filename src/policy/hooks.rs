//! Policy, `[hooks]`: what the local git hooks' gate (and `ccfan verify --staged/--range/--commit`) checks on a
//! change no worker made — its own allowed/denied globs (a person may edit CI or `ccfan.toml`; an agent may not)
//! and its own stages, validated once, named on failure.

use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::check_globs;
use crate::input::InputError;
use crate::report::Stage;

/// How the hooks' gate runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HooksSettings {
    /// Stages for commits, merges and `ccfan verify --staged/--range/--commit`.
    pub stages: Vec<Stage>,
    /// Stages for pushes (tests often belong here rather than on every commit).
    pub push_stages: Vec<Stage>,
    /// Paths a change may touch.
    pub allowed: Vec<String>,
    /// Paths a change must not touch.
    pub denied: Vec<String>,
    /// Honour inline `ccfan:allow-secret` / `gitleaks:allow` markers on a secret's line. Off by default: the
    /// worker gate never honours them, and a change from an agent outside ccfan could carry one.
    pub inline_allow: bool,
}

impl HooksSettings {
    /// Without a `ccfan.toml`: secrets only.
    pub fn secrets_only() -> HooksSettings {
        HooksSettings {
            stages: vec![Stage::Secrets],
            push_stages: vec![Stage::Secrets],
            allowed: vec!["**".to_string()],
            denied: Vec::new(),
            inline_allow: false,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HooksSection {
    stages: Option<Spanned<Vec<Spanned<String>>>>,
    push_stages: Option<Spanned<Vec<Spanned<String>>>>,
    allowed: Option<Vec<Spanned<String>>>,
    denied: Option<Vec<Spanned<String>>>,
    inline_allow: Option<bool>,
}

fn stages(
    file: &Path,
    source: &str,
    key: &str,
    names: &[Spanned<String>],
) -> Result<Vec<Stage>, InputError> {
    names
        .iter()
        .map(|name| {
            let known = "diff, scope, secrets, tests, checks";
            match Stage::parse(name.get_ref()) {
                Some(Stage::Completeness | Stage::Worker) => Err(InputError::new(
                    file,
                    format!(
                        "the {} stage judges a worker's attempt; a commit has no worker",
                        name.get_ref()
                    ),
                )
                .key(key)
                .at_offset(source, Some(name.span().start))
                .fix(format!("use some of: {known}"))),
                Some(stage) => Ok(stage),
                None => Err(
                    InputError::new(file, format!("unknown stage `{}`", name.get_ref()))
                        .key(key)
                        .at_offset(source, Some(name.span().start))
                        .fix(format!("use some of: {known}")),
                ),
            }
        })
        .collect()
}

fn non_empty(
    file: &Path,
    source: &str,
    key: &str,
    names: &Spanned<Vec<Spanned<String>>>,
) -> Result<Vec<Stage>, InputError> {
    if names.get_ref().is_empty() {
        return Err(InputError::new(file, "an empty list checks nothing")
            .key(key)
            .at_offset(source, Some(names.span().start))
            .fix("name at least one stage, e.g. [\"secrets\"] (to stop the hooks, run `ccfan hooks uninstall`)"));
    }
    stages(file, source, key, names.get_ref())
}

pub(super) fn resolve(
    file: &Path,
    source: &str,
    section: Option<HooksSection>,
    base: Option<&HooksSettings>,
) -> Result<HooksSettings, InputError> {
    let section = section.unwrap_or_default();
    let fallback = HooksSettings::secrets_only();
    let base = base.unwrap_or(&fallback);
    let stages_for_commits = match &section.stages {
        Some(names) => non_empty(file, source, "hooks.stages", names)?,
        None => base.stages.clone(),
    };
    let push_stages = match &section.push_stages {
        Some(names) => non_empty(file, source, "hooks.push_stages", names)?,
        // Unset in this file: pushes follow this file's `stages` if it set them.
        None if section.stages.is_some() => stages_for_commits.clone(),
        None => base.push_stages.clone(),
    };
    Ok(HooksSettings {
        stages: stages_for_commits,
        push_stages,
        allowed: match &section.allowed {
            Some(globs) => check_globs(file, source, "hooks.allowed", globs)?,
            None => base.allowed.clone(),
        },
        denied: match &section.denied {
            Some(globs) => check_globs(file, source, "hooks.denied", globs)?,
            None => base.denied.clone(),
        },
        inline_allow: section.inline_allow.unwrap_or(base.inline_allow),
    })
}
