//! Landing (stage 6) and the follow-up commands: accepted work reaches the target branch only through the gate, in
//! task-file order, by compare-and-swap; conflicts come back as reworks; rollback reverts; kill -9 mid-landing
//! never leaves a half-merged branch.

use crate::env::{TestEnv, task, wait_for_file};

fn one_task(env: &TestEnv, worker: &std::path::Path, extra: &str) -> std::path::PathBuf {
    env.tasks(&format!(
        "[[task]]\nid = \"t1\"\ngoal = \"do the thing\"\nworker = \"w\"\n{extra}\n[workers.w]\nkind = \"command\"\ncommand = [\"{}\"]\nenv = {{ PROBE = \"{}\" }}\n",
        worker.display(),
        env.probe().display()
    ))
}

fn subjects(env: &TestEnv, rev: &str) -> Vec<String> {
    env.git(&["log", "--format=%s", rev])
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn failing_tests_on_the_preview_tree_rework_then_block_and_nothing_lands() {
    let env = TestEnv::new();
    env.commit_policy(
        "[run]\nmax_reworks = 1\n[tests]\ncommand = [\"sh\", \"-c\", \"ls > \\\"$(mktemp \\\"$PROBE_DIR/seen-XXXXXX\\\")\\\"; test -f never.txt\"]\n[sandbox]\nenv_allow = [\"PATH\", \"PROBE_DIR\"]\n",
    );
    let base = env.git(&["rev-parse", "HEAD"]).trim().to_string();
    // The target moves on after the base: this file exists only in the merged (preview) tree.
    env.write("landed-meanwhile.txt", "x\n");
    env.git(&["add", "-A"]);
    env.git(&["commit", "-qm", "someone else's work"]);
    let main_before = env.git(&["rev-parse", "main"]);
    let worker = env.script("w.sh", "echo done > result.txt");
    let tasks = one_task(&env, &worker, "");
    let output = env
        .command(&[
            "run",
            "--json",
            "--base",
            &base,
            "--tasks",
            tasks.to_str().unwrap(),
        ])
        .env("PROBE_DIR", env.probe())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let view: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let t = task(&view, "t1");
    assert_eq!(
        (t["state"].as_str(), t["attempts"].as_u64()),
        (Some("blocked"), Some(2)),
        "{t}"
    );
    // Both runs of the tests saw the worker's file and the one only the target has: the merged tree.
    let seen: Vec<String> = std::fs::read_dir(env.probe())
        .unwrap()
        .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap())
        .collect();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for listing in &seen {
        assert!(
            listing.contains("landed-meanwhile.txt") && listing.contains("result.txt"),
            "{listing}"
        );
    }
    assert_eq!(
        env.git(&["rev-parse", "main"]),
        main_before,
        "nothing may land"
    );
}

