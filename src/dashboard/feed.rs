//! The dashboard's live feed: one thread watches the state database (SQLite's `data_version` moves whenever any
//! ccfan process commits), rebuilds the panels of the runs that may have changed, and broadcasts only the rows
//! that differ. A page gets a snapshot when it connects and the deltas after it, so it never polls. Every text in a
//! panel is redacted field by field before it leaves (the store holds redacted text already; this is the last
//! fence).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use super::view::{self, RunPanel};
use crate::git::RepoPaths;
use crate::model::RunState;
use crate::paths::StateLayout;
use crate::secrets::RulePack;
use crate::store::{RunRow, Store, StoreError};

/// How often the watcher looks at the database's change counter.
const LOOK_EVERY: Duration = Duration::from_millis(25);
/// How often a run in progress is rebuilt even with no change stored (its owner may have died), and the
/// database's file is checked for having been replaced.
const REFRESH_EVERY: Duration = Duration::from_secs(2);
/// Deltas a slow page may fall behind by before it is told to reload.
const BACKLOG: usize = 256;
/// The longest a page's first request waits for the first look at the database.
const FIRST_LOOK_WAIT: Duration = Duration::from_secs(30);

/// The latest panels, and the channel their changes go out on.
pub struct Feed {
    panels: Mutex<BTreeMap<String, RunPanel>>,
    sender: broadcast::Sender<Arc<str>>,
    rules: RulePack,
    /// Set once the first look at the database is done, so no page starts from an empty snapshot.
    ready: tokio::sync::watch::Sender<bool>,
}

/// One run's change marker: its state and its newest transition.
type Mark = (RunState, i64);

impl Feed {
    /// A feed with nothing seen yet.
    pub fn new(rules: RulePack) -> Arc<Feed> {
        let (sender, _) = broadcast::channel(BACKLOG);
        Arc::new(Feed {
            panels: Mutex::new(BTreeMap::new()),
            sender,
            rules,
            ready: tokio::sync::watch::Sender::new(false),
        })
    }

    /// Waits (for a while at most) until the first look at the database is done.
    pub async fn ready(&self) {
        let mut ready = self.ready.subscribe();
        let _ = tokio::time::timeout(FIRST_LOOK_WAIT, ready.wait_for(|done| *done)).await;
    }

    /// Every run's panel (newest first) as one JSON document, and a receiver of every change after it.
    pub fn subscribe(&self) -> (String, broadcast::Receiver<Arc<str>>) {
        let (runs, receiver) = {
            let panels = self.panels.lock().unwrap_or_else(PoisonError::into_inner);
            let runs: Vec<RunPanel> = panels.values().rev().cloned().collect();
            (runs, self.sender.subscribe())
        };
        (serde_json::json!({ "runs": runs }).to_string(), receiver)
    }

    /// Looks at the database once: rebuilds the runs that changed (or are in progress, when their agents may have
    /// reported, or `refresh` is due), stores their panels, and sends what differs. A run that cannot be read is
    /// skipped and tried again on the next look; the others go on.
    fn look(
        &self,
        store: &Store,
        marks: &mut BTreeMap<String, Mark>,
        refresh: bool,
    ) -> Result<(), StoreError> {
        let newest = store.newest_transitions()?;
        let mut deltas = Vec::new();
        for run in store.runs()? {
            let key = run.id.to_string();
            let mark = (run.state, newest.get(&key).copied().unwrap_or(0));
            let changed = marks.get(&key) != Some(&mark);
            if !changed && (run.state != RunState::Running || !(refresh || self.busy(&key))) {
                continue;
            }
            let panel = match build(store, &self.rules, &run) {
                Ok(panel) => panel,
                Err(error) => {
                    tracing::warn!("dashboard: cannot read run {key}: {error}");
                    continue;
                }
            };
            marks.insert(key.clone(), mark);
            let mut panels = self.panels.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(delta) = view::delta(panels.get(&key), &panel) {
                deltas.push(delta);
            }
            panels.insert(key, panel);
        }
        if !deltas.is_empty() {
            // Under the lock, so a page subscribing meanwhile gets each change in its snapshot or as a delta.
            let _held = self.panels.lock().unwrap_or_else(PoisonError::into_inner);
            let payload = serde_json::json!({ "deltas": deltas }).to_string();
            // No page connected is fine.
            let _ = self.sender.send(Arc::from(payload));
        }
        Ok(())
    }

