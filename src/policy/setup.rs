//! Policy, `[setup]`: the command that prepares a project's base layer once (installing dependencies, warming
//! build caches), what keys it (the files whose content decides whether it must run again), and how it runs —
//! validated once, named on failure.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::duration;
use crate::input::InputError;

/// `[setup]` as resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupSettings {
    /// Program and arguments, run at the top of the layer's tree.
    pub argv: Vec<String>,
    /// Repository files (at the base commit) whose content keys the layer: lockfiles, manifests.
    pub inputs: Vec<String>,
    /// Wall-clock limit.
    pub timeout: Duration,
    /// Whether it reaches the network (installers usually must).
    pub network: bool,
    /// Extra folders it may write besides the layer (e.g. a package manager's cache).
    pub writable: Vec<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SetupSection {
    command: Option<Spanned<Vec<String>>>,
    inputs: Option<Vec<Spanned<String>>>,
    timeout: Option<Spanned<String>>,
    network: Option<bool>,
    writable: Option<Vec<String>>,
}

pub(super) fn resolve(
    file: &Path,
    source: &str,
    section: Option<SetupSection>,
    base: Option<&SetupSettings>,
    base_dir: &Path,
) -> Result<Option<SetupSettings>, InputError> {
    let Some(section) = section else {
        return Ok(base.cloned());
    };
    let argv = match section.command {
        Some(command) if command.get_ref().is_empty() => {
            return Err(InputError::new(file, "`command` must not be empty")
                .key("setup.command")
                .at_offset(source, Some(command.span().start))
                .fix(r#"write command = ["npm", "ci"], or remove [setup]"#));
        }
        Some(command) => command.into_inner(),
        None => match base {
            Some(base) => base.argv.clone(),
            None => {
                return Err(InputError::new(file, "[setup] has no command")
                    .key("setup.command")
                    .fix(r#"write command = ["npm", "ci"] (or uv sync, cargo build --tests, …)"#));
            }
        },
    };
    let inputs = match section.inputs {
        Some(inputs) => inputs
            .into_iter()
            .map(|input| {
                let outside = Path::new(input.get_ref()).is_absolute()
                    || Path::new(input.get_ref())
                        .components()
                        .any(|part| matches!(part, std::path::Component::ParentDir));
                if outside {
                    Err(InputError::new(
                        file,
                        format!("`{}` is not a path inside the repository", input.get_ref()),
                    )
                    .key("setup.inputs")
                    .at_offset(source, Some(input.span().start))
                    .fix(r#"list repository files relative to its top, e.g. inputs = ["package-lock.json"]"#))
                } else {
                    Ok(input.into_inner())
                }
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => base.map(|b| b.inputs.clone()).unwrap_or_default(),
    };
    let timeout = match &section.timeout {
        Some(value) => duration(file, source, "setup.timeout", value)?,
        None => base.map_or(Duration::from_secs(1800), |b| b.timeout),
    };
    Ok(Some(SetupSettings {
        argv,
        inputs,
        timeout,
        network: section.network.or(base.map(|b| b.network)).unwrap_or(true),
        writable: match section.writable {
            Some(paths) => paths
                .iter()
                .map(|path| super::sandbox::expand_path(path, base_dir))
                .collect(),
            None => base.map(|b| b.writable.clone()).unwrap_or_default(),
        },
    }))
}
