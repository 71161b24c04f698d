//! Hostile input, each hole a test: secrets in file names, key blocks, secret-bearing branches, the sweep that
//! finds no raw secret anywhere ccfan prints, stores or answers over MCP; bounded input files; MCP parse errors;
//! attempts libgit2 cannot record; a full disk; and tasks whose change is already on the target.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Stdio;

use serde_json::{Value, json};

use crate::env::{Ran, TestEnv, task};

fn command_tasks(env: &TestEnv, ids: &[&str], script: &Path, extra: &str) -> std::path::PathBuf {
    let mut text = String::new();
    for id in ids {
        text.push_str(&format!(
            "[[task]]\nid = \"{id}\"\ngoal = \"do {id}\"\nworker = \"w\"\n{extra}\n"
        ));
    }
    text.push_str(&format!(
        "[workers.w]\nkind = \"command\"\ncommand = [\"{}\"]\nenv = {{ PROBE = \"{}\" }}\n",
        script.display(),
        env.probe().display()
    ));
    env.tasks(&text)
}

/// Every file under `dir` (symlinks not followed), read as bytes.
fn all_files(dir: &Path, into: &mut Vec<(String, Vec<u8>)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            all_files(&entry.path(), into);
        } else if kind.is_file() {
            into.push((
                entry.path().display().to_string(),
                std::fs::read(entry.path()).unwrap(),
            ));
        }
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

/// One MCP session over stdio with the real binary: initialize, then each call; returns each raw reply line.
fn mcp_session(env: &TestEnv, calls: &[(&str, Value)]) -> Vec<String> {
    let mut server = env
        .command(&["mcp"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = server.stdin.take().unwrap();
    let mut stdout = BufReader::new(server.stdout.take().unwrap());
    let mut replies = Vec::new();
    let mut exchange = |message: Value, answered: bool| {
        writeln!(stdin, "{message}").unwrap();
        stdin.flush().unwrap();
        if answered {
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            replies.push(line);
        }
    };
    exchange(
        json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "test", "version": "0"}}}),
        true,
    );
    exchange(
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        false,
    );
    for (id, (name, arguments)) in calls.iter().enumerate() {
        exchange(
            json!({"jsonrpc": "2.0", "id": id + 1, "method": "tools/call",
                "params": {"name": name, "arguments": arguments}}),
            true,
        );
    }
    drop(stdin);
    server.wait().unwrap();
    replies
}

/// Fresh fake secrets of four kinds, in the shapes a worker would write them.
pub(crate) struct Fakes {
    aws: String,
    pub(crate) github: String,
    slack: String,
    pub(crate) pem_body: Vec<String>,
}

impl Fakes {
    pub(crate) fn new() -> Fakes {
        let random = |alphabet: &[u8], n: usize| -> String {
            let mut state = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                ^ (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            (0..n)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    alphabet[(state % alphabet.len() as u64) as usize] as char
                })
                .collect()
        };
        let upper = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        let alnum = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let b64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        Fakes {
            aws: format!("AKIA{}", random(upper, 16)),
            github: format!("ghp_{}", random(alnum, 36)),
            slack: format!(
                "xoxb-{}-{}-{}",
                random(b"0123456789", 12),
                random(b"0123456789", 13),
                random(alnum, 24)
            ),
            pem_body: (0..6).map(|i| random(b64, 60 + i)).collect(),
        }
    }

    /// What must never appear raw: each secret, and each line of the key's body.
    pub(crate) fn raw(&self) -> Vec<String> {
        let mut raw = vec![self.aws.clone(), self.github.clone(), self.slack.clone()];
        raw.extend(self.pem_body.iter().map(|line| line[..40].to_string()));
        raw
    }

    fn pem(&self) -> String {
        format!(
            "-----BEGIN RSA PRIVATE KEY-----\n{}\n-----END RSA PRIVATE KEY-----\n",
            self.pem_body.join("\n")
        )
    }
}

