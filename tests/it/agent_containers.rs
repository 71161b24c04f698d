//! Agent workers in containers: the real, pinned Codex CLI and Claude Code binaries (from `.tools/npm`, copied
//! into a worker image built from local files) run in Podman containers through the same gate, against the fake
//! model on the host (reached as `host.containers.internal`). Their event streams come back into each attempt's
//! summary, and their homes come back so that a rework resumes the same session in a new container.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::agents::{FakeModel, agent_dir, final_message, live_command, user_codex_home_at};
use crate::containers::{Engine, remove_image, worker_image};
use crate::env::{TestEnv, task, visible_tmp};
use crate::kube_fake::FakeCluster;

/// The native binaries of the pinned agent CLIs: the npm packages' platform builds (what `codex` and `claude`
/// start).
fn agent_binaries() -> Option<[PathBuf; 2]> {
    let modules = agent_dir().join("..");
    let codex = modules.join("@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex");
    let claude = modules.join("@anthropic-ai/claude-code-linux-x64/claude");
    (codex.is_file() && claude.is_file()).then_some([codex, claude])
}

/// The worker image plus the two agents, as a user's image adds theirs (`FROM` ccfan's, their agents copied in).
fn agent_image(podman: &Path, base: &str, binaries: &[PathBuf; 2]) -> String {
    let context = tempfile::tempdir_in(visible_tmp()).unwrap();
    for (binary, name) in binaries.iter().zip(["codex", "claude"]) {
        let to = context.path().join(name);
        if std::fs::hard_link(binary, &to).is_err() {
            std::fs::copy(binary, &to).unwrap();
        }
    }
    std::fs::write(
        context.path().join("Containerfile"),
        format!("FROM {base}\nCOPY codex claude /usr/local/bin/\n"),
    )
    .unwrap();
    let image = format!("{base}-agents");
    let built = crate::env::podman_env(&mut Command::new(podman))
        .args(["build", "--quiet", "-t", &image])
        .arg(context.path())
        .output()
        .unwrap();
    assert!(built.status.success(), "{built:?}");
    image
}

