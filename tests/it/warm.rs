//! Task trees that can run a real project: the ignored files `.worktreeinclude` selects are copied into every task
//! worktree and every verification checkout, and recording an attempt reads only what changed.

use crate::env::{TestEnv, copy_on_write, task};

fn include_setup(env: &TestEnv) {
    env.write(".gitignore", "*.log\n.env\nconfig/*.local\n");
    env.git(&["add", ".gitignore"]);
    env.git(&["commit", "-qm", "ignore local files"]);
    env.write(".env", "API_URL=http://localhost\n");
    env.write("config/db.local", "port = 5432\n");
    env.write("debug.log", "not included\n");
    env.write(
        ".worktreeinclude",
        "# local files the tests need\n.env\nconfig/*.local\n",
    );
}

#[test]
fn ignored_files_listed_in_worktreeinclude_reach_task_trees_and_the_verification_checkout() {
    let env = TestEnv::new();
    include_setup(&env);
    env.commit_policy(
        "[tests]\ncommand = [\"sh\", \"-c\", \"grep -q localhost .env && test -f config/db.local\"]\n",
    );
    let worker = env.script(
        "needs-env.sh",
        "test -f .env && test -f config/db.local && test ! -e debug.log || exit 7\n\
         echo checked > checked.txt\necho changed > .env",
    );
    let tasks = env.tasks(&format!(
        "[[task]]\nid = \"t\"\ngoal = \"x\"\nworker = \"w\"\n[workers.w]\nkind = \"command\"\ncommand = [\"{}\"]\n",
        worker.display()
    ));
    let ran = env.run(&tasks, &[]);
    assert_eq!(ran.code, 0, "{ran:?}");
    let view = ran.json();
    assert_eq!(task(&view, "t")["state"], "merged", "{view}");
    // What landed is the tracked change only: the copied files stay ignored, and the user's own are untouched.
    assert_eq!(
        env.git(&["show", "--name-only", "--format=", "HEAD"]),
        "checked.txt\n"
    );
    assert_eq!(
        std::fs::read_to_string(env.repo.join(".env")).unwrap(),
        "API_URL=http://localhost\n"
    );
}

#[test]
fn a_worktreeinclude_entry_outside_the_repository_is_bad_input_naming_its_line() {
    let env = TestEnv::new();
    env.write(".worktreeinclude", ".env\n../other/.env\n");
    let tasks = env.tasks(
        "[[task]]\ngoal = \"x\"\nworker = \"w\"\n[workers.w]\nkind = \"command\"\ncommand = [\"true\"]\n",
    );
    let ran = env.run(&tasks, &[]);
    assert_eq!(ran.code, 2, "{ran:?}");
    assert!(
        ran.stderr.contains(".worktreeinclude:2") && ran.stderr.contains("outside the repository"),
        "{ran:?}"
    );
    assert!(
        !env.state_dir().exists(),
        "nothing is written before the run starts"
    );
}

#[test]
fn each_task_gets_its_index_and_its_own_ports_in_the_worker_and_the_gate() {
    let env = TestEnv::new();
    env.commit_policy(
        "[run]\nports = 4\n[tests]\ncommand = [\"sh\", \"-c\", \"test \\\"$CCFAN_PORT_COUNT\\\" = 4 && grep -qx \\\"$CCFAN_TASK_INDEX $CCFAN_PORT_BASE\\\" out/res-*.txt\"]\n",
    );
    let worker = env.script(
        "ports.sh",
        "mkdir -p out && echo \"$CCFAN_TASK_INDEX $CCFAN_PORT_BASE\" > \"out/res-$CCFAN_TASK_ID.txt\"",
    );
    let tasks = env.tasks(&format!(
        "[defaults]\nworker = \"w\"\nallowed = [\"out/**\"]\n[[task]]\nid = \"a\"\ngoal = \"x\"\n[[task]]\nid = \"b\"\ngoal = \"y\"\n\
         [workers.w]\nkind = \"command\"\ncommand = [\"{}\"]\n",
        worker.display()
    ));
    let ran = env.run(&tasks, &["--jobs", "2"]);
    assert_eq!(ran.code, 0, "{ran:?}");
    let view = ran.json();
    for id in ["a", "b"] {
        assert_eq!(task(&view, id)["state"], "merged", "{view}");
    }
    let read = |id: &str| -> (u32, u32) {
        let text = std::fs::read_to_string(env.repo.join(format!("out/res-{id}.txt"))).unwrap();
        let (index, base) = text.trim().split_once(' ').unwrap();
        (index.parse().unwrap(), base.parse().unwrap())
    };
    let (a, b) = (read("a"), read("b"));
    assert_eq!((a.0, b.0), (0, 1), "indices follow the tasks file");
    assert!(
        (20_000..60_000).contains(&a.1) && a.1.abs_diff(b.1) >= 4,
        "{a:?} {b:?}"
    );
}

