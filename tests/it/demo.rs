//! The embedded default and the documented example: both must work on a fresh machine.

use crate::env::{TestEnv, task};

#[test]
fn the_demo_runs_and_every_task_ends_as_designed() {
    let env = TestEnv::new();
    let dir = env.tmp.path().join("demo");
    let mut command = env.command(&["demo", dir.to_str().unwrap(), "--json"]);
    command.env_remove("CCFAN_WORKTREE_ROOT");
    let output = command.output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let run: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    for (id, state) in [
        ("add-farewell", "merged"),
        ("touch-ci", "merged"),
        ("add-config", "rolled_back"),
        ("slow-refactor", "blocked"),
        ("broken-edit", "blocked"),
    ] {
        assert_eq!(task(&run, id)["state"], state, "{id}");
    }
    // The out-of-scope edit was fixed on its rework: two attempts, both kept.
    let touch = task(&run, "touch-ci");
    assert_eq!(touch["attempts"], 2);
    assert_eq!(touch["salvage_refs"].as_array().unwrap().len(), 2);
    // Worktrees live beside the demo (its policy sets run.worktree_root), not in the user's home.
    let worktree = task(&run, "add-farewell")["worktree"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        worktree.starts_with(dir.join("worktrees").to_str().unwrap()),
        "{worktree}"
    );
    // The human output says where everything is.
    let again = env.tmp.path().join("demo2");
    let mut command = env.command(&["demo", again.to_str().unwrap()]);
    command.env_remove("CCFAN_WORKTREE_ROOT");
    let output = command.output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("demo folder:") && text.contains("ccfan -C"),
        "{text}"
    );
    // A non-empty folder is refused.
    let ran = env.ccfan(&["demo", again.to_str().unwrap()]);
    assert_eq!(ran.code, 2, "{ran:?}");
    assert!(ran.stderr.contains("not empty"), "{ran:?}");
}

#[test]
fn the_documented_example_tasks_file_runs() {
    let env = TestEnv::new();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/tasks.example.toml");
    let ran = env.ccfan(&["run", "--json", "--tasks", example]);
    assert_eq!(ran.code, 0, "{ran:?}");
    let run = ran.json();
    assert_eq!(task(&run, "fix-parser")["state"], "merged");
    assert_eq!(task(&run, "t2")["state"], "merged");
}
