//! Copy-on-write trees against checkouts: the same commits recorded, a tree on another commit than its layer,
//! a mount that went away.
use std::os::unix::fs::PermissionsExt;

use super::view::cow_dir;
use super::*;
use crate::ids::CommitId;
use crate::sandbox::overlay;

/// A repository with every kind of entry, its layer (`checkout_into`), and the files a tree starts from.
fn repo_and_layer(dir: &Path) -> (RepoPaths, CommitId, TreeFiles) {
    let root = dir.join("repo");
    std::fs::create_dir_all(root.join("src/deep/er")).unwrap();
    for (path, text) in [
        ("src/a.txt", "a\n"),
        ("src/b.txt", "b\n"),
        ("src/deep/er/c.txt", "c\n"),
        ("run.sh", "#!/bin/sh\n"),
        ("file-then-dir", "f\n"),
        (".gitignore", "*.log\nbuild/\n"),
    ] {
        std::fs::write(root.join(path), text).unwrap();
    }
    std::fs::create_dir_all(root.join("dir-then-file")).unwrap();
    std::fs::create_dir_all(root.join("docs/guide")).unwrap();
    std::fs::write(root.join("docs/guide/intro.md"), "intro\n").unwrap();
    std::fs::write(root.join("dir-then-file/x"), "x\n").unwrap();
    std::os::unix::fs::symlink("src/a.txt", root.join("link")).unwrap();
    git::init_with_commit(&root, "base").unwrap();
    // A tracked file the ignore rules match: recorded like any tracked file.
    std::fs::write(root.join("tracked.log"), "tracked\n").unwrap();
    git::run_git_for_tests(&root, &["add", "-f", "tracked.log"]);
    git::run_git_for_tests(&root, &["commit", "-q", "-m", "tracked log"]);
    let repo = git::discover(&root).unwrap();
    let base = git::resolve_commit(&repo, "HEAD").unwrap();
    let layer = dir.join("layer");
    git::checkout_into(&repo, &base, &layer.join("tree"), &layer.join("index")).unwrap();
    crate::pipeline::layer::write_record_for_tests(&layer, "k", &base);
    // What setup would leave: ignored output, present in every tree, never recorded.
    std::fs::create_dir_all(layer.join("tree/build")).unwrap();
    std::fs::write(layer.join("tree/build/out.o"), "obj\n").unwrap();
    let mut files = TreeFiles::default();
    files.set_cow_for_tests(CowBase {
        tree: layer.join("tree"),
        index: layer.join("index"),
        commit: base.clone(),
        key: "k".to_string(),
    });
    (repo, base, files)
}

/// Unmounts the trees given when the test ends, passed or not, so no mount outlives it.
struct Unmount(Vec<PathBuf>);

impl Drop for Unmount {
    fn drop(&mut self) {
        for tree in &self.0 {
            let _ = overlay::unmount(tree);
        }
    }
}

