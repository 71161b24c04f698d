//! Stage 4b, scope check: every path an attempt touches — both sides of a rename, deletions, mode-only changes,
//! symlinks and where they point, gitlinks — must match the task's allowed globs and no denied glob (denied wins,
//! case-insensitively). `.git` in any form is always denied. [`check_scope`] is public for preflight use.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use super::diff::MODE_LINK;
use crate::paths::normalize;
use crate::report::{FileSummary, Finding, Stage};

/// Compiled scope globs.
#[derive(Debug, Clone)]
pub struct Scope {
    allowed: GlobSet,
    denied: GlobSet,
    allowed_globs: Vec<String>,
}

/// Why a path is out of scope.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ScopeViolation {
    /// The path.
    pub path: String,
    /// `denied`, `not-allowed`, `git-metadata`.
    pub rule: String,
    /// Human explanation.
    pub reason: String,
}

impl Scope {
    /// Compiles allowed and denied globs. Globs were validated when the policy and tasks were loaded, so an error
    /// here names the glob for a caller that builds a scope from other input.
    pub fn new(allowed: &[String], denied: &[String]) -> Result<Scope, String> {
        let build = |globs: &[String], case_insensitive: bool| -> Result<GlobSet, String> {
            let mut set = GlobSetBuilder::new();
            for glob in globs {
                if let Some(why) = crate::policy::leaves_repository(glob) {
                    return Err(format!("glob `{glob}` {why}"));
                }
                set.add(
                    GlobBuilder::new(glob)
                        .literal_separator(true)
                        .case_insensitive(case_insensitive)
                        .build()
                        .map_err(|error| format!("invalid glob `{glob}`: {}", error.kind()))?,
                );
            }
            set.build().map_err(|error| error.to_string())
        };
        Ok(Scope {
            allowed: build(allowed, false)?,
            denied: build(denied, true)?,
            allowed_globs: allowed.to_vec(),
        })
    }

    /// Why `path` is out of scope, if it is.
    pub fn violation(&self, path: &str) -> Option<ScopeViolation> {
        if path
            .split('/')
            .any(|part| part.eq_ignore_ascii_case(".git"))
        {
            return Some(ScopeViolation {
                path: path.to_string(),
                rule: "git-metadata".into(),
                reason: "git metadata may never be written".into(),
            });
        }
        if self.denied.is_match(path) {
            return Some(ScopeViolation {
                path: path.to_string(),
                rule: "denied".into(),
                reason: "matches a denied glob".into(),
            });
        }
        if !self.allowed.is_match(path) {
            let allowed = if self.allowed_globs.is_empty() {
                "nothing is allowed".to_string()
            } else {
                format!("allowed: {}", self.allowed_globs.join(", "))
            };
            return Some(ScopeViolation {
                path: path.to_string(),
                rule: "not-allowed".into(),
                reason: format!("outside the allowed paths ({allowed})"),
            });
        }
        None
    }
}

/// Checks each path against allowed and denied globs (preflight: nothing needs to exist).
pub fn check_scope(
    paths: &[String],
    allowed: &[String],
    denied: &[String],
) -> Result<Vec<ScopeViolation>, String> {
    let scope = Scope::new(allowed, denied)?;
    Ok(paths
        .iter()
        .filter_map(|path| scope.violation(path))
        .collect())
}

/// Where a symlink at `link` pointing to `target` lands, relative to the repository root; `None` if it leaves it.
pub fn symlink_destination(link: &str, target: &str) -> Option<String> {
    if target.starts_with('/') {
        return None;
    }
    let parent = link.rsplit_once('/').map_or("", |(dir, _)| dir);
    let joined = normalize(&std::path::Path::new(parent).join(target));
    let text = joined.to_string_lossy().into_owned();
    (!text.starts_with("..")).then_some(text)
}

/// The scope stage over a diff summary.
pub fn run(scope: &Scope, files: &[FileSummary]) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut flag = |path: &str, rule: &str, message: String| {
        findings.push(Finding::error(Stage::Scope, rule, message).at(path, None));
    };
    for file in files {
        let change = &file.change;
        let mut paths = vec![change.path.as_str()];
        if let Some(old) = &change.old_path {
            paths.push(old.as_str());
        }
        for path in paths {
            if let Some(violation) = scope.violation(path) {
                flag(
                    path,
                    &violation.rule,
                    format!("{path}: {}", violation.reason),
                );
            }
        }
        if change.new_mode == MODE_LINK {
            match file.symlink_target.as_deref() {
                Some(target) => match symlink_destination(&change.path, target) {
                    None => flag(
                        &change.path,
                        "symlink-escape",
                        format!("{}: symlink to `{target}` leaves the worktree", change.path),
                    ),
                    Some(destination) => {
                        if let Some(violation) = scope.violation(&destination) {
                            flag(
                                &change.path,
                                "symlink-out-of-scope",
                                format!(
                                    "{}: symlink to `{target}` points at {destination}, {}",
                                    change.path, violation.reason
                                ),
                            );
                        }
                    }
                },
                None => flag(
                    &change.path,
                    "symlink-unreadable",
                    format!("{}: symlink target could not be read", change.path),
                ),
            }
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(list: &[&str]) -> Vec<String> {
        list.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn denied_wins_and_git_is_always_denied() {
        let scope = Scope::new(
            &s(&["src/**", "README.md"]),
            &s(&["src/secret/**", "ccfan.toml"]),
        )
        .unwrap();
        assert_eq!(scope.violation("src/a/b.rs"), None);
        assert_eq!(scope.violation("README.md"), None);
        assert_eq!(scope.violation("src/secret/x").unwrap().rule, "denied");
        assert_eq!(
            scope.violation("SRC/SECRET/x").unwrap().rule,
            "denied",
            "denied globs ignore case"
        );
        assert_eq!(scope.violation("docs/x.md").unwrap().rule, "not-allowed");
        assert_eq!(
            scope.violation("src/.git/config").unwrap().rule,
            "git-metadata"
        );
        assert_eq!(
            scope.violation(".GIT/hooks/pre-commit").unwrap().rule,
            "git-metadata"
        );
        let strict = Scope::new(&s(&["**"]), &s(&["ccfan.toml"])).unwrap();
        assert_eq!(
            strict.violation("CCFAN.TOML").unwrap().rule,
            "denied",
            "denied globs match case-insensitively"
        );
    }

    #[test]
    fn star_does_not_cross_folders() {
        let violations =
            check_scope(&s(&["src/a.rs", "src/deep/b.rs"]), &s(&["src/*"]), &[]).unwrap();
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].path, "src/deep/b.rs");
    }

    #[test]
    fn symlink_destinations() {
        assert_eq!(
            symlink_destination("src/link", "lib.rs").as_deref(),
            Some("src/lib.rs")
        );
        assert_eq!(
            symlink_destination("src/link", "../README.md").as_deref(),
            Some("README.md")
        );
        assert_eq!(symlink_destination("src/link", "../../etc/passwd"), None);
        assert_eq!(symlink_destination("link", "/etc/passwd"), None);
    }
}
