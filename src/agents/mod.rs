//! Stage 3 (run worker), agent workers: how ccfan drives the Codex CLI and Claude Code — their command lines,
//! their event streams read into ccfan's own [`AgentEvent`]s, usage and cost summed, failures named — so the rest
//! of the pipeline sees one vocabulary whichever agent ran.
//!
//! Parsing is lenient on purpose: both CLIs add event types and fields between releases. Unknown types become
//! [`AgentEvent::Unknown`], missing fields become `None`, and a line that is not JSON is counted, never fatal.

pub mod claude;
pub mod codex;
pub mod home;
pub mod probe;
pub mod prompt;
pub mod tally;

use serde::{Deserialize, Serialize};

use crate::model::AgentConfig;

/// An agent CLI ccfan knows how to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Agent {
    /// OpenAI's Codex CLI (`@openai/codex`).
    Codex,
    /// Anthropic's Claude Code (`@anthropic-ai/claude-code`).
    Claude,
}

impl Agent {
    /// Every agent, in the order `doctor` lists them.
    pub const ALL: [Agent; 2] = [Agent::Codex, Agent::Claude];

    /// The worker kind's name in a policy (`kind = "codex"`).
    pub fn name(self) -> &'static str {
        match self {
            Agent::Codex => "codex",
            Agent::Claude => "claude",
        }
    }

    /// The program looked up on `PATH` when the profile names none.
    pub fn default_program(self) -> &'static str {
        self.name()
    }

    /// How to install it.
    pub fn install_hint(self) -> &'static str {
        match self {
            Agent::Codex => "npm install -g @openai/codex",
            Agent::Claude => "npm install -g @anthropic-ai/claude-code",
        }
    }

    /// Host variables passed to the agent by default: its credentials and where its own state lives. They reach
    /// the worker's environment only, never a log or a stored file.
    pub fn default_pass_env(self) -> &'static [&'static str] {
        match self {
            Agent::Codex => &[
                "CODEX_API_KEY",
                "OPENAI_API_KEY",
                "OPENAI_BASE_URL",
                "CODEX_HOME",
            ],
            Agent::Claude => &[
                "ANTHROPIC_API_KEY",
                "ANTHROPIC_AUTH_TOKEN",
                "ANTHROPIC_BASE_URL",
                "ANTHROPIC_MODEL",
                "CLAUDE_CODE_OAUTH_TOKEN",
                "CLAUDE_CONFIG_DIR",
            ],
        }
    }

    /// Reads one line of the agent's stdout.
    pub fn parse_line(self, line: &str) -> Vec<AgentEvent> {
        match self {
            Agent::Codex => codex::parse_line(line),
            Agent::Claude => claude::parse_line(line),
        }
    }

    /// The command line of one attempt: a new session with `prompt`, or `resume` of an earlier one.
    pub fn argv(self, config: &AgentConfig, prompt: &str, resume: Option<&str>) -> Vec<String> {
        match self {
            Agent::Codex => codex::argv(config, prompt, resume),
            Agent::Claude => claude::argv(config, prompt, resume),
        }
    }
}

impl std::fmt::Display for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Token counts (and cost, where the agent reports one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Input tokens, cached ones included.
    pub input_tokens: u64,
    /// Input tokens served from a cache.
    pub cached_input_tokens: u64,
    /// Output tokens, reasoning included.
    pub output_tokens: u64,
    /// Output tokens spent on reasoning.
    pub reasoning_output_tokens: u64,
    /// Cost in US dollars, when the agent reports it (Claude Code does; Codex does not).
    pub cost_usd: Option<f64>,
}

impl Usage {
    /// The sum of two usages (a cost is known when either knows it).
    pub fn plus(self, other: Usage) -> Usage {
        Usage {
            input_tokens: self.input_tokens + other.input_tokens,
            cached_input_tokens: self.cached_input_tokens + other.cached_input_tokens,
            output_tokens: self.output_tokens + other.output_tokens,
            reasoning_output_tokens: self.reasoning_output_tokens + other.reasoning_output_tokens,
            cost_usd: match (self.cost_usd, other.cost_usd) {
                (None, None) => None,
                (a, b) => Some(a.unwrap_or(0.0) + b.unwrap_or(0.0)),
            },
        }
    }

    /// `self` less `earlier`, never below zero.
    pub fn minus(self, earlier: Usage) -> Usage {
        Usage {
            input_tokens: self.input_tokens.saturating_sub(earlier.input_tokens),
            cached_input_tokens: self
                .cached_input_tokens
                .saturating_sub(earlier.cached_input_tokens),
            output_tokens: self.output_tokens.saturating_sub(earlier.output_tokens),
            reasoning_output_tokens: self
                .reasoning_output_tokens
                .saturating_sub(earlier.reasoning_output_tokens),
            cost_usd: self
                .cost_usd
                .map(|cost| (cost - earlier.cost_usd.unwrap_or(0.0)).max(0.0)),
        }
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        *self == Usage::default()
    }

    /// `12.3k in · 456 out · $0.0123`.
    pub fn short(&self) -> String {
        let tokens = |n: u64| {
            if n >= 10_000 {
                format!("{:.0}k", n as f64 / 1000.0)
            } else if n >= 1000 {
                format!("{:.1}k", n as f64 / 1000.0)
            } else {
                n.to_string()
            }
        };
        let mut text = format!(
            "{} in · {} out",
            tokens(self.input_tokens),
            tokens(self.output_tokens)
        );
        if let Some(cost) = self.cost_usd {
            text.push_str(&format!(" · ${cost:.4}"));
        }
        text
    }
}

