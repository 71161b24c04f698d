//! Fan-out: parallel tasks, bounded by --jobs, each branch holding exactly its worker's change.

use crate::env::{TestEnv, task};

#[test]
fn eight_tasks_four_at_a_time_each_branch_holds_only_its_change() {
    let env = TestEnv::new();
    let probe = env.probe();
    let worker = env.script(
        "edit.sh",
        r#"set -eu
echo "start $(date +%s%N)" >> "$PROBE/$CCFAN_TASK_ID.times"
echo "WORKER-NOISE on stdout from $CCFAN_TASK_ID"
echo "noise on stderr" >&2
mkdir -p out
{
  echo "task=$CCFAN_TASK_ID"
  echo "run=$CCFAN_RUN_ID"
  echo "attempt=$CCFAN_ATTEMPT"
  echo "base=$CCFAN_BASE_SHA"
  echo "worktree_is_cwd=$([ "$CCFAN_WORKTREE" = "$(pwd -P)" ] && echo yes || echo no)"
  echo "stdin_is_null=$([ "$(cat)" = "" ] && echo yes || echo no)"
  echo "secret_env=${SECRET_FROM_HOST:-absent}"
} > "out/$CCFAN_TASK_ID.txt"
grep -q "\"goal\": \"write out/$CCFAN_TASK_ID.txt\"" "$CCFAN_TASK_FILE"
sleep 0.4
echo "end $(date +%s%N)" >> "$PROBE/$CCFAN_TASK_ID.times""#,
    );
    let mut tasks = format!(
        "[defaults]\nworker = \"edit\"\nallowed = [\"out/**\"]\n\n[workers.edit]\nkind = \"command\"\ncommand = [\"{}\"]\nenv = {{ PROBE = \"{}\" }}\n",
        worker.display(),
        probe.display()
    );
    for i in 1..=8 {
        tasks.push_str(&format!(
            "\n[[task]]\nid = \"task-{i}\"\ngoal = \"write out/task-{i}.txt\"\n"
        ));
    }
    let base = env.git(&["rev-parse", "HEAD"]).trim().to_string();
    let mut command = env.command(&[
        "run",
        "--json",
        "--jobs",
        "4",
        "--tasks",
        env.tasks(&tasks).to_str().unwrap(),
    ]);
    command.env("SECRET_FROM_HOST", "do-not-pass");
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !stdout.contains("WORKER-NOISE"),
        "worker output must not reach ccfan's stdout"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("allowed glob `out/**` matches no file at the base"),
        "{stderr}"
    );
    let run: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(run["base"], base.as_str());
    let run_id = run["run_id"].as_str().unwrap();

    for i in 1..=8 {
        let id = format!("task-{i}");
        let view = task(&run, &id);
        assert_eq!(view["state"], "merged", "{view}");
        assert_eq!(view["attempts"], 1, "{view}");
        assert_eq!(
            view["exit_status"],
            serde_json::json!({"kind": "code", "code": 0})
        );
        let branch = format!("ccfan/{run_id}/{id}");
        assert_eq!(view["branch"], branch.as_str());
        // The branch holds exactly this worker's change, on top of the recorded base.
        assert_eq!(env.git(&["rev-parse", &format!("{branch}~1")]).trim(), base);
        let changed = env.git(&["diff", "--name-status", &base, &branch]);
        assert_eq!(changed, format!("A\tout/{id}.txt\n"));
        let content = env.git(&["show", &format!("{branch}:out/{id}.txt")]);
        assert_eq!(
            content,
            format!(
                "task={id}\nrun={run_id}\nattempt=1\nbase={base}\nworktree_is_cwd=yes\nstdin_is_null=yes\nsecret_env=absent\n"
            )
        );
        // The salvage ref holds the same commit; the log holds the worker's output.
        let salvage = format!("refs/ccfan/{run_id}/{id}/attempt-1");
        assert_eq!(
            env.git(&["rev-parse", &salvage]).trim(),
            view["commit"].as_str().unwrap()
        );
        let log = std::fs::read_to_string(view["log"].as_str().unwrap()).unwrap();
        assert!(
            log.contains(&format!("WORKER-NOISE on stdout from {id}"))
                && log.contains("noise on stderr"),
            "{log}"
        );
    }

    // main now holds the eight changes, landed one commit each in task-file order, on top of the base.
    let landed = env.git(&["log", "--format=%s", &format!("{base}..main")]);
    let expected: Vec<String> = (1..=8)
        .rev()
        .map(|i| format!("write out/task-{i}.txt"))
        .collect();
    assert_eq!(landed.lines().collect::<Vec<_>>(), expected, "{landed}");
    assert_eq!(
        env.git(&["ls-tree", "--name-only", "main", "out/"])
            .lines()
            .count(),
        8
    );

    // git's own worktree records agree with ccfan's state.
    let listed = env.git(&["worktree", "list", "--porcelain"]);
    for t in run["tasks"].as_array().unwrap() {
        assert!(
            listed.contains(&format!("worktree {}\n", t["worktree"].as_str().unwrap())),
            "{listed}"
        );
        assert!(t["worktree_present"].as_bool().unwrap());
    }
    assert_eq!(listed.matches("worktree ").count(), 9);

    // Never more than 4 workers at once.
    let mut edges = Vec::new();
    for i in 1..=8 {
        let times = std::fs::read_to_string(probe.join(format!("task-{i}.times"))).unwrap();
        for line in times.lines() {
            let (kind, at) = line.split_once(' ').unwrap();
            edges.push((
                at.parse::<u128>().unwrap(),
                if kind == "start" { 1 } else { -1 },
            ));
        }
    }
    edges.sort();
    let (mut running, mut most) = (0i32, 0i32);
    for (_, delta) in edges {
        running += delta;
        most = most.max(running);
    }
    assert!(most <= 4, "{most} workers ran at once with --jobs 4");
    assert!(
        most >= 2,
        "workers did not run in parallel (at most {most} at once)"
    );
}

