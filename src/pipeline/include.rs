//! Stage 2b, the ignored files a task tree needs: `.worktreeinclude` at the top of the user's checkout lists, in
//! gitignore syntax (Claude Code's format), which git-ignored files — `.env`, local configuration — are copied from
//! the checkout into every task worktree and every verification checkout. A fresh checkout of the base has only
//! tracked files, and a project whose tests need its `.env` would otherwise fail in every one of them.

use std::path::{Component, Path, PathBuf};

use ignore::gitignore::{Gitignore, GitignoreBuilder};

use crate::git::{self, GitError, RepoPaths};
use crate::input::InputError;

/// The name of the list, at the top of the user's checkout.
pub const FILE_NAME: &str = ".worktreeinclude";

/// The ignored files of the user's checkout that `.worktreeinclude` selects (relative paths), read once per run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Includes {
    /// The checkout they are copied from.
    source: PathBuf,
    /// Their paths, relative to it, sorted.
    files: Vec<PathBuf>,
    /// For a prepared layer: a shared lock on it, held while any copy of this value lives.
    hold: Hold,
}

/// A shared lock on the folder files are copied from (a prepared layer's record), held so that `gc` does not remove
/// the layer while a tree is being filled from it. Equal to any other: it is not part of what is copied.
#[derive(Debug, Clone, Default)]
struct Hold(
    #[expect(dead_code, reason = "held for its lock, never read")]
    Option<std::sync::Arc<std::fs::File>>,
);

impl PartialEq for Hold {
    fn eq(&self, _: &Hold) -> bool {
        true
    }
}

impl Eq for Hold {}

/// Why the included files could not be listed or copied.
#[derive(Debug, thiserror::Error)]
pub enum IncludeError {
    /// `.worktreeinclude` names something it cannot.
    #[error(transparent)]
    Input(#[from] InputError),
    /// Git could not list the ignored files.
    #[error(transparent)]
    Git(#[from] GitError),
    /// A file could not be copied.
    #[error("cannot copy {} into {}: {source}", path.display(), tree.display())]
    Copy {
        /// The file (relative).
        path: PathBuf,
        /// The task tree.
        tree: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl Includes {
    /// Reads `.worktreeinclude` of the user's checkout and lists the ignored files it selects; empty when there is
    /// no such file. A pattern that reaches outside the repository (`..`) is bad input naming its line.
    pub fn load(repo: &RepoPaths) -> Result<Includes, IncludeError> {
        let list = repo.workdir.join(FILE_NAME);
        if std::fs::symlink_metadata(&list).is_err() {
            return Ok(Includes::default());
        }
        let text = crate::input::read_text(&list, "list of ignored files to copy into task trees")?;
        let matcher = matcher(&repo.workdir, &list, &text)?;
        let files = git::ignored_files(repo)?
            .into_iter()
            .filter(|path| matcher.matched_path_or_any_parents(path, false).is_ignore())
            .collect();
        Ok(Includes {
            source: repo.workdir.clone(),
            files,
            hold: Hold::default(),
        })
    }

    /// Files `files` (relative, sorted) of folder `source`: e.g. what a prepared layer's setup left there.
    pub fn of(source: PathBuf, files: Vec<PathBuf>) -> Includes {
        Includes {
            source,
            files,
            hold: Hold::default(),
        }
    }

    /// Like [`Includes::of`], holding `lock` (a shared lock on the source) for as long as any copy lives.
    pub fn held(source: PathBuf, files: Vec<PathBuf>, lock: std::fs::File) -> Includes {
        Includes {
            source,
            files,
            hold: Hold(Some(std::sync::Arc::new(lock))),
        }
    }

    /// The selected files, relative to the checkout.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Copies every selected file into `tree` (a fresh checkout of the same repository): regular files with
    /// their mode and modification time (so a build cache keeps judging what is fresh), symlinks as symlinks
    /// (never followed). A file that vanished since it was listed is skipped; one
    /// already present in `tree` is left alone. Returns how many were copied.
    pub fn copy_into(&self, tree: &Path) -> Result<usize, IncludeError> {
        let mut copied = 0;
        for relative in &self.files {
            let failed = |source| IncludeError::Copy {
                path: relative.clone(),
                tree: tree.to_path_buf(),
                source,
            };
            let from = self.source.join(relative);
            let to = tree.join(relative);
            let Ok(meta) = std::fs::symlink_metadata(&from) else {
                continue;
            };
            if std::fs::symlink_metadata(&to).is_ok() {
                continue;
            }
            // The tree comes from a worker's commit: a folder on the way may be a symlink to anywhere.
            if !stays_inside(tree, relative) {
                tracing::warn!(
                    "not copying {} into {}: a folder on its way is a symlink",
                    relative.display(),
                    tree.display()
                );
                continue;
            }
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).map_err(failed)?;
            }
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&from).map_err(failed)?;
                std::os::unix::fs::symlink(target, &to).map_err(failed)?;
            } else if meta.is_file() {
                std::fs::copy(&from, &to).map_err(failed)?;
                if let Ok(modified) = meta.modified() {
                    std::fs::File::options()
                        .write(true)
                        .open(&to)
                        .and_then(|file| file.set_modified(modified))
                        .map_err(failed)?;
                }
            } else {
                continue;
            }
            copied += 1;
        }
        Ok(copied)
    }
}

