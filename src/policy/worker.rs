//! Policy, worker profiles: validate a `[workers.NAME]` table (from a policy or a tasks file) into a
//! [`WorkerProfile`] — how to run it, its timeout, environment, network and extra writable paths.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::duration;
use crate::agents::Agent;
use crate::input::InputError;
use crate::model::{AgentConfig, WorkerKind, WorkerProfile};

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
    program: Option<Spanned<String>>,
    model: Option<String>,
    args: Option<Spanned<Vec<String>>>,
    max_turns: Option<Spanned<u32>>,
    api_retries: Option<Spanned<u32>>,
    api_retry_window: Option<Spanned<String>>,
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
        if !crate::ids::is_valid_name(name) {
            return Err(
                InputError::new(file, format!("`{name}` is not a valid worker name"))
                    .key(&key)
                    .fix("use letters, digits, `-`, `_` and `.`"),
            );
        }
        let kind = match self.kind.get_ref().as_str() {
            "command" => {
                self.reject_agent_keys(&key, file, source)?;
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
            "codex" => {
                WorkerKind::Codex(self.agent_config(Agent::Codex, &key, file, source, base_dir)?)
            }
            "claude" => WorkerKind::Claude(self.agent_config(
                Agent::Claude,
                &key,
                file,
                source,
                base_dir,
            )?),
            other => {
                return Err(
                    InputError::new(file, format!("unknown worker kind `{other}`"))
                        .key(format!("{key}.kind"))
                        .at_offset(source, Some(self.kind.span().start))
                        .fix(r#"write kind = "command", "codex" or "claude""#),
                );
            }
        };
        let agent = kind.agent().map(|(agent, _)| agent);
        let mut pass_env = self.pass_env.clone();
        if let Some(agent) = agent {
            for name in agent.default_pass_env() {
                if !pass_env.iter().any(|known| known == name) {
                    pass_env.push((*name).to_string());
                }
            }
        }
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
            pass_env,
            // An agent reaches its model over the network unless its profile says otherwise.
            network: self.network.or(agent.map(|_| true)),
            writable: self
                .writable
                .iter()
                .map(|path| super::sandbox::expand_path(path, base_dir))
                .collect(),
        })
    }

    fn reject_agent_keys(&self, key: &str, file: &Path, source: &str) -> Result<(), InputError> {
        let spans = [
            ("program", self.program.as_ref().map(|v| v.span().start)),
            ("model", self.model.as_ref().map(|_| self.kind.span().start)),
            ("args", self.args.as_ref().map(|v| v.span().start)),
            ("max_turns", self.max_turns.as_ref().map(|v| v.span().start)),
            (
                "api_retries",
                self.api_retries.as_ref().map(|v| v.span().start),
            ),
            (
                "api_retry_window",
                self.api_retry_window.as_ref().map(|v| v.span().start),
            ),
        ];
        match spans.into_iter().find(|(_, span)| span.is_some()) {
            Some((name, span)) => Err(InputError::new(
                file,
                format!("`{name}` belongs to agent workers (kind = \"codex\" or \"claude\")"),
            )
            .key(format!("{key}.{name}"))
            .at_offset(source, span)
            .fix("remove it, or put the program and its arguments in `command`")),
            None => Ok(()),
        }
    }

    fn agent_config(
        &self,
        agent: Agent,
        key: &str,
        file: &Path,
        source: &str,
        base_dir: &Path,
    ) -> Result<AgentConfig, InputError> {
        if let Some(command) = &self.command {
            return Err(InputError::new(
                file,
                format!("a {agent} worker is started by ccfan; it takes no `command`"),
            )
            .key(format!("{key}.command"))
            .at_offset(source, Some(command.span().start))
            .fix(format!(
                "remove `command`; use `program` for the path of the `{agent}` binary and `args` for extra flags"
            )));
        }
        let program = match &self.program {
            None => agent.default_program().to_string(),
            Some(program) if program.get_ref().trim().is_empty() => {
                return Err(InputError::new(file, "`program` must not be empty")
                    .key(format!("{key}.program"))
                    .at_offset(source, Some(program.span().start))
                    .fix(format!(
                        "write program = \"{}\" or a path",
                        agent.default_program()
                    )));
            }
            Some(program) => {
                let path = Path::new(program.get_ref().as_str());
                if program.get_ref().contains('/') && path.is_relative() {
                    base_dir.join(path).to_string_lossy().into_owned()
                } else {
                    program.get_ref().clone()
                }
            }
        };
        if let Some(turns) = &self.max_turns
            && *turns.get_ref() == 0
        {
            return Err(InputError::new(file, "`max_turns` must be at least 1")
                .key(format!("{key}.max_turns"))
                .at_offset(source, Some(turns.span().start))
                .fix("write max_turns = 30, say, or leave it out for no limit"));
        }
        let defaults = crate::model::ApiRetryLimit::default();
        let api_retry = crate::model::ApiRetryLimit {
            retries: self
                .api_retries
                .as_ref()
                .map_or(defaults.retries, |n| *n.get_ref()),
            window: match &self.api_retry_window {
                Some(value) => {
                    super::duration(file, source, &format!("{key}.api_retry_window"), value)?
                }
                None => defaults.window,
            },
        };
        if api_retry.retries == 0 || api_retry.window.is_zero() {
            return Err(InputError::new(
                file,
                "`api_retries` and `api_retry_window` must be more than 0",
            )
            .key(format!("{key}.api_retries"))
            .fix("leave them out for the defaults (6 retries, 60s), or write api_retries = 3, api_retry_window = \"30s\""));
        }
        Ok(AgentConfig {
            api_retry,
            program,
            model: self.model.clone(),
            args: self
                .args
                .as_ref()
                .map(|args| args.get_ref().clone())
                .unwrap_or_default(),
            max_turns: self.max_turns.as_ref().map(|turns| *turns.get_ref()),
        })
    }
}
/// Adds a built-in profile for each agent CLI found on this machine that the policy does not define itself
/// (`codex`, `claude`: the agent with its own defaults, as `[workers.codex] kind = "codex"` would), and makes the
/// agent the default worker when it is the only one found and the policy names neither a default nor any profile
/// of its own — so a repository with no `ccfan.toml` can delegate to whatever agent is installed.
pub fn add_installed_agents(policy: &mut super::Policy, installed: &[Agent]) {
    let had_profiles = !policy.workers.is_empty();
    for agent in installed {
        let name = agent.name();
        if policy.workers.contains_key(name) {
            continue;
        }
        let section: Result<WorkerSection, _> = toml::from_str(&format!("kind = \"{name}\""));
        let profile = section
            .map_err(|error| error.to_string())
            .and_then(|section| {
                section
                    .resolve(name, Path::new("<built-in>"), "", Path::new("."))
                    .map_err(|error| error.to_string())
            });
        match profile {
            Ok(profile) => {
                policy.workers.insert(name.to_string(), profile);
            }
            Err(error) => tracing::warn!("cannot make the built-in {name} profile: {error}"),
        }
    }
    if let ([only], None, false) = (installed, &policy.default_worker, had_profiles) {
        policy.default_worker = Some(only.name().to_string());
    }
}
