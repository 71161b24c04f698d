//! The review stage: a reviewer (here a command worker; `agents.rs` runs Codex and Claude Code) judges a change the
//! mechanical stages passed, read-only on the merge-preview tree. `request_changes` sends its comments back to the
//! author as a rework; a malformed answer never approves; `cross` has a run's tasks review each other.

use crate::env::{TestEnv, task};

/// The author: a draft first, the final text once a rework asks for it; it keeps each task file it was given.
const AUTHOR: &str = r#"set -eu
cp "$CCFAN_TASK_FILE" "$PROBE/$CCFAN_TASK_ID.task.$CCFAN_ATTEMPT.json"
mkdir -p src
if [ "$CCFAN_ATTEMPT" = 1 ]; then echo draft > src/feature.txt; else echo final > src/feature.txt; fi"#;

/// The reviewer: requests a change while the feature is a draft, approves it after; it also tries to write into
/// the tree it reviews, and keeps what it was given.
const REVIEWER: &str = r#"set -u
n=$(ls "$PROBE" | grep -c "^review\.$CCFAN_TASK_ID\." || true)
n=$((n + 1))
cp "$CCFAN_REVIEW_DIFF" "$PROBE/review.$CCFAN_TASK_ID.$n.diff"
cp "$CCFAN_TASK_FILE" "$PROBE/review-task.$CCFAN_TASK_ID.$n.json"
pwd > "$PROBE/review-cwd.$CCFAN_TASK_ID.$n"
if echo sneaky > reviewer-wrote.txt 2>/dev/null; then echo wrote > "$PROBE/review-write.$n"; else echo denied > "$PROBE/review-write.$n"; fi
if grep -q draft src/feature.txt; then
  printf '%s' '{"verdict": "request_changes", "summary": "a draft is not the feature", "comments": [{"path": "src/feature.txt", "line": 1, "severity": "error", "message": "write the final text, not a draft"}]}' > "$CCFAN_REPORT_FILE"
else
  printf '%s' '{"verdict": "approve", "summary": "does what the task asks", "comments": [{"path": "src/feature.txt", "line": 1, "severity": "info", "message": "fine"}]}' > "$CCFAN_REPORT_FILE"
fi"#;

fn workers(env: &TestEnv, reviewer_body: &str) -> String {
    let author = env.script("author.sh", AUTHOR);
    let reviewer = env.script("reviewer.sh", reviewer_body);
    format!(
        "[workers.author]\nkind = \"command\"\ncommand = [\"{}\"]\nenv = {{ PROBE = \"{probe}\" }}\n\n\
         [workers.reviewer]\nkind = \"command\"\ncommand = [\"{}\"]\nenv = {{ PROBE = \"{probe}\" }}\n",
        author.display(),
        reviewer.display(),
        probe = env.probe().display()
    )
}

fn feature_task(env: &TestEnv, reviewer_body: &str, extra: &str) -> std::path::PathBuf {
    env.tasks(&format!(
        "{}\n[[task]]\nid = \"feature\"\ngoal = \"write the feature into src/feature.txt\"\nallowed = [\"src/**\"]\n\
         acceptance = [\"src/feature.txt holds the final text\"]\nworker = \"author\"\n{extra}",
        workers(env, reviewer_body)
    ))
}

