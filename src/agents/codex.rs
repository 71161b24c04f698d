//! Stage 3 (run worker), Codex CLI: the `codex exec --json` command line (and `exec resume` for a rework), and
//! its JSONL events (`thread.started`, `item.*`, `turn.completed|failed`, `error`) read into [`AgentEvent`]s.
//!
//! Codex's own sandbox is turned off (`danger-full-access`): nested namespaces and seccomp do not work inside
//! ccfan's sandbox, which is the boundary — the worker still cannot write outside its worktree.

use serde_json::Value;

use super::{AgentEvent, Usage, count, read_event, session, text};
use crate::model::AgentConfig;

/// Options ccfan always passes; `sandbox_mode` again on `resume`, which has no `-s` and would resume read-only.
const SETTINGS: [&str; 4] = [
    "-c",
    "sandbox_mode=\"danger-full-access\"",
    "-c",
    "approval_policy=\"never\"",
];

/// `codex exec --json … PROMPT`, or `codex exec resume --json … SESSION PROMPT`.
pub fn argv(config: &AgentConfig, prompt: &str, resume: Option<&str>) -> Vec<String> {
    let mut argv = vec![config.program.clone(), "exec".to_string()];
    if resume.is_some() {
        argv.push("resume".to_string());
    }
    argv.extend(["--json", "--skip-git-repo-check"].map(String::from));
    argv.extend(SETTINGS.map(String::from));
    if let Some(model) = &config.model {
        argv.extend(["-m".to_string(), model.clone()]);
    }
    argv.extend(config.args.iter().cloned());
    argv.push("--".to_string());
    argv.extend(resume.map(str::to_string));
    argv.push(prompt.to_string());
    argv
}

/// Reads one line of `codex exec --json` output.
pub fn parse_line(line: &str) -> Vec<AgentEvent> {
    let (event, kind) = match read_event(line) {
        Ok(read) => read,
        Err(events) => return events,
    };
    match kind.as_str() {
        "thread.started" => session(&event, "thread_id"),
        "turn.started" => vec![AgentEvent::TurnStarted],
        "turn.completed" => vec![AgentEvent::TurnCompleted {
            usage: usage(event.get("usage").unwrap_or(&Value::Null)),
        }],
        "turn.failed" => vec![AgentEvent::TurnFailed {
            message: error_message(event.get("error").unwrap_or(&Value::Null)),
        }],
        "error" => {
            let message = error_message(&event);
            vec![retry_event(&message).unwrap_or(AgentEvent::Error { message })]
        }
        "item.started" | "item.updated" | "item.completed" => {
            let item = event.get("item").unwrap_or(&Value::Null);
            let events = item_events(item, kind == "item.completed");
            // An update of a running command is not a second command.
            if kind == "item.updated" {
                events
                    .into_iter()
                    .filter(|e| !matches!(e, AgentEvent::Command { done: false, .. }))
                    .collect()
            } else {
                events
            }
        }
        _ => vec![AgentEvent::Unknown { kind }],
    }
}

/// Codex's retry notices: `Reconnecting... 2/5 (unexpected status 503 …)` while it retries a failed stream, and
/// `Reconnecting... waiting for network (Connection failed: …)` — with no count, since it never gives up on a
/// refused connection by itself.
fn retry_event(message: &str) -> Option<AgentEvent> {
    let rest = message.strip_prefix("Reconnecting...")?.trim_start();
    let (counter, detail) = match rest.split_once(' ') {
        Some((counter, detail)) => (counter, detail),
        None => (rest, ""),
    };
    let counted = counter
        .split_once('/')
        .and_then(|(n, of)| Some((n.parse::<u32>().ok()?, of.parse::<u32>().ok()?)));
    let detail = match counted {
        Some(_) => detail,
        None => rest,
    };
    let detail = detail.trim();
    let detail = detail
        .strip_prefix('(')
        .and_then(|inner| inner.strip_suffix(')'))
        .unwrap_or(detail);
    let status = detail
        .strip_prefix("unexpected status ")
        .and_then(|tail| tail.get(..3))
        .and_then(|code| code.parse::<u16>().ok());
    Some(AgentEvent::ApiRetry {
        attempt: counted.map(|(n, _)| n),
        of: counted.map(|(_, of)| of),
        status,
        message: detail.to_string(),
    })
}

