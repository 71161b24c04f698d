//! Typed ids: a run, a task, a commit and one attempt of a task. Each is checked once where it enters ccfan (a
//! tasks file, a CLI argument, an MCP call, a job file, a database row, git's own output), so everything past the
//! edge can rely on it being a safe ref component, folder name or object id — and cannot pass a task id where a
//! run id belongs.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An id that is not well formed; names what it was meant to be and why it is not.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} `{value}` is not valid: {why}")]
pub struct IdError {
    /// `run id`, `task id`, `commit id` or `attempt`.
    pub kind: &'static str,
    /// What was given (shortened to 80 characters).
    pub value: String,
    /// What a valid one looks like.
    pub why: &'static str,
}

impl IdError {
    fn new(kind: &'static str, value: &str, why: &'static str) -> IdError {
        let value = match value.char_indices().nth(80) {
            Some((cut, _)) => format!("{}…", &value[..cut]),
            None => value.to_string(),
        };
        IdError { kind, value, why }
    }
}

/// What a run or task id may be: 1–64 of `A-Z a-z 0-9 - _ .`, safe as one ref component and one folder name.
const NAME_RULE: &str =
    "use 1-64 of A-Z a-z 0-9 - _ . (not starting with . or -, not ending in . or .lock, no ..)";

/// Whether `name` is safe as one component of a git ref and a folder name.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with(['.', '-'])
        && !name.ends_with('.')
        && !name.ends_with(".lock")
        && !name.contains("..")
}

/// Declares a string id with its check, conversions and the traits every id shares.
macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $check:expr, $rule:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Checks `value` and wraps it.
            pub fn parse(value: impl Into<String>) -> Result<$name, IdError> {
                let value = value.into();
                let check: fn(&str) -> bool = $check;
                if check(&value) {
                    Ok($name(value))
                } else {
                    Err(IdError::new($kind, &value, $rule))
                }
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<$name, IdError> {
                $name::parse(value)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(value: &str) -> Result<$name, IdError> {
                $name::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<std::path::Path> for $name {
            fn as_ref(&self) -> &std::path::Path {
                std::path::Path::new(&self.0)
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl schemars::JsonSchema for $name {
            fn inline_schema() -> bool {
                true
            }
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({ "type": "string" })
            }
        }

        impl rusqlite::ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(rusqlite::types::ToSqlOutput::from(self.0.as_str()))
            }
        }

        impl rusqlite::types::FromSql for $name {
            fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<$name> {
                let text = value.as_str()?;
                $name::parse(text).map_err(|error| rusqlite::types::FromSqlError::Other(Box::new(error)))
            }
        }
    };
}

string_id!(
    /// A run's id, e.g. `20261121-195500-3fa2` (or one the user chose): a ref component and a folder name.
    RunId,
    "run id",
    is_valid_name,
    NAME_RULE
);

string_id!(
    /// A task's id within its run (`task-1` by default): a ref component and a folder name.
    TaskId,
    "task id",
    is_valid_name,
    NAME_RULE
);

string_id!(
    /// A full git object id of a commit, in lower-case hex (40 digits for SHA-1, 64 for SHA-256).
    CommitId,
    "commit id",
    |text| matches!(text.len(), 40 | 64) && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
    "expected a full commit id: 40 or 64 lower-case hex digits"
);

impl CommitId {
    /// The id of a libgit2 object (always well formed).
    pub fn of(oid: git2::Oid) -> CommitId {
        CommitId(oid.to_string())
    }

    /// The libgit2 form.
    pub fn oid(&self) -> git2::Oid {
        // Checked at construction: 40 or 64 hex digits always parse.
        git2::Oid::from_str(&self.0).unwrap_or(git2::Oid::ZERO_SHA1)
    }

    /// The first 12 digits, as people read commits.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

impl RunId {
    /// A new run id: UTC time then 4 random hex digits, e.g. `20261121-195500-3fa2`. Sorts by start time.
    pub fn generate() -> RunId {
        RunId(crate::util::new_run_id())
    }
}

impl TaskId {
    /// The id of the task at `index` (from 0) of a tasks file that names none: `t1`, `t2`, …
    pub fn in_file_at(index: usize) -> TaskId {
        TaskId(format!("t{}", index + 1))
    }

    /// The id of the task at `index` (from 0) of an MCP `delegate` call that names none: `task-1`, `task-2`, …
    pub fn delegated_at(index: usize) -> TaskId {
        TaskId(format!("task-{}", index + 1))
    }
}

/// One attempt of one task: what a salvage ref, an attempt folder and `salvage drop run/task/attempt` name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AttemptKey {
    /// The run.
    pub run: RunId,
    /// The task within it.
    pub task: TaskId,
    /// The attempt number, from 1.
    pub attempt: u32,
}

