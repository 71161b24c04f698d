//! A portable attempt, as a container or pod would run it: the base goes out as a bundle, the real `ccfan runner`
//! runs the worker in a folder that knows nothing of the repository, and what comes back is taken in only after
//! its checks. Real git reads both bundles.

use std::path::{Path, PathBuf};
use std::process::Command;

use ccfan::pipeline::portable::{self, Order, PortableError};

use crate::env::TestEnv;

/// The worker: adds a file, changes one, and commits on its own (the runner records the tree regardless).
const WORKER: &str = r###"set -eu
echo "$CCFAN_TASK_ID attempt $CCFAN_ATTEMPT" > src/new.txt
echo changed >> README.md
cat "$CCFAN_TASK_FILE" > /dev/null
echo "## Summary" > "$CCFAN_REPORT_FILE"
git -c user.name=w -c user.email=w@x commit -qam "the worker's own commit"
echo "$SECRET_FROM_ENGINE" > passed.txt
test -z "${HOST_ONLY:-}" && test -d "$HOME" && echo "$PATH" > path.txt"###;

struct Portable {
    env: TestEnv,
    repo: ccfan::git::RepoPaths,
    base: String,
    root: PathBuf,
}

impl Portable {
    fn new() -> Portable {
        let env = TestEnv::new();
        // A base with history: the runner gets its files, never its parents.
        env.write("src/second.txt", "second\n");
        env.git(&["add", "src/second.txt"]);
        env.git(&["commit", "-qm", "second"]);
        let repo = ccfan::git::discover(&env.repo).unwrap();
        let base = env.git(&["rev-parse", "HEAD"]).trim().to_string();
        let root = env.tmp.path().join("remote");
        Portable {
            env,
            repo,
            base,
            root,
        }
    }

    fn order(&self, argv: Vec<String>) -> Order {
        Order {
            schema: 1,
            run_id: "r1".into(),
            task_id: "t".into(),
            attempt: 1,
            goal: "add src/new.txt".into(),
            worker: "w".into(),
            base: self.base.clone(),
            argv,
            env: vec![("MODE".into(), "remote".into())],
            pass_env: vec!["SECRET_FROM_ENGINE".into()],
            timeout_secs: 60,
            log_limit: 1 << 20,
            agent: None,
        }
    }

