//! Bad tasks files, policies and flags: each gives a clear error naming the file, the key and the fix, exit code 2,
//! and leaves no state, worktree or branch behind.

use crate::env::TestEnv;

const WORKER: &str = "[workers.w]\nkind = \"command\"\ncommand = [\"true\"]\n";

struct Case {
    name: &'static str,
    tasks: String,
    policy: Option<&'static str>,
    extra: &'static [&'static str],
    /// Fragments the error message must contain.
    expect: &'static [&'static str],
}

fn case(name: &'static str, tasks: &str, expect: &'static [&'static str]) -> Case {
    Case {
        name,
        tasks: tasks.to_string(),
        policy: None,
        extra: &[],
        expect,
    }
}

fn cases() -> Vec<Case> {
    vec![
        case("toml syntax", "[[task]\ngoal = \"x\"\n", &["tasks.toml:1"]),
        case(
            "unknown key",
            &format!("[[task]]\ngoal = \"x\"\nworker = \"w\"\ngaol = \"y\"\n{WORKER}"),
            &["tasks.toml:4", "`task[1].gaol`", "unknown field", "fix:"],
        ),
        case(
            "missing goal",
            &format!("[[task]]\nworker = \"w\"\n{WORKER}"),
            &["tasks.toml:1", "`task[1].goal`", "has no goal", "fix:"],
        ),
        case(
            "empty goal",
            &format!("[[task]]\ngoal = \"\"\nworker = \"w\"\n{WORKER}"),
            &["tasks.toml:2", "`task[1].goal`", "empty"],
        ),
        case(
            "duplicate ids",
            &format!(
                "[defaults]\nworker = \"w\"\n[[task]]\nid = \"a\"\ngoal = \"x\"\n[[task]]\nid = \"a\"\ngoal = \"y\"\n{WORKER}"
            ),
            &["tasks.toml:7", "`task[2].id`", "duplicate task id `a`"],
        ),
        case(
            "bad id",
            &format!("[[task]]\nid = \"../escape\"\ngoal = \"x\"\nworker = \"w\"\n{WORKER}"),
            &["tasks.toml:2", "`task[1].id`", "not a valid task id"],
        ),
        case(
            "bad glob",
            &format!("[[task]]\ngoal = \"x\"\nworker = \"w\"\nallowed = [\"src/[\"]\n{WORKER}"),
            &["tasks.toml:4", "`task[1].allowed`", "invalid glob"],
        ),
        case(
            "bad duration",
            &format!(
                "[[task]]\ngoal = \"x\"\nworker = \"w\"\ntimeout = \"10 fortnights\"\n{WORKER}"
            ),
            &["tasks.toml:4", "`task[1].timeout`", "not a duration"],
        ),
        case(
            "unknown worker",
            &format!("[[task]]\ngoal = \"x\"\nworker = \"codexx\"\n{WORKER}"),
            &[
                "tasks.toml:3",
                "`task[1].worker`",
                "no worker profile named `codexx`",
                "use one of: w",
            ],
        ),
        case(
            "no worker at all",
            "[[task]]\ngoal = \"x\"\n",
            &["`task[1].worker`", "names no worker"],
        ),
        case("no tasks", WORKER, &["`task`", "holds no task"]),
        case(
            "empty command",
            "[[task]]\ngoal = \"x\"\nworker = \"w\"\n[workers.w]\nkind = \"command\"\ncommand = []\n",
            &["tasks.toml:6", "`workers.w.command`", "must not be empty"],
        ),
        case(
            "unknown worker kind",
            "[[task]]\ngoal = \"x\"\nworker = \"w\"\n[workers.w]\nkind = \"robot\"\n",
            &["tasks.toml:5", "`workers.w.kind`", "unknown worker kind"],
        ),
        case(
            "defaults with a goal",
            &format!("[defaults]\ngoal = \"x\"\n[[task]]\ngoal = \"y\"\nworker = \"w\"\n{WORKER}"),
            &["tasks.toml:2", "`defaults.goal`"],
        ),
        Case {
            policy: Some("[runn]\njobs = 2\n"),
            ..case(
                "policy unknown section",
                &format!("[[task]]\ngoal = \"x\"\nworker = \"w\"\n{WORKER}"),
                &["ccfan.toml:1", "unknown field", "`runn`"],
            )
        },
        Case {
            policy: Some("extends = \"lenient\"\n"),
            ..case(
                "policy unknown preset",
                &format!("[[task]]\ngoal = \"x\"\nworker = \"w\"\n{WORKER}"),
                &[
                    "ccfan.toml:1",
                    "`extends`",
                    "unknown preset `lenient`",
                    "default, strict",
                ],
            )
        },
        Case {
            policy: Some("[run]\njobs = 0\n"),
            ..case(
                "policy zero jobs",
                &format!("[[task]]\ngoal = \"x\"\nworker = \"w\"\n{WORKER}"),
                &["ccfan.toml:2", "`run.jobs`", "at least 1"],
            )
        },
        Case {
            policy: Some("[scope]\ndenied = [\"{a,b\"]\n"),
            ..case(
                "policy bad glob",
                &format!("[[task]]\ngoal = \"x\"\nworker = \"w\"\n{WORKER}"),
                &["ccfan.toml:2", "`scope.denied`", "invalid glob"],
            )
        },
        Case {
            policy: Some("[run]\nbase = \"no-such-branch\"\n"),
            ..case(
                "policy base does not resolve",
                &format!("[[task]]\ngoal = \"x\"\nworker = \"w\"\n{WORKER}"),
                &["ccfan.toml", "`run.base`", "does not name a commit"],
            )
        },
        Case {
            extra: &["--base", "no-such-branch"],
            ..case(
                "base does not resolve",
                &format!("[[task]]\ngoal = \"x\"\nworker = \"w\"\n{WORKER}"),
                &["`--base`", "`no-such-branch` does not name a commit"],
            )
        },
    ]
}

fn assert_no_state(env: &TestEnv, name: &str) {
    assert!(!env.state_dir().exists(), "{name}: state was written");
    assert!(
        !env.worktree_root().exists(),
        "{name}: a worktree folder was made"
    );
    assert_eq!(
        env.git(&["worktree", "list", "--porcelain"])
            .matches("worktree ")
            .count(),
        1,
        "{name}"
    );
    assert_eq!(env.git(&["branch", "--list"]), "* main\n", "{name}");
}

#[test]
fn each_kind_of_bad_input_is_named_exits_2_and_writes_nothing() {
    for case in cases() {
        let env = TestEnv::new();
        if let Some(policy) = case.policy {
            std::fs::write(env.repo.join("ccfan.toml"), policy).unwrap();
        }
        let tasks = env.tasks(&case.tasks);
        let mut args = vec!["run", "--tasks", tasks.to_str().unwrap()];
        args.extend_from_slice(case.extra);
        let ran = env.ccfan(&args);
        assert_eq!(ran.code, 2, "{}: {ran:?}", case.name);
        assert!(ran.stderr.starts_with("error: "), "{}: {ran:?}", case.name);
        for fragment in case.expect {
            assert!(
                ran.stderr.contains(fragment),
                "{}: `{fragment}` missing from: {}",
                case.name,
                ran.stderr
            );
        }
        assert!(!ran.stderr.contains("panicked"), "{}", case.name);
        assert_eq!(ran.stdout, "", "{}", case.name);
        assert_no_state(&env, case.name);
    }
}

#[test]
fn json_tasks_files_are_checked_the_same_way() {
    let env = TestEnv::new();
    let path = env.tmp.path().join("tasks.json");
    std::fs::write(&path, r#"{"task": [{"goal": "x", "worker": "w", "alowed": ["src/**"]}], "workers": {"w": {"kind": "command", "command": ["true"]}}}"#).unwrap();
    let ran = env.ccfan(&["run", "--tasks", path.to_str().unwrap()]);
    assert_eq!(ran.code, 2, "{ran:?}");
    assert!(
        ran.stderr.contains("tasks.json") && ran.stderr.contains("alowed"),
        "{ran:?}"
    );
    assert_no_state(&env, "json");
    // And a good JSON tasks file runs.
    std::fs::write(&path, r#"{"task": [{"goal": "x", "worker": "w"}], "workers": {"w": {"kind": "command", "command": ["true"]}}}"#).unwrap();
    let ran = env.ccfan(&["run", "--json", "--tasks", path.to_str().unwrap()]);
    assert_eq!(ran.code, 0, "{ran:?}");
}

#[test]
fn missing_files_unknown_runs_and_non_repositories_are_bad_input() {
    let env = TestEnv::new();
    let ran = env.ccfan(&["run", "--tasks", "nope.toml"]);
    assert_eq!(ran.code, 2, "{ran:?}");
    assert!(
        ran.stderr.contains("nope.toml") && ran.stderr.contains("cannot read the tasks file"),
        "{ran:?}"
    );
    let tasks = env.tasks(&format!("[[task]]\ngoal = \"x\"\nworker = \"w\"\n{WORKER}"));
    let ran = env.ccfan(&[
        "run",
        "--tasks",
        tasks.to_str().unwrap(),
        "--policy",
        "missing-policy.toml",
    ]);
    assert_eq!(ran.code, 2, "{ran:?}");
    assert!(ran.stderr.contains("missing-policy.toml"), "{ran:?}");
    assert_no_state(&env, "missing files");
    let ran = env.ccfan(&["status", "no-such-run"]);
    assert_eq!(ran.code, 2, "{ran:?}");
    assert!(ran.stderr.contains("no run `no-such-run`"), "{ran:?}");
    let outside = tempfile::tempdir().unwrap();
    let ran = env.ccfan(&["-C", outside.path().to_str().unwrap(), "status"]);
    assert_eq!(ran.code, 2, "{ran:?}");
    assert!(
        ran.stderr.contains("not inside a git repository"),
        "{ran:?}"
    );
    let ran = env.ccfan(&["run"]);
    assert_eq!(ran.code, 2, "usage errors exit 2: {ran:?}");
}

#[test]
fn worktrees_inside_the_users_checkout_are_refused() {
    let env = TestEnv::new();
    std::fs::write(
        env.repo.join("ccfan.toml"),
        "[run]\nworktree_root = \"inside\"\n",
    )
    .unwrap();
    let tasks = env.tasks(&format!("[[task]]\ngoal = \"x\"\nworker = \"w\"\n{WORKER}"));
    let mut command = env.command(&["run", "--tasks", tasks.to_str().unwrap()]);
    command.env_remove("CCFAN_WORKTREE_ROOT");
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("`run.worktree_root`") && stderr.contains("inside the repository"),
        "{stderr}"
    );
    assert_no_state(&env, "worktree root inside");
    assert!(!env.repo.join("inside").exists());
}

#[test]
fn a_relative_worktree_root_is_resolved_and_refused_inside_the_checkout() {
    let env = TestEnv::new();
    let tasks = env.tasks(&format!("[[task]]\ngoal = \"x\"\nworker = \"w\"\n{WORKER}"));
    let mut command = env.command(&["run", "--tasks", tasks.to_str().unwrap()]);
    command.env("CCFAN_WORKTREE_ROOT", "wt");
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("inside the repository"), "{stderr}");
    assert!(!env.repo.join("wt").exists());
    assert_no_state(&env, "relative worktree root");
}

#[test]
fn malformed_ids_are_refused_where_they_enter_with_what_a_valid_one_looks_like() {
    let env = TestEnv::new();
    // `run/task` targets of the follow-up commands, status and verify.
    for args in [
        &["status", "../etc"][..],
        &["status", "r1/bad task"],
        &["retry", "r1/.hidden"],
        &["rollback", "r1/x.lock"],
        &["verify", "r1/a..b"],
    ] {
        let ran = env.ccfan(args);
        assert_eq!(ran.code, 2, "{args:?}: {ran:?}");
        assert!(
            ran.stderr.contains("is not valid") && ran.stderr.contains("A-Z a-z 0-9"),
            "{args:?}: {ran:?}"
        );
    }
    // Flags typed as ids are checked by the argument parser.
    for args in [&["merge", "bad/run"][..], &["gc", "-x"]] {
        let ran = env.ccfan(args);
        assert_eq!(ran.code, 2, "{args:?}: {ran:?}");
    }
    let ran = env.ccfan(&["merge", "a b"]);
    assert!(ran.stderr.contains("run id `a b` is not valid"), "{ran:?}");
    // A job file (the MCP server's hand-off) with a bad id is refused before anything runs.
    let job = env.tmp.path().join("job.json");
    std::fs::write(
        &job,
        r#"{"operation": "retry", "run_id": "r1", "task_id": "../../x"}"#,
    )
    .unwrap();
    let ran = env.ccfan(&["job", job.to_str().unwrap()]);
    assert_eq!(ran.code, 2, "{ran:?}");
    assert!(
        ran.stderr.contains("task id `../../x` is not valid"),
        "{ran:?}"
    );
    assert_no_state(&env, "malformed ids");
}
