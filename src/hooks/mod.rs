//! The gate in local git hooks: install, uninstall and show ccfan's hook scripts in the repository's hooks folder
//! (`core.hooksPath` honoured). A user's own hook is never overwritten: it is moved aside and chained (run first,
//! with the same arguments and input), and `uninstall` puts it back byte for byte. Install checks every hook before
//! it changes any, so a refusal leaves nothing half done.

mod script;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::git::RepoPaths;
pub use script::{CHAINED_SUFFIX, MARKER, baked_binary, script};

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
}

/// The hooks folder of `repo`: `core.hooksPath` (relative to the working tree's top, `~` expanded) if set, else
/// `<git-common-dir>/hooks`.
pub fn hooks_dir(repo: &RepoPaths) -> Result<HooksDir, HooksError> {
    let configured = crate::git::config_path(repo, "core.hooksPath")?;
    Ok(match configured {
        Some((raw, path)) => HooksDir {
            path: repo.workdir.join(path),
            hooks_path: Some(raw),
        },
        None => HooksDir {
            path: repo.common_dir.join("hooks"),
            hooks_path: None,
        },
    })
}

/// What is at a hook's place now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum HookState {
    /// No hook.
    Absent,
    /// ccfan's script.
    Installed {
        /// The ccfan binary it calls.
        binary: Option<String>,
        /// Whether that binary exists.
        binary_found: bool,
        /// Whether the script is what `ccfan hooks install` would write now (else reinstall to update it).
        current: bool,
        /// The user's hook it runs first, if any.
        chained: Option<PathBuf>,
    },
    /// Someone else's hook (installing chains it).
    Other {
        /// Whether it is tracked in the repository (then ccfan leaves it alone).
        tracked: bool,
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
}

fn chained_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(CHAINED_SUFFIX);
    path.with_file_name(name)
}

fn read_script(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    text.lines().nth(1)?.starts_with(MARKER).then_some(text)
}

fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
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
        let state = if let Some(text) = read_script(&path) {
            let baked = baked_binary(&text);
            HookState::Installed {
                binary_found: baked.as_deref().is_some_and(|b| Path::new(b).is_file()),
                binary: baked,
                current: text == script(hook, binary),
                chained: exists(&chained).then_some(chained),
            }
        } else if exists(&path) {
            HookState::Other {
                tracked: crate::git::is_tracked(repo, &path)?,
            }
        } else {
            HookState::Absent
        };
        states.push(HookStatus { hook, path, state });
    }
    Ok((dir, states))
}

/// What `install` or `uninstall` did to one hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Done<T> {
    /// The hook.
    pub hook: HookName,
    /// Its file.
    pub path: PathBuf,
    /// What happened.
    pub outcome: T,
}

/// What `install` did to one hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Installed {
    /// Written where there was no hook.
    New,
    /// Written after moving the user's hook aside (it runs first).
    Chained {
        /// Where the user's hook is now.
        chained: PathBuf,
    },
    /// ccfan's older script replaced.
    Updated,
    /// Already as it should be.
    Unchanged,
}

