//! Gated hand-offs (`after`): a chain of phases runs in order, each from the tip that holds the work of the phases
//! before it, while an independent task runs alongside; a phase that does not land skips the rest; a cycle is
//! refused before anything is made.

use std::path::Path;

use crate::env::{TestEnv, task, wait_for_file};

/// A worker whose behaviour is keyed on the task id: each phase checks that its tree holds the work of the phases
/// before it (and that its task file says what they changed), records when it started and ended, and writes one
/// file. `design` waits for `$PROBE/go` so the test can look at the waiting tasks first.
const PHASES: &str = r#"set -eu
echo "$(date +%s%N)" > "$PROBE/$CCFAN_TASK_ID.start"
echo "$CCFAN_BASE_SHA" > "$PROBE/$CCFAN_TASK_ID.base"
cp "$CCFAN_TASK_FILE" "$PROBE/$CCFAN_TASK_ID.task.json"
case "$CCFAN_TASK_ID" in
  design)
    i=0; while [ ! -e "$PROBE/go" ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done
    mkdir -p docs; echo "the design" > docs/design.md
    if [ "${DESIGN_STRAYS:-}" = 1 ]; then echo stray > stray.txt; fi ;;
  api)
    test -f docs/design.md
    mkdir -p src; echo "api built on the design" > src/api.txt ;;
  ui)
    test -f docs/design.md && test -f src/api.txt
    mkdir -p ui; echo "ui built on the api" > ui/app.txt ;;
  side)
    sleep 1.5
    mkdir -p side; echo "independent" > side/notes.txt ;;
  both)
    test -f docs/design.md && test -f side/notes.txt
    mkdir -p both; echo "both" > both/x.txt ;;
esac
echo "$(date +%s%N)" > "$PROBE/$CCFAN_TASK_ID.end""#;

fn chain_tasks(env: &TestEnv, extra_env: &str) -> std::path::PathBuf {
    let worker = env.script("phases.sh", PHASES);
    env.tasks(&format!(
        r#"[defaults]
worker = "phases"

[workers.phases]
kind = "command"
command = ["{}"]
env = {{ PROBE = "{}"{extra_env} }}

[[task]]
id = "ui"
goal = "build the ui on the api"
allowed = ["ui/**"]
after = ["api"]

[[task]]
id = "design"
goal = "write the design"
allowed = ["docs/**"]

[[task]]
id = "api"
goal = "build the api on the design"
allowed = ["src/**"]
after = "design"

[[task]]
id = "side"
goal = "write independent notes"
allowed = ["side/**"]

[[task]]
id = "both"
goal = "combine the design and the notes"
allowed = ["both/**"]
after = ["design", "side"]
"#,
        worker.display(),
        env.probe().display()
    ))
}

fn nanos(probe: &Path, name: &str) -> u128 {
    std::fs::read_to_string(probe.join(name))
        .unwrap_or_else(|_| panic!("{name} was not written"))
        .trim()
        .parse()
        .unwrap()
}

/// `ccfan run --json --jobs JOBS` of `tasks`, in the background, its output captured.
fn spawn_run(env: &TestEnv, tasks: &Path, jobs: &str) -> std::process::Child {
    env.command(&[
        "run",
        "--json",
        "--jobs",
        jobs,
        "--tasks",
        tasks.to_str().unwrap(),
    ])
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap()
}

/// The newest run's id and its `status --json`, once a run exists.
fn current_run(env: &TestEnv) -> Option<(String, serde_json::Value)> {
    let list = env.ccfan(&["status", "--json"]);
    let run_id = list.json()["runs"].as_array()?.first()?["run_id"]
        .as_str()?
        .to_string();
    let view = env.ccfan(&["status", "--json", &run_id]).json();
    Some((run_id, view))
}

