//! The sandbox issue's escape battery: one run of fixture workers (`fixtures/escape/escape.sh ATTEMPT`), each
//! trying one way out of bubblewrap; afterwards the host is checked for every one of them. Plus fail-closed
//! behaviour, `ccfan doctor`, and the Landlock fallback's `.git` pointer repair.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::env::{TestEnv, visible_tmp};

/// `(attempt, what must hold on the host afterwards)`.
const ATTEMPTS: &[(&str, &str)] = &[
    ("write-home", "no file in $HOME"),
    ("write-etc", "no file in /etc"),
    ("write-checkout", "the user's checkout unchanged"),
    ("write-shared-tmp", "nothing in the host's /tmp or /var/tmp"),
    (
        "git-pointer",
        "the worktree's .git pointer unchanged; host git status runs nothing",
    ),
    ("git-hooks", "no hook in the common dir"),
    ("git-config", "the common config unchanged"),
    ("git-commondir", "the worktree's commondir unchanged"),
    ("git-config-worktree", "no config.worktree"),
    ("symlink-out", "the outside file unchanged"),
    ("hardlink-out", "the outside file unchanged"),
    (
        "chmod-outside",
        "the outside file's mode, owner and mtime unchanged",
    ),
    ("proc-environ", "ccfan's environment not readable"),
    ("tcp-loopback", "the host's TCP listener got no connection"),
    ("udp-loopback", "the host's UDP socket got no datagram"),
    ("dns", "no socket could be made"),
    ("vsock", "no AF_VSOCK socket"),
    ("unix-socket", "the host's UNIX socket got no connection"),
    ("unshare", "no new namespace"),
    ("mount", "no mount; /etc still read-only"),
    ("ptrace", "no ptrace or process_vm_readv of a sibling"),
    ("io-uring", "no io_uring"),
    ("x32-syscall", "no unshare through the x32 syscall numbers"),
    ("signal-ccfan", "ccfan finished normally"),
    ("setsid-survivor", "no process left"),
    ("fork-bomb", "capped by pids.max, no process left"),
    ("memory-hog", "stopped at the memory limit"),
    ("output-flood", "stopped at the output limit; log capped"),
    (
        "fill-tmp",
        "the private /tmp and /dev/shm are full at their size",
    ),
];

const CANARY: &str = "ccfan-canary-1b2d9e";

fn escape_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/escape/escape.sh")
}

/// Everything about the host that the attempts must not change.
#[derive(Debug, PartialEq, Eq)]
struct HostSnapshot {
    files: BTreeMap<PathBuf, Option<Vec<u8>>>,
    outside: (u32, u32, i64),
}

fn snapshot(env: &TestEnv, outside_file: &Path) -> HostSnapshot {
    let common = env.repo.join(".git");
    let paths = vec![
        env.repo.join("README.md"),
        env.repo.join("escaped.txt"),
        env.home().join("escaped"),
        PathBuf::from("/etc/ccfan-escaped"),
        PathBuf::from("/etc/ccfan-escaped-after-mount"),
        common.join("config"),
        common.join("hooks/post-checkout"),
        outside_file.to_path_buf(),
    ];
    let meta = std::fs::metadata(outside_file).unwrap();
    HostSnapshot {
        files: paths
            .into_iter()
            .map(|p| {
                let content = std::fs::read(&p).ok();
                (p, content)
            })
            .collect(),
        outside: (meta.mode(), meta.uid(), meta.mtime()),
    }
}

fn attempt_json(env: &TestEnv, run: &str, task: &str) -> serde_json::Value {
    let path = env
        .state_dir()
        .join(format!("runs/{run}/{task}/attempt-1/attempt.json"));
    serde_json::from_slice(&std::fs::read(&path).unwrap_or_default())
        .unwrap_or(serde_json::Value::Null)
}

fn result(env: &TestEnv, run: &str, task: &str, file: &str) -> String {
    let mut command = std::process::Command::new("git");
    let out = command
        .current_dir(&env.repo)
        .args(["show", &format!("refs/ccfan/{run}/{task}/attempt-1:{file}")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Pids of processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmd| {
                String::from_utf8_lossy(&cmd)
                    .replace('\0', " ")
                    .contains(needle)
            })
        })
        .collect()
}

/// The worktree of `task` in `run`.
fn task_worktree(env: &TestEnv, run: &str, task: &str) -> PathBuf {
    std::fs::read_dir(env.worktree_root())
        .unwrap()
        .flatten()
        .map(|entry| entry.path().join(run).join(task))
        .find(|path| path.exists())
        .unwrap()
}

