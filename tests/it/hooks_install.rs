//! Installing ccfan's hooks: a user's own hook keeps running and comes back exactly on uninstall,
//! `core.hooksPath` is honoured, what cannot be chained is refused with what to do, a missing or crashing ccfan
//! fails closed, and the pre-commit framework runs ccfan's hooks from its manifest.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::env::{Ran, TestEnv, hermetic, path_first};
use crate::hooks::{
    TOKEN, TOKEN_SHOWN, assert_blocked, git_in, head, install, make_executable, try_git,
};

#[test]
fn a_users_hook_keeps_running_and_uninstall_restores_it_exactly() {
    let env = TestEnv::new();
    let hooks = env.repo.join(".git/hooks");
    let marker = env.tmp.path().join("user-hook.log");
    let pre_commit = format!(
        "#!/bin/sh\necho \"pre-commit ran\" >> '{}'\ntest ! -e STOP\n",
        marker.display()
    );
    let pre_push = format!(
        "#!/bin/sh\necho \"pre-push $1\" >> '{m}'\ncat >> '{m}'\n",
        m = marker.display()
    );
    make_executable(&hooks.join("pre-commit"), &pre_commit);
    make_executable(&hooks.join("pre-push"), &pre_push);
    let shared = env.tmp.path().join("team-hooks/merge-check");
    make_executable(&shared, &pre_commit);
    std::os::unix::fs::symlink(&shared, hooks.join("pre-merge-commit")).unwrap();

    // The same hook named twice is installed once: the user's hook is moved aside exactly once.
    let ran = env.ccfan(&[
        "hooks",
        "install",
        "--hook",
        "pre-commit",
        "--hook",
        "pre-merge-commit",
        "--hook",
        "pre-push",
        "--hook",
        "pre-commit",
    ]);
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(ran.stdout.contains("runs first"), "{ran:?}");
    assert_eq!(
        std::fs::read_to_string(hooks.join("ccfan-chained/pre-commit")).unwrap(),
        pre_commit
    );
    let status = env.ccfan(&["hooks", "status", "--json"]).json();
    let states: Vec<&str> = status["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|hook| hook["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["installed"; 3], "{status}");
    assert!(status["hooks"][0]["chained"].is_string(), "{status}");
    // Installing again changes nothing.
    let again = env.ccfan(&["hooks", "install", "--json"]).json();
    assert!(
        again["hooks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|hook| hook["outcome"] == "unchanged"),
        "{again}"
    );

    // The user's hook runs first and can still stop a commit on its own.
    env.write("b.txt", "b\n");
    env.git(&["add", "b.txt"]);
    let ran = try_git(&env, &["commit", "-qm", "b"]);
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(
        std::fs::read_to_string(&marker)
            .unwrap()
            .contains("pre-commit ran")
    );
    env.write("STOP", "");
    env.write("c.txt", "c\n");
    env.git(&["add", "c.txt"]);
    let ran = try_git(&env, &["commit", "-qm", "c"]);
    assert_ne!(ran.code, 0, "the user's hook said no: {ran:?}");
    std::fs::remove_file(env.repo.join("STOP")).unwrap();

    // pre-push: the user's hook gets git's arguments and ref lines too.
    let remote = env.tmp.path().join("remote.git");
    env.git(&["init", "-q", "--bare", remote.to_str().unwrap()]);
    env.git(&["remote", "add", "origin", remote.to_str().unwrap()]);
    let ran = try_git(&env, &["push", "-q", "origin", "main"]);
    assert_eq!(ran.code, 0, "{ran:?}");
    let log = std::fs::read_to_string(&marker).unwrap();
    assert!(
        log.contains("pre-push origin") && log.contains("refs/heads/main "),
        "{log}"
    );

    let ran = env.ccfan(&["hooks", "uninstall"]);
    assert_eq!(ran.code, 0, "{ran:?}");
    assert_eq!(
        std::fs::read_to_string(hooks.join("pre-commit")).unwrap(),
        pre_commit
    );
    assert_eq!(
        std::fs::read_to_string(hooks.join("pre-push")).unwrap(),
        pre_push
    );
    let mode = std::fs::metadata(hooks.join("pre-commit"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    assert_eq!(
        std::fs::read_link(hooks.join("pre-merge-commit")).unwrap(),
        shared,
        "a symlinked hook comes back as the same link"
    );
    let leftovers: Vec<String> = std::fs::read_dir(&hooks)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("ccfan"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let status = env.ccfan(&["hooks", "status", "--json"]).json();
    assert_eq!(status["hooks"][0]["state"], "other", "{status}");
}

#[test]
fn core_hooks_path_is_honoured_and_a_tracked_hook_is_left_alone() {
    let env = TestEnv::new();
    env.git(&["config", "core.hooksPath", ".local-hooks"]);
    env.write(".gitignore", "*.log\n.local-hooks/\n");
    env.git(&["commit", "-qam", "ignore local hooks"]);
    let status = env.ccfan(&["hooks", "status", "--json"]).json();
    assert_eq!(status["dir"]["hooks_path"], ".local-hooks", "{status}");
    install(&env);
    assert!(env.repo.join(".local-hooks/pre-commit").exists());
    assert!(!env.repo.join(".git/hooks/pre-commit").exists());
    env.write("k.txt", &format!("{TOKEN}\n"));
    env.git(&["add", "k.txt"]);
    let ran = try_git(&env, &["commit", "-qm", "k"]);
    assert_blocked(&ran, "pre-commit", "git commit --no-verify");
    env.git(&["rm", "-q", "--cached", "k.txt"]);

    // A hooks folder tracked in the project: ccfan changes none of its files, and installs nothing at all.
    let tracked = TestEnv::new();
    make_executable(
        &tracked.repo.join(".githooks/pre-push"),
        "#!/bin/sh\nexit 0\n",
    );
    tracked.git(&["add", ".githooks"]);
    tracked.git(&["commit", "-qm", "team hooks"]);
    tracked.git(&["config", "core.hooksPath", ".githooks"]);
    let ran = tracked.ccfan(&["hooks", "install"]);
    assert_eq!(ran.code, 2, "{ran:?}");
    assert!(
        ran.stderr.contains("your project") && ran.stderr.contains("ccfan hooks run pre-commit"),
        "{ran:?}"
    );
    let names: Vec<String> = std::fs::read_dir(tracked.repo.join(".githooks"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["pre-push"], "nothing half installed");
}

#[test]
fn a_missing_or_crashing_ccfan_stops_the_commit_and_says_so() {
    let env = TestEnv::new();
    install(&env);
    let hook = env.repo.join(".git/hooks/pre-commit");
    let script = std::fs::read_to_string(&hook).unwrap();
    let gone = env.tmp.path().join("uninstalled/ccfan");
    let baked = ccfan::hooks::baked_binary(&script).unwrap();
    std::fs::write(&hook, script.replace(&baked, gone.to_str().unwrap())).unwrap();
    env.write("x.txt", "x\n");
    env.git(&["add", "x.txt"]);
    let before = head(&env);
    // No ccfan at the baked path and none on PATH.
    let empty_bin = env.tmp.path().join("empty-bin");
    std::fs::create_dir_all(&empty_bin).unwrap();
    let mut command = Command::new("git");
    hermetic(&mut command, &env.home());
    let which_git = Command::new("sh")
        .args(["-c", "command -v git"])
        .output()
        .unwrap();
    let git_program = PathBuf::from(String::from_utf8(which_git.stdout).unwrap().trim());
    let git_dir = git_program.parent().unwrap();
    assert!(
        !git_dir.join("ccfan").exists(),
        "a ccfan beside git would make this test meaningless"
    );
    let output = command
        .env(
            "PATH",
            format!("{}:{}:/bin", empty_bin.display(), git_dir.display()),
        )
        .current_dir(&env.repo)
        .args(["commit", "-qm", "x"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("cannot find ccfan") && stderr.contains("--no-verify"),
        "{stderr}"
    );
    assert_eq!(head(&env), before);

    // A ccfan that crashes (a stand-in on PATH that dies by a signal) is not a pass either.
    make_executable(&empty_bin.join("ccfan"), "#!/bin/sh\nkill -9 $$\n");
    let ran = git_in(&env, &env.repo, &["commit", "-qm", "x"], Some(&empty_bin));
    assert_ne!(ran.code, 0, "{ran:?}");
    assert!(ran.stderr.contains("could not run"), "{ran:?}");
    assert_eq!(head(&env), before);
    // The explicit bypass still works.
    let ran = try_git(&env, &["commit", "-q", "--no-verify", "-m", "x"]);
    assert_eq!(ran.code, 0, "{ran:?}");
}

#[test]
fn the_pre_commit_framework_runs_ccfans_hooks_from_the_repository() {
    let Some(pythonpath) = crate::env::installed(
        "the_pre_commit_framework_runs_ccfans_hooks_from_the_repository",
        "the pre-commit framework (CCFAN_PRE_COMMIT_PYTHONPATH)",
        crate::env::env_path("CCFAN_PRE_COMMIT_PYTHONPATH"),
    ) else {
        return;
    };
    let pythonpath = pythonpath.to_string_lossy().into_owned();
    let source = Path::new(env!("CARGO_MANIFEST_DIR"));
    let env = TestEnv::new();
    let bin = Path::new(env!("CARGO_BIN_EXE_ccfan"))
        .parent()
        .unwrap()
        .to_path_buf();
    let pre_commit = |args: &[&str]| {
        let mut command = Command::new("python3");
        hermetic(&mut command, &env.home());
        path_first(&mut command, &bin);
        Ran::from(
            command
                .env("PYTHONPATH", &pythonpath)
                .env("PRE_COMMIT_HOME", env.tmp.path().join("pre-commit-home"))
                .current_dir(&env.repo)
                .arg("-m")
                .arg("pre_commit")
                .args(args)
                .output()
                .unwrap(),
        )
    };
    // The manifest (including the build-from-source hooks) is valid for pre-commit itself.
    let manifest = source.join(".pre-commit-hooks.yaml");
    let ran = pre_commit(&["validate-manifest", manifest.to_str().unwrap()]);
    assert_eq!(ran.code, 0, "{ran:?}");

    let repo_url = source.to_str().unwrap();
    env.write("clean.txt", "clean\n");
    env.git(&["add", "clean.txt"]);
    let ran = pre_commit(&["try-repo", repo_url, "ccfan-system"]);
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(ran.stdout.contains("Passed"), "{ran:?}");
    env.git(&["commit", "-qm", "clean"]);
    let clean = head(&env);

    env.write("leak.txt", &format!("{TOKEN}\n"));
    env.git(&["add", "leak.txt"]);
    let ran = pre_commit(&["try-repo", repo_url, "ccfan-system"]);
    assert_eq!(ran.code, 1, "{ran:?}");
    assert!(
        ran.stdout.contains("Failed") && ran.stdout.contains(TOKEN_SHOWN),
        "{ran:?}"
    );
    assert!(!ran.stdout.contains(TOKEN) && !ran.stderr.contains(TOKEN));

    // The push stage gets its range from the framework's variables.
    env.git(&["commit", "-q", "--no-verify", "-m", "leak"]);
    let leaked = head(&env);
    let ran = pre_commit(&[
        "try-repo",
        repo_url,
        "ccfan-push-system",
        "--hook-stage",
        "pre-push",
        "--from-ref",
        &clean,
        "--to-ref",
        &leaked,
    ]);
    assert_eq!(ran.code, 1, "{ran:?}");
    assert!(ran.stdout.contains("added in commit"), "{ran:?}");
}

#[test]
fn hook_managers_shared_folders_and_project_folders_are_refused_with_what_to_do() {
    // husky runs hooks by their file name: chaining would break it.
    let env = TestEnv::new();
    env.write(".husky/_/.gitignore", "*\n");
    make_executable(
        &env.repo.join(".husky/_/pre-commit"),
        "#!/usr/bin/env sh\n. \"$(dirname \"$0\")/h\"\n# husky\n",
    );
    env.git(&["config", "core.hooksPath", ".husky/_"]);
    let ran = env.ccfan(&["hooks", "install"]);
    assert_eq!(ran.code, 2, "{ran:?}");
    assert!(
        ran.stderr.contains("husky") && ran.stderr.contains("ccfan hooks run pre-commit"),
        "{ran:?}"
    );
    assert!(!env.repo.join(".husky/_/ccfan-chained").exists());

    // A hooks folder from the user's global config is shared by every repository: only with --shared.
    let env = TestEnv::new();
    let shared = env.tmp.path().join("global-hooks");
    env.git(&[
        "config",
        "--global",
        "core.hooksPath",
        shared.to_str().unwrap(),
    ]);
    let ran = env.ccfan(&["hooks", "install"]);
    assert_eq!(ran.code, 2, "{ran:?}");
    assert!(ran.stderr.contains("--shared"), "{ran:?}");
    assert!(!shared.join("pre-commit").exists());
    let ran = env.ccfan(&["hooks", "install", "--shared"]);
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(shared.join("pre-commit").exists());
}
