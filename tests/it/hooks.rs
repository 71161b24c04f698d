//! The gate in local git hooks, driven by real `git commit`, `git merge` and `git push` in temp repositories:
//! secrets and denied paths are stopped (redacted, with the bypass named), clean work passes, and ccfan's own
//! commits run no hook. (Installing, chaining and failing closed: `hooks_install.rs`.)

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::env::{Ran, TestEnv, hermetic, path_first};

/// A GitHub token shaped like a real one (not a placeholder the scanner ignores).
pub(crate) const TOKEN: &str = "ghp_R7x9Qm2LpV4tZ8wK1nB6yH3jF5dS0aE9cU2i";
pub(crate) const TOKEN_SHOWN: &str = "ghp_…[REDACTED]…2i";

/// Runs git in `dir` (hooks enabled) with `extra_path` first on PATH; never asserts.
pub(crate) fn git_in(env: &TestEnv, dir: &Path, args: &[&str], extra_path: Option<&Path>) -> Ran {
    let mut command = Command::new("git");
    hermetic(&mut command, &env.home());
    if let Some(extra) = extra_path {
        path_first(&mut command, extra);
    }
    command.current_dir(dir).args(args).output().unwrap().into()
}

pub(crate) fn try_git(env: &TestEnv, args: &[&str]) -> Ran {
    git_in(env, &env.repo, args, None)
}

pub(crate) fn head(env: &TestEnv) -> String {
    env.git(&["rev-parse", "HEAD"]).trim().to_string()
}

pub(crate) fn install(env: &TestEnv) -> Ran {
    let ran = env.ccfan(&["hooks", "install"]);
    assert_eq!(ran.code, 0, "{ran:?}");
    ran
}

pub(crate) fn assert_blocked(ran: &Ran, hook: &str, bypass: &str) {
    assert_ne!(ran.code, 0, "{ran:?}");
    assert!(
        ran.stderr
            .contains(&format!("stopped by the gate ({hook} hook)")),
        "{ran:?}"
    );
    assert!(ran.stderr.contains(bypass), "{ran:?}");
    assert!(
        !ran.stderr.contains(TOKEN) && !ran.stdout.contains(TOKEN),
        "{ran:?}"
    );
}

