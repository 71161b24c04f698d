//! The sandbox door, copy-on-write trees: a kernel overlayfs mount gives each task tree a private writable layer
//! (`upper`) over one shared prepared tree (`lower`), so a tree costs nothing to make and holds only what its worker
//! wrote; and reading that layer back tells ccfan exactly what changed (written files, whiteouts for deletions,
//! opaque folders), so recording costs what changed, not the size of the repository.
//!
//! The mount is made in ccfan's own mount namespace at the tree's path, so every ccfan command, git, the user's
//! shell and the worker's sandbox (which binds the tree) see one and the same view. It needs the right to mount
//! (root, or `CAP_SYS_ADMIN`); [`probe`] says whether this machine gives it, and why not.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;

use rustix::mount::{MountFlags, UnmountFlags};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Errors of mounting or reading an overlay.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    /// A path the mount options cannot carry.
    #[error("{} cannot be part of an overlay mount (it holds `,`, `:` or `\\`)", path.display())]
    Path {
        /// The path.
        path: PathBuf,
    },
    /// The kernel refused.
    #[error("cannot {what} {}: {source}", path.display())]
    Os {
        /// What was tried.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// One overlay: the read-only `lower` tree, the private `upper` layer and its `work` folder (same filesystem as
/// `upper`), mounted at `target`.
#[derive(Debug, Clone, Copy)]
pub struct Overlay<'a> {
    /// The shared tree (never written through the mount).
    pub lower: &'a Path,
    /// The tree's own writes.
    pub upper: &'a Path,
    /// The kernel's scratch folder for `upper`.
    pub work: &'a Path,
    /// Where the view appears.
    pub target: &'a Path,
}

/// `path`, when an overlay's mount options can name it (no `,`, `:` or `\\`).
pub fn option_safe(path: &Path) -> Result<&Path, OverlayError> {
    let bytes = path.as_os_str().as_bytes();
    if bytes.iter().any(|b| matches!(b, b',' | b':' | b'\\' | 0)) {
        return Err(OverlayError::Path {
            path: path.to_path_buf(),
        });
    }
    Ok(path)
}

/// Mounts `overlay`. Metadata-only copy-up is off — asked for explicitly, never left to the kernel's defaults — so
/// the upper layer holds whole files: what it holds is the change. Folder renames are on (agents rename folders;
/// without redirects the kernel refuses with EXDEV): a renamed folder is a redirect in the upper layer, which
/// [`changes`] reports as unreadable, so that attempt is recorded by reading the whole view. A kernel that does not
/// know these options cannot carry such trees.
pub fn mount(overlay: &Overlay<'_>) -> Result<(), OverlayError> {
    let data = format!(
        "lowerdir={},upperdir={},workdir={},redirect_dir=on,metacopy=off,index=off",
        option_safe(overlay.lower)?.display(),
        option_safe(overlay.upper)?.display(),
        option_safe(overlay.work)?.display()
    );
    let data = CString::new(data).map_err(|_| OverlayError::Path {
        path: overlay.lower.to_path_buf(),
    })?;
    let flags = MountFlags::NODEV | MountFlags::NOSUID;
    rustix::mount::mount("overlay", overlay.target, "overlay", flags, data.as_c_str()).map_err(
        |error| OverlayError::Os {
            what: "mount an overlay on",
            path: overlay.target.to_path_buf(),
            source: error.into(),
        },
    )
}

/// The lower folders of every overlay mounted on this machine (from `/proc/self/mountinfo`): a folder some tree
/// stands on must not be removed, whatever any record says.
pub fn lowers_in_use() -> Vec<PathBuf> {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    table
        .lines()
        .filter_map(|line| line.split_once(" - overlay "))
        .flat_map(|(_, rest)| rest.split(',').map(str::to_string).collect::<Vec<_>>())
        .filter_map(|option| {
            option
                .split_once("lowerdir=")
                .map(|(_, dirs)| dirs.to_string())
        })
        .flat_map(|dirs| dirs.split(':').map(PathBuf::from).collect::<Vec<_>>())
        .collect()
}

/// Removes a tree's private layer (`upper`, `work`). The kernel leaves `work/work` without permissions when the
/// mounter is not root; they are given back first.
pub fn remove_private(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let inner = dir.join("work").join("work");
    if inner.is_dir() {
        let _ = std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o700));
    }
    std::fs::remove_dir_all(dir)
}

/// Whether something is mounted at `target` (its device differs from its parent's).
pub fn is_mounted(target: &Path) -> bool {
    let (Ok(here), Some(Ok(parent))) = (
        std::fs::metadata(target),
        target.parent().map(std::fs::metadata),
    ) else {
        return false;
    };
    here.dev() != parent.dev()
}

/// Unmounts `target` if something is mounted there; a mount still busy (a leftover process inside) is detached, so
/// it goes once the last user leaves.
pub fn unmount(target: &Path) -> Result<(), OverlayError> {
    if !is_mounted(target) {
        return Ok(());
    }
    rustix::mount::unmount(target, UnmountFlags::empty())
        .or_else(|_| rustix::mount::unmount(target, UnmountFlags::DETACH))
        .map_err(|error| OverlayError::Os {
            what: "unmount",
            path: target.to_path_buf(),
            source: error.into(),
        })
}