#[test]
fn sweep_no_raw_secret_in_anything_ccfan_prints_stores_or_answers() {
    let env = TestEnv::new();
    env.commit_policy("[run]\nmax_reworks = 0\n");
    let fakes = Fakes::new();
    std::fs::write(env.probe().join("key.pem"), fakes.pem()).unwrap();
    // Contents, file names (both sides of a rename, a symlink target), the report file, stdout and stderr.
    let worker = env.script(
        "leak.sh",
        &format!(
            "set -eu\nmkdir -p src\nprintf 'AWS_ACCESS_KEY_ID={aws}\\n' > src/deploy.env\n\
             cp \"$PROBE/key.pem\" src/id_rsa\necho hi > 'src/{github}.txt'\necho x > 'src/k-{aws}'\n\
             git mv src/lib.txt 'src/lib-{github}.txt' 2>/dev/null || mv src/lib.txt 'src/lib-{github}.txt'\n\
             ln -s '../{slack}' src/link\n\
             printf '## Summary\\nI used {slack} and {github}\\n' > \"$CCFAN_REPORT_FILE\" 2>/dev/null || true\n\
             echo \"token {slack}\"\ncat \"$PROBE/key.pem\"\necho \"stderr {github}\" >&2\n",
            aws = fakes.aws,
            github = fakes.github,
            slack = fakes.slack,
        ),
    );
    let tasks = command_tasks(&env, &["w"], &worker, "");
    let run = env.run(&tasks, &[]);
    assert_eq!(run.code, 1, "{run:?}");
    let view = run.json();
    assert_eq!(task(&view, "w")["state"], "blocked", "{run:?}");
    let run_id = view["run_id"].as_str().unwrap().to_string();
    let target = format!("{run_id}/w");
    let salvage = format!("refs/ccfan/{run_id}/w/attempt-1");

    // The secret-bearing attempt is off the pushable branch, on its salvage ref, and status says so.
    let base = env.git(&["rev-parse", "main"]);
    assert_eq!(env.git(&["rev-parse", &format!("ccfan/{run_id}/w")]), base);
    let reason = task(&view, "w")["reason"].as_str().unwrap().to_string();
    assert!(
        reason.contains("attempt 1 held a secret") && reason.contains(&salvage),
        "{reason}"
    );

    // File names are findings in the worker gate, the hooks gate and `ccfan scan`.
    let verify = env.ccfan(&["verify", "--json", &target]);
    let findings: Vec<Value> = verify.json()["tasks"][0]["report"]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|stage| stage["findings"].as_array().unwrap().clone())
        .filter(|f| f["stage"] == "secrets")
        .collect();
    let in_names: Vec<&Value> = findings
        .iter()
        .filter(|f| f["message"].as_str().unwrap().contains("file name"))
        .collect();
    assert!(in_names.len() >= 3, "{findings:#?}");
    assert!(
        findings.iter().any(|f| f["rule"] == "private-key"),
        "{findings:#?}"
    );
    let commit_gate = env.ccfan(&["verify", "--commit", &salvage]);
    assert_eq!(commit_gate.code, 1, "{commit_gate:?}");
    assert!(commit_gate.stdout.contains("file name"), "{commit_gate:?}");
    let worktree = task(&view, "w")["worktree"].as_str().unwrap().to_string();
    let scan_dir = env.ccfan(&["scan", &format!("{worktree}/src")]);
    assert_eq!(scan_dir.code, 1, "{scan_dir:?}");
    assert!(
        scan_dir.stdout.contains("(in the file name)"),
        "{scan_dir:?}"
    );

    // Everything ccfan prints or answers.
    let outputs: Vec<Ran> = vec![
        run,
        verify,
        commit_gate,
        scan_dir,
        env.ccfan(&["verify", &target]),
        env.ccfan(&["verify", "--sarif", &target]),
        env.ccfan(&["status", &run_id]),
        env.ccfan(&["status", "--json", &target]),
        env.ccfan(&["salvage", "list", &target]),
        env.ccfan(&["salvage", "show", &format!("{target}/1")]),
        env.ccfan(&["salvage", "show", "--json", &format!("{target}/1")]),
        env.ccfan(&["scan", "--json", "--range", &format!("main..{salvage}")]),
        env.ccfan(&["scan", "--sarif", "--range", &format!("main..{salvage}")]),
    ];
    let replies = mcp_session(
        &env,
        &[
            ("diff", json!({"run_id": run_id, "task_id": "w"})),
            ("status", json!({"run_id": run_id, "detail": true})),
            ("verify", json!({"run_id": run_id})),
            ("scan", json!({"range": format!("main..{salvage}")})),
        ],
    );
    assert!(replies[1].contains("\"patch\""), "{}", replies[1]);
    for reply in &replies[1..] {
        let reply: Value = serde_json::from_str(reply).unwrap();
        assert!(
            reply["result"].is_object() && reply["result"]["isError"] != true,
            "{reply}"
        );
    }
    let mut stored = Vec::new();
    all_files(&env.state_dir(), &mut stored);
    assert!(
        stored
            .iter()
            .any(|(name, _)| name.ends_with("attempt.json"))
    );
    for secret in fakes.raw() {
        for output in &outputs {
            assert!(
                !output.stdout.contains(&secret) && !output.stderr.contains(&secret),
                "raw `{secret}` in {output:?}"
            );
        }
        for reply in &replies {
            assert!(!reply.contains(&secret), "raw `{secret}` over MCP: {reply}");
        }
        for (name, bytes) in &stored {
            assert!(!contains(bytes, &secret), "raw `{secret}` stored in {name}");
        }
    }
}

