//! The decision loop: a Rework verdict sends the findings back for another attempt in the same worktree, until
//! the gate accepts or the rework budget is spent (blocked); every attempt stays on its salvage ref.

use crate::env::{TestEnv, task};

#[test]
fn out_of_scope_on_attempt_1_is_fixed_on_attempt_2_from_the_findings() {
    let env = TestEnv::new();
    let worker = env.script(
        "fixer.sh",
        r#"set -eu
cp "$CCFAN_TASK_FILE" "$PROBE/task-$CCFAN_ATTEMPT.json"
if [ "$CCFAN_ATTEMPT" = 1 ]; then
  echo "notes" >> README.md
  echo "code" > src/feature.txt
else
  # The task file says what to fix: put README.md back as it was at the base.
  grep -q '"rule": "not-allowed"' "$CCFAN_TASK_FILE"
  git show "$CCFAN_BASE_SHA:README.md" > README.md
fi"#,
    );
    let tasks = env.tasks(&format!(
        "[[task]]\nid = \"fix\"\ngoal = \"add a feature\"\nworker = \"w\"\nallowed = [\"src/**\"]\n\
         [workers.w]\nkind = \"command\"\ncommand = [\"{}\"]\nenv = {{ PROBE = \"{}\" }}\npass_env = []\n",
        worker.display(),
        env.probe().display()
    ));
    let run = env.run(&tasks, &[]);
    assert_eq!(run.code, 0, "{run:?}");
    let view = run.json();
    let t = task(&view, "fix");
    assert_eq!(
        (t["state"].as_str(), t["attempts"].as_u64()),
        (Some("merged"), Some(2)),
        "{t}"
    );
    // Attempt 1's task file had no findings; attempt 2's held the scope finding.
    let first: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.probe().join("task-1.json")).unwrap()).unwrap();
    let second: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.probe().join("task-2.json")).unwrap()).unwrap();
    assert_eq!(first["rework"], serde_json::json!([]));
    assert_eq!(second["attempt"], 2);
    assert_eq!(second["rework"][0]["rule"], "not-allowed");
    assert_eq!(second["rework"][0]["path"], "README.md");
    // Both attempts are kept; main gained exactly the in-scope change, as one commit on the base.
    assert_eq!(t["salvage_refs"].as_array().unwrap().len(), 2);
    let base = view["base"].as_str().unwrap();
    let changed = env.git(&["diff", "--name-only", base, "main"]);
    assert_eq!(changed, "src/feature.txt\n");
    assert_eq!(env.git(&["rev-parse", "main~1"]).trim(), base);
}

#[test]
fn always_out_of_scope_is_blocked_after_one_plus_three_attempts() {
    let env = TestEnv::new();
    let worker = env.script(
        "stubborn.sh",
        "echo \"attempt $CCFAN_ATTEMPT\" >> README.md",
    );
    let tasks = env.tasks(&format!(
        "[[task]]\nid = \"stubborn\"\ngoal = \"x\"\nworker = \"w\"\nallowed = [\"src/**\"]\n[workers.w]\nkind = \"command\"\ncommand = [\"{}\"]\n",
        worker.display()
    ));
    let run = env.run(&tasks, &[]);
    assert_eq!(run.code, 1, "{run:?}");
    let view = run.json();
    let t = task(&view, "stubborn");
    assert_eq!(t["state"], "blocked");
    assert_eq!(t["attempts"], 4);
    assert!(
        t["reason"]
            .as_str()
            .unwrap()
            .contains("rework budget (run.max_reworks = 3) is spent"),
        "{t}"
    );
    let run_id = view["run_id"].as_str().unwrap();
    let refs = env.git(&[
        "for-each-ref",
        "--format=%(refname)",
        &format!("refs/ccfan/{run_id}/stubborn/"),
    ]);
    assert_eq!(refs.lines().count(), 4, "{refs}");
    // Each attempt is a commit on top of the one before it.
    for n in 2..=4 {
        let parent = env.git(&[
            "rev-parse",
            &format!("refs/ccfan/{run_id}/stubborn/attempt-{n}~1"),
        ]);
        let previous = env.git(&[
            "rev-parse",
            &format!("refs/ccfan/{run_id}/stubborn/attempt-{}", n - 1),
        ]);
        assert_eq!(parent, previous, "attempt {n}");
    }
    // Each attempt built on the one before it, in the same worktree.
    let last = env.git(&[
        "show",
        &format!("refs/ccfan/{run_id}/stubborn/attempt-4:README.md"),
    ]);
    assert!(
        last.ends_with("attempt 1\nattempt 2\nattempt 3\nattempt 4\n"),
        "{last}"
    );
    // Nothing reached the user's branch.
    assert_eq!(env.git(&["rev-list", "--count", "main"]).trim(), "1");
}
