//! The gate in local git hooks: install, uninstall and show ccfan's hook scripts in the repository's hooks folder
//! (`core.hooksPath` honoured). A user's own hook is never overwritten: it is moved aside and chained (run first,
//! with the same arguments and input), and `uninstall` puts it back byte for byte. Install checks every hook before
//! it changes any, so a refusal leaves nothing half done.

// which change each hook judges, and the gate on it
pub mod gate;
mod install;
mod script;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::git::RepoPaths;
pub use install::{Done, Installed, Uninstalled, install, uninstall};
pub use script::{CHAINED_DIR, MARKER, baked_binary, script};

/// A git hook ccfan can stand in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum HookName {
    /// Before `git commit` records the index.
    PreCommit,
    /// Before `git merge` records an automatic merge.
    PreMergeCommit,
    /// Before `git push` sends commits.
    PrePush,
}

impl HookName {
    /// Every hook, in the order installed by default.
    pub const ALL: [HookName; 3] = [
        HookName::PreCommit,
        HookName::PreMergeCommit,
        HookName::PrePush,
    ];

    /// Git's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            HookName::PreCommit => "pre-commit",
            HookName::PreMergeCommit => "pre-merge-commit",
            HookName::PrePush => "pre-push",
        }
    }

    /// Parses git's name.
    pub fn parse(name: &str) -> Option<HookName> {
        HookName::ALL.into_iter().find(|hook| hook.as_str() == name)
    }

    /// The hooks named (each once, in the default order); all of them when none is.
    pub fn chosen(names: &[String]) -> Vec<HookName> {
        let picked: Vec<HookName> = HookName::ALL
            .into_iter()
            .filter(|hook| names.iter().any(|name| name == hook.as_str()))
            .collect();
        if picked.is_empty() {
            HookName::ALL.to_vec()
        } else {
            picked
        }
    }

    /// The explicit, one-off bypass.
    pub fn bypass(self) -> &'static str {
        match self {
            HookName::PreCommit => "git commit --no-verify",
            HookName::PreMergeCommit => "git merge --no-verify",
            HookName::PrePush => "git push --no-verify",
        }
    }

    /// What the hook stops.
    pub fn action(self) -> &'static str {
        match self {
            HookName::PreCommit => "commit",
            HookName::PreMergeCommit => "merge",
            HookName::PrePush => "push",
        }
    }

    /// Whether git gives the hook input on stdin.
    pub fn reads_stdin(self) -> bool {
        match self {
            HookName::PrePush => true,
            HookName::PreCommit | HookName::PreMergeCommit => false,
        }
    }
}

impl std::fmt::Display for HookName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Errors of `ccfan hooks`.
#[derive(Debug, thiserror::Error)]
pub enum HooksError {
    /// A hook cannot be installed without changing something ccfan must not change.
    #[error("{}: {reason}", path.display())]
    Refused {
        /// The hook file.
        path: PathBuf,
        /// Why, and what to do instead.
        reason: String,
    },
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What ccfan was doing.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Git could not be read.
    #[error(transparent)]
    Git(#[from] crate::git::GitError),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> HooksError {
    let context = context.into();
    move |source| HooksError::Io { context, source }
}

/// The folder git runs hooks from, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HooksDir {
    /// The folder.
    pub path: PathBuf,
    /// `core.hooksPath` as configured, when it is set.
    pub hooks_path: Option<String>,
    /// Whether `core.hooksPath` comes from outside this repository's config (the user's or the system's): then the
    /// folder is shared by other repositories.
    pub shared: bool,
    /// Whether the folder is inside the working tree and not ignored: files there are part of the project.
    pub in_project: bool,
}

/// The hooks folder of `repo`: `core.hooksPath` (relative to the working tree's top, `~` expanded) if set, else
/// `<git-common-dir>/hooks`.
pub fn hooks_dir(repo: &RepoPaths) -> Result<HooksDir, HooksError> {
    let configured = crate::git::config_path(repo, "core.hooksPath")?;
    let (path, hooks_path, shared) = match configured {
        Some(setting) => (
            repo.workdir.join(&setting.path),
            Some(setting.raw),
            !setting.in_repository,
        ),
        None => (repo.common_dir.join("hooks"), None, false),
    };
    let in_project = crate::git::in_project(repo, &path)?;
    Ok(HooksDir {
        path,
        hooks_path,
        shared,
        in_project,
    })
}