/// Waits until a run's setup has started (its layer folder appeared), and a little longer.
fn wait_for_setup(env: &TestEnv) {
    let layers = env.state_dir().join("layers");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !std::fs::read_dir(&layers).is_ok_and(|mut dir| dir.next().is_some()) {
        assert!(std::time::Instant::now() < deadline, "setup never started");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
}

/// A policy whose setup "installs" into `deps/` (ignored): a stamp saying when it ran, and which lockfile it saw.
const SETUP_POLICY: &str = "[setup]\ncommand = [\"sh\", \"-c\", \"if [ -e slow.flag ]; then sleep 60; fi; mkdir -p deps && date +%s%N > deps/stamp && cp lock.txt deps/lock\"]\ninputs = [\"lock.txt\"]\nnetwork = false\n\
[tests]\ncommand = [\"sh\", \"-c\", \"test -s deps/stamp\"]\n";

fn setup_env() -> TestEnv {
    let env = TestEnv::new();
    env.write(".gitignore", "*.log\ndeps/\nslow.flag\n");
    env.write("lock.txt", "v1\n");
    env.git(&["add", "-A"]);
    env.git(&["commit", "-qm", "a lockfile"]);
    env.commit_policy(SETUP_POLICY);
    env
}

/// Runs one task whose worker copies what setup left into a tracked file; returns that file's content.
fn run_reading_deps(env: &TestEnv, name: &str) -> String {
    let worker = env.script(
        &format!("{name}.sh"),
        &format!("cat deps/stamp deps/lock > {name}.txt || exit 9"),
    );
    let tasks = env.tasks(&format!(
        "[[task]]\nid = \"{name}\"\ngoal = \"x\"\nworker = \"w\"\n[workers.w]\nkind = \"command\"\ncommand = [\"{}\"]\n",
        worker.display()
    ));
    let ran = env.run(&tasks, &[]);
    assert_eq!(ran.code, 0, "{ran:?}");
    assert_eq!(task(&ran.json(), name)["state"], "merged", "{ran:?}");
    std::fs::read_to_string(env.repo.join(format!("{name}.txt"))).unwrap()
}

#[test]
fn setup_runs_once_per_inputs_and_its_output_reaches_task_trees_and_the_gate() {
    let env = setup_env();
    let first = run_reading_deps(&env, "one");
    assert!(first.ends_with("v1\n"), "{first}");
    // The next run (on the commit the first landed) reuses the layer: setup did not run again.
    let second = run_reading_deps(&env, "two");
    assert_eq!(second, first);
    // A changed input makes a new layer.
    env.write("lock.txt", "v2\n");
    env.git(&["commit", "-qam", "new lockfile"]);
    let third = run_reading_deps(&env, "three");
    assert!(third.ends_with("v2\n") && third != first, "{third}");
    // What setup installed never lands.
    assert!(env.git(&["ls-files", "deps"]).is_empty());
    // gc keeps the layer used last and removes the other.
    let gc = env.ccfan(&["gc", "--json"]).json();
    assert_eq!(gc["layers_removed"], 1, "{gc}");
    assert_eq!(
        run_reading_deps(&env, "four"),
        third,
        "the kept layer is reused"
    );
    let doctor = env.ccfan(&["doctor", "--json"]).json();
    let mode = if copy_on_write() {
        "copy-on-write"
    } else {
        "checkout"
    };
    assert_eq!(doctor["trees"]["mode"], mode, "{doctor}");
    assert_eq!(doctor["trees"]["layer_ready"], true, "{doctor}");
    assert!(
        doctor["trees"]["setup"]
            .as_str()
            .unwrap()
            .starts_with("sh -c")
    );
}

#[test]
fn a_failing_setup_stops_the_run_before_any_worker_with_its_log() {
    let env = TestEnv::new();
    env.commit_policy(
        "[setup]\ncommand = [\"sh\", \"-c\", \"echo resolving packages; echo 'E404 left-pad not found' >&2; exit 3\"]\n",
    );
    let tasks = env.tasks(
        "[[task]]\nid = \"t\"\ngoal = \"x\"\nworker = \"w\"\n[workers.w]\nkind = \"command\"\ncommand = [\"sh\", \"-c\", \"echo ran > ran.txt\"]\n",
    );
    let ran = env.run(&tasks, &[]);
    assert_eq!(ran.code, 1, "{ran:?}");
    assert!(
        ran.stderr.contains("setup `sh -c") && ran.stderr.contains("E404 left-pad not found"),
        "{ran:?}"
    );
    let log = ran
        .stderr
        .split("whole log: ")
        .nth(1)
        .map(|rest| rest.lines().next().unwrap().trim().to_string())
        .expect("names the log");
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("resolving packages")
    );
    let status = env.ccfan(&["status", "--json"]).json();
    let run_id = status["runs"][0]["run_id"].as_str().unwrap().to_string();
    let view = env.ccfan(&["status", "--json", &run_id]).json();
    let t = task(&view, "t");
    assert_eq!(t["state"], "error", "{view}");
    assert!(
        t["reason"].as_str().unwrap().contains("no task started"),
        "{t}"
    );
    assert_eq!(t["attempts"], 0, "no worker ran: {t}");
}

