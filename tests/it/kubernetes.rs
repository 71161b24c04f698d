//! Workers on Kubernetes (`[sandbox] backend = "kubernetes"`): the same tasks file fans out to one Job per
//! attempt, and the same gate, states, salvage and landing follow. No cluster can be installed on this machine
//! kind, so the API server is a fake in this process (`kube_fake`) whose pods are the Pods ccfan's Jobs describe,
//! run by `podman kube play`: the objects are real enough for Podman to run, the API calls are kube-rs's own.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::containers::{remove_image, worker, worker_image};
use crate::env::{TestEnv, task};
use crate::kube_fake::FakeCluster;

/// The fake cluster, its image, removed when dropped.
struct Cluster {
    fake: FakeCluster,
    podman: std::path::PathBuf,
    image: String,
}

impl Cluster {
    fn start(test: &str, dir: &Path) -> Option<Cluster> {
        let (podman, image) = worker_image(test)?;
        let fake = FakeCluster::start(&podman, dir, "agents");
        Some(Cluster {
            fake,
            podman,
            image,
        })
    }

    fn policy(&self, extra: &str) -> String {
        format!(
            "[run]\nmax_reworks = 1\n\n[sandbox]\nbackend = \"kubernetes\"\nmemory = \"512MiB\"\n\
             env_allow = [\"FAKE_API_KEY\"]\n\n[sandbox.container]\nimage = \"{}\"\n\n\
             [sandbox.kubernetes]\nmax_jobs = 2\n{extra}",
            self.image
        )
    }

    fn vars(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "KUBECONFIG",
                self.fake.kubeconfig.to_string_lossy().into_owned(),
            ),
            ("FAKE_API_KEY", "fk-3b1f9c2e7d".to_string()),
        ]
    }
    /// `ccfan run` of one task `id` whose worker runs `script`, started in the background.
    fn spawn_one(&self, env: &TestEnv, id: &str, script: &str) -> std::process::Child {
        let tasks = env.tasks(&format!(
            "{}\n[[task]]\nid = \"{id}\"\ngoal = \"{id}\"\nallowed = [\"src/**\"]\nworker = \"{id}\"\ntimeout = \"5m\"\n",
            worker(id, script)
        ));
        env.command(&["run", "--json", "--tasks", tasks.to_str().unwrap()])
            .envs(self.vars())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
}

