//! A ccfan killed with SIGKILL mid-run: `status` tells the truth afterwards, nothing it started survives, nothing
//! runs twice, and `gc` cleans up without losing the partial work.

use std::time::{Duration, Instant};

use crate::env::{TestEnv, read_pid, task};

#[test]
fn kill_9_mid_run_then_status_and_gc_tell_the_truth_and_keep_the_work() {
    let env = TestEnv::new();
    let probe = env.probe();
    let worker = env.script(
        "slow.sh",
        r#"echo run >> "$PROBE/$CCFAN_TASK_ID.count"
echo "partial work of $CCFAN_TASK_ID" > partial.txt
setsid sh -c 'echo $$ > "$PROBE/$CCFAN_TASK_ID.child"; exec sleep 600' &
echo $$ > "$PROBE/$CCFAN_TASK_ID.pid"
sleep 600"#,
    );
    let tasks = env.tasks(&format!(
        "[defaults]\nworker = \"w\"\n[[task]]\nid = \"a\"\ngoal = \"slow a\"\n[[task]]\nid = \"b\"\ngoal = \"slow b\"\n\
         [[task]]\nid = \"c\"\ngoal = \"queued behind a and b\"\n\
         [workers.w]\nkind = \"command\"\ncommand = [\"{}\"]\nenv = {{ PROBE = \"{}\" }}\n",
        worker.display(),
        probe.display()
    ));
    let mut child = env
        .command(&["run", "--jobs", "2", "--tasks", tasks.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();

    // Wait until both workers run, watching through `status` from this other process.
    let deadline = Instant::now() + Duration::from_secs(60);
    let run_id = loop {
        assert!(Instant::now() < deadline, "the run never got going");
        let list = env.ccfan(&["status", "--json"]);
        if let Some(run) = list.json()["runs"]
            .as_array()
            .and_then(|runs| runs.first().cloned())
        {
            let id = run["run_id"].as_str().unwrap().to_string();
            let view = env.ccfan(&["status", "--json", &id]).json();
            let running = view["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| t["state"] == "running")
                .count();
            if running == 2 && probe.join("a.child").exists() && probe.join("b.child").exists() {
                assert_eq!(view["state"], "running");
                assert_eq!(task(&view, "c")["state"], "queued");
                break id;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    for name in ["a.pid", "a.child", "b.pid", "b.child"] {
        read_pid(&probe.join(name));
    }
    let pids = env.worker_processes();
    assert!(
        pids.len() >= 4,
        "the workers' processes are not visible: {pids:?}"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    // status after the crash: interrupted, truthfully, and the leftovers are gone.
    let view = env.ccfan(&["status", "--json", &run_id]).json();
    assert_eq!(view["state"], "interrupted");
    for id in ["a", "b"] {
        let t = task(&view, id);
        assert_eq!(t["state"], "interrupted", "{t}");
        assert!(
            t["reason"]
                .as_str()
                .unwrap()
                .contains("while the task was running"),
            "{t}"
        );
        assert!(t["worktree_present"].as_bool().unwrap());
        let worktree = std::path::PathBuf::from(t["worktree"].as_str().unwrap());
        assert_eq!(
            std::fs::read_to_string(worktree.join("partial.txt")).unwrap(),
            format!("partial work of {id}\n")
        );
    }
    assert_eq!(task(&view, "c")["state"], "interrupted");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !env.worker_processes().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let survivors = env.worker_processes();
    assert!(
        survivors.is_empty(),
        "processes {survivors:?} outlived their task"
    );
    let human = env.ccfan(&["status"]);
    assert!(human.stdout.contains("interrupted"), "{human:?}");

    // gc keeps the partial work on the attempt's salvage ref, then removes worktrees and branches.
    let gc = env.ccfan(&["gc", "--json"]);
    assert_eq!(gc.code, 0, "{gc:?}");
    let report = gc.json();
    assert_eq!(report["removed"].as_array().unwrap().len(), 2, "{report}");
    for id in ["a", "b"] {
        let salvage = format!("refs/ccfan/{run_id}/{id}/attempt-1");
        assert_eq!(
            env.git(&["show", &format!("{salvage}:partial.txt")]),
            format!("partial work of {id}\n")
        );
        assert!(report.to_string().contains(&salvage), "{report}");
    }
    assert_eq!(
        env.git(&["worktree", "list", "--porcelain"])
            .matches("worktree ")
            .count(),
        1
    );
    assert_eq!(env.git(&["branch", "--list", "ccfan/*"]), "");
    let view = env.ccfan(&["status", "--json", &run_id]).json();
    assert_eq!(
        task(&view, "a")["salvage_refs"],
        serde_json::json!([format!("refs/ccfan/{run_id}/a/attempt-1")])
    );

    // Nothing ran twice: each worker started exactly once, c never.
    for id in ["a", "b"] {
        assert_eq!(
            std::fs::read_to_string(probe.join(format!("{id}.count"))).unwrap(),
            "run\n"
        );
    }
    assert!(!probe.join("c.count").exists());
    // A second gc finds nothing more to do.
    assert!(env.ccfan(&["gc"]).stdout.contains("nothing to remove"));
}

#[test]
fn gc_removes_verification_checkouts_a_cut_short_gate_left_behind() {
    let env = TestEnv::new();
    let tasks = env.tasks("[[task]]\ngoal = \"x\"\nworker = \"w\"\n[workers.w]\nkind = \"command\"\ncommand = [\"true\"]\n");
    let view = env.run(&tasks, &[]).json();
    // <root>/<repo>-<hash>/<run>/<task> → <root>/<repo>-<hash>/.verify/<name>
    let worktree = std::path::PathBuf::from(task(&view, "t1")["worktree"].as_str().unwrap());
    let abandoned = worktree
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join(".verify")
        .join("r-t1-1-abc");
    env.git(&[
        "worktree",
        "add",
        "--detach",
        "--quiet",
        abandoned.to_str().unwrap(),
        "HEAD",
    ]);
    let gc = env.ccfan(&["gc", "--json"]);
    assert_eq!(gc.code, 0, "{gc:?}");
    assert_eq!(gc.json()["verify_checkouts_removed"], 1);
    assert!(!abandoned.exists());
    assert!(!env.git(&["worktree", "list"]).contains(".verify"));
}