#[test]
fn escape_battery_is_contained_by_bubblewrap() {
    assert!(
        crate::env::bwrap_works(),
        "bubblewrap must be installed for the sandbox tests (.ci/run installs it)"
    );
    // Outside the system's temp dir, so that the host's files are visible (read-only) to the workers: an attempt
    // must be stopped by the sandbox, not by not finding its target.
    let env = TestEnv::new_in(&visible_tmp());
    env.commit_policy(
        "[run]\ntimeout = \"20s\"\nmax_reworks = 0\njobs = 4\nlog_limit = \"1MiB\"\n\
         [sandbox]\nbackend = \"bubblewrap\"\nmemory = \"256MiB\"\npids = 256\ntmp_size = \"64MiB\"\nmax_output = \"8MiB\"\n",
    );
    let outside = env.tmp.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let outside_file = outside.join("target.txt");
    std::fs::write(&outside_file, "do not touch\n").unwrap();
    let pid_file = outside.join("ccfan.pid");
    let marker = outside.join("fsmonitor-ran");
    let marker_id = format!("{}", std::process::id());
    // The UNIX socket lives outside the folders the sandbox hides, so only seccomp stands in the way.
    let sock_path = outside.join("host.sock");
    let unix = std::os::unix::net::UnixListener::bind(&sock_path).unwrap();
    unix.set_nonblocking(true).unwrap();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    tcp.set_nonblocking(true).unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_nonblocking(true).unwrap();

    let host_env = format!(
        "{{ HOST_HOME = \"{}\", HOST_REPO = \"{}\", HOST_COMMON = \"{}\", HOST_FILE = \"{}\", HOST_DIR = \"{}\", \
         HOST_SOCK = \"{}\", TCP_PORT = \"{}\", UDP_PORT = \"{}\", PID_FILE = \"{}\", MARKER = \"{}\", MARKER_ID = \"{}\" }}",
        env.home().display(),
        env.repo.display(),
        env.repo.join(".git").display(),
        outside_file.display(),
        outside.display(),
        sock_path.display(),
        tcp.local_addr().unwrap().port(),
        udp.local_addr().unwrap().port(),
        pid_file.display(),
        marker.display(),
        marker_id,
    );
    let mut tasks = String::new();
    for (name, _) in ATTEMPTS {
        tasks.push_str(&format!(
            "[workers.{name}]\nkind = \"command\"\ncommand = [\"{}\", \"{name}\"]\nenv = {host_env}\n\n",
            escape_script().display()
        ));
    }
    for (name, _) in ATTEMPTS {
        tasks.push_str(&format!(
            "[[task]]\nid = \"{name}\"\ngoal = \"try {name}\"\nworker = \"{name}\"\n\n"
        ));
    }
    let tasks_path = env.tasks(&tasks);
    let before = snapshot(&env, &outside_file);

    let mut command = env.command(&[
        "run",
        "--json",
        "--no-merge",
        "--tasks",
        tasks_path.to_str().unwrap(),
    ]);
    command.env("CCFAN_TEST_CANARY", CANARY);
    let child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::fs::write(&pid_file, child.id().to_string()).unwrap();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.code().is_some(),
        "ccfan was killed by a signal: {:?}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let run: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|_| {
        panic!(
            "no JSON: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let run_id = run["run_id"].as_str().unwrap().to_string();

    // Host checks, attempt by attempt.
    std::thread::sleep(Duration::from_millis(200));
    let after = snapshot(&env, &outside_file);
    let mut failures: Vec<String> = Vec::new();
    let mut table = String::from("| attempt | expected | result |\n|---|---|---|\n");
    for (name, expected) in ATTEMPTS {
        let report = result(&env, &run_id, name, "result.txt");
        let record = attempt_json(&env, &run_id, name);
        let exit = record["exit"]["kind"].as_str().unwrap_or("?").to_string();
        let denied_all = !report.is_empty() && !report.contains("succeeded");
        let held = match *name {
            "write-home" | "write-etc" | "write-checkout" | "git-hooks" | "git-config"
            | "symlink-out" | "hardlink-out" | "chmod-outside" | "mount" => {
                before == after && denied_all
            }
            "git-commondir" | "git-config-worktree" => {
                let admin = env.repo.join(".git/worktrees").join(name);
                std::fs::read_to_string(admin.join("commondir")).unwrap_or_default() == "../..\n"
                    && !admin.join("config.worktree").exists()
                    && denied_all
            }
            "write-shared-tmp" => {
                !Path::new(&format!("/tmp/ccfan-escaped-{marker_id}")).exists()
                    && !Path::new(&format!("/var/tmp/ccfan-escaped-{marker_id}")).exists()
            }
            "git-pointer" => {
                let untouched = record["recorded"]["tampered"]
                    .as_array()
                    .is_none_or(|t| t.is_empty());
                let worktree = task_worktree(&env, &run_id, name);
                env.git(&["-C", worktree.to_str().unwrap(), "status", "--short"]);
                denied_all && untouched && !marker.exists()
            }
            "proc-environ" => !result(&env, &run_id, name, "leaked-environ").contains(CANARY),
            "tcp-loopback" => tcp.accept().is_err() && denied_all,
            "udp-loopback" => udp.recv(&mut [0u8; 64]).is_err() && denied_all,
            "unix-socket" => unix.accept().is_err() && denied_all,
            "dns" | "vsock" | "unshare" | "ptrace" | "io-uring" | "x32-syscall" => denied_all,
            "signal-ccfan" => {
                matches!(output.status.code(), Some(0 | 1))
                    && report.contains(&format!(
                        "denied: kill -TERM {}",
                        std::fs::read_to_string(&pid_file).unwrap()
                    ))
            }
            "setsid-survivor" => processes_with("1000.4242").is_empty(),
            "fork-bomb" => record["sandbox_notes"]
                .to_string()
                .contains("process limit reached"),
            "memory-hog" => {
                exit == "over_limit" && record["exit"]["limit"].to_string().contains("memory")
            }
            "output-flood" => {
                let log = env
                    .state_dir()
                    .join(format!("runs/{run_id}/{name}/attempt-1/worker.log"));
                exit == "over_limit"
                    && std::fs::metadata(&log).map(|m| m.len()).unwrap_or(u64::MAX)
                        < (1 << 20) + 4096
            }
            "fill-tmp" => {
                let errors = result(&env, &run_id, name, "errors.txt");
                errors.matches("No space left on device").count() == 2
                    && report.contains("tmp holds 64 MiB")
                    && report.contains("shm holds 64 MiB")
            }
            _ => false,
        } && !report.is_empty(); // and the worker really ran and tried
        let shown = report
            .lines()
            .map(|l| l.trim_start_matches(&format!("{name}: ")))
            .collect::<Vec<_>>()
            .join("; ");
        table.push_str(&format!(
            "| {name} | {expected} | {} ({exit}{}) |\n",
            if held { "contained" } else { "ESCAPED" },
            if shown.is_empty() {
                String::new()
            } else {
                format!("; {shown}")
            }
        ));
        if !held {
            // What the worker's log says when it did not run at all.
            let log = std::fs::read_to_string(
                env.repo
                    .join(".git/ccfan/runs")
                    .join(&run_id)
                    .join(name)
                    .join("attempt-1/worker.log"),
            )
            .unwrap_or_default();
            let head: String = log.chars().take(400).collect();
            failures.push(format!("{name}: {report} {record} log: {head}"));
        }
    }
    // Whatever an attempt started is gone, and the user's git runs nothing planted.
    let leftovers: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                String::from_utf8_lossy(&env).contains("CCFAN_ATTEMPT_TOKEN=")
                    && String::from_utf8_lossy(&env).contains(&marker_id)
            })
        })
        .collect();
    env.git(&["status", "--short"]);
    assert!(!marker.exists(), "a planted fsmonitor ran");
    println!("{table}");
    assert!(leftovers.is_empty(), "processes survived: {leftovers:?}");
    assert!(failures.is_empty(), "{table}\n{}", failures.join("\n"));
}