#[test]
fn two_tasks_on_the_same_lines_conflict_and_the_second_is_reworked_on_the_new_tip() {
    let env = TestEnv::new();
    let probe = env.probe();
    let a = env.script("a.sh", "printf 'one\\nA\\nthree\\n' > src/lib.txt");
    let b = env.script(
        "b.sh",
        r#"set -eu
if [ "$CCFAN_ATTEMPT" = 1 ]; then
  printf 'one\nB\nthree\n' > src/lib.txt
else
  cp src/lib.txt "$PROBE/b-saw.txt"
  cp "$CCFAN_TASK_FILE" "$PROBE/b-task.json"
  printf 'one\nA and B\nthree\n' > src/lib.txt
fi"#,
    );
    let tasks = env.tasks(&format!(
        "[[task]]\nid = \"a\"\ngoal = \"A\"\nworker = \"a\"\nallowed = [\"src/**\"]\n\
         [[task]]\nid = \"b\"\ngoal = \"B\"\nworker = \"b\"\nallowed = [\"src/lib.txt\"]\n\
         [workers.a]\nkind = \"command\"\ncommand = [\"{}\"]\n\
         [workers.b]\nkind = \"command\"\ncommand = [\"{}\"]\nenv = {{ PROBE = \"{}\" }}\n",
        a.display(),
        b.display(),
        probe.display()
    ));
    let ran = env.run(&tasks, &["--jobs", "2"]);
    assert_eq!(ran.code, 0, "{ran:?}");
    // Overlap is reported at plan time (globs) and before landing (actual diffs).
    assert!(
        ran.stderr
            .contains("tasks may change the same files: a (`src/**`) and b (`src/lib.txt`)"),
        "{}",
        ran.stderr
    );
    assert!(
        ran.stderr.contains("tasks a and b both change src/lib.txt"),
        "{}",
        ran.stderr
    );
    let view = ran.json();
    assert_eq!(task(&view, "a")["state"], "merged");
    let b_view = task(&view, "b");
    assert_eq!(
        (b_view["state"].as_str(), b_view["attempts"].as_u64()),
        (Some("merged"), Some(2)),
        "{b_view}"
    );
    // The rework started on the new tip with conflict markers and the conflict as a finding.
    let saw = std::fs::read_to_string(probe.join("b-saw.txt")).unwrap();
    assert!(
        saw.contains("<<<<<<<")
            && saw.contains("A\n")
            && saw.contains("B\n")
            && saw.contains(">>>>>>>"),
        "{saw}"
    );
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(probe.join("b-task.json")).unwrap()).unwrap();
    assert_eq!(doc["rework"][0]["rule"], "merge-conflict");
    assert_eq!(doc["rework"][0]["path"], "src/lib.txt");
    // main: first, A, B — in task-file order, nothing lost.
    assert_eq!(subjects(&env, "main"), ["B", "A", "first"]);
    assert_eq!(
        env.git(&["show", "main:src/lib.txt"]),
        "one\nA and B\nthree\n"
    );
    // `status <run>/<task>` shows every transition with its reason, the conflict included.
    let run_id = view["run_id"].as_str().unwrap();
    let history = env
        .ccfan(&["status", "--json", &format!("{run_id}/b")])
        .json();
    let states: Vec<&str> = history["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["state"].as_str().unwrap())
        .collect();
    assert!(
        states.ends_with(&[
            "accepted",
            "conflict",
            "running",
            "completed",
            "verifying",
            "accepted",
            "merging",
            "merged"
        ]),
        "{states:?}"
    );
    let conflict = history["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["state"] == "conflict")
        .unwrap();
    assert!(
        conflict["reason"]
            .as_str()
            .unwrap()
            .contains("conflicts in src/lib.txt"),
        "{conflict}"
    );
    assert_ne!(
        history["attempts"][1]["base"],
        history["attempts"][0]["base"]
    );
    let human = env.ccfan(&["status", &format!("{run_id}/b")]);
    assert!(
        human.stdout.contains("ATTEMPT") && human.stdout.contains("conflict"),
        "{human:?}"
    );
    // The user's checkout followed (it was clean).
    assert_eq!(
        std::fs::read_to_string(env.repo.join("src/lib.txt")).unwrap(),
        "one\nA and B\nthree\n"
    );
}

#[test]
fn a_target_moved_by_someone_else_during_the_run_keeps_their_commit() {
    let env = TestEnv::new();
    // The worker plays "someone else" committing to the user's repository, which a sandboxed worker cannot do.
    env.commit_policy("[sandbox]\nbackend = \"none\"\n");
    let worker = env.script(
        "w.sh",
        r#"set -eu
echo mine > mine.txt
cd "$REPO"
echo other > other.txt
git add other.txt
git -c user.name=Other -c user.email=other@example.invalid commit -qm "someone else""#,
    );
    let tasks = env.tasks(&format!(
        "[[task]]\nid = \"t1\"\ngoal = \"mine\"\nworker = \"w\"\n[workers.w]\nkind = \"command\"\ncommand = [\"{}\"]\nenv = {{ REPO = \"{}\" }}\n",
        worker.display(),
        env.repo.display()
    ));
    let ran = env.run(&tasks, &[]);
    assert_eq!(ran.code, 0, "{ran:?}");
    assert_eq!(
        subjects(&env, "main"),
        ["mine", "someone else", "policy", "first"]
    );
    assert_eq!(env.git(&["show", "main:other.txt"]), "other\n");
    assert_eq!(env.git(&["show", "main:mine.txt"]), "mine\n");
    assert_eq!(env.git(&["status", "--porcelain"]), "");
}

#[test]
fn rollback_of_a_merged_task_is_a_revert_and_keeps_the_salvage() {
    let env = TestEnv::new();
    let worker = env.script("w.sh", "echo new > src/new.txt");
    let tasks = one_task(&env, &worker, "");
    let ran = env.run(&tasks, &[]);
    assert_eq!(ran.code, 0, "{ran:?}");
    let run_id = ran.json()["run_id"].as_str().unwrap().to_string();
    let landed = env.git(&["rev-parse", "main"]);

    let back = env.ccfan(&["rollback", "--json", &format!("{run_id}/t1")]);
    assert_eq!(back.code, 0, "{back:?}");
    let t = task(&back.json()["run"], "t1").clone();
    assert_eq!(t["state"], "rolled_back");
    assert!(
        t["reason"].as_str().unwrap().contains("reverted on main"),
        "{t}"
    );
    // History is kept: a revert commit on top of the landed one, and the file is gone again.
    assert_eq!(env.git(&["rev-parse", "main~1"]), landed);
    assert!(subjects(&env, "main")[0].starts_with("Revert task `t1`"));
    assert_eq!(
        env.git(&["ls-tree", "--name-only", "main", "src/"]),
        "src/lib.txt\n"
    );
    assert!(!env.repo.join("src/new.txt").exists());
    assert_eq!(
        env.git(&[
            "rev-parse",
            &format!("refs/ccfan/{run_id}/t1/attempt-1:src/new.txt")
        ])
        .len(),
        41
    );
    // Rolling back again changes nothing.
    let again = env.ccfan(&["rollback", &format!("{run_id}/t1")]);
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(subjects(&env, "main").len(), 3);
    // Reworked after its rollback, the task lands anew: not "merged" because the reverted commit is in history.
    let reworked = env.ccfan(&[
        "rework",
        "--json",
        &format!("{run_id}/t1"),
        "--note",
        "bring it back",
    ]);
    assert_eq!(reworked.code, 0, "{reworked:?}");
    let t = task(&reworked.json()["run"], "t1").clone();
    assert_eq!(t["state"], "merged", "{t}");
    assert!(
        !t["reason"].as_str().unwrap().contains("found there"),
        "{t}"
    );
    assert_eq!(env.git(&["show", "main:src/new.txt"]), "new\n");
    assert_eq!(subjects(&env, "main").len(), 4);
}

#[test]
fn kill_9_during_a_landing_leaves_nothing_half_merged_and_merge_finishes_it() {
    let env = TestEnv::new();
    let probe = env.probe();
    // The second run of the tests is the landing gate: it marks itself and stalls there.
    env.commit_policy(
        "[tests]\ncommand = [\"sh\", \"-c\", \"n=$(ls \\\"$PROBE_DIR\\\" | wc -l); touch \\\"$PROBE_DIR/run-$n\\\"; if [ $n = 1 ]; then sleep 20; fi\"]\n[sandbox]\nenv_allow = [\"PATH\", \"PROBE_DIR\"]\n",
    );
    let main_before = env.git(&["rev-parse", "main"]);
    let worker = env.script("w.sh", "echo new > src/new.txt");
    let tasks = one_task(&env, &worker, "");
    let mut child = env
        .command(&["run", "--json", "--tasks", tasks.to_str().unwrap()])
        .env("PROBE_DIR", &probe)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_file(&probe.join("run-1"), "the landing never started");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let list = env.ccfan(&["status", "--json"]).json();
    let run_id = list["runs"][0]["run_id"].as_str().unwrap().to_string();
    let view = env.ccfan(&["status", "--json", &run_id]).json();
    assert_eq!(view["state"], "interrupted");
    assert_eq!(task(&view, "t1")["state"], "accepted", "{view}");
    assert_eq!(
        env.git(&["rev-parse", "main"]),
        main_before,
        "a half-done landing moved main"
    );

    let merged = env
        .command(&["merge", "--json", &run_id])
        .env("PROBE_DIR", &probe)
        .output()
        .unwrap();
    assert_eq!(
        merged.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&merged.stderr)
    );
    let view = env.ccfan(&["status", "--json", &run_id]).json();
    assert_eq!(task(&view, "t1")["state"], "merged");
    assert_eq!(env.git(&["show", "main:src/new.txt"]), "new\n");
    assert_eq!(env.git(&["rev-parse", "main~1"]), main_before);
}