fn change(tree: &Path) {
    std::fs::write(tree.join("src/a.txt"), "a, edited\n").unwrap();
    std::fs::rename(tree.join("src/b.txt"), tree.join("src/b2.txt")).unwrap();
    std::fs::remove_dir_all(tree.join("src/deep")).unwrap();
    std::fs::set_permissions(tree.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::remove_file(tree.join("link")).unwrap();
    std::os::unix::fs::symlink("src/b2.txt", tree.join("link")).unwrap();
    std::fs::remove_file(tree.join("file-then-dir")).unwrap();
    std::fs::create_dir_all(tree.join("file-then-dir")).unwrap();
    std::fs::write(tree.join("file-then-dir/inner"), "i\n").unwrap();
    std::fs::remove_dir_all(tree.join("dir-then-file")).unwrap();
    std::fs::write(tree.join("dir-then-file"), "now a file\n").unwrap();
    std::fs::create_dir_all(tree.join("empty/folder")).unwrap();
    std::fs::create_dir_all(tree.join("new/sub")).unwrap();
    std::fs::write(tree.join("new/sub/n.txt"), "new\n").unwrap();
    std::fs::write(
        tree.join("new/gone.txt"),
        "made, then removed next attempt\n",
    )
    .unwrap();
    std::fs::write(tree.join("debug.log"), "ignored\n").unwrap();
    std::fs::write(tree.join("tracked.log"), "tracked, edited\n").unwrap();
    std::fs::write(tree.join("build/out.o"), "rebuilt\n").unwrap();
}

fn record(tree: &Path, branch: &str, parent: &str) -> String {
    let link = git::git_link(tree).unwrap();
    let admin = git::admin_dir(tree, &link);
    let changed = changed_paths(tree).unwrap();
    let scope = match &changed {
        Some((lower, changed)) => git::Scope::Paths { lower, changed },
        None => git::Scope::Everything { trust_index: false },
    };
    let made =
        git::commit_worktree(tree, admin.as_deref(), branch, parent, "attempt", scope).unwrap();
    made.commit
        .map_or_else(|| parent.to_string(), |commit| commit.to_string())
}

fn tree_id(repo: &RepoPaths, commit: &str) -> String {
    let git = repo.open().unwrap();
    git.find_commit(git2::Oid::from_str(commit).unwrap())
        .unwrap()
        .tree_id()
        .to_string()
}

#[test]
fn a_copy_on_write_tree_and_a_checkout_record_the_same_commits() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, base, cow_files) = repo_and_layer(dir.path());
    if let Err(why) = overlay::probe(dir.path()) {
        assert!(
            std::env::var_os("CCFAN_REQUIRE_TOOLS").is_none_or(|v| v != "1"),
            "CCFAN_REQUIRE_TOOLS=1: copy-on-write trees must work here: {why}"
        );
        eprintln!(
            "skipped: no overlay mounts here ({why}); run as root to test copy-on-write trees"
        );
        return;
    }
    let cow = dir.path().join("trees/cow");
    let plain = dir.path().join("trees/plain");
    let _unmount = Unmount(vec![cow.clone()]);
    make(&repo, &cow, Start::Branch("b-cow"), &base, &cow_files).unwrap();
    make(
        &repo,
        &plain,
        Start::Branch("b-plain"),
        &base,
        &TreeFiles::default(),
    )
    .unwrap();
    assert!(overlay::is_mounted(&cow));
    assert_eq!(
        std::fs::read_to_string(cow.join("build/out.o")).unwrap(),
        "obj\n"
    );
    // Nothing changed yet: nothing to record.
    assert_eq!(record(&cow, "b-cow", &base), base.as_str());
    std::fs::create_dir_all(plain.join("build")).unwrap();
    change(&cow);
    change(&plain);
    // A worker can set `user.` attributes through the view: one that looks like the kernel's opaque mark must not
    // make ccfan drop the folder's untouched files.
    rustix::fs::lsetxattr(
        cow.join("src"),
        "user.overlay.opaque",
        b"y",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    let (one_cow, one_plain) = (
        record(&cow, "b-cow", &base),
        record(&plain, "b-plain", &base),
    );
    assert_eq!(tree_id(&repo, &one_cow), tree_id(&repo, &one_plain));
    // A second attempt on top: a file the first made is removed (no whiteout: the layer never had it), another
    // goes back to the base's content.
    for tree in [&cow, &plain] {
        std::fs::remove_file(tree.join("new/gone.txt")).unwrap();
        std::fs::write(tree.join("src/a.txt"), "a\n").unwrap();
    }
    let (two_cow, two_plain) = (
        record(&cow, "b-cow", &one_cow),
        record(&plain, "b-plain", &one_plain),
    );
    assert_eq!(tree_id(&repo, &two_cow), tree_id(&repo, &two_plain));
    let files = git::run_git_for_tests(&repo.workdir, &["ls-tree", "-r", "--name-only", &two_cow]);
    assert_eq!(
        files,
        ".gitignore\ndir-then-file\ndocs/guide/intro.md\nfile-then-dir/inner\nlink\nnew/sub/n.txt\nrun.sh\nsrc/a.txt\nsrc/b2.txt\ntracked.log\n"
    );
    // A folder an earlier attempt added, replaced by a symlink out of the tree: the symlink is recorded, nothing
    // is read through it (ccfan runs as root here).
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("n.txt"), "outside the tree\n").unwrap();
    for tree in [&cow, &plain] {
        std::fs::remove_dir_all(tree.join("new/sub")).unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("new/sub")).unwrap();
    }
    let (three_cow, three_plain) = (
        record(&cow, "b-cow", &two_cow),
        record(&plain, "b-plain", &two_plain),
    );
    assert_eq!(tree_id(&repo, &three_cow), tree_id(&repo, &three_plain));
    let kind = git::run_git_for_tests(&repo.workdir, &["ls-tree", &three_cow, "new/sub"]);
    assert!(kind.starts_with("120000 blob"), "{kind}");
    // A folder of the layer renamed (as `git mv` does): the kernel keeps a redirect, which is not read as a
    // change list; that attempt is recorded by reading the whole view, and the same commit results.
    for tree in [&cow, &plain] {
        std::fs::rename(tree.join("docs/guide"), tree.join("docs/manual")).unwrap();
    }
    assert!(
        changed_paths(&cow).unwrap().is_none(),
        "a redirect is read whole"
    );
    let (four_cow, four_plain) = (
        record(&cow, "b-cow", &three_cow),
        record(&plain, "b-plain", &three_plain),
    );
    assert_eq!(tree_id(&repo, &four_cow), tree_id(&repo, &four_plain));
    let moved = git::run_git_for_tests(
        &repo.workdir,
        &["diff", "--name-status", &three_cow, &four_cow],
    );
    assert!(moved.contains("docs/manual/intro.md"), "{moved}");
    // Removed: unmounted, no folder, no private layer, no worktree record; the layer is untouched.
    remove(&repo, &cow).unwrap();
    assert!(!cow.exists() && !cow_dir(&cow).exists());
    assert!(!git::list_worktrees(&repo).unwrap().contains(&cow));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("layer/tree/src/a.txt")).unwrap(),
        "a\n"
    );
}