pub(crate) fn make_executable(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_planted_secret_is_stopped_redacted_and_a_clean_commit_passes() {
    let env = TestEnv::new();
    install(&env);
    let before = head(&env);
    env.write("config/prod.env", &format!("GITHUB_TOKEN={TOKEN}\n"));
    env.git(&["add", "config/prod.env"]);
    let ran = try_git(&env, &["commit", "-qm", "add config"]);
    assert_blocked(&ran, "pre-commit", "git commit --no-verify");
    assert!(ran.stderr.contains(TOKEN_SHOWN), "{ran:?}");
    assert!(ran.stderr.contains("config/prod.env:1"), "{ran:?}");
    assert!(ran.stderr.contains("rotate the key"), "{ran:?}");
    assert_eq!(head(&env), before, "nothing was committed");
    // The same finding from the shell, in every format, still redacted.
    let json = env.ccfan(&["verify", "--staged", "--json"]);
    assert_eq!(json.code, 1, "{json:?}");
    assert_eq!(json.json()["changes"][0]["passed"], false);
    assert_eq!(json.json()["changes"][0]["kind"], "staged");
    let sarif = env.ccfan(&["verify", "--staged", "--sarif"]);
    assert_eq!(sarif.code, 1);
    assert!(
        sarif.stdout.contains("github-pat") && !sarif.stdout.contains(TOKEN),
        "{sarif:?}"
    );

    // `git commit -a` judges git's temporary index (GIT_INDEX_FILE), not the repository's own.
    env.git(&["rm", "-q", "--cached", "config/prod.env"]);
    std::fs::remove_file(env.repo.join("config/prod.env")).unwrap();
    env.write("src/lib.txt", &format!("one\ntoken = \"{TOKEN}\"\n"));
    let ran = try_git(&env, &["commit", "-qam", "edit lib"]);
    assert_blocked(&ran, "pre-commit", "git commit --no-verify");
    assert!(ran.stderr.contains("src/lib.txt:2"), "{ran:?}");
    assert_eq!(head(&env), before);

    env.write("src/lib.txt", "one\ntwo\nthree\nfour\n");
    let ran = try_git(&env, &["commit", "-qam", "clean edit"]);
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(ran.stderr.is_empty(), "a passing hook is silent: {ran:?}");
    assert_ne!(head(&env), before);
    let clean = env.ccfan(&["verify", "--commit", "HEAD"]);
    assert_eq!(clean.code, 0, "{clean:?}");
    assert!(clean.stdout.contains("PASS"), "{clean:?}");
}

#[test]
fn a_commit_touching_a_denied_path_is_stopped() {
    let env = TestEnv::new();
    env.commit_policy("[hooks]\ndenied = [\"deploy/**\"]\n");
    install(&env);
    let before = head(&env);
    env.write("deploy/prod.yml", "replicas: 3\n");
    env.write("src/lib.txt", "one\n");
    env.git(&["add", "-A"]);
    let ran = try_git(&env, &["commit", "-qm", "deploy"]);
    assert_blocked(&ran, "pre-commit", "git commit --no-verify");
    assert!(
        ran.stderr.contains("scope") && ran.stderr.contains("deploy/prod.yml"),
        "{ran:?}"
    );
    assert!(ran.stderr.contains("hooks.denied"), "{ran:?}");
    assert_eq!(head(&env), before);
    // The person's own files (ccfan.toml, CI) are theirs to change: only [hooks] globs apply.
    env.git(&["rm", "-q", "--cached", "deploy/prod.yml"]);
    env.write(
        "ccfan.toml",
        "[hooks]\ndenied = [\"deploy/**\", \"*.pem\"]\n",
    );
    env.write(".github/workflows/ci.yml", "on: push\n");
    env.git(&["add", "ccfan.toml", ".github", "src/lib.txt"]);
    let ran = try_git(&env, &["commit", "-qm", "policy and CI"]);
    assert_eq!(ran.code, 0, "{ran:?}");
    // The hooks read the policy as committed: an uncommitted edit cannot switch the gate off.
    env.write("ccfan.toml", "[hooks]\ndenied = []\n");
    env.write("deploy/prod.yml", "replicas: 4\n");
    env.git(&["add", "deploy/prod.yml"]);
    let ran = try_git(&env, &["commit", "-qm", "deploy again"]);
    assert_blocked(&ran, "pre-commit", "git commit --no-verify");
    env.git(&["rm", "-q", "--cached", "deploy/prod.yml"]);
    // A bad [hooks] section, once committed, stops the next commit with the file, key and fix, and says the gate
    // did not run.
    env.write("ccfan.toml", "[hooks]\nstages = [\"completeness\"]\n");
    env.git(&["add", "ccfan.toml"]);
    env.git(&["commit", "-q", "--no-verify", "-m", "bad policy"]);
    env.write("d.txt", "d\n");
    env.git(&["add", "d.txt"]);
    let ran = try_git(&env, &["commit", "-qm", "after the bad policy"]);
    assert_ne!(ran.code, 0);
    assert!(
        ran.stderr.contains("ccfan.toml@HEAD")
            && ran.stderr.contains("hooks.stages")
            && ran.stderr.contains("could not run"),
        "{ran:?}"
    );
}

#[test]
fn a_merge_that_brings_a_secret_is_stopped_by_pre_merge_commit() {
    let env = TestEnv::new();
    install(&env);
    // The branch added a token and removed it again: its tree is clean, its history is not.
    env.git(&["checkout", "-qb", "feature"]);
    env.write("notes.txt", &format!("{TOKEN}\n"));
    env.git(&["add", "notes.txt"]);
    env.git(&["commit", "-q", "--no-verify", "-m", "oops"]);
    env.git(&["rm", "-q", "notes.txt"]);
    env.git(&["commit", "-q", "--no-verify", "-m", "remove it"]);
    env.write("feature.txt", "feature\n");
    env.git(&["add", "feature.txt"]);
    env.git(&["commit", "-q", "-m", "the feature"]);
    env.git(&["checkout", "-q", "main"]);
    env.write("main.txt", "main moved on\n");
    env.git(&["add", "main.txt"]);
    env.git(&["commit", "-qm", "main"]);
    let before = head(&env);
    let ran = try_git(&env, &["merge", "--no-edit", "feature"]);
    assert_blocked(&ran, "pre-merge-commit", "git merge --no-verify");
    assert!(ran.stderr.contains("added in commit"), "{ran:?}");
    assert!(ran.stderr.contains("stays in history"), "{ran:?}");
    assert_eq!(head(&env), before, "no merge commit was made");
    // git leaves the merge waiting; committing it runs pre-commit, which reads MERGE_HEAD and stops it too.
    let ran = try_git(&env, &["commit", "-qm", "merge anyway"]);
    assert_blocked(&ran, "pre-commit", "git commit --no-verify");
    env.git(&["merge", "--abort"]);

    // A clean branch merges.
    env.git(&["checkout", "-qb", "clean", "main"]);
    env.write("clean.txt", "clean\n");
    env.git(&["add", "clean.txt"]);
    env.git(&["commit", "-qm", "clean"]);
    env.git(&["checkout", "-q", "main"]);
    let ran = try_git(&env, &["merge", "--no-ff", "--no-edit", "clean"]);
    assert_eq!(ran.code, 0, "{ran:?}");
    assert_ne!(head(&env), before);
}

#[test]
fn a_push_with_a_secret_in_an_older_commit_is_stopped_and_a_clean_push_passes() {
    let env = TestEnv::new();
    let remote = env.tmp.path().join("remote.git");
    env.git(&["init", "-q", "--bare", remote.to_str().unwrap()]);
    env.git(&["remote", "add", "origin", remote.to_str().unwrap()]);
    install(&env);
    // The first push of a branch: everything the remote lacks, down to the root commit.
    let ran = try_git(&env, &["push", "-q", "origin", "main"]);
    assert_eq!(ran.code, 0, "{ran:?}");
    env.git(&["fetch", "-q", "origin"]);

    env.write("a.txt", &format!("key: {TOKEN}\n"));
    env.git(&["add", "a.txt"]);
    env.git(&["commit", "-q", "--no-verify", "-m", "older, with the key"]);
    env.write("a.txt", "key: from the vault\n");
    env.git(&["commit", "-qam", "newer, without it"]);
    let ran = try_git(&env, &["push", "origin", "main"]);
    assert_blocked(&ran, "pre-push", "git push --no-verify");
    assert!(
        ran.stderr
            .contains("push refs/heads/main → origin refs/heads/main"),
        "{ran:?}"
    );
    assert!(ran.stderr.contains("added in commit"), "{ran:?}");
    assert!(ran.stderr.contains("ccfan verify --range"), "{ran:?}");
    let remote_main =
        |env: &TestEnv| env.git(&["ls-remote", remote.to_str().unwrap(), "refs/heads/main"]);
    let pushed_before = remote_main(&env);
    // A new branch with the same history is judged against what the remote has: blocked too.
    let ran = try_git(&env, &["push", "origin", "main:refs/heads/other"]);
    assert_blocked(&ran, "pre-push", "git push --no-verify");

    // Rewrite the history without the key: the push passes.
    env.git(&["reset", "-q", "--hard", "origin/main"]);
    env.write("a.txt", "key: from the vault\n");
    env.git(&["add", "a.txt"]);
    env.git(&["commit", "-qm", "clean"]);
    let ran = try_git(&env, &["push", "-q", "origin", "main"]);
    assert_eq!(ran.code, 0, "{ran:?}");
    assert_ne!(remote_main(&env), pushed_before);
    // Deleting a branch pushes nothing to judge.
    let ran = try_git(&env, &["push", "-q", "origin", "main:refs/heads/gone"]);
    assert_eq!(ran.code, 0, "{ran:?}");
    let ran = try_git(&env, &["push", "-q", "origin", ":refs/heads/gone"]);
    assert_eq!(ran.code, 0, "{ran:?}");
}

#[test]
fn verify_judges_ranges_commit_by_commit_and_names_bad_input() {
    let env = TestEnv::new();
    let base = head(&env);
    env.write("a.txt", &format!("{TOKEN}\n"));
    env.git(&["add", "a.txt"]);
    env.git(&["commit", "-qm", "key"]);
    let leaked = head(&env);
    env.git(&["rm", "-q", "a.txt"]);
    env.git(&["commit", "-qm", "no key"]);
    let range = env.ccfan(&["verify", "--json", "--range", &format!("{base}..HEAD")]);
    assert_eq!(range.code, 1, "{range:?}");
    let change = &range.json()["changes"][0];
    assert_eq!(change["kind"], "range");
    assert_eq!(
        change["report"]["diff"]["files_changed"], 0,
        "the net change is empty: {change}"
    );
    let finding = &change["verdict"]["findings"][0];
    assert!(
        finding["message"].as_str().unwrap().contains(&leaked[..12]),
        "{finding}"
    );
    assert!(!range.stdout.contains(TOKEN));
    let last = env.ccfan(&["verify", "--commit", "HEAD"]);
    assert_eq!(last.code, 0, "the last commit alone only deletes: {last:?}");
    let first = env.ccfan(&["verify", "--commit", &leaked]);
    assert_eq!(first.code, 1, "{first:?}");
    for (args, key) in [
        (vec!["verify", "--range", "nope..HEAD"], "--range"),
        (vec!["verify", "--range", "HEAD"], "--range"),
        (vec!["verify", "--commit", "nope"], "--commit"),
    ] {
        let ran = env.ccfan(&args);
        assert_eq!(ran.code, 2, "{ran:?}");
        assert!(ran.stderr.contains(key), "{ran:?}");
    }
    let ran = env.ccfan(&["verify", "--staged", "--range", "a..b"]);
    assert_eq!(ran.code, 2, "one thing at a time: {ran:?}");
    // A secret in a file's name is redacted wherever the path is shown.
    env.write(&format!("keys/{TOKEN}.txt"), "nothing here\n");
    env.git(&["add", "keys"]);
    for format in [&["--json"][..], &["--sarif"], &[]] {
        let mut args = vec!["verify", "--staged"];
        args.extend_from_slice(format);
        let ran = env.ccfan(&args);
        assert!(
            !ran.stdout.contains(TOKEN) && !ran.stderr.contains(TOKEN),
            "{ran:?}"
        );
        assert!(
            ran.stdout.contains("keys/") || format == ["--sarif"],
            "{ran:?}"
        );
    }
}

#[test]
fn ccfans_own_commits_run_no_hooks_and_a_hand_merge_meets_the_gate() {
    let env = TestEnv::new();
    env.commit_policy("[run]\nmax_reworks = 0\n");
    let marker = env.tmp.path().join("hooks.log");
    for hook in [
        "pre-commit",
        "pre-merge-commit",
        "post-commit",
        "post-checkout",
    ] {
        make_executable(
            &env.repo.join(".git/hooks").join(hook),
            &format!("#!/bin/sh\necho {hook} >> '{}'\n", marker.display()),
        );
    }
    install(&env);
    let worker = env.script("w.sh", &format!("echo '{TOKEN}' > leaked.txt"));
    let tasks = env.tasks(&format!(
        "[[task]]\nid = \"t\"\ngoal = \"write a file\"\nworker = \"w\"\n[workers.w]\nkind = \"command\"\ncommand = [\"{}\"]\n",
        worker.display()
    ));
    let ran = env.run(&tasks, &["--no-merge"]);
    let view = ran.json();
    let run_id = view["run_id"].as_str().unwrap().to_string();
    assert!(
        !marker.exists(),
        "ccfan's commits, worktrees and checks ran no hook: {}",
        std::fs::read_to_string(&marker).unwrap_or_default()
    );
    // The task's branch no longer holds the secret-bearing attempt (a push could publish it); its salvage ref
    // does, and merging that by hand meets the same gate.
    let branch = format!("ccfan/{run_id}/t");
    assert_eq!(env.git(&["log", "--format=%s", &branch]).lines().count(), 2);
    let salvage = format!("refs/ccfan/{run_id}/t/attempt-1");
    assert!(env.git(&["log", "--format=%s", &salvage]).lines().count() > 2);
    let before = head(&env);
    let ran = try_git(&env, &["merge", "--no-ff", "--no-edit", &salvage]);
    assert_blocked(&ran, "pre-merge-commit", "git merge --no-verify");
    assert!(
        std::fs::read_to_string(&marker)
            .unwrap()
            .contains("pre-merge-commit")
    );
    assert_eq!(head(&env), before);
}

#[test]
fn tests_in_the_hooks_stages_run_on_the_staged_tree() {
    let env = TestEnv::new();
    env.commit_policy(
        "[tests]\ncommand = [\"sh\", \"-c\", \"test ! -e broken.txt\"]\n[hooks]\nstages = [\"secrets\", \"tests\"]\n",
    );
    install(&env);
    let before = head(&env);
    env.write("broken.txt", "x\n");
    env.git(&["add", "broken.txt"]);
    let ran = try_git(&env, &["commit", "-qm", "breaks the tests"]);
    assert_blocked(&ran, "pre-commit", "git commit --no-verify");
    assert!(ran.stderr.contains("tests"), "{ran:?}");
    assert_eq!(head(&env), before);
    env.git(&["rm", "-q", "--cached", "broken.txt"]);
    std::fs::remove_file(env.repo.join("broken.txt")).unwrap();
    env.write("fine.txt", "x\n");
    env.git(&["add", "fine.txt"]);
    let ran = try_git(&env, &["commit", "-qm", "keeps them green"]);
    assert_eq!(ran.code, 0, "{ran:?}");
}