#[test]
fn no_merge_stops_at_accepted_and_merge_lands_into_another_branch() {
    let env = TestEnv::new();
    env.git(&["branch", "release"]);
    let worker = env.script("w.sh", "echo new > src/new.txt");
    let tasks = one_task(&env, &worker, "");
    let ran = env.run(&tasks, &["--no-merge"]);
    assert_eq!(ran.code, 0, "{ran:?}");
    let view = ran.json();
    assert_eq!(task(&view, "t1")["state"], "accepted");
    assert_eq!(subjects(&env, "main"), ["first"]);
    let run_id = view["run_id"].as_str().unwrap();

    let bad = env.ccfan(&["merge", run_id, "--into", "nope"]);
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(
        bad.stderr.contains("`nope` is not a local branch"),
        "{bad:?}"
    );

    let merged = env.ccfan(&["merge", "--json", run_id, "--into", "release"]);
    assert_eq!(merged.code, 0, "{merged:?}");
    let t = task(&merged.json()["run"], "t1").clone();
    assert_eq!(t["state"], "merged");
    assert!(
        t["reason"]
            .as_str()
            .unwrap()
            .starts_with("merged into release"),
        "{t}"
    );
    assert_eq!(env.git(&["show", "release:src/new.txt"]), "new\n");
    assert_eq!(subjects(&env, "main"), ["first"]);
}

