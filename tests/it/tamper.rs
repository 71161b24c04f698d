//! Workers that play with git state: ccfan records the files on top of the commit it expects, never through the
//! worktree's HEAD or index, puts the git state back, and reports the attempt as a sandbox escape. Under
//! bubblewrap a worker cannot touch git metadata at all (the escape battery in `sandbox.rs` shows it); these tests
//! run with `backend = "none"` to show the second line of defence, for a worker that got past the sandbox.

use crate::env::{TestEnv, task};

/// A policy with no OS sandbox, so that the worker really changes git state.
const UNSANDBOXED: &str = "[sandbox]\nbackend = \"none\"\n";

fn run_one(env: &TestEnv, body: &str) -> serde_json::Value {
    let worker = env.script("tamper.sh", body);
    let tasks = env.tasks(&format!(
        "[[task]]\nid = \"t\"\ngoal = \"x\"\nworker = \"w\"\nallowed = [\"src/**\"]\n[workers.w]\nkind = \"command\"\ncommand = [\"{}\"]\n",
        worker.display()
    ));
    let run = env.run(&tasks, &[]);
    assert!(!run.stderr.contains("panicked"), "{run:?}");
    run.json()
}

#[test]
fn pointing_head_at_the_users_branch_moves_nothing_of_the_user() {
    let env = TestEnv::new();
    env.commit_policy(UNSANDBOXED);
    let main_before = env.git(&["rev-parse", "main"]);
    let view = run_one(
        &env,
        "git symbolic-ref HEAD refs/heads/main\necho changed >> README.md\necho ok > src/ok.txt",
    );
    assert_eq!(
        env.git(&["rev-parse", "main"]),
        main_before,
        "the user's branch must not move"
    );
    assert_eq!(
        env.git(&["status", "--porcelain"]),
        "",
        "the user's checkout must stay clean"
    );
    let t = task(&view, "t");
    assert_eq!(t["state"], "rolled_back", "{t}");
    assert!(
        t["reason"].as_str().unwrap().contains("sandbox-escape"),
        "{t}"
    );
    // The attempt is still recorded on its own branch and salvage ref, on top of the base.
    let run_id = view["run_id"].as_str().unwrap();
    let salvage = format!("refs/ccfan/{run_id}/t/attempt-1");
    assert_eq!(
        env.git(&["rev-parse", &format!("{salvage}~1")]),
        main_before
    );
    assert!(
        env.git(&["show", &format!("{salvage}:README.md")])
            .contains("changed")
    );
}

#[test]
fn a_worker_that_commits_its_own_work_is_still_judged_on_all_of_it() {
    let env = TestEnv::new();
    env.commit_policy(UNSANDBOXED);
    let view = run_one(
        &env,
        "mkdir -p .github/workflows && echo 'on: push' > .github/workflows/ci.yml\n\
         git -c user.name=w -c user.email=w@x add -A && git -c user.name=w -c user.email=w@x commit -qm sneaky",
    );
    let t = task(&view, "t");
    assert_ne!(t["state"], "accepted", "{t}");
    let reason = t["reason"].as_str().unwrap();
    assert!(reason.contains("sandbox-escape"), "{reason}");
    let run_id = view["run_id"].as_str().unwrap().to_string();
    let verify = env.ccfan(&["verify", "--json", &run_id]).json();
    let text = verify.to_string();
    assert!(
        text.contains(".github/workflows/ci.yml") && text.contains("\"denied\""),
        "{text}"
    );
}

#[test]
fn index_flags_cannot_hide_a_change() {
    let env = TestEnv::new();
    let view = run_one(
        &env,
        "git update-index --skip-worktree src/lib.txt\ngit update-index --assume-unchanged README.md\n\
         echo hidden >> src/lib.txt\necho hidden >> README.md",
    );
    let run_id = view["run_id"].as_str().unwrap();
    let changed = env.git(&[
        "diff",
        "--name-only",
        "main",
        &format!("refs/ccfan/{run_id}/t/attempt-1"),
    ]);
    assert_eq!(changed, "README.md\nsrc/lib.txt\n");
    let t = task(&view, "t");
    assert_ne!(t["state"], "accepted", "README.md is out of scope: {t}");
}

#[test]
fn fifos_and_symlinks_in_the_attempt_folder_neither_hang_nor_redirect_ccfan() {
    let env = TestEnv::new();
    std::fs::write(
        env.repo.join("ccfan.toml"),
        "[run]\nmax_reworks = 0\n[gate]\ncompleteness = \"on\"\n[sandbox]\nbackend = \"none\"\n",
    )
    .unwrap();
    let worker = env.script(
        "trap.sh",
        "echo x > src/new.txt\nmkfifo \"$CCFAN_REPORT_FILE\"\nlog=\"$(dirname \"$CCFAN_TASK_FILE\")/worker.log\"\nrm -f \"$log\" && ln -s /etc/hostname \"$log\"",
    );
    let tasks = env.tasks(&format!(
        "[[task]]\nid = \"t\"\ngoal = \"x\"\nworker = \"w\"\n[workers.w]\nkind = \"command\"\ncommand = [\"{}\"]\n",
        worker.display()
    ));
    let mut child = env
        .command(&["run", "--json", "--tasks", tasks.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("ccfan hung on a FIFO in the attempt folder");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    let view: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let t = task(&view, "t");
    assert_eq!(t["state"], "blocked", "{t}");
    assert!(
        t["reason"].as_str().unwrap().contains("no-final-report"),
        "{t}"
    );
    assert_eq!(
        std::fs::read_link(t["log"].as_str().unwrap()).unwrap(),
        std::path::Path::new("/etc/hostname"),
        "the link was not followed for writing"
    );
}