impl AttemptKey {
    /// The key of attempt `attempt` of `task` in `run`.
    pub fn new(run: &RunId, task: &TaskId, attempt: u32) -> AttemptKey {
        AttemptKey {
            run: run.clone(),
            task: task.clone(),
            attempt,
        }
    }
}

impl fmt::Display for AttemptKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.run, self.task, self.attempt)
    }
}

impl FromStr for AttemptKey {
    type Err = IdError;
    /// Reads `run/task/attempt`, e.g. `20261121-195500-3fa2/task-1/2`.
    fn from_str(value: &str) -> Result<AttemptKey, IdError> {
        let bad = || {
            IdError::new(
                "attempt",
                value,
                "expected RUN/TASK/N, e.g. 20261121-195500-3fa2/task-1/2",
            )
        };
        let mut parts = value.split('/');
        let (Some(run), Some(task), Some(number), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let attempt = number
            .parse::<u32>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(bad)?;
        Ok(AttemptKey {
            run: RunId::parse(run)?,
            task: TaskId::parse(task)?,
            attempt,
        })
    }
}

/// Ids from literals, for unit tests (a literal that is not a valid id fails the test).
#[cfg(test)]
pub(crate) mod fixtures {
    use super::{CommitId, RunId, TaskId};

    /// A run id.
    pub fn run(text: &str) -> RunId {
        RunId::parse(text).expect("a valid run id")
    }

    /// A task id.
    pub fn task(text: &str) -> TaskId {
        TaskId::parse(text).expect("a valid task id")
    }

    /// A commit id: `text` repeated to 40 hex digits (`"ab"` → `abab…`).
    pub fn commit(text: &str) -> CommitId {
        CommitId::parse(text.repeat(40 / text.len().max(1) + 1)[..40].to_string())
            .expect("hex digits")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_once_and_say_why() {
        assert_eq!(
            TaskId::parse("task-1").map(String::from),
            Ok("task-1".to_string())
        );
        for bad in [
            "",
            ".x",
            "-x",
            "x.",
            "a..b",
            "x.lock",
            "a/b",
            "a b",
            &"x".repeat(65),
        ] {
            let error = TaskId::parse(bad).expect_err(bad);
            assert_eq!(error.kind, "task id");
            assert!(error.to_string().contains("A-Z a-z 0-9"), "{error}");
        }
        let long = "é".repeat(200);
        assert!(RunId::parse(long).expect_err("long").value.ends_with('…'));
    }

    #[test]
    fn commit_ids_are_full_lower_case_hex() {
        let sha1 = "0123456789abcdef0123456789abcdef01234567";
        let id = CommitId::parse(sha1).expect("sha-1");
        assert_eq!(id.oid().to_string(), sha1);
        assert_eq!(id.short(), "0123456789ab");
        assert!(CommitId::parse("a".repeat(64)).is_ok());
        for bad in [
            "abc",
            &sha1.to_uppercase(),
            &"g".repeat(40),
            &"a".repeat(41),
        ] {
            assert!(CommitId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn serde_rejects_what_parse_rejects() {
        let run: RunId = serde_json::from_str("\"20261121-195500-3fa2\"").expect("valid");
        assert_eq!(
            serde_json::to_string(&run).expect("json"),
            "\"20261121-195500-3fa2\""
        );
        let error = serde_json::from_str::<TaskId>("\"../etc\"").expect_err("invalid");
        assert!(
            error.to_string().contains("task id `../etc` is not valid"),
            "{error}"
        );
    }

    #[test]
    fn attempt_keys_read_and_print_as_run_task_number() {
        let key: AttemptKey = "r1/task-2/3".parse().expect("key");
        assert_eq!(
            key,
            AttemptKey::new(&"r1".parse().expect("run"), &TaskId::delegated_at(1), 3)
        );
        assert_eq!(key.to_string(), "r1/task-2/3");
        for bad in [
            "r1/task-2",
            "r1/task-2/0",
            "r1/task-2/x",
            "r1/task-2/3/4",
            "../t/1",
        ] {
            assert!(bad.parse::<AttemptKey>().is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_read_from_the_database_are_checked() {
        let db = rusqlite::Connection::open_in_memory().expect("db");
        let good: TaskId = db
            .query_row("SELECT 'task-1'", [], |row| row.get(0))
            .expect("good");
        assert_eq!(good, "task-1");
        let bad = db.query_row("SELECT '../x'", [], |row| row.get::<_, TaskId>(0));
        assert!(bad.is_err());
    }
}
