//! Secret scanning: rule packs (ccfan's and gitleaks' formats), the keyword-gated engine, redaction, and scanning
//! of files in parallel (rayon), skipping binaries and streaming very large files.

pub mod lines;
pub mod redact;
pub mod rules;
pub mod sample;
pub mod scan;

use std::io::Read;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

pub use rules::{RulePack, Severity};
pub use scan::SecretHit;

/// Files larger than this are scanned in chunks instead of being read whole.
const STREAM_ABOVE: u64 = 32 << 20;
/// Chunk size for streamed files.
const CHUNK: usize = 8 << 20;

/// A secret found in a file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct FileHit {
    /// The file (as given, or relative to the scanned folder).
    pub path: String,
    /// The commit that added it (range scans).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The hit.
    #[serde(flatten)]
    pub hit: SecretHit,
}

/// What a file scan did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct FileScanReport {
    /// Secrets found, by path then line.
    pub hits: Vec<FileHit>,
    /// Files scanned.
    pub files_scanned: usize,
    /// Bytes scanned.
    pub bytes_scanned: u64,
    /// Files skipped as binary.
    pub skipped_binary: Vec<String>,
    /// Files that could not be read, with why.
    pub unreadable: Vec<(String, String)>,
}

/// Whether the start of a file looks binary (a NUL byte in the first 8 KiB, as git decides).
pub fn looks_binary(head: &[u8]) -> bool {
    memchr::memchr(0, &head[..head.len().min(8000)]).is_some()
}

impl RulePack {
    /// Redacts every path of a change list in place (both sides of renames): a file's name can hold a secret, and
    /// every path ccfan prints or stores passes through the same redaction as message text.
    pub fn redact_changes(&self, files: &mut [crate::git::FileChange]) {
        for file in files {
            file.path = self.redact_text(&file.path);
            if let Some(old) = &mut file.old_path {
                *old = self.redact_text(old);
            }
        }
    }
}

/// Lists the files under `roots` (files as given; folders walked, honouring .gitignore, skipping .git).
pub fn collect_files(roots: &[PathBuf]) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    for root in roots {
        if root.is_file() {
            files.push((root.clone(), root.to_string_lossy().into_owned()));
            continue;
        }
        let walker = ignore::WalkBuilder::new(root)
            .hidden(false)
            .git_global(false)
            .build();
        for entry in walker.flatten() {
            if entry.file_type().is_some_and(|kind| kind.is_file())
                && !entry.path().components().any(|c| c.as_os_str() == ".git")
            {
                let shown = entry
                    .path()
                    .strip_prefix(root)
                    .unwrap_or(entry.path())
                    .to_string_lossy()
                    .into_owned();
                files.push((entry.path().to_path_buf(), shown));
            }
        }
    }
    files
}

enum Scanned {
    Hits(Vec<FileHit>, u64),
    Binary,
    Unreadable(String),
}

fn scan_one(pack: &RulePack, path: &Path, shown: &str) -> Scanned {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) => return Scanned::Unreadable(error.to_string()),
    };
    let size = file.metadata().map(|meta| meta.len()).unwrap_or(0);
    let with_path = |hits: Vec<SecretHit>, line_offset: usize| {
        hits.into_iter()
            .map(|mut hit| {
                hit.line += line_offset;
                FileHit {
                    path: shown.to_string(),
                    commit: None,
                    hit,
                }
            })
            .collect::<Vec<_>>()
    };
    if size <= STREAM_ABOVE {
        let mut content = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        if let Err(error) = file.read_to_end(&mut content) {
            return Scanned::Unreadable(error.to_string());
        }
        if looks_binary(&content) {
            return Scanned::Binary;
        }
        return Scanned::Hits(
            with_path(pack.scan(shown, &content), 0),
            content.len() as u64,
        );
    }
    // Streamed: chunks cut at the last newline, the tail carried into the next chunk.
    let mut hits = Vec::new();
    let (mut carry, mut lines_before, mut total) = (Vec::new(), 0usize, 0u64);
    let mut buffer = vec![0u8; CHUNK];
    let mut first = true;
    loop {
        let read = match file.read(&mut buffer) {
            Ok(read) => read,
            Err(error) => return Scanned::Unreadable(error.to_string()),
        };
        if first && looks_binary(&buffer[..read]) {
            return Scanned::Binary;
        }
        first = false;
        carry.extend_from_slice(&buffer[..read]);
        let cut = if read == 0 {
            carry.len()
        } else {
            memchr::memrchr(b'\n', &carry).map_or(carry.len(), |n| n + 1)
        };
        let chunk: Vec<u8> = carry.drain(..cut).collect();
        total += chunk.len() as u64;
        hits.extend(with_path(pack.scan(shown, &chunk), lines_before));
        lines_before += memchr::memchr_iter(b'\n', &chunk).count();
        if read == 0 {
            break;
        }
    }
    Scanned::Hits(hits, total)
}