#[test]
fn rework_with_a_note_then_salvage_list_show_and_restore() {
    let env = TestEnv::new();
    let worker = env.script(
        "w.sh",
        r#"set -eu
cp "$CCFAN_TASK_FILE" "$PROBE/task-$CCFAN_ATTEMPT.json"
echo "attempt $CCFAN_ATTEMPT" >> src/notes.txt"#,
    );
    let tasks = one_task(&env, &worker, "");
    let ran = env.run(&tasks, &["--no-merge"]);
    assert_eq!(ran.code, 0, "{ran:?}");
    let run_id = ran.json()["run_id"].as_str().unwrap().to_string();

    let again = env.ccfan(&[
        "rework",
        "--json",
        &format!("{run_id}/t1"),
        "--note",
        "also say why",
    ]);
    assert_eq!(again.code, 0, "{again:?}");
    let t = task(&again.json()["run"], "t1").clone();
    assert_eq!(
        (t["state"].as_str(), t["attempts"].as_u64()),
        (Some("accepted"), Some(2)),
        "{t}"
    );
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.probe().join("task-2.json")).unwrap()).unwrap();
    assert_eq!(doc["rework"][0]["rule"], "reviewer-note");
    assert_eq!(doc["rework"][0]["message"], "also say why");

    let list = env.ccfan(&["salvage", "list", "--json", &run_id]);
    assert_eq!(list.code, 0, "{list:?}");
    let entries = list.json();
    let attempts: Vec<u64> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(attempts, [1, 2]);
    let show = env.ccfan(&["salvage", "show", "--json", &format!("{run_id}/t1/2")]);
    assert_eq!(show.code, 0, "{show:?}");
    assert_eq!(show.json()["files"][0]["path"], "src/notes.txt");
    let restored = env.ccfan(&["salvage", "restore", &format!("{run_id}/t1/1")]);
    assert_eq!(restored.code, 0, "{restored:?}");
    let branch = format!("ccfan/restore/{run_id}/t1/attempt-1");
    assert_eq!(
        env.git(&["show", &format!("{branch}:src/notes.txt")]),
        "attempt 1\n"
    );
    let twice = env.ccfan(&["salvage", "restore", &format!("{run_id}/t1/1")]);
    assert_eq!(twice.code, 2, "{twice:?}");
    assert!(twice.stderr.contains("exists already"), "{twice:?}");
    let missing = env.ccfan(&["salvage", "show", &format!("{run_id}/t1/9")]);
    assert_eq!(missing.code, 2, "{missing:?}");
    let bad_branch = env.ccfan(&[
        "salvage",
        "restore",
        &format!("{run_id}/t1/1"),
        "--branch",
        "no good..",
    ]);
    assert_eq!(bad_branch.code, 2, "{bad_branch:?}");
    assert!(
        bad_branch.stderr.contains("not a valid branch name"),
        "{bad_branch:?}"
    );
    let empty_note = env.ccfan(&["rework", &format!("{run_id}/t1"), "--note", "  "]);
    assert_eq!(empty_note.code, 2, "{empty_note:?}");
    assert!(empty_note.stderr.contains("--note"), "{empty_note:?}");
}

