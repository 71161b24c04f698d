//! Stage 3 (run worker), agent workers: the running tally of one attempt's events — its session, what it is
//! doing now, the commands it ran, the files it changed, its usage — and, once it ends, the problems the gate's
//! worker stage reports (turn failed, API error, max turns, a stream cut short, permission denials).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;

use super::{Agent, AgentEvent, ResultEvent, Usage};
use crate::model::{ApiRetryLimit, ExitStatus};

/// Commands kept in the summary (the newest; `commands_run` counts them all).
const KEEP_COMMANDS: usize = 20;
/// Files listed in the summary (`files_changed_count` counts them all).
const KEEP_FILES: usize = 200;
/// Errors and permission denials kept in the summary.
const KEEP_NOTES: usize = 50;
/// Characters kept of a message, command or error.
const KEEP_CHARS: usize = 2000;

pub use crate::model::agent::{AgentFailure, AgentSummary, CommandRun};

/// A problem the gate's worker stage reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The finding's rule id.
    pub rule: &'static str,
    /// What happened.
    pub message: String,
    /// Whether it blocks (an error) or only warns.
    pub blocking: bool,
}

/// Folds an attempt's events into its [`AgentSummary`].
#[derive(Debug)]
pub struct Tally {
    summary: AgentSummary,
    worktree: std::path::PathBuf,
    max_turns: Option<u32>,
    running: Vec<(String, String)>,
    files: BTreeSet<String>,
    steps: u32,
    baseline: Usage,
    api_retry: ApiRetryLimit,
    /// Retries of the model API since its last answer.
    retrying: Option<Retrying>,
    /// The last retry seen in the attempt (a failure after it is the API's, not the task's).
    last_retry: Option<(String, Option<u16>)>,
    /// Usage per model message while the agent streams (Claude Code), until its result gives the total.
    live: std::collections::BTreeMap<String, Usage>,
}

/// An agent retrying its model API since `since`.
#[derive(Debug, Clone)]
struct Retrying {
    since: Instant,
    count: u32,
}

impl Tally {
    /// A tally for an attempt of `agent` in `worktree`. `baseline` is what earlier attempts of a resumed session
    /// used: Codex reports a resumed thread's tokens, and Claude Code a resumed session's cost, for the whole
    /// session, and the attempt is billed only its own share.
    pub fn new(
        agent: Agent,
        worktree: &Path,
        max_turns: Option<u32>,
        resumed: bool,
        baseline: Usage,
        api_retry: ApiRetryLimit,
    ) -> Tally {
        Tally {
            summary: AgentSummary {
                agent,
                session_id: None,
                resumed,
                current: Some("starting".to_string()),
                turns: 0,
                commands_run: 0,
                commands: Vec::new(),
                files_changed: Vec::new(),
                files_changed_count: 0,
                final_message: None,
                usage: Usage::default(),
                model: None,
                finished: false,
                failure: None,
                errors: Vec::new(),
                permission_denials: Vec::new(),
                stopped_at_max_turns: false,
                unknown_events: 0,
                unparsable_lines: 0,
            },
            worktree: worktree.to_path_buf(),
            max_turns,
            running: Vec::new(),
            files: BTreeSet::new(),
            steps: 0,
            baseline,
            api_retry,
            retrying: None,
            last_retry: None,
            live: std::collections::BTreeMap::new(),
        }
    }

    /// Takes one event. Returns why the worker must stop, when it went past a limit ccfan enforces (Codex has
    /// no turn limit of its own, so ccfan counts its tool calls and messages).
    pub fn observe(&mut self, event: AgentEvent) -> Option<String> {
        self.observe_at(event, Instant::now())
    }