/// A PATH with git but without bubblewrap (both live in /usr/bin here).
fn path_without_bwrap(env: &TestEnv) -> String {
    let bin = env.tmp.path().join("bin-no-bwrap");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["git", "sh", "echo", "cat"] {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .unwrap();
        let path = String::from_utf8_lossy(&found.stdout).trim().to_string();
        if !path.is_empty() && !bin.join(tool).exists() {
            std::os::unix::fs::symlink(path, bin.join(tool)).unwrap();
        }
    }
    bin.display().to_string()
}

fn one_task(env: &TestEnv, body: &str) -> PathBuf {
    let worker = env.script("w.sh", body);
    env.tasks(&format!(
        "[[task]]\nid = \"t\"\ngoal = \"x\"\nworker = \"w\"\n[workers.w]\nkind = \"command\"\ncommand = [\"{}\"]\n",
        worker.display()
    ))
}

#[test]
fn an_unavailable_backend_fails_closed_and_auto_falls_back_to_landlock_with_a_warning() {
    let env = TestEnv::new_in(&visible_tmp());
    let path = path_without_bwrap(&env);
    let tasks = one_task(&env, "echo hi > hi.txt");
    env.commit_policy("[sandbox]\nbackend = \"bubblewrap\"\n");
    let mut command = env.command(&["run", "--json", "--tasks", tasks.to_str().unwrap()]);
    let out = command.env("PATH", &path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("bubblewrap sandbox cannot run here"),
        "{stderr}"
    );
    assert!(stderr.contains("apt-get install bubblewrap"), "{stderr}");
    assert!(
        !env.state_dir().join("runs").exists(),
        "nothing may start: {stderr}"
    );

    let mut doctor = env.command(&["doctor", "--json"]);
    let out = doctor.env("PATH", &path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["sandbox"]["selected"], serde_json::Value::Null);
    assert_eq!(report["sandbox"]["backends"][0]["works"], false, "{report}");
    assert!(
        report["sandbox"]["problem"]
            .as_str()
            .unwrap()
            .contains("fix:"),
        "{report}"
    );

    env.commit_policy("[sandbox]\nbackend = \"auto\"\n");
    let mut command = env.command(&["run", "--json", "--tasks", tasks.to_str().unwrap()]);
    let out = command.env("PATH", &path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("using the weaker Landlock sandbox"),
        "{stderr}"
    );
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(crate::env::task(&run, "t")["state"], "merged", "{run}");
}

