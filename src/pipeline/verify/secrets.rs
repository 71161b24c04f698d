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

impl RawSecret {
    /// The raw values of `hits` in `text` (the buffer they were found in), for scrubbing other outputs.
    pub fn of_hits(hits: &[SecretHit], text: &[u8]) -> Vec<RawSecret> {
        hits.iter()
            .filter(|hit| !hit.span.is_empty())
            .map(|hit| RawSecret {
                value: text[hit.span.clone()].to_vec(),
                rule: hit.rule.clone(),
                fingerprint: hit.fingerprint.clone(),
            })
            .collect()
    }
}

/// ` (added in commit 0123456789ab)` for a finding from a commit's own lines.
fn in_commit(commit: Option<&str>) -> String {
    commit
        .map(|commit| format!(", added in commit {}", &commit[..12.min(commit.len())]))
        .unwrap_or_default()
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
            found.message = format!(
                "a secret in the file name: {}{}",
                found.message,
                in_commit(commit)
            );
            found
        })
        .collect();
    let raw = RawSecret::of_hits(&hits, path.as_bytes());
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
    let binaries: Vec<String> = match added {
        Some(files) => {
            scan_added(pack, files, honour_markers, &mut outcome);
            files
                .iter()
                .filter(|file| file.binary)
                .map(|file| file.path.clone())
                .collect()
        }
        None => Vec::new(),
    };
    let scrubbed: Vec<String> = logs
        .iter()
        .filter_map(|log| scan_log(pack, log, &mut outcome))
        .collect();
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

/// The secrets in the added lines, file by file in parallel (binaries skipped). A merge being committed is scanned
/// commit by commit, then as staged: a secret a merged commit brought is reported once, with its commit.
fn scan_added(
    pack: &RulePack,
    files: &[git::AddedLines],
    honour_markers: bool,
    outcome: &mut SecretsOutcome,
) {
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
                    found.message.push_str(&in_commit(file.commit.as_deref()));
                    found
                })
                .collect();
            let raw = RawSecret::of_hits(&hits, &file.text);
            (findings, raw, file.commit.is_some())
        })
        .collect();
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
}

/// What a worker printed: each secret a finding (markers left by an earlier scrub count again), and the log
/// scrubbed of everything found so far. Returns the log's name when it was scrubbed now.
fn scan_log(pack: &RulePack, log: &Path, outcome: &mut SecretsOutcome) -> Option<String> {
    let text = crate::util::read_regular(log, crate::util::MAX_WORKER_FILE).ok()?;
    let shown = log
        .file_name()
        .map_or_else(|| "log".to_string(), |n| n.to_string_lossy().into_owned());
    for hit in pack.scan_with(&shown, &text, false) {
        let mut found = finding(&hit, &shown, hit.line);
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
        Ok(true) => Some(shown),
        Ok(false) => None,
        Err(error) => {
            tracing::warn!("cannot scrub {}: {error}", log.display());
            None
        }
    }
}

/// Scans a stored log with the rule pack and scrubs whatever it finds, plus `known` values, in place. Returns the
/// raw values found (in memory only).
pub fn scrub_log(pack: &RulePack, log: &Path, known: &[RawSecret]) -> Vec<RawSecret> {
    let Ok(text) = crate::util::read_regular(log, crate::util::MAX_WORKER_FILE) else {
        return Vec::new();
    };
    let mut raw = RawSecret::of_hits(&pack.scan_with("log", &text, false), &text);
    raw.extend(known.iter().cloned());
    if let Err(error) = scrub_file(log, &raw) {
        tracing::warn!("cannot scrub {}: {error}", log.display());
    }
    raw
}

#[cfg(test)]
mod tests {
    use super::*;

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