#[test]
fn a_task_reworked_after_a_secret_keeps_the_clean_attempt_on_its_branch() {
    let env = TestEnv::new();
    env.commit_policy("[run]\nmax_reworks = 1\n");
    let fakes = Fakes::new();
    // Attempt 1 is out of scope (reworked); attempt 2 writes a key: the branch goes back to attempt 1.
    let worker = env.script(
        "two.sh",
        &format!(
            "set -eu\nif [ -e \"$PROBE/once\" ]; then echo 'k = \"{}\"' > src/b.txt; \
             else touch \"$PROBE/once\"; echo a > src/a.txt; echo out > README.md; fi",
            fakes.github
        ),
    );
    let tasks = command_tasks(&env, &["w"], &worker, "allowed = [\"src/**\"]");
    let run = env.run(&tasks, &[]);
    let view = run.json();
    let t = task(&view, "w");
    assert_eq!(t["state"], "blocked", "{run:?}");
    let run_id = view["run_id"].as_str().unwrap();
    let first = env.git(&["rev-parse", &format!("refs/ccfan/{run_id}/w/attempt-1")]);
    assert_eq!(env.git(&["rev-parse", &format!("ccfan/{run_id}/w")]), first);
}

#[test]
fn an_accepted_task_whose_history_held_a_secret_gets_a_clean_branch() {
    let env = TestEnv::new();
    env.commit_policy("[run]\nmax_reworks = 2\n");
    let fakes = Fakes::new();
    // Attempt 1 writes a key; attempt 2 removes it but edits out of scope; attempt 3 is clean.
    let worker = env.script(
        "three.sh",
        &format!(
            "set -eu\necho \"$CCFAN_ATTEMPT\" >> \"$PROBE/calls\"\ncase $CCFAN_ATTEMPT in\n1) echo 'k = \"{}\"' > src/k.txt;;\n2) rm src/k.txt; echo out > README.md;;\n\
             *) git checkout -- README.md 2>/dev/null || printf '# test repo\\n' > README.md; echo ok > src/ok.txt;;\nesac",
            fakes.github
        ),
    );
    let tasks = command_tasks(&env, &["w"], &worker, "allowed = [\"src/**\"]");
    let run = env.run(&tasks, &["--no-merge"]);
    let view = run.json();
    let t = task(&view, "w");
    let calls = std::fs::read_to_string(env.probe().join("calls")).unwrap_or_default();
    assert_eq!(
        t["state"], "accepted",
        "{run:?}\nworker starts (attempt numbers): {calls}"
    );
    assert_eq!(t["attempts"], 3, "{t}");
    assert_eq!(calls, "1\n2\n3\n", "one worker start per attempt");
    let run_id = view["run_id"].as_str().unwrap();
    let branch = format!("ccfan/{run_id}/w");
    let base = env.git(&["rev-parse", "main"]).trim().to_string();
    let first = format!("refs/ccfan/{run_id}/w/attempt-1");
    let third = format!("refs/ccfan/{run_id}/w/attempt-3");
    // The branch no longer reaches attempt 1 (a push would not publish the key), and holds the accepted tree.
    let reaches = crate::hooks::try_git(&env, &["merge-base", "--is-ancestor", &first, &branch]);
    assert_ne!(reaches.code, 0, "{reaches:?}");
    assert_eq!(
        env.git(&["rev-list", "--count", &format!("{base}..{branch}")])
            .trim(),
        "1"
    );
    assert_eq!(
        env.git(&["rev-parse", &format!("{branch}^{{tree}}")]),
        env.git(&["rev-parse", &format!("{third}^{{tree}}")])
    );
    let reason = t["reason"].as_str().unwrap();
    assert!(reason.contains("attempt 1 held a secret"), "{reason}");
    // It still lands, as one commit.
    let merged = env.ccfan(&["merge", run_id]);
    assert_eq!(merged.code, 0, "{merged:?}");
    assert!(
        env.git(&["ls-tree", "-r", "--name-only", "main"])
            .contains("src/ok.txt")
    );
}

