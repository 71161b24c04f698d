//! The tasks file as written (TOML, or JSON with the same shape): `[defaults]`, `[[task]]` and optional
//! `[workers.NAME]` tables, parsed with spans so that `plan` can name the line of any bad value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::input::InputError;
use crate::policy::WorkerSection;

/// One string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StringList {
    /// `"one"`.
    One(String),
    /// `["a", "b"]`.
    Many(Vec<String>),
}

impl StringList {
    /// The strings.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            StringList::One(one) => vec![one],
            StringList::Many(many) => many,
        }
    }
}

/// Fields of a `[[task]]` (and of `[defaults]`, which may not set `id` or `goal`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskFields {
    /// Task id.
    pub id: Option<Spanned<String>>,
    /// What to achieve.
    pub goal: Option<Spanned<String>>,
    /// Allowed globs.
    pub allowed: Option<Vec<Spanned<String>>>,
    /// Denied globs.
    pub denied: Option<Vec<Spanned<String>>>,
    /// Constraints.
    pub constraints: Option<StringList>,
    /// Acceptance criteria.
    pub acceptance: Option<StringList>,
    /// Worker profile name.
    pub worker: Option<Spanned<String>>,
    /// Attempt timeout.
    pub timeout: Option<Spanned<String>>,
    /// Ids of tasks that must land first.
    pub after: Option<Spanned<StringList>>,
    /// Best-of-N: run the task as this many candidates.
    pub candidates: Option<Spanned<u32>>,
    /// Best-of-N: one candidate per worker profile named.
    pub workers: Option<Spanned<Vec<String>>>,
    /// The review stage for this task: `false` (none), `true` (the policy's `[review]`), a worker profile name, or
    /// `{ worker = "NAME", mode = "required" | "advisory" }`.
    pub review: Option<Spanned<ReviewField>>,
}

/// A task's `review` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ReviewField {
    /// `review = false` turns the policy's review off for the task; `true` asks for it.
    Switch(bool),
    /// `review = "NAME"`: this worker profile reviews.
    Worker(String),
    /// `review = { worker = "NAME", mode = "advisory" }`.
    Table(ReviewTable),
}

/// `review = { … }` in a task.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewTable {
    /// The worker profile (`None`: the policy's).
    pub worker: Option<String>,
    /// `required` or `advisory` (`None`: the policy's, else required).
    pub mode: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTasksFile {
    defaults: Option<TaskFields>,
    #[serde(default)]
    task: Vec<Spanned<TaskFields>>,
    #[serde(default)]
    workers: BTreeMap<String, WorkerSection>,
}

/// A parsed tasks file, still as written.
#[derive(Debug)]
pub struct TasksFile {
    /// Its path (for messages and relative worker commands).
    pub path: PathBuf,
    /// The text spans refer to (for JSON input, a TOML rendering: lines are then not reported).
    pub source: String,
    /// Whether spans point into the user's own text.
    pub has_lines: bool,
    /// `[defaults]`.
    pub defaults: TaskFields,
    /// `[[task]]` entries with their spans.
    pub tasks: Vec<Spanned<TaskFields>>,
    /// `[workers.NAME]` profiles declared in the tasks file.
    pub workers: BTreeMap<String, WorkerSection>,
}

impl TasksFile {
    /// Offset to report for a span, or `None` when spans do not point into the user's text.
    pub fn offset(&self, span: std::ops::Range<usize>) -> Option<usize> {
        self.has_lines.then_some(span.start)
    }

    /// An input error located at `span` (when lines are meaningful).
    pub fn error_at(
        &self,
        span: Option<std::ops::Range<usize>>,
        message: impl Into<String>,
    ) -> InputError {
        InputError::new(&self.path, message)
            .at_offset(&self.source, span.and_then(|s| self.offset(s)))
    }
}

/// Reads and parses a tasks file (`.json` is read as JSON, anything else as TOML).
pub fn read(path: &Path) -> Result<TasksFile, InputError> {
    let text = crate::input::read_text(path, "tasks file").map_err(|error| match error.fix {
        None => error.fix("pass an existing file with --tasks"),
        Some(_) => error,
    })?;
    parse(path, &text)
}

/// Parses tasks-file text; `path` decides the format and appears in messages.
pub fn parse(path: &Path, text: &str) -> Result<TasksFile, InputError> {
    let is_json = path
        .extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("json"));
    let (source, has_lines) = if is_json {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|error| InputError::from_json(path, &error))?;
        let as_toml = toml::Value::try_from(value).map_err(|error| {
            InputError::new(path, format!("cannot use this JSON: {error}"))
                .fix("remove null values")
        })?;
        let rendered = toml::to_string(&as_toml)
            .map_err(|error| InputError::new(path, format!("cannot use this JSON: {error}")))?;
        (rendered, false)
    } else {
        (text.to_string(), true)
    };
    let raw: RawTasksFile = toml::from_str(&source).map_err(|error| {
        let mut input = InputError::from_toml(path, &source, &error);
        if !has_lines {
            input.line = None;
        }
        input
    })?;
    Ok(TasksFile {
        path: path.to_path_buf(),
        source,
        has_lines,
        defaults: raw.defaults.unwrap_or_default(),
        tasks: raw.task,
        workers: raw.workers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_and_json_parse_alike() {
        let toml_file = parse(
            Path::new("t.toml"),
            "[defaults]\nworker = \"w\"\n[[task]]\ngoal = \"a\"\n[[task]]\nid = \"x\"\ngoal = \"b\"\nconstraints = \"one\"\n",
        )
        .unwrap();
        let json_file = parse(
            Path::new("t.json"),
            r#"{"defaults": {"worker": "w"}, "task": [{"goal": "a"}, {"id": "x", "goal": "b", "constraints": "one"}]}"#,
        )
        .unwrap();
        for file in [&toml_file, &json_file] {
            assert_eq!(file.tasks.len(), 2);
            assert_eq!(
                file.tasks[1]
                    .get_ref()
                    .id
                    .as_ref()
                    .map(|s| s.get_ref().as_str()),
                Some("x")
            );
        }
        assert!(toml_file.has_lines && !json_file.has_lines);
    }

    #[test]
    fn unknown_keys_name_their_line() {
        let error = parse(
            Path::new("t.toml"),
            "[[task]]\ngoal = \"a\"\ngaol = \"b\"\n",
        )
        .unwrap_err();
        assert_eq!(error.line, Some(3));
        assert!(error.message.contains("gaol"), "{error}");
    }
}
