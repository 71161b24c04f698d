//! Small pure helpers shared by the stages: duration and size parsing, timestamps, stable hashes, ids.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Parses a human duration such as `30s`, `5m`, `1h 30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim()).map_err(|error| error.to_string())?;
    if duration.is_zero() {
        return Err("a duration must be longer than zero".to_string());
    }
    Ok(duration)
}

/// Parses a size such as `512KiB`, `8MiB`, `1GiB` or a plain byte count.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` does not start with a whole number"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "KB" => 1 << 10,
        "MiB" | "M" | "MB" => 1 << 20,
        "GiB" | "G" | "GB" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit `{other}`; use B, KiB, MiB or GiB"
            ));
        }
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// The first 10 characters of a commit id.
pub fn short(sha: &str) -> &str {
    sha.get(..10).unwrap_or(sha)
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

/// RFC 3339 (UTC, seconds) for a millisecond timestamp.
pub fn format_millis(millis: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_millis(u64::try_from(millis).unwrap_or(0));
    humantime::format_rfc3339_seconds(time).to_string()
}

/// FNV-1a, 64 bit: a hash that stays the same across builds (used in folder names).
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// A few random bytes as lowercase hex (from the OS; falls back to time and pid).
pub fn random_hex(bytes: usize) -> String {
    use std::io::Read;
    let mut buffer = vec![0u8; bytes];
    let read =
        std::fs::File::open("/dev/urandom").and_then(|mut file| file.read_exact(&mut buffer));
    if read.is_err() {
        let seed = stable_hash(format!("{}-{}", now_millis(), std::process::id()).as_bytes());
        for (index, byte) in buffer.iter_mut().enumerate() {
            *byte = (seed >> ((index % 8) * 8)) as u8;
        }
    }
    buffer.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A new run id: UTC time then 4 random hex digits, e.g. `20261121-195500-3fa2`. Sorts by start time.
pub fn new_run_id() -> String {
    let stamp = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    // 2026-11-21T19:55:00Z → 20261121-195500
    let digits: String = stamp.chars().filter(char::is_ascii_digit).collect();
    let (date, time) = digits.split_at(8.min(digits.len()));
    format!("{date}-{time}-{}", random_hex(2))
}

/// Reads a file a worker could have replaced (its log, its final report, attempt records): only a regular file,
/// opened without following a symlink and without blocking on a FIFO, and at most `max` bytes of it. Anything else
/// reads as an error, never as a hang or a read of some other file.
pub fn read_regular(path: &std::path::Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let file = open_regular(path)?;
    let mut bytes = Vec::new();
    file.take(max).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Opens the regular file at `path` to read it: no symlink followed, no FIFO or device waited on (a file something
/// untrusted wrote, such as a container's output).
pub fn open_regular(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    let file = std::fs::File::options()
        .read(true)
        .custom_flags(i32::try_from(flags.bits()).unwrap_or(0))
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    Ok(file)
}

/// The last `max` bytes of the regular file at `path` (the whole file when it is smaller), opened like
/// [`read_regular`]: no symlink followed, no FIFO waited on.
pub fn read_regular_tail(path: &std::path::Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::fs::OpenOptionsExt;
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    let mut file = std::fs::File::options()
        .read(true)
        .custom_flags(i32::try_from(flags.bits()).unwrap_or(0))
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    file.seek(SeekFrom::Start(meta.len().saturating_sub(max)))?;
    let mut bytes = Vec::new();
    file.take(max).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Whether `error` or any of its sources says the disk (or a quota) is full: ENOSPC or EDQUOT from the kernel,
/// SQLite's `SQLITE_FULL`, or a libgit2 OS error ending in the kernel's words for them. (Never a match anywhere in
/// a message: git errors quote file names, and a worker chooses those.)
pub fn disk_full(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && (matches!(io.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
                || io.kind() == std::io::ErrorKind::StorageFull)
        {
            return true;
        }
        if let Some(rusqlite::Error::SqliteFailure(failure, _)) =
            error.downcast_ref::<rusqlite::Error>()
            && failure.code == rusqlite::ErrorCode::DiskFull
        {
            return true;
        }
        if let Some(git) = error.downcast_ref::<git2::Error>()
            && git.class() == git2::ErrorClass::Os
            && ["No space left on device", "Disk quota exceeded"]
                .iter()
                .any(|words| git.message().trim_end().ends_with(words))
        {
            return true;
        }
        current = error.source();
    }
    false
}

/// Bytes an unprivileged process may still write on the filesystem holding `path`.
pub fn free_bytes(path: &std::path::Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(path).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Largest worker-controlled file ccfan reads (logs are capped far below this when ccfan writes them).
pub const MAX_WORKER_FILE: u64 = 64 << 20;

/// Formats seconds for humans: `0.4s`, `12s`, `3m05s`.
pub fn format_secs(secs: f64) -> String {
    if secs < 10.0 {
        format!("{secs:.1}s")
    } else if secs < 60.0 {
        format!("{secs:.0}s")
    } else {
        let whole = secs as u64;
        format!("{}m{:02}s", whole / 60, whole % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_regular_refuses_links_and_fifos_and_caps() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"0123456789").unwrap();
        assert_eq!(read_regular(&file, 4).unwrap(), b"0123");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(read_regular(&link, 100).is_err());
        let fifo = dir.path().join("fifo");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        assert!(
            read_regular(&fifo, 100).is_err(),
            "a FIFO must not block or read"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("0s").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("3 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
    }

    #[test]
    fn run_ids_have_the_documented_shape() {
        let id = new_run_id();
        assert_eq!(id.len(), "20261121-195500-3fa2".len(), "{id}");
        assert!(crate::ids::is_valid_name(&id));
    }

    #[test]
    fn stable_hash_is_fnv1a() {
        assert_eq!(stable_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
