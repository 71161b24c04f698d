//! Bad input, said once and well: every problem in a tasks file or policy becomes an [`InputError`] naming the
//! file, the line (when known), the key and what to write instead. Such errors exit with code 2 before any state is
//! written.

use std::fmt;
use std::path::{Path, PathBuf};

/// A problem with something the user wrote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct InputError {
    /// The file at fault (or a pseudo-name such as `<command line>`).
    pub file: PathBuf,
    /// 1-based line, when the parser gives one.
    pub line: Option<usize>,
    /// Dotted key path, e.g. `task[2].timeout`.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
    /// What to write instead.
    pub fix: Option<String>,
}

impl InputError {
    /// A new error about `file`.
    pub fn new(file: &Path, message: impl Into<String>) -> Self {
        InputError {
            file: file.to_path_buf(),
            line: None,
            key: None,
            message: message.into(),
            fix: None,
        }
    }

    /// Names the key at fault.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the line from a byte offset into `source`.
    pub fn at_offset(mut self, source: &str, offset: Option<usize>) -> Self {
        if let Some(offset) = offset {
            self.line = Some(line_of(source, offset));
        }
        self
    }

    /// Says how to fix it.
    pub fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }

    /// Turns a TOML deserialisation error into an input error with its line.
    pub fn from_toml(file: &Path, source: &str, error: &toml::de::Error) -> Self {
        let message = error.message().trim().to_string();
        let fix = if message.starts_with("unknown field") {
            Some("remove the key or correct its spelling to one of the expected keys".to_string())
        } else {
            None
        };
        InputError {
            file: file.to_path_buf(),
            line: error.span().map(|span| line_of(source, span.start)),
            key: error.span().and_then(|span| key_at(source, span.start)),
            message,
            fix,
        }
    }

    /// Turns a JSON deserialisation error into an input error with its line.
    pub fn from_json(file: &Path, error: &serde_json::Error) -> Self {
        InputError {
            file: file.to_path_buf(),
            line: (error.line() > 0).then_some(error.line()),
            key: None,
            message: error.to_string(),
            fix: None,
        }
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(": ")?;
        if let Some(key) = &self.key {
            write!(f, "`{key}`: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(fix) = &self.fix {
            write!(f, " (fix: {fix})")?;
        }
        Ok(())
    }
}

/// 1-based line number of a byte offset.
pub fn line_of(source: &str, offset: usize) -> usize {
    let end = offset.min(source.len());
    source.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The bare key written at the start of the line holding `offset`, if the line is `key = …`.
fn key_at(source: &str, offset: usize) -> Option<String> {
    let start = source[..offset.min(source.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line = source[start..].lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    (!key.is_empty() && !key.starts_with('[')).then(|| key.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_numbers_are_one_based() {
        let source = "a = 1\nb = 2\nc = 3\n";
        assert_eq!(line_of(source, 0), 1);
        assert_eq!(line_of(source, 6), 2);
        assert_eq!(line_of(source, 100), 4);
    }

    #[test]
    fn display_names_file_line_key_and_fix() {
        let error = InputError::new(Path::new("tasks.toml"), "must not be empty")
            .at_offset("x\ny", Some(2))
            .key("task[1].goal")
            .fix("write what the worker should do");
        assert_eq!(
            error.to_string(),
            "tasks.toml:2: `task[1].goal`: must not be empty (fix: write what the worker should do)"
        );
    }
}
