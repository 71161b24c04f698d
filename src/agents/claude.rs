//! Stage 3 (run worker), Claude Code: the `claude -p --output-format stream-json --verbose` command line (with
//! `--resume` for a rework), and its stream (`system/init`, `assistant`, `user`, `result`) read into
//! [`AgentEvent`]s.
//!
//! Permissions are bypassed (`--permission-mode bypassPermissions`, with `IS_SANDBOX=1` so it runs as root too):
//! ccfan's sandbox is the boundary, and a worker that stops to ask would only hang until its timeout.

use serde_json::Value;

use super::{AgentEvent, ResultEvent, Usage, count, read_event, session, text};
use crate::model::AgentConfig;

/// Tools that write files (their `file_path` is the file changed).
const EDIT_TOOLS: [&str; 4] = ["Write", "Edit", "MultiEdit", "NotebookEdit"];

/// `claude -p … PROMPT`, with `--resume SESSION` for a rework; `planning`: in Claude Code's plan permission mode,
/// where it reads and writes no file.
pub fn argv(
    config: &AgentConfig,
    prompt: &str,
    resume: Option<&str>,
    planning: bool,
) -> Vec<String> {
    let mut argv = vec![config.program.clone()];
    argv.extend(
        [
            "--print",
            "--output-format",
            "stream-json",
            "--verbose",
            "--permission-mode",
            if planning {
                "plan"
            } else {
                "bypassPermissions"
            },
        ]
        .map(String::from),
    );
    if planning {
        // In print mode its plan tool is refused and the plan would be lost: it writes the plan as its answer.
        argv.extend(["--disallowedTools".to_string(), "ExitPlanMode".to_string()]);
    }
    if let Some(model) = &config.model {
        argv.extend(["--model".to_string(), model.clone()]);
    }
    if let Some(turns) = config.max_turns {
        argv.extend(["--max-turns".to_string(), turns.to_string()]);
    }
    if let Some(session) = resume {
        argv.extend(["--resume".to_string(), session.to_string()]);
    }
    argv.extend(config.args.iter().cloned());
    argv.push("--".to_string());
    argv.push(prompt.to_string());
    argv
}

/// Reads one line of `claude -p --output-format stream-json` output.
pub fn parse_line(line: &str) -> Vec<AgentEvent> {
    let (event, kind) = match read_event(line) {
        Ok(read) => read,
        Err(events) => return events,
    };
    match kind.as_str() {
        "system" => match text(&event, "subtype").as_deref() {
            Some("init") => {
                let mut events = session(&event, "session_id");
                events.extend(text(&event, "model").map(|name| AgentEvent::Model { name }));
                events
            }
            Some("api_retry") => vec![api_retry(&event)],
            _ => Vec::new(),
        },
        "assistant" => {
            let mut events: Vec<AgentEvent> =
                blocks(&event).iter().filter_map(assistant_block).collect();
            let message = event.get("message").unwrap_or(&Value::Null);
            if let (Some(id), Some(usage)) = (text(message, "id"), message.get("usage")) {
                events.push(AgentEvent::MessageUsage {
                    id,
                    usage: usage_of(usage, None),
                });
            }
            events
        }
        "user" => blocks(&event)
            .iter()
            .filter(|block| text(block, "type").as_deref() == Some("tool_result"))
            .filter_map(|block| {
                // Pairs with the Bash call of that id; other tools' results are dropped by the tally.
                Some(AgentEvent::Command {
                    id: text(block, "tool_use_id")?,
                    command: String::new(),
                    exit_code: None,
                    done: true,
                })
            })
            .collect(),
        "result" => vec![AgentEvent::Result(result(&event))],
        _ => vec![AgentEvent::Unknown { kind }],
    }
}

