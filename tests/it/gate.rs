//! The gate on real attempts: verdicts, scope edge cases, tests on the merge-preview tree, completeness, checks,
//! and the promise that no raw secret ever appears in ccfan's output or state.

use std::path::Path;

use crate::env::{TestEnv, task};

fn worker_tasks(env: &TestEnv, script: &Path, extra: &str) -> std::path::PathBuf {
    env.tasks(&format!(
        "[[task]]\nid = \"w\"\ngoal = \"do it\"\nworker = \"w\"\n{extra}\n[workers.w]\nkind = \"command\"\ncommand = [\"{}\"]\nenv = {{ PROBE = \"{}\" }}\n",
        script.display(),
        env.probe().display()
    ))
}

/// Writes the repository's policy: one attempt per task (these tests judge single attempts), plus `extra`.
fn policy(env: &TestEnv, extra: &str) {
    std::fs::write(
        env.repo.join("ccfan.toml"),
        format!("[run]\nmax_reworks = 0\n{extra}"),
    )
    .unwrap();
}

/// The blocking findings of a task's latest attempt, from `ccfan verify --json`.
fn blocking(env: &TestEnv, run_id: &str, task_id: &str) -> Vec<serde_json::Value> {
    let verify = env
        .ccfan(&["verify", "--json", &format!("{run_id}/{task_id}")])
        .json();
    verify["tasks"][0]["report"]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|stage| stage["findings"].as_array().unwrap().clone())
        .filter(|finding| finding["level"] == "error")
        .collect()
}

/// Every file under `dir`, read as bytes.
fn all_files(dir: &Path, into: &mut Vec<(String, Vec<u8>)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            all_files(&path, into);
        } else if let Ok(bytes) = std::fs::read(&path) {
            into.push((path.display().to_string(), bytes));
        }
    }
}

