//! The git door, changes no worker made (the local hooks' gate): the staged index as a tree, a merge in progress,
//! the commits of a range or a push, and the lines each commit itself added. Reads only: the one thing written is
//! an object (a tree, or a commit on no ref), never a ref, the index or a working tree.

use super::*;

/// Git's name for "no commit" in hook input (`0` × 40; SHA-256 repositories use 64).
pub fn is_null_id(sha: &str) -> bool {
    !sha.is_empty() && sha.bytes().all(|byte| byte == b'0')
}

/// The commit HEAD points at, `None` on an unborn branch (before the first commit).
pub fn head_commit(repo: &RepoPaths) -> Result<Option<String>> {
    let git = repo.open()?;
    match git.head() {
        Ok(head) => Ok(head
            .peel_to_commit()
            .ok()
            .map(|commit| commit.id().to_string())),
        Err(error)
            if matches!(
                error.code(),
                git2::ErrorCode::UnbornBranch | git2::ErrorCode::NotFound
            ) =>
        {
            Ok(None)
        }
        Err(source) => Err(GitError::Git2 {
            context: "cannot read HEAD".to_string(),
            source,
        }),
    }
}

/// The empty tree's id (written to the object database, as git does, so it can be read back).
pub fn empty_tree(repo: &RepoPaths) -> Result<String> {
    let git = repo.open()?;
    let builder = git
        .treebuilder(None)
        .map_err(git2_context("cannot build the empty tree"))?;
    builder
        .write()
        .map(|id| id.to_string())
        .map_err(git2_context("cannot write the empty tree"))
}

/// Whether `sha` is git's empty tree (the base of a change that starts at a root commit).
pub fn is_empty_tree(sha: &str) -> bool {
    sha == "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
        || sha == "6ef19b41225c5369f1c104d45d8d85efa9b057b53b14b4b9b939dd74decc5321"
}

/// The tree the index holds — what `git commit` would commit. `index_file` is git's `GIT_INDEX_FILE` when a hook
/// runs under `git commit -a` or `git commit PATH` (a temporary index); `None` reads the repository's own index.
/// Unmerged paths are refused: there is no tree to judge until the conflict is resolved.
pub fn staged_tree(repo: &RepoPaths, index_file: Option<&Path>) -> Result<String> {
    let git = repo.open()?;
    let mut index = match index_file {
        Some(path) => git2::Index::open(path).map_err(git2_context(format!(
            "cannot read the index {}",
            path.display()
        )))?,
        None => git.index().map_err(git2_context("cannot read the index"))?,
    };
    if index.has_conflicts() {
        let mut paths: Vec<String> = index
            .conflicts()
            .map_err(git2_context("cannot read the index's conflicts"))?
            .filter_map(|conflict| conflict.ok())
            .filter_map(|conflict| conflict.our.or(conflict.their).or(conflict.ancestor))
            .map(|entry| String::from_utf8_lossy(&entry.path).into_owned())
            .collect();
        paths.dedup();
        return Err(GitError::Unmerged { paths });
    }
    index
        .write_tree_to(&git)
        .map(|id| id.to_string())
        .map_err(git2_context("cannot write the staged tree"))
}