/// Waits until task `id`'s attempt log shows `text` (the worker's output, followed live).
fn wait_for_output(env: &TestEnv, id: &str, text: &str) {
    let started = Instant::now();
    while !crate::env::attempt_log_has(env, id, text) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{id}'s output never showed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What a background `ccfan run` did, once it ended.
fn finished(child: std::process::Child) -> crate::env::Ran {
    let output = child.wait_with_output().unwrap();
    crate::env::Ran {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        remove_image(&self.podman, &self.image);
    }
}

fn ccfan(env: &TestEnv, cluster: &Cluster, args: &[&str]) -> crate::env::Ran {
    let vars = cluster.vars();
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.ccfan_with(args, &vars)
}

#[test]
fn a_tasks_file_fans_out_to_kubernetes_jobs_through_the_same_gate() {
    let env = TestEnv::new();
    let Some(cluster) = Cluster::start(
        "kubernetes::a_tasks_file_fans_out_to_kubernetes_jobs_through_the_same_gate",
        env.tmp.path(),
    ) else {
        return;
    };
    // With a disk bound: the pods `podman kube play` runs carry the emptyDir's sizeLimit and ephemeral-storage.
    env.commit_policy(&cluster.policy("storage = \"2GiB\"\n"));
    let key = "key=\"AKIA$(LC_ALL=C tr -dc 'A-Z2-7' </dev/urandom | head -c 16)\"; echo \"aws = $key\" > src/keys.txt";
    let workers = [
        worker(
            "inside",
            "test -f /run/.containerenv && echo \"$CCFAN_TASK_ID in a pod\" > src/$CCFAN_TASK_ID.txt; \
             ls /sys/class/net > src/net-$CCFAN_TASK_ID.txt; id -u > src/uid-$CCFAN_TASK_ID.txt; printf %s \"$FAKE_API_KEY\" | wc -c > src/key-$CCFAN_TASK_ID.txt",
        ),
        worker("slow", "echo live-line-from-the-pod; sleep 12; echo done > src/slow.txt"),
        worker("leak", key),
        worker("hang", "sleep 600"),
    ]
    .join("\n");
    let tasks = env.tasks(&format!(
        "{workers}\n\
         [[task]]\nid = \"one\"\ngoal = \"one\"\nallowed = [\"src/**\"]\nworker = \"inside\"\n\
         [[task]]\nid = \"two\"\ngoal = \"two\"\nallowed = [\"src/**\"]\nworker = \"inside\"\n\
         [[task]]\nid = \"slow\"\ngoal = \"slow\"\nallowed = [\"src/**\"]\nworker = \"slow\"\n\
         [[task]]\nid = \"leak\"\ngoal = \"write keys\"\nallowed = [\"src/**\"]\nworker = \"leak\"\n\
         [[task]]\nid = \"hang\"\ngoal = \"hang\"\nallowed = [\"src/**\"]\nworker = \"hang\"\ntimeout = \"3s\"\n"
    ));
    let mut child = env.command(&[
        "run",
        "--json",
        "--jobs",
        "3",
        "--tasks",
        tasks.to_str().unwrap(),
    ]);
    child
        .envs(cluster.vars())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = child.spawn().unwrap();
    // The slow worker's output shows in its attempt's log while its pod still runs.
    let started = Instant::now();
    let mut seen_live = false;
    while started.elapsed() < Duration::from_secs(120) && !seen_live {
        seen_live = crate::env::attempt_log_has(&env, "slow", "live-line-from-the-pod")
            && !env
                .git(&["ls-tree", "-r", "--name-only", "main"])
                .contains("slow.txt");
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = child.wait_with_output().unwrap();
    let ran = crate::env::Ran {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    assert!(seen_live, "the pod's output was not followed live: {ran:?}");
    let created = &cluster.fake.jobs_created()[0]["spec"]["template"]["spec"];
    assert_eq!(
        created["volumes"][0]["emptyDir"]["sizeLimit"], "2147483648",
        "{created}"
    );
    let run = ran.json();
    for id in ["one", "two"] {
        assert_eq!(task(&run, id)["state"], "merged", "{ran:?}");
        assert_eq!(
            env.git(&["show", &format!("main:src/{id}.txt")]).trim(),
            format!("{id} in a pod")
        );
        // The NetworkPolicy closed the pod's network: only loopback.
        assert_eq!(
            env.git(&["show", &format!("main:src/net-{id}.txt")]).trim(),
            "lo"
        );
        // The worker ran as the image's unprivileged user.
        assert_eq!(
            env.git(&["show", &format!("main:src/uid-{id}.txt")]).trim(),
            "10001"
        );
        // The passed variable reached the worker, through the Secret.
        assert_eq!(
            env.git(&["show", &format!("main:src/key-{id}.txt")]).trim(),
            "13"
        );
    }
    assert_eq!(task(&run, "slow")["state"], "merged", "{ran:?}");
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
    let hang = task(&run, "hang");
    assert!(
        matches!(hang["state"].as_str(), Some("timed_out" | "blocked")),
        "{hang}"
    );

    what_the_cluster_was_asked(&cluster.fake, run["run_id"].as_str().unwrap());
}

/// One Job per attempt, run once, bounded, labelled, the variable's value never in it; each with its own
/// NetworkPolicy allowing nothing over the namespace's baseline; each deleted with what it owns; never more than
/// max_jobs at once; nothing left.
fn what_the_cluster_was_asked(fake: &FakeCluster, run_id: &str) {
    let jobs = fake.jobs_created();
    assert!(jobs.len() >= 5, "{jobs:?}");
    for job in &jobs {
        let spec = &job["spec"];
        assert_eq!(spec["backoffLimit"], 0, "{job}");
        assert!(spec["activeDeadlineSeconds"].as_u64().unwrap() > 0, "{job}");
        assert_eq!(spec["ttlSecondsAfterFinished"], 600, "{job}");
        assert_eq!(
            spec["template"]["metadata"]["labels"]["io.ccfan.run"], run_id,
            "{job}"
        );
        assert!(
            !job.to_string().contains("fk-3b1f9c2e7d"),
            "a passed value is in the Job: {job}"
        );
        let name = job["metadata"]["name"].as_str().unwrap();
        assert!(
            fake.calls()
                .contains(&format!("DELETE jobs {name} Background")),
            "{name} was not deleted: {:?}",
            fake.calls()
        );
    }
    let policies = fake.created("networkpolicies");
    assert_eq!(policies.len(), jobs.len() + 1, "{policies:?}");
    let (baseline, own): (Vec<_>, Vec<_>) = policies
        .iter()
        .partition(|policy| policy["metadata"]["name"] == "ccfan-baseline");
    assert_eq!(baseline.len(), 1, "{policies:?}");
    assert_eq!(baseline[0]["spec"]["egress"], serde_json::json!([]));
    for policy in own {
        assert_eq!(policy["spec"]["egress"], serde_json::json!([]), "{policy}");
        assert_eq!(
            policy["metadata"]["ownerReferences"][0]["kind"], "Job",
            "{policy}"
        );
    }
    assert!(
        fake.most_active() <= 2,
        "{} Jobs at once",
        fake.most_active()
    );
    assert_eq!(fake.jobs_left(), Vec::<String>::new());
    assert_eq!(fake.pods_left(), "");
}

#[test]
fn doctor_checks_the_cluster_and_names_what_is_missing() {
    let env = TestEnv::new();
    // The doctor asks the API only: no pod runs, so no image is needed.
    let fake = FakeCluster::start(Path::new("podman"), env.tmp.path(), "agents");
    env.commit_policy(
        "[sandbox]\nbackend = \"kubernetes\"\n\n[sandbox.container]\nimage = \"localhost/ccfan-worker:x\"\n",
    );
    let kubeconfig = fake.kubeconfig.to_string_lossy().into_owned();
    let doctor = |env: &TestEnv| {
        let ran = env.ccfan_with(&["doctor", "--json"], &[("KUBECONFIG", &kubeconfig)]);
        ran.json()["sandbox"]["container"].clone()
    };
    let fine = doctor(&env);
    assert_eq!(fine["works"], true, "{fine}");
    assert!(
        fine["detail"]
            .as_str()
            .unwrap()
            .contains("namespace agents"),
        "{fine}"
    );

    fake.deny("create pods/exec");
    let denied = doctor(&env);
    assert_eq!(denied["works"], false, "{denied}");
    assert!(
        denied["detail"]
            .as_str()
            .unwrap()
            .contains("create pods/exec"),
        "{denied}"
    );

    env.commit_policy(
        "[sandbox]\nbackend = \"kubernetes\"\n\n[sandbox.container]\nimage = \"x\"\n\n\
         [sandbox.kubernetes]\nnamespace = \"nowhere\"\n",
    );
    let missing = doctor(&env);
    assert!(
        missing["detail"]
            .as_str()
            .unwrap()
            .contains("namespace nowhere does not exist"),
        "{missing}"
    );

    // No kubeconfig at all: the error says where to set one.
    let ran = env.ccfan_with(
        &["doctor", "--json"],
        &[("KUBECONFIG", "/nonexistent/kubeconfig")],
    );
    let none = &ran.json()["sandbox"]["container"];
    assert_eq!(none["works"], false, "{none}");
    assert!(
        none["detail"].as_str().unwrap().contains("kubeconfig"),
        "{none}"
    );
}

#[test]
fn a_missing_image_fails_the_attempt_with_the_clusters_reason() {
    let env = TestEnv::new();
    let Some(cluster) = Cluster::start(
        "kubernetes::a_missing_image_fails_the_attempt_with_the_clusters_reason",
        env.tmp.path(),
    ) else {
        return;
    };
    env.commit_policy(
        &cluster
            .policy("")
            .replace(&cluster.image, "localhost/ccfan-no-such-image:1"),
    );
    let tasks = env.tasks(&format!(
        "{}\n[[task]]\nid = \"t\"\ngoal = \"x\"\nallowed = [\"src/**\"]\nworker = \"w\"\n",
        worker("w", "echo x > src/x.txt")
    ));
    let ran = ccfan(
        &env,
        &cluster,
        &["run", "--json", "--tasks", tasks.to_str().unwrap()],
    );
    let run = ran.json();
    let t = task(&run, "t");
    // Not started: nothing to judge, so nothing lands.
    assert_eq!(t["state"], "rolled_back", "{ran:?}");
    assert!(
        t["reason"].as_str().unwrap().contains("ErrImagePull"),
        "{t}"
    );
    assert_eq!(cluster.fake.jobs_left(), Vec::<String>::new());
}

#[test]
fn a_killed_ccfan_leaves_no_job_behind_once_the_next_one_recovers() {
    let env = TestEnv::new();
    let Some(cluster) = Cluster::start(
        "kubernetes::a_killed_ccfan_leaves_no_job_behind_once_the_next_one_recovers",
        env.tmp.path(),
    ) else {
        return;
    };
    env.commit_policy(&cluster.policy(""));
    let mut ccfan = cluster.spawn_one(&env, "slow", "sleep 600");
    let started = Instant::now();
    while !cluster.fake.a_pod_runs() {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "no pod started"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    ccfan.kill().unwrap();
    ccfan.wait().unwrap();
    assert_eq!(cluster.fake.jobs_left().len(), 1);
    let status = self::ccfan(&env, &cluster, &["status", "--json"]);
    assert_eq!(status.code, 0, "{status:?}");
    let run_id = status.json()["runs"][0]["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let view = self::ccfan(&env, &cluster, &["status", "--json", &run_id]).json();
    assert_eq!(task(&view, "slow")["state"], "interrupted", "{view}");
    assert_eq!(
        cluster.fake.jobs_left(),
        Vec::<String>::new(),
        "the interrupted attempt's Job is still there"
    );
    assert_eq!(cluster.fake.pods_left(), "");
}

#[test]
fn a_lost_link_ends_the_attempt_interrupted_with_what_came_back() {
    let env = TestEnv::new();
    let Some(cluster) = Cluster::start(
        "kubernetes::a_lost_link_ends_the_attempt_interrupted_with_what_came_back",
        env.tmp.path(),
    ) else {
        return;
    };
    env.commit_policy(&cluster.policy("link_timeout = \"3s\"\n"));
    let child = cluster.spawn_one(&env, "far", "echo before-the-link-went; sleep 600");
    wait_for_output(&env, "far", "before-the-link-went");
    cluster.fake.set_online(false);
    // Once ccfan gave the attempt up and tries to delete its Job, the link comes back: the deletion goes through.
    let requests = env.tmp.path().join("requests.log");
    let deleting = || {
        std::fs::read_to_string(&requests).is_ok_and(|text| text.contains("DELETE /apis/batch/v1/"))
    };
    let offline = Instant::now();
    while !deleting() {
        assert!(
            offline.elapsed() < Duration::from_secs(120),
            "ccfan never gave the attempt up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    cluster.fake.set_online(true);
    let ran = finished(child);
    let run = ran.json();
    let far = task(&run, "far");
    assert_eq!(far["state"], "interrupted", "{ran:?}");
    assert!(far["reason"].as_str().unwrap().contains("link"), "{far}");
    // What came back before the link went is kept: the attempt's log.
    assert!(
        crate::env::attempt_log_has(&env, "far", "before-the-link-went"),
        "the attempt's log was lost"
    );
    assert_eq!(cluster.fake.jobs_left(), Vec::<String>::new());
    // The stored state says so as well (`ccfan retry` takes an interrupted task).
    let run_id = run["run_id"].as_str().unwrap();
    let view = ccfan(&env, &cluster, &["status", "--json", run_id]).json();
    assert_eq!(task(&view, "far")["state"], "interrupted", "{view}");
}

/// A log stream that drops (here every second, as behind a proxy with a short idle timeout) is asked for again,
/// and the live log gets each line once; then a cancel deletes the Job with what it owns.
#[test]
fn a_dropped_log_stream_is_followed_again_and_cancelling_deletes_the_job() {
    let env = TestEnv::new();
    let Some(cluster) = Cluster::start(
        "kubernetes::a_dropped_log_stream_is_followed_again_and_cancelling_deletes_the_job",
        env.tmp.path(),
    ) else {
        return;
    };
    env.commit_policy(&cluster.policy(""));
    cluster.fake.cut_logs_after(Some(Duration::from_secs(1)));
    let child = cluster.spawn_one(
        &env,
        "slow",
        "for i in 1 2 3 4 5 6 7 8 9 10; do echo line-$i; echo line-$i-again; sleep 0.3; done; echo working; sleep 600",
    );
    wait_for_output(&env, "slow", "working");
    let live: String = crate::env::attempt_logs(&env, "slow")
        .iter()
        .map(|log| std::fs::read_to_string(log).unwrap_or_default())
        .collect();
    for i in 1..=10 {
        for line in [format!("line-{i}"), format!("line-{i}-again")] {
            assert_eq!(
                live.lines().filter(|seen| **seen == line).count(),
                1,
                "{line} once in the live log:\n{live}"
            );
        }
    }
    // The stream keeps dropping while the worker sleeps, so it is asked for again and again (on a loaded machine
    // the first ask may come late, after the lines above).
    let asked_again = Instant::now();
    loop {
        let requests = std::fs::read_to_string(env.tmp.path().join("requests.log")).unwrap();
        let again = requests
            .lines()
            .filter(|request| request.contains("/log?") && request.contains("sinceTime="))
            .count();
        if again >= 2 {
            break;
        }
        assert!(
            asked_again.elapsed() < Duration::from_secs(20),
            "the log was not asked for again from where it dropped: {requests}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let run_id = ccfan(&env, &cluster, &["status", "--json"]).json()["runs"][0]["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let cancelled = ccfan(
        &env,
        &cluster,
        &["cancel", "--json", &format!("{run_id}/slow")],
    );
    assert_eq!(cancelled.code, 0, "{cancelled:?}");
    assert_eq!(task(&cancelled.json()["run"], "slow")["state"], "cancelled");
    finished(child);
    let job = cluster.fake.jobs_created()[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        cluster
            .fake
            .calls()
            .contains(&format!("DELETE jobs {job} Background")),
        "{:?}",
        cluster.fake.calls()
    );
    assert_eq!(cluster.fake.jobs_left(), Vec::<String>::new());
    assert_eq!(cluster.fake.pods_left(), "");
}
