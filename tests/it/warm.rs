//! Task trees that can run a real project: the ignored files `.worktreeinclude` selects are copied into every task
//! worktree and every verification checkout, and recording an attempt reads only what changed.

use crate::env::{TestEnv, task};

fn include_setup(env: &TestEnv) {
    env.write(".gitignore", "*.log\n.env\nconfig/*.local\n");
    env.git(&["add", ".gitignore"]);
    env.git(&["commit", "-qm", "ignore local files"]);
    env.write(".env", "API_URL=http://localhost\n");
    env.write("config/db.local", "port = 5432\n");
    env.write("debug.log", "not included\n");
    env.write(
        ".worktreeinclude",
        "# local files the tests need\n.env\nconfig/*.local\n",
    );
}

#[test]
fn ignored_files_listed_in_worktreeinclude_reach_task_trees_and_the_verification_checkout() {
    let env = TestEnv::new();
    include_setup(&env);
    env.commit_policy(
        "[tests]\ncommand = [\"sh\", \"-c\", \"grep -q localhost .env && test -f config/db.local\"]\n",
    );
    let worker = env.script(
        "needs-env.sh",
        "test -f .env && test -f config/db.local && test ! -e debug.log || exit 7\n\
         echo checked > checked.txt\necho changed > .env",
    );
    let tasks = env.tasks(&format!(
        "[[task]]\nid = \"t\"\ngoal = \"x\"\nworker = \"w\"\n[workers.w]\nkind = \"command\"\ncommand = [\"{}\"]\n",
        worker.display()
    ));
    let ran = env.run(&tasks, &[]);
    assert_eq!(ran.code, 0, "{ran:?}");
    let view = ran.json();
    assert_eq!(task(&view, "t")["state"], "merged", "{view}");
    // What landed is the tracked change only: the copied files stay ignored, and the user's own are untouched.
    assert_eq!(
        env.git(&["show", "--name-only", "--format=", "HEAD"]),
        "checked.txt\n"
    );
    assert_eq!(
        std::fs::read_to_string(env.repo.join(".env")).unwrap(),
        "API_URL=http://localhost\n"
    );
}

#[test]
fn a_worktreeinclude_entry_outside_the_repository_is_bad_input_naming_its_line() {
    let env = TestEnv::new();
    env.write(".worktreeinclude", ".env\n../other/.env\n");
    let tasks = env.tasks(
        "[[task]]\ngoal = \"x\"\nworker = \"w\"\n[workers.w]\nkind = \"command\"\ncommand = [\"true\"]\n",
    );
    let ran = env.run(&tasks, &[]);
    assert_eq!(ran.code, 2, "{ran:?}");
    assert!(
        ran.stderr.contains(".worktreeinclude:2") && ran.stderr.contains("outside the repository"),
        "{ran:?}"
    );
    assert!(
        !env.state_dir().exists(),
        "nothing is written before the run starts"
    );
}

#[test]
fn each_task_gets_its_index_and_its_own_ports_in_the_worker_and_the_gate() {
    let env = TestEnv::new();
    env.commit_policy(
        "[run]\nports = 4\n[tests]\ncommand = [\"sh\", \"-c\", \"test \\\"$CCFAN_PORT_COUNT\\\" = 4 && grep -qx \\\"$CCFAN_TASK_INDEX $CCFAN_PORT_BASE\\\" out/res-*.txt\"]\n",
    );
    let worker = env.script(
        "ports.sh",
        "mkdir -p out && echo \"$CCFAN_TASK_INDEX $CCFAN_PORT_BASE\" > \"out/res-$CCFAN_TASK_ID.txt\"",
    );
    let tasks = env.tasks(&format!(
        "[defaults]\nworker = \"w\"\nallowed = [\"out/**\"]\n[[task]]\nid = \"a\"\ngoal = \"x\"\n[[task]]\nid = \"b\"\ngoal = \"y\"\n\
         [workers.w]\nkind = \"command\"\ncommand = [\"{}\"]\n",
        worker.display()
    ));
    let ran = env.run(&tasks, &["--jobs", "2"]);
    assert_eq!(ran.code, 0, "{ran:?}");
    let view = ran.json();
    for id in ["a", "b"] {
        assert_eq!(task(&view, id)["state"], "merged", "{view}");
    }
    let read = |id: &str| -> (u32, u32) {
        let text = std::fs::read_to_string(env.repo.join(format!("out/res-{id}.txt"))).unwrap();
        let (index, base) = text.trim().split_once(' ').unwrap();
        (index.parse().unwrap(), base.parse().unwrap())
    };
    let (a, b) = (read("a"), read("b"));
    assert_eq!((a.0, b.0), (0, 1), "indices follow the tasks file");
    assert!(
        (20_000..60_000).contains(&a.1) && a.1.abs_diff(b.1) >= 4,
        "{a:?} {b:?}"
    );
}
