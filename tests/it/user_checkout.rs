//! The user's own checkout is sacred: uncommitted, staged and untracked changes are byte-identical afterwards.

use std::collections::BTreeMap;
use std::path::Path;

use crate::env::{TestEnv, task};

fn snapshot(dir: &Path, into: &mut BTreeMap<String, Vec<u8>>, root: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let relative = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if relative == ".git" {
            continue;
        }
        if path.is_dir() {
            snapshot(&path, into, root);
        } else {
            into.insert(relative, std::fs::read(&path).unwrap());
        }
    }
}

fn state(env: &TestEnv) -> (BTreeMap<String, Vec<u8>>, Vec<u8>, Vec<u8>) {
    let mut files = BTreeMap::new();
    snapshot(&env.repo, &mut files, &env.repo);
    (
        files,
        std::fs::read(env.repo.join(".git/index")).unwrap(),
        std::fs::read(env.repo.join(".git/HEAD")).unwrap(),
    )
}

#[test]
fn a_dirty_checkout_is_left_byte_identical() {
    let env = TestEnv::new();
    env.write("src/lib.txt", "one\nTWO (edited, not staged)\nthree\n");
    env.write("README.md", "# staged edit\n");
    env.git(&["add", "README.md"]);
    env.write("README.md", "# staged edit, then edited again\n");
    env.write("notes/untracked.txt", "mine\n");
    env.write("build.log", "ignored file\n");
    let before = state(&env);

    let worker = env.script(
        "w.sh",
        "echo from-worker > src/lib.txt\nrm README.md\necho x > notes.txt",
    );
    let tasks = env.tasks(&format!(
        "[[task]]\ngoal = \"edit the same files the user is editing\"\nworker = \"w\"\n[workers.w]\nkind = \"command\"\ncommand = [\"{}\"]\n",
        worker.display()
    ));
    let main_before = env.git(&["rev-parse", "main"]);
    let ran = env.run(&tasks, &[]);
    assert_eq!(state(&env), before, "ccfan run changed the user's checkout");
    // main is checked out with uncommitted edits in the files the merge changes: main stays where it was, the
    // result goes to the run's integration branch, and the exit code and the message say so.
    assert_eq!(ran.code, 1, "{ran:?}");
    assert_eq!(env.git(&["rev-parse", "main"]), main_before);
    let view = ran.json();
    let run_id = view["run_id"].as_str().unwrap();
    let integration = format!("ccfan/{run_id}/integration");
    let t = task(&view, "t1");
    assert_eq!(t["state"], "accepted", "{t}");
    let reason = t["reason"].as_str().unwrap();
    assert!(
        reason.contains(&integration)
            && reason.contains("uncommitted changes in README.md, src/lib.txt"),
        "{reason}"
    );
    assert!(
        ran.stderr
            .contains(&format!("git merge --ff-only {integration}")),
        "{}",
        ran.stderr
    );
    assert_eq!(
        env.git(&["show", &format!("{integration}:src/lib.txt")]),
        "from-worker\n"
    );
    assert_eq!(
        env.git(&["rev-parse", &format!("{integration}~1")]),
        main_before
    );
    for args in [&["status"][..], &["gc"][..]] {
        let ran = env.ccfan(args);
        assert_eq!(ran.code, 0, "{ran:?}");
        assert_eq!(
            state(&env),
            before,
            "ccfan {args:?} changed the user's checkout"
        );
    }
}