/// Something an agent did or reported, in ccfan's vocabulary.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentEvent {
    /// The agent's session (Codex thread id, Claude session id): a rework resumes it.
    Session {
        /// The id.
        id: String,
    },
    /// A turn began (Codex).
    TurnStarted,
    /// Text from the agent (the last one is its final message).
    Message {
        /// The text.
        text: String,
    },
    /// A shell command started (`exit_code: None`) or ended.
    Command {
        /// The agent's id for the call, to pair start and end.
        id: String,
        /// The command line.
        command: String,
        /// Its exit code once it ended (`None` while running, or when the agent does not say).
        exit_code: Option<i32>,
        /// Whether it ended.
        done: bool,
    },
    /// Files the agent changed with its own edit tool.
    FileChange {
        /// Paths as the agent gave them (absolute or relative to the worktree).
        paths: Vec<String>,
    },
    /// Another tool call (MCP, web search, a sub-agent, …).
    Tool {
        /// The tool's name.
        name: String,
    },
    /// A turn ended normally, with what it used (Codex).
    TurnCompleted {
        /// Usage of the turn.
        usage: Usage,
    },
    /// A turn failed (Codex `turn.failed`).
    TurnFailed {
        /// The agent's message.
        message: String,
    },
    /// An error the agent reported while running (it may still recover).
    Error {
        /// The message.
        message: String,
    },
    /// The agent could not reach its model API and is retrying (Codex `Reconnecting... N/M (…)` or `Reconnecting...
    /// waiting for network (…)`, Claude Code `system/api_retry`).
    ApiRetry {
        /// Which retry, when the agent counts them.
        attempt: Option<u32>,
        /// Out of how many, when the agent has a limit.
        of: Option<u32>,
        /// The HTTP status, when there was an answer.
        status: Option<u16>,
        /// What went wrong.
        message: String,
    },
    /// Claude Code's final `result` line.
    Result(ResultEvent),
    /// A line that is not a JSON object (a partial line from a killed process, stray output).
    Unparsable,
    /// An event type ccfan does not know (kept as a count, never an error).
    Unknown {
        /// Its `type`.
        kind: String,
    },
}

/// The fields of Claude Code's `result` line that ccfan uses.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResultEvent {
    /// Whether the run failed (trusted over `subtype`).
    pub is_error: bool,
    /// `success`, `error_max_turns`, `error_during_execution`, …
    pub subtype: String,
    /// Why the loop stopped (`completed`, `api_error`, `max_turns`, …), when given.
    pub terminal_reason: Option<String>,
    /// The HTTP status of an API error, when given.
    pub api_error_status: Option<u16>,
    /// The final text (or the error's text).
    pub result: Option<String>,
    /// Error messages, when given.
    pub errors: Vec<String>,
    /// Model turns taken.
    pub num_turns: Option<u32>,
    /// Usage of the whole session run, with its cost.
    pub usage: Usage,
    /// Tool calls that were denied, as `Tool: input summary`.
    pub permission_denials: Vec<String>,
}

/// Parses a stream line into the event and its `type`; `Err` holds what to report instead (nothing for a blank
/// line, [`AgentEvent::Unparsable`] for one that is not a JSON object).
pub(crate) fn read_event(line: &str) -> Result<(serde_json::Value, String), Vec<AgentEvent>> {
    if line.trim().is_empty() {
        return Err(Vec::new());
    }
    match serde_json::from_str::<serde_json::Value>(line.trim()) {
        Ok(event @ serde_json::Value::Object(_)) => {
            let kind = text(&event, "type").unwrap_or_default();
            Ok((event, kind))
        }
        _ => Err(vec![AgentEvent::Unparsable]),
    }
}

/// The session event of a line that names its session in `key` (nothing when it does not).
pub(crate) fn session(event: &serde_json::Value, key: &str) -> Vec<AgentEvent> {
    text(event, key)
        .map(|id| AgentEvent::Session { id })
        .into_iter()
        .collect()
}

/// The events of a recorded transcript in `fixtures/transcripts/`.
#[cfg(test)]
pub(crate) fn replay_transcript(name: &str, parse: fn(&str) -> Vec<AgentEvent>) -> Vec<AgentEvent> {
    let path = format!("{}/fixtures/transcripts/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().flat_map(parse).collect()
}

/// A string field, or `None`.
pub(crate) fn text(value: &serde_json::Value, key: &str) -> Option<String> {
    value.get(key).and_then(|v| v.as_str()).map(str::to_string)
}

/// A non-negative integer field, or 0.
pub(crate) fn count(value: &serde_json::Value, key: &str) -> u64 {
    value
        .get(key)
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_adds_and_reads_short() {
        let a = Usage {
            input_tokens: 1500,
            output_tokens: 20,
            ..Usage::default()
        };
        let b = Usage {
            input_tokens: 12_000,
            cost_usd: Some(0.5),
            ..Usage::default()
        };
        let sum = a.plus(b);
        assert_eq!(sum.input_tokens, 13_500);
        assert_eq!(sum.cost_usd, Some(0.5));
        assert_eq!(sum.short(), "14k in · 20 out · $0.5000");
        assert_eq!(a.short(), "1.5k in · 20 out");
        assert!(Usage::default().is_empty() && !a.is_empty());
    }
}
