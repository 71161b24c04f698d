//! Policy, `[gate]` and `[[checks]]`: which verification stages run and in what order, the secret rule pack,
//! the completeness check, what is never reworked, and custom checks — validated once, named on failure.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{CheckSettings, Completeness, GateSettings, duration};
use crate::input::InputError;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GateSection {
    stages: Option<Vec<Spanned<String>>>,
    fail_fast: Option<bool>,
    rules: Option<String>,
    scan_logs: Option<bool>,
    completeness: Option<Spanned<String>>,
    not_reworkable: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CheckSection {
    name: String,
    command: Vec<String>,
    timeout: Option<Spanned<String>>,
}

/// One name of `gate.stages`.
fn stage(
    file: &Path,
    source: &str,
    name: &Spanned<String>,
) -> Result<crate::report::Stage, InputError> {
    use crate::report::Stage;
    Stage::parse(name.get_ref()).ok_or_else(|| {
        let known: Vec<&str> = Stage::ALL.iter().map(|s| s.as_str()).collect();
        let review = if name.get_ref() == "review" {
            " (the review stage is set by [review] and always runs last)"
        } else {
            ""
        };
        InputError::new(file, format!("unknown stage `{}`", name.get_ref()))
            .key("gate.stages")
            .at_offset(source, Some(name.span().start))
            .fix(format!("use some of: {}{review}", known.join(", ")))
    })
}

pub(super) fn resolve(
    file: &Path,
    source: &str,
    section: Option<GateSection>,
    checks: Option<Vec<Spanned<CheckSection>>>,
    base: Option<&GateSettings>,
    base_dir: &Path,
) -> Result<GateSettings, InputError> {
    use crate::report::Stage;
    let section = section.unwrap_or_default();
    let stages = match &section.stages {
        Some(names) => names
            .iter()
            .map(|name| stage(file, source, name))
            .collect::<Result<Vec<_>, _>>()?,
        None => base.map_or_else(|| Stage::ALL.to_vec(), |b| b.stages.clone()),
    };
    let completeness = match &section.completeness {
        Some(value) => match value.get_ref().as_str() {
            "auto" => Completeness::Auto,
            "on" => Completeness::On,
            "off" => Completeness::Off,
            other => {
                return Err(InputError::new(
                    file,
                    format!("`{other}` is not a completeness setting"),
                )
                .key("gate.completeness")
                .at_offset(source, Some(value.span().start))
                .fix(r#"write "auto", "on" or "off""#));
            }
        },
        None => base.map_or(Completeness::Auto, |b| b.completeness),
    };
    let rules = match section.rules {
        Some(rules) if rules.contains('/') || rules.ends_with(".toml") => {
            base_dir.join(rules).to_string_lossy().into_owned()
        }
        Some(rules) => rules,
        None => base.map_or_else(|| "default".to_string(), |b| b.rules.clone()),
    };
    let checks = match checks {
        Some(list) => list
            .iter()
            .map(|check| {
                let inner = check.get_ref();
                if inner.command.is_empty() {
                    return Err(InputError::new(file, "`command` must not be empty")
                        .key(format!("checks `{}`.command", inner.name))
                        .at_offset(source, Some(check.span().start))
                        .fix(r#"write command = ["program", "arg", …]"#));
                }
                let timeout = inner
                    .timeout
                    .as_ref()
                    .map(|value| {
                        duration(
                            file,
                            source,
                            &format!("checks `{}`.timeout", inner.name),
                            value,
                        )
                    })
                    .transpose()?
                    .unwrap_or(Duration::from_secs(600));
                Ok(CheckSettings {
                    name: inner.name.clone(),
                    argv: inner.command.clone(),
                    timeout,
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => base.map(|b| b.checks.clone()).unwrap_or_default(),
    };
    Ok(GateSettings {
        stages,
        fail_fast: section
            .fail_fast
            .or(base.map(|b| b.fail_fast))
            .unwrap_or(false),
        rules,
        scan_logs: section
            .scan_logs
            .or(base.map(|b| b.scan_logs))
            .unwrap_or(true),
        completeness,
        not_reworkable: section
            .not_reworkable
            .or_else(|| base.map(|b| b.not_reworkable.clone()))
            .unwrap_or_default(),
        checks,
    })
}