    /// [`Tally::observe`] at time `now`.
    pub fn observe_at(&mut self, event: AgentEvent, now: Instant) -> Option<String> {
        // Anything but a retry or a failure means the API answered: a retry streak ends.
        match &event {
            AgentEvent::ApiRetry { .. }
            | AgentEvent::Error { .. }
            | AgentEvent::TurnFailed { .. }
            | AgentEvent::Result(_)
            | AgentEvent::Unparsable => {}
            AgentEvent::Session { .. }
            | AgentEvent::Model { .. }
            | AgentEvent::TurnStarted
            | AgentEvent::Message { .. }
            | AgentEvent::Command { .. }
            | AgentEvent::FileChange { .. }
            | AgentEvent::Tool { .. }
            | AgentEvent::TurnCompleted { .. }
            | AgentEvent::MessageUsage { .. }
            | AgentEvent::Unknown { .. } => self.activity(),
        }
        let summary = &mut self.summary;
        match event {
            AgentEvent::ApiRetry {
                attempt,
                of,
                status,
                message,
            } => {
                let counter = match (attempt, of) {
                    (Some(n), Some(of)) => format!(" {n}/{of}"),
                    (Some(n), None) => format!(" {n}"),
                    (None, _) => String::new(),
                };
                summary.current = Some(format!(
                    "model API unreachable (retrying{counter}: {})",
                    clip(&message)
                ));
                let retrying = self.retrying.get_or_insert(Retrying {
                    since: now,
                    count: 0,
                });
                retrying.count += 1;
                self.last_retry = Some((clip(&message), status));
                return self.check_at(now);
            }
            AgentEvent::Session { id } => summary.session_id = Some(id),
            AgentEvent::Model { name } => summary.model = Some(name),
            AgentEvent::TurnStarted => summary.current = Some("thinking".to_string()),
            AgentEvent::Message { text } => {
                self.steps += 1;
                summary.current = Some("writing its answer".to_string());
                summary.final_message = Some(clip(&text));
            }
            AgentEvent::Command {
                id,
                command,
                exit_code: _,
                done: false,
            } => {
                self.steps += 1;
                summary.current = Some(format!("running `{}`", one_line(&command)));
                self.running.push((id, command));
            }
            AgentEvent::Command {
                id,
                command,
                exit_code,
                done: true,
            } => {
                let started = self
                    .running
                    .iter()
                    .position(|(known, _)| *known == id)
                    .map(|at| self.running.remove(at).1);
                let command = match (started, command.is_empty()) {
                    (Some(started), true) => started,
                    (_, false) => command,
                    // A result of a tool that was not a shell command.
                    (None, true) => return None,
                };
                summary.commands_run += 1;
                summary.commands.push(CommandRun {
                    command: clip(&command),
                    exit_code,
                });
                if summary.commands.len() > KEEP_COMMANDS {
                    summary.commands.remove(0);
                }
                summary.current = Some("thinking".to_string());
            }
            AgentEvent::FileChange { paths } => {
                self.steps += 1;
                let paths: Vec<String> =
                    paths.iter().map(|p| relative(&self.worktree, p)).collect();
                if let Some(first) = paths.first() {
                    summary.current = Some(format!("editing {first}"));
                }
                self.files.extend(paths);
                summary.files_changed_count = self.files.len();
                summary.files_changed = self.files.iter().take(KEEP_FILES).cloned().collect();
            }
            AgentEvent::Tool { name } => {
                self.steps += 1;
                summary.current = Some(format!("using {name}"));
            }
            AgentEvent::MessageUsage { id, usage } => self.message_usage(id, usage),
            AgentEvent::TurnCompleted { usage } => {
                let own = usage.minus(Usage {
                    cost_usd: None,
                    ..self.baseline
                });
                summary.usage = summary.usage.plus(own);
                summary.finished = true;
                summary.current = Some("done".to_string());
            }
            AgentEvent::TurnFailed { message } => {
                summary.finished = true;
                summary.current = Some("failed".to_string());
                // A turn that failed after the agent retried its API failed for the API's sake.
                summary.failure = Some(match &self.last_retry {
                    Some((retried, status)) => AgentFailure::ApiError {
                        status: *status,
                        message: clip(&format!(
                            "model API unreachable ({retried}); the agent gave up: {message}"
                        )),
                    },
                    None => AgentFailure::TurnFailed {
                        message: clip(&message),
                    },
                });
            }
            AgentEvent::Error { message } => {
                if summary.errors.len() < KEEP_NOTES {
                    summary.errors.push(clip(&message));
                    summary.errors.dedup();
                }
            }
            AgentEvent::Result(result) => self.result(result),
            AgentEvent::Unparsable => summary.unparsable_lines += 1,
            AgentEvent::Unknown { .. } => summary.unknown_events += 1,
        }
        // Claude's own count (from its result) wins once it ended.
        if self.summary.agent == Agent::Codex || !self.summary.finished {
            self.summary.turns = self.steps;
        }
        match self.max_turns {
            Some(limit)
                if self.summary.agent == Agent::Codex
                    && self.steps > limit
                    && !self.summary.stopped_at_max_turns =>
            {
                self.summary.stopped_at_max_turns = true;
                self.summary.failure = Some(AgentFailure::MaxTurns { limit: Some(limit) });
                Some(format!("max_turns of {limit}"))
            }
            _ => None,
        }
    }