#[test]
fn secrets_are_found_and_never_appear_raw_in_any_output_or_state() {
    let env = TestEnv::new();
    policy(&env, "");
    let worker = env.script(
        "leak.sh",
        r#"set -eu
key="AKIA$(LC_ALL=C tr -dc 'A-Z2-7' </dev/urandom | head -c 16)"
token="$(LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c 32)"
printf '%s\n%s\n' "$key" "$token" > "$PROBE/raw"
mkdir -p src
printf 'const API_TOKEN: &str = "%s";\n' "$token" > src/config.rs
printf 'AWS_ACCESS_KEY_ID=%s\n' "$key" > deploy.env
echo "I wrote the key $key for you""#,
    );
    let tasks = worker_tasks(&env, &worker, "");
    let run = env.run(&tasks, &[]);
    assert_eq!(run.code, 1, "{run:?}");
    let view = run.json();
    let t = task(&view, "w");
    assert_eq!(t["state"], "blocked", "{t}");
    let run_id = view["run_id"].as_str().unwrap().to_string();
    let verify = env.ccfan(&["verify", &run_id]);
    let verify_json = env.ccfan(&["verify", "--json", &run_id]);
    let verify_sarif = env.ccfan(&["verify", "--sarif", &run_id]);
    let status = env.ccfan(&["status", "--json", &run_id]);
    // The task's branch was moved off the secret-bearing attempt; the attempt is on its salvage ref.
    assert_eq!(
        env.git(&["rev-parse", &format!("ccfan/{run_id}/w")]),
        env.git(&["rev-parse", "HEAD"])
    );
    let scan = env.ccfan(&[
        "scan",
        "--range",
        &format!("HEAD..refs/ccfan/{run_id}/w/attempt-1"),
    ]);
    let scan_json = env.ccfan(&["scan", "--json", t["worktree"].as_str().unwrap()]);

    // Found: the typed Rust binding, the .env key, and the key the worker printed.
    let findings = &verify_json.json()["tasks"][0]["report"]["stages"];
    let secrets: Vec<&serde_json::Value> = findings
        .as_array()
        .unwrap()
        .iter()
        .find(|stage| stage["stage"] == "secrets")
        .unwrap()["findings"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    let places: Vec<String> = secrets
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    assert!(places.contains(&"src/config.rs".to_string()), "{places:?}");
    assert!(places.contains(&"deploy.env".to_string()), "{places:?}");
    assert!(places.contains(&"worker.log".to_string()), "{places:?}");
    assert_eq!(verify.code, 1);
    assert!(verify.stdout.contains("AKIA…[REDACTED]…"), "{verify:?}");
    assert_eq!(scan.code, 1, "{scan:?}");
    assert!(scan.stdout.contains("src/config.rs:1"), "{scan:?}");

    // Never raw: not in any output, not in any file of ccfan's state folder.
    let raw = std::fs::read_to_string(env.probe().join("raw")).unwrap();
    let outputs = [
        &run,
        &verify,
        &verify_json,
        &verify_sarif,
        &status,
        &scan,
        &scan_json,
    ];
    let mut state = Vec::new();
    all_files(&env.state_dir(), &mut state);
    assert!(state.iter().any(|(name, _)| name.ends_with("worker.log")));
    for secret in raw.lines() {
        for output in outputs {
            assert!(
                !output.stdout.contains(secret) && !output.stderr.contains(secret),
                "raw secret in {output:?}"
            );
        }
        for (name, bytes) in &state {
            let found = bytes
                .windows(secret.len())
                .any(|window| window == secret.as_bytes());
            assert!(!found, "raw secret stored in {name}");
        }
    }
    // The scrubbed log still tells that a secret was printed, when verified again.
    let again = env.ccfan(&["verify", "--json", &run_id]).json();
    assert!(again.to_string().contains("worker.log"), "{again}");
}

#[test]
fn scope_covers_renames_deletions_modes_and_symlinks() {
    let env = TestEnv::new();
    policy(&env, "");
    env.write("docs/guide.md", "guide\n");
    env.write("src/tool.sh", "echo\n");
    env.git(&["add", "-A"]);
    env.git(&["commit", "-qm", "more"]);
    let worker = env.script(
        "scope.sh",
        "set -eu\nmv docs/guide.md src/guide.md\nrm README.md\nchmod +x src/tool.sh\n\
         ln -s ../../etc/passwd src/escape\nln -s ../README.md src/inside-but-denied\nmkdir -p src/.git && echo x > src/.git/config",
    );
    let tasks = worker_tasks(
        &env,
        &worker,
        "allowed = [\"src/**\"]\ndenied = [\"README.md\"]",
    );
    let run = env.run(&tasks, &[]);
    assert_eq!(run.code, 1, "{run:?}");
    let run_id = run.json()["run_id"].as_str().unwrap().to_string();
    let verify = env.ccfan(&["verify", "--json", &run_id]).json();
    let report = &verify["tasks"][0]["report"];
    let scope = report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "scope")
        .unwrap();
    let rules: Vec<String> = scope["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            format!(
                "{} {}",
                f["rule"].as_str().unwrap(),
                f["path"].as_str().unwrap()
            )
        })
        .collect();
    for expected in [
        "not-allowed docs/guide.md",
        "denied README.md",
        "symlink-escape src/escape",
        "symlink-out-of-scope src/inside-but-denied",
    ] {
        assert!(
            rules.contains(&expected.to_string()),
            "missing `{expected}` in {rules:?}"
        );
    }
    // The mode-only change inside scope is fine, and listed in the diff.
    let files = report["diff"]["files"].as_array().unwrap();
    let tool = files.iter().find(|f| f["path"] == "src/tool.sh").unwrap();
    assert_eq!(tool["new_mode"], 0o100755);
    assert!(
        !rules.iter().any(|r| r.ends_with("src/tool.sh")),
        "{rules:?}"
    );
    // A nested .git is never recorded: libgit2 refuses such paths, so nothing of it reaches the commit.
    assert!(
        !files
            .iter()
            .any(|f| f["path"].as_str().unwrap().contains(".git/")),
        "{files:?}"
    );
}

