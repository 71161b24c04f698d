//! Stage 4a, diff summary: what changed against the recorded base (never a moving branch) — per file kind, modes,
//! symlink targets, line counts — and a risk score with its reasons, so a reviewer sees at once what deserves a
//! careful look. It informs; it blocks nothing.

use crate::git::{self, ChangeKind, FileChange, GitError, RepoPaths};
use crate::report::{DiffSummary, FileSummary, Finding, Stage};

/// Git's file modes.
pub const MODE_EXEC: u32 = 0o100_755;
/// A symlink.
pub const MODE_LINK: u32 = 0o120_000;
/// A submodule (gitlink).
pub const MODE_GITLINK: u32 = 0o160_000;

const CI: &[&str] = &[
    ".github/",
    ".gitlab-ci.yml",
    ".circleci/",
    ".buildkite/",
    "Jenkinsfile",
    "azure-pipelines.yml",
    ".travis.yml",
    "bitbucket-pipelines.yml",
];
const BUILD: &[&str] = &[
    "build.rs",
    "Makefile",
    "CMakeLists.txt",
    "Dockerfile",
    "setup.py",
    "build.gradle",
    "build.gradle.kts",
    "meson.build",
    "justfile",
    "Rakefile",
];
const LOCKS: &[&str] = &[
    "Cargo.lock",
    "package-lock.json",
    "yarn.lock",
    "pnpm-lock.yaml",
    "poetry.lock",
    "uv.lock",
    "go.sum",
    "Gemfile.lock",
    "composer.lock",
    "Pipfile.lock",
];
const MANIFESTS: &[&str] = &[
    "Cargo.toml",
    "package.json",
    "pyproject.toml",
    "go.mod",
    "Gemfile",
    "pom.xml",
    "composer.json",
    "Pipfile",
    "setup.cfg",
];

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Why one changed file adds risk (pure).
pub fn file_risk(change: &FileChange) -> Vec<(u32, String)> {
    let mut risk = Vec::new();
    let name = file_name(&change.path);
    if CI
        .iter()
        .any(|ci| change.path.starts_with(ci) || change.path == *ci)
    {
        risk.push((30, "touches CI configuration".to_string()));
    }
    if BUILD.contains(&name) {
        risk.push((15, "touches a build script".to_string()));
    }
    if LOCKS.contains(&name) {
        risk.push((10, "touches a lockfile".to_string()));
    }
    if MANIFESTS.contains(&name) || (name.starts_with("requirements") && name.ends_with(".txt")) {
        risk.push((15, "touches a dependency manifest".to_string()));
    }
    if change.removed >= 200 || (change.kind == ChangeKind::Deleted && change.removed >= 50) {
        risk.push((20, format!("deletes {} lines", change.removed)));
    }
    if change.new_mode == MODE_EXEC && change.old_mode != MODE_EXEC {
        risk.push((15, "new executable".to_string()));
    }
    if change.binary {
        risk.push((10, "binary content".to_string()));
    }
    if change.new_mode == MODE_LINK {
        risk.push((10, "symlink".to_string()));
    }
    if change.new_mode == MODE_GITLINK || change.old_mode == MODE_GITLINK {
        risk.push((20, "submodule (gitlink) change".to_string()));
    }
    risk
}

/// Conflict markers among added lines (a conflict handed back for rework and left unresolved): blocking.
pub fn conflict_markers(files: &[git::AddedLines]) -> Vec<Finding> {
    let mut findings = Vec::new();
    for file in files.iter().filter(|file| !file.binary) {
        for (index, line) in file.text.split(|byte| *byte == b'\n').enumerate() {
            if line.starts_with(b"<<<<<<< ") || line.starts_with(b">>>>>>> ") {
                let number = file.line_numbers.get(index).copied();
                findings.push(
                    Finding::error(
                        Stage::Diff,
                        "conflict-marker",
                        "an unresolved merge conflict marker: resolve the conflict and remove the markers",
                    )
                    .at(&file.path, number),
                );
            }
        }
    }
    findings
}

