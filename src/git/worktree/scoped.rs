//! The git door, recording a copy-on-write tree: only the paths its upper layer names (and those where the parent
//! already differs from the lower tree) are looked at, with the same rules as a full re-read — tracked files are
//! always taken, untracked ones unless ignored — so both ways give the same tree id for the same files.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use super::super::*;

/// What a recording looks at.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// Every file of the tree. With `trust_index` (the worker could not write git's metadata) the stat data git
    /// keeps in the index is reused, so unchanged files are not read again.
    Everything {
        /// Whether the index's stat data can be trusted.
        trust_index: bool,
    },
    /// Only `changed` can differ from `lower`'s tree (a copy-on-write tree over a layer holding `lower`: its upper
    /// layer lists every path the worker wrote, deleted or replaced).
    Paths {
        /// The commit the tree's lower layer holds.
        lower: &'a str,
        /// Paths written, deleted or replaced, relative to the tree's root.
        changed: &'a [PathBuf],
    },
}

/// Whether a path list cannot stand for the change: an ignore, attributes or submodules file changed (what is
/// ignored or how files are filtered elsewhere may differ now), a nested repository appeared (git records it whole
/// or not at all), or the index holds submodules (a write under one is judged by the whole read). Then the whole
/// tree is read, with the index's stat data trusted (in a copy-on-write tree the worker never writes it).
pub(super) fn whole_tree_needed(changed: &[PathBuf], index: &git2::Index) -> bool {
    const GITLINK: u32 = 0o160000;
    changed.iter().any(|path| {
        path.components()
            .any(|part| part == Component::Normal(".git".as_ref()))
            || path.file_name().is_some_and(|name| {
                name == ".gitignore" || name == ".gitattributes" || name == ".gitmodules"
            })
    }) || index.iter().any(|entry| entry.mode == GITLINK)
}

/// Whether every folder above `path` in `worktree` is a real folder: a path under a symlink is not the tree's
/// (a full read never follows one, and ccfan must not read through it).
fn under_real_folders(worktree: &Path, path: &Path) -> bool {
    let mut folder = worktree.to_path_buf();
    let parents: Vec<_> = path
        .parent()
        .map(|p| p.components().collect())
        .unwrap_or_default();
    parents.into_iter().all(|part| {
        folder.push(part);
        std::fs::symlink_metadata(&folder).is_ok_and(|meta| meta.is_dir())
    })
}

/// Stages into `index` (already reset to `parent_tree`) exactly the paths that can differ: `changed`, plus every
/// path where `parent_tree` differs from `lower`'s tree (an earlier attempt's change the worker may have undone).
pub(super) fn stage(
    repo: &Repository,
    index: &mut git2::Index,
    worktree: &Path,
    lower: &str,
    parent_tree: &git2::Tree<'_>,
    changed: &[PathBuf],
) -> Result<()> {
    let mut paths: BTreeSet<PathBuf> = changed.iter().cloned().collect();
    let lower_tree = repo
        .find_commit(oid(lower)?)
        .and_then(|commit| commit.tree())
        .map_err(git2_context("cannot read the tree's lower commit"))?;
    if lower_tree.id() != parent_tree.id() {
        let diff = repo
            .diff_tree_to_tree(Some(&lower_tree), Some(parent_tree), None)
            .map_err(git2_context(
                "cannot compare the parent with the lower tree",
            ))?;
        for delta in diff.deltas() {
            paths.extend(delta.old_file().path().map(Path::to_path_buf));
            paths.extend(delta.new_file().path().map(Path::to_path_buf));
        }
    }
    let what = || {
        git2_context(format!(
            "cannot stage the changes in {}",
            worktree.display()
        ))
    };
    // Parents sort before what is under them, so a replaced folder is emptied before its new files go in.
    for path in &paths {
        let tracked = parent_tree.get_path(path).is_ok();
        // Whatever the index held under this path as a folder goes; what is there now comes back below.
        let _ = index.remove_dir(path, 0);
        let found = if under_real_folders(worktree, path) {
            std::fs::symlink_metadata(worktree.join(path)).ok()
        } else {
            None
        };
        match found {
            Some(meta)
                if !meta.is_dir() && (tracked || !repo.is_path_ignored(path).unwrap_or(false)) =>
            {
                index.add_path(path).map_err(what())?;
            }
            Some(_) | None => {
                let _ = index.remove_path(path);
            }
        }
    }
    Ok(())
}
