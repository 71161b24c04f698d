//! MCP: every tool through an in-process client over a duplex (errors and idempotency included), the tool list
//! under a snapshot, the real `ccfan mcp` binary over stdio, two processes on one run (the lease), and
//! third-party clients: the Python SDK (stdio and Streamable HTTP) and the MCP Inspector's CLI.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ccfan::mcp::{CcfanServer, Repos};
use rmcp::model::{CallToolRequestParams, ProgressNotificationParam, RequestMetaObject};
use rmcp::service::{NotificationContext, RunningService, ServiceError};
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{Value, json};

use crate::env::TestEnv;

/// Records progress notifications.
#[derive(Clone, Default)]
struct Recorder {
    progress: Arc<Mutex<Vec<String>>>,
}

impl ClientHandler for Recorder {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.progress
            .lock()
            .unwrap()
            .push(params.message.unwrap_or_default());
    }
}

/// What a tool call gave back.
#[derive(Debug)]
enum Reply {
    Ok(Value),
    Failed(Value),
    Invalid(String),
}

impl Reply {
    fn ok(self) -> Value {
        match self {
            Reply::Ok(value) => value,
            other => panic!("expected a result, got {other:?}"),
        }
    }

    fn failed(self, code: &str) -> Value {
        match self {
            Reply::Failed(error) if error["code"] == code => error,
            other => panic!("expected a `{code}` tool error, got {other:?}"),
        }
    }

    fn invalid(self) -> String {
        match self {
            Reply::Invalid(message) => message,
            other => panic!("expected invalid params, got {other:?}"),
        }
    }
}

struct Mcp {
    env: TestEnv,
    client: RunningService<RoleClient, Recorder>,
    recorder: Recorder,
}

impl Mcp {
    async fn start(env: TestEnv) -> Mcp {
        let repos = Repos::new(
            env.repo.clone(),
            PathBuf::from(env!("CARGO_BIN_EXE_ccfan")),
            env.ccfan_env(),
        );
        Mcp::serve(env, repos).await
    }

    /// An in-process server over `repos`, and a client connected to it.
    async fn serve(env: TestEnv, repos: std::sync::Arc<Repos>) -> Mcp {
        let (client_io, server_io) = tokio::io::duplex(1 << 20);
        tokio::spawn(async move {
            if let Ok(service) = CcfanServer::new(repos).serve(server_io).await {
                let _ = service.waiting().await;
            }
        });
        let recorder = Recorder::default();
        let client = recorder.clone().serve(client_io).await.unwrap();
        Mcp {
            env,
            client,
            recorder,
        }
    }

    async fn call_with(&self, name: &'static str, args: Value, progress: bool) -> Reply {
        let Value::Object(arguments) = args else {
            panic!("arguments must be an object")
        };
        let mut request = CallToolRequestParams::new(name).with_arguments(arguments);
        if progress {
            let token = serde_json::from_value(json!(format!("p-{name}"))).unwrap();
            request.meta = Some(RequestMetaObject::with_progress_token(token));
        }
        match self.client.call_tool(request).await {
            Ok(result) => {
                let content = result
                    .structured_content
                    .clone()
                    .unwrap_or_else(|| panic!("{name}: no structuredContent in {result:?}"));
                if result.is_error == Some(true) {
                    Reply::Failed(content)
                } else {
                    Reply::Ok(content)
                }
            }
            Err(ServiceError::McpError(error)) => Reply::Invalid(error.message.to_string()),
            Err(other) => panic!("{name}: {other}"),
        }
    }

    async fn call(&self, name: &'static str, args: Value) -> Reply {
        self.call_with(name, args, false).await
    }

    /// Polls `status` (long-polling) until `done(status)` holds.
    async fn wait_until(&self, run: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let status = self
                .call_with("status", json!({"run_id": run, "wait_seconds": 10}), true)
                .await
                .ok();
            if done(&status) {
                return status;
            }
            assert!(Instant::now() < deadline, "timed out; last status {status}");
        }
    }
}

fn task<'a>(status: &'a Value, id: &str) -> &'a Value {
    status["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .unwrap_or_else(|| panic!("no task {id} in {status}"))
}