#[test]
fn tests_run_on_the_merge_preview_tree_not_in_the_worktree() {
    let env = TestEnv::new();
    policy(
        &env,
        "[tests]\ncommand = [\"sh\", \"-c\", \"test -f landed-meanwhile.txt && test -f out/result.txt && pwd > \\\"$PROBE_DIR/tests-cwd\\\"\"]\n[sandbox]\nenv_allow = [\"PATH\", \"PROBE_DIR\"]\n",
    );
    env.git(&["add", "ccfan.toml"]);
    env.git(&["commit", "-qm", "policy"]);
    // The target branch moves on after the run's base: the file exists only in the merged tree.
    let base = env.git(&["rev-parse", "HEAD"]).trim().to_string();
    env.write("landed-meanwhile.txt", "x\n");
    env.git(&["add", "-A"]);
    env.git(&["commit", "-qm", "someone else's work"]);
    let worker = env.script("w.sh", "mkdir -p out && echo done > out/result.txt");
    let tasks = worker_tasks(&env, &worker, "allowed = [\"out/**\"]");
    let mut command = env.command(&[
        "run",
        "--json",
        "--base",
        &base,
        "--tasks",
        tasks.to_str().unwrap(),
    ]);
    command.env("PROBE_DIR", env.probe());
    let output = command.output().unwrap();
    let view: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let t = task(&view, "w");
    assert_eq!(
        t["state"],
        "merged",
        "{t}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let cwd = std::fs::read_to_string(env.probe().join("tests-cwd")).unwrap();
    assert_ne!(
        cwd.trim(),
        t["worktree"].as_str().unwrap(),
        "tests must not run in the worker's worktree"
    );
    assert!(
        !std::path::Path::new(cwd.trim()).exists(),
        "the verification checkout is removed afterwards"
    );
    // The worker's own worktree does not have the file that only the merge has.
    assert!(
        !Path::new(t["worktree"].as_str().unwrap())
            .join("landed-meanwhile.txt")
            .exists()
    );
    assert_eq!(
        env.git(&["worktree", "list", "--porcelain"])
            .matches("worktree ")
            .count(),
        2
    );
}

#[test]
fn failing_tests_and_checks_ask_for_rework_with_the_output_tail() {
    let env = TestEnv::new();
    policy(
        &env,
        "[tests]\ncommand = [\"sh\", \"-c\", \"echo 'assertion failed: 2 + 2 == 5'; exit 1\"]\n\
         [[checks]]\nname = \"lint\"\ncommand = [\"sh\", \"-c\", \"echo lint is happy\"]\n\
         [[checks]]\nname = \"typecheck\"\ncommand = [\"sh\", \"-c\", \"echo type error >&2; exit 2\"]\n",
    );
    let worker = env.script("w.sh", "echo x > src/new.txt");
    let run = env.run(&worker_tasks(&env, &worker, ""), &[]);
    assert_eq!(run.code, 1, "{run:?}");
    let view = run.json();
    let t = task(&view, "w");
    assert_eq!(t["state"], "blocked");
    let findings = blocking(&env, view["run_id"].as_str().unwrap(), "w");
    let rules: Vec<&str> = findings
        .iter()
        .map(|f| f["rule"].as_str().unwrap())
        .collect();
    assert_eq!(rules, ["tests-failed", "check-typecheck"], "{findings:?}");
    assert!(
        findings[0]["message"]
            .as_str()
            .unwrap()
            .contains("assertion failed: 2 + 2 == 5")
    );
    assert!(
        findings[1]["message"]
            .as_str()
            .unwrap()
            .contains("type error")
    );
}

#[test]
fn completeness_compares_the_final_report_with_the_real_change() {
    let env = TestEnv::new();
    policy(&env, "[gate]\ncompleteness = \"on\"\n");
    let honest = env.script(
        "honest.sh",
        "echo a > src/a.txt\nprintf '## Summary\\nadded a\\n## Tests\\nnone needed\\n## Files Changed\\n- src/a.txt\\n' > \"$CCFAN_REPORT_FILE\"",
    );
    let liar = env.script(
        "liar.sh",
        "echo b > src/b.txt\nprintf '## Summary\\nall done\\n## Files Changed\\n- src/c.txt\\n' > \"$CCFAN_REPORT_FILE\"",
    );
    let silent = env.script("silent.sh", "echo c > src/c.txt");
    let tasks = env.tasks(&format!(
        "[[task]]\nid = \"honest\"\ngoal = \"a\"\nworker = \"h\"\n[[task]]\nid = \"liar\"\ngoal = \"b\"\nworker = \"l\"\n[[task]]\nid = \"silent\"\ngoal = \"c\"\nworker = \"s\"\n\
         [workers.h]\nkind = \"command\"\ncommand = [\"{}\"]\n[workers.l]\nkind = \"command\"\ncommand = [\"{}\"]\n[workers.s]\nkind = \"command\"\ncommand = [\"{}\"]\n",
        honest.display(),
        liar.display(),
        silent.display()
    ));
    let view = env.run(&tasks, &[]).json();
    assert_eq!(task(&view, "honest")["state"], "merged");
    let liar_rules: Vec<String> = blocking(&env, view["run_id"].as_str().unwrap(), "liar")
        .iter()
        .map(|f| {
            format!(
                "{} {}",
                f["rule"].as_str().unwrap(),
                f["path"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        liar_rules,
        [
            "missing-section ",
            "claimed-not-changed src/c.txt",
            "changed-not-claimed src/b.txt"
        ]
    );
    assert_eq!(
        blocking(&env, view["run_id"].as_str().unwrap(), "silent")[0]["rule"],
        "no-final-report"
    );
}

#[test]
fn sarif_output_has_the_required_shape() {
    let env = TestEnv::new();
    policy(&env, "");
    let worker = env.script("w.sh", "echo x > README.md");
    let run = env.run(&worker_tasks(&env, &worker, "allowed = [\"src/**\"]"), &[]);
    let run_id = run.json()["run_id"].as_str().unwrap().to_string();
    let sarif = env.ccfan(&["verify", "--sarif", &run_id]);
    assert_eq!(sarif.code, 1);
    let log = sarif.json();
    crate::sarif::assert_valid(&log);
    let result = &log["runs"][0]["results"][0];
    assert_eq!(result["ruleId"], "not-allowed");
    assert_eq!(
        result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
        "README.md"
    );
}

#[test]
fn verify_json_shape_is_stable() {
    let env = TestEnv::new();
    policy(&env, "[tests]\ncommand = [\"true\"]\n");
    let worker = env.script(
        "w.sh",
        "echo x > README.md\nmkdir -p src && printf 'a\\nb\\n' > src/new.txt",
    );
    let run = env.run(&worker_tasks(&env, &worker, "allowed = [\"src/**\"]"), &[]);
    let run_id = run.json()["run_id"].as_str().unwrap().to_string();
    let verify = env.ccfan(&["verify", "--json", &run_id]);
    insta::with_settings!({filters => vec![
        (r"\b[0-9a-f]{40}\b", "[sha]"),
        (r"\d{8}-\d{6}-[0-9a-f]{4}", "[run]"),
        (r#""duration_ms": \d+"#, r#""duration_ms": 0"#),
    ]}, {
        insta::assert_snapshot!(verify.stdout);
    });
}

#[test]
fn fail_fast_skips_the_stages_after_a_failure() {
    let env = TestEnv::new();
    policy(
        &env,
        "[gate]\nfail_fast = true\n[tests]\ncommand = [\"sh\", \"-c\", \"touch \\\"$PROBE_DIR/tests-ran\\\"\"]\n[sandbox]\nenv_allow = [\"PATH\", \"PROBE_DIR\"]\n",
    );
    let worker = env.script("w.sh", "echo x > README.md");
    let tasks = worker_tasks(&env, &worker, "allowed = [\"src/**\"]");
    let mut command = env.command(&["run", "--json", "--tasks", tasks.to_str().unwrap()]);
    command.env("PROBE_DIR", env.probe());
    let run: serde_json::Value = serde_json::from_slice(&command.output().unwrap().stdout).unwrap();
    let run_id = run["run_id"].as_str().unwrap().to_string();
    let mut command = env.command(&["verify", "--json", &run_id]);
    command.env("PROBE_DIR", env.probe());
    let verify: serde_json::Value =
        serde_json::from_slice(&command.output().unwrap().stdout).unwrap();
    let stages = verify["tasks"][0]["report"]["stages"].as_array().unwrap();
    let statuses: Vec<String> = stages
        .iter()
        .map(|s| {
            format!(
                "{} {}",
                s["stage"].as_str().unwrap(),
                s["status"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            "worker pass",
            "diff pass",
            "scope fail",
            "secrets skipped",
            "tests skipped",
            "completeness skipped",
            "checks skipped"
        ]
    );
    assert!(
        stages[4]["note"]
            .as_str()
            .unwrap()
            .contains("the scope stage failed and gate.fail_fast is on")
    );
    assert!(!env.probe().join("tests-ran").exists());
    // Control: without fail_fast the same tests do run.
    policy(
        &env,
        "[tests]\ncommand = [\"sh\", \"-c\", \"touch \\\"$PROBE_DIR/tests-ran\\\"\"]\n[sandbox]\nenv_allow = [\"PATH\", \"PROBE_DIR\"]\n",
    );
    let mut command = env.command(&["verify", "--json", &run_id]);
    command.env("PROBE_DIR", env.probe());
    command.output().unwrap();
    assert!(env.probe().join("tests-ran").exists());
}

/// A fresh fake token: `prefix` + `len` random alphanumerics (nothing real-looking is stored in the tests).
fn fake(prefix: &str, len: usize) -> String {
    let mut state = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let tail: String = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            alphabet[(state % alphabet.len() as u64) as usize] as char
        })
        .collect();
    format!("{prefix}{tail}")
}

#[test]
fn secrets_in_test_output_reports_symlinks_and_failed_workers_never_appear_raw() {
    let env = TestEnv::new();
    let in_base = fake("ghp_", 36);
    env.write("fixtures/key.txt", &format!("{in_base}\n"));
    env.git(&["add", "-A"]);
    env.git(&["commit", "-qm", "a key the tests print"]);
    policy(
        &env,
        "[gate]\ncompleteness = \"on\"\n[tests]\ncommand = [\"sh\", \"-c\", \"echo token: $(cat fixtures/key.txt); exit 1\"]\n",
    );
    let worker = env.script(
        "leaky.sh",
        r#"set -eu
a="ghp_$(LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c 36)"
b="ghp_$(LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c 36)"
c="ghp_$(LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c 36)"
d="ghp_$(LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c 36)"
printf '%s\n%s\n%s\n%s\n' "$a" "$b" "$c" "$d" > "$PROBE/raw"
ln -s "$a" src/link
printf 'token = "%s" // ccfan:allow-secret\n' "$b" > src/allowed.rs
printf '## Summary\nx\n## Tests\nx\n## Files Changed\n- %s\n' "$c" > "$CCFAN_REPORT_FILE"
echo "my token is $d"
exit 3"#,
    );
    let run = env.run(&worker_tasks(&env, &worker, ""), &[]);
    let view = run.json();
    let run_id = view["run_id"].as_str().unwrap().to_string();
    assert_ne!(task(&view, "w")["state"], "accepted");
    let verify = env.ccfan(&["verify", &run_id]);
    let verify_json = env.ccfan(&["verify", "--json", &run_id]);
    let status = env.ccfan(&["status", "--json", &run_id]);
    let human = env.ccfan(&["status", &run_id]);
    // The inline marker the worker wrote itself does not hide its secret from the gate.
    let rules: Vec<String> = blocking(&env, &run_id, "w")
        .iter()
        .map(|f| format!("{} {}", f["rule"], f["path"]))
        .collect();
    assert!(
        rules.iter().any(|r| r.contains("src/allowed.rs")),
        "{rules:?}"
    );
    let mut raw: Vec<String> = std::fs::read_to_string(env.probe().join("raw"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    raw.push(in_base);
    let mut state = Vec::new();
    all_files(&env.state_dir(), &mut state);
    // A layer's tree is a checkout of the user's own base commit, as a task tree is (a secret committed at the
    // base is there, as in the repository itself); what workers write never goes there.
    state.retain(|(name, _)| !(name.contains("/ccfan/layers/") && name.contains("/tree/")));
    for secret in &raw {
        for output in [&run, &verify, &verify_json, &status, &human] {
            assert!(
                !output.stdout.contains(secret.as_str())
                    && !output.stderr.contains(secret.as_str()),
                "raw secret in {output:?}"
            );
        }
        for (name, bytes) in &state {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "raw secret stored in {name}"
            );
        }
    }
}

#[test]
fn editing_a_script_the_tests_run_is_flagged() {
    let env = TestEnv::new();
    env.write("tests/run.sh", "exit 0\n");
    env.git(&["add", "-A"]);
    env.git(&["commit", "-qm", "tests"]);
    policy(&env, "[tests]\ncommand = [\"sh\", \"./tests/run.sh\"]\n");
    let worker = env.script("w.sh", "echo 'exit 0 # always green' > tests/run.sh");
    let run = env.run(&worker_tasks(&env, &worker, ""), &[]);
    let view = run.json();
    let run_id = view["run_id"].as_str().unwrap().to_string();
    let verify = env.ccfan(&["verify", "--json", &run_id]).json();
    let diff = &verify["tasks"][0]["report"]["diff"];
    assert!(
        diff["risk_reasons"]
            .to_string()
            .contains("changes a script the gate's test or check commands run"),
        "{diff}"
    );
}
