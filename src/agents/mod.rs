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

use crate::model::AgentConfig;

pub use crate::model::agent::{Agent, Usage};

impl Agent {
    /// Reads one line of the agent's stdout.
    pub fn parse_line(self, line: &str) -> Vec<AgentEvent> {
        match self {
            Agent::Codex => codex::parse_line(line),
            Agent::Claude => claude::parse_line(line),
        }
    }

    /// The command line of one attempt: a new session with `prompt`, or `resume` of an earlier one; `planning`:
    /// the agent only plans (Claude Code in its plan permission mode; ccfan's sandbox makes the tree read-only for
    /// both).
    pub fn argv(
        self,
        config: &AgentConfig,
        prompt: &str,
        resume: Option<&str>,
        planning: bool,
    ) -> Vec<String> {
        match self {
            Agent::Codex => codex::argv(config, prompt, resume),
            Agent::Claude => claude::argv(config, prompt, resume, planning),
        }
    }
}

/// Variables ccfan always sets for `agent`: Claude Code is told its sandbox is the boundary (it refuses to bypass
/// its permission prompts as root otherwise), and to send nothing but the model's traffic.
pub fn fixed_env(agent: Agent) -> &'static [(&'static str, &'static str)] {
    match agent {
        Agent::Codex => &[],
        Agent::Claude => &[
            ("IS_SANDBOX", "1"),
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
            ("DISABLE_AUTOUPDATER", "1"),
        ],
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
    /// The model the agent runs (Claude's `system/init`): what its tokens are priced by.
    Model {
        /// The model's name, e.g. `claude-sonnet-4-5-20250929`.
        name: String,
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
    /// What one model message used so far, as Claude Code streams it: a live estimate (its output count grows
    /// while the message streams), replaced by the total in its result.
    MessageUsage {
        /// The message's id (one message arrives as several events).
        id: String,
        /// Its usage.
        usage: Usage,
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
