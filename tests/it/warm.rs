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
