//! Git bundles without the git CLI: a portable attempt's base goes out, and the change recorded elsewhere comes
//! back, as bundles in git's own v2 format (so `git bundle verify` reads them), written with libgit2's pack builder
//! and read with its pack writer. Reading is bounded, checks every line, and only adds objects: refs are the
//! caller's to set once it has checked what came back.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;

use git2::{Oid, Repository};

use super::{GitError, RepoPaths, Result, git2_context, oid};

/// The first line of a v2 bundle.
const HEADER: &str = "# v2 git bundle";
/// The most bytes one header line may take (a ref name is at most a few hundred).
const MAX_LINE: u64 = 4096;
/// The most header lines (prerequisites and refs) read.
const MAX_LINES: usize = 1024;

/// What a bundle lists before its pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleHead {
    /// Commits the reader must already have.
    pub prerequisites: Vec<String>,
    /// `(commit, ref name)` pairs it carries.
    pub refs: Vec<(String, String)>,
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> GitError {
    move |source| GitError::Io { context, source }
}

/// What a bundle of `tip` may leave out.
#[derive(Debug, Clone, Copy)]
pub enum BundleOf<'a> {
    /// The commit and its whole tree, its parents listed as prerequisites (the base a portable attempt starts
    /// from: its files, not its history).
    Snapshot,
    /// What `tip` adds on top of `base`, which is a prerequisite (an attempt's recorded change).
    Since(&'a str),
}

/// Writes a bundle of commit `tip` as `ref_name` to `path`; returns its size in bytes.
pub fn write_bundle(
    repo: &RepoPaths,
    tip: &str,
    ref_name: &str,
    of: BundleOf<'_>,
    path: &Path,
) -> Result<u64> {
    let git = repo.open()?;
    write_bundle_in(&git, tip, ref_name, of, path)
}

pub(super) fn write_bundle_in(
    git: &Repository,
    tip: &str,
    ref_name: &str,
    of: BundleOf<'_>,
    path: &Path,
) -> Result<u64> {
    let tip_id = oid(tip)?;
    let commit = git
        .find_commit(tip_id)
        .map_err(git2_context(format!("cannot read commit {tip}")))?;
    let mut builder = git
        .packbuilder()
        .map_err(git2_context("cannot start a pack"))?;
    let prerequisites: Vec<(Oid, String)> = match of {
        BundleOf::Snapshot => {
            builder
                .insert_commit(tip_id)
                .map_err(git2_context(format!("cannot pack commit {tip}")))?;
            commit
                .parents()
                .map(|parent| (parent.id(), summary(&parent)))
                .collect()
        }
        BundleOf::Since(base) => {
            let base_id = oid(base)?;
            let base_commit = git
                .find_commit(base_id)
                .map_err(git2_context(format!("cannot read commit {base}")))?;
            if commit.parent_ids().collect::<Vec<_>>() != [base_id] {
                return Err(GitError::Io {
                    context: format!("commit {tip} does not sit right on {base}"),
                    source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
                });
            }
            // No history walk: where the runner records, the base's parents are not there to walk. The commit
            // goes with every tree and blob of its tree that the base's tree does not already hold.
            let base_tree = base_commit
                .tree()
                .map_err(git2_context(format!("cannot read the tree of {base}")))?;
            let tree = commit
                .tree()
                .map_err(git2_context(format!("cannot read the tree of {tip}")))?;
            insert_new(git, &mut builder, &tree, Some(&base_tree))?;
            builder
                .insert_object(tip_id, None)
                .map_err(git2_context(format!("cannot pack commit {tip}")))?;
            vec![(base_id, summary(&base_commit))]
        }
    };
    let mut text = format!("{HEADER}\n");
    for (id, subject) in &prerequisites {
        text.push_str(&format!("-{id} {subject}\n"));
    }
    text.push_str(&format!("{tip_id} {ref_name}\n\n"));
    let mut file =
        std::fs::File::create(path).map_err(io(format!("cannot create {}", path.display())))?;
    file.write_all(text.as_bytes())
        .map_err(io(format!("cannot write {}", path.display())))?;
    // The pack is streamed to the file, never held whole in memory (a base's snapshot can be large).
    let mut written = text.len() as u64;
    let mut failed = None;
    builder
        .foreach(|chunk| match file.write_all(chunk) {
            Ok(()) => {
                written += chunk.len() as u64;
                true
            }
            Err(error) => {
                failed = Some(error);
                false
            }
        })
        .map_err(git2_context("cannot write the pack"))?;
    if let Some(error) = failed {
        return Err(io(format!("cannot write {}", path.display()))(error));
    }
    file.sync_all()
        .map_err(io(format!("cannot write {}", path.display())))?;
    Ok(written)
}