#[test]
fn every_kind_of_change_is_recorded_and_ignored_files_are_not() {
    let env = TestEnv::new();
    env.write("tools/run.sh", "echo hi\n");
    env.write("old.txt", "old\n");
    env.git(&["add", "-A"]);
    env.git(&["commit", "-qm", "more files"]);
    let worker = env.script(
        "changes.sh",
        "set -eu\nrm old.txt\nchmod +x tools/run.sh\nln -s src/lib.txt link-to-lib\nmkdir -p new/deep\necho fresh > new/deep/file.txt\n\
         echo changed >> src/lib.txt\necho noise > debug.log",
    );
    let tasks = env.tasks(&format!(
        "[[task]]\nid = \"all\"\ngoal = \"change things\"\nworker = \"w\"\n[workers.w]\nkind = \"command\"\ncommand = [\"{}\"]\n",
        worker.display()
    ));
    let ran = env.run(&tasks, &[]);
    assert_eq!(ran.code, 0, "{ran:?}");
    let run = ran.json();
    let commit = task(&run, "all")["commit"].as_str().unwrap().to_string();
    let raw = env.git(&[
        "diff-tree",
        "-r",
        "--no-commit-id",
        &format!("{commit}~1"),
        &commit,
    ]);
    let mut entries: Vec<(String, String, String)> = raw
        .lines()
        .map(|line| {
            let (meta, path) = line.split_once('\t').unwrap();
            let fields: Vec<&str> = meta.split_whitespace().collect();
            (
                path.to_string(),
                fields[1].to_string(),
                fields[4].to_string(),
            )
        })
        .collect();
    entries.sort();
    let summary: Vec<String> = entries
        .iter()
        .map(|(p, mode, kind)| format!("{kind} {mode} {p}"))
        .collect();
    assert_eq!(
        summary,
        [
            "A 120000 link-to-lib",
            "A 100644 new/deep/file.txt",
            "D 000000 old.txt",
            "M 100644 src/lib.txt",
            "M 100755 tools/run.sh",
        ],
        "{raw}"
    );
    assert_eq!(
        env.git(&["show", &format!("{commit}:link-to-lib")]),
        "src/lib.txt"
    );
    // The attempt folder keeps a summary of what changed, beside the log and the task file.
    let log = std::path::PathBuf::from(task(&run, "all")["log"].as_str().unwrap());
    let folder = log.parent().unwrap();
    assert!(folder.join("task.json").is_file());
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(folder.join("attempt.json")).unwrap()).unwrap();
    assert_eq!(record["recorded"]["commit"], commit.as_str());
    let mut kinds: Vec<String> = record["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{} {} {:o}",
                c["kind"].as_str().unwrap(),
                c["path"].as_str().unwrap(),
                c["new_mode"].as_u64().unwrap()
            )
        })
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "added link-to-lib 120000",
            "added new/deep/file.txt 100644",
            "deleted old.txt 0",
            "modified src/lib.txt 100644",
            "modified tools/run.sh 100755",
        ]
    );
}