#[test]
fn input_files_are_regular_and_bounded() {
    let env = TestEnv::new();
    let fifo = env.tmp.path().join("tasks.fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let big = env.tmp.path().join("big.toml");
    std::fs::write(&big, "#".repeat(9 << 20)).unwrap();
    for (file, says) in [
        ("/dev/zero", "is a device"),
        (fifo.to_str().unwrap(), "is a FIFO"),
        (
            big.to_str().unwrap(),
            "larger than the input cap of 8388608 bytes",
        ),
    ] {
        let started = std::time::Instant::now();
        let ran = env.ccfan(&["run", "--tasks", file]);
        assert_eq!(ran.code, 2, "{ran:?}");
        assert!(
            ran.stderr.contains(file) && ran.stderr.contains(says),
            "{ran:?}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }
    let ran = env.ccfan(&[
        "run",
        "--tasks",
        big.to_str().unwrap(),
        "--policy",
        "/dev/zero",
    ]);
    assert_eq!(ran.code, 2, "{ran:?}");
    assert!(
        ran.stderr.contains("/dev/zero: the policy is a device"),
        "{ran:?}"
    );
    let ran = env.ccfan(&["scan", "--rules", "/dev/zero", "src"]);
    assert_eq!(ran.code, 2, "{ran:?}");
    // The cap names the setting that raises it.
    let mut small = env.command(&["run", "--tasks", big.to_str().unwrap()]);
    small.env("CCFAN_MAX_INPUT_BYTES", "100");
    let ran: Ran = small.output().unwrap().into();
    assert!(
        ran.stderr.contains("CCFAN_MAX_INPUT_BYTES=<bytes>"),
        "{ran:?}"
    );
}

#[test]
fn mcp_answers_unparsable_lines_with_a_parse_error_and_goes_on() {
    let env = TestEnv::new();
    let mut server = env
        .command(&["mcp"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = server.stdin.take().unwrap();
    let deep = "[".repeat(200_000);
    let lines: Vec<&[u8]> = vec![
        b"not json",
        b"{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": \"initi",
        b"\xff\xfe\xfd",
        b"{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": \"x\0\"}",
        b"{\"jsonrpc\": \"2.0\", \"id\": 1e400, \"method\": \"ping\"}",
        deep.as_bytes(),
        b"{\"jsonrpc\": \"2.0\", \"id\": 9, \"method\": \"initialize\", \"params\": {\"protocolVersion\": \"2025-06-18\", \"capabilities\": {}, \"clientInfo\": {\"name\": \"t\", \"version\": \"0\"}}}",
    ];
    for line in lines {
        stdin.write_all(line).unwrap();
        stdin.write_all(b"\n").unwrap();
    }
    stdin.flush().unwrap();
    drop(stdin);
    let output = server.wait_with_output().unwrap();
    let replies: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(replies.len(), 7, "{replies:#?}");
    for reply in &replies[..6] {
        assert_eq!(reply["error"]["code"], -32700, "{reply}");
        assert!(reply["id"].is_null(), "{reply}");
    }
    assert_eq!(replies[6]["id"], 9, "the server went on: {replies:#?}");
    assert_eq!(replies[6]["result"]["serverInfo"]["name"], "ccfan");
}

#[test]
fn small_bad_inputs_get_exit_2_and_the_rule() {
    let env = TestEnv::new();
    let worker = env.script("ok.sh", "echo ok > src/ok.txt");
    let tasks = command_tasks(&env, &["w"], &worker, "");
    let ran = env.ccfan(&[
        "run",
        "--tasks",
        tasks.to_str().unwrap(),
        "--into",
        "bad..name",
    ]);
    assert_eq!(ran.code, 2, "{ran:?}");
    assert!(
        ran.stderr.contains("not a valid branch name") && ran.stderr.contains("`..`"),
        "{ran:?}"
    );
    for glob in ["/etc/**", "../**", "src/../../x"] {
        let tasks = command_tasks(&env, &["w"], &worker, &format!("allowed = [\"{glob}\"]"));
        let ran = env.ccfan(&["run", "--tasks", tasks.to_str().unwrap()]);
        assert_eq!(ran.code, 2, "{glob}: {ran:?}");
        assert!(ran.stderr.contains("task[1].allowed"), "{ran:?}");
    }
    // Looking a run up in a repository ccfan never ran in leaves no state behind.
    for args in [
        &["status", "nope"][..],
        &["verify", "nope"],
        &["salvage", "show", "nope/t/1"],
    ] {
        let ran = env.ccfan(args);
        assert_eq!(ran.code, 2, "{args:?}: {ran:?}");
    }
    assert!(!env.state_dir().exists());
    // A SHA-256 repository is named as such.
    let sha256 = env.tmp.path().join("sha256");
    env.git(&[
        "init",
        "-q",
        "--object-format=sha256",
        sha256.to_str().unwrap(),
    ]);
    let ran = env.ccfan(&["-C", sha256.to_str().unwrap(), "status"]);
    assert_eq!(ran.code, 2, "{ran:?}");
    assert!(
        ran.stderr
            .contains("object format `sha256` is not supported"),
        "{ran:?}"
    );
    // pre-push's ref lines are bounded too: past the cap the hook stops (exit 2), never judging half the refs.
    let mut push = env.command(&["hooks", "run", "pre-push", "origin"]);
    push.env("CCFAN_MAX_INPUT_BYTES", "100")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = push.spawn().unwrap();
    let line = format!(
        "refs/heads/main {} refs/heads/main {}\n",
        "1".repeat(40),
        "0".repeat(40)
    );
    child
        .stdin
        .take()
        .unwrap()
        .write_all(line.repeat(5).as_bytes())
        .unwrap();
    let ran: Ran = child.wait_with_output().unwrap().into();
    assert_eq!(ran.code, 2, "{ran:?}");
    assert!(
        ran.stderr
            .contains("pre-push input is larger than the input cap of 100 bytes"),
        "{ran:?}"
    );
    // No colour codes when stderr is not a terminal; on a terminal only without NO_COLOR. (With a policy, the
    // hooks' gate builds its scope globs, which logs at debug level.)
    env.commit_policy("[run]\nmax_reworks = 0\n");
    let ran = env.ccfan(&["-vv", "verify", "--staged"]);
    assert!(ran.stderr.contains(" DEBUG "), "{ran:?}");
    assert!(!ran.stderr.contains('\u{1b}'), "{ran:?}");
    let on_a_terminal = |no_color: bool| -> String {
        let line = format!("'{}' -vv verify --staged", env!("CARGO_BIN_EXE_ccfan"));
        let mut command = env.command(&[]);
        command.env_remove("NO_COLOR");
        if no_color {
            command.env("NO_COLOR", "1");
        }
        let mut script = std::process::Command::new("script");
        script
            .args(["-qec", &line, "/dev/null"])
            .current_dir(&env.repo);
        for (name, value) in command.get_envs() {
            match value {
                Some(value) => script.env(name, value),
                None => script.env_remove(name),
            };
        }
        let output = script.stdin(Stdio::null()).output().unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let coloured = on_a_terminal(false);
    assert!(
        coloured.contains("DEBUG") && coloured.contains('\u{1b}'),
        "{coloured}"
    );
    let plain = on_a_terminal(true);
    assert!(
        plain.contains("DEBUG") && !plain.contains('\u{1b}'),
        "{plain}"
    );
}

/// A folder nested deeper than libgit2 goes (100 levels) under `src/`.
const DEEP: &str = "d=src; i=0; while [ $i -lt 120 ]; do d=\"$d/d\"; i=$((i+1)); done; mkdir -p \"$d\"; echo deep > \"$d/f.txt\"";

#[test]
fn an_attempt_libgit2_cannot_record_is_recorded_through_git_or_blocks_with_its_work_kept() {
    let env = TestEnv::new();
    env.commit_policy("[run]\nmax_reworks = 1\n");
    let worker = env.script("deep.sh", DEEP);
    let tasks = command_tasks(&env, &["w"], &worker, "");
    let run = env.run(&tasks, &[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(task(&run.json(), "w")["state"], "merged", "{run:?}");
    assert!(
        env.git(&["ls-tree", "-r", "--name-only", "main"])
            .contains("/d/d/f.txt")
    );

    // When git cannot record it either (here: its tree depth capped below the parent's), the task is blocked
    // with the reason, not `error`, and the work stays in the worktree.
    let env = TestEnv::new();
    env.commit_policy("[run]\nmax_reworks = 1\n");
    let worker = env.script(
        "deep2.sh",
        &format!("{DEEP}\nif [ -e \"$PROBE/once\" ]; then echo more > src/more.txt; else touch \"$PROBE/once\"; echo out > README.md; fi"),
    );
    let tasks = command_tasks(&env, &["w"], &worker, "allowed = [\"src/**\"]");
    std::fs::write(
        env.home().join(".gitconfig"),
        "[core]\n\tmaxTreeDepth = 50\n",
    )
    .unwrap();
    // A checkout is re-read whole, which libgit2 gives up on at this depth; a copy-on-write tree is recorded from
    // its upper layer path by path, which libgit2 manages. The fallback this checks is the checkout's.
    let run = env.ccfan_with(
        &[
            "run",
            "--json",
            "--tasks",
            tasks.to_str().unwrap(),
            "--no-merge",
        ],
        &[("CCFAN_TREES", "checkout")],
    );
    assert_eq!(run.code, 1, "{run:?}");
    let view = run.json();
    let t = task(&view, "w");
    assert_eq!(t["state"], "blocked", "{run:?}");
    let reason = t["reason"].as_str().unwrap();
    assert!(reason.contains("could not record attempt 2"), "{reason}");
    let worktree = Path::new(t["worktree"].as_str().unwrap());
    assert!(worktree.join("src/more.txt").exists());
    let run_id = view["run_id"].as_str().unwrap();
    env.git(&["rev-parse", &format!("refs/ccfan/{run_id}/w/attempt-1")]);
}

#[test]
fn a_full_disk_is_named_with_its_path() {
    if !rustix_is_root() {
        eprintln!(
            "a_full_disk_is_named_with_its_path: needs root to mount a small tmpfs (CI runs as root)"
        );
        assert!(
            std::env::var_os("CCFAN_REQUIRE_TOOLS").is_none_or(|v| v != "1"),
            "CCFAN_REQUIRE_TOOLS=1: this test must run (as root)"
        );
        return;
    }
    let env = TestEnv::new();
    let disk = env.tmp.path().join("disk");
    std::fs::create_dir_all(&disk).unwrap();
    let worker = env.script(
        "fill.sh",
        "head -c 20000000 /dev/zero > src/big.bin; i=0; while [ $i -lt 300 ]; do echo $i > src/f$i.txt; i=$((i+1)); done; true",
    );
    let tasks = command_tasks(&env, &["w"], &worker, "");
    let ccfan = env!("CARGO_BIN_EXE_ccfan");
    let script = format!(
        "set -e\nmount -t tmpfs -o size=12m tmpfs '{disk}'\ncp -r '{repo}' '{disk}/repo'\ncd '{disk}/repo'\n\
         export CCFAN_WORKTREE_ROOT='{disk}/wt'\n\
         printf '[run]\\nmax_reworks = 0\\n' > ccfan.toml\n\
         git add ccfan.toml && git commit -qm policy\n\
         '{ccfan}' run --tasks '{tasks}' 2>&1 || echo \"exit $?\"\n'{ccfan}' status --json \"$(ls .git/ccfan/runs)\"\n",
        disk = disk.display(),
        repo = env.repo.display(),
        tasks = tasks.display(),
    );
    let mut command = std::process::Command::new("unshare");
    command.args(["-m", "sh", "-c", &script]);
    for (name, value) in env.ccfan_env() {
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
    }
    let ran: Ran = command.stdin(Stdio::null()).output().unwrap().into();
    assert!(ran.stdout.contains("exit 3"), "{ran:?}");
    assert!(ran.stdout.contains("error: the disk is full"), "{ran:?}");
    let status_json = &ran.stdout[ran.stdout.find("{\n").unwrap()..];
    let status: Value = serde_json::from_str(status_json).unwrap();
    let t = task(&status, "w");
    assert_eq!(t["state"], "error", "{t}");
    let reason = t["reason"].as_str().unwrap();
    assert!(
        reason.contains("the disk is full") && reason.contains(&format!("{}/wt", disk.display())),
        "{reason}"
    );
}

fn rustix_is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

#[test]
fn tasks_making_the_same_edit_land_one_commit() {
    let env = TestEnv::new();
    let worker = env.script("same.sh", "echo same > src/same.txt");
    let ids = ["t0", "t1", "t2"];
    let tasks = command_tasks(&env, &ids, &worker, "");
    let before: usize = env
        .git(&["rev-list", "--count", "main"])
        .trim()
        .parse()
        .unwrap();
    let run = env.run(&tasks, &[]);
    assert_eq!(run.code, 0, "{run:?}");
    let view = run.json();
    let after: usize = env
        .git(&["rev-list", "--count", "main"])
        .trim()
        .parse()
        .unwrap();
    assert_eq!(after, before + 1, "one commit landed");
    assert!(task(&view, "t0")["already_landed"].is_null());
    for id in ["t1", "t2"] {
        let t = task(&view, id);
        assert_eq!(t["state"], "merged", "{t}");
        assert_eq!(t["already_landed"]["by_task"], "t0", "{t}");
        let reason = t["reason"].as_str().unwrap();
        assert!(reason.contains("already on main, landed by t0"), "{reason}");
    }
    // Rolling back a task that landed nothing of its own reverts nobody else's commit.
    let run_id = view["run_id"].as_str().unwrap();
    let ran = env.ccfan(&["rollback", &format!("{run_id}/t1")]);
    assert_ne!(ran.code, 0, "{ran:?}");
    assert!(
        ran.stdout.contains("no commit of its own") || ran.stderr.contains("no commit of its own"),
        "{ran:?}"
    );
    assert_eq!(
        env.git(&["rev-list", "--count", "main"])
            .trim()
            .parse::<usize>()
            .unwrap(),
        after
    );
}
