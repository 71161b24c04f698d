//! Tar archives of a container attempt's files: its input packed to go in, and its output unpacked on the way
//! back — files and folders only, every path inside the output folder, bounded, since a container's output is
//! not trusted. In a Kubernetes pod the runner does the other halves itself ([`take_input`], [`give_output`]),
//! since what goes in and out travels over the API's exec streams.

use std::io::Read;
use std::path::{Component, Path};

/// Where an attempt's input sits in the tar [`pack_input_to`] makes.
const INPUT_PREFIX: &str = "ccfan/in";
/// The most bytes of input a runner takes in: a base bundle (the runner reads 4 GiB of one at most), the task
/// file, the order, and an agent's home.
const MAX_INPUT: u64 = (4 << 30) + (16 << 20) + MAX_AGENT_HOME;
/// The file a runner's input folder gets once all of it is there.
pub const READY: &str = ".ready";

/// `input` as a tar of `ccfan/in/…` (to be unpacked at `/`), written to the file `to`: streamed to the container
/// or the pod from there, never held in memory.
pub(super) fn pack_input_to(input: &Path, to: &Path) -> std::io::Result<()> {
    let mut builder = tar::Builder::new(std::io::BufWriter::new(std::fs::File::create(to)?));
    builder.mode(tar::HeaderMode::Deterministic);
    builder.follow_symlinks(false);
    builder.append_dir_all(INPUT_PREFIX, input)?;
    std::io::Write::flush(&mut builder.into_inner()?)
}

/// The files taken back from a container's output, with the most bytes each may hold: nothing else is written.
const TAKEN: [(&str, u64); 7] = [
    ("manifest.json", 1 << 20),
    ("attempt.bundle", 512 << 20),
    ("worker.log", 64 << 20),
    ("events.jsonl", 64 << 20),
    ("agent-home.tar", MAX_AGENT_HOME),
    ("agent.json", 4 << 20),
    ("outbox/final_report.md", 4 << 20),
];
/// The most bytes of an agent worker's home carried out to a container and back (its sessions, for a resume).
pub const MAX_AGENT_HOME: u64 = 256 << 20;
/// The most entries of a container's output looked at.
const MAX_ENTRIES: usize = 10_000;

/// Unpacks the files ccfan takes back ([`TAKEN`]) from a tar of `out/…` into `output`, each as a new regular file
/// of at most its size (a longer one is an error, never a silent cut); links, devices, other names and entries
/// past [`MAX_ENTRIES`] are left out.
pub fn unpack_output(tar: impl Read, output: &Path) -> std::io::Result<()> {
    let io = |context: String| {
        move |source: std::io::Error| {
            std::io::Error::new(source.kind(), format!("{context}: {source}"))
        }
    };
    std::fs::create_dir_all(output).map_err(io(format!("cannot create {}", output.display())))?;
    let mut archive = tar::Archive::new(tar);
    let unreadable = || io("cannot read the container's output".to_string());
    for (n, entry) in archive.entries().map_err(unreadable())?.enumerate() {
        if n >= MAX_ENTRIES {
            tracing::warn!(
                "the container's output has more than {MAX_ENTRIES} entries: the rest is left out"
            );
            break;
        }
        let mut entry = entry.map_err(unreadable())?;
        let path = entry.path().map_err(unreadable())?.into_owned();
        let Ok(inside) = path.strip_prefix("out") else {
            continue;
        };
        let name = inside.to_string_lossy();
        let Some((_, max)) = TAKEN.iter().find(|(taken, _)| *taken == name) else {
            continue;
        };
        if !matches!(
            entry.header().entry_type(),
            tar::EntryType::Regular | tar::EntryType::Continuous
        ) || inside
            .components()
            .any(|part| !matches!(part, Component::Normal(_)))
        {
            continue;
        }
        if entry.header().size().unwrap_or(u64::MAX) > *max {
            return Err(std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                format!("{name} from the container is over {max} bytes"),
            ));
        }
        let target = output.join(inside);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(io(format!("cannot create {}", parent.display())))?;
        }
        // A new file: never through a link something put there.
        let _ = std::fs::remove_file(&target);
        let mut file = std::fs::File::options()
            .write(true)
            .create_new(true)
            .open(&target)
            .map_err(io(format!("cannot write {}", target.display())))?;
        std::io::copy(&mut entry.by_ref().take(*max), &mut file)
            .map_err(io(format!("cannot write {}", target.display())))?;
    }
    Ok(())
}