#[test]
fn a_request_for_changes_goes_back_to_the_author_and_the_second_attempt_lands() {
    let env = TestEnv::new();
    env.commit_policy("[review]\nworker = \"reviewer\"\n");
    let tasks = feature_task(&env, REVIEWER, "");
    let ran = env.run(&tasks, &[]);
    assert_eq!(ran.code, 0, "{ran:?}");
    let run = ran.json();
    let feature = task(&run, "feature");
    assert_eq!(feature["state"], "merged", "{feature}");
    assert_eq!(feature["attempts"], 2);
    assert_eq!(env.git(&["show", "main:src/feature.txt"]).trim(), "final");
    // The author's second attempt was handed the reviewer's comments as findings to fix.
    let probe = env.probe();
    let rework = std::fs::read_to_string(probe.join("feature.task.2.json")).unwrap();
    let rework: serde_json::Value = serde_json::from_str(&rework).unwrap();
    let findings = rework["rework"].as_array().unwrap();
    assert!(
        findings.iter().any(|f| f["stage"] == "review"
            && f["rule"] == "review-comment"
            && f["path"] == "src/feature.txt"
            && f["line"] == 1
            && f["message"] == "write the final text, not a draft"),
        "{rework}"
    );
    assert!(
        findings.iter().any(|f| f["rule"] == "changes-requested"
            && f["message"]
                .as_str()
                .unwrap()
                .contains("a draft is not the feature")),
        "{rework}"
    );
    // The reviewer ran twice, on the merge preview (never the user's checkout), and could not write to it.
    for n in 1..=2 {
        assert_eq!(
            std::fs::read_to_string(probe.join(format!("review-write.{n}")))
                .unwrap()
                .trim(),
            "denied"
        );
        let cwd = std::fs::read_to_string(probe.join(format!("review-cwd.feature.{n}"))).unwrap();
        assert_ne!(std::path::Path::new(cwd.trim()), env.repo.as_path());
    }
    assert!(
        !env.git(&["ls-tree", "-r", "--name-only", "main"])
            .contains("reviewer-wrote")
    );
    let diff = std::fs::read_to_string(probe.join("review.feature.1.diff")).unwrap();
    assert!(diff.contains("+draft"), "{diff}");
    let task_file: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(probe.join("review-task.feature.1.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(task_file["mode"], "review");
    assert_eq!(task_file["review"]["changed"][0], "src/feature.txt");
    assert_eq!(
        task_file["acceptance"][0],
        "src/feature.txt holds the final text"
    );
    // Status shows who reviewed and how the last review ended.
    assert_eq!(feature["review"]["reviewer"], "reviewer", "{feature}");
    assert_eq!(feature["review"]["mode"], "required");
    assert_eq!(feature["review"]["reviews"], 2);
    assert_eq!(feature["review"]["latest"], "approve");
    // The first attempt's report carries the comments as review findings, in JSON and in SARIF.
    let run_id = run["run_id"].as_str().unwrap();
    let status = env.ccfan(&["status", "--json", &format!("{run_id}/feature")]);
    assert_eq!(status.code, 0, "{status:?}");
    let history = status.json();
    let first = &history["attempts"][0];
    assert_eq!(first["verdict"]["verdict"], "rework", "{first}");
    insta::assert_json_snapshot!("review_rework_verdict", first["verdict"]);
    insta::assert_json_snapshot!("review_view", feature["review"]);
    // The person's view says the same.
    let human = env.ccfan(&["status", &format!("{run_id}/feature")]);
    assert!(
        human
            .stdout
            .contains("review: required by `reviewer` · 2 review(s), latest approve"),
        "{human:?}"
    );
    let page = env.tmp.path().join("report.html");
    let made = env.ccfan(&["report", run_id, "--out", page.to_str().unwrap()]);
    assert_eq!(made.code, 0, "{made:?}");
    let page = std::fs::read_to_string(page).unwrap();
    assert!(
        page.contains("required review by reviewer: approve (2 review(s))"),
        "the report does not show the reviews"
    );
}

#[test]
fn a_malformed_answer_never_approves_and_an_advisory_one_never_blocks() {
    let env = TestEnv::new();
    env.commit_policy("[run]\nmax_reworks = 0\n\n[review]\nworker = \"reviewer\"\n");
    let garbage = "echo 'LGTM, ship it!'";
    let tasks = feature_task(&env, garbage, "");
    let ran = env.run(&tasks, &[]);
    assert_ne!(ran.code, 0, "{ran:?}");
    let run = ran.json();
    let feature = task(&run, "feature");
    assert_eq!(feature["state"], "rolled_back", "{feature}");
    assert!(
        feature["reason"]
            .as_str()
            .unwrap()
            .contains("the review stage could not run"),
        "{feature}"
    );
    assert_eq!(feature["review"]["latest"], "invalid");
    assert!(
        !env.git(&["ls-tree", "-r", "--name-only", "main"])
            .contains("feature.txt")
    );
    // `verify` re-runs the gate, the review included, and shows the finding.
    let run_id = run["run_id"].as_str().unwrap();
    let verify = env.ccfan(&["verify", run_id, "--json"]);
    let report = verify.json();
    let text = report.to_string();
    assert!(text.contains("review-invalid"), "{text}");
    assert!(text.contains("holds no JSON object"), "{text}");
    let sarif = env.ccfan(&["verify", run_id, "--sarif"]);
    assert!(sarif.stdout.contains("review-invalid"), "{sarif:?}");

    // The same answer from an advisory reviewer is a warning: the change lands.
    let env = TestEnv::new();
    env.commit_policy(
        "[run]\nmax_reworks = 0\n\n[review]\nworker = \"reviewer\"\nmode = \"advisory\"\n",
    );
    let tasks = feature_task(&env, garbage, "");
    let ran = env.run(&tasks, &[]);
    assert_eq!(ran.code, 0, "{ran:?}");
    let feature = task(&ran.json(), "feature").clone();
    assert_eq!(feature["state"], "merged", "{feature}");
    assert_eq!(feature["review"]["mode"], "advisory");
}

#[test]
fn the_reviewer_sees_the_whole_change_of_twelve_files() {
    let env = TestEnv::new();
    let author = env.script(
        "twelve.sh",
        "mkdir -p src/many && for i in $(seq 1 12); do echo \"content $i\" > src/many/file$i.txt; done",
    );
    let reviewer = env.script("reviewer.sh", REVIEWER);
    let tasks = env.tasks(&format!(
        "[workers.author]\nkind = \"command\"\ncommand = [\"{}\"]\n\
         [workers.reviewer]\nkind = \"command\"\ncommand = [\"{}\"]\nenv = {{ PROBE = \"{}\" }}\n\n\
         [[task]]\nid = \"twelve\"\ngoal = \"add twelve files\"\nallowed = [\"src/**\"]\nworker = \"author\"\n\
         review = {{ worker = \"reviewer\", mode = \"advisory\" }}\n",
        author.display(),
        reviewer.display(),
        env.probe().display()
    ));
    let ran = env.run(&tasks, &[]);
    assert_eq!(ran.code, 0, "{ran:?}");
    let diff = std::fs::read_to_string(env.probe().join("review.twelve.1.diff")).unwrap();
    let brief: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(env.probe().join("review-task.twelve.1.json")).unwrap(),
    )
    .unwrap();
    for i in 1..=12 {
        assert!(
            diff.contains(&format!("+++ b/src/many/file{i}.txt")),
            "file{i} missing from the diff"
        );
        assert!(diff.contains(&format!("+content {i}\n")));
    }
    assert_eq!(brief["review"]["changed"].as_array().unwrap().len(), 12);
}

#[test]
fn a_change_the_mechanical_stages_reject_is_not_reviewed() {
    let env = TestEnv::new();
    env.commit_policy("[run]\nmax_reworks = 0\n\n[review]\nworker = \"reviewer\"\n");
    let stray = env.script("stray.sh", "echo stray >> README.md");
    let reviewer = env.script("reviewer.sh", REVIEWER);
    let tasks = env.tasks(&format!(
        "[workers.author]\nkind = \"command\"\ncommand = [\"{}\"]\n\
         [workers.reviewer]\nkind = \"command\"\ncommand = [\"{}\"]\nenv = {{ PROBE = \"{}\" }}\n\n\
         [[task]]\nid = \"stray\"\ngoal = \"x\"\nallowed = [\"src/**\"]\nworker = \"author\"\n",
        stray.display(),
        reviewer.display(),
        env.probe().display()
    ));
    let ran = env.run(&tasks, &[]);
    assert_ne!(ran.code, 0, "{ran:?}");
    let stray = task(&ran.json(), "stray").clone();
    assert_eq!(stray["review"]["reviews"], 0, "{stray}");
    assert!(!env.probe().join("review-write.1").exists());
}

#[test]
fn cross_review_has_each_task_reviewed_by_the_other_profile() {
    let env = TestEnv::new();
    env.commit_policy("[review]\ncross = true\n");
    let script = r#"set -eu
mkdir -p src
if [ "${CCFAN_REVIEW:-}" = 1 ]; then
  echo "$CCFAN_TASK_ID" > "$PROBE/reviewed-by-$WHO.$CCFAN_TASK_ID"
  printf '%s' '{"verdict": "approve", "summary": "ok"}'
else
  echo "$WHO" > "src/$CCFAN_TASK_ID.txt"
fi"#;
    let worker = env.script("both.sh", script);
    let tasks = env.tasks(&format!(
        "[workers.left]\nkind = \"command\"\ncommand = [\"{w}\"]\nenv = {{ PROBE = \"{p}\", WHO = \"left\" }}\n\
         [workers.right]\nkind = \"command\"\ncommand = [\"{w}\"]\nenv = {{ PROBE = \"{p}\", WHO = \"right\" }}\n\n\
         [[task]]\nid = \"a\"\ngoal = \"a\"\nallowed = [\"src/a.txt\"]\nworker = \"left\"\n\
         [[task]]\nid = \"b\"\ngoal = \"b\"\nallowed = [\"src/b.txt\"]\nworker = \"right\"\n",
        w = worker.display(),
        p = env.probe().display()
    ));
    let ran = env.run(&tasks, &[]);
    assert_eq!(ran.code, 0, "{ran:?}");
    let run = ran.json();
    assert_eq!(task(&run, "a")["review"]["reviewer"], "right");
    assert_eq!(task(&run, "b")["review"]["reviewer"], "left");
    assert_eq!(task(&run, "a")["review"]["cross"], true);
    assert!(env.probe().join("reviewed-by-right.a").exists());
    assert!(env.probe().join("reviewed-by-left.b").exists());

    // With one profile in the run and no other reviewer named, cross review is refused before anything runs.
    let tasks = env.tasks(&format!(
        "[workers.left]\nkind = \"command\"\ncommand = [\"{w}\"]\nenv = {{ PROBE = \"{p}\", WHO = \"left\" }}\n\n\
         [[task]]\nid = \"c\"\ngoal = \"c\"\nallowed = [\"src/c.txt\"]\nworker = \"left\"\n",
        w = worker.display(),
        p = env.probe().display()
    ));
    let ran = env.run(&tasks, &[]);
    assert_eq!(ran.code, 2, "{ran:?}");
    assert!(ran.stderr.contains("review.cross"), "{ran:?}");
}

#[test]
fn bad_review_settings_are_named() {
    let env = TestEnv::new();
    let tasks = env.tasks(
        "[workers.w]\nkind = \"command\"\ncommand = [\"true\"]\n\n\
         [[task]]\nid = \"t\"\ngoal = \"x\"\nworker = \"w\"\nreview = \"nobody\"\n",
    );
    let ran = env.run(&tasks, &[]);
    assert_eq!(ran.code, 2, "{ran:?}");
    assert!(ran.stderr.contains("task[1].review"), "{ran:?}");
    assert!(ran.stderr.contains("nobody"), "{ran:?}");
    env.commit_policy("[review]\nmode = \"strict\"\nworker = \"w\"\n");
    let ran = env.run(&tasks, &[]);
    assert_eq!(ran.code, 2, "{ran:?}");
    assert!(ran.stderr.contains("review.mode"), "{ran:?}");
    // A review the policy requires is a floor a tasks file cannot lower.
    env.commit_policy(
        "[workers.w]\nkind = \"command\"\ncommand = [\"true\"]\n\n[review]\nworker = \"w\"\n",
    );
    for weaker in ["review = false", "review = { mode = \"advisory\" }"] {
        let tasks = env.tasks(&format!(
            "[[task]]\nid = \"t\"\ngoal = \"x\"\nworker = \"w\"\n{weaker}\n"
        ));
        let ran = env.run(&tasks, &[]);
        assert_eq!(ran.code, 2, "{weaker}: {ran:?}");
        assert!(
            ran.stderr
                .contains("turns off a review the policy requires"),
            "{ran:?}"
        );
    }
    let tasks = env.tasks(
        "[[task]]\nid = \"t\"\ngoal = \"x\"\nworker = \"w\"\nreview = { mod = \"advisory\" }\n",
    );
    let ran = env.run(&tasks, &[]);
    assert_eq!(ran.code, 2, "{ran:?}");
    assert!(ran.stderr.contains("review"), "{ran:?}");
}

#[test]
fn best_of_n_prefers_the_candidate_its_reviewer_approved() {
    let env = TestEnv::new();
    env.commit_policy("[review]\nworker = \"reviewer\"\nmode = \"advisory\"\n");
    let small = env.script("small.sh", "mkdir -p src && echo hack > src/f.txt");
    let large = env.script(
        "large.sh",
        "mkdir -p src && printf 'one\\ntwo\\nthree\\n' > src/f.txt",
    );
    let reviewer = env.script(
        "reviewer.sh",
        r#"if grep -q hack src/f.txt; then
  echo '{"verdict": "request_changes", "comments": [{"path": "src/f.txt", "line": 1, "severity": "error", "message": "this only satisfies the check"}]}'
else
  echo '{"verdict": "approve", "summary": "does the job"}'
fi"#,
    );
    let tasks = env.tasks(&format!(
        "[workers.small]\nkind = \"command\"\ncommand = [\"{}\"]\n[workers.large]\nkind = \"command\"\ncommand = [\"{}\"]\n\
         [workers.reviewer]\nkind = \"command\"\ncommand = [\"{}\"]\n\n\
         [[task]]\nid = \"f\"\ngoal = \"write src/f.txt\"\nallowed = [\"src/**\"]\nworkers = [\"small\", \"large\"]\n",
        small.display(),
        large.display(),
        reviewer.display()
    ));
    let ran = env.run(&tasks, &["--jobs", "2"]);
    assert_eq!(ran.code, 0, "{ran:?}");
    let run = ran.json();
    assert_eq!(task(&run, "f-c2")["state"], "merged", "{run}");
    let lost = task(&run, "f-c1");
    assert_eq!(lost["state"], "not_chosen", "{lost}");
    assert!(
        lost["reason"]
            .as_str()
            .unwrap()
            .contains("the reviewer's preference: approved with 0 comment(s) against changes requested with 1 comment(s)"),
        "{lost}"
    );
    assert_eq!(
        env.git(&["show", "main:src/f.txt"]).trim(),
        "one\ntwo\nthree"
    );
}

#[test]
fn verify_carries_a_valid_review_instead_of_asking_again_until_it_approves() {
    let env = TestEnv::new();
    env.commit_policy("[run]\nmax_reworks = 0\n\n[review]\nworker = \"reviewer\"\n");
    let tasks = feature_task(&env, REVIEWER, "");
    let ran = env.run(&tasks, &[]);
    let run = ran.json();
    let feature = task(&run, "feature");
    assert_eq!(feature["state"], "blocked", "{feature}");
    assert_eq!(feature["review"]["reviews"], 1);
    // A reviewer that would now approve anything is not asked: the earlier answer on the same change stands.
    env.script(
        "reviewer.sh",
        r#"echo x > "$PROBE/asked-again"; echo '{"verdict": "approve"}'"#,
    );
    let run_id = run["run_id"].as_str().unwrap();
    let verify = env.ccfan(&["verify", run_id, "--json"]);
    let text = verify.json().to_string();
    assert!(text.contains("reviewed before (the same change)"), "{text}");
    assert!(text.contains("changes-requested"), "{text}");
    assert!(!env.probe().join("asked-again").exists());
    let status = env.ccfan(&["status", "--json", run_id]).json();
    let feature = task(&status, "feature");
    assert_ne!(feature["state"], "accepted", "{feature}");
    assert_eq!(feature["review"]["reviews"], 1);
}
