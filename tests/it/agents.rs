//! Agent workers end to end: the real, pinned Codex CLI and Claude Code binaries (installed by `scripts/test.sh`
//! into `.tools/npm`), inside ccfan's sandbox, talking to `fixtures/fake-model/server.py` on loopback, which
//! follows a script and logs every request. No API key, no network beyond loopback.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::env::{Ran, TestEnv, task, visible_tmp};

/// Where `scripts/test.sh` installs the pinned agent CLIs (or `CCFAN_AGENT_BIN`).
pub fn agent_dir() -> PathBuf {
    std::env::var_os("CCFAN_AGENT_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/npm/node_modules/.bin"),
        PathBuf::from,
    )
}

/// Whether the agent CLIs are installed (else `test` is skipped with a note; see [`crate::env::installed`]).
fn agents_installed(test: &str) -> bool {
    ["codex", "claude"].iter().all(|name| {
        crate::env::installed(
            test,
            &format!("the pinned `{name}` CLI"),
            Some(agent_dir().join(name)),
        )
        .is_some()
    })
}

/// The folder holding the `codex` and `claude` the tests drive.
fn agent_bin() -> PathBuf {
    let dir = agent_dir();
    for name in ["codex", "claude"] {
        assert!(
            dir.join(name).exists(),
            "{} is missing: run scripts/test.sh, which installs the pinned agent CLIs",
            dir.join(name).display()
        );
    }
    dir
}

/// The fake model server, killed when dropped.
pub struct FakeModel {
    child: Child,
    /// Its port.
    pub port: u16,
    log: PathBuf,
}

impl FakeModel {
    fn start(dir: &Path, steps: Value) -> FakeModel {
        FakeModel::start_on(dir, steps, "127.0.0.1")
    }

    /// The server following `steps`, listening on `host` (`0.0.0.0`: containers reach it too).
    pub fn start_on(dir: &Path, steps: Value, host: &str) -> FakeModel {
        std::fs::create_dir_all(dir).unwrap();
        let script = dir.join("script.json");
        std::fs::write(&script, steps.to_string()).unwrap();
        let (log, port_file) = (dir.join("requests.jsonl"), dir.join("port"));
        let server = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/fake-model/server.py");
        let child = Command::new("python3")
            .arg(server)
            .arg("--script")
            .arg(&script)
            .arg("--log")
            .arg(&log)
            .arg("--port-file")
            .arg(&port_file)
            .args(["--host", host])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let port = loop {
            if let Some(port) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|text| text.trim().parse().ok())
            {
                break port;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the fake model did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        FakeModel { child, port, log }
    }

    /// The requests that took a script step (the agent's conversation), in order.
    pub fn conversation(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str::<Value>(line).unwrap())
            .filter(|request| !request["step"].is_null())
            .collect()
    }
}

