//! Policy, worker profiles: validate a `[workers.NAME]` table (from a policy or a tasks file) into a
//! [`WorkerProfile`] — how to run it, its timeout, environment, network and extra writable paths.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::duration;
use crate::input::InputError;
use crate::model::{WorkerKind, WorkerProfile};

/// A `[workers.NAME]` table, as written in a policy or a tasks file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSection {
    kind: Spanned<String>,
    command: Option<Spanned<Vec<String>>>,
    timeout: Option<Spanned<String>>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    pass_env: Vec<String>,
    network: Option<bool>,
    #[serde(default)]
    writable: Vec<String>,
}

impl WorkerSection {
    /// Validates the profile `name`, resolving a relative program path against `base_dir` (the declaring file's
    /// folder).
    pub fn resolve(
        &self,
        name: &str,
        file: &Path,
        source: &str,
        base_dir: &Path,
    ) -> Result<WorkerProfile, InputError> {
        let key = format!("workers.{name}");
        if !crate::util::is_valid_id(name) {
            return Err(
                InputError::new(file, format!("`{name}` is not a valid worker name"))
                    .key(&key)
                    .fix("use letters, digits, `-`, `_` and `.`"),
            );
        }
        let kind = match self.kind.get_ref().as_str() {
            "command" => {
                let Some(command) = &self.command else {
                    return Err(InputError::new(file, "a command worker needs `command`")
                        .key(format!("{key}.command"))
                        .at_offset(source, Some(self.kind.span().start))
                        .fix(r#"write command = ["program", "arg", …]"#));
                };
                let mut argv = command.get_ref().clone();
                let Some(program) = argv.first_mut() else {
                    return Err(InputError::new(file, "`command` must not be empty")
                        .key(format!("{key}.command"))
                        .at_offset(source, Some(command.span().start))
                        .fix(r#"write command = ["program", "arg", …]"#));
                };
                let path = Path::new(program.as_str());
                if program.contains('/') && path.is_relative() {
                    *program = base_dir.join(path).to_string_lossy().into_owned();
                }
                WorkerKind::Command { argv }
            }
            other => {
                return Err(
                    InputError::new(file, format!("unknown worker kind `{other}`"))
                        .key(format!("{key}.kind"))
                        .at_offset(source, Some(self.kind.span().start))
                        .fix(r#"write kind = "command""#),
                );
            }
        };
        let timeout = self
            .timeout
            .as_ref()
            .map(|value| duration(file, source, &format!("{key}.timeout"), value))
            .transpose()?;
        Ok(WorkerProfile {
            name: name.to_string(),
            kind,
            timeout,
            env: self
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            pass_env: self.pass_env.clone(),
            network: self.network,
            writable: self
                .writable
                .iter()
                .map(|path| super::sandbox::expand_path(path, base_dir))
                .collect(),
        })
    }
}
