//! The review stage's data: who reviews a task and how much the answer counts ([`ReviewSpec`]), and the structured
//! answer a reviewer gives ([`ReviewAnswer`]), parsed and validated here — pure, so that every way an answer can be
//! malformed is a unit test, and a malformed answer is never read as an approval.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::WorkerProfile;
use crate::report::Level;

/// Whether the reviewer's verdict can stop a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReviewMode {
    /// `request_changes` (or no valid answer) keeps the change from landing: it goes back to its author.
    Required,
    /// The reviewer's comments are shown as warnings; they never block.
    Advisory,
}

impl ReviewMode {
    /// `required` or `advisory`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewMode::Required => "required",
            ReviewMode::Advisory => "advisory",
        }
    }
}

/// Who reviews a task's change once the mechanical stages passed, resolved at plan time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewSpec {
    /// The reviewer's worker profile.
    pub profile: WorkerProfile,
    /// Whether its verdict blocks.
    pub mode: ReviewMode,
    /// Wall-clock limit for one review.
    pub timeout: Duration,
    /// Chosen by `cross = true`: another task's profile than the author's.
    #[serde(default)]
    pub cross: bool,
}

/// A reviewer's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReviewVerdict {
    /// The change may land.
    Approve,
    /// The change goes back to its author with the comments.
    RequestChanges,
}

/// One comment of a reviewer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewComment {
    /// The file, relative to the repository root (`None`: about the change as a whole).
    pub path: Option<String>,
    /// The 1-based line in the new version of the file.
    pub line: Option<usize>,
    /// How much it matters.
    pub severity: Level,
    /// What to change, and why.
    pub message: String,
}

/// A reviewer's validated answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewAnswer {
    /// Approve or request changes.
    pub verdict: ReviewVerdict,
    /// What the reviewer concluded, in a few sentences.
    pub summary: String,
    /// Comments, in the order given (at most [`MAX_COMMENTS`]).
    pub comments: Vec<ReviewComment>,
}

/// How one review ended, as stored with its usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReviewOutcome {
    /// It approved.
    Approve,
    /// It requested changes.
    RequestChanges,
    /// Its answer was malformed (never an approval).
    Invalid,
    /// The reviewer did not finish (not started, timed out, failed).
    Failed,
}

impl ReviewOutcome {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewOutcome::Approve => "approve",
            ReviewOutcome::RequestChanges => "request_changes",
            ReviewOutcome::Invalid => "invalid",
            ReviewOutcome::Failed => "failed",
        }
    }

    /// Parses a stored name.
    pub fn parse(name: &str) -> Option<ReviewOutcome> {
        [
            ReviewOutcome::Approve,
            ReviewOutcome::RequestChanges,
            ReviewOutcome::Invalid,
            ReviewOutcome::Failed,
        ]
        .into_iter()
        .find(|outcome| outcome.as_str() == name)
    }
}

/// A task's reviews, as `status` shows them: who reviews, how the latest ended, and what they cost.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReviewView {
    /// The reviewer's worker profile.
    pub reviewer: String,
    /// `required` or `advisory`.
    pub mode: ReviewMode,
    /// Chosen by `cross = true`.
    pub cross: bool,
    /// Reviews run so far (one per reviewed attempt, plus re-verifications).
    pub reviews: u32,
    /// How the latest one ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latest: Option<ReviewOutcome>,
    /// Tokens the reviews used (agent reviewers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<super::agent::Usage>,
    /// What the reviews cost, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
}

impl ReviewView {
    /// The reviews in one line: `required review by cl: request_changes (2 review(s), $0.0123)`.
    pub fn line(&self) -> String {
        let mut spent = vec![format!("{} review(s)", self.reviews)];
        if let Some(cost) = self.cost_usd {
            spent.push(format!("${cost:.4}"));
        }
        format!(
            "{} review by {}{}: {} ({})",
            self.mode.as_str(),
            self.reviewer,
            if self.cross { " (cross)" } else { "" },
            self.latest
                .map_or("not reviewed yet", |latest| latest.as_str()),
            spent.join(", ")
        )
    }
}

/// The most comments kept from one answer.
pub const MAX_COMMENTS: usize = 50;
/// The most characters kept of one comment or of the summary.
pub const MAX_TEXT: usize = 2000;

/// The answer's format, as every reviewer is told it.
pub const ANSWER_FORMAT: &str = r#"{"verdict": "approve" | "request_changes", "summary": "…", "comments": [{"path": "src/lib.rs", "line": 12, "severity": "error" | "warning" | "info", "message": "…"}]}"#;

/// The answer as written, before validation: every field optional, so that each missing or wrong one is named.
#[derive(Debug, Deserialize)]
struct Raw {
    verdict: Option<serde_json::Value>,
    summary: Option<serde_json::Value>,
    comments: Option<serde_json::Value>,
}

