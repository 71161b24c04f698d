//! Stage 4c, secret scan of an attempt: the lines it added (in parallel per file, binaries skipped and said so)
//! and what the worker printed — an agent that printed a key has leaked it too. Every secret found is scrubbed out
//! of the stored logs at once, leaving a marker that a later re-verify reads back as the same finding.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use rayon::prelude::*;
use regex::Regex;

use crate::git::{self, GitError};
use crate::report::{Finding, Level, Stage};
use crate::secrets::redact::redact;
use crate::secrets::{RulePack, SecretHit, Severity};

/// A raw secret value with its rule and fingerprint, held in memory only to scrub other outputs. Its `Debug`
/// shows no value.
#[derive(Clone)]
pub struct RawSecret {
    /// The value.
    pub value: Vec<u8>,
    /// The rule that found it.
    pub rule: String,
    /// Its fingerprint.
    pub fingerprint: String,
}

impl std::fmt::Debug for RawSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RawSecret({}, {})", self.rule, self.fingerprint)
    }
}

/// What the stage found.
#[derive(Debug, Default)]
pub struct SecretsOutcome {
    /// Findings (redacted).
    pub findings: Vec<Finding>,
    /// Binary files skipped, logs scrubbed.
    pub note: Option<String>,
    /// Raw values found, kept in memory only to scrub other outputs (test logs) — never stored or shown.
    pub raw: Vec<RawSecret>,
}

static MARKER: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"«[^»\n]* ccfan-redacted rule=([A-Za-z0-9_.:-]+) fp=([0-9a-f]+)»").ok()
});

fn finding(hit: &SecretHit, path: &str, line: usize) -> Finding {
    let level = match hit.severity {
        Severity::High | Severity::Medium => Level::Error,
        Severity::Low => Level::Warning,
    };
    Finding {
        stage: Stage::Secrets,
        rule: hit.rule.clone(),
        path: Some(path.to_string()),
        line: Some(line),
        message: format!(
            "{}: {} (fingerprint {})",
            hit.description, hit.redacted, hit.fingerprint
        ),
        level,
        fingerprint: Some(hit.fingerprint.clone()),
    }
}

/// The marker left where a secret was scrubbed from a log.
pub fn marker(redacted: &str, rule: &str, fingerprint: &str) -> String {
    format!("«{redacted} ccfan-redacted rule={rule} fp={fingerprint}»")
}

/// Replaces every raw secret in `text` by its marker.
pub fn scrub_bytes(text: &[u8], raw: &[RawSecret]) -> Vec<u8> {
    let mut out = text.to_vec();
    // Longest first: a key block is replaced whole before any shorter secret found inside it.
    let mut ordered: Vec<&RawSecret> = raw.iter().collect();
    ordered.sort_by_key(|secret| std::cmp::Reverse(secret.value.len()));
    for RawSecret {
        value: secret,
        rule,
        fingerprint,
    } in ordered
    {
        if secret.len() < 6 {
            continue;
        }
        let replacement =
            marker(&redact(&String::from_utf8_lossy(secret)), rule, fingerprint).into_bytes();
        let mut result = Vec::with_capacity(out.len());
        let mut rest = out.as_slice();
        while let Some(at) = memchr::memmem::find(rest, secret) {
            result.extend_from_slice(&rest[..at]);
            result.extend_from_slice(&replacement);
            rest = &rest[at + secret.len()..];
        }
        result.extend_from_slice(rest);
        out = result;
    }
    out
}

/// Scrubs a stored file in place (atomically) if it holds any of `raw`.
pub fn scrub_file(path: &Path, raw: &[RawSecret]) -> std::io::Result<bool> {
    let Ok(text) = crate::util::read_regular(path, crate::util::MAX_WORKER_FILE) else {
        return Ok(false);
    };
    let clean = scrub_bytes(&text, raw);
    if clean == text {
        return Ok(false);
    }
    // A fresh, exclusively created temporary file (a worker cannot have planted a link at its random name), then
    // an atomic rename over the log.
    let folder = path.parent().unwrap_or(Path::new("."));
    let mut temporary = tempfile::Builder::new()
        .prefix(".scrub-")
        .tempfile_in(folder)?;
    std::io::Write::write_all(&mut temporary, &clean)?;
    temporary.persist(path).map_err(|error| error.error)?;
    Ok(true)
}

