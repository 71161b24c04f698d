//! Plan mode (`ccfan run --plan`): every worker plans first on a read-only tree and its task waits `planned`;
//! `approve` records who approved which plan and runs only what it names, with the plan; `reject` ends a task;
//! a killed ccfan leaves planned tasks planned.

use crate::env::{TestEnv, task};

/// Plans when `CCFAN_PLAN=1` (trying to write first, to show it cannot), executes otherwise: writes
/// `out/<task>.txt` holding the plan it was handed.
const WORKER: &str = r#"set -u
if [ "${CCFAN_PLAN:-}" = 1 ]; then
  if [ "$CCFAN_TASK_ID" = b ] && [ -n "${HOLD:-}" ] && [ ! -e "$PROBE/go" ]; then
    echo "$$" > "$PROBE/b.planning"; sleep 60; exit 1
  fi
  if ( echo x > planning-wrote.txt ) 2>/dev/null; then echo allowed; else echo denied; fi > "$PROBE/$CCFAN_TASK_ID.plan-write"
  grep -q '"mode": "plan"' "$CCFAN_TASK_FILE" || exit 9
  printf '## Plan\n1. write out/%s.txt\n## Risks\nnone (token ghp_%s)\n' "$CCFAN_TASK_ID" "$SECRET_TAIL" > "$CCFAN_REPORT_FILE"
  exit 0
fi
mkdir -p out
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d.get("mode")); print(d.get("plan","")); print(d.get("plan_note"))' "$CCFAN_TASK_FILE" > "out/$CCFAN_TASK_ID.txt"
echo ran >> "$PROBE/$CCFAN_TASK_ID.ran""#;

fn plan_tasks(env: &TestEnv) -> std::path::PathBuf {
    plan_tasks_with(env, "")
}

fn plan_tasks_with(env: &TestEnv, extra_env: &str) -> std::path::PathBuf {
    let worker = env.script("planner.sh", WORKER);
    env.tasks(&format!(
        "[defaults]\nworker = \"w\"\nallowed = [\"out/**\"]\n\n[workers.w]\nkind = \"command\"\ncommand = [\"{}\"]\n\
         env = {{ PROBE = \"{}\", SECRET_TAIL = \"{}\"{extra_env} }}\n\n\
         [[task]]\nid = \"a\"\ngoal = \"write out/a.txt\"\n\n[[task]]\nid = \"b\"\ngoal = \"write out/b.txt\"\n",
        worker.display(),
        env.probe().display(),
        "Zx9QwErTyUiOpAsDfGhJkLzXcVbNm1234567"
    ))
}

