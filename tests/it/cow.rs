//! Copy-on-write task trees: where ccfan may mount overlays (root, as in CI) every task tree is a view of the
//! prepared base layer holding only what its worker changed; it is mounted again when its mount went away, and `gc`
//! takes it down. Where the mode cannot be had, the run says so (auto) or stops naming the setting (forced).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::env::{TestEnv, copy_on_write, task};

/// Whether `path` is a mount point (its device differs from its parent's).
fn mounted(path: &Path) -> bool {
    let device = |path: &Path| std::fs::metadata(path).map(|meta| meta.dev()).ok();
    device(path).is_some() && device(path) != path.parent().and_then(device)
}

/// Every file under `dir`, relative, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        for entry in std::fs::read_dir(&folder).unwrap().flatten() {
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                stack.push(path);
            } else {
                found.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    found.sort();
    found
}

fn one_task(env: &TestEnv, script: &str) -> PathBuf {
    let worker = env.script("work.sh", script);
    env.tasks(&format!(
        "[[task]]\nid = \"t\"\ngoal = \"x\"\nworker = \"w\"\n[workers.w]\nkind = \"command\"\ncommand = [\"{}\"]\n",
        worker.display()
    ))
}

#[test]
fn a_task_tree_is_a_view_of_the_layer_holding_only_what_its_worker_changed() {
    let env = TestEnv::new();
    for i in 0..50 {
        env.write(&format!("src/file{i}.txt"), &format!("{i}\n"));
    }
    env.git(&["add", "-A"]);
    env.git(&["commit", "-qm", "files"]);
    let tasks = one_task(
        &env,
        "echo edited > src/file1.txt\nrm src/file2.txt\necho new > src/new.txt",
    );
    let ran = env.run(&tasks, &["--no-merge"]);
    assert_eq!(ran.code, 0, "{ran:?}");
    let view = ran.json();
    let t = task(&view, "t");
    assert_eq!(t["state"], "accepted", "{view}");
    let tree = PathBuf::from(t["worktree"].as_str().unwrap());
    let run_id = view["run_id"].as_str().unwrap();
    let changed = env.git(&[
        "diff",
        "--name-status",
        "main",
        &format!("ccfan/{run_id}/t"),
    ]);
    assert_eq!(
        changed,
        "M\tsrc/file1.txt\nD\tsrc/file2.txt\nA\tsrc/new.txt\n"
    );
    if !copy_on_write() {
        assert!(!mounted(&tree), "a plain checkout");
        return;
    }
    assert!(!ran.stderr.contains("full checkouts"), "{}", ran.stderr);
    assert!(mounted(&tree), "{} is a view", tree.display());
    // The private layer holds the change (and the tree's .git link), nothing else: disk per task is what it wrote.
    let upper = tree.parent().unwrap().join(".cow/t/upper");
    assert_eq!(
        files_under(&upper),
        [".git", "src/file1.txt", "src/file2.txt", "src/new.txt"]
    );
    assert_eq!(
        std::fs::read_to_string(tree.join("src/file3.txt")).unwrap(),
        "3\n"
    );
    // git in the tree sees a clean worktree on the task's branch (the index came with the layer).
    let status = std::process::Command::new("git")
        .args(["status", "--porcelain"])
        .current_dir(&tree)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&status.stdout), "");

    // As after a reboot: the mount is gone; `open` shows the tree again, with the work.
    assert!(
        std::process::Command::new("umount")
            .arg(&tree)
            .status()
            .unwrap()
            .success()
    );
    assert!(!tree.join("src").exists());
    let opened = env.ccfan(&["open", &format!("{run_id}/t")]);
    assert_eq!(opened.code, 0, "{opened:?}");
    assert_eq!(
        std::fs::read_to_string(tree.join("src/new.txt")).unwrap(),
        "new\n"
    );

    // gc takes the view down and removes its layer; the base layer it stood on stays for the next run.
    let gc = env.ccfan(&["gc", "--json"]);
    assert_eq!(gc.code, 0, "{gc:?}");
    assert!(!tree.exists() && !tree.parent().unwrap().join(".cow").exists());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(tree.to_str().unwrap()), "{mounts}");
    let layers: Vec<_> = std::fs::read_dir(env.state_dir().join("layers"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(layers.len(), 1, "{layers:?}");
}

#[test]
fn a_mode_that_cannot_be_had_is_said_or_stops_the_run_naming_the_setting() {
    let env = TestEnv::new();
    let tasks = one_task(&env, "echo x > x.txt");
    let bogus = env.ccfan_with(
        &["run", "--json", "--tasks", tasks.to_str().unwrap()],
        &[("CCFAN_TREES", "fast")],
    );
    assert_eq!(bogus.code, 2, "{bogus:?}");
    assert!(
        bogus.stderr.contains("CCFAN_TREES") && bogus.stderr.contains("copy-on-write"),
        "{bogus:?}"
    );
    // A worktree folder whose path mount options cannot carry: forced, the run stops before anything is made.
    let odd = env.worktree_root().with_file_name("trees:odd");
    let root = odd.to_str().unwrap();
    let forced = env.ccfan_with(
        &["run", "--json", "--tasks", tasks.to_str().unwrap()],
        &[
            ("CCFAN_TREES", "copy-on-write"),
            ("CCFAN_WORKTREE_ROOT", root),
        ],
    );
    assert_eq!(forced.code, 2, "{forced:?}");
    assert!(forced.stderr.contains("run.trees"), "{forced:?}");
    assert!(!env.state_dir().exists(), "nothing was stored");
    // auto: the run says so, and goes on with checkouts.
    let auto = env.ccfan_with(
        &["run", "--json", "--tasks", tasks.to_str().unwrap()],
        &[("CCFAN_TREES", "auto"), ("CCFAN_WORKTREE_ROOT", root)],
    );
    assert_eq!(auto.code, 0, "{auto:?}");
    assert!(
        auto.stderr.contains("task trees are full checkouts"),
        "{auto:?}"
    );
    assert_eq!(task(&auto.json(), "t")["state"], "merged");
}