/// A repository whose policy has three command workers: `edit` (appends to its own file), `slow` (waits for a
/// go file in the probe folder first) and `outside` (changes README.md, out of scope).
fn mcp_repo() -> TestEnv {
    let env = TestEnv::new();
    let edit = env.script(
        "edit.sh",
        r#"echo "$CCFAN_TASK_ID" >> "src/$CCFAN_TASK_ID.txt""#,
    );
    let slow = env.script(
        "slow.sh",
        r#"while [ ! -e "$PROBE/go-$CCFAN_TASK_ID" ]; do sleep 0.1; done; echo slow >> "src/$CCFAN_TASK_ID.txt""#,
    );
    let outside = env.script("outside.sh", "echo changed >> README.md");
    env.commit_policy(&format!(
        "[run]\nworker = \"edit\"\nmax_reworks = 1\n\n[workers.edit]\nkind = \"command\"\ncommand = [\"{}\"]\n\n\
         [workers.slow]\nkind = \"command\"\ncommand = [\"{}\"]\nenv = {{ PROBE = \"{}\" }}\n\n\
         [workers.outside]\nkind = \"command\"\ncommand = [\"{}\"]\n",
        edit.display(),
        slow.display(),
        env.probe().display(),
        outside.display()
    ));
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_list_and_schemas_are_kept_under_a_snapshot() {
    let mcp = Mcp::start(TestEnv::new()).await;
    let mut tools = mcp.client.list_all_tools().await.unwrap();
    tools.sort_by(|a, b| a.name.cmp(&b.name));
    let shown: Vec<Value> = tools
        .iter()
        .map(|tool| {
            assert!(
                tool.output_schema.is_some(),
                "{} has no output schema",
                tool.name
            );
            json!({
                "name": tool.name,
                "description": tool.description,
                "annotations": tool.annotations,
                "inputSchema": tool.input_schema,
                "outputSchema": tool.output_schema,
            })
        })
        .collect();
    insta::assert_json_snapshot!("mcp_tools", shown);
    // Small enough for a client's tool search, and findable by what a model searches for: 16 tools in about 5.5k
    // tokens (the bound grew from 20 000 bytes with plan mode's `approve`, hand-offs' `after` and best-of-N).
    let listed = serde_json::to_string(&tools).unwrap();
    assert!(
        listed.len() < 22_000,
        "tools/list is {} bytes",
        listed.len()
    );
    let info = mcp.client.peer_info().unwrap();
    let instructions = info.instructions.clone().unwrap();
    let head: String = instructions.chars().take(300).collect();
    for word in [
        "delegate", "parallel", "worktree", "verify", "merge", "status",
    ] {
        assert!(
            head.contains(word),
            "`{word}` is not in the first 300 characters: {head}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_tools_and_bad_arguments() {
    let env = mcp_repo();
    env.write(
        "notes/keys.txt",
        "aws_access_key_id = AKIAQYLPMN5HFIQR7XYA\n",
    );
    let mcp = Mcp::start(env).await;

    let health = mcp.call("health", json!({})).await.ok();
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        health["workers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["kind"] == "command" && w["usable"] == true),
        "{health}"
    );

    let scope = mcp
        .call(
            "check_scope",
            json!({"paths": ["src/a.rs", "src/gen/x.rs", ".git/config", "README.md"],
                   "allowed": ["src/**"], "denied": ["src/gen/**"]}),
        )
        .await
        .ok();
    let allowed: Vec<bool> = scope["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["allowed"].as_bool().unwrap())
        .collect();
    assert_eq!(allowed, [true, false, false, false], "{scope}");
    assert_eq!(scope["all_allowed"], false);
    mcp.call(
        "check_scope",
        json!({"paths": ["a"], "allowed": ["src/[**"]}),
    )
    .await
    .invalid();

    let scan = mcp.call("scan", json!({"paths": ["notes"]})).await.ok();
    let text = scan.to_string();
    assert!(
        !text.contains("AKIAQYLPMN5HFIQR7XYA"),
        "secret echoed: {text}"
    );
    assert_eq!(scan["hits"][0]["path"], "notes/keys.txt", "{scan}");
    assert!(text.contains("[REDACTED]"), "{text}");
    mcp.call("scan", json!({"paths": ["../outside"]}))
        .await
        .invalid();
    mcp.call("scan", json!({"range": "no-such-rev..HEAD"}))
        .await
        .invalid();

    // Bad arguments: invalid params naming the field.
    let empty = mcp.call("delegate", json!({"tasks": []})).await.invalid();
    assert!(empty.contains("tasks"), "{empty}");
    let worker = mcp
        .call(
            "delegate",
            json!({"tasks": [{"goal": "x", "allowed": ["src/**"], "worker": "nobody"}]}),
        )
        .await
        .invalid();
    assert!(worker.contains("nobody"), "{worker}");
    mcp.call("delegate", json!({"tasks": [{"goal": "x"}]}))
        .await
        .invalid();
    mcp.call(
        "delegate",
        json!({"tasks": [{"goal": "x", "allowed": ["src/**"], "colour": "red"}]}),
    )
    .await
    .invalid();
    mcp.call(
        "delegate",
        json!({"tasks": [{"goal": "x", "allowed": ["src/**"]}], "base": "no-such-branch"}),
    )
    .await
    .invalid();
    mcp.call(
        "delegate",
        json!({"tasks": [{"goal": "x", "allowed": ["src/**"]}], "jobs": 0}),
    )
    .await
    .invalid();
    // Nothing was left half-made by the refused calls.
    assert!(
        !mcp.env.state_dir().join("mcp").exists()
            || std::fs::read_dir(mcp.env.state_dir().join("mcp"))
                .unwrap()
                .next()
                .is_none()
    );

    // Unknown runs are tool errors with a code.
    let missing = mcp
        .call("status", json!({"run_id": "no-such-run"}))
        .await
        .failed("not_found");
    assert_eq!(missing["retryable"], false);
    for tool in ["verify", "rollback", "merge"] {
        mcp.call(tool, json!({"run_id": "no-such-run"}))
            .await
            .failed("not_found");
    }
    mcp.call(
        "rework",
        json!({"run_id": "no-such-run", "task_id": "t", "note": "x"}),
    )
    .await
    .failed("not_found");
    mcp.call(
        "rework",
        json!({"run_id": "r", "task_id": "t", "note": " "}),
    )
    .await
    .invalid();
    let runs = mcp.call("list_runs", json!({})).await.ok();
    assert_eq!(runs["runs"], json!([]));
    let gc = mcp.call("gc", json!({"dry_run": true})).await.ok();
    assert!(gc["report"].is_object(), "{gc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegate_wait_verify_rework_merge_rollback_over_mcp() {
    let mcp = Mcp::start(mcp_repo()).await;
    let request = json!({
        "tasks": [
            {"id": "a", "goal": "append a line", "allowed": ["src/**"]},
            {"id": "s", "goal": "append slowly", "allowed": ["src/**"], "worker": "slow"},
        ],
        "client_request_id": "req-1",
    });
    let started = Instant::now();
    let first = mcp.call("delegate", request.clone()).await.ok();
    assert!(started.elapsed() < Duration::from_secs(20));
    let run = first["run_id"].as_str().unwrap().to_string();
    assert_eq!(first["task_ids"], json!(["a", "s"]));
    assert_eq!(first["existing"], false);

    // The same request again: the same run, nothing new.
    let again = mcp.call("delegate", request).await.ok();
    assert_eq!(again["run_id"], run.as_str());
    assert_eq!(again["existing"], true);
    // The same id for another request: a conflict.
    mcp.call(
        "delegate",
        json!({"tasks": [{"goal": "other", "allowed": ["src/**"]}], "client_request_id": "req-1"}),
    )
    .await
    .failed("conflict");
    // An identical task while the first is active: reported, not started.
    let duplicate = mcp
        .call(
            "delegate",
            json!({"tasks": [{"id": "s2", "goal": "append slowly", "allowed": ["src/**"], "worker": "slow"}]}),
        )
        .await
        .ok();
    assert_eq!(duplicate["run_id"], Value::Null, "{duplicate}");
    assert_eq!(
        duplicate["duplicates"],
        json!([{"task_id": "s2", "active_run": run, "active_task": "s"}])
    );

    // Long-poll until `a` is accepted, with progress notifications on the way.
    let status = mcp
        .wait_until(&run, |s| task(s, "a")["state"] == "accepted")
        .await;
    assert_eq!(task(&status, "a")["verdict"], "accept");
    assert_eq!(status["done"], false, "s still waits: {status}");
    assert!(
        !mcp.recorder.progress.lock().unwrap().is_empty(),
        "no progress notification"
    );

    // While this run is carried, neither another MCP follow-up nor the CLI may act on it.
    let busy = mcp
        .call(
            "rework",
            json!({"run_id": run, "task_id": "a", "note": "more"}),
        )
        .await
        .failed("busy");
    assert_eq!(busy["retryable"], true);
    let said = busy["message"].as_str().unwrap_or_default();
    assert!(
        said.contains("still carried")
            && said.contains("1 running")
            && said.contains("then rework again"),
        "{busy}"
    );
    let cli = mcp
        .env
        .ccfan(&["rework", &format!("{run}/a"), "--note", "x"]);
    assert_ne!(cli.code, 0, "{cli:?}");
    assert!(cli.stderr.contains("being carried"), "{cli:?}");

    // Cancel the waiting task; the run ends.
    let cancelled = mcp
        .call("cancel", json!({"run_id": run, "task_id": "s"}))
        .await
        .ok();
    assert_eq!(cancelled["finished"], true, "{cancelled}");
    let status = mcp.wait_until(&run, |s| s["done"] == true).await;
    assert_eq!(task(&status, "s")["state"], "cancelled");
    // `ccfan status` from a shell sees the same state.
    let shell = mcp.env.ccfan(&["status", &run, "--json"]).json();
    assert_eq!(crate::env::task(&shell, "a")["state"], "accepted");

    let verify = mcp.call("verify", json!({"run_id": run})).await.ok();
    let evidence = &verify["tasks"][0];
    assert_eq!(evidence["task_id"], "a");
    assert_eq!(evidence["verdict"]["verdict"], "accept");
    assert_eq!(evidence["diff"]["files_changed"], 1);
    let rerun = mcp
        .call(
            "verify",
            json!({"run_id": run, "task_id": "a", "rerun": true}),
        )
        .await
        .ok();
    assert_eq!(rerun["rerun"], true);
    assert_eq!(rerun["tasks"][0]["verdict"]["verdict"], "accept");

    let diff = mcp
        .call("diff", json!({"run_id": run, "task_id": "a"}))
        .await
        .ok();
    assert!(diff["patch"].as_str().unwrap().contains("+a\n"), "{diff}");
    assert_eq!(diff["truncated"], false);
    mcp.call("diff", json!({"run_id": run, "task_id": "s"}))
        .await
        .failed("not_found");

    // A verdict-free refusal is a tool error that says what applies instead.
    let refused = mcp
        .call("retry", json!({"run_id": run, "task_id": "a"}))
        .await
        .failed("refused");
    assert!(
        refused["message"].as_str().unwrap().contains("merge"),
        "{refused}"
    );

    let reworked = mcp
        .call(
            "rework",
            json!({"run_id": run, "task_id": "a", "note": "add one more line", "wait_seconds": 60}),
        )
        .await
        .ok();
    assert_eq!(reworked["finished"], true, "{reworked}");
    let a = task(&reworked["status"], "a");
    assert_eq!(a["attempt"], 2, "{reworked}");
    assert_eq!(a["state"], "accepted");

    let merged = mcp.call("merge", json!({"run_id": run})).await.ok();
    assert_eq!(merged["finished"], true, "{merged}");
    assert_eq!(task(&merged["status"], "a")["state"], "merged");
    assert!(mcp.env.git(&["show", "main:src/a.txt"]).contains('a'));

    let rolled = mcp
        .call("rollback", json!({"run_id": run, "task_id": "a"}))
        .await
        .ok();
    assert_eq!(rolled["finished"], true, "{rolled}");
    assert_eq!(task(&rolled["status"], "a")["state"], "rolled_back");
    let listed = mcp.call("list_runs", json!({})).await.ok();
    assert_eq!(listed["runs"][0]["run_id"], run.as_str());

    // gc collects the run: its worktrees, and the hand-off files of every process the server started for it.
    let handoff = mcp.env.state_dir().join("mcp");
    let files_of_run = || {
        std::fs::read_dir(&handoff)
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{run}."))
            })
            .count()
    };
    assert!(
        files_of_run() >= 6,
        "tasks file, run and follow-up outputs and logs"
    );
    let gc = mcp.call("gc", json!({"runs": [run]})).await.ok();
    assert_eq!(gc["report"]["removed"].as_array().unwrap().len(), 2, "{gc}");
    assert_eq!(files_of_run(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegated_phases_wait_for_each_other_and_say_what_for() {
    let mcp = Mcp::start(mcp_repo()).await;
    let cycle = mcp
        .call(
            "delegate",
            json!({"tasks": [
                {"id": "x", "goal": "x", "allowed": ["src/**"], "after": ["y"]},
                {"id": "y", "goal": "y", "allowed": ["src/**"], "after": ["x"]},
            ]}),
        )
        .await
        .invalid();
    assert!(cycle.contains("cycle: x → y → x"), "{cycle}");
    let started = mcp
        .call(
            "delegate",
            json!({"tasks": [
                {"id": "later", "goal": "append after the first", "allowed": ["src/**"], "after": ["first"]},
                {"id": "first", "goal": "append slowly, first", "allowed": ["src/**"], "worker": "slow"},
            ], "merge": true}),
        )
        .await
        .ok();
    let run = started["run_id"].as_str().unwrap().to_string();
    let status = mcp
        .wait_until(&run, |s| {
            task(s, "first")["state"] == "running" && task(s, "later")["state"] == "waiting"
        })
        .await;
    insta::assert_json_snapshot!("mcp_waiting_task", task(&status, "later"));
    std::fs::write(mcp.env.probe().join("go-first"), "").unwrap();
    let status = mcp.wait_until(&run, |s| s["done"] == true).await;
    for id in ["first", "later"] {
        assert_eq!(task(&status, id)["state"], "merged", "{status}");
    }
    assert!(
        task(&status, "later").get("waits_for").is_none(),
        "{status}"
    );
    // `later` started from the tip holding `first`'s work: it appended to its own file on top of it.
    mcp.env.git(&["cat-file", "-e", "main:src/first.txt"]);
    mcp.env.git(&["cat-file", "-e", "main:src/later.txt"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delegated_task_runs_as_candidates_and_one_lands() {
    let mcp = Mcp::start(mcp_repo()).await;
    let started = mcp
        .call(
            "delegate",
            json!({"tasks": [{"id": "x", "goal": "append a line", "allowed": ["src/**"], "candidates": 2}], "merge": true}),
        )
        .await
        .ok();
    assert_eq!(started["task_ids"], json!(["x-c1", "x-c2"]), "{started}");
    let run = started["run_id"].as_str().unwrap().to_string();
    let status = mcp.wait_until(&run, |s| s["done"] == true).await;
    // Two equal changes: the tie goes to the first candidate, the other is kept and says why it lost.
    assert_eq!(task(&status, "x-c1")["state"], "merged", "{status}");
    assert_eq!(task(&status, "x-c2")["state"], "not_chosen", "{status}");
    assert!(
        task(&status, "x-c2")["last_event"]
            .as_str()
            .unwrap()
            .contains("x-c1 won"),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planned_tasks_wait_for_approve_and_reject_over_mcp() {
    let env = mcp_repo();
    let planner = env.script(
        "planner.sh",
        r##"if [ "${CCFAN_PLAN:-}" = 1 ]; then printf '## Plan\nappend to src/%s.txt\n' "$CCFAN_TASK_ID"; exit 0; fi
echo "$CCFAN_TASK_ID" >> "src/$CCFAN_TASK_ID.txt""##,
    );
    let mut policy = std::fs::read_to_string(env.repo.join("ccfan.toml")).unwrap();
    policy.push_str(&format!(
        "\n[workers.planner]\nkind = \"command\"\ncommand = [\"{}\"]\n",
        planner.display()
    ));
    env.commit_policy(&policy);
    let mcp = Mcp::start(env).await;
    let started = mcp
        .call(
            "delegate",
            json!({"tasks": [
                {"id": "p", "goal": "append, once approved", "allowed": ["src/**"], "worker": "planner"},
                {"id": "q", "goal": "append, if approved", "allowed": ["src/**"], "worker": "planner"},
            ], "merge": true, "plan": true}),
        )
        .await
        .ok();
    let run = started["run_id"].as_str().unwrap().to_string();
    let status = mcp.wait_until(&run, |s| s["done"] == true).await;
    for id in ["p", "q"] {
        assert_eq!(task(&status, id)["state"], "planned", "{status}");
    }
    let one = mcp
        .call(
            "status",
            json!({"run_id": run, "task_id": "p", "detail": true}),
        )
        .await
        .ok();
    assert!(
        one["detail"]["plan"]
            .as_str()
            .unwrap()
            .contains("append to src/p.txt"),
        "{one}"
    );
    let approved = mcp
        .call(
            "approve",
            json!({"run_id": run, "task_id": "p", "note": "go", "wait_seconds": 60}),
        )
        .await
        .ok();
    assert_eq!(approved["finished"], true, "{approved}");
    assert_eq!(
        task(&approved["status"], "p")["state"],
        "merged",
        "{approved}"
    );
    let whole = mcp.call("status", json!({"run_id": run})).await.ok();
    assert_eq!(task(&whole, "q")["state"], "planned", "{whole}");
    let rejected = mcp
        .call(
            "approve",
            json!({"run_id": run, "task_id": "q", "reject": true, "note": "not now", "wait_seconds": 30}),
        )
        .await
        .ok();
    assert_eq!(
        task(&rejected["status"], "q")["state"],
        "rejected",
        "{rejected}"
    );
    let detail = mcp
        .call(
            "status",
            json!({"run_id": run, "task_id": "p", "detail": true}),
        )
        .await
        .ok();
    let approval = &detail["detail"]["task"]["plan"]["approval"];
    assert_eq!(approval["note"], "go", "{detail}");
    assert!(
        approval["by"].as_str().unwrap().starts_with("MCP client "),
        "{approval}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_task_is_a_normal_result_then_accepted_over_the_gate() {
    let mcp = Mcp::start(mcp_repo()).await;
    let started = mcp
        .call(
            "delegate",
            json!({"tasks": [{"id": "o", "goal": "touch the readme", "allowed": ["src/**"], "worker": "outside"}]}),
        )
        .await
        .ok();
    let run = started["run_id"].as_str().unwrap().to_string();
    let status = mcp.wait_until(&run, |s| s["done"] == true).await;
    let o = task(&status, "o");
    assert_eq!(o["state"], "blocked", "{status}");
    assert_eq!(o["verdict"], "rollback");
    assert_eq!(o["attempt"], 2, "one rework, then blocked");
    let verify = mcp.call("verify", json!({"run_id": run})).await.ok();
    assert!(
        verify["tasks"][0]["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["rule"] == "not-allowed" || f["rule"] == "out-of-scope"),
        "{verify}"
    );
    let accepted = mcp
        .call(
            "accept",
            json!({"run_id": run, "task_id": "o", "reason": "the readme change is wanted", "wait_seconds": 60}),
        )
        .await
        .ok();
    assert_eq!(accepted["finished"], true, "{accepted}");
    // The run stops at accepted (delegate's merge is false).
    assert_eq!(task(&accepted["status"], "o")["state"], "accepted");
}

/// Spawns the real binary as an MCP server over stdio.
fn spawn_server(env: &TestEnv, args: &[&str]) -> std::process::Child {
    let mut all = vec!["mcp"];
    all.extend_from_slice(args);
    env.command(&all)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn real_binary_speaks_only_json_rpc_on_stdout() {
    let env = mcp_repo();
    let mut server = spawn_server(&env, &[]);
    let mut stdin = server.stdin.take().unwrap();
    let mut stdout = BufReader::new(server.stdout.take().unwrap());
    let mut send = |message: Value| {
        writeln!(stdin, "{message}").unwrap();
        stdin.flush().unwrap();
    };
    let mut read = || {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        serde_json::from_str::<Value>(&line)
            .unwrap_or_else(|e| panic!("stdout line is not JSON-RPC ({e}): {line:?}"))
    };
    send(
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "test", "version": "0"}}}),
    );
    let init = read();
    assert_eq!(init["result"]["serverInfo"]["name"], "ccfan", "{init}");
    send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}));
    let list = read();
    assert_eq!(
        list["result"]["tools"].as_array().unwrap().len(),
        16,
        "{list}"
    );
    send(json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": "health", "arguments": {}}}));
    let health = read();
    assert_eq!(
        health["result"]["structuredContent"]["version"],
        env!("CARGO_PKG_VERSION"),
        "{health}"
    );
    send(json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
        "params": {"name": "status", "arguments": {"wait_seconds": 1}}}));
    let invalid = read();
    assert_eq!(invalid["error"]["code"], -32602, "{invalid}");
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = server.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "the server did not stop at EOF");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Gives a third-party client the environment `TestEnv::command` gives ccfan (its server inherits it).
fn apply_env(command: &mut Command, env: &TestEnv) {
    for (name, value) in env.ccfan_env() {
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
    }
}

fn conformance(transport: &str) {
    let Some(python_path) = crate::env::installed(
        &format!("python_sdk_conformance_over_{transport}"),
        "the Python MCP SDK (CCFAN_MCP_PYTHONPATH)",
        crate::env::env_path("CCFAN_MCP_PYTHONPATH"),
    ) else {
        return;
    };
    let env = mcp_repo();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/mcp/conformance.py");
    let mut command = Command::new("python3");
    apply_env(&mut command, &env);
    let output = command
        .env("PYTHONPATH", python_path)
        .arg(script)
        .args(["--ccfan", env!("CARGO_BIN_EXE_ccfan"), "--repo"])
        .arg(&env.repo)
        .args(["--transport", transport])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "conformance over {transport} failed\n--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn python_sdk_conformance_over_stdio() {
    conformance("stdio");
}

#[test]
fn python_sdk_conformance_over_streamable_http() {
    conformance("http");
}

#[test]
fn mcp_inspector_cli_lists_and_calls_tools() {
    let Some(bin) = crate::env::installed(
        "mcp_inspector_cli_lists_and_calls_tools",
        "the MCP Inspector (CCFAN_AGENT_BIN/mcp-inspector)",
        crate::env::env_path("CCFAN_AGENT_BIN").map(|dir| dir.join("mcp-inspector")),
    ) else {
        return;
    };
    let env = mcp_repo();
    let inspector = |extra: &[&str]| {
        let mut command = Command::new(&bin);
        apply_env(&mut command, &env);
        let output = command
            .current_dir(&env.repo)
            .args(["--cli", env!("CARGO_BIN_EXE_ccfan"), "mcp"])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "inspector {extra:?}: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice::<Value>(&output.stdout).unwrap()
    };
    let list = inspector(&["--method", "tools/list"]);
    let names: Vec<&str> = list["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"delegate") && names.contains(&"status"),
        "{names:?}"
    );
    let health = inspector(&["--method", "tools/call", "--tool-name", "health"]);
    assert_eq!(
        health["structuredContent"]["version"],
        env!("CARGO_PKG_VERSION"),
        "{health}"
    );
    let scan = inspector(&[
        "--method",
        "tools/call",
        "--tool-name",
        "scan",
        "--tool-arg",
        "range=HEAD",
    ]);
    assert_eq!(scan["structuredContent"]["hits"], json!([]), "{scan}");
    assert!(
        scan["structuredContent"]["files_scanned"].as_u64().unwrap() > 0,
        "{scan}"
    );
}

#[tokio::test]
async fn a_server_started_outside_any_repository_serves_the_repo_each_call_names() {
    let env = TestEnv::new();
    let outside = tempfile::tempdir().unwrap();
    let repos = Repos::new(
        outside.path().to_path_buf(),
        PathBuf::from(env!("CARGO_BIN_EXE_ccfan")),
        env.ccfan_env(),
    );
    let mcp = Mcp::serve(env, repos).await;
    assert!(!mcp.client.list_all_tools().await.unwrap().is_empty());
    // No `repo`, and the server's folder is no repository: a tool error that says what to pass.
    let Reply::Failed(error) = mcp.call("list_runs", json!({})).await else {
        panic!("expected a tool error")
    };
    let text = error.to_string();
    assert!(
        text.contains("not inside a git repository") && text.contains("pass `repo`"),
        "{text}"
    );
    // Naming the repository works, for reads and for a health check.
    let repo = mcp.env.repo.to_str().unwrap().to_string();
    let runs = mcp.call("list_runs", json!({ "repo": repo })).await.ok();
    assert_eq!(runs["runs"], json!([]), "{runs}");
    let health = mcp.call("health", json!({ "repo": repo })).await.ok();
    assert!(
        health["repository"].as_str().unwrap().ends_with("repo"),
        "{health}"
    );
}

#[test]
fn the_real_binary_starts_outside_any_repository() {
    let env = mcp_repo();
    let outside = tempfile::tempdir().unwrap();
    let mut server = env
        .command(&["-C", outside.path().to_str().unwrap(), "mcp"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = server.stdin.take().unwrap();
    let mut stdout = BufReader::new(server.stdout.take().unwrap());
    let mut exchange = |message: Value| -> Value {
        writeln!(stdin, "{message}").unwrap();
        stdin.flush().unwrap();
        if message.get("id").is_none() {
            return Value::Null;
        }
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON-RPC ({e}): {line:?}"))
    };
    let init = exchange(
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "0"}}}),
    );
    assert_eq!(init["result"]["serverInfo"]["name"], "ccfan", "{init}");
    exchange(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    let list = exchange(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}));
    assert_eq!(
        list["result"]["tools"].as_array().unwrap().len(),
        16,
        "{list}"
    );
    let health = exchange(json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": "health", "arguments": {"repo": env.repo.to_str().unwrap()}}}));
    assert_eq!(health["result"]["isError"], false, "{health}");
    drop(stdin);
    let _ = server.wait();
}

#[tokio::test]
async fn diff_says_which_attempt_it_shows_when_later_ones_changed_nothing() {
    let env = mcp_repo();
    let once = env.script(
        "once.sh",
        r#"if [ "$CCFAN_ATTEMPT" = 1 ]; then echo once >> src/once.txt; fi"#,
    );
    let policy = std::fs::read_to_string(env.repo.join("ccfan.toml")).unwrap();
    env.commit_policy(&format!(
        "{policy}\n[workers.once]\nkind = \"command\"\ncommand = [\"{}\"]\n",
        once.display()
    ));
    let mcp = Mcp::start(env).await;
    let started = mcp
        .call(
            "delegate",
            json!({"tasks": [{"id": "o", "goal": "x", "allowed": ["src/**"], "worker": "once"}]}),
        )
        .await
        .ok();
    let run = started["run_id"].as_str().unwrap().to_string();
    mcp.wait_until(&run, |s| s["done"] == true).await;
    mcp.call(
        "rework",
        json!({"run_id": run, "task_id": "o", "note": "look again", "wait_seconds": 60}),
    )
    .await
    .ok();
    let status = mcp.wait_until(&run, |s| s["done"] == true).await;
    assert_eq!(task(&status, "o")["attempt"], 2, "{status}");
    let diff = mcp
        .call("diff", json!({"run_id": run, "task_id": "o"}))
        .await
        .ok();
    assert_eq!(diff["attempt"], 1, "{diff}");
    let note = diff["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("attempt 2 is the latest") && note.contains("changed nothing"),
        "{diff}"
    );
}

#[tokio::test]
async fn a_merge_diverted_by_the_users_changes_says_it_did_not_land_and_what_to_run() {
    let env = mcp_repo();
    let mcp = Mcp::start(env).await;
    let started = mcp
        .call(
            "delegate",
            json!({"tasks": [{"id": "d", "goal": "x", "allowed": ["src/**"]}]}),
        )
        .await
        .ok();
    let run = started["run_id"].as_str().unwrap().to_string();
    let status = mcp.wait_until(&run, |s| s["done"] == true).await;
    assert_eq!(task(&status, "d")["state"], "accepted", "{status}");
    // The user's checkout has its own, uncommitted version of the file the task adds.
    mcp.env.write("src/d.txt", "mine, not committed\n");
    let merged = mcp
        .call("merge", json!({"run_id": run, "wait_seconds": 60}))
        .await
        .ok();
    assert_eq!(merged["finished"], true, "{merged}");
    assert_eq!(merged["landed"], false, "{merged}");
    assert_eq!(
        merged["landed_on"],
        format!("ccfan/{run}/integration"),
        "{merged}"
    );
    assert!(
        merged["next"]
            .as_str()
            .unwrap()
            .contains("git merge --ff-only"),
        "{merged}"
    );
    assert_eq!(
        std::fs::read_to_string(mcp.env.repo.join("src/d.txt")).unwrap(),
        "mine, not committed\n"
    );
}

#[tokio::test]
async fn a_server_for_the_network_serves_only_its_own_repository() {
    let env = TestEnv::new();
    let other = TestEnv::new();
    let repos = Repos::only_start(
        env.repo.clone(),
        PathBuf::from(env!("CARGO_BIN_EXE_ccfan")),
        env.ccfan_env(),
    )
    .unwrap();
    let mcp = Mcp::serve(env, repos).await;
    let own = mcp.env.repo.to_str().unwrap().to_string();
    mcp.call("list_runs", json!({ "repo": own })).await.ok();
    let refused = mcp
        .call("list_runs", json!({ "repo": other.repo.to_str().unwrap() }))
        .await
        .failed("refused");
    assert!(
        refused["message"].as_str().unwrap().contains("serves only"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delegated_task_is_reviewed_and_status_says_by_whom() {
    let env = mcp_repo();
    let reviewer = env.script(
        "reviewer.sh",
        r#"echo '{"verdict": "approve", "summary": "fine", "comments": [{"path": "src/t.txt", "line": 1, "severity": "warning", "message": "say more"}]}'"#,
    );
    let policy = std::fs::read_to_string(env.repo.join("ccfan.toml")).unwrap();
    env.commit_policy(&format!(
        "{policy}\n[workers.rev]\nkind = \"command\"\ncommand = [\"{}\"]\n\n[review]\nworker = \"rev\"\n",
        reviewer.display()
    ));
    let mcp = Mcp::start(env).await;
    let started = mcp
        .call(
            "delegate",
            json!({"tasks": [{"id": "t", "goal": "append", "allowed": ["src/**"]}], "merge": true}),
        )
        .await
        .ok();
    let run = started["run_id"].as_str().unwrap().to_string();
    let status = mcp.wait_until(&run, |s| s["done"] == true).await;
    let mut shown = task(&status, "t").clone();
    shown["elapsed_secs"] = Value::Null;
    assert!(
        shown["last_event"]
            .as_str()
            .unwrap()
            .starts_with("merged into main as ")
    );
    shown["last_event"] = Value::Null;
    insta::assert_json_snapshot!("mcp_reviewed_task", shown);
    // The reviewer's comment is evidence like any finding.
    let evidence = mcp
        .call("verify", json!({"run_id": run, "detail": true}))
        .await
        .ok();
    let text = evidence.to_string();
    assert!(
        text.contains("review-comment") && text.contains("say more"),
        "{text}"
    );
}

/// An orchestrating agent delegates over MCP as before, and with `backend = "podman"` the same tools run its
/// tasks in containers: a good one lands, one out of its scope is stopped by the same gate, with its evidence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegating_over_mcp_runs_the_tasks_in_containers_through_the_same_gate() {
    let env = TestEnv::new();
    let Some(engine) = crate::containers::Engine::start(
        "mcp::delegating_over_mcp_runs_the_tasks_in_containers_through_the_same_gate",
        env.tmp.path(),
    ) else {
        return;
    };
    env.commit_policy(&engine.policy(&format!(
        "\n{}\n{}",
        crate::containers::worker(
            "inside",
            "test -f /run/.containerenv && echo \"$CCFAN_TASK_ID in a container\" > src/$CCFAN_TASK_ID.txt"
        ),
        crate::containers::worker("outside", "echo changed >> README.md"),
    )));
    let mcp = Mcp::start(env).await;
    let started = mcp
        .call(
            "delegate",
            json!({"tasks": [
                {"id": "good", "goal": "write its file", "allowed": ["src/**"], "worker": "inside"},
                {"id": "stray", "goal": "write out of scope", "allowed": ["src/**"], "worker": "outside"},
            ], "merge": true}),
        )
        .await
        .ok();
    let run = started["run_id"].as_str().unwrap().to_string();
    let status = mcp.wait_until(&run, |s| s["done"] == true).await;
    assert_eq!(task(&status, "good")["state"], "merged", "{status}");
    assert_eq!(
        mcp.env.git(&["show", "main:src/good.txt"]).trim(),
        "good in a container"
    );
    assert_ne!(task(&status, "stray")["state"], "merged", "{status}");
    let evidence = mcp
        .call("verify", json!({"run_id": run, "task_id": "stray"}))
        .await
        .ok()
        .to_string();
    assert!(
        evidence.contains("README.md") && evidence.contains("scope"),
        "{evidence}"
    );
    assert!(!mcp.env.git(&["show", "main:README.md"]).contains("changed"));
    assert_eq!(engine.left(&run), "", "every container removed");
}
