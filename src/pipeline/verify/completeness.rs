//! Stage 4e, completeness: a worker's final message must hold Summary, Tests and Files Changed sections, and the
//! files it claims to have changed must be the files it really changed — never trust what a worker says about its
//! own work. Pure: text in, findings out.

use std::collections::BTreeSet;

use crate::report::{Finding, Stage};

const SECTIONS: [&str; 3] = ["summary", "tests", "files changed"];

/// The section a line opens, if it is a heading (`## Tests`, `**Summary**`, `Files Changed:`).
fn heading(line: &str) -> Option<&'static str> {
    let bare = line
        .trim()
        .trim_start_matches('#')
        .trim()
        .trim_matches('*')
        .trim_end_matches(':')
        .trim()
        .to_ascii_lowercase();
    match bare.as_str() {
        "summary" => Some("summary"),
        "tests" | "test" | "testing" => Some("tests"),
        "files changed" | "changed files" | "files" => Some("files changed"),
        _ => None,
    }
}

/// The paths listed under Files Changed.
fn claimed_paths(lines: &[&str]) -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    for line in lines {
        let item = line.trim().trim_start_matches(['-', '*', '+']).trim();
        let item = item
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .trim_start_matches('.')
            .trim();
        let Some(token) = item.split_whitespace().next() else {
            continue;
        };
        let token = token
            .trim_matches('`')
            .trim_end_matches([',', ':', ';'])
            .trim_matches('`');
        if token.is_empty()
            || token.eq_ignore_ascii_case("none")
            || token.eq_ignore_ascii_case("(none)")
        {
            continue;
        }
        paths.insert(token.trim_start_matches("./").to_string());
    }
    paths
}

/// Checks `message` (the worker's final report; `None`: it gave none) against the paths really changed.
pub fn check(message: Option<&str>, changed: &[String]) -> Vec<Finding> {
    let Some(message) = message.filter(|m| !m.trim().is_empty()) else {
        return vec![Finding::error(
            Stage::Completeness,
            "no-final-report",
            "the worker gave no final report (expected Summary, Tests and Files Changed sections)",
        )];
    };
    let lines: Vec<&str> = message.lines().collect();
    let mut sections: Vec<(&'static str, usize)> = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        if let Some(name) = heading(line) {
            sections.push((name, index));
        }
    }
    let mut findings = Vec::new();
    for wanted in SECTIONS {
        if !sections.iter().any(|(name, _)| *name == wanted) {
            findings.push(Finding::error(
                Stage::Completeness,
                "missing-section",
                format!("the final report has no `{wanted}` section"),
            ));
        }
    }
    if let Some(position) = sections
        .iter()
        .position(|(name, _)| *name == "files changed")
    {
        let start = sections[position].1 + 1;
        let end = sections
            .get(position + 1)
            .map_or(lines.len(), |(_, at)| *at);
        let claimed = claimed_paths(&lines[start..end]);
        let actual: BTreeSet<String> = changed.iter().cloned().collect();
        for path in claimed.difference(&actual) {
            findings.push(
                Finding::error(
                    Stage::Completeness,
                    "claimed-not-changed",
                    format!("the report lists {path}, which the attempt did not change"),
                )
                .at(path, None),
            );
        }
        for path in actual.difference(&claimed) {
            findings.push(
                Finding::error(
                    Stage::Completeness,
                    "changed-not-claimed",
                    format!("the attempt changed {path}, which the report does not list"),
                )
                .at(path, None),
            );
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(findings: &[Finding]) -> Vec<&str> {
        findings.iter().map(|f| f.rule.as_str()).collect()
    }

    #[test]
    fn a_complete_honest_report_passes() {
        let report = "## Summary\nAdded farewell.\n\n## Tests\nsh tests/run.sh: ok\n\n## Files Changed\n- `src/greet.sh` (modified)\n- tests/run.sh\n";
        assert!(
            check(
                Some(report),
                &["src/greet.sh".into(), "tests/run.sh".into()]
            )
            .is_empty()
        );
    }

    #[test]
    fn missing_sections_and_false_claims_are_findings() {
        assert_eq!(rules(&check(None, &[])), ["no-final-report"]);
        assert_eq!(
            rules(&check(Some("Summary:\ndid it\n"), &[])),
            ["missing-section", "missing-section"]
        );
        let report = "**Summary**\nx\n**Tests**\nnone run\n**Files Changed**\n1. src/a.rs\n2. src/ghost.rs\n";
        let findings = check(Some(report), &["src/a.rs".into(), "src/b.rs".into()]);
        assert_eq!(
            rules(&findings),
            ["claimed-not-changed", "changed-not-claimed"]
        );
        assert_eq!(findings[0].path.as_deref(), Some("src/ghost.rs"));
    }
}