    /// The model answered (an event, or a line of a kind ccfan does not tally, such as Codex's reasoning): a retry
    /// streak, and the memory of it, end.
    pub fn activity(&mut self) {
        self.retrying = None;
        self.last_retry = None;
    }

    /// Whether the agent has been retrying its model API past its limit (`api_retries` events, or `api_retry_window`
    /// since the first retry without an answer); if so, records the failure and returns why ccfan stops it. Called
    /// on every event and while the stream is idle, since an agent can wait silently for minutes between retries.
    pub fn check_at(&mut self, now: Instant) -> Option<String> {
        let retrying = self.retrying.as_ref()?;
        let waited = now.saturating_duration_since(retrying.since);
        let limit = self.api_retry;
        if self.summary.finished
            || matches!(self.summary.failure, Some(AgentFailure::ApiError { .. }))
            || (retrying.count < limit.retries && waited < limit.window)
        {
            return None;
        }
        let (last, status) = self.last_retry.clone().unwrap_or_default();
        self.summary.current = Some("model API unreachable: stopped".to_string());
        self.summary.failure = Some(AgentFailure::ApiError {
            status,
            message: format!(
                "model API unreachable: {} retries over {}s without an answer, the last: {last}",
                retrying.count,
                waited.as_secs()
            ),
        });
        Some(format!(
            "model API retry limit ({} retries or {}s, worker api_retries / api_retry_window)",
            limit.retries,
            limit.window.as_secs()
        ))
    }

    /// A message's usage so far: the attempt's usage is the sum over its messages until the result says.
    fn message_usage(&mut self, id: String, usage: Usage) {
        if self.summary.finished {
            return;
        }
        let before = self.live_sum();
        self.live.insert(id, usage);
        self.summary.usage = self.summary.usage.minus(before).plus(self.live_sum());
    }

    fn live_sum(&self) -> Usage {
        self.live
            .values()
            .fold(Usage::default(), |sum, usage| sum.plus(*usage))
    }

    fn result(&mut self, result: ResultEvent) {
        // The result's total replaces the live estimate.
        let estimate = self.live_sum();
        self.live.clear();
        let summary = &mut self.summary;
        summary.usage = summary.usage.minus(estimate);
        summary.finished = true;
        let own_cost = result.usage.minus(Usage {
            cost_usd: self.baseline.cost_usd,
            ..Usage::default()
        });
        summary.usage = summary.usage.plus(own_cost);
        if let Some(turns) = result.num_turns {
            summary.turns = turns;
        }
        summary.permission_denials = result
            .permission_denials
            .iter()
            .take(KEEP_NOTES)
            .map(|d| clip(d))
            .collect();
        if let Some(text) = result.result.as_deref().filter(|t| !t.trim().is_empty()) {
            summary.final_message = Some(clip(text));
        }
        summary.current = Some(if result.is_error { "failed" } else { "done" }.to_string());
        if !result.is_error {
            return;
        }
        let message = result
            .result
            .clone()
            .or_else(|| result.errors.first().cloned())
            .unwrap_or_else(|| result.subtype.clone());
        let reason = result.terminal_reason.as_deref().unwrap_or("");
        summary.failure = Some(
            if result.subtype == "error_max_turns" || reason == "max_turns" {
                AgentFailure::MaxTurns {
                    limit: self.max_turns,
                }
            } else if result.api_error_status.is_some()
                || reason == "api_error"
                || message.starts_with("API Error")
            {
                AgentFailure::ApiError {
                    status: result.api_error_status,
                    message: clip(&message),
                }
            } else {
                AgentFailure::Error {
                    reason: if reason.is_empty() {
                        result.subtype.clone()
                    } else {
                        reason.to_string()
                    },
                    message: clip(&message),
                }
            },
        );
    }

    /// The summary so far.
    pub fn summary(&self) -> &AgentSummary {
        &self.summary
    }

    /// Starts from the model the worker profile names (what its tokens are priced by while it runs); an agent that
    /// names its own (Claude's `system/init`) replaces it.
    pub fn with_model(mut self, model: Option<String>) -> Tally {
        self.summary.model = model;
        self
    }

    /// The summary, once the stream ended.
    pub fn finish(mut self) -> AgentSummary {
        if let Some((_, command)) = self.running.last() {
            self.summary.current = Some(format!("was running `{}`", one_line(command)));
        }
        self.summary
    }
}