/// The untracked files of the user's checkout that its ignore rules exclude (`.env`, build output, …), relative.
pub fn ignored_files(repo: &RepoPaths) -> Result<Vec<PathBuf>> {
    use std::os::unix::ffi::OsStrExt;
    let out = git_command(&repo.workdir)
        .args([
            "ls-files",
            "-z",
            "--others",
            "--ignored",
            "--exclude-standard",
        ])
        .output()
        .map_err(GitError::Spawn)?;
    if !out.status.success() {
        return Err(GitError::Command {
            args: "ls-files --others --ignored --exclude-standard".to_string(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let mut files: Vec<PathBuf> = out
        .stdout
        .split(|byte| *byte == 0)
        .filter(|name| !name.is_empty())
        .map(|name| PathBuf::from(OsStr::from_bytes(name)))
        .collect();
    files.sort();
    Ok(files)
}

/// Writes the files of commit `commit` into `dir` (an empty or missing folder), touching no index, ref or working
/// tree of the repository: the tracked half of a prepared base layer.
pub fn export_commit(repo: &RepoPaths, commit: &str, dir: &Path) -> Result<()> {
    let git = repo.open()?;
    let tree = git
        .find_commit(oid(commit)?)
        .and_then(|commit| commit.tree())
        .map_err(git2_context(format!("cannot read commit {commit}")))?;
    std::fs::create_dir_all(dir).map_err(|source| GitError::Io {
        context: format!("cannot create {}", dir.display()),
        source,
    })?;
    let mut checkout = git2::build::CheckoutBuilder::new();
    checkout
        .target_dir(dir)
        .update_index(false)
        .force()
        .recreate_missing(true);
    git.checkout_tree(tree.as_object(), Some(&mut checkout))
        .map_err(git2_context(format!(
            "cannot write {commit} into {}",
            dir.display()
        )))
}

/// The files in `dir` (a folder holding commit `commit`'s files, as [`export_commit`] wrote them, plus whatever
/// ran there since) that the repository's ignore rules exclude — dependencies, build output — relative and sorted.
pub fn ignored_in(repo: &RepoPaths, dir: &Path, commit: &str) -> Result<Vec<PathBuf>> {
    let git =
        Repository::open(&repo.common_dir).map_err(git2_context("cannot open the repository"))?;
    git.set_workdir(dir, false)
        .map_err(git2_context(format!("cannot look at {}", dir.display())))?;
    let tree = git
        .find_commit(oid(commit)?)
        .and_then(|commit| commit.tree())
        .map_err(git2_context(format!("cannot read commit {commit}")))?;
    let mut index = git2::Index::new().map_err(git2_context("cannot make an index"))?;
    index
        .read_tree(&tree)
        .map_err(git2_context("cannot read the commit's tree"))?;
    git.set_index(&mut index)
        .map_err(git2_context("cannot use the commit's tree as index"))?;
    let mut options = StatusOptions::new();
    options
        .include_ignored(true)
        .recurse_ignored_dirs(true)
        .include_untracked(false)
        .exclude_submodules(true);
    let statuses = git
        .statuses(Some(&mut options))
        .map_err(git2_context(format!(
            "cannot list the files of {}",
            dir.display()
        )))?;
    let mut files: Vec<PathBuf> = statuses
        .iter()
        .filter(|entry| entry.status().is_ignored())
        .map(|entry| {
            use std::os::unix::ffi::OsStrExt;
            PathBuf::from(OsStr::from_bytes(entry.path_bytes()))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// The commits being merged in (`MERGE_HEAD`), while a stopped merge waits for its commit in this working tree.
pub fn merge_heads(repo: &RepoPaths) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(repo.git_dir.join("MERGE_HEAD")) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| Oid::from_str(line.trim()).ok())
        .map(|id| id.to_string())
        .collect()
}

/// Writes a commit of `tree` on `parent` on no ref (so the tests stage can check a staged tree out). Git's
/// garbage collection removes it later.
pub fn detached_commit(
    repo: &RepoPaths,
    tree: &str,
    parent: Option<&str>,
    message: &str,
) -> Result<String> {
    let git = repo.open()?;
    let parent = parent
        .map(|sha| {
            git.find_commit(oid(sha)?)
                .map_err(git2_context(format!("cannot read commit {sha}")))
        })
        .transpose()?;
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    write_commit(&git, oid(tree)?, &parents, message, None, CCFAN).map(|id| id.to_string())
}

/// Resolves `rev` to a commit id, or `None` when it names nothing here (a remote's tip this clone never fetched).
pub fn known_commit(repo: &RepoPaths, rev: &str) -> Result<Option<String>> {
    let git = repo.open()?;
    Ok(git
        .revparse_single(rev)
        .and_then(|object| object.peel_to_commit())
        .ok()
        .map(|commit| commit.id().to_string()))
}

/// The configured remote that `remote` (as git gives it to pre-push: a name, or the URL pushed to) names: by name,
/// else the remote whose `url` or `pushurl` it is.
pub fn configured_remote(repo: &RepoPaths, remote: &str) -> Result<Option<String>> {
    let git = repo.open()?;
    if git.find_remote(remote).is_ok() {
        return Ok(Some(remote.to_string()));
    }
    let names = git.remotes().map_err(git2_context("cannot list remotes"))?;
    for name in names.iter().flatten().flatten() {
        if let Ok(found) = git.find_remote(name)
            && (found.url().ok() == Some(remote) || found.pushurl().ok().flatten() == Some(remote))
        {
            return Ok(Some(name.to_string()));
        }
    }
    Ok(None)
}

/// A remote URL fit to print: any `user:password@` taken out.
pub fn display_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}{}", &url[..scheme + 3], &url[at + 1..])
        }
        (_, _) => url.to_string(),
    }
}

/// The tips of the remote-tracking branches of configured remote `remote`: the commits it is known to have.
pub fn remote_tips(repo: &RepoPaths, remote: &str) -> Result<Vec<String>> {
    let git = repo.open()?;
    let prefix = format!("refs/remotes/{remote}/");
    let mut tips = Vec::new();
    for (_, target) in refs_under(repo, &prefix)? {
        if let Ok(commit) = git
            .find_object(oid(&target)?, None)
            .and_then(|object| object.peel_to_commit())
        {
            tips.push(commit.id().to_string());
        }
    }
    tips.sort();
    tips.dedup();
    Ok(tips)
}

/// The commits reachable from `tip` and from none of `hide`, oldest first, and the commit their net change is
/// judged against: following first parents from `tip`, the first commit outside the set (`None`: the range reaches
/// a root commit, so the base is the empty tree).
pub fn walk_range(
    repo: &RepoPaths,
    tip: &str,
    hide: &[String],
) -> Result<(Vec<String>, Option<String>)> {
    let git = repo.open()?;
    let mut walk = git.revwalk().map_err(git2_context("cannot walk history"))?;
    walk.push(oid(tip)?)
        .map_err(|source| GitError::BadRevision {
            rev: tip.to_string(),
            source,
        })?;
    for hidden in hide {
        walk.hide(oid(hidden)?)
            .map_err(git2_context(format!("cannot exclude {hidden}")))?;
    }
    walk.set_sorting(git2::Sort::TOPOLOGICAL | git2::Sort::REVERSE)
        .map_err(git2_context("cannot sort history"))?;
    let commits = walk
        .map(|id| id.map(|id| id.to_string()))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(git2_context("cannot walk history"))?;
    let inside: std::collections::HashSet<&str> = commits.iter().map(String::as_str).collect();
    let mut at = tip.to_string();
    while inside.contains(at.as_str()) {
        let commit = git
            .find_commit(oid(&at)?)
            .map_err(git2_context(format!("cannot read commit {at}")))?;
        match commit.parent_id(0) {
            Ok(parent) => at = parent.to_string(),
            Err(_) => return Ok((commits, None)),
        }
    }
    Ok((commits, Some(at)))
}

/// The lines commit `sha` itself added: against its parent; for a root commit, all of its lines; for a merge,
/// only the lines new against every parent (what the merge itself wrote, as `git diff --cc` shows — the merged
/// commits are judged on their own). Each file is tagged with the commit.
pub fn commit_added_lines(repo: &RepoPaths, sha: &str) -> Result<Vec<AddedLines>> {
    let git = repo.open()?;
    let commit = git
        .find_commit(oid(sha)?)
        .map_err(git2_context(format!("cannot read commit {sha}")))?;
    let parents: Vec<String> = commit.parent_ids().map(|id| id.to_string()).collect();
    let mut files = match parents.split_first() {
        None => added_lines(repo, None, sha)?,
        Some((first, rest)) => {
            let mut files = added_lines(repo, Some(first), sha)?;
            for parent in rest {
                let against: std::collections::HashMap<String, std::collections::HashSet<usize>> =
                    added_lines(repo, Some(parent), sha)?
                        .into_iter()
                        .map(|file| (file.path, file.line_numbers.into_iter().collect()))
                        .collect();
                files = files
                    .into_iter()
                    .filter_map(|file| {
                        let new_there = against.get(&file.path)?;
                        keep_lines(file, new_there)
                    })
                    .collect();
            }
            files
        }
    };
    for file in &mut files {
        file.commit = Some(sha.to_string());
    }
    Ok(files)
}

/// `file` with only the added lines whose line number is in `keep` (`None` when none is left).
fn keep_lines(file: AddedLines, keep: &std::collections::HashSet<usize>) -> Option<AddedLines> {
    if file.binary {
        return Some(file);
    }
    let mut kept = AddedLines {
        text: Vec::new(),
        line_numbers: Vec::new(),
        ..file.clone()
    };
    for (line, number) in file
        .text
        .split_inclusive(|byte| *byte == b'\n')
        .zip(&file.line_numbers)
    {
        if keep.contains(number) {
            kept.text.extend_from_slice(line);
            kept.line_numbers.push(*number);
        }
    }
    (!kept.line_numbers.is_empty()).then_some(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_ids_are_all_zeros() {
        assert!(is_null_id(&"0".repeat(40)));
        assert!(is_null_id(&"0".repeat(64)));
        assert!(!is_null_id(""));
        assert!(!is_null_id("0000000000000000000000000000000000000001"));
    }

    #[test]
    fn keep_lines_keeps_only_the_listed_numbers() {
        let file = AddedLines {
            path: "a.txt".into(),
            binary: false,
            text: b"one\ntwo\nthree\n".to_vec(),
            line_numbers: vec![4, 5, 9],
            commit: None,
        };
        let kept = keep_lines(file.clone(), &[5, 9].into_iter().collect()).unwrap();
        assert_eq!(kept.text, b"two\nthree\n");
        assert_eq!(kept.line_numbers, vec![5, 9]);
        assert!(keep_lines(file, &[1].into_iter().collect()).is_none());
    }
}
