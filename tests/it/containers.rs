//! Workers in containers (`[sandbox] backend = "podman"`): the same tasks file fans out to Podman containers
//! through its Docker-compatible API, one per attempt, and the same gate, states, reworks and landing follow.
//! Podman here serves the API itself (`podman system service`); the image is built from local files.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::env::{TestEnv, task};

/// `podman system service` on a socket of its own, stopped when dropped; and the worker image, removed then.
pub struct Engine {
    /// The podman binary.
    pub podman: PathBuf,
    service: Child,
    socket: PathBuf,
    image: String,
}

/// Podman and a worker image built for one test from the repository's Containerfile (`None`: podman is not
/// installed and the tests are not required to run it). The caller removes the image.
pub fn worker_image(test: &str) -> Option<(PathBuf, String)> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("podman"))
            .find(|p| p.exists())
    });
    let podman = crate::env::installed(
        test,
        "podman and mmdebstrap (apt-get install -y podman runc mmdebstrap)",
        found,
    )?;
    // One image per test: each removes its own when done.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let image = format!("localhost/ccfan-worker:it-{}-{n}", std::process::id());
    let built = crate::env::podman_env(&mut Command::new(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/worker-image.sh"),
    ))
    .args([&image, env!("CARGO_BIN_EXE_ccfan")])
    .output()
    .unwrap();
    assert!(built.status.success(), "{built:?}");
    Some((podman, image))
}

/// Removes a test's image.
pub fn remove_image(podman: &Path, image: &str) {
    let _ = crate::env::podman_env(&mut Command::new(podman))
        .args(["rmi", "-f", image])
        .output();
}

/// A command worker run by `sh` in the container.
pub fn worker(name: &str, script: &str) -> String {
    let script = script.replace('\\', "\\\\").replace('"', "\\\"");
    format!("[workers.{name}]\nkind = \"command\"\ncommand = [\"sh\", \"-c\", \"{script}\"]\n")
}

impl Engine {
    /// The API for workers of a worker image built for `test` (`None`: podman is not installed).
    pub fn start(test: &str, dir: &Path) -> Option<Engine> {
        Some(Engine::with_image(dir, worker_image(test)?))
    }

    /// The API on a socket in `dir`, for workers of `image` (removed when the engine is dropped).
    pub fn with_image(dir: &Path, (podman, image): (PathBuf, String)) -> Engine {
        let socket = dir.join("podman.sock");
        let service = crate::env::podman_env(&mut Command::new(&podman))
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", socket.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while !socket.exists() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the Podman API did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Engine {
            podman,
            service,
            socket,
            image,
        }
    }

    /// A policy running workers in this engine's containers, plus `extra`.
    pub fn policy(&self, extra: &str) -> String {
        format!(
            "[run]\nmax_reworks = 1\n\n[sandbox]\nbackend = \"podman\"\nmemory = \"512MiB\"\npids = 256\n\n\
             [sandbox.container]\nimage = \"{}\"\nsocket = \"unix://{}\"\n{extra}",
            self.image,
            self.socket.display()
        )
    }

    /// The worker image.
    pub fn image(&self) -> &str {
        &self.image
    }

    /// Containers of `run` still there.
    pub fn left(&self, run: &str) -> String {
        let listed = crate::env::podman_env(&mut Command::new(&self.podman))
            .args([
                "ps",
                "-a",
                "-q",
                "--filter",
                &format!("label=io.ccfan.run={run}"),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&listed.stdout).trim().to_string()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.service.kill();
        let _ = self.service.wait();
        remove_image(&self.podman, &self.image);
    }
}