/// Summarises the change from `base` to `commit` (`None`: an empty attempt).
pub fn summarize(
    repo: &RepoPaths,
    base: &str,
    commit: Option<&str>,
) -> Result<(DiffSummary, Vec<Finding>), GitError> {
    let Some(commit) = commit else {
        let finding = Finding::warning(Stage::Diff, "empty-diff", "the attempt changed nothing");
        return Ok((DiffSummary::default(), vec![finding]));
    };
    let changes = git::diff_files(repo, base, commit)?;
    let mut summary = DiffSummary {
        files_changed: changes.len(),
        ..DiffSummary::default()
    };
    let mut findings = Vec::new();
    let mut score = 0u32;
    for change in changes {
        summary.lines_added += change.added;
        summary.lines_removed += change.removed;
        let symlink_target = if change.new_mode == MODE_LINK {
            git::blob_at(repo, commit, &change.path)?
                .map(|target| String::from_utf8_lossy(&target).into_owned())
        } else {
            None
        };
        let risk = file_risk(&change);
        for (points, reason) in &risk {
            score += points;
            findings
                .push(Finding::warning(Stage::Diff, "risk", reason.clone()).at(&change.path, None));
        }
        summary.files.push(FileSummary {
            risk: risk.into_iter().map(|(_, reason)| reason).collect(),
            symlink_target,
            change,
        });
    }
    if summary.lines_removed >= 500 {
        score += 20;
        summary
            .risk_reasons
            .push(format!("deletes {} lines in all", summary.lines_removed));
    }
    let mut reasons: Vec<String> = summary
        .files
        .iter()
        .flat_map(|f| f.risk.iter().cloned())
        .collect();
    reasons.sort();
    reasons.dedup();
    summary.risk_reasons.extend(reasons);
    summary.risk_score = score.min(100);
    Ok((summary, findings))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(path: &str) -> FileChange {
        FileChange {
            path: path.into(),
            old_path: None,
            kind: ChangeKind::Modified,
            old_mode: 0o100_644,
            new_mode: 0o100_644,
            binary: false,
            added: 1,
            removed: 0,
        }
    }

    #[test]
    fn risk_reasons() {
        assert!(file_risk(&change("src/lib.rs")).is_empty());
        assert_eq!(
            file_risk(&change(".github/workflows/ci.yml"))[0].1,
            "touches CI configuration"
        );
        assert_eq!(
            file_risk(&change("sub/Cargo.lock"))[0].1,
            "touches a lockfile"
        );
        assert_eq!(
            file_risk(&change("requirements-dev.txt"))[0].1,
            "touches a dependency manifest"
        );
        let exec = FileChange {
            new_mode: MODE_EXEC,
            ..change("run.sh")
        };
        assert_eq!(file_risk(&exec)[0].1, "new executable");
        let big = FileChange {
            removed: 300,
            ..change("src/a.rs")
        };
        assert_eq!(file_risk(&big)[0].1, "deletes 300 lines");
    }

    #[test]
    fn conflict_markers_are_blocking_with_their_line() {
        let files = [git::AddedLines {
            path: "src/lib.txt".into(),
            binary: false,
            text: b"<<<<<<< ours\nA\n=======\nB\n>>>>>>> theirs\nheading\n".to_vec(),
            line_numbers: vec![2, 3, 4, 5, 6, 7],
            commit: None,
        }];
        let found = conflict_markers(&files);
        let lines: Vec<Option<usize>> = found.iter().map(|f| f.line).collect();
        assert_eq!(lines, vec![Some(2), Some(6)]);
        assert!(
            found
                .iter()
                .all(|f| f.is_blocking() && f.rule == "conflict-marker")
        );
        let clean = [git::AddedLines {
            path: "README.md".into(),
            binary: false,
            text: b"Title\n=======\n".to_vec(),
            line_numbers: vec![1, 2],
            commit: None,
        }];
        assert!(conflict_markers(&clean).is_empty());
    }
}