#[test]
fn a_layer_whose_preparation_was_killed_is_prepared_again() {
    let env = setup_env();
    env.write(".worktreeinclude", "slow.flag\n");
    env.write("slow.flag", "");
    let tasks = env.tasks(
        "[[task]]\nid = \"t\"\ngoal = \"x\"\nworker = \"w\"\n[workers.w]\nkind = \"command\"\ncommand = [\"true\"]\n",
    );
    let mut child = env
        .command(&["run", "--json", "--tasks", tasks.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_setup(&env);
    child.kill().unwrap(); // SIGKILL, mid-setup
    child.wait().unwrap();
    std::fs::remove_file(env.repo.join("slow.flag")).unwrap();
    let content = run_reading_deps(&env, "after");
    assert!(
        content.ends_with("v1\n"),
        "a fresh layer was prepared: {content}"
    );
}

#[test]
fn open_gives_the_task_tree_back_after_gc_with_its_work_and_included_files() {
    let env = TestEnv::new();
    include_setup(&env);
    let tasks = env.tasks(
        "[[task]]\nid = \"t\"\ngoal = \"x\"\nworker = \"w\"\n[workers.w]\nkind = \"command\"\ncommand = [\"sh\", \"-c\", \"echo work > work.txt\"]\n",
    );
    let ran = env.run(&tasks, &["--no-merge"]);
    assert_eq!(ran.code, 0, "{ran:?}");
    let run_id = ran.json()["run_id"].as_str().unwrap().to_string();
    let target = format!("{run_id}/t");
    let first = env.ccfan(&["open", "--json", &target]).json();
    assert_eq!(first["recreated"], false, "{first}");
    let gc = env.ccfan(&["gc", "--json"]).json();
    assert_eq!(gc["removed"].as_array().unwrap().len(), 1, "{gc}");
    let path = std::path::PathBuf::from(first["path"].as_str().unwrap());
    assert!(!path.exists());
    let again = env.ccfan(&["open", "--json", &target]);
    assert_eq!(again.code, 0, "{again:?}");
    let again = again.json();
    assert_eq!(again["recreated"], true, "{again}");
    assert_eq!(again["state"], "accepted", "{again}");
    assert_eq!(
        std::fs::read_to_string(path.join("work.txt")).unwrap(),
        "work\n"
    );
    assert!(
        path.join(".env").is_file(),
        "the included files are copied again"
    );
    // A shell in it: `$SHELL` runs there, and its exit code is the command's.
    let shell = env.script("shell.sh", "pwd > \"$PROBE\"; exit 0");
    let probe = env.probe().join("pwd");
    let mut command = env.command(&["open", "--shell", &target]);
    command.env("SHELL", &shell).env("PROBE", &probe);
    let status = command.status().unwrap();
    assert!(status.success());
    assert_eq!(
        std::fs::read_to_string(&probe).unwrap().trim(),
        path.canonicalize().unwrap().to_str().unwrap()
    );
    let bad = env.ccfan(&["open", &run_id]);
    assert_eq!(bad.code, 2, "a run alone is not a tree: {bad:?}");
}

#[test]
fn init_writes_a_first_policy_from_the_project_and_never_overwrites() {
    let env = TestEnv::new();
    env.write("Cargo.toml", "[package]\nname = \"x\"\n");
    let printed = env.ccfan(&["init", "--print"]);
    assert_eq!(printed.code, 0, "{printed:?}");
    assert!(
        printed.stdout.contains("command = [\"cargo\", \"test\"]"),
        "{printed:?}"
    );
    assert!(
        !env.repo.join("ccfan.toml").exists(),
        "--print writes nothing"
    );
    let ran = env.ccfan(&["init"]);
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(
        ran.stdout.contains("`cargo test` (from Cargo.toml)"),
        "{ran:?}"
    );
    let written = std::fs::read_to_string(env.repo.join("ccfan.toml")).unwrap();
    assert_eq!(written, printed.stdout);
    // The file it wrote is a policy ccfan accepts.
    let doctor = env.ccfan(&["doctor", "--json"]).json();
    assert!(
        doctor["policy"].to_string().contains("ccfan.toml"),
        "{doctor}"
    );
    std::fs::write(env.repo.join("ccfan.toml"), "# mine\n").unwrap();
    let again = env.ccfan(&["init"]);
    assert_eq!(again.code, 2, "{again:?}");
    assert!(
        again.stderr.contains("ccfan.toml") && again.stderr.contains("never overwrites"),
        "{again:?}"
    );
    assert_eq!(
        std::fs::read_to_string(env.repo.join("ccfan.toml")).unwrap(),
        "# mine\n"
    );
}

#[test]
fn a_repository_without_ccfan_toml_delegates_to_the_one_installed_agent() {
    let parent = crate::env::visible_tmp();
    let env = TestEnv::new_in(&parent);
    let bin = env.tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    // A stand-in for Claude Code: answers the probe, then fails its attempt at once.
    let fake = bin.join("claude");
    std::fs::write(
        &fake,
        "#!/bin/sh\ncase \"$1\" in\n--version) echo '2.1.330 (Claude Code)';;\n\
         --help) echo '--print --output-format --verbose --resume --permission-mode';;\n\
         *) echo 'no model here' >&2; exit 3;;\nesac\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let with_agent = |args: &[&str]| {
        let mut command = env.command(args);
        crate::env::path_first(&mut command, &bin);
        let output = command.output().unwrap();
        (
            output.status.code().unwrap(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let tasks = env.tasks("[[task]]\nid = \"t\"\ngoal = \"x\"\n");
    let (code, stdout, stderr) = with_agent(&["run", "--json", "--tasks", tasks.to_str().unwrap()]);
    assert_eq!(
        code, 1,
        "the attempt ran (and failed), it was not bad input: {stderr}"
    );
    let view: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let t = task(&view, "t");
    assert_eq!(
        t["agent"]["agent"], "claude",
        "the built-in profile ran: {t}"
    );
    assert_eq!(t["exit_status"]["code"], 3, "{t}");
    // Without it, the error says what exists and how to get a worker.
    let ran = env.run(&tasks, &[]);
    assert_eq!(ran.code, 2, "{ran:?}");
    assert!(
        ran.stderr.contains("names no worker") && ran.stderr.contains("built-in profile"),
        "{ran:?}"
    );
}

#[test]
fn an_included_file_removed_from_the_checkout_is_not_handed_on_by_the_layer() {
    let env = setup_env();
    env.write(".gitignore", "*.log\ndeps/\nslow.flag\n.env\n");
    env.git(&["commit", "-qam", "ignore .env"]);
    env.write(".worktreeinclude", ".env\n");
    env.write(".env", "TOKEN=local\n");
    let run_checking = |name: &str, check: &str| {
        let worker = env.script(
            &format!("{name}.sh"),
            &format!("{check} || exit 9\necho ok > {name}.txt"),
        );
        let tasks = env.tasks(&format!(
            "[[task]]\nid = \"{name}\"\ngoal = \"x\"\nworker = \"w\"\n[workers.w]\nkind = \"command\"\ncommand = [\"{}\"]\n",
            worker.display()
        ));
        let ran = env.run(&tasks, &[]);
        assert_eq!(task(&ran.json(), name)["state"], "merged", "{ran:?}");
    };
    run_checking("with", "grep -q TOKEN .env");
    let layers = env.state_dir().join("layers");
    let leaked = std::fs::read_dir(&layers)
        .unwrap()
        .flatten()
        .any(|layer| layer.path().join("tree/.env").exists());
    assert!(!leaked, "the layer kept a copy of .env");
    std::fs::remove_file(env.repo.join(".env")).unwrap();
    run_checking("without", "test ! -e .env");
}

#[test]
fn rollback_never_waits_on_or_fails_with_a_setup() {
    let env = setup_env();
    let tasks = env.tasks(
        "[[task]]\nid = \"t\"\ngoal = \"x\"\nworker = \"w\"\n[workers.w]\nkind = \"command\"\ncommand = [\"sh\", \"-c\", \"echo x > x.txt\"]\n",
    );
    let ran = env.run(&tasks, &["--no-merge"]);
    assert_eq!(ran.code, 0, "{ran:?}");
    let run_id = ran.json()["run_id"].as_str().unwrap().to_string();
    // No layer is ready any more, and setup would now fail.
    std::fs::remove_dir_all(env.state_dir().join("layers")).unwrap();
    env.commit_policy("[setup]\ncommand = [\"sh\", \"-c\", \"exit 5\"]\n");
    let rolled = env.ccfan(&["rollback", "--json", &format!("{run_id}/t")]);
    assert_eq!(rolled.code, 0, "{rolled:?}");
    assert_eq!(task(&rolled.json()["run"], "t")["state"], "rolled_back");
    assert!(
        !env.state_dir().join("layers").exists(),
        "rollback ran no setup"
    );
    // A follow-up that starts an attempt does prepare the layer, and says why it cannot.
    let retried = env.ccfan(&["retry", &format!("{run_id}/t")]);
    assert_eq!(retried.code, 1, "{retried:?}");
    assert!(
        retried.stderr.contains("setup `sh -c exit 5` failed"),
        "{retried:?}"
    );
}

#[test]
fn stopping_a_run_during_setup_cancels_its_tasks() {
    let env = setup_env();
    env.commit_policy("[setup]\ncommand = [\"sleep\", \"60\"]\n");
    let tasks = env.tasks(
        "[[task]]\nid = \"t\"\ngoal = \"x\"\nworker = \"w\"\n[workers.w]\nkind = \"command\"\ncommand = [\"true\"]\n",
    );
    let child = env
        .command(&["run", "--json", "--tasks", tasks.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_setup(&env);
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let started = std::time::Instant::now();
    let output = child.wait_with_output().unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "setup was not stopped"
    );
    let view: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stderr)));
    let t = task(&view, "t");
    assert_eq!(t["state"], "cancelled", "{view}");
    assert_eq!(t["attempts"], 0, "{t}");
}