/// The secrets in a path the change touches (a file's name lands with it just like its lines): findings that name
/// the path redacted, plus the raw values so every other output can be scrubbed of them.
fn path_findings(
    pack: &RulePack,
    path: &str,
    commit: Option<&str>,
    honour_markers: bool,
) -> (Vec<Finding>, Vec<RawSecret>) {
    // Rules that flag a path by itself (gitleaks `path` without `regex`) report the file already; here only
    // secrets inside the name count.
    let hits: Vec<SecretHit> = pack
        .scan_with(path, path.as_bytes(), honour_markers)
        .into_iter()
        .filter(|hit| !hit.span.is_empty())
        .collect();
    let shown = pack.redact_text(path);
    let findings = hits
        .iter()
        .map(|hit| {
            let mut found = finding(hit, &shown, 1);
            found.line = None;
            found.message = format!("a secret in the file name: {}", found.message);
            if let Some(commit) = commit {
                found.message.push_str(&format!(
                    ", added in commit {}",
                    &commit[..12.min(commit.len())]
                ));
            }
            found
        })
        .collect();
    let raw = hits
        .iter()
        .filter(|hit| !hit.span.is_empty())
        .map(|hit| RawSecret {
            value: path.as_bytes()[hit.span.clone()].to_vec(),
            rule: hit.rule.clone(),
            fingerprint: hit.fingerprint.clone(),
        })
        .collect();
    (findings, raw)
}

/// Scans what `base..commit` added (or each commit of a range added), the paths it touched (every added or
/// changed file's name, binaries included, and `old_paths`: the other side of renames), plus `logs`, scrubbing the
/// logs of everything found. `honour_markers`: inline allow markers count (the hooks' gate may say so; a worker's
/// never).
pub fn run(
    pack: &RulePack,
    added: Option<&[git::AddedLines]>,
    old_paths: &[String],
    logs: &[PathBuf],
    honour_markers: bool,
) -> Result<SecretsOutcome, GitError> {
    let mut outcome = SecretsOutcome::default();
    let mut binaries = Vec::new();
    let mut named = std::collections::HashSet::new();
    for (path, commit) in added
        .unwrap_or_default()
        .iter()
        .map(|file| (&file.path, file.commit.as_deref()))
        .chain(old_paths.iter().map(|path| (path, None)))
    {
        if named.insert(path.as_str()) {
            let (findings, raw) = path_findings(pack, path, commit, honour_markers);
            outcome.findings.extend(findings);
            outcome.raw.extend(raw);
        }
    }
    if let Some(files) = added {
        let scanned: Vec<(Vec<Finding>, Vec<RawSecret>, bool)> = files
            .par_iter()
            .filter(|file| !file.binary)
            .map(|file| {
                let hits = pack.scan_with(&file.path, &file.text, honour_markers);
                let findings = hits
                    .iter()
                    .map(|hit| {
                        let line = file
                            .line_numbers
                            .get(hit.line.saturating_sub(1))
                            .copied()
                            .unwrap_or(0);
                        let mut found = finding(hit, &file.path, line);
                        if let Some(commit) = &file.commit {
                            found.message.push_str(&format!(
                                ", added in commit {}",
                                &commit[..12.min(commit.len())]
                            ));
                        }
                        found
                    })
                    .collect();
                let raw = hits
                    .iter()
                    .filter(|hit| !hit.span.is_empty())
                    .map(|hit| RawSecret {
                        value: file.text[hit.span.clone()].to_vec(),
                        rule: hit.rule.clone(),
                        fingerprint: hit.fingerprint.clone(),
                    })
                    .collect();
                (findings, raw, file.commit.is_some())
            })
            .collect();
        // A merge being committed is scanned commit by commit, then as staged: a secret a merged commit brought is
        // reported once, with its commit.
        let from_commits: std::collections::HashSet<(Option<String>, Option<String>)> = scanned
            .iter()
            .filter(|(_, _, in_commit)| *in_commit)
            .flat_map(|(findings, _, _)| findings)
            .map(|found| (found.path.clone(), found.fingerprint.clone()))
            .collect();
        for (findings, raw, in_commit) in scanned {
            outcome
                .findings
                .extend(findings.into_iter().filter(|found| {
                    in_commit
                        || !from_commits.contains(&(found.path.clone(), found.fingerprint.clone()))
                }));
            outcome.raw.extend(raw);
        }
        binaries.extend(
            files
                .iter()
                .filter(|file| file.binary)
                .map(|file| file.path.clone()),
        );
    }
    let mut scrubbed = Vec::new();
    for log in logs {
        let Ok(text) = crate::util::read_regular(log, crate::util::MAX_WORKER_FILE) else {
            continue;
        };
        let shown = log
            .file_name()
            .map_or_else(|| "log".to_string(), |n| n.to_string_lossy().into_owned());
        let hits = pack.scan_with(&shown, &text, false);
        for hit in &hits {
            let mut found = finding(hit, &shown, hit.line);
            found.rule = hit.rule.clone();
            found.message = format!("the worker printed a secret: {}", found.message);
            outcome.findings.push(found);
            outcome.raw.push(RawSecret {
                value: text[hit.span.clone()].to_vec(),
                rule: hit.rule.clone(),
                fingerprint: hit.fingerprint.clone(),
            });
        }
        // Secrets scrubbed by an earlier verify still count.
        if let Some(marker) = MARKER.as_ref() {
            let lossy = String::from_utf8_lossy(&text);
            for (index, line) in lossy.lines().enumerate() {
                for captures in marker.captures_iter(line) {
                    let (rule, fingerprint) = (&captures[1], &captures[2]);
                    outcome.findings.push(Finding {
                        stage: Stage::Secrets,
                        rule: rule.to_string(),
                        path: Some(shown.clone()),
                        line: Some(index + 1),
                        message: format!("the worker printed a secret (already redacted in the stored log, fingerprint {fingerprint})"),
                        level: Level::Error,
                        fingerprint: Some(fingerprint.to_string()),
                    });
                }
            }
        }
        match scrub_file(log, &outcome.raw) {
            Ok(true) => scrubbed.push(shown),
            Ok(false) => {}
            Err(error) => tracing::warn!("cannot scrub {}: {error}", log.display()),
        }
    }
    let mut notes = Vec::new();
    if !binaries.is_empty() {
        notes.push(format!(
            "skipped {} binary file(s): {}",
            binaries.len(),
            binaries.join(", ")
        ));
    }
    if !scrubbed.is_empty() {
        notes.push(format!(
            "secrets redacted in the stored {}",
            scrubbed.join(", ")
        ));
    }
    outcome.note = (!notes.is_empty()).then(|| notes.join("; "));
    Ok(outcome)
}

