//! The embedded default: `ccfan demo` writes a small repository, a tasks file and fixture workers (all compiled
//! into the binary from `fixtures/demo/`), so the whole pipeline can be seen without a repository or an API key.

use std::path::{Path, PathBuf};

use crate::git;
use crate::model::TaskState;
use crate::pipeline::PipelineError;

/// Files of the demo: `(path under the demo folder, content, executable)`.
const FILES: &[(&str, &str, bool)] = &[
    (
        "repo/README.md",
        include_str!("../fixtures/demo/repo/README.md"),
        false,
    ),
    (
        "repo/src/greet.sh",
        include_str!("../fixtures/demo/repo/src/greet.sh"),
        false,
    ),
    (
        "repo/tests/run.sh",
        include_str!("../fixtures/demo/repo/tests/run.sh"),
        true,
    ),
    (
        "repo/ccfan.toml",
        include_str!("../fixtures/demo/repo/ccfan.toml"),
        false,
    ),
    (
        "tasks.toml",
        include_str!("../fixtures/demo/tasks.toml"),
        false,
    ),
    (
        "workers/edit_in_scope.sh",
        include_str!("../fixtures/demo/workers/edit_in_scope.sh"),
        true,
    ),
    (
        "workers/edit_out_of_scope.sh",
        include_str!("../fixtures/demo/workers/edit_out_of_scope.sh"),
        true,
    ),
    (
        "workers/write_secret.sh",
        include_str!("../fixtures/demo/workers/write_secret.sh"),
        true,
    ),
    (
        "workers/hang.sh",
        include_str!("../fixtures/demo/workers/hang.sh"),
        true,
    ),
    (
        "workers/fail.sh",
        include_str!("../fixtures/demo/workers/fail.sh"),
        true,
    ),
];

/// What each demo task is expected to end as: a good edit; an out-of-scope edit fixed on its rework; a secret
/// (rolled back); a hang and a failure (blocked once their one rework also fails).
pub const EXPECTED: &[(&str, TaskState)] = &[
    ("add-farewell", TaskState::Merged),
    ("touch-ci", TaskState::Merged),
    ("add-config", TaskState::RolledBack),
    ("slow-refactor", TaskState::Blocked),
    ("broken-edit", TaskState::Blocked),
];

/// Where the demo's parts are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoLayout {
    /// The demo folder.
    pub root: PathBuf,
    /// The demo repository.
    pub repo: PathBuf,
    /// The tasks file.
    pub tasks_file: PathBuf,
    /// The fixture workers.
    pub workers: PathBuf,
}

/// Writes the demo into `root` (which must not exist or be empty) and commits the repository.
pub fn create(root: &Path) -> Result<DemoLayout, PipelineError> {
    let io = |context: String| move |source| PipelineError::Io { context, source };
    if root.exists() {
        let mut entries =
            std::fs::read_dir(root).map_err(io(format!("cannot read {}", root.display())))?;
        if entries.next().is_some() {
            return Err(
                crate::input::InputError::new(root, "the demo folder is not empty")
                    .key("DIR")
                    .fix(
                        "name a new or empty folder, or leave DIR out to use a fresh temporary one",
                    )
                    .into(),
            );
        }
    }
    for (relative, content, executable) in FILES {
        let path = root.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(io(format!("cannot create {}", parent.display())))?;
        }
        std::fs::write(&path, content).map_err(io(format!("cannot write {}", path.display())))?;
        if *executable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .map_err(io(format!("cannot make {} executable", path.display())))?;
        }
    }
    let root = root
        .canonicalize()
        .map_err(io(format!("cannot resolve {}", root.display())))?;
    let repo = root.join("repo");
    git::init_with_commit(&repo, "greeter: first version")?;
    Ok(DemoLayout {
        tasks_file: root.join("tasks.toml"),
        workers: root.join("workers"),
        repo,
        root,
    })
}