/// Reads a reviewer's answer from its final message (or report file): every JSON object in it that has a
/// `verdict` (alone, fenced, or in prose) is found; they must agree, and the last one is the answer. `tree`: the
/// folder it reviewed, stripped from absolute paths it gives. `Err` says what is wrong, for the finding that
/// replaces the approval.
pub fn parse_answer(text: &str, tree: &Path) -> Result<ReviewAnswer, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("the reviewer gave no answer".to_string());
    }
    let found = verdict_objects(text);
    let verdicts: Vec<String> = found
        .iter()
        .map(|object| {
            object
                .get("verdict")
                .map(ToString::to_string)
                .unwrap_or_default()
        })
        .collect();
    if verdicts.windows(2).any(|pair| pair[0] != pair[1]) {
        return Err(format!(
            "the answer holds {} JSON objects whose verdicts disagree ({}): give one",
            found.len(),
            verdicts.join(", ")
        ));
    }
    let raw = found.into_iter().last().ok_or_else(|| {
        format!(
            "the reviewer's answer holds no JSON object with a \"verdict\" (it began: {:?})",
            clip(text, 80)
        )
    })?;
    let raw: Raw = serde_json::from_value(serde_json::Value::Object(raw))
        .map_err(|error| error.to_string())?;
    let verdict = match raw.verdict.as_ref().and_then(serde_json::Value::as_str) {
        Some("approve") => ReviewVerdict::Approve,
        Some("request_changes") => ReviewVerdict::RequestChanges,
        Some(other) => {
            return Err(format!(
                "verdict {other:?} is neither \"approve\" nor \"request_changes\""
            ));
        }
        None => return Err("the answer has no string \"verdict\"".to_string()),
    };
    let summary = match raw.summary {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(summary)) => clip(summary.trim(), MAX_TEXT),
        Some(_) => return Err("\"summary\" is not a string".to_string()),
    };
    let comments = match raw.comments {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .take(MAX_COMMENTS)
            .enumerate()
            .map(|(index, item)| {
                comment(item, tree).map_err(|why| format!("comments[{index}]: {why}"))
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err("\"comments\" is not a list".to_string()),
    };
    if verdict == ReviewVerdict::RequestChanges && summary.is_empty() && comments.is_empty() {
        return Err(
            "\"request_changes\" with neither a summary nor a comment: nothing to change"
                .to_string(),
        );
    }
    Ok(ReviewAnswer {
        verdict,
        summary,
        comments,
    })
}

/// The most places a JSON object is tried from (a bound on the work a long, brace-heavy answer can cause).
const MAX_TRIES: usize = 512;

/// Every JSON object in `text` that has a `verdict` key, in order: each `{` is tried as the start of one; an
/// object without a verdict is looked into (an answer may be wrapped), one with a verdict is skipped past.
fn verdict_objects(text: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
    let mut found = Vec::new();
    let mut at = 0;
    let mut tries = 0;
    while let Some(offset) = text[at..].find('{') {
        let start = at + offset;
        tries += 1;
        if tries > MAX_TRIES {
            break;
        }
        let mut stream =
            serde_json::Deserializer::from_str(&text[start..]).into_iter::<serde_json::Value>();
        match stream.next() {
            Some(Ok(serde_json::Value::Object(object))) if object.contains_key("verdict") => {
                at = start + stream.byte_offset();
                found.push(object);
            }
            _ => at = start + 1,
        }
    }
    found
}

fn comment(item: &serde_json::Value, tree: &Path) -> Result<ReviewComment, String> {
    let Some(object) = item.as_object() else {
        return Err("not an object".to_string());
    };
    let message = match object.get("message").and_then(serde_json::Value::as_str) {
        Some(message) if !message.trim().is_empty() => clip(message.trim(), MAX_TEXT),
        _ => return Err("no \"message\"".to_string()),
    };
    let severity = match object.get("severity") {
        None | Some(serde_json::Value::Null) => Level::Warning,
        Some(value) => match value.as_str() {
            Some("error") => Level::Error,
            Some("warning") => Level::Warning,
            Some("info") => Level::Info,
            _ => {
                return Err(format!(
                    "severity {value} is not \"error\", \"warning\" or \"info\""
                ));
            }
        },
    };
    let path = match object.get("path") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(path)) => Some(relative(path, tree)?),
        Some(_) => return Err("\"path\" is not a string".to_string()),
    };
    let line = match object.get("line") {
        None | Some(serde_json::Value::Null) => None,
        Some(value) => match value.as_u64() {
            Some(line) if line > 0 => Some(usize::try_from(line).unwrap_or(usize::MAX)),
            _ => return Err(format!("line {value} is not a line number (1 or more)")),
        },
    };
    Ok(ReviewComment {
        path,
        line,
        severity,
        message,
    })
}

/// A path as the repository names it: absolute paths inside the reviewed tree lose its prefix; anything leaving
/// the repository is refused.
fn relative(path: &str, tree: &Path) -> Result<String, String> {
    let given = Path::new(path.trim());
    let inside = if given.is_absolute() {
        given
            .strip_prefix(tree)
            .map_err(|_| format!("path {path:?} is outside the reviewed tree"))?
    } else {
        given
    };
    let inside = inside.strip_prefix("./").unwrap_or(inside);
    let normal = inside
        .components()
        .all(|part| matches!(part, std::path::Component::Normal(_)));
    let text = inside.to_string_lossy().into_owned();
    if !normal || text.is_empty() {
        return Err(format!("path {path:?} is not a file of the repository"));
    }
    Ok(text)
}

