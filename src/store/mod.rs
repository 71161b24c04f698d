//! Durable state: one SQLite database (WAL) per repository in `<git-common-dir>/ccfan/state.db`. Every task
//! transition is written here before it takes effect, so a ccfan killed at any moment can be restarted and tell
//! the truth; WAL lets `ccfan status` read while a run writes from another process.

mod agents;
mod control;
mod plans;
mod requests;
mod reviews;
mod runs;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;

use crate::model::CommitId;

pub use plans::plan_sha256;
pub use requests::{ActiveTask, Registration, request_fingerprint, task_fingerprint};
pub use reviews::ReviewRow;
pub use runs::{AttemptRow, NewAttempt, NewRun, NewTask, RecoveredAttempt, RunRow, TaskRow};

/// Where a task's work stands: the base its latest chain of attempts started from, that chain's newest commit
/// (`None`: it changed nothing) and its latest attempt. A task re-created on a newer tip starts a new chain.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskHead<'a> {
    /// The chain's base.
    pub base: CommitId,
    /// The chain's newest commit.
    pub commit: Option<CommitId>,
    /// The latest recorded attempt.
    pub latest: &'a AttemptRow,
}

/// The head of a task from its attempts (oldest first); `None` before any attempt was recorded.
pub fn task_head<'a>(attempts: &'a [AttemptRow], run_base: &CommitId) -> Option<TaskHead<'a>> {
    let latest = attempts.iter().rev().find(|a| a.state == "recorded")?;
    let base = latest.base.clone().unwrap_or_else(|| run_base.clone());
    let same_base = |a: &&AttemptRow| a.base.as_ref().unwrap_or(run_base) == &base;
    let commit = attempts
        .iter()
        .rev()
        .filter(|a| a.n <= latest.n)
        .take_while(same_base)
        .find_map(|a| a.commit.clone());
    Some(TaskHead {
        base,
        commit,
        latest,
    })
}

/// Errors from the state database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or created.
    #[error("cannot open ccfan's state database {}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// SQLite's reason.
        #[source]
        source: rusqlite::Error,
    },
    /// The state folder could not be created.
    #[error("cannot create ccfan's state folder {}", path.display())]
    Folder {
        /// The folder.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The database was written by a newer ccfan.
    #[error(
        "the state database has schema version {found}, newer than this ccfan understands ({known}); upgrade ccfan"
    )]
    TooNew {
        /// Version on disk.
        found: i64,
        /// Version this build writes.
        known: i64,
    },
    /// A query failed.
    #[error("state database query failed while {context}")]
    Query {
        /// What ccfan was doing.
        context: String,
        /// SQLite's reason.
        #[source]
        source: rusqlite::Error,
    },
    /// A stored value could not be read back.
    #[error("the state database holds a value ccfan cannot read: {0}")]
    Corrupt(String),
    /// No run has this id.
    #[error("no run `{0}` in this repository (see `ccfan status` for the list)")]
    NoSuchRun(String),
    /// Another live ccfan process carries the run.
    #[error(
        "run `{run}` is being carried by another ccfan process (pid {pid}); wait for it, or `ccfan cancel {run}`"
    )]
    Busy {
        /// Run id.
        run: String,
        /// That process.
        pid: i64,
    },
    /// No task has this id in the run.
    #[error("run `{run}` has no task `{task}`")]
    NoSuchTask {
        /// Run id.
        run: String,
        /// Task id.
        task: String,
    },
}

pub(crate) fn query(context: &str) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
    move |source| StoreError::Query {
        context: context.to_string(),
        source,
    }
}

