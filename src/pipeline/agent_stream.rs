//! Stage 3, agent workers: an agent's event stream read into its tally — live, line by line, while it runs here;
//! or replayed from the stream a container's runner kept — with progress passed on as it changes, and the
//! summary, the scrubbed stream and home, and the final report kept once it ended.

use std::path::Path;

use super::run_worker::{AttemptContext, RunWorkerError};
use crate::agents::tally::{AgentSummary, Tally};
use crate::agents::{self, Agent};
use crate::model::AgentConfig;
use crate::model::TaskSpec;
use crate::paths::AttemptDir;
use crate::sandbox::{self, StreamHandler};
use crate::secrets::RulePack;

/// How often progress is passed on at most (the last change always is, on the next poll after this).
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// Reads an agent's stream into its tally and passes progress on, at most every [`PROGRESS_EVERY`].
pub(super) struct Reader<'a, 'p> {
    agent: Agent,
    tally: Tally,
    rules: &'a RulePack,
    on_progress: &'p mut dyn FnMut(&AgentSummary),
    shown_at: Option<std::time::Instant>,
    pending: bool,
}

impl Reader<'_, '_> {
    /// Passes the tally on if it changed and the last showing is old enough (or `now`).
    pub(super) fn show(&mut self, now: bool) {
        let due = now
            || self
                .shown_at
                .is_none_or(|at| at.elapsed() >= PROGRESS_EVERY);
        if self.pending && due {
            self.pending = false;
            self.shown_at = Some(std::time::Instant::now());
            let mut snapshot = self.tally.summary().clone();
            snapshot.redact(|text| self.rules.redact_text(text));
            (self.on_progress)(&snapshot);
        }
    }
}

impl sandbox::StreamHandler for Reader<'_, '_> {
    fn line(&mut self, line: &str) -> Option<String> {
        let mut stop = None;
        // Secrets are redacted from the line itself, before any text of it is clipped or stored.
        let events = self.agent.parse_line(&self.rules.redact_text(line));
        if events.is_empty() {
            // A kind of event ccfan does not tally (Codex reasoning, a plan): the model is answering.
            self.tally.activity();
        }
        for event in events {
            self.pending |= !matches!(
                event,
                agents::AgentEvent::Unknown { .. } | agents::AgentEvent::Unparsable
            );
            if let Some(reason) = self.tally.observe(event) {
                stop.get_or_insert(reason);
            }
        }
        self.show(false);
        stop
    }

    fn idle(&mut self) -> Option<String> {
        let stop = self.tally.check_at(std::time::Instant::now());
        self.pending |= stop.is_some();
        self.show(false);
        stop
    }
}

impl<'a, 'p> Reader<'a, 'p> {
    /// A reader of `agent`'s stream for the attempt `context` describes, working in `tree` (the worktree, or where
    /// the container had it).
    pub(super) fn new(
        agent: Agent,
        config: &AgentConfig,
        context: &AttemptContext<'a>,
        tree: &Path,
        on_progress: &'p mut dyn FnMut(&AgentSummary),
    ) -> Reader<'a, 'p> {
        Reader {
            agent,
            tally: Tally::new(
                agent,
                tree,
                config.max_turns,
                context.resume.is_some(),
                context.baseline,
                config.api_retry,
            )
            .with_model(config.model.clone()),
            rules: context.rules,
            on_progress,
            shown_at: None,
            pending: false,
        }
    }

    /// Follows the stream at `events` as it grows while a runner elsewhere works (its lines arrive through the
    /// container's or pod's log), whole lines only, passing progress on, until `done()`. What was read is
    /// returned, to tell whether the stream the runner kept begins with it. Limits are not judged here: the
    /// runner judges them where the agent runs.
    pub(super) fn follow(&mut self, events: &Path, done: impl Fn() -> bool) -> Seen {
        let mut seen = Seen::default();
        let mut partial: Vec<u8> = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        let mut file = None;
        loop {
            let last = done();
            if file.is_none() {
                file = crate::util::open_regular(events).ok();
            }
            while let Some(Ok(read)) = file.as_mut().map(|f| std::io::Read::read(f, &mut chunk))
                && read > 0
            {
                partial.extend_from_slice(&chunk[..read]);
                let end = partial
                    .iter()
                    .rposition(|byte| *byte == b'\n')
                    .map_or(0, |at| at + 1);
                let whole: Vec<u8> = partial.drain(..end).collect();
                seen.add(&whole);
                for line in whole.split(|byte| *byte == b'\n').filter(|l| !l.is_empty()) {
                    self.line(&String::from_utf8_lossy(line));
                }
            }
            self.show(false);
            if last {
                return seen;
            }
            std::thread::sleep(FOLLOW_POLL);
        }
    }