/// Inserts every tree and blob under `tree` that `old` (the same folder in the base) does not hold.
fn insert_new(
    git: &Repository,
    builder: &mut git2::PackBuilder<'_>,
    tree: &git2::Tree<'_>,
    old: Option<&git2::Tree<'_>>,
) -> Result<()> {
    if old.is_some_and(|old| old.id() == tree.id()) {
        return Ok(());
    }
    builder
        .insert_object(tree.id(), None)
        .map_err(git2_context("cannot pack a tree"))?;
    for entry in tree {
        let before =
            old.and_then(|old| old.get_name_bytes(entry.name_bytes()).map(|same| same.id()));
        if before == Some(entry.id()) {
            continue;
        }
        match entry.kind() {
            Some(git2::ObjectType::Tree) => {
                let sub = git
                    .find_tree(entry.id())
                    .map_err(git2_context("cannot read a tree"))?;
                let old_sub = before.and_then(|id| git.find_tree(id).ok());
                insert_new(git, builder, &sub, old_sub.as_ref())?;
            }
            Some(git2::ObjectType::Blob) => builder
                .insert_object(entry.id(), None)
                .map_err(git2_context("cannot pack a file"))?,
            // A submodule's commit lives in its own repository.
            _ => {}
        }
    }
    Ok(())
}

/// A commit's subject as a bundle prints it beside a prerequisite (one line, no control characters).
fn summary(commit: &git2::Commit<'_>) -> String {
    commit
        .summary()
        .ok()
        .flatten()
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(72)
        .collect()
}

/// Reads the bundle at `path` (at most `max_bytes`) into `repo`'s object store; returns what it lists. Refused: a
/// file that is not a v2 bundle, a bad line, a prerequisite the repository lacks, a pack git cannot index, a ref
/// whose commit did not arrive. No ref is set.
pub fn read_bundle(repo: &RepoPaths, path: &Path, max_bytes: u64) -> Result<BundleHead> {
    let git = repo.open()?;
    read_pack(&git, path, max_bytes, true)
}

/// [`read_bundle`] into `git`; `prerequisites`: whether the commits it lists as prerequisites must be there.
pub(super) fn read_pack(
    git: &Repository,
    path: &Path,
    max_bytes: u64,
    prerequisites: bool,
) -> Result<BundleHead> {
    let bad = |why: String| GitError::Io {
        context: format!("{} is not a bundle ccfan accepts: {why}", path.display()),
        source: std::io::Error::from(std::io::ErrorKind::InvalidData),
    };
    // Never through a symlink, never waiting on a FIFO: the file may come from a container.
    let file =
        crate::util::open_regular(path).map_err(io(format!("cannot open {}", path.display())))?;
    let size = file
        .metadata()
        .map_err(io(format!("cannot read {}", path.display())))?
        .len();
    if size > max_bytes {
        return Err(bad(format!(
            "it is {size} bytes, over the limit of {max_bytes}"
        )));
    }
    let mut reader = BufReader::new(file.take(max_bytes));
    let head = read_head(&mut reader, path, &bad)?;
    if head.refs.is_empty() {
        return Err(bad("it carries no ref".to_string()));
    }
    let odb = git
        .odb()
        .map_err(git2_context("cannot open the object store"))?;
    for sha in head.prerequisites.iter().filter(|_| prerequisites) {
        if !odb.exists(oid(sha)?) {
            return Err(bad(format!(
                "it needs commit {sha}, which this repository does not have"
            )));
        }
    }
    let mut writer = odb
        .packwriter()
        .map_err(git2_context("cannot start reading a pack"))?;
    std::io::copy(&mut reader, &mut writer)
        .map_err(|error| bad(format!("its pack is unreadable: {error}")))?;
    writer
        .commit()
        .map_err(|error| bad(format!("its pack is unreadable: {}", error.message())))?;
    for (sha, name) in &head.refs {
        if git.find_commit(oid(sha)?).is_err() {
            return Err(bad(format!(
                "its ref {name} names {sha}, which is not a commit it brought"
            )));
        }
    }
    Ok(head)
}

