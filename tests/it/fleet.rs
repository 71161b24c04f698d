//! Seeing the fleet: the scorecard across runs, per worker profile, from what the gate really found; the run
//! report as HTML and Markdown.

use crate::env::TestEnv;

#[test]
fn the_scorecard_counts_first_attempt_acceptance_reworks_scope_and_secrets_per_profile() {
    let env = TestEnv::new();
    three_endings(&env);
    let card = env.ccfan(&["scorecard", "--json"]);
    assert_eq!(card.code, 0, "{card:?}");
    let card = card.json();
    assert_eq!(card["runs"], 1, "{card}");
    let row = |profile: &str| {
        card["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|row| row["profile"] == profile)
            .unwrap_or_else(|| panic!("no row for {profile}: {card}"))
            .clone()
    };
    let good = row("good");
    assert_eq!(
        (
            &good["model"],
            &good["tasks"],
            &good["accepted"],
            &good["accepted_first_attempt"]
        ),
        (&"-".into(), &1.into(), &1.into(), &1.into()),
        "{good}"
    );
    assert_eq!(good["mean_reworks"], 0.0);
    let stray = row("stray");
    assert_eq!(
        (&stray["accepted"], &stray["accepted_first_attempt"]),
        (&1.into(), &0.into()),
        "{stray}"
    );
    assert_eq!(stray["mean_reworks"], 1.0, "{stray}");
    assert_eq!(stray["scope_violations"], 1, "{stray}");
    let leak = row("leak");
    assert_eq!(leak["accepted"], 0, "{leak}");
    assert!(leak["secrets_caught"].as_u64().unwrap() >= 1, "{leak}");
    assert!(good["median_secs"].as_f64().is_some());
    // The table names every profile; a bad --since is bad input naming the flag.
    let table = env.ccfan(&["scorecard"]);
    assert!(
        table.stdout.contains("good")
            && table.stdout.contains("stray")
            && table.stdout.contains("1ST/ACCEPTED"),
        "{table:?}"
    );
    let future = env
        .ccfan(&["scorecard", "--json", "--since", "2999-01-01"])
        .json();
    assert_eq!(future["runs"], 0, "{future}");
    let bad = env.ccfan(&["scorecard", "--since", "last tuesday"]);
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(bad.stderr.contains("--since"), "{bad:?}");
}

/// A run with one task of each ending: landed, reworked into scope, blocked for a secret.
fn three_endings(env: &TestEnv) -> String {
    env.commit_policy("[run]\nmax_reworks = 1\n");
    let good = env.script("good.sh", "echo ok >> src.txt");
    let stray = env.script(
        "stray.sh",
        "if [ \"$CCFAN_ATTEMPT\" = 1 ]; then echo x > outside.txt; else rm outside.txt; echo y > docs.txt; fi",
    );
    // Built at run time, so no key sits in this repository's sources.
    let leak = env.script(
        "leak.sh",
        "key=\"AKIA\"\"QYLPMN5HFIQR7XYZ\"\nprintf 'AWS_ACCESS_KEY_ID=%s\\n' \"$key\" > deploy.env\necho \"<b>the key is $key</b>\"",
    );
    let tasks = env.tasks(&format!(
        "[workers.good]\nkind = \"command\"\ncommand = [\"{}\"]\n\
         [workers.stray]\nkind = \"command\"\ncommand = [\"{}\"]\n\
         [workers.leak]\nkind = \"command\"\ncommand = [\"{}\"]\n\
         [[task]]\nid = \"g1\"\ngoal = \"x\"\nworker = \"good\"\nallowed = [\"src.txt\"]\n\
         [[task]]\nid = \"s1\"\ngoal = \"x\"\nworker = \"stray\"\nallowed = [\"docs.txt\"]\n\
         [[task]]\nid = \"l1\"\ngoal = \"x\"\nworker = \"leak\"\n",
        good.display(),
        stray.display(),
        leak.display()
    ));
    let ran = env.run(&tasks, &["--no-merge"]);
    assert_eq!(ran.code, 1, "{ran:?}");
    ran.json()["run_id"].as_str().unwrap().to_string()
}

#[test]
fn the_markdown_report_summarises_a_run_for_a_pull_request() {
    let env = TestEnv::new();
    let run_id = three_endings(&env);
    let md = env.ccfan(&["report", &run_id, "--format", "md"]);
    assert_eq!(md.code, 0, "{md:?}");
    assert!(!md.stdout.contains("QYLPMN5HFIQR7XYZ"), "{}", md.stdout);
    let base = env.git(&["rev-parse", "--short=10", "HEAD"]);
    let stable = md
        .stdout
        .replace(&run_id, "RUN")
        .replace(base.trim(), "BASE");
    insta::assert_snapshot!("report_markdown", stable);
}

#[test]
fn the_html_report_is_one_file_that_renders_offline_with_secrets_redacted() {
    let env = TestEnv::new();
    let run_id = three_endings(&env);
    let out = env.tmp.path().join("report.html");
    let made = env.ccfan(&["report", &run_id, "--out", out.to_str().unwrap()]);
    assert_eq!(made.code, 0, "{made:?}");
    let page = std::fs::read_to_string(&out).unwrap();
    assert!(page.starts_with("<!doctype html>"), "{page}");
    assert!(
        !page.contains("QYLPMN5HFIQR7XYZ"),
        "a raw secret in the report"
    );
    // One file: nothing is fetched (no external script, style, image or font).
    for external in ["http://", "https://", "src=", "<link", "@import", "url("] {
        assert!(!page.contains(external), "{external} in the report");
    }
    // What the worker printed is shown as text, never as markup.
    assert!(
        page.contains("&lt;b&gt;the key is"),
        "the log tail is escaped"
    );
    for id in ["g1", "s1", "l1"] {
        assert!(
            page.contains(&format!("id=\"t-{id}\"")),
            "{id} has a section"
        );
    }
    assert!(
        page.contains("<span class=\"add\">+ok</span>"),
        "the diff is highlighted"
    );
    // `run --report` writes it at the end of a run.
    let tasks = env.tasks(
        "[workers.w]\nkind = \"command\"\ncommand = [\"sh\", \"-c\", \"echo more >> src.txt\"]\n[[task]]\nid = \"again\"\ngoal = \"x\"\nworker = \"w\"\n",
    );
    let summary = env.tmp.path().join("summary.md");
    let ran = env.run(
        &tasks,
        &["--no-merge", "--report", summary.to_str().unwrap()],
    );
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(
        std::fs::read_to_string(&summary)
            .unwrap()
            .contains("| `again` | ✅ accepted")
    );
    // A browser renders it with no network at all.
    let Some(browser) = crate::env::installed(
        "the_html_report_is_one_file_that_renders_offline_with_secrets_redacted",
        "chromium",
        ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .map(std::path::PathBuf::from)
            .find(|path| path.exists()),
    ) else {
        return;
    };
    let dom = std::process::Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--proxy-server=127.0.0.1:9",
            "--dump-dom",
        ])
        .arg(format!("file://{}", out.display()))
        .env("HOME", env.home())
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.contains("ccfan run") && dom.contains("t-l1"), "{dom}");
}

#[test]
fn a_broken_price_table_is_named_by_doctor_and_never_blocks_status() {
    let env = TestEnv::new();
    let run_id = three_endings(&env);
    let folder = env.home().join(".config/ccfan");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("prices.toml"), "date = 3\n").unwrap();
    let doctor = env.ccfan(&["doctor", "--json"]).json();
    let problem = doctor["prices"]["problem"].as_str().unwrap_or_default();
    assert!(problem.contains("prices.toml"), "{doctor}");
    let status = env.ccfan(&["status", &run_id, "--json"]);
    assert_eq!(status.code, 0, "{status:?}");
    assert_eq!(status.json()["run_id"], run_id.as_str());
    // The scorecard prices with it, so it says what is wrong.
    let card = env.ccfan(&["scorecard"]);
    assert_eq!(card.code, 2, "{card:?}");
    assert!(card.stderr.contains("prices.toml"), "{card:?}");
}