#[test]
fn tasks_plan_read_only_then_approving_one_runs_only_it_with_its_plan() {
    let env = TestEnv::new();
    let probe = env.probe();
    let tasks = plan_tasks(&env);
    let main_before = env.git(&["rev-parse", "main"]);
    let ran = env.run(&tasks, &["--plan"]);
    assert_eq!(ran.code, 0, "{ran:?}");
    let run = ran.json();
    assert_eq!(run["plan_mode"], true);
    let run_id = run["run_id"].as_str().unwrap().to_string();
    for id in ["a", "b"] {
        let view = task(&run, id);
        assert_eq!(view["state"], "planned", "{view}");
        assert_eq!(view["attempts"], 1);
        assert!(view["plan"]["approval"].is_null(), "{view}");
        // The planning worker could not write its tree, and nothing of it was committed or ran.
        assert_eq!(
            std::fs::read_to_string(probe.join(format!("{id}.plan-write")))
                .unwrap()
                .trim(),
            "denied"
        );
        assert!(!probe.join(format!("{id}.ran")).exists());
    }
    assert_eq!(env.git(&["rev-parse", "main"]), main_before);

    // The plan is kept, redacted, and shown by `status <run>/<task>`.
    let shown = env.ccfan(&["status", &format!("{run_id}/a")]);
    assert!(
        shown.stdout.contains("plan (not approved):"),
        "{}",
        shown.stdout
    );
    assert!(
        shown.stdout.contains("1. write out/a.txt"),
        "{}",
        shown.stdout
    );
    assert!(
        !shown
            .stdout
            .contains("Zx9QwErTyUiOpAsDfGhJkLzXcVbNm1234567"),
        "{}",
        shown.stdout
    );
    let history = env
        .ccfan(&["status", "--json", &format!("{run_id}/a")])
        .json();
    assert!(
        history["plan"].as_str().unwrap().contains("## Plan"),
        "{history}"
    );
    let status = env.ccfan(&["status", &run_id]);
    assert!(status.stdout.contains("ccfan approve"), "{}", status.stdout);

    // An approval names the plan the person read; another one is refused and nothing runs.
    let stale = env.ccfan(&["approve", &format!("{run_id}/a"), "--plan", "deadbeef00"]);
    assert_eq!(stale.code, 1, "{stale:?}");
    assert!(
        stale.stderr.contains("not the deadbeef00 you read"),
        "{stale:?}"
    );
    assert!(!probe.join("a.ran").exists());
    let sha = history["task"]["plan"]["sha256"]
        .as_str()
        .unwrap()
        .to_string();
    // Nor is a plan decided by a rollback (which a rework could follow).
    let rollback = env.ccfan(&["rollback", &format!("{run_id}/a")]);
    assert_eq!(rollback.code, 1, "{rollback:?}");
    assert!(
        rollback.stderr.contains("has a plan waiting for approval"),
        "{rollback:?}"
    );

    // Approving a runs a only, with its plan and the note; the approval is the task's evidence.
    let approved = env.ccfan(&[
        "approve",
        &format!("{run_id}/a"),
        "--note",
        "keep it short",
        "--plan",
        &sha[..12],
        "--json",
    ]);
    assert_eq!(approved.code, 0, "{approved:?}");
    let view = approved.json();
    let a = task(&view["run"], "a");
    assert_eq!(a["state"], "merged", "{a}");
    assert_eq!(a["attempts"], 2);
    let approval = &a["plan"]["approval"];
    assert_eq!(approval["plan_attempt"], 1);
    assert_eq!(approval["note"], "keep it short");
    assert_eq!(approval["plan_sha256"].as_str().unwrap().len(), 64);
    assert!(!approval["by"].as_str().unwrap().is_empty(), "{approval}");
    let shape = serde_json::to_string_pretty(&a["plan"]).unwrap();
    insta::with_settings!({filters => vec![
        (r"\b[0-9a-f]{64}\b", "[sha256]"),
        (r#""by": "[^"]*""#, r#""by": "[who]""#),
        (r#""at": "[^"]*""#, r#""at": "[time]""#),
        (r#""path": "[^"]*""#, r#""path": "[state]/plan.md""#),
    ]}, {
        insta::assert_snapshot!("approved_plan_shape", shape);
    });
    assert_eq!(task(&view["run"], "b")["state"], "planned");
    assert!(!probe.join("b.ran").exists());
    let landed = env.git(&["show", "main:out/a.txt"]);
    assert!(
        landed.starts_with("execute\n## Plan\n1. write out/a.txt"),
        "{landed}"
    );
    assert!(landed.trim_end().ends_with("keep it short"), "{landed}");

    // The report shows the plan with its approval.
    let report = env.ccfan(&["report", &run_id, "--format", "html"]);
    assert!(
        report.stdout.contains("<summary>plan — approved by ")
            && report.stdout.contains("note: keep it short"),
        "{}",
        report.stdout
    );
    // Rejecting b ends it without running; it cannot be retried or approved afterwards.
    let rejected = env.ccfan(&[
        "reject",
        &format!("{run_id}/b"),
        "--note",
        "not needed",
        "--json",
    ]);
    assert_eq!(rejected.code, 0, "{rejected:?}");
    let b = task(&rejected.json()["run"], "b").clone();
    assert_eq!(b["state"], "rejected", "{b}");
    let why = b["reason"].as_str().unwrap();
    assert!(
        why.contains("plan rejected by ") && why.contains(": not needed"),
        "{why}"
    );
    assert!(!probe.join("b.ran").exists());
    let retry = env.ccfan(&["retry", &format!("{run_id}/b")]);
    assert_ne!(retry.code, 0);
    assert!(retry.stderr.contains("its plan was rejected"), "{retry:?}");
    let again = env.ccfan(&["approve", &format!("{run_id}/b")]);
    assert_ne!(again.code, 0);
    assert!(
        again
            .stderr
            .contains("approve is for a task whose plan waits"),
        "{again:?}"
    );
}

#[test]
fn a_killed_ccfan_leaves_planned_tasks_planned_and_an_interrupted_plan_is_made_again_on_retry() {
    let env = TestEnv::new();
    let probe = env.probe();
    let tasks = plan_tasks_with(&env, ", HOLD = \"1\"");
    let mut child = env
        .command(&[
            "run",
            "--plan",
            "--json",
            "--jobs",
            "2",
            "--tasks",
            tasks.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // kill -9 of ccfan once a has planned and b is still planning.
    crate::env::wait_for_file(&probe.join("b.planning"), "b never started planning");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let run_id = loop {
        let list = env.ccfan(&["status", "--json"]).json();
        if let Some(run_id) = list["runs"][0]["run_id"].as_str()
            && task(&env.ccfan(&["status", "--json", run_id]).json(), "a")["state"] == "planned"
        {
            break run_id.to_string();
        }
        assert!(std::time::Instant::now() < deadline, "a never planned");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    child.kill().unwrap();
    let _ = child.wait();
    let view = env.ccfan(&["status", "--json", &run_id]).json();
    assert_eq!(task(&view, "a")["state"], "planned", "{view}");
    assert_eq!(task(&view, "b")["state"], "interrupted", "{view}");
    // The interrupted planner is planned again on retry, never run unapproved.
    std::fs::write(probe.join("go"), "").unwrap();
    let retried = env.ccfan(&["retry", &format!("{run_id}/b"), "--json"]);
    let b = task(&retried.json()["run"], "b").clone();
    assert_eq!(b["state"], "planned", "{b}");
    assert!(!probe.join("b.ran").exists());
    // Not approved, so rework and accept refuse; approving the whole run runs both.
    let rework = env.ccfan(&["rework", &format!("{run_id}/a"), "--note", "x"]);
    assert!(
        rework.stderr.contains("has a plan waiting for approval"),
        "{rework:?}"
    );
    let approved = env.ccfan(&["approve", &run_id, "--json"]);
    assert_eq!(approved.code, 0, "{approved:?}");
    for id in ["a", "b"] {
        assert_eq!(task(&approved.json()["run"], id)["state"], "merged");
    }
}

#[test]
fn plan_mode_refuses_what_it_cannot_keep_read_only_or_order() {
    let env = TestEnv::new();
    let worker = env.script("noop.sh", "exit 0");
    let tasks = env.tasks(&format!(
        "[defaults]\nworker = \"w\"\nallowed = [\"x/**\"]\n[workers.w]\nkind = \"command\"\ncommand = [\"{}\"]\n\
         [[task]]\nid = \"a\"\ngoal = \"a\"\n[[task]]\nid = \"b\"\ngoal = \"b\"\nafter = \"a\"\n",
        worker.display()
    ));
    let ran = env.run(&tasks, &["--plan"]);
    assert_eq!(ran.code, 2, "{ran:?}");
    assert!(
        ran.stderr.contains("plan mode does not combine with yet"),
        "{ran:?}"
    );
    env.commit_policy("[sandbox]\nbackend = \"none\"\n");
    let single = env.tasks(&format!(
        "[defaults]\nworker = \"w\"\nallowed = [\"x/**\"]\n[workers.w]\nkind = \"command\"\ncommand = [\"{}\"]\n\
         [[task]]\nid = \"a\"\ngoal = \"a\"\n",
        worker.display()
    ));
    let ran = env.run(&single, &["--plan"]);
    assert_eq!(ran.code, 2, "{ran:?}");
    assert!(ran.stderr.contains("plan mode needs a sandbox"), "{ran:?}");
}
