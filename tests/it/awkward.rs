//! Awkward changes the gate must handle with a clear result and no panic: non-UTF-8 names, CRLF, no final
//! newline, binaries, a 100 MB file, a 10,000-file diff, an empty diff, delete-then-re-add, case-only renames and
//! symlink loops.

use crate::env::{TestEnv, task};

fn run_worker(env: &TestEnv, body: &str) -> (serde_json::Value, serde_json::Value) {
    let worker = env.script("awkward.sh", body);
    let tasks = env.tasks(&format!(
        "[[task]]\nid = \"w\"\ngoal = \"awkward\"\nworker = \"w\"\ntimeout = \"10m\"\n[workers.w]\nkind = \"command\"\ncommand = [\"{}\"]\n",
        worker.display()
    ));
    let run = env.run(&tasks, &[]);
    assert!(run.code == 0 || run.code == 1, "{run:?}");
    assert!(!run.stderr.contains("panicked"), "{run:?}");
    let view = run.json();
    let run_id = view["run_id"].as_str().unwrap().to_string();
    let verify = env.ccfan(&["verify", "--json", &run_id]);
    assert!(verify.code == 0 || verify.code == 1, "{verify:?}");
    (view, verify.json()["tasks"][0]["report"].clone())
}

fn file<'a>(report: &'a serde_json::Value, path: &str) -> &'a serde_json::Value {
    report["diff"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == path)
        .unwrap_or_else(|| panic!("{path} not in {}", report["diff"]["files"]))
}

#[test]
fn odd_names_line_endings_binaries_renames_and_symlink_loops() {
    let env = TestEnv::new();
    let (view, report) = run_worker(
        &env,
        r#"set -eu
printf 'one\r\ntwo\r\n' > crlf.txt
printf 'no final newline' > nonl.txt
printf '\000\001\002\003binary' > blob.bin
echo latin1 > "$(printf 'caf\351.txt')"
rm src/lib.txt && printf 'one\ntwo\nthree\nfour\n' > src/lib.txt
mv README.md readme.md
ln -s loop-b loop-a
ln -s loop-a loop-b"#,
    );
    assert_eq!(task(&view, "w")["state"], "merged", "{view}");
    assert_eq!(file(&report, "crlf.txt")["added"], 2);
    assert_eq!(file(&report, "nonl.txt")["added"], 1);
    assert_eq!(file(&report, "blob.bin")["binary"], true);
    assert_eq!(
        file(&report, "src/lib.txt")["kind"],
        "modified",
        "deleted then re-added is a modification"
    );
    let renamed = file(&report, "readme.md");
    assert_eq!(
        (renamed["kind"].as_str(), renamed["old_path"].as_str()),
        (Some("renamed"), Some("README.md"))
    );
    assert_eq!(file(&report, "loop-a")["symlink_target"], "loop-b");
    assert_eq!(file(&report, "loop-b")["new_mode"], 0o120000);
    let odd = report["diff"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"].as_str().unwrap().starts_with("caf"));
    assert!(odd.is_some(), "the non-UTF-8 name is listed (lossily)");
    let secrets = report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "secrets")
        .unwrap();
    assert!(
        secrets["note"].as_str().unwrap().contains("blob.bin"),
        "{secrets}"
    );
}

#[test]
fn an_empty_diff_is_accepted_with_a_warning() {
    let env = TestEnv::new();
    let (view, report) = run_worker(&env, "touch src/lib.txt");
    assert_eq!(task(&view, "w")["state"], "merged");
    let diff = report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "diff")
        .unwrap();
    assert_eq!(diff["findings"][0]["rule"], "empty-diff");
}

#[test]
fn a_ten_thousand_file_diff_and_a_100_mb_file() {
    let env = TestEnv::new();
    let (view, report) = run_worker(
        &env,
        r#"set -eu
mkdir -p many
i=0
while [ $i -lt 10000 ]; do echo "file $i" > many/f$i.txt; i=$((i+1)); done
yes 'an ordinary line of text in a very large file 0123456789' | head -c 100000000 > big.txt"#,
    );
    assert_eq!(task(&view, "w")["state"], "merged", "{view}");
    assert_eq!(report["diff"]["files_changed"], 10001);
    assert_eq!(file(&report, "big.txt")["added"], 100_000_000 / 57 + 1);
}