#[test]
fn retry_gives_a_blocked_task_a_fresh_budget_and_accept_force_overrides_the_gate() {
    let env = TestEnv::new();
    env.commit_policy("[run]\nmax_reworks = 0\n");
    // Fails until the probe says otherwise.
    let flaky = env.script(
        "flaky.sh",
        r#"echo work > src/flaky.txt
test -f "$PROBE/fixed""#,
    );
    let tasks = one_task(&env, &flaky, "");
    let ran = env.run(&tasks, &[]);
    assert_eq!(ran.code, 1, "{ran:?}");
    let run_id = ran.json()["run_id"].as_str().unwrap().to_string();
    assert_eq!(task(&ran.json(), "t1")["state"], "blocked");
    std::fs::write(env.probe().join("fixed"), "").unwrap();
    let retried = env.ccfan(&["retry", "--json", &format!("{run_id}/t1")]);
    assert_eq!(retried.code, 0, "{retried:?}");
    let t = task(&retried.json()["run"], "t1").clone();
    assert_eq!(
        (t["state"].as_str(), t["attempts"].as_u64()),
        (Some("merged"), Some(2)),
        "{t}"
    );
    let refused = env.ccfan(&["retry", &format!("{run_id}/t1")]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains("retry is for blocked"),
        "{refused:?}"
    );

    // Out of scope, no budget: blocked; a person accepts it anyway, with a reason on record.
    let outside = env.script("outside.sh", "echo more >> README.md");
    let tasks = one_task(&env, &outside, "allowed = [\"src/**\"]");
    let ran = env.run(&tasks, &[]);
    assert_eq!(ran.code, 1, "{ran:?}");
    let run_id = ran.json()["run_id"].as_str().unwrap().to_string();
    let no_force = env.ccfan(&["accept", &format!("{run_id}/t1"), "--reason", "x"]);
    assert_eq!(no_force.code, 2, "{no_force:?}");
    let forced = env.ccfan(&[
        "accept",
        "--json",
        &format!("{run_id}/t1"),
        "--force",
        "--reason",
        "the README line is fine",
    ]);
    assert_eq!(forced.code, 0, "{forced:?}");
    let t = task(&forced.json()["run"], "t1").clone();
    assert_eq!(t["state"], "merged", "{t}");
    assert!(
        t["reason"]
            .as_str()
            .unwrap()
            .contains("the README line is fine"),
        "{t}"
    );
    assert!(env.git(&["show", "main:README.md"]).ends_with("more\n"));
}

#[test]
fn cancel_from_another_process_stops_the_worker_tree() {
    let env = TestEnv::new();
    let probe = env.probe();
    let worker = env.script("slow.sh", "echo $$ > \"$PROBE/pid\"\nsleep 600");
    let tasks = one_task(&env, &worker, "");
    let mut child = env
        .command(&["run", "--json", "--tasks", tasks.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_file(&probe.join("pid"), "the worker never started");
    assert!(
        !env.worker_processes().is_empty(),
        "the worker is not visible"
    );
    let run_id = env.ccfan(&["status", "--json"]).json()["runs"][0]["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let cancelled = env.ccfan(&["cancel", "--json", &format!("{run_id}/t1")]);
    assert_eq!(cancelled.code, 0, "{cancelled:?}");
    assert_eq!(task(&cancelled.json()["run"], "t1")["state"], "cancelled");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    let survivors = env.worker_processes();
    assert!(survivors.is_empty(), "{survivors:?} survived the cancel");
    // Cancelling a finished run has nothing to stop.
    let late = env.ccfan(&["cancel", &run_id]);
    assert_eq!(late.code, 1, "{late:?}");
    assert!(late.stderr.contains("nothing to cancel"), "{late:?}");
}

#[test]
fn overlap_serialize_runs_overlapping_tasks_one_after_another() {
    let env = TestEnv::new();
    env.commit_policy("[run]\noverlap = \"serialize\"\n");
    let probe = env.probe();
    let worker = env.script(
        "w.sh",
        r#"set -eu
mkdir "$PROBE/lock" || { echo overlap > "$PROBE/overlapped"; exit 1; }
sleep 0.3
echo "$CCFAN_TASK_ID" > "src/$CCFAN_TASK_ID.txt"
rmdir "$PROBE/lock""#,
    );
    let tasks = env.tasks(&format!(
        "[defaults]\nworker = \"w\"\nallowed = [\"src/**\"]\n[[task]]\nid = \"a\"\ngoal = \"a\"\n[[task]]\nid = \"b\"\ngoal = \"b\"\n[[task]]\nid = \"c\"\ngoal = \"c\"\n\
         [workers.w]\nkind = \"command\"\ncommand = [\"{}\"]\nenv = {{ PROBE = \"{}\" }}\n",
        worker.display(),
        probe.display()
    ));
    let ran = env.run(&tasks, &["--jobs", "3"]);
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(
        !probe.join("overlapped").exists(),
        "overlapping tasks ran at the same time"
    );
    assert!(
        ran.stderr.contains("they run one after another"),
        "{}",
        ran.stderr
    );
    assert_eq!(subjects(&env, "main")[..3], ["c", "b", "a"]);
}
