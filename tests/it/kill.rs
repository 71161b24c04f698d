//! Timeouts kill the whole process tree: children that called setsid, daemons, and processes ignoring SIGTERM.

use crate::env::{TestEnv, read_pid, task};

#[test]
fn a_hanging_worker_and_its_escaped_children_die_at_the_timeout() {
    let env = TestEnv::new();
    std::fs::write(env.repo.join("ccfan.toml"), "[run]\nmax_reworks = 0\n").unwrap();
    let probe = env.probe();
    let worker = env.script(
        "hang.sh",
        r#"echo started > started.txt
setsid sh -c 'echo $$ > "$PROBE/setsid.pid"; exec sleep 600' &
( trap '' TERM HUP; setsid sh -c 'echo $$ > "$PROBE/daemon.pid"; trap "" TERM HUP; exec sleep 600' & ) &
echo $$ > "$PROBE/worker.pid"
trap '' TERM
sleep 600"#,
    );
    let tasks = env.tasks(&format!(
        "[[task]]\nid = \"hang\"\ngoal = \"hang\"\nworker = \"w\"\ntimeout = \"1s\"\n\
         [workers.w]\nkind = \"command\"\ncommand = [\"{}\"]\nenv = {{ PROBE = \"{}\" }}\n",
        worker.display(),
        probe.display()
    ));
    let started = std::time::Instant::now();
    let ran = env.run(&tasks, &[]);
    assert_eq!(ran.code, 1, "{ran:?}");
    assert!(
        started.elapsed().as_secs() < 15,
        "took {:?}",
        started.elapsed()
    );
    let run = ran.json();
    let hang = task(&run, "hang");
    assert_eq!(hang["state"], "blocked", "{hang}");
    assert_eq!(
        hang["exit_status"],
        serde_json::json!({"kind": "timed_out"})
    );
    for name in ["worker.pid", "setsid.pid", "daemon.pid"] {
        read_pid(&probe.join(name)); // it started
    }
    let survivors = env.worker_processes();
    assert!(survivors.is_empty(), "{survivors:?} survived the timeout");
    // What it did before the timeout is kept.
    let salvage = format!(
        "refs/ccfan/{}/hang/attempt-1",
        run["run_id"].as_str().unwrap()
    );
    assert_eq!(
        env.git(&["show", &format!("{salvage}:started.txt")]),
        "started\n"
    );
}