/// `text` cut to `max` characters, without control characters (terminal escapes) other than line breaks and tabs.
fn clip(text: &str, max: usize) -> String {
    let clean: String = text
        .chars()
        .filter(|c| !c.is_control() || matches!(c, '\n' | '\t'))
        .collect();
    match clean.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &clean[..end]),
        None => clean,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ReviewAnswer, String> {
        parse_answer(text, Path::new("/tmp/preview"))
    }

    #[test]
    fn a_bare_object_or_a_fenced_one_after_prose_is_read() {
        let bare = parse(r#"{"verdict":"approve","summary":"fine"}"#).unwrap();
        assert_eq!(bare.verdict, ReviewVerdict::Approve);
        assert_eq!(bare.summary, "fine");
        let fenced = parse(
            "I read the diff.\n```json\n{\"verdict\": \"request_changes\", \"comments\": [\
             {\"path\": \"/tmp/preview/src/a.rs\", \"line\": 3, \"severity\": \"error\", \"message\": \"off by one\"}]}\n```\n",
        )
        .unwrap();
        assert_eq!(fenced.verdict, ReviewVerdict::RequestChanges);
        assert_eq!(
            fenced.comments,
            vec![ReviewComment {
                path: Some("src/a.rs".into()),
                line: Some(3),
                severity: Level::Error,
                message: "off by one".into()
            }]
        );
        let spanned = parse("Verdict below {\"verdict\":\"approve\"} thanks").unwrap();
        assert_eq!(spanned.verdict, ReviewVerdict::Approve);
        // A fixture object before the answer, braces in prose, and a wrapped answer are all read right.
        let noisy = parse(
            "The test uses ```json\n{\"name\": \"x\"}\n``` and a {brace}. Answer: {\"review\":              {\"verdict\": \"request_changes\", \"summary\": \"fix it\"}}",
        )
        .unwrap();
        assert_eq!(noisy.verdict, ReviewVerdict::RequestChanges);
        assert_eq!(noisy.summary, "fix it");
    }

    #[test]
    fn every_malformed_answer_is_refused_with_why() {
        for (text, why) in [
            ("", "no answer"),
            ("LGTM!", "no JSON object"),
            ("[1, 2]", "no JSON object"),
            (r#"{"summary":"ok"}"#, "no JSON object with a"),
            (
                "If fixed I would say ```{\"verdict\": \"approve\"}``` but: {\"verdict\": \"request_changes\", \"summary\": \"x\"}",
                "disagree",
            ),
            (r#"{"verdict":"lgtm"}"#, "neither"),
            (r#"{"verdict":true}"#, "no string \"verdict\""),
            (r#"{"verdict":"approve","comments":"none"}"#, "not a list"),
            (
                r#"{"verdict":"approve","comments":[{"path":"a"}]}"#,
                "comments[0]: no \"message\"",
            ),
            (
                r#"{"verdict":"approve","comments":[{"message":"m","severity":"fatal"}]}"#,
                "severity",
            ),
            (
                r#"{"verdict":"approve","comments":[{"message":"m","line":0}]}"#,
                "line 0",
            ),
            (
                r#"{"verdict":"approve","comments":[{"message":"m","line":"7"}]}"#,
                "line \"7\"",
            ),
            (
                r#"{"verdict":"approve","comments":[{"message":"m","path":"../etc/passwd"}]}"#,
                "not a file",
            ),
            (
                r#"{"verdict":"approve","comments":[{"message":"m","path":"/etc/passwd"}]}"#,
                "outside",
            ),
            (r#"{"verdict":"request_changes"}"#, "nothing to change"),
            (r#"{"verdict":"approve","summary":3}"#, "not a string"),
        ] {
            let error = parse(text).expect_err(text);
            assert!(error.contains(why), "{text}: {error}");
        }
    }

    #[test]
    fn a_view_reads_as_one_line() {
        let view = ReviewView {
            reviewer: "cl".into(),
            mode: ReviewMode::Required,
            cross: true,
            reviews: 2,
            latest: Some(ReviewOutcome::RequestChanges),
            usage: None,
            cost_usd: Some(0.0123),
        };
        assert_eq!(
            view.line(),
            "required review by cl (cross): request_changes (2 review(s), $0.0123)"
        );
    }

    #[test]
    fn answers_are_bounded() {
        let comments: Vec<String> = (0..80)
            .map(|i| {
                format!(
                    r#"{{"message":"{}","severity":"info","line":{}}}"#,
                    "x".repeat(3000),
                    i + 1
                )
            })
            .collect();
        let text = format!(
            r#"{{"verdict":"approve","comments":[{}]}}"#,
            comments.join(",")
        );
        let answer = parse(&text).unwrap();
        assert_eq!(answer.comments.len(), MAX_COMMENTS);
        assert!(answer.comments[0].message.chars().count() <= MAX_TEXT + 1);
        assert_eq!(answer.comments[0].severity, Level::Info);
    }
}