#[test]
fn a_chain_runs_in_order_on_each_landed_tip_beside_an_independent_task() {
    let env = TestEnv::new();
    let probe = env.probe();
    let tasks = chain_tasks(&env, "");
    let child = spawn_run(&env, &tasks, "2");
    // While the design runs, the later phases wait and say for what; the independent task is not held back.
    wait_for_file(
        &probe.join("design.start"),
        "the design phase never started",
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let waiting = loop {
        if let Some((_, view)) = current_run(&env)
            && task(&view, "api")["state"] == "waiting"
            && task(&view, "ui")["state"] == "waiting"
        {
            break view;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "api and ui never showed waiting"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(
        task(&waiting, "api")["waits_for"],
        serde_json::json!(["design"])
    );
    assert_eq!(
        task(&waiting, "ui")["waits_for"],
        serde_json::json!(["api"])
    );
    assert_eq!(task(&waiting, "ui")["after"], serde_json::json!(["api"]));
    let reason = task(&waiting, "api")["reason"].as_str().unwrap();
    assert!(reason.contains("waits for design to land"), "{reason}");
    let text = env.ccfan(&["status", waiting["run_id"].as_str().unwrap()]);
    assert!(
        text.stdout.contains("waits for design to land"),
        "{}",
        text.stdout
    );
    wait_for_file(
        &probe.join("side.start"),
        "the independent task did not start beside the design",
    );
    std::fs::write(probe.join("go"), "").unwrap();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let run: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    for id in ["design", "api", "ui", "side", "both"] {
        assert_eq!(task(&run, id)["state"], "merged", "{}", task(&run, id));
    }
    // A task with two prerequisites started once both had landed.
    assert!(nanos(&probe, "design.end") < nanos(&probe, "both.start"));
    assert!(nanos(&probe, "side.end") < nanos(&probe, "both.start"));

    // In order: each phase started after the one before ended; the independent task ran alongside the chain.
    assert!(nanos(&probe, "design.end") < nanos(&probe, "api.start"));
    assert!(nanos(&probe, "api.end") < nanos(&probe, "ui.start"));
    assert!(nanos(&probe, "side.start") < nanos(&probe, "design.end"));

    // Each phase started from the tip that held the phase before it: its base is that phase's landing commit's
    // descendant on main, and its own landing holds only its own file.
    let landed = |path: &str| {
        env.git(&["log", "-1", "--format=%H", "main", "--", path])
            .trim()
            .to_string()
    };
    let (design_at, api_at) = (landed("docs/design.md"), landed("src/api.txt"));
    let base_of = |id: &str| {
        std::fs::read_to_string(probe.join(format!("{id}.base")))
            .unwrap()
            .trim()
            .to_string()
    };
    let holds = |ancestor: &str, commit: &str| {
        env.git(&["merge-base", "--is-ancestor", ancestor, commit]);
    };
    holds(&design_at, &base_of("api"));
    holds(&api_at, &base_of("ui"));
    let ui_landing = landed("ui/app.txt");
    assert_eq!(
        env.git(&[
            "diff",
            "--name-only",
            &format!("{ui_landing}~1"),
            &ui_landing
        ])
        .trim(),
        "ui/app.txt"
    );

    // Each dependant was told what its prerequisite changed.
    let api_file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(probe.join("api.task.json")).unwrap())
            .unwrap();
    let after = &api_file["after"][0];
    assert_eq!(after["task"], "design");
    assert_eq!(after["files"], serde_json::json!(["docs/design.md"]));
    assert_eq!(after["landed_on"], "main");
    assert_eq!(after["commit"], design_at.as_str());
    let design_file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(probe.join("design.task.json")).unwrap())
            .unwrap();
    assert!(design_file.get("after").is_none(), "{design_file}");
}

#[test]
fn a_phase_that_does_not_land_skips_the_rest_with_the_reason() {
    let env = TestEnv::new();
    env.commit_policy("[run]\nmax_reworks = 0\n");
    let probe = env.probe();
    std::fs::write(probe.join("go"), "").unwrap();
    let tasks = chain_tasks(&env, ", DESIGN_STRAYS = \"1\"");
    let ran = env.run(&tasks, &["--jobs", "2"]);
    assert_eq!(ran.code, 1, "{ran:?}");
    let run = ran.json();
    let design = task(&run, "design");
    assert!(
        matches!(design["state"].as_str(), Some("blocked" | "rolled_back")),
        "{design}"
    );
    let api = task(&run, "api");
    assert_eq!(api["state"], "skipped", "{api}");
    assert_eq!(api["attempts"], 0);
    let why = api["reason"].as_str().unwrap();
    assert!(
        why.contains("its prerequisite design ended") && why.contains("not there to build on"),
        "{why}"
    );
    let ui = task(&run, "ui");
    assert_eq!(ui["state"], "skipped", "{ui}");
    assert!(
        ui["reason"]
            .as_str()
            .unwrap()
            .contains("its prerequisite api ended skipped")
    );
    assert_eq!(task(&run, "side")["state"], "merged");
    // A task waiting for a failed and a landed prerequisite stays skipped once the landed one lands.
    let both = task(&run, "both");
    assert_eq!(both["state"], "skipped", "{both}");
    assert!(!probe.join("both.start").exists());
    // Neither dependant ever started, and neither has a tree or a branch.
    assert!(!probe.join("api.start").exists() && !probe.join("ui.start").exists());
    let run_id = run["run_id"].as_str().unwrap();
    assert!(
        env.git(&["branch", "--list", &format!("ccfan/{run_id}/api")])
            .trim()
            .is_empty()
    );
    let text = env.ccfan(&["status", run_id]);
    assert!(
        text.stdout
            .contains("start a skipped task once its prerequisites landed"),
        "{}",
        text.stdout
    );

    // A skipped task refuses a retry while its prerequisite has not landed, and says which.
    let retry = env.ccfan(&["retry", &format!("{run_id}/api")]);
    assert_ne!(retry.code, 0, "{retry:?}");
    assert!(
        retry
            .stderr
            .contains("task api cannot start: its prerequisite design is"),
        "{retry:?}"
    );
}

#[test]
fn without_merging_a_dependant_starts_from_the_accepted_work_and_merge_lands_prerequisites_first() {
    let env = TestEnv::new();
    let probe = env.probe();
    std::fs::write(probe.join("go"), "").unwrap();
    let tasks = chain_tasks(&env, "");
    let main_before = env.git(&["rev-parse", "main"]);
    let ran = env.run(&tasks, &["--jobs", "2", "--no-merge"]);
    assert_eq!(ran.code, 0, "{ran:?}");
    let run = ran.json();
    for id in ["design", "api", "ui", "side", "both"] {
        assert_eq!(task(&run, id)["state"], "accepted", "{}", task(&run, id));
    }
    assert_eq!(
        env.git(&["rev-parse", "main"]),
        main_before,
        "nothing landed"
    );
    // api started from design's accepted commit; ui from api's, which holds both.
    let design_commit = task(&run, "design")["commit"].as_str().unwrap().to_string();
    let api_commit = task(&run, "api")["commit"].as_str().unwrap().to_string();
    let base_of = |id: &str| {
        std::fs::read_to_string(probe.join(format!("{id}.base")))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(base_of("api"), design_commit);
    assert_eq!(base_of("ui"), api_commit);
    let api_file = std::fs::read_to_string(probe.join("api.task.json")).unwrap();
    assert!(
        api_file.contains("docs/design.md") && !api_file.contains("landed_on"),
        "{api_file}"
    );

    // `merge` lands prerequisites before their dependants, whatever the task-file order (ui is listed first).
    let run_id = run["run_id"].as_str().unwrap();
    let merged = env.ccfan(&["merge", run_id, "--json"]);
    assert_eq!(merged.code, 0, "{merged:?}");
    let log = env.git(&[
        "log",
        "--reverse",
        "--format=%s",
        &format!("{}..main", main_before.trim()),
    ]);
    let position = |subject: &str| {
        log.lines()
            .position(|line| line == subject)
            .unwrap_or_else(|| panic!("{subject} did not land:\n{log}"))
    };
    assert!(
        position("write the design") < position("build the api on the design")
            && position("build the api on the design") < position("build the ui on the api"),
        "{log}"
    );
    for path in [
        "docs/design.md",
        "src/api.txt",
        "ui/app.txt",
        "side/notes.txt",
    ] {
        env.git(&["cat-file", "-e", &format!("main:{path}")]);
    }
}

#[test]
fn a_task_cancelled_while_it_waits_ends_at_once_and_its_dependants_are_skipped() {
    let env = TestEnv::new();
    let probe = env.probe();
    let tasks = chain_tasks(&env, "");
    // One job slot, held by the design phase until the test says go.
    let child = spawn_run(&env, &tasks, "1");
    wait_for_file(
        &probe.join("design.start"),
        "the design phase never started",
    );
    let (run_id, _) = current_run(&env).expect("a run");
    let cancelled = env.ccfan(&["cancel", &format!("{run_id}/api"), "--wait", "20s"]);
    assert_eq!(cancelled.code, 0, "{cancelled:?}");
    let view = env.ccfan(&["status", "--json", &run_id]).json();
    let api = task(&view, "api");
    assert_eq!(api["state"], "cancelled", "{api}");
    assert_eq!(
        api["reason"],
        "cancelled while it waited for its prerequisites"
    );
    assert!(
        !probe.join("design.end").exists(),
        "the design was still running"
    );
    std::fs::write(probe.join("go"), "").unwrap();
    let output = child.wait_with_output().unwrap();
    let run: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(task(&run, "design")["state"], "merged");
    assert_eq!(task(&run, "api")["state"], "cancelled");
    let ui = task(&run, "ui");
    assert_eq!(ui["state"], "skipped", "{ui}");
    assert!(
        ui["reason"]
            .as_str()
            .unwrap()
            .contains("its prerequisite api ended cancelled"),
        "{ui}"
    );
    assert_eq!(task(&run, "both")["state"], "merged");
}

#[test]
fn a_cycle_or_an_unknown_prerequisite_is_refused_before_anything_is_made() {
    let env = TestEnv::new();
    let worker = env.script("noop.sh", "exit 0");
    let file = |after_a: &str| {
        env.tasks(&format!(
            "[defaults]\nworker = \"w\"\nallowed = [\"x/**\"]\n[workers.w]\nkind = \"command\"\ncommand = [\"{}\"]\n\
             [[task]]\nid = \"a\"\ngoal = \"a\"\nafter = {after_a}\n\
             [[task]]\nid = \"b\"\ngoal = \"b\"\nafter = [\"a\"]\n",
            worker.display()
        ))
    };
    let cycle = env.run(&file("[\"b\"]"), &[]);
    assert_eq!(cycle.code, 2, "{cycle:?}");
    assert!(
        cycle
            .stderr
            .contains("the tasks wait for each other in a cycle: a → b → a"),
        "{cycle:?}"
    );
    assert!(cycle.stderr.contains("task[1].after"), "{cycle:?}");
    let unknown = env.run(&file("[\"nope\"]"), &[]);
    assert_eq!(unknown.code, 2, "{unknown:?}");
    assert!(
        unknown
            .stderr
            .contains("waits for `nope`, which is no task of this file"),
        "{unknown:?}"
    );
    assert!(
        env.ccfan(&["status", "--json"]).json()["runs"]
            .as_array()
            .is_none_or(|runs| runs.is_empty()),
        "no run was registered"
    );
}
