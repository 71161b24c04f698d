//! Stopping work, beside the stages: one flag per task, set by Ctrl-C (every task) or by `ccfan cancel` from
//! another process (a request stored in the state database, which a watcher thread polls).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::model::{RunId, TaskId};
use crate::store::Store;

/// How often the watcher looks for cancel requests.
const POLL: Duration = Duration::from_millis(200);

/// The cancel flags of one run's tasks.
#[derive(Debug)]
pub struct Cancels<'a> {
    global: &'a AtomicBool,
    tasks: HashMap<TaskId, AtomicBool>,
}

impl<'a> Cancels<'a> {
    /// Flags for `tasks`, all following `global` (Ctrl-C).
    pub fn new<'t>(global: &'a AtomicBool, tasks: impl IntoIterator<Item = &'t TaskId>) -> Self {
        Cancels {
            global,
            tasks: tasks
                .into_iter()
                .map(|id| (id.clone(), AtomicBool::new(false)))
                .collect(),
        }
    }

    /// The flag that stops `task`.
    pub fn of(&self, task: &TaskId) -> &AtomicBool {
        if self.global.load(Ordering::SeqCst) {
            return self.global;
        }
        self.tasks.get(task).unwrap_or(self.global)
    }

    /// Stops `task` (its worker is killed; a task not started never starts).
    pub fn stop(&self, task: &TaskId) {
        if let Some(flag) = self.tasks.get(task) {
            flag.store(true, Ordering::SeqCst);
        }
    }

    /// Whether everything is being stopped (Ctrl-C).
    pub fn all(&self) -> bool {
        self.global.load(Ordering::SeqCst)
    }

    /// Sets the flag of each task that another process asked to cancel, until `done` is set.
    pub fn watch(&self, database: &Path, run_id: &RunId, done: &AtomicBool) {
        let store = match Store::open(database) {
            Ok(store) => store,
            Err(error) => {
                tracing::warn!("cannot watch for cancel requests: {error}");
                return;
            }
        };
        while !done.load(Ordering::SeqCst) {
            if self.global.load(Ordering::SeqCst) {
                self.tasks
                    .values()
                    .for_each(|flag| flag.store(true, Ordering::SeqCst));
            }
            match store.cancel_requests(run_id) {
                Ok(ids) => {
                    for id in ids {
                        if let Some(flag) = self.tasks.get(&id) {
                            flag.store(true, Ordering::SeqCst);
                        }
                    }
                }
                Err(error) => tracing::debug!("cannot read cancel requests: {error}"),
            }
            std::thread::sleep(POLL);
        }
    }
}
