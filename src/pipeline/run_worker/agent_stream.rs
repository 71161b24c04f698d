//! Stage 3, agent workers: an agent's event stream read into its tally — live, line by line, while it runs here;
//! or replayed from the stream a container's runner kept — with progress passed on as it changes, and the
//! summary, the scrubbed stream and home, and the final report kept once it ended.

use std::path::Path;

use super::context::{AttemptContext, RunWorkerError, write};
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
    /// container's or pod's log), whole lines only, passing progress on, until `done()`. The runner judges the
    /// agent's limits where it runs; what this tally says of them is only shown.
    pub(super) fn follow(&mut self, events: &Path, done: impl Fn() -> bool) {
        let mut partial: Vec<u8> = Vec::new();
        // Past a line longer than the most a line may be (as at home), until its end.
        let mut skipping = false;
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
                for piece in chunk[..read].split_inclusive(|byte| *byte == b'\n') {
                    let ended = piece.ends_with(b"\n");
                    if !skipping {
                        partial.extend_from_slice(piece);
                    }
                    if ended {
                        if !skipping {
                            self.line(&String::from_utf8_lossy(partial.trim_ascii_end()));
                        }
                        partial.clear();
                        skipping = false;
                    } else if partial.len() > MAX_LINE {
                        partial.clear();
                        skipping = true;
                    }
                }
            }
            self.show(false);
            if last {
                return;
            }
            std::thread::sleep(FOLLOW_POLL);
        }
    }
}

impl<'a, 'p> Reader<'a, 'p> {
    /// Reads the stream at `events` from its start into a new tally (a runner that sent no summary of its own),
    /// passing progress on as this reader did.
    pub(super) fn replay(
        self,
        events: &Path,
        fresh: impl FnOnce(&'p mut dyn FnMut(&AgentSummary)) -> Reader<'a, 'p>,
    ) -> Reader<'a, 'p> {
        let mut reader = fresh(self.on_progress);
        if let Ok(file) = crate::util::open_regular(events) {
            let lines = std::io::BufRead::split(std::io::BufReader::new(file), b'\n');
            for line in lines.map_while(Result::ok) {
                if line.len() <= MAX_LINE {
                    reader.line(&String::from_utf8_lossy(&line));
                }
            }
        }
        reader
    }
}

/// How often a stream coming from elsewhere is looked at.
const FOLLOW_POLL: std::time::Duration = std::time::Duration::from_millis(100);
/// The longest line of a stream read (as the sandbox's own reading of a local agent's stream).
const MAX_LINE: usize = 16 << 20;

/// After an agent ended: its stream and its home scrubbed of secrets, its summary redacted and stored, and its
/// last message kept as its final report when it wrote none.
/// `whole`: the summary of the whole stream, when a runner elsewhere made it (this reader only saw what came live).
pub(super) fn finish_agent(
    task: &TaskSpec,
    context: &AttemptContext<'_>,
    mut reader: Reader<'_, '_>,
    whole: Option<AgentSummary>,
) -> Result<AgentSummary, RunWorkerError> {
    let files = AttemptDir::of(context.dir);
    // The last change is always shown, however soon after the one before.
    reader.show(true);
    if let Some(whole) = &whole {
        let mut shown = whole.clone();
        shown.redact(|text| context.rules.redact_text(text));
        (reader.on_progress)(&shown);
    }
    // What the agent printed is scrubbed of secrets now, whatever the gate later scans (markers read back as
    // the same findings).
    let printed = crate::pipeline::verify::secrets::scrub_log(context.rules, &files.events(), &[]);
    // The agent's own session files (transcripts, history databases) hold the same secrets: scrubbed too, so a
    // key it wrote or printed is not kept raw in its home (resume reads the redacted transcript).
    if let Some(agent) = task.worker.kind.agent().map(|(agent, _)| agent) {
        crate::pipeline::verify::agent_home::scrub_home(
            context.rules,
            &context.agent_home.join(agent.name()),
            &crate::agents::home::seeded_files(agent),
            &printed,
        );
    }
    let mut summary = whole.unwrap_or_else(|| reader.tally.finish());
    summary.redact(|text| context.rules.redact_text(text));
    write(
        &files.agent(),
        &serde_json::to_vec_pretty(&summary).unwrap_or_default(),
    )?;
    // The agent's last message is its final report, unless it wrote one itself. ccfan writes it beside the log,
    // where the worker cannot plant a symlink, never into the worker-writable outbox.
    if let Some(message) = &summary.final_message
        && std::fs::symlink_metadata(files.report_file()).is_err()
    {
        write(&files.report_from_agent(), message.as_bytes())?;
    }
    Ok(summary)
}