/// The most tokens of one kind an attempt is believed to have used (a count past it is a forged or broken one).
const MAX_TOKENS: u64 = 1 << 40;
/// The longest session id taken from a summary.
const MAX_SESSION_ID: usize = 128;

/// Whether `id` is a plain session id (letters, digits, `-`, `_`; not starting with `-`): what Codex and Claude
/// Code name their sessions, and safe as a file name and a command-line argument.
pub fn is_session_id(id: &str) -> bool {
    (1..=MAX_SESSION_ID).contains(&id.len())
        && !id.starts_with('-')
        && id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_'))
}

impl AgentSummary {
    /// A summary made elsewhere held to what a tally here makes: `agent` and `resumed` as ordered, usage counts
    /// clamped and a cost finite and not negative, texts and lists clipped, a session id only if it is plain.
    pub fn bounded(mut self, agent: Agent, resumed: bool) -> AgentSummary {
        self.agent = agent;
        self.resumed = resumed;
        self.session_id = self.session_id.filter(|id| is_session_id(id));
        let usage = &mut self.usage;
        for count in [
            &mut usage.input_tokens,
            &mut usage.cached_input_tokens,
            &mut usage.cache_write_tokens,
            &mut usage.output_tokens,
            &mut usage.reasoning_output_tokens,
        ] {
            *count = (*count).min(MAX_TOKENS);
        }
        usage.cost_usd = usage
            .cost_usd
            .filter(|cost| cost.is_finite() && *cost >= 0.0);
        let fix = |text: &mut String| *text = clip(text);
        self.current.iter_mut().for_each(fix);
        self.final_message.iter_mut().for_each(fix);
        self.model.iter_mut().for_each(fix);
        let keep_last = self.commands.len().saturating_sub(KEEP_COMMANDS);
        self.commands.drain(..keep_last);
        self.commands.iter_mut().for_each(|c| fix(&mut c.command));
        self.files_changed.truncate(KEEP_FILES);
        self.files_changed.iter_mut().for_each(fix);
        for list in [&mut self.errors, &mut self.permission_denials] {
            list.truncate(KEEP_NOTES);
            list.iter_mut().for_each(fix);
        }
        if let Some(
            AgentFailure::TurnFailed { message }
            | AgentFailure::ApiError { message, .. }
            | AgentFailure::Error { message, .. },
        ) = &mut self.failure
        {
            fix(message);
        }
        self
    }

    /// Applies `clean` (secret redaction) to every text that quotes what the agent said or ran.
    pub fn redact(&mut self, clean: impl Fn(&str) -> String) {
        let fix = |text: &mut String| *text = clean(text);
        self.current.iter_mut().for_each(fix);
        self.final_message.iter_mut().for_each(fix);
        self.commands.iter_mut().for_each(|c| fix(&mut c.command));
        self.files_changed.iter_mut().for_each(fix);
        self.errors.iter_mut().for_each(fix);
        self.permission_denials.iter_mut().for_each(fix);
        match &mut self.failure {
            Some(
                AgentFailure::TurnFailed { message }
                | AgentFailure::ApiError { message, .. }
                | AgentFailure::Error { message, .. },
            ) => fix(message),
            Some(AgentFailure::MaxTurns { .. }) | None => {}
        }
    }

