//! What a fresh tree starts from beyond its commit: the `.worktreeinclude` files and the prepared layer — the
//! base copy-on-write trees stand on, or the setup outputs copied into checkouts.

use std::path::{Path, PathBuf};

use crate::ids::CommitId;
use crate::pipeline::include::{IncludeError, Includes};

/// The layer below copy-on-write trees: its tree, the index of its commit, and that commit.
#[derive(Debug, Clone)]
pub struct CowBase {
    pub(super) tree: PathBuf,
    pub(super) index: PathBuf,
    pub(super) commit: CommitId,
    pub(super) key: String,
}

impl CowBase {
    /// A layer's `tree` holding `commit`, with `index` (its index, with stat data), known by `key`.
    pub fn new(tree: PathBuf, index: PathBuf, commit: CommitId, key: String) -> CowBase {
        CowBase {
            tree,
            index,
            commit,
            key,
        }
    }
}

/// What a fresh task tree or verification checkout starts from beyond its commit: the `.worktreeinclude` files of
/// the user's checkout, and the prepared layer — below the tree when trees are copy-on-write views of it, else its
/// setup outputs (dependencies, build caches) copied in. Holding it keeps the layer from `gc`.
#[derive(Debug, Clone, Default)]
pub struct TreeFiles {
    sets: Vec<Includes>,
    cow: Option<CowBase>,
}

impl TreeFiles {
    /// The user's includes, the layer's outputs (copied into checkouts; held, so `gc` keeps the layer), and the
    /// layer as a base for copy-on-write trees when they are made.
    pub fn new(includes: Includes, outputs: Option<Includes>, cow: Option<CowBase>) -> TreeFiles {
        let mut sets = vec![includes];
        sets.extend(outputs);
        TreeFiles { sets, cow }
    }

    /// Trees over `base` (tests of copy-on-write trees).
    #[cfg(test)]
    pub fn set_cow_for_tests(&mut self, base: CowBase) {
        self.sets = vec![Includes::default()];
        self.cow = Some(base);
    }

    /// The layer trees are copy-on-write views of, if they are.
    pub fn cow_base(&self) -> Option<&CowBase> {
        self.cow.as_ref()
    }

    /// Copies the includes into `tree` (a file already there is left alone), and the layer's outputs unless the
    /// tree is a view over the layer; returns how many files were copied.
    pub fn copy_into(&self, tree: &Path) -> Result<usize, IncludeError> {
        let sets = if self.cow.is_some() {
            &self.sets[..1]
        } else {
            &self.sets[..]
        };
        sets.iter()
            .try_fold(0, |copied, set| Ok(copied + set.copy_into(tree)?))
    }
}