/// In the pod: unpacks the `ccfan/in/…` files of the tar on `tar` into `input` (regular files and folders only,
/// every path inside it, at most [`MAX_INPUT`] bytes), then marks the folder [`READY`]. It stops at the archive's
/// end, so the sender need not close its side.
pub fn take_input(tar: impl Read, input: &Path) -> std::io::Result<u64> {
    let total = extract_files(
        tar,
        Path::new(INPUT_PREFIX),
        input,
        Bounds {
            bytes: MAX_INPUT,
            entries: usize::MAX,
        },
        &[],
    )?;
    std::fs::write(input.join(READY), b"").map_err(|source| {
        std::io::Error::new(
            source.kind(),
            format!("cannot mark {} ready: {source}", input.display()),
        )
    })?;
    Ok(total)
}

/// How much of an archive [`extract_files`] takes at most.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Bytes of file content, in all (more is an error).
    pub bytes: u64,
    /// Entries looked at (the rest is left out).
    pub entries: usize,
}

/// Unpacks the regular files and folders under `prefix` in the tar on `tar` into `dest`, which may already hold
/// files: each path must stay inside it (plain names only), no folder on the way may be a link (never written
/// through one something planted), a file is replaced by a new one, and the top-level names in `keep` are left
/// as they are. More than `bounds` (bytes as read, not as the headers say) is an error. The bytes written. Links,
/// devices and other entries are left out.
pub fn extract_files(
    tar: impl Read,
    prefix: &Path,
    dest: &Path,
    bounds: Bounds,
    keep: &[&str],
) -> std::io::Result<u64> {
    let io = |context: String| {
        move |source: std::io::Error| {
            std::io::Error::new(source.kind(), format!("{context}: {source}"))
        }
    };
    std::fs::create_dir_all(dest).map_err(io(format!("cannot create {}", dest.display())))?;
    let mut archive = tar::Archive::new(tar);
    let unreadable = || io(format!("cannot read the archive for {}", dest.display()));
    let mut total = 0u64;
    for (n, entry) in archive.entries().map_err(unreadable())?.enumerate() {
        if n >= bounds.entries {
            return Err(std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                format!(
                    "the archive for {} has more than {} entries",
                    dest.display(),
                    bounds.entries
                ),
            ));
        }
        let mut entry = entry.map_err(unreadable())?;
        let path = entry.path().map_err(unreadable())?.into_owned();
        let Ok(inside) = path.strip_prefix(prefix) else {
            continue;
        };
        let top = inside.components().next();
        if top.is_none()
            || inside
                .components()
                .any(|part| !matches!(part, Component::Normal(_)))
            || top.is_some_and(|top| keep.iter().any(|kept| top.as_os_str() == *kept))
        {
            continue;
        }
        let kind = entry.header().entry_type();
        let folder = match kind {
            tar::EntryType::Directory => inside,
            tar::EntryType::Regular | tar::EntryType::Continuous => match inside.parent() {
                Some(parent) => parent,
                None => continue,
            },
            _ => continue,
        };
        make_folders(dest, folder)
            .map_err(io(format!("cannot create {}", dest.join(folder).display())))?;
        if kind == tar::EntryType::Directory {
            continue;
        }
        let too_large = || {
            std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                format!(
                    "the archive for {} is over {} bytes",
                    dest.display(),
                    bounds.bytes
                ),
            )
        };
        if total.saturating_add(entry.size()) > bounds.bytes {
            return Err(too_large());
        }
        let target = dest.join(inside);
        // A new file: never through a link something put there.
        if std::fs::symlink_metadata(&target).is_ok_and(|meta| !meta.is_dir()) {
            std::fs::remove_file(&target)
                .map_err(io(format!("cannot replace {}", target.display())))?;
        }
        let mut file = std::fs::File::options()
            .write(true)
            .create_new(true)
            .open(&target)
            .map_err(io(format!("cannot write {}", target.display())))?;
        // What is read counts, whatever the header says (a PAX size can differ from the ustar one).
        let left = bounds.bytes - total;
        total += std::io::copy(&mut entry.by_ref().take(left + 1), &mut file)
            .map_err(io(format!("cannot write {}", target.display())))?;
        if total > bounds.bytes {
            return Err(too_large());
        }
    }
    Ok(total)
}

