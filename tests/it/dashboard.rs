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
        let line = lines.next().unwrap().unwrap();
        let url = line
            .split_whitespace()
            .find(|word| word.starts_with("http://127.0.0.1:"))
            .unwrap_or_else(|| panic!("no link in {line:?}"))
            .to_string();
        // Keep draining its stderr so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let rest = url.trim_start_matches("http://127.0.0.1:");
        let (port, query) = rest.split_once('/').unwrap();
        Dashboard {
            child,
            port: port.parse().unwrap(),
            token: query.trim_start_matches("?token=").to_string(),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/?token={}", self.port, self.token)
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

    /// Signs in with the link's token; returns the cookie header line.
    fn sign_in(&self) -> String {
        let (status, head, _) = self.http("GET", &format!("/?token={}", self.token), &[], "");
        assert_eq!(status, 303, "{head}");
        let cookie = head
            .lines()
            .find_map(|line| line.strip_prefix("set-cookie: "))
            .unwrap();
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
            "{cookie}"
        );
        format!("Cookie: {}", cookie.split(';').next().unwrap())
    }

    /// The page's anti-forgery token.
    fn csrf(&self, cookie: &str) -> String {
        let (status, _, page) = self.http("GET", "/", &[cookie.to_string()], "");
        assert_eq!(status, 200);
        let start = page.find("name=\"ccfan-csrf\" content=\"").unwrap() + 27;
        page[start..start + 32].to_string()
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
    let leak = env.script(
        "leak.sh",
        &format!("set -eu\necho 'token = \"{}\"' > src/k.txt", fakes.github),
    );
    let wait = env.script(
        "slow.sh",
        "set -eu\nwhile [ ! -e \"$PROBE/go\" ]; do sleep 0.05; done\necho slow > src/slow.txt",
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

#[test]
fn the_dashboard_lets_in_only_its_own_page_and_never_shows_a_raw_secret() {
    let env = TestEnv::new();
    let fakes = Fakes::new();
    let file = tasks(&env, &fakes, false);
    let run = env.run(&file, &["--no-merge"]);
    let run_id = run.json()["run_id"].as_str().unwrap().to_string();
    let dash = Dashboard::start(&env);
    // No cookie, a wrong token, another host: out.
    assert_eq!(dash.http("GET", "/api/state", &[], "").0, 401);
    assert_eq!(dash.http("GET", "/?token=00", &[], "").0, 401);
    let cookie = dash.sign_in();
    let evil_host = "Host: attacker.example:80".to_string();
    assert_eq!(
        dash.http("GET", "/api/state", &[cookie.clone(), evil_host], "")
            .0,
        403
    );
    // In: the state holds the run, grouped, with the key redacted.
    let (status, head, state) = dash.http("GET", "/api/state", std::slice::from_ref(&cookie), "");
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
        std::slice::from_ref(&cookie),
        "",
    );
    assert_eq!(status, 200);
    assert!(
        detail.contains("src/k.txt") && detail.contains("[REDACTED]"),
        "{detail}"
    );
    assert!(
        !detail.contains(&fakes.github),
        "raw key in the task detail"
    );
    // Actions need the page's token in a header, from this origin.
    let csrf = dash.csrf(&cookie);
    let path = format!("/api/runs/{run_id}/actions");
    let retry = r#"{"action":"retry","task":"fix"}"#;
    assert_eq!(
        dash.http("POST", &path, std::slice::from_ref(&cookie), retry)
            .0,
        403
    );
    let token = format!("X-Ccfan-Csrf: {csrf}");
    let evil = "Origin: http://attacker.example".to_string();
    assert_eq!(
        dash.http("POST", &path, &[cookie.clone(), token.clone(), evil], retry)
            .0,
        403
    );
    let cross = "Sec-Fetch-Site: cross-site".to_string();
    assert_eq!(
        dash.http(
            "POST",
            &path,
            &[cookie.clone(), token.clone(), cross],
            retry
        )
        .0,
        403
    );
    assert_eq!(
        dash.http("POST", &path, std::slice::from_ref(&token), retry)
            .0,
        401
    );
    // Bad input names what is missing; a refused operation says why.
    let (status, _, body) = dash.http(
        "POST",
        &path,
        &[cookie.clone(), token.clone()],
        r#"{"action":"rework","task":"fix"}"#,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("note"), "{body}");
    let (status, _, body) = dash.http(
        "POST",
        &path,
        &[cookie.clone(), token.clone()],
        r#"{"action":"explode"}"#,
    );
    assert_eq!(status, 400, "{body}");
    let (status, _, body) = dash.http(
        "POST",
        &path,
        &[cookie.clone(), token.clone()],
        r#"{"action":"cancel"}"#,
    );
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains("not running") || body.contains("finished"),
        "{body}"
    );
    // A good one runs, as the CLI's would: the leaked key's task is rolled back.
    let (status, _, body) = dash.http(
        "POST",
        &path,
        &[cookie, token],
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

/// Reads the event stream until `stop` is set; returns all it got.
fn listen(
    port: u16,
    cookie: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let request = format!("GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{cookie}\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buffer = [0u8; 65536];
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buffer[..n]),
            Err(_) => {}
        }
    }
    String::from_utf8_lossy(&got).into_owned()
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
    let cookie = dash.sign_in();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let events = {
        let (port, stop) = (dash.port, stop.clone());
        std::thread::spawn(move || listen(port, cookie, stop))
    };
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
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let events = events.join().unwrap();
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
    // Nothing raw anywhere the page or the feed showed; the redacted form did show.
    assert!(
        events.contains("event: snapshot") && events.contains("event: delta"),
        "{events}"
    );
    assert!(
        !events.contains(&fakes.github),
        "raw key in the event stream"
    );
    let mut seen_redacted = false;
    for entry in std::fs::read_dir(&out).unwrap() {
        let page = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        assert!(!page.contains(&fakes.github), "raw key in a page");
        seen_redacted |= page.contains("[REDACTED]");
    }
    assert!(seen_redacted, "the leaked key's diff was shown redacted");
}