/// What is at a hook's place now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum HookState {
    /// No hook.
    Absent,
    /// ccfan's script, exactly as ccfan wrote it.
    Installed {
        /// The ccfan binary it calls.
        binary: Option<String>,
        /// Whether that binary is there and executable.
        binary_found: bool,
        /// A `ccfan` on PATH, which the script falls back to when `binary` is gone.
        on_path: Option<PathBuf>,
        /// Whether it calls the ccfan that `ccfan hooks install` would write now (else reinstall to update it).
        current: bool,
        /// The user's hook it runs first, if any.
        chained: Option<PathBuf>,
    },
    /// ccfan's script, edited since: ccfan leaves it alone.
    Edited,
    /// Someone else's hook (installing chains it).
    Other {
        /// Whether it is tracked in the repository (then ccfan leaves it alone).
        tracked: bool,
        /// A hook manager that picks what to run from the hook's own file name (husky, overcommit): chaining
        /// would break it, so ccfan leaves it alone.
        manager: Option<String>,
    },
}

/// One hook's place and state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HookStatus {
    /// The hook.
    pub hook: HookName,
    /// Its file.
    pub path: PathBuf,
    /// What is there.
    #[serde(flatten)]
    pub state: HookState,
    /// A chained hook left from an earlier install while ccfan's script is not in place (put it back by hand).
    pub stray_chained: Option<PathBuf>,
}

/// Where the user's hook waits while ccfan's script stands in its place: `<hooks>/ccfan-chained/<hook>`, so it
/// still runs under its own name (hook managers dispatch on it).
fn chained_path(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default();
    path.with_file_name(CHAINED_DIR).join(name)
}

fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// The text of `path` when it is a regular file (not a symlink) with ccfan's marker.
fn marked_script(path: &Path) -> Option<String> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.file_type().is_file() {
        return None;
    }
    let text = String::from_utf8(std::fs::read(path).ok()?).ok()?;
    text.lines().nth(1)?.starts_with(MARKER).then_some(text)
}

/// A hook manager whose scripts find what to run from their own file name.
fn manager(dir: &Path, path: &Path) -> Option<String> {
    let dir_text = dir.to_string_lossy();
    if dir_text.ends_with(".husky/_") || dir_text.ends_with(".husky") {
        return Some("husky".to_string());
    }
    let text = std::fs::read(path).ok()?;
    let text = String::from_utf8_lossy(&text).to_lowercase();
    ["husky", "overcommit"]
        .into_iter()
        .find(|name| text.contains(name))
        .map(str::to_string)
}

fn executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

fn on_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|folder| folder.join("ccfan"))
        .find(|candidate| executable(candidate))
}

/// The state of each of `hooks`; `binary` is the ccfan that `install` would bake in now.
pub fn status(
    repo: &RepoPaths,
    binary: &Path,
    hooks: &[HookName],
) -> Result<(HooksDir, Vec<HookStatus>), HooksError> {
    let dir = hooks_dir(repo)?;
    let mut states = Vec::new();
    for &hook in hooks {
        let path = dir.path.join(hook.as_str());
        let chained = chained_path(&path);
        let marked = marked_script(&path);
        let baked = marked.as_deref().and_then(baked_binary);
        let state = match (&marked, &baked) {
            (Some(text), Some(baked)) if *text == script(hook, Path::new(baked)) => {
                HookState::Installed {
                    binary_found: executable(Path::new(baked)),
                    binary: Some(baked.clone()),
                    on_path: on_path(),
                    current: Path::new(baked) == binary,
                    chained: exists(&chained).then_some(chained.clone()),
                }
            }
            (Some(_), _) => HookState::Edited,
            (None, _) if exists(&path) => HookState::Other {
                tracked: crate::git::is_tracked(repo, &path)?,
                manager: manager(&dir.path, &path),
            },
            (None, _) => HookState::Absent,
        };
        let stray_chained = match state {
            HookState::Installed { .. } => None,
            HookState::Absent | HookState::Edited | HookState::Other { .. } => {
                exists(&chained).then_some(chained)
            }
        };
        states.push(HookStatus {
            hook,
            path,
            state,
            stray_chained,
        });
    }
    Ok((dir, states))
}
