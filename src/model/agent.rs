//! Plain data of agent workers — which agent, what it used, what ccfan kept of an attempt — shared by the agent
//! driver (`agents`), the store and the status views, without any of them reaching into the driver.

use serde::{Deserialize, Serialize};

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
    /// Input tokens written to the provider's prompt cache (Anthropic prices them apart).
    #[serde(default)]
    pub cache_write_tokens: u64,
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
            input_tokens: self.input_tokens.saturating_add(other.input_tokens),
            cached_input_tokens: self
                .cached_input_tokens
                .saturating_add(other.cached_input_tokens),
            cache_write_tokens: self
                .cache_write_tokens
                .saturating_add(other.cache_write_tokens),
            output_tokens: self.output_tokens.saturating_add(other.output_tokens),
            reasoning_output_tokens: self
                .reasoning_output_tokens
                .saturating_add(other.reasoning_output_tokens),
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
            cache_write_tokens: self
                .cache_write_tokens
                .saturating_sub(earlier.cache_write_tokens),
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

/// How an agent's run went wrong, as the agent said it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AgentFailure {
    /// Codex reported `turn.failed`.
    TurnFailed {
        /// Its message.
        message: String,
    },
    /// The model API answered with an error.
    ApiError {
        /// The HTTP status, when known.
        status: Option<u16>,
        /// The message.
        message: String,
    },
    /// The agent used up its turns.
    MaxTurns {
        /// The limit.
        limit: Option<u32>,
    },
    /// Any other error result.
    Error {
        /// The agent's subtype or reason.
        reason: String,
        /// The message.
        message: String,
    },
}

/// One command the agent ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRun {
    /// The command line.
    pub command: String,
    /// Its exit code, when the agent says.
    pub exit_code: Option<i32>,
}

/// Everything ccfan keeps of an agent's attempt (`agent.json`, and the live progress in the store).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentSummary {
    /// Which agent.
    pub agent: Agent,
    /// Its session (thread) id: a rework resumes it.
    pub session_id: Option<String>,
    /// Whether this attempt resumed an earlier session.
    pub resumed: bool,
    /// What it is doing now (while running) or did last.
    pub current: Option<String>,
    /// Model turns: Claude's own count when it gives one, else the tool calls and messages ccfan saw.
    pub turns: u32,
    /// Commands it ran.
    pub commands_run: u32,
    /// The newest commands.
    pub commands: Vec<CommandRun>,
    /// Files its edit tools changed (relative to the worktree where possible).
    pub files_changed: Vec<String>,
    /// How many files its edit tools changed.
    pub files_changed_count: usize,
    /// Its last message.
    pub final_message: Option<String>,
    /// Tokens and cost.
    pub usage: Usage,
    /// The model, as the agent reported it or the worker profile names it (what the price table prices).
    #[serde(default)]
    pub model: Option<String>,
    /// Whether the stream reached its end (`turn.completed`, `turn.failed` or `result`).
    pub finished: bool,
    /// What went wrong, as the agent reported it.
    pub failure: Option<AgentFailure>,
    /// Errors it reported along the way (it may have recovered).
    pub errors: Vec<String>,
    /// Tool calls it was denied.
    pub permission_denials: Vec<String>,
    /// Whether ccfan stopped it for going past `max_turns`.
    pub stopped_at_max_turns: bool,
    /// Events of types ccfan does not know.
    pub unknown_events: u32,
    /// Lines that were not JSON.
    pub unparsable_lines: u32,
}