/// The secrets in a file's name (line 0: the name, not the content). A name lands and is shown like a line.
fn name_hits(pack: &RulePack, shown: &str, commit: Option<&str>) -> Vec<FileHit> {
    pack.scan_with(shown, shown.as_bytes(), false)
        .into_iter()
        // Path-only rules flag the file through its content scan already.
        .filter(|hit| !hit.span.is_empty())
        .map(|hit| FileHit {
            path: shown.to_string(),
            commit: commit.map(str::to_string),
            hit: SecretHit { line: 0, ..hit },
        })
        .collect()
}

impl FileScanReport {
    /// Sorts the hits and redacts every path the report names (a file name can hold a secret too).
    fn finish(&mut self, pack: &RulePack) {
        self.hits.sort_by(|a, b| {
            (&a.path, a.hit.line, a.hit.column).cmp(&(&b.path, b.hit.line, b.hit.column))
        });
        let clean = |text: &mut String| *text = pack.redact_text(text);
        for hit in &mut self.hits {
            clean(&mut hit.path);
        }
        self.skipped_binary.iter_mut().for_each(clean);
        for (path, why) in &mut self.unreadable {
            clean(path);
            clean(why);
        }
    }
}

/// Scans files in parallel: their names and their contents.
pub fn scan_files(pack: &RulePack, files: &[(PathBuf, String)]) -> FileScanReport {
    let results: Vec<(String, Vec<FileHit>, Scanned)> = files
        .par_iter()
        .map(|(path, shown)| {
            let named = name_hits(pack, shown, None);
            (shown.clone(), named, scan_one(pack, path, shown))
        })
        .collect();
    let mut report = FileScanReport::default();
    for (shown, named, result) in results {
        report.hits.extend(named);
        match result {
            Scanned::Hits(hits, bytes) => {
                report.files_scanned += 1;
                report.bytes_scanned += bytes;
                report.hits.extend(hits);
            }
            Scanned::Binary => report.skipped_binary.push(shown),
            Scanned::Unreadable(why) => report.unreadable.push((shown, why)),
        }
    }
    report.finish(pack);
    report
}

/// Scans the lines each commit of `range` added (so a secret added and removed later is still found).
pub fn scan_range(
    repo: &crate::git::RepoPaths,
    pack: &RulePack,
    range: &str,
) -> Result<FileScanReport, crate::git::GitError> {
    let mut report = FileScanReport::default();
    for (commit, parent) in crate::git::range_commits(repo, range)? {
        let files = crate::git::added_lines(repo, parent.as_deref(), &commit)?;
        for file in files {
            report
                .hits
                .extend(name_hits(pack, &file.path, Some(&commit)));
            if file.binary {
                report.skipped_binary.push(format!(
                    "{}:{}",
                    &commit[..12.min(commit.len())],
                    file.path
                ));
                continue;
            }
            report.files_scanned += 1;
            report.bytes_scanned += file.text.len() as u64;
            for hit in pack.scan(&file.path, &file.text) {
                let line = file
                    .line_numbers
                    .get(hit.line.saturating_sub(1))
                    .copied()
                    .unwrap_or(0);
                report.hits.push(FileHit {
                    path: file.path.clone(),
                    commit: Some(commit.clone()),
                    hit: SecretHit { line, ..hit },
                });
            }
        }
    }
    report.finish(pack);
    Ok(report)
}