    /// Packs, then runs the real `ccfan runner` with only PATH and what the engine passes in its environment, in
    /// a folder outside the repository.
    fn run(&self, body: &str) -> (PathBuf, std::process::Output) {
        let worker = self.env.script("remote-worker.sh", body);
        let order = self.order(vec![worker.to_string_lossy().into_owned()]);
        let (input, output, work) = portable::folders(&self.root);
        portable::pack(
            &self.repo,
            &order,
            br#"{"goal": "add src/new.txt"}"#,
            &input,
        )
        .unwrap();
        let ran = Command::new(env!("CARGO_BIN_EXE_ccfan"))
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", self.env.home())
            .env("SECRET_FROM_ENGINE", "passed by the engine")
            .env("HOST_ONLY", "not for the worker")
            .current_dir(self.env.tmp.path())
            .args(["runner", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(&output)
            .arg("--work")
            .arg(&work)
            .output()
            .unwrap();
        (output, ran)
    }

    fn git_ok(&self, args: &[&str]) -> bool {
        Command::new("git")
            .current_dir(&self.env.repo)
            .args(args)
            .output()
            .unwrap()
            .status
            .success()
    }
}

fn manifest(output: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(output.join(portable::MANIFEST)).unwrap()).unwrap()
}

#[test]
fn an_attempt_goes_out_as_a_bundle_runs_elsewhere_and_comes_back_checked() {
    let p = Portable::new();
    let (output, ran) = p.run(WORKER);
    assert!(ran.status.success(), "{ran:?}");
    let printed: serde_json::Value = serde_json::from_slice(&ran.stdout).unwrap();
    let written = manifest(&output);
    assert_eq!(printed, written);
    assert_eq!(
        written["exit"],
        serde_json::json!({"kind": "code", "code": 0}),
        "{written}"
    );
    assert_eq!(written["base"], p.base.as_str());
    let tampered = written["tampered"].as_array().unwrap();
    assert_eq!(tampered.len(), 1, "{written}");
    assert!(
        tampered[0]
            .as_str()
            .unwrap()
            .starts_with("branch ccfan-attempt had been moved to "),
        "the worker's own commit is reported: {written}"
    );
    // Real git reads both bundles in the user's repository.
    let (input, _, _) = portable::folders(&p.root);
    for bundle in [
        input.join(portable::BASE_BUNDLE),
        output.join(portable::ATTEMPT_BUNDLE),
    ] {
        assert!(
            p.git_ok(&["bundle", "verify", bundle.to_str().unwrap()]),
            "git does not accept {}",
            bundle.display()
        );
    }
    let received =
        portable::receive(&p.repo, &output, &p.base, "refs/ccfan/r1/t/remote-1").unwrap();
    assert_eq!(
        received.kept_on.as_deref(),
        Some("refs/ccfan/r1/t/remote-1")
    );
    let commit = written["commit"].as_str().unwrap();
    assert_eq!(
        p.env.git(&["rev-parse", "refs/ccfan/r1/t/remote-1"]).trim(),
        commit
    );
    // One commit on the base, made by ccfan's runner, holding the tree as the worker left it.
    assert_eq!(
        p.env.git(&["rev-parse", &format!("{commit}^")]).trim(),
        p.base
    );
    assert!(
        p.env
            .git(&["log", "-1", "--format=%an %s", commit])
            .starts_with("ccfan ccfan: attempt 1 of r1/t")
    );
    assert_eq!(
        p.env
            .git(&["show", &format!("{commit}:src/new.txt")])
            .trim(),
        "t attempt 1"
    );
    assert!(
        p.env
            .git(&["show", &format!("{commit}:README.md")])
            .contains("changed")
    );
    // The order's variables and the engine's passed ones reached the worker; nothing else of the host did.
    assert_eq!(
        p.env.git(&["show", &format!("{commit}:passed.txt")]).trim(),
        "passed by the engine"
    );
    assert!(
        output
            .join(portable::OUTBOX)
            .join("final_report.md")
            .exists()
    );
}

#[test]
fn what_comes_back_is_refused_unless_it_holds_together() {
    let p = Portable::new();
    let (output, ran) = p.run(WORKER);
    assert!(ran.status.success(), "{ran:?}");
    let good = manifest(&output);
    let refused = |manifest: &serde_json::Value, why: &str| {
        std::fs::write(output.join(portable::MANIFEST), manifest.to_string()).unwrap();
        let error =
            portable::receive(&p.repo, &output, &p.base, "refs/ccfan/r1/t/remote-1").unwrap_err();
        assert!(error.to_string().contains(why), "{error}");
        assert!(!p.git_ok(&["rev-parse", "--verify", "-q", "refs/ccfan/r1/t/remote-1"]));
    };
    let mut other_tree = good.clone();
    other_tree["tree"] = serde_json::json!(p.env.git(&["rev-parse", "HEAD^{tree}"]).trim());
    refused(&other_tree, "not the tree");
    let mut other_base = good.clone();
    other_base["base"] = serde_json::json!("0".repeat(40));
    refused(&other_base, "not from the base");
    let mut other_commit = good.clone();
    other_commit["commit"] = serde_json::json!(p.base);
    refused(&other_commit, "not the one commit");
    refused(&serde_json::json!({"schema": 1}), "is not valid");
    // A bundle that is not one, and a ref outside ccfan's namespace, are refused too.
    std::fs::write(output.join(portable::MANIFEST), good.to_string()).unwrap();
    let error = portable::receive(&p.repo, &output, &p.base, "refs/heads/main").unwrap_err();
    assert!(matches!(error, PortableError::Refused(_)), "{error}");
    std::fs::write(
        output.join(portable::ATTEMPT_BUNDLE),
        "# v3 git bundle\n@object-format=sha1\n",
    )
    .unwrap();
    let error =
        portable::receive(&p.repo, &output, &p.base, "refs/ccfan/r1/t/remote-1").unwrap_err();
    assert!(
        error.to_string().contains("is not a bundle ccfan accepts"),
        "{error}"
    );
}

#[test]
fn a_commit_that_does_not_sit_on_the_base_is_refused() {
    let p = Portable::new();
    // A change made on another commit than the base, bundled as if it came back.
    p.env.write("other.txt", "x\n");
    p.env.git(&["add", "other.txt"]);
    p.env.git(&["commit", "-qm", "elsewhere"]);
    let elsewhere = p.env.git(&["rev-parse", "HEAD"]).trim().to_string();
    p.env.write("src/new.txt", "sneaked\n");
    p.env.git(&["add", "src/new.txt"]);
    p.env.git(&["commit", "-qm", "on top of elsewhere"]);
    let sneaked = p.env.git(&["rev-parse", "HEAD"]).trim().to_string();
    let output = p.root.join("forged");
    std::fs::create_dir_all(&output).unwrap();
    ccfan::git::write_bundle(
        &p.repo,
        &sneaked,
        "refs/heads/ccfan-attempt",
        ccfan::git::BundleOf::Since(&elsewhere),
        &output.join(portable::ATTEMPT_BUNDLE),
    )
    .unwrap();
    let tree = p
        .env
        .git(&["rev-parse", &format!("{sneaked}^{{tree}}")])
        .trim()
        .to_string();
    std::fs::write(
        output.join(portable::MANIFEST),
        serde_json::json!({
            "schema": 1, "base": p.base, "commit": sneaked, "tree": tree,
            "exit": {"kind": "code", "code": 0}, "duration_ms": 1, "output_bytes": 0,
            "log_capped": false, "tampered": []
        })
        .to_string(),
    )
    .unwrap();
    let error =
        portable::receive(&p.repo, &output, &p.base, "refs/ccfan/r1/t/remote-1").unwrap_err();
    assert!(
        error
            .to_string()
            .contains("is not one commit whose only parent is the base"),
        "{error}"
    );
}

#[test]
fn a_worker_that_changes_nothing_comes_back_empty() {
    let p = Portable::new();
    let (output, ran) = p.run("true");
    assert!(ran.status.success(), "{ran:?}");
    assert!(manifest(&output)["commit"].is_null());
    assert!(!output.join(portable::ATTEMPT_BUNDLE).exists());
    let received =
        portable::receive(&p.repo, &output, &p.base, "refs/ccfan/r1/t/remote-1").unwrap();
    assert_eq!(received.kept_on, None);
}

/// The worker inside the container: it sees only loopback, commits on its own, and reads what the engine passed.
const IN_CONTAINER: &str = r#"set -eu
echo "$CCFAN_TASK_ID in a container" > src/new.txt
ls /sys/class/net > net.txt
git add -A && git -c user.name=w -c user.email=w@x commit -qm "the worker's own commit"
echo "$SECRET_FROM_ENGINE" > passed.txt"#;

#[test]
fn the_runner_runs_in_a_podman_container_built_from_the_containerfile() {
    let test = "portable::the_runner_runs_in_a_podman_container_built_from_the_containerfile";
    let podman = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("podman"))
            .find(|p| p.exists())
    });
    let Some(podman) = crate::env::installed(
        test,
        "podman and mmdebstrap (apt-get install -y podman runc mmdebstrap)",
        podman,
    ) else {
        return;
    };
    let tag = format!("localhost/ccfan-worker:test-{}", std::process::id());
    let built = crate::env::podman_env(&mut Command::new(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/worker-image.sh"),
    ))
    .args([&tag, env!("CARGO_BIN_EXE_ccfan")])
    .output()
    .unwrap();
    assert!(built.status.success(), "{built:?}");
    let p = Portable::new();
    let order = p.order(vec!["sh".into(), "/ccfan/in/worker.sh".into()]);
    let (input, output, _) = portable::folders(&p.root);
    portable::pack(&p.repo, &order, br#"{"goal": "add src/new.txt"}"#, &input).unwrap();
    std::fs::write(input.join("worker.sh"), IN_CONTAINER).unwrap();
    std::fs::create_dir_all(&output).unwrap();
    // The image's runner is an unprivileged user: the folder bound in for its output must be writable to it.
    std::fs::set_permissions(&output, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let ran = crate::env::podman_env(&mut Command::new(&podman))
        .args([
            "run",
            "--rm",
            "--network=none",
            "--memory=512m",
            "--pids-limit=256",
        ])
        .arg("-v")
        .arg(format!("{}:/ccfan/in:ro", input.display()))
        .arg("-v")
        .arg(format!("{}:/ccfan/out", output.display()))
        .args(["-e", "SECRET_FROM_ENGINE=passed by the engine", &tag])
        .args([
            "ccfan",
            "runner",
            "--input",
            "/ccfan/in",
            "--output",
            "/ccfan/out",
            "--work",
            "/ccfan/work",
        ])
        .output()
        .unwrap();
    let _ = crate::env::podman_env(&mut Command::new(&podman))
        .args(["rmi", "-f", &tag])
        .output();
    assert!(ran.status.success(), "{ran:?}");
    let received =
        portable::receive(&p.repo, &output, &p.base, "refs/ccfan/r1/t/remote-1").unwrap();
    assert!(received.kept_on.is_some());
    let written = manifest(&output);
    let log = std::fs::read_to_string(output.join(portable::LOG)).unwrap_or_default();
    assert_eq!(written["exit"]["code"], 0, "{written} {log}");
    let commit = written["commit"].as_str().unwrap();
    assert_eq!(
        p.env.git(&["rev-parse", &format!("{commit}^")]).trim(),
        p.base
    );
    assert_eq!(
        p.env
            .git(&["show", &format!("{commit}:src/new.txt")])
            .trim(),
        "t in a container"
    );
    assert_eq!(
        p.env.git(&["show", &format!("{commit}:net.txt")]).trim(),
        "lo",
        "the network was on"
    );
    assert_eq!(
        p.env.git(&["show", &format!("{commit}:passed.txt")]).trim(),
        "passed by the engine"
    );
    assert_eq!(received.manifest.tampered.len(), 1, "{written}");
}

/// A forged bundle: `header` then a pack of exactly `objects` (made by real git), as a container could write it.
fn forge(p: &Portable, output: &Path, commit: &str, tree: &str, objects: &[String]) {
    use std::io::Write;
    let mut packer = Command::new("git")
        .current_dir(&p.env.repo)
        .args(["pack-objects", "--stdout"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    packer
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{}\n", objects.join("\n")).as_bytes())
        .unwrap();
    let pack = packer.wait_with_output().unwrap().stdout;
    std::fs::create_dir_all(output).unwrap();
    let mut bundle = format!(
        "# v2 git bundle\n-{} base\n{commit} refs/heads/ccfan-attempt\n\n",
        p.base
    )
    .into_bytes();
    bundle.extend_from_slice(&pack);
    std::fs::write(output.join(portable::ATTEMPT_BUNDLE), bundle).unwrap();
    std::fs::write(
        output.join(portable::MANIFEST),
        serde_json::json!({
            "schema": 1, "base": p.base, "commit": commit, "tree": tree,
            "exit": {"kind": "code", "code": 0}, "duration_ms": 1, "output_bytes": 0,
            "log_capped": false, "tampered": []
        })
        .to_string(),
    )
    .unwrap();
}

#[test]
fn a_bundle_missing_objects_a_merge_or_a_link_is_refused_and_nothing_lands() {
    let p = Portable::new();
    // A commit right on the base whose new file's content did not come with it.
    p.env.write("src/new.txt", "the content left out\n");
    p.env.git(&["add", "src/new.txt"]);
    p.env.git(&["commit", "-qm", "on the base"]);
    let commit = p.env.git(&["rev-parse", "HEAD"]).trim().to_string();
    let tree = p.env.git(&["rev-parse", "HEAD^{tree}"]).trim().to_string();
    let src = p.env.git(&["rev-parse", "HEAD:src"]).trim().to_string();
    let blob = p
        .env
        .git(&["rev-parse", "HEAD:src/new.txt"])
        .trim()
        .to_string();
    let output = p.root.join("missing");
    forge(
        &p,
        &output,
        &commit,
        &tree,
        &[commit.clone(), tree.clone(), src.clone()],
    );
    // The repository had these objects already: they go, so the forged bundle is read where they are not.
    p.env.git(&["reset", "-q", "--hard", &p.base]);
    p.env.git(&["reflog", "expire", "--expire=now", "--all"]);
    p.env.git(&["gc", "-q", "--prune=now"]);
    let error =
        portable::receive(&p.repo, &output, &p.base, "refs/ccfan/r1/t/remote-1").unwrap_err();
    assert!(
        error.to_string().contains("did not come with it"),
        "{error}"
    );
    assert!(!p.git_ok(&["rev-parse", "--verify", "-q", "refs/ccfan/r1/t/remote-1"]));
    assert!(
        !p.git_ok(&["cat-file", "-e", &commit]),
        "a refused bundle left its objects behind"
    );
    // The same with every object is taken in.
    let whole = p.root.join("whole");
    p.env.write("src/new.txt", "the content left out\n");
    p.env.git(&["add", "src/new.txt"]);
    p.env.git(&["commit", "-qm", "on the base"]);
    let again = p.env.git(&["rev-parse", "HEAD"]).trim().to_string();
    forge(
        &p,
        &whole,
        &again,
        &tree,
        &[again.clone(), tree.clone(), src, blob],
    );
    portable::receive(&p.repo, &whole, &p.base, "refs/ccfan/r1/t/remote-2").unwrap();
    // A merge whose second parent is history of its own.
    p.env.git(&["checkout", "-q", "-b", "side", &p.base]);
    p.env.write("side.txt", "side\n");
    p.env.git(&["add", "side.txt"]);
    p.env.git(&["commit", "-qm", "side"]);
    p.env.git(&["checkout", "-q", "main"]);
    p.env.git(&["reset", "-q", "--hard", &p.base]);
    p.env
        .git(&["merge", "-q", "--no-ff", "-m", "merge", "side"]);
    let merge = p.env.git(&["rev-parse", "HEAD"]).trim().to_string();
    let merged = p.root.join("merge");
    let objects: Vec<String> = p
        .env
        .git(&["rev-list", "--objects", &format!("{}..{merge}", p.base)])
        .lines()
        .map(|line| line.split(' ').next().unwrap().to_string())
        .collect();
    let merge_tree = p.env.git(&["rev-parse", "HEAD^{tree}"]).trim().to_string();
    forge(&p, &merged, &merge, &merge_tree, &objects);
    let error =
        portable::receive(&p.repo, &merged, &p.base, "refs/ccfan/r1/t/remote-3").unwrap_err();
    assert!(
        error.to_string().contains("only parent is the base"),
        "{error}"
    );
    // A bundle that is a link to a file of the host is never read through.
    let linked = p.root.join("linked");
    forge(&p, &linked, &merge, &merge_tree, &objects);
    std::fs::remove_file(linked.join(portable::ATTEMPT_BUNDLE)).unwrap();
    std::os::unix::fs::symlink(
        p.env.repo.join("README.md"),
        linked.join(portable::ATTEMPT_BUNDLE),
    )
    .unwrap();
    let error =
        portable::receive(&p.repo, &linked, &p.base, "refs/ccfan/r1/t/remote-4").unwrap_err();
    assert!(error.to_string().contains("cannot open"), "{error}");
    assert!(!error.to_string().contains("test repo"), "{error}");
}
