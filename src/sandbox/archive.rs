//! Tar archives of a container attempt's files: its input packed to go in, and its output unpacked on the way
//! back — files and folders only, every path inside the output folder, bounded, since a container's output is
//! not trusted.

use std::io::Read;
use std::path::{Component, Path};

use super::container::{ContainerError, MAX_OUT};

/// `input` as a tar of `ccfan/in/…`, to be unpacked at `/`.
pub(super) fn pack_input(input: &Path) -> Result<Vec<u8>, ContainerError> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.mode(tar::HeaderMode::Deterministic);
    builder.follow_symlinks(false);
    builder
        .append_dir_all("ccfan/in", input)
        .and_then(|()| builder.into_inner())
        .map_err(|source| ContainerError::Io {
            context: format!("cannot pack {}", input.display()),
            source,
        })
}

/// Unpacks a tar of `out/…` into `output`, refusing links, devices and any path that would leave it.
pub fn unpack_output(tar: &[u8], output: &Path) -> Result<(), ContainerError> {
    let io = |context: String| move |source| ContainerError::Io { context, source };
    std::fs::create_dir_all(output).map_err(io(format!("cannot create {}", output.display())))?;
    let mut archive = tar::Archive::new(tar);
    for entry in archive
        .entries()
        .map_err(io("cannot read the container's output".to_string()))?
    {
        let mut entry = entry.map_err(io("cannot read the container's output".to_string()))?;
        let path = entry
            .path()
            .map_err(io("cannot read the container's output".to_string()))?
            .into_owned();
        let Ok(inside) = path.strip_prefix("out") else {
            continue;
        };
        if inside
            .components()
            .any(|part| !matches!(part, Component::Normal(_)))
        {
            continue;
        }
        let target = output.join(inside);
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                std::fs::create_dir_all(&target)
                    .map_err(io(format!("cannot create {}", target.display())))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(io(format!("cannot create {}", parent.display())))?;
                }
                let mut bytes = Vec::new();
                entry
                    .by_ref()
                    .take(MAX_OUT)
                    .read_to_end(&mut bytes)
                    .map_err(io(format!(
                        "cannot read {} from the container",
                        inside.display()
                    )))?;
                // A new file: never through a link something put there.
                let _ = std::fs::remove_file(&target);
                std::fs::write(&target, bytes)
                    .map_err(io(format!("cannot write {}", target.display())))?;
            }
            _ => tracing::warn!(
                "left out {} from the container's output: not a file",
                inside.display()
            ),
        }
    }
    Ok(())
}