    /// What the gate's worker stage reports about this attempt, given how its process ended.
    pub fn problems(&self, exit: &ExitStatus) -> Vec<Problem> {
        let agent = self.agent;
        let mut problems = Vec::new();
        let error = |rule, message| Problem {
            rule,
            message,
            blocking: true,
        };
        match &self.failure {
            Some(AgentFailure::TurnFailed { message }) => problems.push(error(
                "agent-turn-failed",
                format!("{agent}'s turn failed: {message}"),
            )),
            Some(AgentFailure::ApiError { status, message }) => problems.push(error(
                "agent-api-error",
                match status {
                    Some(status) => {
                        format!("the model API answered {status} to {agent}: {message}")
                    }
                    None => format!("the model API failed for {agent}: {message}"),
                },
            )),
            Some(AgentFailure::MaxTurns { limit }) => problems.push(error(
                "agent-max-turns",
                match limit {
                    Some(limit) => format!("{agent} used up its {limit} turns before finishing"),
                    None => format!("{agent} used up its turns before finishing"),
                },
            )),
            Some(AgentFailure::Error { reason, message }) => problems.push(error(
                "agent-error",
                format!("{agent} ended with an error ({reason}): {message}"),
            )),
            None => {}
        }
        let killed = matches!(
            exit,
            ExitStatus::TimedOut
                | ExitStatus::Cancelled
                | ExitStatus::OverLimit { .. }
                | ExitStatus::SpawnFailed { .. }
                | ExitStatus::Lost { .. }
        );
        if !self.finished && !killed {
            problems.push(error(
                "agent-stream-truncated",
                format!(
                    "{agent}'s event stream ended without its final event ({exit}); the attempt may be incomplete"
                ),
            ));
        }
        if !self.permission_denials.is_empty() {
            let shown: Vec<&str> = self
                .permission_denials
                .iter()
                .take(5)
                .map(String::as_str)
                .collect();
            problems.push(Problem {
                rule: "agent-permission-denied",
                message: format!(
                    "{agent} was denied {} tool call(s): {}",
                    self.permission_denials.len(),
                    shown.join("; ")
                ),
                blocking: false,
            });
        }
        problems
    }
}

fn relative(worktree: &Path, path: &str) -> String {
    Path::new(path)
        .strip_prefix(worktree)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| path.to_string())
}

fn clip(text: &str) -> String {
    if text.chars().count() <= KEEP_CHARS {
        return text.to_string();
    }
    let mut clipped: String = text.chars().take(KEEP_CHARS).collect();
    clipped.push('…');
    clipped
}