fn item_events(item: &Value, completed: bool) -> Vec<AgentEvent> {
    let kind = text(item, "type").unwrap_or_default();
    let status = text(item, "status").unwrap_or_default();
    let ended = completed || matches!(status.as_str(), "completed" | "failed" | "declined");
    match kind.as_str() {
        "agent_message" if completed => text(item, "text")
            .map(|text| AgentEvent::Message { text })
            .into_iter()
            .collect(),
        "command_execution" => vec![AgentEvent::Command {
            id: text(item, "id").unwrap_or_default(),
            command: text(item, "command").unwrap_or_default(),
            exit_code: item
                .get("exit_code")
                .and_then(Value::as_i64)
                .and_then(|code| i32::try_from(code).ok()),
            done: ended,
        }],
        "file_change" if completed && status != "failed" => {
            let paths = item
                .get("changes")
                .and_then(Value::as_array)
                .map(|changes| changes.iter().filter_map(|c| text(c, "path")).collect())
                .unwrap_or_default();
            vec![AgentEvent::FileChange { paths }]
        }
        "mcp_tool_call" if !completed => {
            let server = text(item, "server").unwrap_or_default();
            let tool = text(item, "tool").unwrap_or_default();
            vec![AgentEvent::Tool {
                name: format!("mcp {server}/{tool}"),
            }]
        }
        "web_search" if !completed => vec![AgentEvent::Tool {
            name: "web_search".to_string(),
        }],
        "error" => vec![AgentEvent::Error {
            message: text(item, "message").unwrap_or_default(),
        }],
        "agent_message" | "file_change" | "mcp_tool_call" | "web_search" | "reasoning" | "plan"
        | "todo_list" => Vec::new(),
        _ => vec![AgentEvent::Unknown {
            kind: format!("item {kind}"),
        }],
    }
}

fn usage(value: &Value) -> Usage {
    Usage {
        input_tokens: count(value, "input_tokens"),
        cached_input_tokens: count(value, "cached_input_tokens"),
        cache_write_tokens: count(value, "cache_write_input_tokens"),
        output_tokens: count(value, "output_tokens"),
        reasoning_output_tokens: count(value, "reasoning_output_tokens"),
        cost_usd: None,
    }
}

/// The readable part of an error: Codex often wraps the API's JSON error body in `message`.
fn error_message(value: &Value) -> String {
    let raw = text(value, "message").unwrap_or_else(|| value.to_string());
    serde_json::from_str::<Value>(&raw)
        .ok()
        .and_then(|inner| {
            inner
                .pointer("/error/message")
                .or_else(|| inner.get("message"))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transcript(name: &str) -> Vec<AgentEvent> {
        crate::agents::replay_transcript(name, parse_line)
    }

    #[test]
    fn reads_a_recorded_edit() {
        let events = transcript("codex-0.169.0-edit.jsonl");
        assert_eq!(
            events[0],
            AgentEvent::Session {
                id: "01a2003b-39a6-75b0-90a1-bef9f7f8136b".into()
            }
        );
        assert!(events.contains(&AgentEvent::Command {
            id: "item_0".into(),
            command: "/bin/bash -lc 'echo hello from codex > shell.txt'".into(),
            exit_code: Some(0),
            done: true,
        }));
        assert!(events.contains(&AgentEvent::FileChange {
            paths: vec!["/root/fm/repo/notes.txt".into()]
        }));
        let Some(AgentEvent::TurnCompleted { usage }) = events.last() else {
            panic!("{events:?}");
        };
        assert_eq!(
            (
                usage.input_tokens,
                usage.cached_input_tokens,
                usage.output_tokens
            ),
            (3006, 300, 156)
        );
        assert!(
            matches!(&events[events.len() - 2], AgentEvent::Message { text } if text.contains("## Files Changed"))
        );
    }

    #[test]
    fn reads_a_model_error() {
        let events = transcript("codex-0.169.0-model-error.jsonl");
        assert_eq!(
            events.last(),
            Some(&AgentEvent::TurnFailed {
                message: "model exploded".into()
            })
        );
        assert!(events.contains(&AgentEvent::Error {
            message: "model exploded".into()
        }));
    }

    #[test]
    fn unknown_types_and_partial_lines_are_not_fatal() {
        let events = transcript("derived-codex-unknown-and-partial.jsonl");
        assert!(events.contains(&AgentEvent::Unknown {
            kind: "item hologram".into()
        }));
        assert!(events.contains(&AgentEvent::Unknown {
            kind: "session.mood".into()
        }));
        assert_eq!(
            events
                .iter()
                .filter(|e| **e == AgentEvent::Unparsable)
                .count(),
            2
        );
        assert!(
            events
                .iter()
                .any(|e| matches!(e, AgentEvent::TurnCompleted { .. }))
        );
    }

    #[test]
    fn an_update_is_not_a_new_command() {
        let line = r#"{"type":"item.updated","item":{"id":"item_0","type":"command_execution","command":"ls","status":"in_progress"}}"#;
        assert!(parse_line(line).is_empty());
    }

    #[test]
    fn resume_keeps_the_sandbox_setting() {
        let config = AgentConfig {
            api_retry: crate::model::ApiRetryLimit::default(),
            program: "codex".into(),
            model: Some("gpt-5.5".into()),
            args: vec!["--ignore-rules".into()],
            max_turns: None,
        };
        let fresh = argv(&config, "do it", None);
        assert_eq!(
            fresh[..4],
            ["codex", "exec", "--json", "--skip-git-repo-check"]
        );
        assert_eq!(fresh.last().unwrap(), "do it");
        let resumed = argv(&config, "fix it", Some("thread-1"));
        assert_eq!(resumed[..3], ["codex", "exec", "resume"]);
        assert!(resumed.contains(&"sandbox_mode=\"danger-full-access\"".to_string()));
        assert_eq!(resumed[resumed.len() - 3..], ["--", "thread-1", "fix it"]);
    }
}