/// Makes the folders of `relative` under `dest` one by one, refusing any that is there as something else (a link).
fn make_folders(dest: &Path, relative: &Path) -> std::io::Result<()> {
    let mut at = dest.to_path_buf();
    for part in relative.components() {
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "a file or a link is there, not a folder",
                ));
            }
            Err(_) => std::fs::create_dir(&at)?,
        }
    }
    Ok(())
}

/// In the pod: the runner's `output` folder as a tar of `out/…` on `to` (what [`unpack_output`] reads back).
pub fn give_output(output: &Path, to: impl std::io::Write) -> std::io::Result<()> {
    let mut builder = tar::Builder::new(to);
    builder.mode(tar::HeaderMode::Deterministic);
    builder.follow_symlinks(false);
    builder.append_dir_all("out", output)?;
    builder.into_inner()?.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_goes_in_and_output_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in");
        std::fs::create_dir_all(input.join("sub")).unwrap();
        std::fs::write(input.join("order.json"), b"{}").unwrap();
        std::fs::write(input.join("sub/task.json"), b"[]").unwrap();
        let packed = dir.path().join("in.tar");
        pack_input_to(&input, &packed).unwrap();
        let mut tar = std::fs::read(&packed).unwrap();
        // Whatever follows the archive's end is not read.
        tar.extend_from_slice(b"trailing");
        let pod = dir.path().join("pod/in");
        assert_eq!(take_input(tar.as_slice(), &pod).unwrap(), 4);
        assert_eq!(std::fs::read(pod.join("sub/task.json")).unwrap(), b"[]");
        assert!(pod.join(READY).is_file());

        let out = dir.path().join("pod/out");
        std::fs::create_dir_all(out.join("outbox")).unwrap();
        std::fs::write(out.join("manifest.json"), b"{\"schema\":1}").unwrap();
        std::fs::write(out.join("outbox/final_report.md"), b"done").unwrap();
        let mut tar = Vec::new();
        give_output(&out, &mut tar).unwrap();
        let back = dir.path().join("back");
        unpack_output(tar.as_slice(), &back).unwrap();
        assert_eq!(
            std::fs::read(back.join("outbox/final_report.md")).unwrap(),
            b"done"
        );
    }

    #[test]
    fn input_outside_its_folder_is_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let mut builder = tar::Builder::new(Vec::new());
        for (path, bytes) in [("ccfan/in/order.json", b"{}"), ("etc/passwd", b"xx")] {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, path, &bytes[..]).unwrap();
        }
        let tar = builder.into_inner().unwrap();
        let input = dir.path().join("in");
        take_input(tar.as_slice(), &input).unwrap();
        assert!(input.join("order.json").is_file());
        assert!(!dir.path().join("etc").exists());
        assert!(!input.join("etc").exists());
    }

    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, bytes) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, path, *bytes).unwrap();
        }
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        link.set_cksum();
        builder
            .append_link(&mut link, "out/worker.log", "/etc/passwd")
            .unwrap();
        builder.into_inner().unwrap()
    }

    #[test]
    fn only_the_files_ccfan_takes_back_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let tar = tar_of(&[
            ("out/manifest.json", b"{}"),
            ("out/outbox/final_report.md", b"## Summary"),
            ("out/other.txt", b"x"),
            ("out/outbox/nested/final_report.md", b"x"),
        ]);
        unpack_output(tar.as_slice(), dir.path()).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("manifest.json")).unwrap(),
            b"{}"
        );
        assert!(dir.path().join("outbox/final_report.md").is_file());
        assert!(!dir.path().join("other.txt").exists());
        assert!(
            !dir.path().join("worker.log").exists(),
            "a link was followed"
        );
        assert!(!dir.path().join("outbox/nested").exists());
    }
}
