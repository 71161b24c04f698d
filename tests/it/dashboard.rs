//! `ccfan dashboard`: who gets in (the printed link, this server's host, the page's anti-forgery token), what the
//! feed and the task detail hold (no raw secret), and — in headless Chromium — a run going on live, a rework
//! started by a click, and nothing raw in any page or event.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::env::{TestEnv, installed, task};
use crate::hardening::Fakes;

/// A running `ccfan dashboard`, stopped when dropped.
struct Dashboard {
    child: Child,
    port: u16,
    token: String,
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Dashboard {
    fn start(env: &TestEnv) -> Dashboard {
        let mut child = env
            .command(&["dashboard"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        // The link, after whatever it logged first.
        let url = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|line| {
                line.split_whitespace()
                    .find(|word| word.starts_with("http://127.0.0.1:"))
                    .map(str::to_string)
            })
            .expect("ccfan dashboard printed no link");
        // Keep draining its stderr so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let rest = url.trim_start_matches("http://127.0.0.1:");
        let (port, fragment) = rest.split_once('/').unwrap();
        Dashboard {
            child,
            port: port.parse().unwrap(),
            token: fragment.trim_start_matches("#token=").to_string(),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/#token={}", self.port, self.token)
    }

    /// One HTTP/1.1 exchange; `headers` are whole lines. Returns the status, the head and the body.
    fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[String],
        body: &str,
    ) -> (u16, String, String) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
        if !headers
            .iter()
            .any(|h| h.to_ascii_lowercase().starts_with("host:"))
        {
            request.push_str(&format!("Host: 127.0.0.1:{}\r\n", self.port));
        }
        for header in headers {
            request.push_str(header);
            request.push_str("\r\n");
        }
        if !body.is_empty() {
            request.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        request.push_str("\r\n");
        request.push_str(body);
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        (status, head.to_string(), body.to_string())
    }

    /// Trades the link's token for the session; returns the header line that carries it.
    fn sign_in(&self) -> String {
        let body = format!("{{\"token\":\"{}\"}}", self.token);
        let (status, head, answer) = self.http("POST", "/api/session", &[], &body);
        assert_eq!(status, 200, "{head}\n{answer}");
        let doc: serde_json::Value = serde_json::from_str(&answer).unwrap();
        format!("Authorization: Bearer {}", doc["session"].as_str().unwrap())
    }
}

/// A blocked task (out of scope on its first attempt, fine on a rework), a task that leaks a key, and — when
/// `slow` — one that runs until `$PROBE/go` appears. Returns the tasks file.
fn tasks(env: &TestEnv, fakes: &Fakes, slow: bool) -> PathBuf {
    env.commit_policy("[run]\nmax_reworks = 0\n");
    let fix = env.script(
        "fix.sh",
        "set -eu\nif [ \"$CCFAN_ATTEMPT\" = 1 ]; then echo out >> README.md; \
         else printf '# test repo\\n' > README.md; echo hello > src/fix.txt; fi",
    );
    // The key goes into a file, and into the log twice: as printed, and as a private key longer than the log tail
    // the dashboard shows (its header above the cut).
    std::fs::write(env.probe().join("key.pem"), long_key(fakes)).unwrap();
    let leak = env.script(
        "leak.sh",
        &format!(
            "set -eu\necho 'token = \"{key}\"' > src/k.txt\necho 'using {key}'\ncat \"$PROBE/key.pem\"",
            key = fakes.github
        ),
    );
    let wait = env.script(
        "slow.sh",
        "set -eu\ncat \"$PROBE/key.pem\"\nwhile [ ! -e \"$PROBE/go\" ]; do sleep 0.05; done\necho slow > src/slow.txt",
    );
    let mut text = String::new();
    let mut add = |id: &str, script: &std::path::Path| {
        text.push_str(&format!(
            "[[task]]\nid = \"{id}\"\ngoal = \"do {id}\"\nworker = \"{id}\"\nallowed = [\"src/**\"]\n\
             [workers.{id}]\nkind = \"command\"\ncommand = [\"{}\"]\nenv = {{ PROBE = \"{}\" }}\n",
            script.display(),
            env.probe().display()
        ));
    };
    add("fix", &fix);
    add("leak", &leak);
    if slow {
        add("slow", &wait);
    }
    env.tasks(&text)
}

/// A private key of 60 body lines, made from the fixture's random lines.
fn long_key(fakes: &Fakes) -> String {
    let body: Vec<String> = (0..60)
        .map(|i| {
            let line = &fakes.pem_body[i % fakes.pem_body.len()];
            format!("{}{:02}", &line[..58], i)
        })
        .collect();
    format!(
        "-----BEGIN RSA PRIVATE KEY-----\n{}\n-----END RSA PRIVATE KEY-----\n",
        body.join("\n")
    )
}

/// Everything planted that must never be shown raw: the fixture's secrets and every line of the long key's body.
fn planted(env: &TestEnv, fakes: &Fakes) -> Vec<String> {
    let key = std::fs::read_to_string(env.probe().join("key.pem")).unwrap();
    let mut raw = fakes.raw();
    raw.extend(
        key.lines()
            .filter(|line| !line.starts_with("-----"))
            .map(|line| line[..40].to_string()),
    );
    raw
}

#[test]
fn the_dashboard_lets_in_only_its_own_page_and_never_shows_a_raw_secret() {
    let env = TestEnv::new();
    let fakes = Fakes::new();
    let file = tasks(&env, &fakes, false);
    let run = env.run(&file, &["--no-merge"]);
    let run_id = run.json()["run_id"].as_str().unwrap().to_string();
    let dash = Dashboard::start(&env);
    // No session, a wrong token, another host: out. The page itself holds no data.
    assert_eq!(dash.http("GET", "/api/state", &[], "").0, 401);
    assert_eq!(dash.http("GET", "/api/events", &[], "").0, 401);
    assert_eq!(dash.http("GET", "/api/scorecard", &[], "").0, 401);
    let (status, _, page) = dash.http("GET", "/", &[], "");
    assert_eq!(status, 200);
    assert!(!page.contains(&dash.token), "the page holds no secret");
    let wrong = r#"{"token":"00000000000000000000000000000000"}"#;
    assert_eq!(dash.http("POST", "/api/session", &[], wrong).0, 401);
    let session = dash.sign_in();
    // The link works once.
    let again = format!("{{\"token\":\"{}\"}}", dash.token);
    assert_eq!(dash.http("POST", "/api/session", &[], &again).0, 401);
    let evil_host = "Host: attacker.example:80".to_string();
    assert_eq!(
        dash.http(
            "GET",
            "/api/state",
            &[session.clone(), evil_host.clone()],
            ""
        )
        .0,
        403
    );
    assert_eq!(
        dash.http("GET", "/", std::slice::from_ref(&evil_host), "")
            .0,
        403
    );
    // In: the state holds the run, grouped, with the key redacted.
    let (status, head, state) = dash.http("GET", "/api/state", std::slice::from_ref(&session), "");
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains("content-security-policy: default-src 'none'"),
        "{head}"
    );
    let doc: serde_json::Value = serde_json::from_str(&state).unwrap();
    let rows = &doc["runs"][0]["rows"];
    assert_eq!(doc["runs"][0]["run_id"], run_id.as_str());
    let row = |id: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(row("fix")["state"], "blocked");
    assert_eq!(row("fix")["group"], "needs_you");
    assert!(row("fix")["needs"].as_str().unwrap().contains("rework"));
    assert!(!state.contains(&fakes.github), "raw key in the state");
    let (status, _, detail) = dash.http(
        "GET",
        &format!("/api/runs/{run_id}/tasks/leak?attempt=1"),
        std::slice::from_ref(&session),
        "",
    );
    assert_eq!(status, 200);
    assert!(
        detail.contains("src/k.txt") && detail.contains("[REDACTED]"),
        "{detail}"
    );
    let (status, _, latest) = dash.http(
        "GET",
        &format!("/api/runs/{run_id}/tasks/leak"),
        std::slice::from_ref(&session),
        "",
    );
    assert_eq!(status, 200);
    assert!(latest.contains("worker log"), "{latest}");
    for raw in planted(&env, &fakes) {
        assert!(
            !detail.contains(&raw) && !latest.contains(&raw),
            "raw secret in the task detail"
        );
        assert!(!state.contains(&raw), "raw secret in the state");
    }
    // Actions need the session, from this origin whenever the browser says where they come from.
    let path = format!("/api/runs/{run_id}/actions");
    let retry = r#"{"action":"retry","task":"fix"}"#;
    let post = |headers: &[String], body: &str| dash.http("POST", &path, headers, body);
    assert_eq!(post(&[], retry).0, 401);
    for bad in [
        "Origin: http://attacker.example",
        "Sec-Fetch-Site: cross-site",
        "Sec-Fetch-Site: same-site",
        "Host: attacker.example:80",
    ] {
        let (status, _, body) = post(&[session.clone(), bad.to_string()], retry);
        assert_eq!(status, 403, "{bad}: {body}");
    }
    // Bad input names what is missing; a refused operation says why.
    let (status, _, body) = post(std::slice::from_ref(&session), "{not json");
    assert_eq!(status, 400, "{body}");
    let (status, _, body) = post(
        std::slice::from_ref(&session),
        r#"{"action":"rework","task":"fix"}"#,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("note"), "{body}");
    let (status, _, body) = post(std::slice::from_ref(&session), r#"{"action":"explode"}"#);
    assert_eq!(status, 400, "{body}");
    let (status, _, body) = post(std::slice::from_ref(&session), r#"{"action":"cancel"}"#);
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains("not running") || body.contains("finished"),
        "{body}"
    );
    let missing = dash.http(
        "GET",
        &format!("/api/runs/{run_id}/tasks/nope"),
        std::slice::from_ref(&session),
        "",
    );
    assert_eq!(missing.0, 404, "{missing:?}");
    // A good one runs, as the CLI's would: the leaked key's task is rolled back.
    let (status, _, body) = post(
        std::slice::from_ref(&session),
        r#"{"action":"rollback","task":"leak"}"#,
    );
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let view = env.ccfan(&["status", &run_id, "--json"]).json();
        if task(&view, "leak")["state"] == "rolled_back" {
            break;
        }
        assert!(Instant::now() < deadline, "{view}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_dashboard_shows_a_run_live_and_a_rework_click_starts_the_next_attempt() {
    let modules = std::env::var_os("CCFAN_AGENT_BIN")
        .map(PathBuf::from)
        .and_then(|bin| bin.parent().map(PathBuf::from));
    let browser = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.exists());
    let Some(modules) = installed(
        "the_dashboard_shows_a_run_live_and_a_rework_click_starts_the_next_attempt",
        "chromium and puppeteer-core",
        modules.filter(|m| m.join("puppeteer-core").exists() && browser.is_some()),
    ) else {
        return;
    };
    let env = TestEnv::new();
    let fakes = Fakes::new();
    let file = tasks(&env, &fakes, true);
    let mut run = env
        .command(&[
            "run",
            "--tasks",
            file.to_str().unwrap(),
            "--no-merge",
            "--json",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let dash = Dashboard::start(&env);
    let out = env.tmp.path().join("pages");
    std::fs::create_dir_all(&out).unwrap();
    let mut node = std::process::Command::new("node");
    node.arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser/dashboard.js"))
        .arg(dash.url())
        .arg(env.probe().join("go"))
        .arg(&out)
        .env("NODE_PATH", &modules)
        .env("HOME", env.home());
    if let Some(shots) = std::env::var_os("CCFAN_SCREENSHOTS") {
        node.arg(shots);
    }
    let driven = node.output().unwrap();
    let _ = run.wait();
    assert!(
        driven.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&driven.stdout),
        String::from_utf8_lossy(&driven.stderr)
    );
    // The rework the click asked for ran: a second attempt, accepted.
    let status = env.ccfan(&["status", "--json"]).json();
    let run_id = status["runs"][0]["run_id"].as_str().unwrap().to_string();
    let view = env.ccfan(&["status", &run_id, "--json"]).json();
    assert_eq!(task(&view, "fix")["state"], "accepted", "{view}");
    assert_eq!(task(&view, "fix")["attempts"], 2, "{view}");
    // Nothing raw anywhere the page showed or the feed sent (the page tapped its own feed into events.txt); the
    // redacted form did show.
    let events = std::fs::read_to_string(out.join("events.txt")).unwrap();
    assert!(
        events.contains("event: snapshot") && events.contains("event: delta"),
        "{events}"
    );
    let mut seen_redacted = false;
    for entry in std::fs::read_dir(&out).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for raw in planted(&env, &fakes) {
            assert!(
                !text.contains(raw.as_str()),
                "raw secret in a page or event"
            );
        }
        seen_redacted |= text.contains("[REDACTED]");
    }
    assert!(
        seen_redacted,
        "the leaked key's diff and log were shown redacted"
    );
}