/// Whether writing `relative` under `tree` stays in `tree`: only plain components, and no folder on the way that
/// exists as a symlink (a committed symlink could point anywhere; folders that do not exist yet are made real).
fn stays_inside(tree: &Path, relative: &Path) -> bool {
    let parts: Vec<Component<'_>> = relative.components().collect();
    if parts
        .iter()
        .any(|part| !matches!(part, Component::Normal(_)))
    {
        return false;
    }
    let mut at = tree.to_path_buf();
    for part in &parts[..parts.len().saturating_sub(1)] {
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Ok(meta) if meta.file_type().is_symlink() => return false,
            Ok(_) => {}
            Err(_) => return true,
        }
    }
    true
}

/// Compiles `.worktreeinclude`, refusing any pattern that names a path outside the repository.
fn matcher(root: &Path, list: &Path, text: &str) -> Result<Gitignore, InputError> {
    let mut builder = GitignoreBuilder::new(root);
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let pattern = line.trim_end_matches(['\n', '\r']);
        let at = offset;
        offset += line.len();
        let body = pattern.trim_start_matches('!').trim_start_matches('/');
        if pattern.trim().is_empty() || pattern.starts_with('#') {
            continue;
        }
        let outside = Path::new(body)
            .components()
            .any(|part| matches!(part, Component::ParentDir));
        if outside {
            return Err(InputError::new(
                list,
                format!("`{pattern}` reaches outside the repository"),
            )
            .at_offset(text, Some(at))
            .fix("list only paths inside the repository (gitignore syntax, e.g. `.env` or `config/*.local.toml`)"));
        }
        builder.add_line(None, pattern).map_err(|error| {
            InputError::new(list, format!("`{pattern}` is not a valid pattern: {error}"))
                .at_offset(text, Some(at))
                .fix("write gitignore syntax, e.g. `.env` or `config/*.local.toml`")
        })?;
    }
    builder.build().map_err(|error| {
        InputError::new(list, format!("cannot compile the patterns: {error}"))
            .fix("write gitignore syntax")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_select_paths_and_parents_in_gitignore_syntax() {
        let root = Path::new("/repo");
        let text = "# local files\n.env\nconfig/*.local.toml\n!config/skip.local.toml\n";
        let matcher = matcher(root, Path::new("/repo/.worktreeinclude"), text).unwrap();
        let picked = |path: &str| {
            matcher
                .matched_path_or_any_parents(Path::new(path), false)
                .is_ignore()
        };
        assert!(picked(".env") && picked("web/.env"));
        assert!(picked("config/a.local.toml"));
        assert!(!picked("config/skip.local.toml"));
        assert!(!picked("config/a.toml") && !picked("src/main.rs"));
    }

    #[test]
    fn nothing_is_copied_through_a_symlinked_folder_of_the_tree() {
        let source = tempfile::tempdir().unwrap();
        let tree = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(source.path().join("web")).unwrap();
        std::fs::write(source.path().join("web/.env"), "KEY=1\n").unwrap();
        std::fs::write(source.path().join(".env"), "KEY=2\n").unwrap();
        // A worker committed `web` as a symlink out of the tree.
        std::os::unix::fs::symlink(elsewhere.path(), tree.path().join("web")).unwrap();
        let includes = Includes::of(
            source.path().to_path_buf(),
            vec![PathBuf::from("web/.env"), PathBuf::from(".env")],
        );
        assert_eq!(includes.copy_into(tree.path()).unwrap(), 1);
        assert!(
            !elsewhere.path().join(".env").exists(),
            "written through the symlink"
        );
        assert_eq!(
            std::fs::read_to_string(tree.path().join(".env")).unwrap(),
            "KEY=2\n"
        );
    }

    #[test]
    fn a_pattern_outside_the_repository_names_its_line() {
        let text = ".env\n../secrets/.env\n";
        let error = matcher(
            Path::new("/repo"),
            Path::new("/repo/.worktreeinclude"),
            text,
        )
        .unwrap_err();
        assert_eq!(error.line, Some(2));
        assert!(error.message.contains("outside the repository"), "{error}");
        assert!(error.fix.is_some());
    }
}