/// `{"type":"system","subtype":"api_retry","attempt":1,"max_retries":10,"retry_delay_ms":568,"error_status":503,
/// "error":"server_error"}` (`error_status` is null when the connection failed).
fn api_retry(event: &Value) -> AgentEvent {
    let number = |key: &str| {
        event
            .get(key)
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
    };
    let status = event
        .get("error_status")
        .and_then(Value::as_u64)
        .and_then(|n| u16::try_from(n).ok());
    let error = text(event, "error").unwrap_or_else(|| "unknown".to_string());
    let message = match (status, error.as_str()) {
        (Some(status), _) => format!("HTTP {status} ({error})"),
        (None, "unknown") => "cannot connect".to_string(),
        (None, _) => error,
    };
    AgentEvent::ApiRetry {
        attempt: number("attempt"),
        of: number("max_retries"),
        status,
        message,
    }
}

fn blocks(event: &Value) -> Vec<Value> {
    event
        .pointer("/message/content")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn assistant_block(block: &Value) -> Option<AgentEvent> {
    match text(block, "type")?.as_str() {
        "text" => {
            let text = text(block, "text")?;
            (!text.trim().is_empty()).then_some(AgentEvent::Message { text })
        }
        "tool_use" => {
            let name = text(block, "name").unwrap_or_default();
            let input = block.get("input").unwrap_or(&Value::Null);
            if name == "Bash" {
                Some(AgentEvent::Command {
                    id: text(block, "id").unwrap_or_default(),
                    command: text(input, "command").unwrap_or_default(),
                    exit_code: None,
                    done: false,
                })
            } else if EDIT_TOOLS.contains(&name.as_str()) {
                let path = text(input, "file_path").or_else(|| text(input, "notebook_path"))?;
                Some(AgentEvent::FileChange { paths: vec![path] })
            } else {
                Some(AgentEvent::Tool { name })
            }
        }
        _ => None,
    }
}

/// Claude's `usage` object (input counted with cache reads and writes, which it reports apart) and `cost`.
fn usage_of(usage: &Value, cost: Option<f64>) -> Usage {
    let cache_read = count(usage, "cache_read_input_tokens");
    let cache_write = count(usage, "cache_creation_input_tokens");
    Usage {
        input_tokens: count(usage, "input_tokens") + cache_read + cache_write,
        cached_input_tokens: cache_read,
        cache_write_tokens: cache_write,
        output_tokens: count(usage, "output_tokens"),
        reasoning_output_tokens: usage
            .pointer("/output_tokens_details/thinking_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        cost_usd: cost,
    }
}

fn result(event: &Value) -> ResultEvent {
    ResultEvent {
        is_error: event
            .get("is_error")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        subtype: text(event, "subtype").unwrap_or_default(),
        terminal_reason: text(event, "terminal_reason"),
        api_error_status: event
            .get("api_error_status")
            .and_then(Value::as_u64)
            .and_then(|status| u16::try_from(status).ok()),
        result: text(event, "result"),
        errors: event
            .get("errors")
            .and_then(Value::as_array)
            .map(|errors| {
                errors
                    .iter()
                    .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        num_turns: event
            .get("num_turns")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok()),
        usage: usage_of(
            event.get("usage").unwrap_or(&Value::Null),
            event.get("total_cost_usd").and_then(Value::as_f64),
        ),
        permission_denials: event
            .get("permission_denials")
            .and_then(Value::as_array)
            .map(|denials| denials.iter().map(denial).collect())
            .unwrap_or_default(),
    }
}

/// `Bash: rm -rf build` — the tool and the gist of its input, kept short.
fn denial(value: &Value) -> String {
    let tool = text(value, "tool_name").unwrap_or_else(|| "a tool".to_string());
    let input = value.get("tool_input").unwrap_or(&Value::Null);
    let gist = text(input, "command")
        .or_else(|| text(input, "file_path"))
        .unwrap_or_default();
    let gist: String = gist.chars().take(120).collect();
    if gist.is_empty() {
        tool
    } else {
        format!("{tool}: {gist}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transcript(name: &str) -> Vec<AgentEvent> {
        crate::agents::replay_transcript(name, parse_line)
    }

    fn final_result(events: &[AgentEvent]) -> &ResultEvent {
        match events.last() {
            Some(AgentEvent::Result(result)) => result,
            other => panic!("no result: {other:?}"),
        }
    }

    #[test]
    fn reads_a_recorded_edit() {
        let events = transcript("claude-2.1.330-edit.jsonl");
        assert_eq!(
            events[0],
            AgentEvent::Session {
                id: "c976309a-16b6-4047-b788-de0ed3a02673".into()
            }
        );
        assert!(events.contains(&AgentEvent::Command {
            id: "toolu_1_0".into(),
            command: "echo hello from claude > cshell.txt".into(),
            exit_code: None,
            done: false,
        }));
        assert!(events.contains(&AgentEvent::FileChange {
            paths: vec!["cnotes.txt".into()]
        }));
        let result = final_result(&events);
        assert!(!result.is_error);
        assert_eq!(result.num_turns, Some(3));
        assert_eq!(result.usage.input_tokens, 3006);
        assert_eq!(result.usage.output_tokens, 126);
        assert_eq!(result.usage.cost_usd, Some(0.014544));
        assert!(result.permission_denials.is_empty());
    }

    #[test]
    fn an_api_error_is_an_error_whatever_its_subtype() {
        let result = final_result(&transcript("claude-2.1.330-api-error.jsonl")).clone();
        assert!(result.is_error);
        assert_eq!(result.subtype, "success");
        assert_eq!(result.api_error_status, Some(400));
        assert_eq!(result.terminal_reason.as_deref(), Some("api_error"));
        assert_eq!(
            result.result.as_deref(),
            Some("API Error: 400 model exploded")
        );
    }

    #[test]
    fn reads_max_turns() {
        let events = transcript("claude-2.1.330-max-turns.jsonl");
        let result = final_result(&events);
        assert_eq!(result.subtype, "error_max_turns");
        assert_eq!(result.errors, ["Reached maximum number of turns (2)"]);
    }

    #[test]
    fn a_truncated_stream_has_no_result() {
        let events = transcript("derived-claude-truncated.jsonl");
        assert!(!events.iter().any(|e| matches!(e, AgentEvent::Result(_))));
        assert!(matches!(events[0], AgentEvent::Session { .. }));
    }

    #[test]
    fn denials_are_summarised() {
        let line = r#"{"type":"result","subtype":"success","is_error":false,"permission_denials":[{"tool_name":"Bash","tool_use_id":"t","tool_input":{"command":"rm -rf /"}}],"session_id":"s"}"#;
        let events = parse_line(line);
        assert_eq!(final_result(&events).permission_denials, ["Bash: rm -rf /"]);
        assert_eq!(parse_line("garbage"), vec![AgentEvent::Unparsable]);
        assert_eq!(
            parse_line(r#"{"type":"stream_event","event":{}}"#),
            vec![AgentEvent::Unknown {
                kind: "stream_event".into()
            }]
        );
    }

    #[test]
    fn builds_resume_and_limits() {
        let config = AgentConfig {
            api_retry: crate::model::ApiRetryLimit::default(),
            program: "/opt/claude".into(),
            model: None,
            args: Vec::new(),
            max_turns: Some(7),
        };
        let argv = argv(&config, "fix", Some("sess"), false);
        assert_eq!(argv[0], "/opt/claude");
        for pair in [
            ["--max-turns", "7"],
            ["--resume", "sess"],
            ["--", "fix"],
            ["--permission-mode", "bypassPermissions"],
        ] {
            assert!(argv.windows(2).any(|w| w == pair), "{argv:?}");
        }
        let planning = super::argv(&config, "plan it", None, true);
        assert!(
            planning
                .windows(2)
                .any(|w| w == ["--permission-mode", "plan"])
                && planning
                    .windows(2)
                    .any(|w| w == ["--disallowedTools", "ExitPlanMode"]),
            "{planning:?}"
        );
    }
}
