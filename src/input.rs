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

/// The environment variable that raises [`max_input_bytes`].
pub const MAX_INPUT_ENV: &str = "CCFAN_MAX_INPUT_BYTES";

/// Default cap on one input file a person hands ccfan (tasks file, policy, rule pack, gitleaks config).
pub const DEFAULT_MAX_INPUT: u64 = 8 << 20;

/// The cap on one input file: `CCFAN_MAX_INPUT_BYTES` when set to a number, else 8 MiB.
pub fn max_input_bytes() -> u64 {
    std::env::var(MAX_INPUT_ENV)
        .ok()
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(DEFAULT_MAX_INPUT)
}

/// Reads an input file (`what` names it in messages: "tasks file", "policy", …) as UTF-8 text: only a regular
/// file (a FIFO, device or folder is refused, never waited on) and at most [`max_input_bytes`] of it — so neither
/// `/dev/zero` nor a huge file can take the machine's memory.
pub fn read_text(path: &Path, what: &str) -> Result<String, InputError> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let cap = max_input_bytes();
    let cannot =
        |error: std::io::Error| InputError::new(path, format!("cannot read the {what}: {error}"));
    // Non-blocking, so opening a FIFO with no writer returns at once; the type check below refuses it.
    let file = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(cannot)?;
    let kind = file.metadata().map_err(cannot)?.file_type();
    if !kind.is_file() {
        let is = if kind.is_dir() {
            "a folder"
        } else if kind.is_fifo() {
            "a FIFO (named pipe)"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(InputError::new(path, format!("the {what} is {is}"))
            .fix("pass a regular file (ccfan does not read pipes or devices as input)"));
    }
    let mut bytes = Vec::new();
    file.take(cap.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > cap {
        return Err(too_big(path, what, cap));
    }
    String::from_utf8(bytes).map_err(|error| {
        InputError::new(
            path,
            format!(
                "the {what} is not UTF-8 text (invalid byte at offset {})",
                error.utf8_error().valid_up_to()
            ),
        )
        .fix("save it as UTF-8")
    })
}

/// The error for input text over the cap.
pub fn too_big(path: &Path, what: &str, cap: u64) -> InputError {
    InputError::new(
        path,
        format!("the {what} is larger than the input cap of {cap} bytes"),
    )
    .key(MAX_INPUT_ENV)
    .fix(format!(
        "make the file smaller, or raise the cap with {MAX_INPUT_ENV}=<bytes>"
    ))
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
    if key.is_empty() || key.starts_with('[') {
        return None;
    }
    Some(match table_at(&source[..start]) {
        Some(table) => format!("{table}.{key}"),
        None => key.to_string(),
    })
}

/// The table the end of `before` is in: `workers.w` under `[workers.w]`, `task[2]` under the second `[[task]]`.
fn table_at(before: &str) -> Option<String> {
    let header = before
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| line.starts_with('['))?;
    match header
        .strip_prefix("[[")
        .and_then(|rest| rest.split(']').next())
    {
        Some(array) => {
            let array = array.trim();
            let nth = before
                .lines()
                .filter(|line| {
                    line.trim()
                        .strip_prefix("[[")
                        .and_then(|rest| rest.split(']').next())
                        .is_some_and(|name| name.trim() == array)
                })
                .count();
            Some(format!("{array}[{nth}]"))
        }
        None => header
            .strip_prefix('[')
            .and_then(|rest| rest.split(']').next())
            .map(|name| name.trim().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_key_is_named_with_its_table() {
        let source = "top = 1\n[workers.w]\nkind = \"command\"\nbogus = 1\n[[task]]\na = 1\n[[task]]\ngaol = 2\n";
        let at = |needle: &str| key_at(source, source.find(needle).unwrap());
        assert_eq!(at("top").as_deref(), Some("top"));
        assert_eq!(at("bogus").as_deref(), Some("workers.w.bogus"));
        assert_eq!(at("gaol").as_deref(), Some("task[2].gaol"));
    }

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