/// Whether overlay mounts work for trees under `dir` (which must exist): a tiny overlay is mounted there, written
/// through, read back from its upper layer and removed. `Err` says why not, for the run and `ccfan doctor`.
pub fn probe(dir: &Path) -> Result<(), String> {
    let scratch = tempfile::Builder::new()
        .prefix(".ccfan-overlay-probe-")
        .tempdir_in(dir)
        .map_err(|error| format!("cannot make a probe folder in {}: {error}", dir.display()))?;
    let at = |name: &str| scratch.path().join(name);
    for name in ["lower", "upper", "work", "view"] {
        std::fs::create_dir(at(name))
            .map_err(|error| format!("cannot make a probe folder: {error}"))?;
    }
    std::fs::write(at("lower").join("file"), b"lower").map_err(|error| error.to_string())?;
    let (lower, upper, work, view) = (at("lower"), at("upper"), at("work"), at("view"));
    let overlay = Overlay {
        lower: &lower,
        upper: &upper,
        work: &work,
        target: &view,
    };
    mount(&overlay).map_err(|error| match &error {
        OverlayError::Os { source, .. } if source.raw_os_error() == Some(libc::EPERM) => {
            "mounting an overlay needs root or CAP_SYS_ADMIN, which ccfan does not have here"
                .to_string()
        }
        _ => error.to_string(),
    })?;
    let written = std::fs::write(view.join("file"), b"upper")
        .and_then(|()| std::fs::remove_file(view.join("file")))
        .map_err(|error| format!("cannot write through an overlay: {error}"));
    let _ = unmount(&view);
    let read = written.and_then(|()| match changes(&upper) {
        Ok(found) if found == vec![Change::Deleted(PathBuf::from("file"))] => Ok(()),
        Ok(found) => Err(format!(
            "an overlay's upper layer reads back wrong ({found:?})"
        )),
        Err(error) => Err(format!("cannot read an overlay's upper layer: {error}")),
    });
    let _ = remove_private(scratch.path());
    read
}

/// One entry of an upper layer, relative to the tree's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A file or symlink written (new, changed, or its mode changed).
    Written(PathBuf),
    /// A whiteout: whatever the lower tree had here is gone.
    Deleted(PathBuf),
    /// An opaque folder: whatever the lower tree had under it is gone; what it holds now is listed as written.
    Replaced(PathBuf),
}

/// What the upper layer holds: every written file, deletion and replaced folder, in walk order. The tree's own
/// `.git` link at its root is ccfan's, not a change. An entry the kernel marked as a redirect or a metadata-only
/// copy (a mount not made by ccfan) is an error: such a layer does not hold the whole change.
pub fn changes(upper: &Path) -> std::io::Result<Vec<Change>> {
    let mut found = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(relative) = stack.pop() {
        let mut entries: Vec<_> =
            std::fs::read_dir(upper.join(&relative))?.collect::<Result<_, _>>()?;
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for entry in entries {
            let path = relative.join(entry.file_name());
            if path.as_os_str() == ".git" {
                continue;
            }
            let meta = entry.metadata()?;
            let kind = meta.file_type();
            if has_xattr(&entry.path(), "trusted.overlay.redirect")
                || has_xattr(&entry.path(), "trusted.overlay.metacopy")
            {
                return Err(std::io::Error::other(format!(
                    "{} is a redirect or a metadata-only copy",
                    path.display()
                )));
            }
            if kind.is_char_device() && meta.rdev() == 0 {
                found.push(Change::Deleted(path));
            } else if kind.is_dir() {
                if opaque(&entry.path()) {
                    found.push(Change::Replaced(path.clone()));
                }
                stack.push(path);
            } else {
                found.push(Change::Written(path));
            }
        }
    }
    Ok(found)
}

/// Whether the kernel marked the upper folder opaque (it replaced a lower folder or file of the same name). Only
/// the `trusted.` name counts: ccfan's mounts are not `userxattr` ones, and a worker can set `user.` attributes.
fn opaque(dir: &Path) -> bool {
    let mut value = [0u8; 4];
    rustix::fs::lgetxattr(dir, "trusted.overlay.opaque", &mut value)
        .is_ok_and(|len| len > 0 && value[0] == b'y')
}

/// Whether `path` carries the extended attribute `name` (whatever its value).
fn has_xattr(path: &Path, name: &str) -> bool {
    rustix::fs::lgetxattr(path, name, &mut [0u8; 0][..]).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_mount_options_cannot_carry_are_refused() {
        for bad in ["/a,b", "/a:b", "/a\\b"] {
            assert!(matches!(
                option_safe(Path::new(bad)),
                Err(OverlayError::Path { .. })
            ));
        }
        assert!(option_safe(Path::new("/tmp/x y")).is_ok());
    }

    #[test]
    fn an_upper_layer_reads_back_as_its_changes() {
        let dir = tempfile::tempdir().unwrap();
        let upper = dir.path();
        std::fs::write(upper.join(".git"), "gitdir: x").unwrap();
        std::fs::create_dir_all(upper.join("src/new")).unwrap();
        std::fs::write(upper.join("src/new/a.rs"), "a").unwrap();
        std::os::unix::fs::symlink("a.rs", upper.join("src/new/link")).unwrap();
        let found = changes(upper).unwrap();
        assert_eq!(
            found,
            vec![
                Change::Written("src/new/a.rs".into()),
                Change::Written("src/new/link".into())
            ]
        );
    }
}
