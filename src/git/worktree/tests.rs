//! Recording an attempt: the stat cache and the full read record the same tree, and nothing hides a change.
use std::os::unix::fs::PermissionsExt;

use super::*;

/// A repository with a tree of every kind of entry, and two worktrees of it made the way ccfan makes them.
fn two_worktrees() -> (tempfile::TempDir, RepoPaths, CommitId, [PathBuf; 2]) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    std::fs::create_dir_all(root.join("src/deep/er")).unwrap();
    std::fs::write(root.join("src/a.txt"), "a\n").unwrap();
    std::fs::write(root.join("src/b.txt"), "b\n").unwrap();
    std::fs::write(root.join("src/deep/er/c.txt"), "c\n").unwrap();
    std::fs::write(root.join("run.sh"), "#!/bin/sh\n").unwrap();
    std::fs::write(root.join("keep.txt"), "same size\n").unwrap();
    std::fs::write(root.join(".gitignore"), "*.log\n").unwrap();
    std::os::unix::fs::symlink("src/a.txt", root.join("link")).unwrap();
    init_with_commit(&root, "base").unwrap();
    let repo = discover(&root).unwrap();
    let base = resolve_commit(&repo, "HEAD").unwrap();
    let trees = ["one", "two"].map(|name| {
        let path = dir.path().join(name);
        add_worktree(&repo, &path, &format!("b-{name}"), &base).unwrap();
        checkout_worktree(&path).unwrap();
        path
    });
    (dir, repo, base, trees)
}

/// Every kind of change a worker makes.
fn change(tree: &Path) {
    std::fs::write(tree.join("src/a.txt"), "a, edited\n").unwrap();
    std::fs::rename(tree.join("src/b.txt"), tree.join("src/b2.txt")).unwrap();
    std::fs::remove_dir_all(tree.join("src/deep")).unwrap();
    std::fs::set_permissions(tree.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::remove_file(tree.join("link")).unwrap();
    std::os::unix::fs::symlink("src/b2.txt", tree.join("link")).unwrap();
    std::fs::create_dir_all(tree.join("empty/folder")).unwrap();
    std::fs::create_dir_all(tree.join("new/sub")).unwrap();
    std::fs::write(tree.join("new/sub/n.txt"), "new\n").unwrap();
    std::fs::write(tree.join("debug.log"), "ignored\n").unwrap();
}

fn record(repo: &RepoPaths, tree: &Path, branch: &str, base: &CommitId, trust: bool) -> CommitId {
    let admin = admin_dir(tree, &git_link(tree).unwrap());
    let recorded = commit_worktree(
        tree,
        admin.as_deref(),
        branch,
        base,
        "attempt",
        Scope::Everything { trust_index: trust },
    )
    .unwrap();
    assert!(recorded.tampered.is_empty(), "{:?}", recorded.tampered);
    let commit = recorded.commit.expect("a change");
    let _ = repo;
    commit
}

fn tree_of(repo: &RepoPaths, commit: &CommitId) -> String {
    let git = repo.open().unwrap();
    git.find_commit(commit.oid()).unwrap().tree_id().to_string()
}

#[test]
fn the_stat_cache_and_the_full_read_record_the_same_tree() {
    let (_dir, repo, base, [one, two]) = two_worktrees();
    change(&one);
    change(&two);
    let trusted = record(&repo, &one, "b-one", &base, true);
    let full = record(&repo, &two, "b-two", &base, false);
    assert_eq!(tree_of(&repo, &trusted), tree_of(&repo, &full));
    let files = run_git(&one, ["ls-tree", "-r", "--name-only", trusted.as_str()]).unwrap();
    assert_eq!(
        files,
        ".gitignore\nkeep.txt\nlink\nnew/sub/n.txt\nrun.sh\nsrc/a.txt\nsrc/b2.txt\n"
    );
    // A second attempt on top, read through the index the first one left.
    std::fs::write(one.join("src/a.txt"), "again\n").unwrap();
    std::fs::write(two.join("src/a.txt"), "again\n").unwrap();
    let trusted = commit_worktree(
        &one,
        None,
        "b-one",
        &trusted,
        "2",
        Scope::Everything { trust_index: true },
    )
    .unwrap()
    .commit
    .unwrap();
    let full = commit_worktree(
        &two,
        None,
        "b-two",
        &full,
        "2",
        Scope::Everything { trust_index: false },
    )
    .unwrap()
    .commit
    .unwrap();
    assert_eq!(tree_of(&repo, &trusted), tree_of(&repo, &full));
}

#[test]
fn a_change_that_keeps_size_and_mtime_or_hides_behind_a_flag_is_still_recorded() {
    let (_dir, repo, base, [one, _]) = two_worktrees();
    let kept = one.join("keep.txt");
    let mtime = std::fs::metadata(&kept).unwrap().modified().unwrap();
    std::fs::write(&kept, "SAME SIZE\n").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&kept)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    run_git(&one, ["update-index", "--assume-unchanged", "src/a.txt"]).unwrap();
    run_git(&one, ["update-index", "--skip-worktree", "src/b.txt"]).unwrap();
    std::fs::write(one.join("src/a.txt"), "hidden a\n").unwrap();
    std::fs::write(one.join("src/b.txt"), "hidden b\n").unwrap();
    let commit = record(&repo, &one, "b-one", &base, true);
    let changed = run_git(
        &one,
        ["diff", "--name-only", base.as_str(), commit.as_str()],
    )
    .unwrap();
    assert_eq!(changed, "keep.txt\nsrc/a.txt\nsrc/b.txt\n");
}

#[test]
fn a_repository_that_distrusts_ctime_is_read_in_full() {
    let (_dir, repo, _, [one, _]) = two_worktrees();
    let git = Repository::open(&one).unwrap();
    assert!(stat_data_trusted(&git));
    run_git(&repo.workdir, ["config", "core.trustctime", "false"]).unwrap();
    assert!(!stat_data_trusted(&Repository::open(&one).unwrap()));
    run_git(&repo.workdir, ["config", "core.trustctime", "true"]).unwrap();
    run_git(&repo.workdir, ["config", "core.checkStat", "minimal"]).unwrap();
    assert!(!stat_data_trusted(&Repository::open(&one).unwrap()));
}