const SCHEMA_VERSION: i64 = 9;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id            TEXT PRIMARY KEY,
    created_at    INTEGER NOT NULL,
    finished_at   INTEGER,
    state         TEXT NOT NULL,
    base_sha      TEXT NOT NULL,
    base_rev      TEXT NOT NULL,
    target_branch TEXT,
    tasks_file    TEXT NOT NULL,
    jobs          INTEGER NOT NULL,
    owner_pid     INTEGER NOT NULL,
    owner_start   TEXT NOT NULL,
    reason        TEXT,
    no_merge      INTEGER NOT NULL DEFAULT 0,
    plan_mode     INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS tasks (
    run_id      TEXT NOT NULL REFERENCES runs(id),
    id          TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    spec        TEXT NOT NULL,
    state       TEXT NOT NULL,
    reason      TEXT,
    branch      TEXT NOT NULL,
    worktree    TEXT NOT NULL,
    git_link    TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    removed     INTEGER NOT NULL DEFAULT 0,
    updated_at  INTEGER NOT NULL,
    budget_from INTEGER NOT NULL DEFAULT 1,
    landing     TEXT,
    landed_on   TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    forced      TEXT,
    agent_session TEXT,
    landed_with TEXT,
    approval    TEXT,
    PRIMARY KEY (run_id, id)
);
CREATE TABLE IF NOT EXISTS attempts (
    run_id      TEXT NOT NULL,
    task_id     TEXT NOT NULL,
    n           INTEGER NOT NULL,
    state       TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    exit        TEXT,
    commit_sha  TEXT,
    salvage_ref TEXT,
    dir         TEXT NOT NULL,
    log_path    TEXT NOT NULL,
    token       TEXT NOT NULL,
    pid         INTEGER,
    verdict     TEXT,
    base        TEXT,
    agent       TEXT,
    PRIMARY KEY (run_id, task_id, n)
);
CREATE TABLE IF NOT EXISTS requests (
    key         TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    run_id      TEXT NOT NULL,
    tasks       TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS transitions (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id  TEXT NOT NULL,
    task_id TEXT,
    at      INTEGER NOT NULL,
    state   TEXT NOT NULL,
    reason  TEXT
);
CREATE INDEX IF NOT EXISTS transitions_by_run ON transitions (run_id, seq);
CREATE TABLE IF NOT EXISTS reviews (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id   TEXT NOT NULL,
    task_id  TEXT NOT NULL,
    attempt  INTEGER NOT NULL,
    at       INTEGER NOT NULL,
    reviewer TEXT NOT NULL,
    outcome  TEXT NOT NULL,
    agent    TEXT
);
CREATE INDEX IF NOT EXISTS reviews_by_task ON reviews (run_id, task_id, seq);
";

/// Version 3: per-attempt bases (a task re-created on a moved target), rework budgets that `retry` renews, the
/// commit a task lands as, cancel requests from another process, and `--no-merge` runs.
const MIGRATE_TO_3: &str = "
ALTER TABLE attempts ADD COLUMN base TEXT;
ALTER TABLE tasks ADD COLUMN budget_from INTEGER NOT NULL DEFAULT 1;
ALTER TABLE tasks ADD COLUMN landing TEXT;
ALTER TABLE tasks ADD COLUMN landed_on TEXT;
ALTER TABLE tasks ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN forced TEXT;
ALTER TABLE runs ADD COLUMN no_merge INTEGER NOT NULL DEFAULT 0;
";

/// Version 4: agent workers — the session a rework resumes, and each attempt's agent summary (progress while it
/// runs, usage once it ended).
const MIGRATE_TO_4: &str = "
ALTER TABLE tasks ADD COLUMN agent_session TEXT;
ALTER TABLE attempts ADD COLUMN agent TEXT;
";

// Version 5 adds the `requests` table (MCP delegations); `SCHEMA` creates it.

/// Version 6: a task whose change was already on its target when it landed (it lands no commit) records with
/// which task's landing it came (empty: it was there before the run).
const MIGRATE_TO_6: &str = "
ALTER TABLE tasks ADD COLUMN landed_with TEXT;
";

/// Version 8: plan mode — runs made with `--plan`, and who approved which task's plan, when.
const MIGRATE_TO_8: &str = "
ALTER TABLE runs ADD COLUMN plan_mode INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN approval TEXT;
";

// Version 9 adds the `reviews` table (each review of an attempt, with its usage); `SCHEMA` creates it.

/// Why a migration stopped.
enum Migration {
    /// The database is newer than this ccfan.
    TooNew(i64),
    /// SQLite failed.
    Sql(rusqlite::Error),
}

/// Brings a database at `version` to [`SCHEMA_VERSION`] (inside the caller's transaction).
fn migrate(conn: &Connection, version: i64) -> Result<(), Migration> {
    if version > SCHEMA_VERSION {
        return Err(Migration::TooNew(version));
    }
    let run = |sql: &str| conn.execute_batch(sql).map_err(Migration::Sql);
    if version == 1 {
        run("ALTER TABLE attempts ADD COLUMN verdict TEXT;")?;
    }
    if (1..=2).contains(&version) {
        run(MIGRATE_TO_3)?;
    }
    if (1..=3).contains(&version) {
        run(MIGRATE_TO_4)?;
    }
    if (1..=5).contains(&version) {
        run(MIGRATE_TO_6)?;
    }
    if (1..=7).contains(&version) {
        run(MIGRATE_TO_8)?;
    }
    if version < SCHEMA_VERSION {
        run(SCHEMA)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(Migration::Sql)?;
    }
    Ok(())
}

/// An open state database.
pub struct Store {
    conn: Connection,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::Folder {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let open_error = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(open_error)?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(open_error)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_error)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_error)?;
        let read_version = |conn: &Connection| -> Result<i64, rusqlite::Error> {
            conn.pragma_query_value(None, "user_version", |row| row.get(0))
        };
        if read_version(&conn).map_err(open_error)? < SCHEMA_VERSION {
            // Two processes may open an old database at once: the migration runs in one write transaction,
            // and the version is read again inside it, so the second finds the work done.
            let migration = rusqlite::Transaction::new_unchecked(
                &conn,
                rusqlite::TransactionBehavior::Immediate,
            )
            .map_err(open_error)?;
            migrate(&migration, read_version(&migration).map_err(open_error)?).map_err(
                |error| match error {
                    Migration::TooNew(found) => StoreError::TooNew {
                        found,
                        known: SCHEMA_VERSION,
                    },
                    Migration::Sql(source) => open_error(source),
                },
            )?;
            migration.commit().map_err(open_error)?;
        } else if let Ok(found) = read_version(&conn)
            && found > SCHEMA_VERSION
        {
            return Err(StoreError::TooNew {
                found,
                known: SCHEMA_VERSION,
            });
        }
        Ok(Store { conn })
    }

    /// Runs one statement that changes rows, with `context` for its error.
    fn update(
        &self,
        context: &str,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(sql, params)
            .map(drop)
            .map_err(query(context))
    }

    /// Opens the database if it exists, else an empty one in memory: a command that only looks runs up (status,
    /// verify, salvage, the follow-ups) finds none in a repository ccfan never ran in, and leaves no file behind.
    pub fn open_or_empty(path: &Path) -> Result<Store, StoreError> {
        if path.exists() {
            return Store::open(path);
        }
        let open_error = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open_in_memory().map_err(open_error)?;
        conn.execute_batch(SCHEMA).map_err(open_error)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(open_error)?;
        Ok(Store { conn })
    }

    /// Opens the database only if it exists (for read-only commands on a repository ccfan never ran in).
    pub fn open_existing(path: &Path) -> Result<Option<Store>, StoreError> {
        if path.exists() {
            Store::open(path).map(Some)
        } else {
            Ok(None)
        }
    }
}