#[test]
fn a_tasks_file_fans_out_to_podman_containers_through_the_same_gate() {
    let env = TestEnv::new();
    let Some(engine) = Engine::start(
        "containers::a_tasks_file_fans_out_to_podman_containers_through_the_same_gate",
        env.tmp.path(),
    ) else {
        return;
    };
    env.commit_policy(&engine.policy(""));
    let key = "key=\"AKIA$(LC_ALL=C tr -dc 'A-Z2-7' </dev/urandom | head -c 16)\"; echo \"aws = $key\" > src/keys.txt";
    let workers = [
        worker(
            "inside",
            "test -f /run/.containerenv && echo \"$CCFAN_TASK_ID in a container\" > src/$CCFAN_TASK_ID.txt; ls /sys/class/net > src/net-$CCFAN_TASK_ID.txt; id -u > src/uid-$CCFAN_TASK_ID.txt",
        ),
        worker("leak", key),
        worker("hang", "sleep 600"),
        worker(
            "own",
            "echo x > src/own.txt && git add -A && git -c user.name=w -c user.email=w@x commit -qm own",
        ),
        worker(
            "twice",
            "if [ \"$CCFAN_ATTEMPT\" = 1 ]; then echo stray >> README.md; else sed -i /stray/d README.md; echo fixed > src/twice.txt; fi",
        ),
    ]
    .join("\n");
    let tasks = env.tasks(&format!(
        "{workers}\n\
         [[task]]\nid = \"one\"\ngoal = \"one\"\nallowed = [\"src/**\"]\nworker = \"inside\"\n\
         [[task]]\nid = \"two\"\ngoal = \"two\"\nallowed = [\"src/**\"]\nworker = \"inside\"\n\
         [[task]]\nid = \"leak\"\ngoal = \"write keys\"\nallowed = [\"src/**\"]\nworker = \"leak\"\n\
         [[task]]\nid = \"hang\"\ngoal = \"hang\"\nallowed = [\"src/**\"]\nworker = \"hang\"\ntimeout = \"3s\"\n\
         [[task]]\nid = \"own\"\ngoal = \"commit\"\nallowed = [\"src/**\"]\nworker = \"own\"\n\
         [[task]]\nid = \"twice\"\ngoal = \"fix on rework\"\nallowed = [\"src/**\"]\nworker = \"twice\"\n"
    ));
    let ran = env.run(&tasks, &["--jobs", "2"]);
    let run = ran.json();
    for id in ["one", "two"] {
        assert_eq!(task(&run, id)["state"], "merged", "{ran:?}");
        assert_eq!(
            env.git(&["show", &format!("main:src/{id}.txt")]).trim(),
            format!("{id} in a container")
        );
        // The network was off in the container: only loopback.
        assert_eq!(
            env.git(&["show", &format!("main:src/net-{id}.txt")]).trim(),
            "lo"
        );
        // The worker ran as the image's unprivileged user.
        assert_eq!(
            env.git(&["show", &format!("main:src/uid-{id}.txt")]).trim(),
            "10001"
        );
    }
    // The gate caught the key written in a container, and the reworked task landed on its second attempt.
    let leak = task(&run, "leak");
    assert!(
        matches!(leak["state"].as_str(), Some("blocked" | "rolled_back")),
        "{leak}"
    );
    assert!(
        leak["reason"]
            .as_str()
            .unwrap()
            .contains("aws-access-key-id"),
        "{leak}"
    );
    assert!(
        !env.git(&["ls-tree", "-r", "--name-only", "main"])
            .contains("keys.txt")
    );
    let twice = task(&run, "twice");
    assert_eq!(twice["state"], "merged", "{twice}");
    assert_eq!(twice["attempts"], 2);
    assert!(!env.git(&["show", "main:README.md"]).contains("stray"));
    // The hanging worker was killed at its time limit.
    let hang = task(&run, "hang");
    assert!(
        matches!(hang["state"].as_str(), Some("timed_out" | "blocked")),
        "{hang}"
    );
    // The worker's own commit in its container is judged as it would be here.
    let own = task(&run, "own");
    assert!(
        own["reason"].as_str().unwrap().contains("sandbox-escape"),
        "{own}"
    );
    assert_ne!(own["state"], "merged", "{own}");
    // Every attempt's container was removed.
    assert_eq!(engine.left(run["run_id"].as_str().unwrap()), "");
    // `ccfan doctor` finds the engine and the image.
    let doctor = env.ccfan(&["doctor", "--json"]).json();
    let engine_status = &doctor["sandbox"]["container"];
    assert_eq!(engine_status["works"], true, "{doctor}");
    assert!(
        engine_status["detail"].as_str().unwrap().contains("podman"),
        "{doctor}"
    );
}

#[test]
fn a_container_or_cluster_backend_set_wrong_is_refused_with_the_key() {
    for (policy, key) in [
        (
            "[sandbox]\nbackend = \"podman\"\n",
            "sandbox.container.image",
        ),
        (
            "[sandbox]\nbackend = \"kubernetes\"\n",
            "sandbox.container.image",
        ),
        (
            "[sandbox]\nbackend = \"kubernetes\"\n\n[sandbox.container]\nimage = \"x\"\n\n\
             [sandbox.kubernetes]\negress = [\"10.0.0.0\"]\n",
            "sandbox.kubernetes.egress",
        ),
    ] {
        let env = TestEnv::new();
        env.commit_policy(policy);
        let tasks = env.tasks(&format!(
            "{}\n[[task]]\ngoal = \"x\"\nworker = \"w\"\n",
            worker("w", "true")
        ));
        let ran = env.run(&tasks, &[]);
        assert_eq!(ran.code, 2, "{ran:?}");
        assert!(ran.stderr.contains(key), "{policy}: {ran:?}");
    }
}

#[test]
fn a_killed_ccfan_leaves_no_container_behind_once_the_next_one_recovers() {
    let env = TestEnv::new();
    let Some(engine) = Engine::start(
        "containers::a_killed_ccfan_leaves_no_container_behind_once_the_next_one_recovers",
        env.tmp.path(),
    ) else {
        return;
    };
    env.commit_policy(&engine.policy(""));
    let tasks = env.tasks(&format!(
        "{}\n[[task]]\nid = \"slow\"\ngoal = \"take long\"\nallowed = [\"src/**\"]\nworker = \"slow\"\n",
        worker("slow", "echo live-from-the-container; sleep 600")
    ));
    let mut ccfan = env
        .command(&["run", "--json", "--tasks", tasks.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let running = |podman: &Path| {
        let listed = crate::env::podman_env(&mut Command::new(podman))
            .args(["ps", "-q", "--filter", "label=io.ccfan.task=slow"])
            .output()
            .unwrap();
        !String::from_utf8_lossy(&listed.stdout).trim().is_empty()
    };
    while !running(&engine.podman) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no container started"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // What the worker prints reaches its attempt's log while its container runs.
    while !crate::env::attempt_log_has(&env, "slow", "live-from-the-container") {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the container's output was not followed live"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    ccfan.kill().unwrap();
    ccfan.wait().unwrap();
    // The next ccfan recovers the run: the task is interrupted and its container removed.
    let status = env.ccfan(&["status", "--json"]);
    assert_eq!(status.code, 0, "{status:?}");
    let runs = status.json();
    let run_id = runs["runs"][0]["run_id"].as_str().unwrap().to_string();
    let view = env.ccfan(&["status", "--json", &run_id]).json();
    assert_eq!(task(&view, "slow")["state"], "interrupted", "{view}");
    assert_eq!(
        engine.left(&run_id),
        "",
        "the interrupted attempt's container is still there"
    );
}