/// What [`receive_commit`] took in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedCommit {
    /// The commit.
    pub commit: String,
    /// Its tree.
    pub tree: String,
}

/// The most tree entries looked at when checking what a bundle brought.
const MAX_ENTRIES: usize = 2_000_000;
/// The most bytes of new files a change may bring (what checking it out would write).
const MAX_NEW_BYTES: u64 = 2 << 30;
/// The deepest folder nesting accepted (a deeper tree is a way to exhaust a walker's stack, not a project).
const MAX_DEPTH: usize = 256;

/// What is left to look at in a received tree.
struct Budget {
    entries: usize,
    bytes: u64,
}

/// Takes in a bundle that must carry exactly one commit whose only parent is `base`: it is read first into a
/// quarantine that sees the repository's objects, and only once the commit's whole tree is there (every object
/// the base does not already hold, no `.git` entry) is it read into the repository. No ref is set.
pub fn receive_commit(
    repo: &RepoPaths,
    path: &Path,
    max_bytes: u64,
    base: &str,
) -> Result<ReceivedCommit> {
    let refused = |why: String| GitError::Io {
        context: format!("{} is refused: {why}", path.display()),
        source: std::io::Error::from(std::io::ErrorKind::InvalidData),
    };
    let scratch = tempfile::Builder::new()
        .prefix("ccfan-quarantine-")
        .tempdir_in(&repo.common_dir)
        .map_err(io(format!(
            "cannot make a quarantine in {}",
            repo.common_dir.display()
        )))?;
    let quarantine = Repository::init_bare(scratch.path())
        .map_err(git2_context("cannot make a quarantine repository"))?;
    let objects = repo.common_dir.join("objects");
    quarantine
        .odb()
        .and_then(|odb| odb.add_disk_alternate(&objects.to_string_lossy()))
        .map_err(git2_context(
            "cannot let the quarantine see the repository's objects",
        ))?;
    let head = read_pack(&quarantine, path, max_bytes, true)?;
    let [(commit, _)] = head.refs.as_slice() else {
        return Err(refused(format!(
            "it carries {} refs, not one commit",
            head.refs.len()
        )));
    };
    let found = quarantine
        .find_commit(oid(commit)?)
        .map_err(git2_context(format!("cannot read commit {commit}")))?;
    let base_id = oid(base)?;
    if found.parent_ids().collect::<Vec<_>>() != [base_id] {
        return Err(refused(format!(
            "its commit {commit} is not one commit whose only parent is the base {base}"
        )));
    }
    let base_tree = quarantine
        .find_commit(base_id)
        .and_then(|base| base.tree())
        .map_err(git2_context(format!("cannot read the tree of {base}")))?;
    let tree = found
        .tree()
        .map_err(|_| refused(format!("the tree of {commit} did not come with it")))?;
    let mut budget = Budget {
        entries: MAX_ENTRIES,
        bytes: MAX_NEW_BYTES,
    };
    connected(&quarantine, &tree, Some(&base_tree), &mut budget, 0).map_err(refused)?;
    // Everything checked: the same pack, into the repository.
    let git = repo.open()?;
    read_pack(&git, path, max_bytes, true)?;
    Ok(ReceivedCommit {
        commit: commit.clone(),
        tree: tree.id().to_string(),
    })
}