    /// Whether the run's panel shows work in flight (an agent's progress is stored without a transition).
    fn busy(&self, run: &str) -> bool {
        self.panels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(run)
            .is_some_and(|panel| {
                panel
                    .rows
                    .iter()
                    .any(|row| row.group == view::Group::Working)
            })
    }
}

/// The panel of one run, read now, every text in it redacted.
pub fn build(store: &Store, rules: &RulePack, run: &RunRow) -> Result<RunPanel, StoreError> {
    let view = crate::status::run_view(store, &run.id)?;
    let carried = run.state == RunState::Running
        && crate::sandbox::proc::owner_alive(run.owner_pid, &run.owner_start);
    let mut times: BTreeMap<String, view::Timing> = BTreeMap::new();
    for (task, at) in store.last_changes(&run.id)? {
        times.entry(task).or_default().since_ms = Some(at);
    }
    for (task, (started, finished)) in store.latest_attempt_times(&run.id)? {
        let timing = times.entry(task).or_default();
        timing.started_ms = Some(started);
        timing.finished_ms = finished;
    }
    let mut panel = view::panel(&view, carried, &times);
    for row in &mut panel.rows {
        let texts = row
            .reason
            .iter_mut()
            .chain(row.action.iter_mut())
            .chain(row.findings.iter_mut());
        for text in texts {
            *text = rules.redact_text(text);
        }
    }
    Ok(panel)
}

/// The device and inode of the file at `path`.
fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path)
        .ok()
        .map(|meta| (meta.dev(), meta.ino()))
}

/// The watcher's hold on the database: the connection, the file it opened, what it saw last.
#[derive(Default)]
struct Watch {
    store: Option<Store>,
    file: Option<(u64, u64)>,
    version: Option<i64>,
    marks: BTreeMap<String, Mark>,
}

impl Watch {
    /// One look: opens the database when there is one (again, when it was replaced), then reads what changed.
    fn once(&mut self, feed: &Feed, database: &Path, refresh: bool) {
        if self.store.is_some() && refresh && identity(database) != self.file {
            // Removed, or made anew at its path: the connection reads a file nobody writes.
            *self = Watch::default();
        }
        if self.store.is_none() && database.exists() {
            // A run may be creating it right now: tried again on the next look.
            self.store = Store::open(database)
                .inspect_err(|error| tracing::debug!("dashboard: {error}; trying again"))
                .ok();
            self.file = identity(database);
        }
        let Some(store) = &self.store else {
            return;
        };
        let Ok(now) = store.data_version() else {
            self.store = None;
            return;
        };
        if self.version != Some(now) || refresh {
            self.version = Some(now);
            if let Err(error) = feed.look(store, &mut self.marks, refresh) {
                tracing::warn!("dashboard: cannot read the state database: {error}");
            }
        }
    }
}

/// Watches the repository's state database until `stop` is set: the first look fills the feed, later ones only
/// when the database changed (or a refresh of runs in progress is due).
pub fn watch(feed: &Feed, repo: &RepoPaths, stop: &std::sync::atomic::AtomicBool) {
    let database = StateLayout::of(repo).database();
    let mut watch = Watch::default();
    let mut refreshed = Instant::now();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let refresh = refreshed.elapsed() >= REFRESH_EVERY;
        if refresh {
            refreshed = Instant::now();
        }
        watch.once(feed, &database, refresh);
        if !*feed.ready.borrow() && (watch.store.is_some() || !database.exists()) {
            feed.ready.send_replace(true);
        }
        std::thread::sleep(LOOK_EVERY);
    }
}