#[test]
fn a_tree_on_another_commit_than_its_layer_shows_that_commit_and_survives_an_unmount() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, _, files) = repo_and_layer(dir.path());
    if overlay::probe(dir.path()).is_err() {
        return;
    }
    std::fs::write(repo.workdir.join("src/a.txt"), "next\n").unwrap();
    std::fs::remove_file(repo.workdir.join("src/b.txt")).unwrap();
    git::run_git_for_tests(&repo.workdir, &["commit", "-q", "-am", "next"]);
    let next = git::resolve_commit(&repo, "HEAD").unwrap();
    let tree = dir.path().join("trees/t");
    let _unmount = Unmount(vec![tree.clone()]);
    make(&repo, &tree, Start::Branch("b-t"), &next, &files).unwrap();
    assert_eq!(
        std::fs::read_to_string(tree.join("src/a.txt")).unwrap(),
        "next\n"
    );
    assert!(!tree.join("src/b.txt").exists());
    // Nothing to record: the tree shows `next` exactly.
    assert_eq!(record(&tree, "b-t", &next), next.as_str());
    std::fs::write(tree.join("src/c.txt"), "work\n").unwrap();
    // As after a reboot: the mount is gone, the work is in the private layer, and `ensure` brings it back.
    overlay::unmount(&tree).unwrap();
    assert!(!tree.join("src").exists());
    git::prune_worktrees(&repo).unwrap();
    ensure(&tree).unwrap();
    assert_eq!(
        std::fs::read_to_string(tree.join("src/c.txt")).unwrap(),
        "work\n"
    );
    let made = record(&tree, "b-t", &next);
    let changed = git::run_git_for_tests(&repo.workdir, &["diff", "--name-only", &next, &made]);
    assert_eq!(changed, "src/c.txt\n");
    remove(&repo, &tree).unwrap();
}