#[test]
fn doctor_names_every_backend_and_the_one_the_policy_picks() {
    let env = TestEnv::new();
    let ran = env.ccfan(&["doctor"]);
    assert_eq!(ran.code, 0, "{ran:?}");
    for needle in [
        "bubblewrap",
        "landlock",
        "none",
        "seccomp",
        "workers run under bubblewrap",
        "memory limit",
    ] {
        assert!(ran.stdout.contains(needle), "{needle}: {}", ran.stdout);
    }
}

#[test]
fn under_landlock_a_rewritten_git_pointer_is_put_back_and_judged_an_escape() {
    let env = TestEnv::new_in(&visible_tmp());
    env.commit_policy("[run]\nmax_reworks = 0\n[sandbox]\nbackend = \"landlock\"\n");
    let evil = env.tmp.path().join("evil");
    let marker = env.tmp.path().join("fsmonitor-ran");
    std::fs::create_dir_all(&evil).unwrap();
    let tasks = one_task(
        &env,
        &format!(
            "echo work > src/work.txt\n\
             printf 'gitdir: {evil}\\n' > .git\n\
             echo escaped > '{outside}' || echo denied > denied.txt",
            evil = evil.display(),
            outside = env.home().join("escaped").display(),
        ),
    );
    // The planted git dir would run a command at the user's next `git status` in the worktree.
    env.git(&["init", "-q", "--bare", evil.to_str().unwrap()]);
    std::fs::write(
        evil.join("config"),
        format!(
            "[core]\n\tbare = false\n\tfsmonitor = touch {}\n",
            marker.display()
        ),
    )
    .unwrap();
    let run = env.run(&tasks, &[]).json();
    let t = crate::env::task(&run, "t");
    assert_eq!(t["state"], "rolled_back", "{t}");
    assert!(
        t["reason"].as_str().unwrap().contains("sandbox-escape"),
        "{t}"
    );
    assert!(
        !env.home().join("escaped").exists(),
        "landlock let it write outside"
    );
    let run_id = run["run_id"].as_str().unwrap();
    let worktree = task_worktree(&env, run_id, "t");
    let pointer = std::fs::read_to_string(worktree.join(".git")).unwrap();
    assert!(pointer.contains(".git/worktrees/t"), "{pointer}");
    env.git(&["-C", worktree.to_str().unwrap(), "status", "--short"]);
    assert!(!marker.exists(), "the planted fsmonitor ran");
    let salvage = format!("refs/ccfan/{run_id}/t/attempt-1");
    assert_eq!(
        env.git(&["show", &format!("{salvage}:denied.txt")]),
        "denied\n"
    );
}

#[test]
fn tests_run_sandboxed_without_network_and_cannot_write_outside_their_checkout() {
    let env = TestEnv::new_in(&visible_tmp());
    let outside = env.home().join("tests-wrote-here");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let script = env.script(
        "tests.sh",
        &format!(
            "echo x > '{}' || echo 'write denied'\n\
             /usr/bin/python3 -c \"import socket; socket.create_connection(('127.0.0.1', {}), 2)\" || echo 'network denied'\n\
             exit 1",
            outside.display(),
            listener.local_addr().unwrap().port()
        ),
    );
    env.commit_policy(&format!(
        "[run]\nmax_reworks = 0\n[tests]\ncommand = [\"{}\"]\n",
        script.display()
    ));
    let tasks = one_task(&env, "echo hi > src/hi.txt");
    let run = env.run(&tasks, &[]).json();
    let t = crate::env::task(&run, "t");
    assert_eq!(t["state"], "blocked", "{t}");
    assert!(
        !outside.exists(),
        "the tests stage wrote outside its checkout"
    );
    assert!(
        listener.accept().is_err(),
        "the tests stage reached the host's network"
    );
    let verify = env
        .ccfan(&["verify", "--json", run["run_id"].as_str().unwrap()])
        .stdout;
    assert!(
        verify.contains("write denied") && verify.contains("network denied"),
        "{verify}"
    );
}
