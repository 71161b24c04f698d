//! The dashboard's live feed: one thread watches the state database (SQLite's `data_version` moves whenever any
//! ccfan process commits), rebuilds the panels of the runs that may have changed, and broadcasts only the rows
//! that differ. A page gets a snapshot when it connects and the deltas after it, so it never polls. Every payload
//! is redacted once more before it leaves (the store holds redacted text already; this is the last fence).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use super::view::{self, RunPanel};
use crate::git::RepoPaths;
use crate::model::{RunId, RunState};
use crate::paths::StateLayout;
use crate::secrets::RulePack;
use crate::store::{Store, StoreError};

/// How often the watcher looks at the database's change counter.
const LOOK_EVERY: Duration = Duration::from_millis(25);
/// How often a run in progress is rebuilt even with no change stored (its owner may have died).
const REFRESH_EVERY: Duration = Duration::from_secs(2);
/// Deltas a slow page may fall behind by before it is told to reload.
const BACKLOG: usize = 256;

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

    /// Waits (a few seconds at most) until the first look at the database is done.
    pub async fn ready(&self) {
        let mut ready = self.ready.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(5), ready.wait_for(|done| *done)).await;
    }

    /// Every run's panel (newest first) as one JSON document, and a receiver of every change after it.
    pub fn subscribe(&self) -> (String, broadcast::Receiver<Arc<str>>) {
        let panels = self.panels.lock().unwrap_or_else(PoisonError::into_inner);
        let receiver = self.sender.subscribe();
        let runs: Vec<&RunPanel> = panels.values().rev().collect();
        let snapshot = serde_json::json!({ "runs": runs }).to_string();
        (self.rules.redact_text(&snapshot), receiver)
    }

    /// Looks at the database once: rebuilds the runs in `marks` that changed (or are carried and `refresh` is
    /// due), stores their panels, and sends what differs.
    fn look(
        &self,
        store: &Store,
        marks: &mut BTreeMap<String, Mark>,
        refresh: bool,
    ) -> Result<(), StoreError> {
        let mut deltas = Vec::new();
        for run in store.runs()? {
            let key = run.id.to_string();
            let mark = (run.state, store.last_transition(&run.id)?);
            let changed = marks.get(&key) != Some(&mark);
            if !changed && !(run.state == RunState::Running) {
                continue;
            }
            if !changed && !refresh && !self.busy(&key) {
                continue;
            }
            marks.insert(key.clone(), mark);
            let panel = build(store, &run.id, run.state, run.owner_pid, &run.owner_start)?;
            let mut panels = self.panels.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(delta) = view::delta(panels.get(&key), &panel) {
                deltas.push(delta);
            }
            panels.insert(key, panel);
        }
        if !deltas.is_empty() {
            let _held = self.panels.lock().unwrap_or_else(PoisonError::into_inner);
            let payload = serde_json::json!({ "deltas": deltas }).to_string();
            // No page connected is fine.
            let _ = self
                .sender
                .send(Arc::from(self.rules.redact_text(&payload)));
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

/// The panel of one run, read now.
pub fn build(
    store: &Store,
    run_id: &RunId,
    state: RunState,
    owner_pid: i64,
    owner_start: &str,
) -> Result<RunPanel, StoreError> {
    let view = crate::status::run_view(store, run_id)?;
    let carried =
        state == RunState::Running && crate::sandbox::proc::owner_alive(owner_pid, owner_start);
    let mut times: BTreeMap<String, view::Timing> = BTreeMap::new();
    for (task, at) in store.last_changes(run_id)? {
        times.entry(task).or_default().since_ms = Some(at);
    }
    for (task, (started, finished)) in store.latest_attempt_times(run_id)? {
        let timing = times.entry(task).or_default();
        timing.started_ms = Some(started);
        timing.finished_ms = finished;
    }
    Ok(view::panel(&view, carried, &times))
}

/// Watches the repository's state database until `stop` is set: the first look fills the feed, later ones only
/// when the database changed (or a refresh of runs in progress is due).
pub fn watch(feed: &Feed, repo: &RepoPaths, stop: &std::sync::atomic::AtomicBool) {
    let database = StateLayout::of(repo).database();
    let mut store: Option<Store> = None;
    let mut marks = BTreeMap::new();
    let mut version = None;
    let mut refreshed = Instant::now();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        if store.is_none() && database.exists() {
            // A run may be creating it right now: try again on the next look.
            store = Store::open(&database)
                .inspect_err(|error| tracing::debug!("dashboard: {error}; trying again"))
                .ok();
        }
        let mut lost = false;
        if let Some(opened) = &store {
            let now = opened.data_version().ok();
            let refresh = refreshed.elapsed() >= REFRESH_EVERY;
            if now.is_none() {
                lost = true;
            } else if version != now || refresh {
                version = now;
                if refresh {
                    refreshed = Instant::now();
                }
                if let Err(error) = feed.look(opened, &mut marks, refresh) {
                    tracing::warn!("dashboard: cannot read the state database: {error}");
                }
            }
        }
        if lost {
            store = None;
        }
        if !*feed.ready.borrow() && (store.is_some() || !database.exists()) {
            feed.ready.send_replace(true);
        }
        std::thread::sleep(LOOK_EVERY);
    }
}