/// Whether every object under `tree` is in `git` (what is the same as in `old`, the base's folder, is), and no
/// entry is named `.git`.
fn connected(
    git: &Repository,
    tree: &git2::Tree<'_>,
    old: Option<&git2::Tree<'_>>,
    budget: &mut Budget,
    depth: usize,
) -> std::result::Result<(), String> {
    if old.is_some_and(|old| old.id() == tree.id()) {
        return Ok(());
    }
    if depth > MAX_DEPTH {
        return Err(format!("its tree nests folders more than {MAX_DEPTH} deep"));
    }
    let odb = git.odb().map_err(|error| error.message().to_string())?;
    for entry in tree {
        budget.entries = budget
            .entries
            .checked_sub(1)
            .ok_or_else(|| format!("its tree has more than {MAX_ENTRIES} entries"))?;
        if entry.name_bytes().eq_ignore_ascii_case(b".git") {
            return Err("its tree holds an entry named .git".to_string());
        }
        let before =
            old.and_then(|old| old.get_name_bytes(entry.name_bytes()).map(|same| same.id()));
        if before == Some(entry.id()) {
            continue;
        }
        match entry.kind() {
            Some(git2::ObjectType::Tree) => {
                let sub = git.find_tree(entry.id()).map_err(|_| {
                    format!("tree {} of its change did not come with it", entry.id())
                })?;
                let old_sub = before.and_then(|id| git.find_tree(id).ok());
                connected(git, &sub, old_sub.as_ref(), budget, depth + 1)?;
            }
            Some(git2::ObjectType::Blob) => {
                let (size, _) = odb.read_header(entry.id()).map_err(|_| {
                    format!("file {} of its change did not come with it", entry.id())
                })?;
                budget.bytes = budget
                    .bytes
                    .checked_sub(size as u64)
                    .ok_or_else(|| format!("its new files hold more than {MAX_NEW_BYTES} bytes"))?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// The header of a bundle, up to the blank line before its pack: its first line, prerequisites and refs.
fn read_head(
    reader: &mut BufReader<std::io::Take<std::fs::File>>,
    path: &Path,
    bad: &dyn Fn(String) -> GitError,
) -> Result<BundleHead> {
    let mut line = String::new();
    let next_line = |reader: &mut BufReader<std::io::Take<std::fs::File>>, line: &mut String| {
        line.clear();
        reader
            .by_ref()
            .take(MAX_LINE)
            .read_line(line)
            .map_err(io(format!("cannot read {}", path.display())))
    };
    next_line(reader, &mut line)?;
    if line.trim_end() != HEADER {
        // What it says instead is not quoted: it may be any file's first line.
        return Err(bad(format!(
            "its first line is not {HEADER:?} (a git v2 bundle)"
        )));
    }
    let mut head = BundleHead {
        prerequisites: Vec::new(),
        refs: Vec::new(),
    };
    for n in 0..=MAX_LINES {
        next_line(reader, &mut line)?;
        if !line.ends_with('\n') {
            return Err(bad(
                "its header ends before its pack, or a line of it is over 4 KiB".to_string(),
            ));
        }
        let text = line.trim_end_matches('\n');
        if text.is_empty() {
            break;
        }
        if let Some(rest) = text.strip_prefix('-') {
            let sha = rest.split(' ').next().unwrap_or_default();
            head.prerequisites.push(
                full_id(sha)
                    .ok_or_else(|| bad(format!("line {} is a bad prerequisite line", n + 2)))?,
            );
        } else {
            let (sha, name) = text
                .split_once(' ')
                .ok_or_else(|| bad(format!("line {} is a bad ref line", n + 2)))?;
            let sha =
                full_id(sha).ok_or_else(|| bad(format!("line {} is a bad ref line", n + 2)))?;
            if !git2::Reference::is_valid_name(name) {
                return Err(bad(format!("line {} names no valid ref", n + 2)));
            }
            head.refs.push((sha, name.to_string()));
        }
        if head.prerequisites.len() + head.refs.len() > MAX_LINES {
            return Err(bad(format!(
                "it lists more than {MAX_LINES} refs and prerequisites"
            )));
        }
    }
    Ok(head)
}

/// `sha` when it is a full SHA-1 object id in lower-case hex.
fn full_id(sha: &str) -> Option<String> {
    (sha.len() == 40
        && sha
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then(|| sha.to_string())
}