/// Scans a stored log with the rule pack and scrubs whatever it finds, plus `known` values, in place. Returns the
/// raw values found (in memory only).
pub fn scrub_log(pack: &RulePack, log: &Path, known: &[RawSecret]) -> Vec<RawSecret> {
    let Ok(text) = crate::util::read_regular(log, crate::util::MAX_WORKER_FILE) else {
        return Vec::new();
    };
    let mut raw: Vec<RawSecret> = pack
        .scan_with("log", &text, false)
        .iter()
        .filter(|hit| !hit.span.is_empty())
        .map(|hit| RawSecret {
            value: text[hit.span.clone()].to_vec(),
            rule: hit.rule.clone(),
            fingerprint: hit.fingerprint.clone(),
        })
        .collect();
    raw.extend(known.iter().cloned());
    if let Err(error) = scrub_file(log, &raw) {
        tracing::warn!("cannot scrub {}: {error}", log.display());
    }
    raw
}

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
    let mut raw: Vec<RawSecret> = pack
        .scan_with("", &text, false)
        .iter()
        .filter(|hit| !hit.span.is_empty())
        .map(|hit| RawSecret {
            value: text[hit.span.clone()].to_vec(),
            rule: hit.rule.clone(),
            fingerprint: hit.fingerprint.clone(),
        })
        .collect();
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

    #[test]
    fn scrub_replaces_every_occurrence_with_a_marker_that_parses_back() {
        let raw = vec![RawSecret {
            value: b"sk_live_abcdefghijklmnop1234".to_vec(),
            rule: "stripe".to_string(),
            fingerprint: "0123456789ab".to_string(),
        }];
        let clean = scrub_bytes(
            b"key sk_live_abcdefghijklmnop1234 and sk_live_abcdefghijklmnop1234\n",
            &raw,
        );
        let text = String::from_utf8(clean).unwrap();
        assert!(!text.contains("sk_live_abcdefghijklmnop1234"), "{text}");
        let marker = MARKER.as_ref().unwrap();
        assert_eq!(marker.captures_iter(&text).count(), 2);
        assert_eq!(&marker.captures(&text).unwrap()[1], "stripe");
    }
}