#[test]
fn agents_run_in_containers_and_a_rework_resumes_the_session_carried_back() {
    let test =
        "agent_containers::agents_run_in_containers_and_a_rework_resumes_the_session_carried_back";
    let Some(binaries) = crate::env::installed(
        test,
        "the pinned agent CLIs",
        agent_binaries().map(|[codex, _]| codex),
    )
    .and_then(|_| agent_binaries()) else {
        return;
    };
    let Some((podman, base)) = worker_image(test) else {
        return;
    };
    let image = agent_image(&podman, &base, &binaries);
    let dir = tempfile::tempdir_in(visible_tmp()).unwrap();
    let model = FakeModel::start_on(
        &dir.path().join("model"),
        json!([
            {"when": "cx-rework", "write": {"path": "notes/outside.md", "content": "out of scope"}},
            {"when": "cx-rework", "message": final_message(&["notes/outside.md"])},
            {"when": "checked your work on task `cx-rework`", "shell": "rm -r notes && mkdir -p docs && echo fixed > docs/codex.md"},
            {"when": "checked your work on task `cx-rework`", "message": final_message(&["docs/codex.md"])},
            {"when": "cl-good", "shell": "mkdir -p docs && echo \"by claude as $(id -u)\" > docs/claude.md"},
            {"when": "cl-good", "message": final_message(&["docs/claude.md"])},
            {"when": "cl-hang", "shell": "echo started > started.txt"},
            {"when": "cl-hang", "hang": 120},
            {"when": "on-a-cluster", "write": {"path": "notes/pod.md", "content": "out of scope"}},
            {"when": "on-a-cluster", "message": final_message(&["notes/pod.md"])},
            {"when": "checked your work on task `on-a-cluster`", "shell": "rm -r notes && mkdir -p docs && echo \"in a pod as $(id -u)\" > docs/pod.md"},
            {"when": "checked your work on task `on-a-cluster`", "message": final_message(&["docs/pod.md"])},
        ]),
        "0.0.0.0",
    );
    let engine = Engine::with_image(dir.path(), (podman.clone(), image));
    let env = TestEnv::new_in(&visible_tmp());
    let model_url = format!("http://host.containers.internal:{}", model.port);
    // The user's Codex config points at the model as the container sees it; ccfan seeds it into the agent's home.
    let codex_home = user_codex_home_at(&env, &model_url);
    env.commit_policy(&engine.policy(
        "\n[workers.cx]\nkind = \"codex\"\n\n[workers.cl]\nkind = \"claude\"\n\n\
         [workers.gone]\nkind = \"claude\"\nprogram = \"claude-not-in-the-image\"\n",
    ));
    let tasks = env.tasks(
        "[[task]]\nid = \"cx-rework\"\ngoal = \"Write the usage guide (cx-rework)\"\nallowed = [\"docs/**\"]\n\
         worker = \"cx\"\n\
         [[task]]\nid = \"cl-good\"\ngoal = \"Write the usage guide (cl-good)\"\nallowed = [\"docs/**\"]\n\
         worker = \"cl\"\n\
         [[task]]\nid = \"gone\"\ngoal = \"Write the usage guide (gone)\"\nallowed = [\"docs/**\"]\n\
         worker = \"gone\"\n\
         [[task]]\nid = \"cl-hang\"\ngoal = \"Hang (cl-hang)\"\nallowed = [\"**\"]\nworker = \"cl\"\n\
         timeout = \"60s\"\n",
    );
    let started = Instant::now();
    let running = env
        .command(&[
            "run",
            "--json",
            "--jobs",
            "4",
            "--tasks",
            tasks.to_str().unwrap(),
        ])
        .env("CODEX_HOME", &codex_home)
        .env("CODEX_API_KEY", "sk-test-not-a-real-key")
        .env("ANTHROPIC_BASE_URL", &model_url)
        .env("ANTHROPIC_API_KEY", "sk-ant-test-not-a-real-key")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // While the model hangs, another process sees the agent's progress: its stream comes out of the container
    // as it is written.
    live_command(
        |args| env.ccfan(args).json(),
        "cl-hang",
        "echo started",
        Duration::from_secs(55).saturating_sub(started.elapsed()),
    );
    let output = running.wait_with_output().unwrap();
    let ran = crate::env::Ran {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    let view = ran.json();
    let run_id = view["run_id"].as_str().unwrap().to_string();
    // The hanging agent was stopped at its time limit by the runner in its container.
    let hang = env
        .ccfan(&["status", "--json", &format!("{run_id}/cl-hang")])
        .json();
    assert_eq!(
        hang["attempts"][0]["exit_status"]["kind"], "timed_out",
        "{hang}"
    );

    // Claude Code ran in the container as the image's user, and its summary came back from its stream.
    let good = task(&view, "cl-good");
    assert_eq!(good["state"], "merged", "{ran:?}");
    assert_eq!(
        env.git(&["show", "main:docs/claude.md"]).trim(),
        "by claude as 10001"
    );
    let status = |id: &str| {
        env.ccfan(&["status", "--json", &format!("{run_id}/{id}")])
            .json()
    };
    let claude = status("cl-good");
    let agent = &claude["attempts"][0]["agent"];
    let asked = model
        .conversation()
        .into_iter()
        .find(|request| request["body"].to_string().contains("cl-good"))
        .unwrap_or_else(|| panic!("{:#?}", model.conversation()));
    assert_eq!(
        agent["session_id"], asked["headers"]["x-claude-code-session-id"],
        "{claude}"
    );
    assert_eq!(agent["commands_run"], 1, "{claude}");
    assert!(
        claude["task"]["agent"]["last_command"]
            .as_str()
            .is_some_and(|command| command.contains("by claude")),
        "{claude}"
    );
    // Two model messages, counted once although the stream came both live and whole: the fake answers its n-th
    // request with 1000 + n input and 40 + n output tokens, so only a single count of the two leaves the same n's.
    let tokens = |kind: &str| agent["usage"][kind].as_u64().unwrap();
    assert_eq!(agent["turns"], 2, "{claude}");
    assert_eq!(
        tokens("output_tokens") - 80,
        tokens("input_tokens") - 2000,
        "{claude}"
    );

    // Codex wrote out of scope, was sent back, and resumed the same thread in a new container: its home (with
    // the session) came back from the first and went out with the second.
    let codex = task(&view, "cx-rework");
    assert_eq!(
        codex["state"],
        "merged",
        "{ran:?}\n{}\n{:#?}\n{:?}",
        status("cx-rework"),
        model.conversation(),
        crate::env::attempt_logs(&env, "cx-rework")
            .iter()
            .map(|path| std::fs::read_to_string(path).unwrap_or_default())
            .collect::<Vec<_>>()
    );
    assert_eq!(codex["attempts"], 2);
    assert_eq!(env.git(&["show", "main:docs/codex.md"]).trim(), "fixed");
    assert!(
        !env.git(&["ls-tree", "-r", "--name-only", "main"])
            .contains("notes/")
    );
    let history = status("cx-rework");
    assert_eq!(
        history["attempts"][1]["agent"]["resumed"], true,
        "{history}"
    );
    let conversation: Vec<_> = model
        .conversation()
        .into_iter()
        .filter(|request| request["body"].to_string().contains("cx-rework"))
        .collect();
    assert_eq!(conversation.len(), 4, "{conversation:#?}");
    let session = &conversation[0]["headers"]["session-id"];
    assert!(session.is_string(), "no session-id header");
    assert!(
        conversation
            .iter()
            .all(|r| &r["headers"]["session-id"] == session),
        "one session across both containers"
    );
    assert!(
        conversation[2]["body"]
            .to_string()
            .contains("Write the usage guide"),
        "the rework carries the earlier conversation"
    );

    // An agent the image lacks is refused with the fix, not run.
    let gone = task(&view, "gone");
    assert_ne!(gone["state"], "merged", "{gone}");
    let log = crate::env::attempt_logs(&env, "gone")
        .into_iter()
        .map(|path| std::fs::read_to_string(path).unwrap_or_default())
        .collect::<String>();
    assert!(
        log.contains("claude-not-in-the-image") && log.contains("PATH"),
        "{log}\n{gone}"
    );
    assert_eq!(engine.left(&run_id), "", "every container removed");

    // One policy line later, the same kind of task runs in a Kubernetes Job (the fake API server's pods run by
    // `podman kube play`), its stream and home carried over the API's exec streams: Claude Code writes out of
    // scope and resumes its session in a second pod (it resumes only sessions of the folder it works in, the
    // same `/ccfan/work/tree` in every pod).
    let cluster_dir = dir.path().join("cluster");
    std::fs::create_dir_all(&cluster_dir).unwrap();
    let cluster = FakeCluster::start(&podman, &cluster_dir, "agents");
    env.commit_policy(&format!(
        "[sandbox]\nbackend = \"kubernetes\"\n\n[sandbox.container]\nimage = \"{}\"\n\n\
         [sandbox.kubernetes]\negress = [\"10.88.0.0/16\"]\n\n[workers.cl]\nkind = \"claude\"\n",
        engine.image()
    ));
    let tasks = env.tasks(
        "[[task]]\nid = \"on-a-cluster\"\ngoal = \"Write the usage guide (on-a-cluster)\"\n\
         allowed = [\"docs/**\"]\nworker = \"cl\"\n",
    );
    let ran = env.ccfan_with(
        &["run", "--json", "--tasks", tasks.to_str().unwrap()],
        &[
            ("KUBECONFIG", cluster.kubeconfig.to_str().unwrap()),
            ("ANTHROPIC_BASE_URL", &model_url),
            ("ANTHROPIC_API_KEY", "sk-ant-test-not-a-real-key"),
        ],
    );
    let view = ran.json();
    assert_eq!(task(&view, "on-a-cluster")["state"], "merged", "{ran:?}");
    assert_eq!(
        env.git(&["show", "main:docs/pod.md"]).trim(),
        "in a pod as 10001"
    );
    let pod = env
        .ccfan(&[
            "status",
            "--json",
            &format!("{}/on-a-cluster", view["run_id"].as_str().unwrap()),
        ])
        .json();
    assert_eq!(pod["attempts"].as_array().unwrap().len(), 2, "{pod}");
    let in_pod = &pod["attempts"][1]["agent"];
    assert!(in_pod["session_id"].is_string(), "{pod}");
    assert_eq!(
        in_pod["session_id"], pod["attempts"][0]["agent"]["session_id"],
        "{pod}"
    );
    assert_eq!(in_pod["resumed"], true, "{pod}");
    assert_eq!(in_pod["commands_run"], 1, "{pod}");
    let asked: Vec<_> = model
        .conversation()
        .into_iter()
        .filter(|request| request["body"].to_string().contains("on-a-cluster"))
        .collect();
    assert_eq!(asked.len(), 4, "{asked:#?}");
    assert!(
        asked
            .iter()
            .all(|r| r["headers"]["x-claude-code-session-id"] == in_pod["session_id"]),
        "one session across both pods: {asked:#?}"
    );
    assert!(
        pod["task"]["agent"]["last_command"]
            .as_str()
            .is_some_and(|command| command.contains("in a pod")),
        "{pod}"
    );
    // The agent's stream came out of the pod (the final result event among it), and its summary with it.
    assert_eq!(in_pod["finished"], true, "{pod}");
    drop(cluster);
    drop(engine);
    remove_image(&podman, &base);
}