#[test]
fn a_worker_that_changes_nothing_gives_an_empty_attempt() {
    let env = TestEnv::new();
    let tasks = env.tasks("[[task]]\ngoal = \"look only\"\nworker = \"w\"\n[workers.w]\nkind = \"command\"\ncommand = [\"true\"]\n");
    let ran = env.run(&tasks, &[]);
    assert_eq!(ran.code, 0, "{ran:?}");
    let run = ran.json();
    let t1 = task(&run, "t1");
    assert_eq!(t1["state"], "merged");
    assert!(t1["commit"].is_null());
    assert!(t1["reason"].as_str().unwrap().contains("changed nothing"));
    assert_eq!(t1["salvage_refs"], serde_json::json!([]));
}

#[test]
fn failing_and_missing_workers_keep_their_work_and_exit_1() {
    let env = TestEnv::new();
    std::fs::write(env.repo.join("ccfan.toml"), "[run]\nmax_reworks = 0\n").unwrap();
    let failing = env.script("fail.sh", "echo partial > partial.txt\nexit 3");
    let tasks = env.tasks(&format!(
        "[[task]]\nid = \"fails\"\ngoal = \"x\"\nworker = \"f\"\n[[task]]\nid = \"missing\"\ngoal = \"y\"\nworker = \"m\"\n\
         [workers.f]\nkind = \"command\"\ncommand = [\"{}\"]\n[workers.m]\nkind = \"command\"\ncommand = [\"/nonexistent/worker\"]\n",
        failing.display()
    ));
    let ran = env.run(&tasks, &[]);
    assert_eq!(ran.code, 1, "{ran:?}");
    let run = ran.json();
    let fails = task(&run, "fails");
    assert_eq!(
        fails["state"], "blocked",
        "a failed worker is reworked until the budget (0 here) is spent"
    );
    assert_eq!(
        fails["exit_status"],
        serde_json::json!({"kind": "code", "code": 3})
    );
    let salvage = format!(
        "refs/ccfan/{}/fails/attempt-1",
        run["run_id"].as_str().unwrap()
    );
    assert_eq!(
        env.git(&["show", &format!("{salvage}:partial.txt")]),
        "partial\n"
    );
    let missing = task(&run, "missing");
    assert_eq!(
        missing["state"], "rolled_back",
        "a worker that cannot start is not reworked"
    );
    assert!(
        missing["reason"]
            .as_str()
            .unwrap()
            .contains("could not be started"),
        "{missing}"
    );
}

#[test]
fn output_past_the_log_limit_is_capped_with_a_note() {
    let env = TestEnv::new();
    std::fs::write(env.repo.join("ccfan.toml"), "[run]\nlog_limit = \"1KiB\"\n").unwrap();
    let tasks = env.tasks(
        "[[task]]\ngoal = \"flood\"\nworker = \"w\"\n[workers.w]\nkind = \"command\"\ncommand = [\"sh\", \"-c\", \"yes flood | head -c 200000\"]\n",
    );
    let ran = env.run(&tasks, &[]);
    assert_eq!(ran.code, 0, "{ran:?}");
    let run = ran.json();
    let log = std::fs::read_to_string(task(&run, "t1")["log"].as_str().unwrap()).unwrap();
    assert!(log.len() < 1200, "{}", log.len());
    assert!(
        log.contains("[ccfan: output capped at 1024 bytes; 198976 more bytes were dropped]"),
        "{log}"
    );
}