impl Drop for FakeModel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until another ccfan process shows task `id` running with its agent's first command, `command`, live
/// (`status` runs `ccfan status` with the arguments given), and returns the task as shown.
pub fn live_command(
    status: impl Fn(&[&str]) -> Value,
    id: &str,
    command: &str,
    within: Duration,
) -> Value {
    let started = Instant::now();
    let live = loop {
        let list = status(&["status", "--json"]);
        let found = list["runs"].as_array().unwrap().iter().find_map(|run| {
            let view = status(&["status", "--json", run["run_id"].as_str()?]);
            view["tasks"]
                .as_array()?
                .iter()
                .find(|t| t["id"] == id)
                .cloned()
        });
        if let Some(t) = found
            && t["state"] == "running"
            && t["agent"]["commands_run"] == 1
        {
            break t;
        }
        assert!(started.elapsed() < within, "no live progress for {id}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        live["agent"]["last_command"]
            .as_str()
            .is_some_and(|last| last.contains(command)),
        "{live}"
    );
    live
}

/// The user's own Codex home, with its config pointing at the fake model, as a user's would point at theirs.
fn user_codex_home(env: &TestEnv, model: &FakeModel) -> PathBuf {
    user_codex_home_at(env, &format!("http://127.0.0.1:{}", model.port))
}

/// The user's own Codex home, with its config pointing at the model at `url` (as the agent reaches it).
pub fn user_codex_home_at(env: &TestEnv, url: &str) -> PathBuf {
    let codex_home = env.tmp.path().join("user-codex");
    std::fs::create_dir_all(&codex_home).unwrap();
    std::fs::write(
        codex_home.join("config.toml"),
        format!(
            "model = \"gpt-5.5\"\nmodel_provider = \"mock\"\n\n[model_providers.mock]\nname = \"mock\"\n\
             base_url = \"{url}/v1\"\nwire_api = \"responses\"\n"
        ),
    )
    .unwrap();
    codex_home
}

/// A repository whose policy has a `codex` and a `claude` worker, with the user's Codex config pointing at the
/// fake model.
fn setup(model: &FakeModel, extra_policy: &str) -> TestEnv {
    let env = TestEnv::new_in(&visible_tmp());
    user_codex_home(&env, model);
    env.commit_policy(&format!(
        "[run]\nmax_reworks = 2\n\n[workers.cx]\nkind = \"codex\"\nenv = {{ PROBE = \"{probe}\" }}\n\n\
         [workers.cl]\nkind = \"claude\"\nenv = {{ PROBE = \"{probe}\" }}\n{extra_policy}",
        probe = env.probe().display()
    ));
    env
}

/// `ccfan ARGS` with the agents on the PATH and their credentials and endpoints in the environment.
fn agent_command(env: &TestEnv, model: &FakeModel, args: &[&str]) -> Command {
    let path = format!("{}:/usr/local/bin:/usr/bin:/bin", agent_bin().display());
    let mut command = env.command(args);
    command
        .env("PATH", path)
        .env("CODEX_HOME", env.tmp.path().join("user-codex"))
        .env("CODEX_API_KEY", "sk-test-not-a-real-key")
        .env(
            "ANTHROPIC_BASE_URL",
            format!("http://127.0.0.1:{}", model.port),
        )
        .env("ANTHROPIC_API_KEY", "sk-ant-test-not-a-real-key");
    command
}

fn agent_ccfan(env: &TestEnv, model: &FakeModel, args: &[&str]) -> Ran {
    let output = agent_command(env, model, args).output().unwrap();
    Ran {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn run_task(env: &TestEnv, model: &FakeModel, id: &str, worker: &str, extra: &str) -> Ran {
    let tasks = env.tasks(&format!(
        "[[task]]\nid = \"{id}\"\ngoal = \"Write the usage guide ({id})\"\nallowed = [\"docs/**\"]\n\
         worker = \"{worker}\"\n{extra}"
    ));
    agent_ccfan(
        env,
        model,
        &["run", "--json", "--tasks", tasks.to_str().unwrap()],
    )
}

pub fn final_message(files: &[&str]) -> String {
    let list: Vec<String> = files.iter().map(|f| format!("- {f}")).collect();
    format!(
        "## Summary\nWrote the guide.\n## Tests\nNone needed for docs.\n## Files Changed\n{}",
        list.join("\n")
    )
}

#[test]
fn codex_good_edit_is_accepted_and_merged_with_usage_and_progress() {
    if !agents_installed("codex_good_edit_is_accepted_and_merged_with_usage_and_progress") {
        return;
    }
    let dir = tempfile::tempdir_in(visible_tmp()).unwrap();
    let model = FakeModel::start(
        dir.path(),
        json!([
            {"when": "codex-good", "shell": "ls"},
            {"when": "codex-good", "write": {"path": "docs/usage.md", "content": "# Usage\nRun ccfan."}},
            {"when": "codex-good", "message": final_message(&["docs/usage.md"])},
            {"when": "codex-priced", "write": {"path": "docs/priced.md", "content": "# Priced\n"}},
            {"when": "codex-priced", "message": final_message(&["docs/priced.md"])},
        ]),
    );
    let env = setup(&model, "");
    let ran = run_task(&env, &model, "codex-good", "cx", "");
    assert_eq!(ran.code, 0, "{ran:?}");
    let view = ran.json();
    let t = task(&view, "codex-good");
    assert_eq!(t["state"], "merged", "{ran:?}");
    assert_eq!(t["agent"]["agent"], "codex");
    assert_eq!(t["agent"]["commands_run"], 1);
    assert_eq!(t["agent"]["files_changed"], 1);
    assert!(t["usage"]["input_tokens"].as_u64().unwrap() > 0, "{t}");
    assert!(
        view["usage"]["output_tokens"].as_u64().unwrap() > 0,
        "{view}"
    );
    // Codex reports no cost and the profile names no model: the ledger counts the attempt as unpriced, and says so.
    let ledger = &view["ledger"];
    assert_eq!(ledger["total"]["attempts"], 1, "{view}");
    assert_eq!(ledger["total"]["unpriced"], 1, "{view}");
    assert_eq!(ledger["by_profile"]["cx"]["attempts"], 1, "{view}");
    let human = agent_ccfan(&env, &model, &["status", view["run_id"].as_str().unwrap()]);
    assert!(human.stdout.contains("1 attempt(s) unpriced"), "{human:?}");
    assert_eq!(
        std::fs::read_to_string(env.repo.join("docs/usage.md")).unwrap(),
        "# Usage\nRun ccfan.\n"
    );
    // Live progress reached the display, and the API key reached no output.
    assert!(ran.stderr.contains("codex-good: codex: "), "{ran:?}");
    assert!(ran.stderr.contains("· 1 file(s)"), "{ran:?}");
    assert!(!ran.stderr.contains("sk-test-not-a-real-key") && !ran.stdout.contains("sk-test"));
    // The model saw the task, its scope and the instruction to finish with the three sections.
    let conversation = model.conversation();
    let first = conversation[0]["body"].to_string();
    for part in [
        "Write the usage guide (codex-good)",
        "`docs/**`",
        "## Files Changed",
    ] {
        assert!(first.contains(part), "{part} not in the prompt");
    }
    // The user's own Codex home was only read: the sessions live in ccfan's private copy.
    assert!(!env.tmp.path().join("user-codex/sessions").exists());
    let history = agent_ccfan(
        &env,
        &model,
        &[
            "status",
            "--json",
            &format!("{}/codex-good", view["run_id"].as_str().unwrap()),
        ],
    );
    let attempt = &history.json()["attempts"][0]["agent"];
    assert_eq!(
        attempt["session_id"], conversation[0]["headers"]["session-id"],
        "{attempt}"
    );
    // Named in the profile, the model prices the same tokens from the price table (the user's, here).
    let priced = setup(&model, "");
    price_fake_model(&priced);
    priced.commit_policy(&format!(
        "[workers.cx]\nkind = \"codex\"\nmodel = \"fake-model-1\"\nenv = {{ PROBE = \"{}\" }}\n",
        priced.probe().display()
    ));
    let ran = run_task(&priced, &model, "codex-priced", "cx", "");
    let view = ran.json();
    let cost = task(&view, "codex-priced")["cost_usd"]
        .as_f64()
        .unwrap_or(0.0);
    assert!(cost > 0.0, "{view}");
    assert_eq!(view["ledger"]["total"]["unpriced"], 0, "{view}");
}

/// The out-of-scope edit, the rework in the same session, the fix: shared by both agents.
fn rework_resumes_the_same_session(worker: &str, id: &str, session_header: &str) {
    let dir = tempfile::tempdir_in(visible_tmp()).unwrap();
    let model = FakeModel::start(
        dir.path(),
        json!([
            {"when": id, "write": {"path": "notes/outside.md", "content": "out of scope"}},
            {"when": id, "message": final_message(&["notes/outside.md"])},
            {"when": "ccfan's gate checked your work", "shell": "rm -r notes && mkdir -p docs && echo fixed > docs/guide.md"},
            {"when": "ccfan's gate checked your work", "message": final_message(&["docs/guide.md"])},
        ]),
    );
    let env = setup(&model, "");
    let ran = run_task(&env, &model, id, worker, "");
    assert_eq!(ran.code, 0, "{ran:?}");
    let view = ran.json();
    let t = task(&view, id);
    assert_eq!(t["state"], "merged", "{ran:?}");
    assert_eq!(t["attempts"], 2);
    assert!(env.repo.join("docs/guide.md").exists());
    assert!(
        !env.repo.join("notes").exists(),
        "the out-of-scope file never landed"
    );
    let conversation = model.conversation();
    assert_eq!(conversation.len(), 4, "{conversation:#?}");
    // One session throughout: the rework continued the conversation rather than starting another.
    let session = &conversation[0]["headers"][session_header];
    assert!(session.is_string(), "no {session_header} header");
    assert!(
        conversation
            .iter()
            .all(|r| &r["headers"][session_header] == session)
    );
    let rework = conversation[2]["body"].to_string();
    assert!(
        rework.contains("notes/outside.md") && rework.contains("[scope "),
        "findings missing: {rework}"
    );
    assert!(
        rework.contains("Write the usage guide"),
        "the rework request must carry the earlier conversation"
    );
    let history = agent_ccfan(
        &env,
        &model,
        &[
            "status",
            "--json",
            &format!("{}/{id}", view["run_id"].as_str().unwrap()),
        ],
    )
    .json();
    assert_eq!(history["attempts"][1]["agent"]["resumed"], true);
}

#[test]
fn codex_rework_resumes_its_thread() {
    if !agents_installed("codex_rework_resumes_its_thread") {
        return;
    }
    rework_resumes_the_same_session("cx", "codex-rework", "session-id");
}

#[test]
fn claude_good_edit_and_rework_resume_its_session() {
    if !agents_installed("claude_good_edit_and_rework_resume_its_session") {
        return;
    }
    rework_resumes_the_same_session("cl", "claude-rework", "x-claude-code-session-id");
}

#[test]
fn model_errors_end_in_a_clear_state() {
    if !agents_installed("model_errors_end_in_a_clear_state") {
        return;
    }
    let dir = tempfile::tempdir_in(visible_tmp()).unwrap();
    let model = FakeModel::start(
        dir.path(),
        json!([{"when": "-error", "repeat": true, "error": {"status": 400, "message": "model exploded"}}]),
    );
    let env = setup(&model, "");
    for (worker, id, rule) in [
        ("cl", "claude-error", "agent-api-error"),
        ("cx", "codex-error", "agent-turn-failed"),
    ] {
        let ran = run_task(&env, &model, id, worker, "");
        assert_eq!(ran.code, 1, "{ran:?}");
        let t = task(&ran.json(), id).clone();
        assert_eq!(t["state"], "rolled_back", "{ran:?}");
        assert_eq!(t["attempts"], 1, "a model error is not reworked: {t}");
        let reason = t["reason"].as_str().unwrap();
        assert!(
            reason.contains(rule) && reason.contains("model exploded"),
            "{reason}"
        );
    }
}

#[test]
fn a_hanging_model_times_out_and_the_whole_tree_dies_while_status_shows_progress() {
    if !agents_installed(
        "a_hanging_model_times_out_and_the_whole_tree_dies_while_status_shows_progress",
    ) {
        return;
    }
    let dir = tempfile::tempdir_in(visible_tmp()).unwrap();
    let model = FakeModel::start(
        dir.path(),
        json!([
            {"when": "codex-hang", "shell": "echo started > started.txt"},
            {"when": "codex-hang", "hang": 120},
            {"when": "claude-hang", "shell": "echo started > started.txt"},
            {"when": "claude-hang", "hang": 120},
        ]),
    );
    let env = setup(&model, "");
    for (worker, id) in [("cx", "codex-hang"), ("cl", "claude-hang")] {
        let tasks = env.tasks(&format!(
            "[[task]]\nid = \"{id}\"\ngoal = \"Hang ({id})\"\nallowed = [\"**\"]\nworker = \"{worker}\"\n\
             timeout = \"6s\"\n"
        ));
        let started = Instant::now();
        let running = agent_command(
            &env,
            &model,
            &[
                "run",
                "--json",
                "--no-merge",
                "--tasks",
                tasks.to_str().unwrap(),
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
        // Another process sees the agent's live progress while the model hangs.
        live_command(
            |args| agent_ccfan(&env, &model, args).json(),
            id,
            "echo started",
            Duration::from_secs(30),
        );
        // The agent's processes are found while it runs, so finding none afterwards means they died.
        assert!(
            !env.worker_processes().is_empty(),
            "{id}: no agent process found while it ran"
        );
        let output = running.wait_with_output().unwrap();
        assert!(started.elapsed() < Duration::from_secs(90));
        let view: Value = serde_json::from_slice(&output.stdout).unwrap();
        let run = view["run_id"].as_str().unwrap();
        let history =
            agent_ccfan(&env, &model, &["status", "--json", &format!("{run}/{id}")]).json();
        assert_eq!(
            history["attempts"][0]["exit_status"]["kind"], "timed_out",
            "{history}"
        );
        assert!(
            env.worker_processes().is_empty(),
            "{id}: agent processes survived"
        );
    }
}

#[test]
fn agent_writes_stay_in_the_worktree_and_its_private_home() {
    if !agents_installed("agent_writes_stay_in_the_worktree_and_its_private_home") {
        return;
    }
    let dir = tempfile::tempdir_in(visible_tmp()).unwrap();
    let env_dir = dir.path().join("host");
    std::fs::create_dir_all(&env_dir).unwrap();
    let outside = env_dir.join("escaped.txt");
    let model = FakeModel::start(
        dir.path(),
        json!([
            {"when": "codex-escape", "shell": format!(
                "echo x > {out}; echo x > $HOME/escaped; echo 'notify = [\"sh\"]' >> $CODEX_HOME/config.toml; \
                 echo x > .git/escaped; mkdir -p docs; echo ok > docs/ok.md",
                out = outside.display())},
            {"when": "codex-escape", "message": final_message(&["docs/ok.md"])},
        ]),
    );
    let env = setup(&model, "");
    let user_config = env.tmp.path().join("user-codex/config.toml");
    let before = std::fs::read_to_string(&user_config).unwrap();
    let ran = run_task(&env, &model, "codex-escape", "cx", "");
    assert_eq!(
        task(&ran.json(), "codex-escape")["state"],
        "merged",
        "{ran:?}"
    );
    assert!(
        !outside.exists(),
        "a write outside the worktree got through"
    );
    assert!(!env.home().join("escaped").exists());
    assert_eq!(
        std::fs::read_to_string(&user_config).unwrap(),
        before,
        "the user's Codex config changed"
    );
    assert!(env.repo.join("docs/ok.md").exists());
}

#[test]
fn missing_or_outdated_binaries_fail_with_the_fix() {
    if !agents_installed("missing_or_outdated_binaries_fail_with_the_fix") {
        return;
    }
    let dir = tempfile::tempdir_in(visible_tmp()).unwrap();
    let model = FakeModel::start(dir.path(), json!([]));
    let old = dir.path().join("old-codex");
    std::fs::write(
        &old,
        "#!/bin/sh\ncase \"$*\" in *--version*) echo 'codex-cli 0.1.0';; *) echo 'Usage: codex exec [PROMPT]';; esac\n",
    )
    .unwrap();
    std::fs::set_permissions(&old, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let env = setup(
        &model,
        &format!(
            "\n[workers.gone]\nkind = \"codex\"\nprogram = \"no-such-codex\"\n\n[workers.old]\nkind = \"codex\"\nprogram = \"{}\"\n",
            old.display()
        ),
    );
    let ran = run_task(&env, &model, "gone", "gone", "");
    let reason = task(&ran.json(), "gone")["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        reason.contains("no-such-codex") && reason.contains("npm install -g @openai/codex"),
        "{reason}"
    );
    let ran = run_task(&env, &model, "old", "old", "");
    let reason = task(&ran.json(), "old")["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        reason.contains("0.1.0") && reason.contains("`--json`"),
        "{reason}"
    );

    // `doctor` lists every agent with its version, and fails while a profile of the policy cannot run.
    let ran = agent_ccfan(&env, &model, &["doctor", "--json"]);
    assert_eq!(ran.code, 1, "{ran:?}");
    let doctor = ran.json();
    let kinds = doctor["workers"].as_array().unwrap();
    let find = |kind: &str, program: &str| {
        kinds
            .iter()
            .find(|k| k["kind"] == kind && k["program"] == program)
            .unwrap_or_else(|| panic!("{kind} {program} not in {doctor}"))
    };
    assert_eq!(find("codex", "codex")["version"], "0.169.0");
    assert_eq!(find("claude", "claude")["version"], "2.1.330");
    assert!(
        find("codex", "codex")["missing_flags"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let old_report = find("codex", old.to_str().unwrap());
    assert_eq!(old_report["missing_flags"][0], "--json", "{old_report}");
    assert_eq!(old_report["profiles"][0], "old");
    assert!(
        find("codex", "no-such-codex")["problem"]
            .as_str()
            .unwrap()
            .contains("not on the worker's PATH")
    );
}

#[test]
fn an_unreachable_model_api_ends_the_attempt_as_an_api_error_within_its_limits() {
    if !agents_installed(
        "an_unreachable_model_api_ends_the_attempt_as_an_api_error_within_its_limits",
    ) {
        return;
    }
    let dir = tempfile::tempdir_in(visible_tmp()).unwrap();
    let model = FakeModel::start(dir.path(), json!([]));
    let env = setup(&model, "");
    // A port with nothing listening: Codex waits for the network for ever, Claude Code retries for 3 minutes.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        env.tmp.path().join("user-codex/config.toml"),
        format!(
            "model = \"gpt-5.5\"\nmodel_provider = \"mock\"\n\n[model_providers.mock]\nname = \"mock\"\n\
             base_url = \"http://127.0.0.1:{closed}/v1\"\nwire_api = \"responses\"\n"
        ),
    )
    .unwrap();
    let limits = "api_retries = 3\napi_retry_window = \"8s\"\ntimeout = \"3m\"\n";
    let tasks = env.tasks(&format!(
        "[[task]]\nid = \"cx-offline\"\ngoal = \"Write the guide\"\nallowed = [\"docs/**\"]\nworker = \"cx2\"\n\
         [[task]]\nid = \"cl-offline\"\ngoal = \"Write the guide\"\nallowed = [\"docs/**\"]\nworker = \"cl2\"\n\
         [workers.cx2]\nkind = \"codex\"\n{limits}[workers.cl2]\nkind = \"claude\"\n{limits}"
    ));
    let started = Instant::now();
    let output = agent_command(
        &env,
        &model,
        &["run", "--json", "--tasks", tasks.to_str().unwrap()],
    )
    .env("ANTHROPIC_BASE_URL", format!("http://127.0.0.1:{closed}"))
    .output()
    .unwrap();
    let ran: Ran = output.into();
    let took = started.elapsed();
    assert_eq!(ran.code, 1, "{ran:?}");
    assert!(took < Duration::from_secs(90), "took {took:?}");
    let view = ran.json();
    let run_id = view["run_id"].as_str().unwrap().to_string();
    for id in ["cx-offline", "cl-offline"] {
        let t = task(&view, id);
        assert_eq!(t["state"], "rolled_back", "{t}");
        assert_eq!(t["attempts"], 1, "an unreachable API is not reworked: {t}");
        let reason = t["reason"].as_str().unwrap();
        assert!(
            reason.contains("agent-api-error") && reason.contains("model API unreachable"),
            "{reason}"
        );
        let status = agent_ccfan(&env, &model, &["status", "--json", &run_id]).json();
        let current = task(&status, id)["agent"]["current"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(current.contains("model API unreachable"), "{current}");
    }
}

#[test]
fn a_key_the_agent_wrote_and_printed_is_scrubbed_from_its_home() {
    if !agents_installed("a_key_the_agent_wrote_and_printed_is_scrubbed_from_its_home") {
        return;
    }
    let dir = tempfile::tempdir_in(visible_tmp()).unwrap();
    let key = "AKIAQ3RWK7ZNBX4TYPLM";
    let model = FakeModel::start(
        dir.path(),
        json!([
            {"when": "codex-leak", "shell": format!(
                "mkdir -p docs; echo 'AWS_ACCESS_KEY_ID={key}' > docs/keys.md; cat docs/keys.md")},
            {"when": "codex-leak", "message": final_message(&["docs/keys.md"])},
        ]),
    );
    let env = setup(&model, "");
    let ran = run_task(&env, &model, "codex-leak", "cx", "");
    let view = ran.json();
    assert_ne!(task(&view, "codex-leak")["state"], "merged", "{ran:?}");
    let home = env.state_dir().join("runs");
    let mut files = Vec::new();
    let mut pending = vec![home];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder).unwrap().flatten() {
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                files.push(entry.path());
            }
        }
    }
    let sessions: Vec<_> = files
        .iter()
        .filter(|path| {
            path.to_string_lossy()
                .contains("/agent-home/codex/sessions/")
        })
        .collect();
    assert!(!sessions.is_empty(), "{files:#?}");
    // The key reached the session transcript (the shell step ran and printed it) and was scrubbed there.
    assert!(
        sessions.iter().any(|path| {
            std::fs::read_to_string(path).is_ok_and(|text| text.contains("ccfan-redacted"))
        }),
        "{sessions:#?}"
    );
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        assert!(
            !bytes.windows(key.len()).any(|w| w == key.as_bytes()),
            "raw key kept in {}",
            file.display()
        );
    }
}

#[test]
fn a_repository_without_ccfan_toml_delegates_to_the_built_in_profiles_over_mcp() {
    if !agents_installed(
        "a_repository_without_ccfan_toml_delegates_to_the_built_in_profiles_over_mcp",
    ) {
        return;
    }
    let Some(python_path) = crate::env::installed(
        "a_repository_without_ccfan_toml_delegates_to_the_built_in_profiles_over_mcp",
        "the Python MCP SDK (CCFAN_MCP_PYTHONPATH)",
        crate::env::env_path("CCFAN_MCP_PYTHONPATH"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir_in(visible_tmp()).unwrap();
    let mut steps = Vec::new();
    for agent in ["codex", "claude"] {
        let id = format!("{agent}-task");
        let file = format!("docs/{agent}.md");
        steps.push(json!({"when": id, "write": {"path": file, "content": format!("# {agent}\n")}}));
        steps.push(json!({"when": id, "message": final_message(&[&file])}));
    }
    let model = FakeModel::start(dir.path(), Value::Array(steps));
    // A fresh repository: no ccfan.toml. Only the user's Codex config points at the model, as a user's would.
    let env = TestEnv::new_in(&visible_tmp());
    assert!(!env.repo.join("ccfan.toml").exists());
    let codex_home = user_codex_home(&env, &model);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/mcp/first_contact.py");
    let mut command = Command::new("python3");
    for (name, value) in env.ccfan_env() {
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
    }
    let output = command
        .env("PYTHONPATH", python_path)
        .env(
            "PATH",
            format!("{}:/usr/local/bin:/usr/bin:/bin", agent_bin().display()),
        )
        .env("CODEX_HOME", &codex_home)
        .env("CODEX_API_KEY", "sk-test-not-a-real-key")
        .env(
            "ANTHROPIC_BASE_URL",
            format!("http://127.0.0.1:{}", model.port),
        )
        .env("ANTHROPIC_API_KEY", "sk-ant-test-not-a-real-key")
        .arg(script)
        .args(["--ccfan", env!("CARGO_BIN_EXE_ccfan"), "--repo"])
        .arg(&env.repo)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("\nok\n"),
        "--- stdout\n{stdout}\n--- stderr\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for agent in ["codex", "claude"] {
        assert_eq!(
            std::fs::read_to_string(env.repo.join(format!("docs/{agent}.md"))).unwrap(),
            format!("# {agent}\n")
        );
    }
}

/// The user's price table (`$XDG_CONFIG_HOME/ccfan/prices.toml`) pricing the model the tests name. (A real model
/// name would make Codex speak that model's tool dialect, which the fake model server does not.)
fn price_fake_model(env: &TestEnv) {
    let folder = env.home().join(".config/ccfan");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(
        folder.join("prices.toml"),
        "date = \"2026-12-01\"\n[[price]]\nprovider = \"openai\"\nmodel = \"fake-model-1\"\ninput = 1.0\ncached_input = 0.1\noutput = 4.0\n",
    )
    .unwrap();
}

#[test]
fn a_budget_crossed_mid_run_stops_the_right_tasks_with_their_work_kept() {
    if !agents_installed("a_budget_crossed_mid_run_stops_the_right_tasks_with_their_work_kept") {
        return;
    }
    let dir = tempfile::tempdir_in(visible_tmp()).unwrap();
    let model = FakeModel::start(
        dir.path(),
        json!([
            {"when": "budget-a", "write": {"path": "docs/a.md", "content": "# A\n"}},
            {"when": "budget-a", "message": final_message(&["docs/a.md"])},
            {"when": "budget-b", "write": {"path": "docs/b.md", "content": "# B\n"}},
            {"when": "budget-b", "message": final_message(&["docs/b.md"])},
            // No report sections: the gate asks for a rework, which the task's cap then stops.
            {"when": "budget-c", "write": {"path": "docs/c.md", "content": "# C\n"}},
            {"when": "budget-c", "message": "done"},
        ]),
    );
    // Token caps: the profile names no model (one would make Codex speak that model's tool dialect, which the fake
    // model server does not), so no dollars are known, while every token counts.
    let profile = |env: &TestEnv, budget: &str| {
        env.commit_policy(&format!(
            "[run]\nmax_reworks = 2\n[workers.cx]\nkind = \"codex\"\nenv = {{ PROBE = \"{}\" }}\n{budget}",
            env.probe().display()
        ));
    };
    // The task's cap: its first attempt is kept on its salvage ref; the rework it earned does not start.
    let env = setup(&model, "");
    profile(&env, "[budget]\ntask_tokens = 100\n");
    let ran = run_task(&env, &model, "budget-c", "cx", "");
    let view = ran.json();
    let c = task(&view, "budget-c");
    assert_eq!(c["state"], "over_budget", "{ran:?}");
    assert_eq!(c["attempts"], 1, "{c}");
    assert!(
        c["reason"].as_str().unwrap().contains("budget.task_tokens"),
        "{c}"
    );
    assert!(
        c["salvage_refs"]
            .as_array()
            .is_some_and(|refs| !refs.is_empty()),
        "{c}"
    );
    // A retry under the same cap starts no worker: the task is over budget again at once, with the same attempts.
    let run_id = view["run_id"].as_str().unwrap();
    let retried = agent_ccfan(&env, &model, &["retry", &format!("{run_id}/budget-c")]);
    let status = agent_ccfan(&env, &model, &["status", run_id, "--json"]).json();
    let c = task(&status, "budget-c");
    assert_eq!(c["state"], "over_budget", "{retried:?} {c}");
    assert_eq!(c["attempts"], 1, "{c}");
    // The run's cap: the first task's attempt crosses it; the second never starts.
    let env = setup(&model, "");
    profile(&env, "[budget]\nrun_tokens = 100\n");
    let tasks = env.tasks(
        "[[task]]\nid = \"budget-a\"\ngoal = \"Write a (budget-a)\"\nallowed = [\"docs/**\"]\nworker = \"cx\"\n\
         [[task]]\nid = \"budget-b\"\ngoal = \"Write b (budget-b)\"\nallowed = [\"docs/**\"]\nworker = \"cx\"\n",
    );
    let ran = agent_ccfan(
        &env,
        &model,
        &[
            "run",
            "--json",
            "--jobs",
            "1",
            "--tasks",
            tasks.to_str().unwrap(),
        ],
    );
    let view = ran.json();
    // The first task's usage arrives with its last event: the attempt that crossed the cap is still judged, and
    // lands; only what has yet to spend stops.
    let a = task(&view, "budget-a");
    assert_eq!(a["state"], "merged", "{ran:?}");
    assert_eq!(a["attempts"], 1, "{a}");
    let b = task(&view, "budget-b");
    assert_eq!(b["state"], "over_budget", "{ran:?}");
    assert_eq!(b["attempts"], 0, "{b}");
    assert!(
        b["reason"].as_str().unwrap().contains("budget.run_tokens"),
        "{b}"
    );
    assert!(
        view["ledger"]["total"]["usage"]["input_tokens"]
            .as_u64()
            .unwrap()
            > 100,
        "{view}"
    );
}

/// Plan mode with a real agent: it plans on a read-only tree (its attempt to write fails), the plan is stored,
/// and once approved the agent gets the plan in its prompt and carries it out.
fn plan_then_approve(worker: &str, id: &str) {
    let dir = tempfile::tempdir_in(visible_tmp()).unwrap();
    let plan =
        "## Plan\nWrite docs/usage.md with one line.\n## Risks\nNone.\n## Tests\nNone for docs.";
    let model = FakeModel::start(
        dir.path(),
        json!([
            {"when": "asked for a plan first", "write": {"path": "docs/sneaky.md", "content": "written while planning"}},
            {"when": "asked for a plan first", "message": plan},
            {"when": "## Approved plan", "write": {"path": "docs/usage.md", "content": "# Usage\n"}},
            {"when": "## Approved plan", "message": final_message(&["docs/usage.md"])},
        ]),
    );
    let env = setup(&model, "");
    let tasks = env.tasks(&format!(
        "[[task]]\nid = \"{id}\"\ngoal = \"Write the usage guide ({id})\"\nallowed = [\"docs/**\"]\nworker = \"{worker}\"\n"
    ));
    let ran = agent_ccfan(
        &env,
        &model,
        &[
            "run",
            "--plan",
            "--json",
            "--tasks",
            tasks.to_str().unwrap(),
        ],
    );
    assert_eq!(ran.code, 0, "{ran:?}");
    let view = ran.json();
    let t = task(&view, id);
    assert_eq!(t["state"], "planned", "{ran:?}");
    let worktree = PathBuf::from(t["worktree"].as_str().unwrap());
    assert!(
        !worktree.join("docs/sneaky.md").exists(),
        "the planning agent wrote its tree"
    );
    let run_id = view["run_id"].as_str().unwrap().to_string();
    let history = agent_ccfan(
        &env,
        &model,
        &["status", "--json", &format!("{run_id}/{id}")],
    )
    .json();
    assert!(
        history["plan"]
            .as_str()
            .unwrap()
            .contains("Write docs/usage.md with one line."),
        "{history}"
    );
    assert!(
        history["attempts"][0]["agent"]["usage"]["input_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
    let approved = agent_ccfan(
        &env,
        &model,
        &["approve", &format!("{run_id}/{id}"), "--json"],
    );
    assert_eq!(approved.code, 0, "{approved:?}");
    assert_eq!(
        task(&approved.json()["run"], id)["state"],
        "merged",
        "{approved:?}"
    );
    assert!(env.repo.join("docs/usage.md").exists());
    assert!(!env.repo.join("docs/sneaky.md").exists());
    let conversation = model.conversation();
    assert_eq!(conversation.len(), 4, "{conversation:#?}");
    // The write the planning agent tried came back to it as a failure.
    let after_write = conversation[1]["body"].to_string();
    assert!(
        after_write.contains("Failed to create parent directories")
            || after_write.contains("while in plan mode"),
        "the planning write did not fail: {after_write}"
    );
    let executing = conversation
        .iter()
        .find(|request| request["body"].to_string().contains("## Approved plan"))
        .expect("the execution prompt");
    assert!(
        executing["body"]
            .to_string()
            .contains("Write docs/usage.md with one line."),
        "the approved plan is in the prompt"
    );
}

#[test]
fn codex_plans_read_only_then_carries_out_the_approved_plan() {
    if !agents_installed("codex_plans_read_only_then_carries_out_the_approved_plan") {
        return;
    }
    plan_then_approve("cx", "codex-plan");
}

#[test]
fn claude_plans_in_plan_mode_then_carries_out_the_approved_plan() {
    if !agents_installed("claude_plans_in_plan_mode_then_carries_out_the_approved_plan") {
        return;
    }
    plan_then_approve("cl", "claude-plan");
}

/// The review stage with real agents: one writes, the other reviews read-only on the merge preview. The reviewer
/// sees the whole change in its prompt and its diff file, its write fails, and its `request_changes` goes back
/// into the author's same session; the second attempt lands once the reviewer approves.
fn review_sends_changes_back_into_the_same_session(
    author: &str,
    reviewer: &str,
    id: &str,
    session_header: &str,
) {
    let dir = tempfile::tempdir_in(visible_tmp()).unwrap();
    let request_changes = json!({
        "verdict": "request_changes",
        "summary": "the guide is a draft",
        "comments": [{"path": "docs/guide.md", "line": 1, "severity": "error", "message": "replace the draft with the real guide"}]
    })
    .to_string();
    let approve = json!({"verdict": "approve", "summary": "the guide is complete"}).to_string();
    let twelve = "mkdir -p docs/many && for i in $(seq 1 12); do echo \"page $i\" > docs/many/page$i.md; done";
    let pages: Vec<String> = (1..=12).map(|i| format!("docs/many/page{i}.md")).collect();
    let mut all: Vec<&str> = pages.iter().map(String::as_str).collect();
    all.push("docs/guide.md");
    let model = FakeModel::start(
        dir.path(),
        json!([
            {"when": "code reviewer run by ccfan", "write": {"path": "docs/reviewer-wrote.md", "content": "sneaky"}},
            {"when": "code reviewer run by ccfan", "shell": "cat \"$CCFAN_REVIEW_DIFF\" | grep -c '^+++ '"},
            {"when": "code reviewer run by ccfan", "message": format!("Here is my review.\n```json\n{request_changes}\n```")},
            {"when": "code reviewer run by ccfan", "message": approve},
            {"when": id, "shell": twelve},
            {"when": id, "write": {"path": "docs/guide.md", "content": "draft"}},
            {"when": id, "message": final_message(&all)},
            {"when": "ccfan's gate checked your work", "write": {"path": "docs/guide.md", "content": "# Guide\nThe real guide."}},
            {"when": "ccfan's gate checked your work", "message": final_message(&all)},
        ]),
    );
    let env = setup(&model, &format!("\n[review]\nworker = \"{reviewer}\"\n"));
    let ran = run_task(&env, &model, id, author, "");
    assert_eq!(ran.code, 0, "{ran:?}");
    let view = ran.json();
    let t = task(&view, id);
    assert_eq!(t["state"], "merged", "{ran:?}");
    assert_eq!(t["attempts"], 2);
    assert_eq!(
        std::fs::read_to_string(env.repo.join("docs/guide.md"))
            .unwrap()
            .trim_end(),
        "# Guide\nThe real guide."
    );
    assert!(!env.repo.join("docs/reviewer-wrote.md").exists());
    assert_eq!(t["review"]["reviewer"], reviewer, "{t}");
    assert_eq!(t["review"]["reviews"], 2, "{t}");
    assert_eq!(t["review"]["latest"], "approve", "{t}");
    // The reviews' tokens count toward the task, and are shown on their own.
    let review_tokens = t["review"]["usage"]["input_tokens"].as_u64().unwrap();
    assert!(review_tokens > 0, "{t}");
    assert!(
        t["usage"]["input_tokens"].as_u64().unwrap() > review_tokens,
        "{t}"
    );
    let conversation = model.conversation();
    let bodies: Vec<String> = conversation.iter().map(|r| r["body"].to_string()).collect();
    let reviews: Vec<&String> = bodies
        .iter()
        .filter(|body| body.contains("code reviewer run by ccfan"))
        .collect();
    // The first review saw all thirteen files in its prompt, its write failed, and its diff file held them all.
    let first = reviews[0];
    for i in 1..=12 {
        assert!(
            first.contains(&format!("docs/many/page{i}.md")),
            "page{i} not shown"
        );
    }
    assert!(first.contains("+draft"), "{first}");
    assert!(
        first.contains("Acceptance") || first.contains("## Task"),
        "{first}"
    );
    let after_write = reviews[1].to_lowercase();
    assert!(
        after_write.contains("read-only") || after_write.contains("failed to create"),
        "the reviewer's write did not fail: {after_write}"
    );
    assert!(
        reviews[2].contains("13"),
        "the diff file did not hold 13 files: {}",
        reviews[2]
    );
    // The second review was shown what the first asked for.
    let second = reviews.last().unwrap();
    assert!(
        second.contains("Your review of the previous attempt")
            && second.contains("replace the draft with the real guide"),
        "{second}"
    );
    // The author's rework continued its own session, with the reviewer's comment to fix.
    let rework = bodies
        .iter()
        .find(|body| body.contains("ccfan's gate checked your work"))
        .expect("the rework request");
    assert!(
        rework.contains("replace the draft with the real guide"),
        "{rework}"
    );
    assert!(rework.contains("the guide is a draft"), "{rework}");
    let authors: Vec<&Value> = conversation
        .iter()
        .filter(|r| !r["body"].to_string().contains("code reviewer run by ccfan"))
        .collect();
    let session = &authors[0]["headers"][session_header];
    assert!(session.is_string(), "no {session_header} header");
    assert!(
        authors
            .iter()
            .all(|r| &r["headers"][session_header] == session)
    );
}

#[test]
fn codex_writes_claude_reviews_and_the_requested_change_lands_in_the_same_session() {
    if !agents_installed(
        "codex_writes_claude_reviews_and_the_requested_change_lands_in_the_same_session",
    ) {
        return;
    }
    review_sends_changes_back_into_the_same_session("cx", "cl", "codex-reviewed", "session-id");
}

#[test]
fn claude_writes_codex_reviews_and_the_requested_change_lands_in_the_same_session() {
    if !agents_installed(
        "claude_writes_codex_reviews_and_the_requested_change_lands_in_the_same_session",
    ) {
        return;
    }
    review_sends_changes_back_into_the_same_session(
        "cl",
        "cx",
        "claude-reviewed",
        "x-claude-code-session-id",
    );
}

#[test]
fn a_reviewer_that_answers_garbage_does_not_approve() {
    if !agents_installed("a_reviewer_that_answers_garbage_does_not_approve") {
        return;
    }
    let dir = tempfile::tempdir_in(visible_tmp()).unwrap();
    let model = FakeModel::start(
        dir.path(),
        json!([
            {"when": "code reviewer run by ccfan", "repeat": true, "message": "Looks great to me, ship it!"},
            {"when": "garbage-reviewed", "write": {"path": "docs/guide.md", "content": "# Guide\n"}},
            {"when": "garbage-reviewed", "message": final_message(&["docs/guide.md"])},
        ]),
    );
    let env = setup(&model, "\n[review]\nworker = \"cl\"\n");
    let ran = run_task(&env, &model, "garbage-reviewed", "cx", "");
    assert_ne!(ran.code, 0, "{ran:?}");
    let t = task(&ran.json(), "garbage-reviewed").clone();
    assert_eq!(t["state"], "rolled_back", "{t}");
    assert_eq!(t["review"]["latest"], "invalid", "{t}");
    assert!(
        t["reason"].as_str().unwrap().contains("no valid answer"),
        "{t}"
    );
    assert!(!env.repo.join("docs/guide.md").exists());
}