    /// Reads the rest of the stream a runner elsewhere kept, once it ended: on from what [`Reader::follow`] saw
    /// when the kept stream begins with it, else all of it again with a new tally (a live stream that lost lines).
    /// `stopped_for_retries`: the runner stopped the agent at its model-API retry limit, which a replay (that
    /// takes no time) would not see.
    pub(super) fn finish_from(
        mut self,
        events: &Path,
        seen: &Seen,
        stopped_for_retries: bool,
        fresh: impl FnOnce(&'p mut dyn FnMut(&AgentSummary)) -> Reader<'a, 'p>,
    ) -> Reader<'a, 'p> {
        let mut from = seen.bytes;
        if Seen::of(events, seen.bytes) != *seen {
            self = fresh(self.on_progress);
            from = 0;
        }
        if let Ok(mut file) = crate::util::open_regular(events) {
            let _ = std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(from));
            let mut lines = std::io::BufRead::split(std::io::BufReader::new(file), b'\n');
            while let Some(Ok(line)) = lines.next() {
                self.line(&String::from_utf8_lossy(&line));
            }
        }
        if stopped_for_retries {
            let past = self.tally.api_retry_window() + std::time::Duration::from_secs(1);
            let _ = self.tally.check_at(std::time::Instant::now() + past);
        }
        self
    }
}

/// How often a stream coming from elsewhere is looked at.
const FOLLOW_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// What of a stream was read: its first `bytes`, and a hash of them (the same however they were cut in
/// reading).
#[derive(Debug, Default, Clone)]
pub(super) struct Seen {
    bytes: u64,
    hasher: std::collections::hash_map::DefaultHasher,
}

impl PartialEq for Seen {
    fn eq(&self, other: &Self) -> bool {
        use std::hash::Hasher;
        self.bytes == other.bytes && self.hasher.finish() == other.hasher.finish()
    }
}

impl Seen {
    fn add(&mut self, bytes: &[u8]) {
        std::hash::Hasher::write(&mut self.hasher, bytes);
        self.bytes += bytes.len() as u64;
    }

    /// The first `bytes` of the file at `path`, seen the same way (fewer when it is shorter).
    fn of(path: &Path, bytes: u64) -> Seen {
        let mut seen = Seen::default();
        if let Ok(file) = crate::util::open_regular(path) {
            let mut chunk = vec![0u8; 64 * 1024];
            let mut file = std::io::Read::take(file, bytes);
            while let Ok(read) = std::io::Read::read(&mut file, &mut chunk)
                && read > 0
            {
                seen.add(&chunk[..read]);
            }
        }
        seen
    }
}

/// After an agent ended: its stream and its home scrubbed of secrets, its summary redacted and stored, and its
/// last message kept as its final report when it wrote none.
pub(super) fn finish_agent(
    task: &TaskSpec,
    context: &AttemptContext<'_>,
    mut reader: Reader<'_, '_>,
) -> Result<AgentSummary, RunWorkerError> {
    let files = AttemptDir::of(context.dir);
    // The last change is always shown, however soon after the one before.
    reader.show(true);
    // What the agent printed is scrubbed of secrets now, whatever the gate later scans (markers read back as
    // the same findings).
    let printed = super::verify::secrets::scrub_log(context.rules, &files.events(), &[]);
    // The agent's own session files (transcripts, history databases) hold the same secrets: scrubbed too, so a
    // key it wrote or printed is not kept raw in its home (resume reads the redacted transcript).
    if let Some(agent) = task.worker.kind.agent().map(|(agent, _)| agent) {
        super::verify::agent_home::scrub_home(
            context.rules,
            &context.agent_home.join(agent.name()),
            &crate::agents::home::seeded_files(agent),
            &printed,
        );
    }
    let mut summary = reader.tally.finish();
    summary.redact(|text| context.rules.redact_text(text));
    super::run_worker::write(
        &files.agent(),
        &serde_json::to_vec_pretty(&summary).unwrap_or_default(),
    )?;
    // The agent's last message is its final report, unless it wrote one itself. ccfan writes it beside the log,
    // where the worker cannot plant a symlink, never into the worker-writable outbox.
    if let Some(message) = &summary.final_message
        && std::fs::symlink_metadata(files.report_file()).is_err()
    {
        super::run_worker::write(&files.report_from_agent(), message.as_bytes())?;
    }
    Ok(summary)
}
