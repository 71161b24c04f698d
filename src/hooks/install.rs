//! `ccfan hooks install` and `uninstall`: every hook is checked before any is changed, a user's hook is moved into
//! `ccfan-chained/` (never overwritten) and moved back byte for byte, and nothing ccfan does not own is touched.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{
    HookName, HookState, HookStatus, HooksDir, HooksError, chained_path, exists, io, script, status,
};
use crate::git::RepoPaths;

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
    /// ccfan's script now calls this ccfan.
    Updated,
    /// Already as it should be.
    Unchanged,
}

fn refused(hook: &HookStatus, reason: String) -> HooksError {
    HooksError::Refused {
        path: hook.path.clone(),
        reason,
    }
}

/// The line a user adds to a hook ccfan must not change.
fn own_line(hook: HookName) -> String {
    if hook.reads_stdin() {
        // The pushed refs come once on stdin: read them before anything else does, and hand them on.
        r#"input=$(cat); printf '%s\n' "$input" | ccfan hooks run pre-push "$@" || exit 1"#
            .to_string()
    } else {
        format!("ccfan hooks run {hook} || exit 1")
    }
}

/// Why a hook cannot be installed, if it cannot.
fn refusal(dir: &HooksDir, hook: &HookStatus, shared_ok: bool) -> Option<HooksError> {
    if dir.shared && !shared_ok {
        return Some(refused(
            hook,
            format!(
                "core.hooksPath = {} is set outside this repository, so every repository using that folder would get \
                 ccfan's hooks: pass --shared if that is what you want",
                dir.hooks_path.as_deref().unwrap_or("?")
            ),
        ));
    }
    if dir.in_project {
        return Some(refused(
            hook,
            format!(
                "core.hooksPath points into your project ({}), which git does not ignore, and ccfan does not add \
                 files to your project: add `{}` to your {} hook yourself, or ignore that folder",
                dir.hooks_path.as_deref().unwrap_or("?"),
                own_line(hook.hook),
                hook.hook
            ),
        ));
    }
    let line = own_line(hook.hook);
    match &hook.state {
        HookState::Other { tracked: true, .. } => Some(refused(
            hook,
            format!(
                "this {} hook is tracked in your repository, and ccfan does not change your project's files: add \
                 `{line}` to it yourself, or use the pre-commit framework or lefthook (see ccfan's README)",
                hook.hook
            ),
        )),
        HookState::Other {
            manager: Some(manager),
            ..
        } => Some(refused(
            hook,
            format!(
                "this hook belongs to {manager}, which picks what to run from the hook's own file name, so ccfan \
                 cannot chain it: add `{line}` to your {manager} {} hook instead",
                hook.hook
            ),
        )),
        HookState::Edited => Some(refused(
            hook,
            "this is ccfan's hook script edited by hand: move it away (or run `ccfan hooks uninstall` after \
             restoring it), then install again"
                .to_string(),
        )),
        HookState::Other { .. } | HookState::Absent => hook.stray_chained.as_ref().map(|stray| {
            refused(
                hook,
                format!(
                    "a hook chained by an earlier install is still at {}: put it back in place of {} (or delete it), \
                     then install again",
                    stray.display(),
                    hook.path.display()
                ),
            )
        }),
        HookState::Installed { .. } => None,
    }
}

/// Installs ccfan's script for each of `hooks`, calling `binary`. Checks all of them first: one that cannot be
/// installed (tracked, run by a hook manager, edited, a shared or in-project hooks folder without consent, a
/// stray chained hook) refuses the whole install, naming what to do instead.
pub fn install(
    repo: &RepoPaths,
    binary: &Path,
    hooks: &[HookName],
    shared_ok: bool,
) -> Result<(HooksDir, Vec<Done<Installed>>), HooksError> {
    let (dir, states) = status(repo, binary, hooks)?;
    if let Some(error) = states
        .iter()
        .find_map(|hook| refusal(&dir, hook, shared_ok))
    {
        return Err(error);
    }
    std::fs::create_dir_all(&dir.path)
        .map_err(io(format!("cannot create {}", dir.path.display())))?;
    let mut done = Vec::new();
    for hook in states {
        let text = script(hook.hook, binary);
        let outcome = match &hook.state {
            HookState::Installed { current: true, .. } => Installed::Unchanged,
            HookState::Installed { current: false, .. } => {
                write_script(&hook.path, &text)?;
                Installed::Updated
            }
            HookState::Absent => {
                write_script(&hook.path, &text)?;
                Installed::New
            }
            HookState::Other { .. } | HookState::Edited => {
                let chained = chained_path(&hook.path);
                // Checked again right before the move: nothing already there is ever replaced.
                if exists(&chained) {
                    return Err(refused(
                        &hook,
                        format!(
                            "{} appeared meanwhile; nothing was moved",
                            chained.display()
                        ),
                    ));
                }
                if let Some(folder) = chained.parent() {
                    std::fs::create_dir_all(folder)
                        .map_err(io(format!("cannot create {}", folder.display())))?;
                }
                std::fs::rename(&hook.path, &chained).map_err(io(format!(
                    "cannot move {} aside to {}",
                    hook.path.display(),
                    chained.display()
                )))?;
                if let Err(error) = write_script(&hook.path, &text) {
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
    /// Not ccfan's (or ccfan's, edited by hand): left alone.
    NotOurs {
        /// A chained hook that stays where it is, for the user to put back.
        chained_left: Option<PathBuf>,
    },
    /// Nothing there.
    Absent,
}

/// Removes ccfan's scripts for `hooks`, putting back each hook they chained exactly as it was.
pub fn uninstall(
    repo: &RepoPaths,
    binary: &Path,
    hooks: &[HookName],
) -> Result<(HooksDir, Vec<Done<Uninstalled>>), HooksError> {
    let (dir, states) = status(repo, binary, hooks)?;
    let mut done = Vec::new();
    for hook in states {
        let chained = chained_path(&hook.path);
        let outcome = match &hook.state {
            HookState::Installed {
                chained: Some(_), ..
            } => {
                // The rename replaces ccfan's script in one step: the place is never empty.
                std::fs::rename(&chained, &hook.path).map_err(io(format!(
                    "cannot put {} back at {}",
                    chained.display(),
                    hook.path.display()
                )))?;
                Uninstalled::Restored
            }
            HookState::Installed { chained: None, .. } => {
                std::fs::remove_file(&hook.path)
                    .map_err(io(format!("cannot remove {}", hook.path.display())))?;
                Uninstalled::Removed
            }
            HookState::Other { .. } | HookState::Edited => Uninstalled::NotOurs {
                chained_left: hook.stray_chained.clone(),
            },
            HookState::Absent => match &hook.stray_chained {
                // ccfan's script was deleted by hand: the user's hook goes back where it was.
                Some(stray) => {
                    std::fs::rename(stray, &hook.path).map_err(io(format!(
                        "cannot put {} back at {}",
                        stray.display(),
                        hook.path.display()
                    )))?;
                    Uninstalled::Restored
                }
                None => Uninstalled::Absent,
            },
        };
        done.push(Done {
            hook: hook.hook,
            path: hook.path,
            outcome,
        });
    }
    // The chained folder goes once it is empty (it fails harmlessly while it is not).
    let _ = std::fs::remove_dir(dir.path.join(super::CHAINED_DIR));
    Ok((dir, done))
}