/// Installs ccfan's script for each of `hooks`, calling `binary`. Checks all of them first: a hook tracked in the
/// repository, or a user's hook whose chained place is taken, refuses the whole install.
pub fn install(
    repo: &RepoPaths,
    binary: &Path,
    hooks: &[HookName],
) -> Result<(HooksDir, Vec<Done<Installed>>), HooksError> {
    let (dir, states) = status(repo, binary, hooks)?;
    for hook in &states {
        let chained = chained_path(&hook.path);
        match &hook.state {
            HookState::Other { tracked: true } => {
                return Err(HooksError::Refused {
                    path: hook.path.clone(),
                    reason: format!(
                        "this {} hook is tracked in your repository, and ccfan does not change your project's files. \
                         Add `ccfan hooks run {} \"$@\"` to it yourself{}, or use the pre-commit framework or \
                         lefthook (see ccfan's README)",
                        hook.hook,
                        hook.hook,
                        if hook.hook.reads_stdin() {
                            " (it reads the pushed refs on standard input)"
                        } else {
                            ""
                        }
                    ),
                });
            }
            HookState::Other { tracked: false } if exists(&chained) => {
                return Err(HooksError::Refused {
                    path: hook.path.clone(),
                    reason: format!(
                        "a hook is already chained at {}, and this one is not ccfan's: move one of them away, then \
                         install again",
                        chained.display()
                    ),
                });
            }
            HookState::Other { tracked: false }
            | HookState::Absent
            | HookState::Installed { .. } => {}
        }
    }
    std::fs::create_dir_all(&dir.path)
        .map_err(io(format!("cannot create {}", dir.path.display())))?;
    let mut done = Vec::new();
    for hook in states {
        let outcome = match &hook.state {
            HookState::Installed { current: true, .. } => Installed::Unchanged,
            HookState::Installed { current: false, .. } => {
                write_script(&hook.path, &script(hook.hook, binary))?;
                Installed::Updated
            }
            HookState::Absent => {
                write_script(&hook.path, &script(hook.hook, binary))?;
                Installed::New
            }
            HookState::Other { .. } => {
                let chained = chained_path(&hook.path);
                std::fs::rename(&hook.path, &chained).map_err(io(format!(
                    "cannot move {} aside to {}",
                    hook.path.display(),
                    chained.display()
                )))?;
                if let Err(error) = write_script(&hook.path, &script(hook.hook, binary)) {
                    // Put the user's hook back rather than leave the place empty.
                    let _ = std::fs::rename(&chained, &hook.path);
                    return Err(error);
                }
                Installed::Chained { chained }
            }
        };
        done.push(Done {
            hook: hook.hook,
            path: hook.path,
            outcome,
        });
    }
    Ok((dir, done))
}

/// Writes an executable script atomically (a temporary file in the same folder, renamed over the place).
fn write_script(path: &Path, text: &str) -> Result<(), HooksError> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let folder = path.parent().unwrap_or(Path::new("."));
    let mut file = tempfile::Builder::new()
        .prefix(".ccfan-hook-")
        .tempfile_in(folder)
        .map_err(io(format!("cannot write in {}", folder.display())))?;
    file.write_all(text.as_bytes())
        .map_err(io(format!("cannot write {}", path.display())))?;
    std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(0o755))
        .map_err(io(format!("cannot make {} executable", path.display())))?;
    file.persist(path)
        .map_err(|error| HooksError::Io {
            context: format!("cannot write {}", path.display()),
            source: error.error,
        })
        .map(|_| ())
}

/// What `uninstall` did to one hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Uninstalled {
    /// ccfan's script removed; nothing was there before.
    Removed,
    /// ccfan's script removed and the user's hook put back.
    Restored,
    /// Not ccfan's: left alone.
    NotOurs,
    /// Nothing there.
    Absent,
}

/// Removes ccfan's scripts for `hooks`, putting back each hook they chained exactly as it was.
pub fn uninstall(
    repo: &RepoPaths,
    hooks: &[HookName],
) -> Result<(HooksDir, Vec<Done<Uninstalled>>), HooksError> {
    let dir = hooks_dir(repo)?;
    let mut done = Vec::new();
    for &hook in hooks {
        let path = dir.path.join(hook.as_str());
        let chained = chained_path(&path);
        let ours = read_script(&path).is_some();
        let outcome = match (ours, exists(&path), exists(&chained)) {
            (true, _, chained_there) => {
                if chained_there {
                    // The rename replaces ccfan's script in one step: the place is never empty.
                    std::fs::rename(&chained, &path).map_err(io(format!(
                        "cannot put {} back at {}",
                        chained.display(),
                        path.display()
                    )))?;
                    Uninstalled::Restored
                } else {
                    std::fs::remove_file(&path)
                        .map_err(io(format!("cannot remove {}", path.display())))?;
                    Uninstalled::Removed
                }
            }
            (false, true, _) => Uninstalled::NotOurs,
            (false, false, true) => {
                std::fs::rename(&chained, &path).map_err(io(format!(
                    "cannot put {} back at {}",
                    chained.display(),
                    path.display()
                )))?;
                Uninstalled::Restored
            }
            (false, false, false) => Uninstalled::Absent,
        };
        done.push(Done {
            hook,
            path,
            outcome,
        });
    }
    Ok((dir, done))
}
