//! After each agent attempt: the secrets it wrote or printed are scrubbed from its private home too — session
//! transcripts get markers like the logs, SQLite databases (their write-ahead logs checkpointed first) have each
//! secret overwritten in place — so a key is not kept raw there. The user's own seeded files are left alone.

use std::path::Path;

use super::secrets::{RawSecret, scrub_file};
use crate::secrets::RulePack;

/// At most this many files of an agent's home are scrubbed (a home is a few session files and a database).
const MAX_HOME_FILES: usize = 10_000;

/// Scrubs every secret the rule pack finds, plus `known` values, out of the files under `home` that the agent
/// wrote (its session transcripts, history databases, logs), except `seeded` (the user's own credentials and
/// config at the top, which ccfan copied in). Text files get the usual markers; binary files (SQLite) have each
/// secret overwritten with `*` of the same length, so they stay readable. Symlinks are never followed. Returns the
/// files changed.
pub fn scrub_home(pack: &RulePack, home: &Path, seeded: &[&str], known: &[RawSecret]) -> usize {
    checkpoint_databases(home);
    let mut changed = 0;
    let mut pending = vec![home.to_path_buf()];
    let mut seen = 0;
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                pending.push(path);
                continue;
            }
            let top_level = dir == home;
            let is_seeded = top_level
                && seeded
                    .iter()
                    .any(|name| entry.file_name() == std::ffi::OsStr::new(name));
            let name = entry.file_name();
            let name = name.to_string_lossy();
            // SQLite's shared-memory index holds no rows; its write-ahead log was checkpointed into the database.
            if !kind.is_file() || is_seeded || name.ends_with("-shm") {
                continue;
            }
            seen += 1;
            if seen > MAX_HOME_FILES {
                tracing::warn!("{} holds too many files to scrub them all", home.display());
                return changed;
            }
            match scrub_any_file(pack, &path, known) {
                Ok(true) => changed += 1,
                Ok(false) => {}
                Err(error) => tracing::warn!(
                    "cannot scrub {}: {error}",
                    pack.redact_text(&path.display().to_string())
                ),
            }
        }
    }
    changed
}

/// Moves every SQLite write-ahead log under `home` into its database (the agent has ended), so that a secret in
/// a recent transaction is masked in the database file — masking bytes inside a log would break its checksums.
fn checkpoint_databases(home: &Path) {
    let mut pending = vec![home.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let path = entry.path();
            if kind.is_dir() {
                pending.push(path);
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(database) = name.strip_suffix("-wal").map(|db| dir.join(db)) else {
                continue;
            };
            let checkpointed = rusqlite::Connection::open(&database)
                .and_then(|db| db.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())));
            if let Err(error) = checkpointed {
                tracing::warn!("cannot checkpoint an agent database: {error}");
            }
        }
    }
}

/// Scrubs one stored file of what `pack` finds in it and of `known`; see [`scrub_home`]. A file over the cap is
/// left whole (rewriting only the part read would cut it short), with a warning.
fn scrub_any_file(pack: &RulePack, path: &Path, known: &[RawSecret]) -> std::io::Result<bool> {
    if std::fs::symlink_metadata(path)?.len() > crate::util::MAX_WORKER_FILE {
        return Err(std::io::Error::other(format!(
            "larger than {} bytes: left unscrubbed",
            crate::util::MAX_WORKER_FILE
        )));
    }
    let text = crate::util::read_regular(path, crate::util::MAX_WORKER_FILE)?;
    let mut raw = RawSecret::of_hits(&pack.scan_with("", &text, false), &text);
    raw.extend(known.iter().cloned());
    if raw.is_empty() {
        return Ok(false);
    }
    if !crate::secrets::looks_binary(&text) {
        return scrub_file(path, &raw);
    }
    let mut masked = text.clone();
    for secret in raw.iter().filter(|secret| secret.value.len() >= 6) {
        let mut from = 0;
        while let Some(at) = memchr::memmem::find(&masked[from..], &secret.value) {
            let start = from + at;
            masked[start..start + secret.value.len()].fill(b'*');
            from = start + secret.value.len();
        }
    }
    if masked == text {
        return Ok(false);
    }
    let folder = path.parent().unwrap_or(Path::new("."));
    let mut temporary = tempfile::Builder::new()
        .prefix(".scrub-")
        .tempfile_in(folder)?;
    std::io::Write::write_all(&mut temporary, &masked)?;
    temporary.persist(path).map_err(|error| error.error)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_home_is_scrubbed_but_the_users_credentials_are_not() {
        let pack = RulePack::builtin("default").unwrap();
        let home = tempfile::tempdir().unwrap();
        let key = "AKIAQ3RWK7ZNBX4TYPLM";
        let sessions = home.path().join("sessions/2026/12/02");
        std::fs::create_dir_all(&sessions).unwrap();
        let rollout = sessions.join("rollout-1.jsonl");
        std::fs::write(&rollout, format!("{{\"output\": \"key={key}\"}}\n")).unwrap();
        let db = home.path().join("history.sqlite");
        let mut bytes = b"SQLite format 3\0page \x01".to_vec();
        bytes.extend_from_slice(key.as_bytes());
        bytes.extend_from_slice(b"\0tail");
        std::fs::write(&db, &bytes).unwrap();
        let auth = home.path().join("auth.json");
        std::fs::write(&auth, format!("{{\"key\": \"{key}\"}}")).unwrap();
        std::os::unix::fs::symlink(&auth, sessions.join("link.jsonl")).unwrap();

        assert_eq!(scrub_home(&pack, home.path(), &["auth.json"], &[]), 2);
        let rollout = std::fs::read_to_string(&rollout).unwrap();
        assert!(
            !rollout.contains(key) && rollout.contains("ccfan-redacted"),
            "{rollout}"
        );
        let db = std::fs::read(&db).unwrap();
        assert_eq!(db.len(), bytes.len());
        assert!(!db.windows(key.len()).any(|w| w == key.as_bytes()));
        // The user's own credentials, and a symlink to them, are left alone.
        assert!(std::fs::read_to_string(&auth).unwrap().contains(key));
    }

    #[test]
    fn a_secret_in_an_agent_database_log_is_masked_and_the_database_still_reads() {
        let pack = RulePack::builtin("default").unwrap();
        let home = tempfile::tempdir().unwrap();
        let key = "AKIAQ3RWK7ZNBX4TYPLM";
        let path = home.path().join("state_5.sqlite");
        let db = rusqlite::Connection::open(&path).unwrap();
        db.pragma_update(None, "journal_mode", "WAL").unwrap();
        db.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        db.execute_batch("CREATE TABLE t (body TEXT)").unwrap();
        db.execute("INSERT INTO t VALUES (?1)", [format!("key {key} end")])
            .unwrap();
        // The agent died with its log not yet checkpointed.
        std::mem::forget(db);
        assert!(home.path().join("state_5.sqlite-wal").exists());

        assert!(scrub_home(&pack, home.path(), &[], &[]) >= 1);
        for entry in std::fs::read_dir(home.path()).unwrap().flatten() {
            let bytes = std::fs::read(entry.path()).unwrap();
            assert!(
                !bytes.windows(key.len()).any(|w| w == key.as_bytes()),
                "{}",
                entry.path().display()
            );
        }
        let db = rusqlite::Connection::open(&path).unwrap();
        let body: String = db
            .query_row("SELECT body FROM t", [], |row| row.get(0))
            .unwrap();
        assert_eq!(body, format!("key {} end", "*".repeat(key.len())));
    }
}