fn one_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    let short: String = line.chars().take(80).collect();
    if short.len() < text.len() {
        format!("{short}…")
    } else {
        short
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_from_elsewhere_is_held_to_what_a_tally_makes() {
        let mut forged = Tally::new(
            Agent::Claude,
            Path::new("/ccfan/work/tree"),
            None,
            false,
            Usage::default(),
            ApiRetryLimit::default(),
        )
        .finish();
        forged.agent = Agent::Codex;
        forged.session_id = Some("--dangerously-skip-permissions".into());
        forged.usage.input_tokens = u64::MAX;
        forged.usage.output_tokens = 1;
        forged.usage.cost_usd = Some(-1e9);
        forged.commands = (0..1000)
            .map(|n| CommandRun {
                command: format!("{n} {}", "x".repeat(10_000)),
                exit_code: None,
            })
            .collect();
        forged.errors = vec!["e".repeat(100_000); 1000];
        let bounded = forged.bounded(Agent::Claude, true);
        assert_eq!((bounded.agent, bounded.resumed), (Agent::Claude, true));
        assert_eq!(bounded.session_id, None, "not a plain id");
        assert_eq!(bounded.usage.input_tokens, MAX_TOKENS);
        assert_eq!(bounded.usage.cost_usd, None);
        assert_eq!(bounded.commands.len(), KEEP_COMMANDS);
        assert!(
            bounded.commands[KEEP_COMMANDS - 1]
                .command
                .starts_with("999 ")
        );
        assert!(
            bounded
                .commands
                .iter()
                .all(|c| c.command.chars().count() <= KEEP_CHARS + 1)
        );
        assert_eq!(bounded.errors.len(), KEEP_NOTES);
        let total = Usage::default().plus(bounded.usage).plus(bounded.usage);
        assert_eq!(total.input_tokens, 2 * MAX_TOKENS, "sums do not wrap");
        assert!(is_session_id("0597b2c5-3d9b-483a-a382-b50932614d57"));
        assert!(!is_session_id("") && !is_session_id("-x") && !is_session_id("a/b"));
    }

    fn replay(agent: Agent, name: &str, max_turns: Option<u32>) -> (AgentSummary, Vec<String>) {
        let path = format!("{}/fixtures/transcripts/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(path).unwrap();
        let mut tally = Tally::new(
            agent,
            Path::new("/root/fm/repo"),
            max_turns,
            false,
            Usage::default(),
            ApiRetryLimit::default(),
        );
        let stops = text
            .lines()
            .flat_map(|line| agent.parse_line(line))
            .filter_map(|event| tally.observe(event))
            .collect();
        (tally.finish(), stops)
    }

    fn rules(summary: &AgentSummary, exit: ExitStatus) -> Vec<&'static str> {
        summary.problems(&exit).iter().map(|p| p.rule).collect()
    }

    #[test]
    fn a_good_codex_run_has_no_problems() {
        let (summary, stops) = replay(Agent::Codex, "codex-0.169.0-edit.jsonl", None);
        assert!(stops.is_empty());
        assert_eq!(summary.commands_run, 1);
        assert_eq!(summary.files_changed, ["notes.txt"]);
        assert_eq!(summary.turns, 3);
        assert!(summary.finished && summary.failure.is_none());
        assert_eq!(summary.usage.output_tokens, 156);
        assert!(rules(&summary, ExitStatus::Code { code: 0 }).is_empty());
    }

    #[test]
    fn codex_turns_are_counted_and_stopped() {
        let (summary, stops) = replay(Agent::Codex, "codex-0.169.0-edit.jsonl", Some(1));
        assert_eq!(stops, ["max_turns of 1"]);
        assert!(summary.stopped_at_max_turns);
        let exit = ExitStatus::OverLimit {
            limit: "max_turns of 1".into(),
        };
        assert_eq!(rules(&summary, exit), ["agent-max-turns"]);
    }

    #[test]
    fn failures_map_to_rules() {
        let (summary, _) = replay(Agent::Codex, "codex-0.169.0-model-error.jsonl", None);
        assert_eq!(
            rules(&summary, ExitStatus::Code { code: 1 }),
            ["agent-turn-failed"]
        );
        let (summary, _) = replay(Agent::Claude, "claude-2.1.330-api-error.jsonl", None);
        let problems = summary.problems(&ExitStatus::Code { code: 1 });
        assert_eq!(problems[0].rule, "agent-api-error");
        assert!(
            problems[0].message.contains("answered 400")
                && problems[0].message.contains("model exploded"),
            "{problems:?}"
        );
        let (summary, _) = replay(Agent::Claude, "claude-2.1.330-max-turns.jsonl", Some(2));
        assert_eq!(
            rules(&summary, ExitStatus::Code { code: 1 }),
            ["agent-max-turns"]
        );
    }

    #[test]
    fn a_cut_stream_is_truncated_unless_ccfan_stopped_it() {
        for (agent, name) in [
            (Agent::Codex, "derived-codex-truncated.jsonl"),
            (Agent::Claude, "derived-claude-truncated.jsonl"),
        ] {
            let (summary, _) = replay(agent, name, None);
            assert_eq!(
                rules(&summary, ExitStatus::Code { code: 0 }),
                ["agent-stream-truncated"]
            );
            assert!(rules(&summary, ExitStatus::TimedOut).is_empty());
            assert!(summary.current.unwrap().starts_with("was running `"));
        }
    }

    #[test]
    fn a_claude_run_takes_its_own_turn_count_and_cost() {
        let (summary, _) = replay(Agent::Claude, "claude-2.1.330-edit.jsonl", None);
        assert_eq!(summary.turns, 3);
        assert_eq!(summary.commands_run, 1);
        assert_eq!(
            summary.commands[0].command,
            "echo hello from claude > cshell.txt"
        );
        assert_eq!(summary.usage.cost_usd, Some(0.014544));
        assert_eq!(
            summary.session_id.as_deref(),
            Some("c976309a-16b6-4047-b788-de0ed3a02673")
        );
        assert!(summary.final_message.unwrap().contains("## Summary"));
    }

    #[test]
    fn a_claude_run_counts_its_usage_live_until_its_result_gives_the_total() {
        let path = format!(
            "{}/fixtures/transcripts/claude-2.1.330-edit.jsonl",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(path).unwrap();
        let mut tally = Tally::new(
            Agent::Claude,
            Path::new("/root/fm/repo"),
            None,
            false,
            Usage::default(),
            ApiRetryLimit::default(),
        );
        let mut seen = Vec::new();
        for line in text.lines() {
            for event in Agent::Claude.parse_line(line) {
                tally.observe(event);
            }
            seen.push(tally.summary.usage);
        }
        // Three messages of 1001, 1002 and 1003 input tokens, each reported once per event it came in.
        let before_result = seen[seen.len() - 2];
        assert_eq!(
            (before_result.input_tokens, before_result.output_tokens),
            (3006, 3)
        );
        assert_eq!(before_result.cost_usd, None);
        assert!(seen[1].input_tokens == 1001 && seen[1].output_tokens == 1);
        // The result's total replaces the estimate; it is not added to it.
        let last = tally.finish().usage;
        assert_eq!((last.input_tokens, last.output_tokens), (3006, 126));
        assert_eq!(last.cost_usd, Some(0.014544));
    }

    fn replay_resumed(agent: Agent, name: &str, earlier: Usage) -> Usage {
        let path = format!("{}/fixtures/transcripts/{name}", env!("CARGO_MANIFEST_DIR"));
        let mut tally = Tally::new(
            agent,
            Path::new("/w"),
            None,
            true,
            earlier,
            ApiRetryLimit::default(),
        );
        for line in std::fs::read_to_string(path).unwrap().lines() {
            for event in agent.parse_line(line) {
                tally.observe(event);
            }
        }
        tally.finish().usage
    }

    #[test]
    fn a_resumed_session_is_billed_only_its_own_share() {
        // Recorded: codex reported 5009 input tokens for the resumed thread, 3006 of them from the first attempt.
        let earlier = Usage {
            input_tokens: 3006,
            cached_input_tokens: 300,
            cache_write_tokens: 0,
            output_tokens: 156,
            reasoning_output_tokens: 30,
            cost_usd: None,
        };
        let usage = replay_resumed(Agent::Codex, "codex-0.169.0-resume.jsonl", earlier);
        assert_eq!((usage.input_tokens, usage.output_tokens), (2003, 103));
        // Claude Code: tokens per run, cost per session.
        let earlier = Usage {
            input_tokens: 3006,
            cost_usd: Some(0.014544),
            ..Usage::default()
        };
        let usage = replay_resumed(Agent::Claude, "claude-2.1.330-resume.jsonl", earlier);
        assert_eq!(usage.input_tokens, 1004);
        assert!((usage.cost_usd.unwrap() - (0.018216 - 0.014544)).abs() < 1e-9);
    }

    /// Replays a recorded transcript with the events `seconds` apart; returns the summary and why ccfan stopped
    /// the worker (if it did), and after how many lines.
    fn replay_timed(
        agent: Agent,
        name: &str,
        limit: ApiRetryLimit,
        seconds: u64,
    ) -> (AgentSummary, Option<(String, usize)>) {
        let path = format!("{}/fixtures/transcripts/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(path).unwrap();
        let mut tally = Tally::new(agent, Path::new("/w"), None, false, Usage::default(), limit);
        let start = Instant::now();
        let mut stopped = None;
        for (index, line) in text.lines().enumerate() {
            let now = start + std::time::Duration::from_secs(seconds * index as u64);
            for event in agent.parse_line(line) {
                if let Some(why) = tally.observe_at(event, now) {
                    stopped.get_or_insert((why, index + 1));
                }
            }
            if let Some(why) = tally.check_at(now) {
                stopped.get_or_insert((why, index + 1));
            }
            if stopped.is_some() {
                break; // ccfan kills the worker
            }
        }
        (tally.finish(), stopped)
    }

    fn api_error(summary: &AgentSummary) -> String {
        match &summary.failure {
            Some(AgentFailure::ApiError { message, .. }) => message.clone(),
            other => panic!("not an API error: {other:?}"),
        }
    }

    #[test]
    fn codex_that_gives_up_on_a_5xx_is_an_api_error_and_shows_its_retries() {
        let (summary, stopped) = replay_timed(
            Agent::Codex,
            "codex-0.169.0-api-503.jsonl",
            ApiRetryLimit::default(),
            1,
        );
        assert_eq!(stopped, None, "Codex gave up by itself after 5 retries");
        assert!(api_error(&summary).contains("503"), "{summary:?}");
        assert!(
            summary
                .errors
                .iter()
                .all(|e| !e.starts_with("Reconnecting"))
        );
        assert_eq!(
            rules(&summary, ExitStatus::Code { code: 1 }),
            ["agent-api-error"]
        );
        // While it retried, status said so.
        let mut tally = Tally::new(
            Agent::Codex,
            Path::new("/w"),
            None,
            false,
            Usage::default(),
            ApiRetryLimit::default(),
        );
        for event in Agent::Codex.parse_line(
            r#"{"type":"error","message":"Reconnecting... 2/5 (unexpected status 503 Service Unavailable: down)"}"#,
        ) {
            tally.observe(event);
        }
        let current = tally.summary().current.clone().unwrap();
        assert!(
            current.starts_with("model API unreachable (retrying 2/5: unexpected status 503"),
            "{current}"
        );
    }

    #[test]
    fn codex_waiting_for_network_for_ever_is_stopped_after_the_window() {
        let limit = ApiRetryLimit {
            retries: 100,
            window: std::time::Duration::from_secs(60),
        };
        // Retries 20 s apart: the third (40 s) is inside the window, the fourth (60 s) is past it.
        let (summary, stopped) = replay_timed(
            Agent::Codex,
            "codex-0.169.0-api-unreachable.jsonl",
            limit,
            20,
        );
        let (why, line) = stopped.expect("stopped");
        assert!(why.contains("model API retry limit"), "{why}");
        assert_eq!(line, 6);
        assert!(
            api_error(&summary).contains("waiting for network"),
            "{summary:?}"
        );
        let exit = ExitStatus::OverLimit { limit: why };
        assert!(rules(&summary, exit).contains(&"agent-api-error"));
    }

    #[test]
    fn claude_retrying_is_stopped_after_its_retry_budget() {
        let limit = ApiRetryLimit {
            retries: 3,
            window: std::time::Duration::from_secs(600),
        };
        let (summary, stopped) = replay_timed(
            Agent::Claude,
            "claude-2.1.330-api-unreachable.jsonl",
            limit,
            1,
        );
        let (_, line) = stopped.expect("stopped");
        assert_eq!(line, 4, "init, then the third api_retry");
        assert!(api_error(&summary).contains("3 retries"), "{summary:?}");
        // With the default budget it gives up by itself (10 retries): still an API error.
        let (summary, stopped) = replay_timed(
            Agent::Claude,
            "claude-2.1.330-api-unreachable.jsonl",
            ApiRetryLimit {
                retries: 50,
                window: std::time::Duration::from_secs(600),
            },
            1,
        );
        assert_eq!(stopped, None);
        assert!(api_error(&summary).contains("ECONNREFUSED"), "{summary:?}");
    }

    #[test]
    fn an_answer_ends_a_retry_streak() {
        let limit = ApiRetryLimit {
            retries: 2,
            window: std::time::Duration::from_secs(60),
        };
        let mut tally = Tally::new(
            Agent::Codex,
            Path::new("/w"),
            None,
            false,
            Usage::default(),
            limit,
        );
        let retry = r#"{"type":"error","message":"Reconnecting... 1/5 (unexpected status 502 Bad Gateway: x)"}"#;
        let now = Instant::now();
        for line in [
            retry,
            r#"{"type":"item.completed","item":{"id":"i","type":"agent_message","text":"hi"}}"#,
            retry,
        ] {
            for event in Agent::Codex.parse_line(line) {
                assert_eq!(tally.observe_at(event, now), None);
            }
        }
        assert!(
            tally
                .check_at(now + std::time::Duration::from_secs(59))
                .is_none()
        );
        assert!(
            tally
                .check_at(now + std::time::Duration::from_secs(61))
                .is_some()
        );

        // A turn that fails after the API answered again is the turn's failure, not the API's.
        let mut tally = Tally::new(
            Agent::Codex,
            Path::new("/w"),
            None,
            false,
            Usage::default(),
            limit,
        );
        for line in [
            retry,
            r#"{"type":"item.completed","item":{"id":"r","type":"reasoning","text":"hm"}}"#,
            r#"{"type":"turn.failed","error":{"message":"context window exceeded"}}"#,
        ] {
            let events = Agent::Codex.parse_line(line);
            if events.is_empty() {
                tally.activity();
            }
            for event in events {
                tally.observe_at(event, now);
            }
        }
        assert!(matches!(
            tally.summary().failure,
            Some(AgentFailure::TurnFailed { .. })
        ));
    }

    #[test]
    fn denials_warn_and_redaction_reaches_every_text() {
        let mut tally = Tally::new(
            Agent::Claude,
            Path::new("/w"),
            None,
            false,
            Usage::default(),
            ApiRetryLimit::default(),
        );
        tally.observe(AgentEvent::Result(ResultEvent {
            subtype: "success".into(),
            permission_denials: vec!["Bash: cat secret".into()],
            result: Some("used secret".into()),
            ..ResultEvent::default()
        }));
        let mut summary = tally.finish();
        let problems = summary.problems(&ExitStatus::Code { code: 0 });
        assert_eq!(problems.len(), 1);
        assert!(!problems[0].blocking && problems[0].message.contains("Bash: cat secret"));
        summary.redact(|text| text.replace("secret", "[REDACTED]"));
        assert_eq!(summary.final_message.as_deref(), Some("used [REDACTED]"));
        assert_eq!(summary.permission_denials, ["Bash: cat [REDACTED]"]);
    }
}
