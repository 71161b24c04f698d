//! The runner's side of an attempt whose files travel over a cluster's API rather than an engine's copy: waiting
//! for its input to arrive in the pod, echoing the worker's output as it is written (the pod's log is how ccfan
//! follows a running attempt live), and holding the pod up until its output has been taken.

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::sandbox::live::{EVENT_MARK, LITERAL_MARK, MORE_MARK};

/// How often a file is looked at again.
const POLL: Duration = Duration::from_millis(100);

/// Waits until `input` is marked ready (all of the attempt's input is there), at most `limit`.
pub fn await_input(input: &Path, limit: Duration, cancel: &AtomicBool) -> Result<(), String> {
    let ready = input.join(crate::sandbox::archive::READY);
    let started = Instant::now();
    while !ready.is_file() {
        if cancel.load(Ordering::SeqCst) {
            return Err("stopped while waiting for the attempt's input".to_string());
        }
        if started.elapsed() > limit {
            return Err(format!(
                "the attempt's input did not arrive in {} within {} s",
                input.display(),
                limit.as_secs()
            ));
        }
        std::thread::sleep(POLL);
    }
    Ok(())
}

/// Keeps the pod up for `limit`, or until stopped.
pub fn hold(limit: Duration, cancel: &AtomicBool) {
    let started = Instant::now();
    while started.elapsed() < limit && !cancel.load(Ordering::SeqCst) {
        std::thread::sleep(POLL * 5);
    }
}

/// The most bytes of a line in one piece (a cluster's log splits longer lines and stamps each part).
const PIECE: usize = 4000;
/// The longest line an echo holds back waiting for its end (a longer one goes out as it is, as several).
const MAX_LINE: usize = 1 << 20;
/// How long an echo holds back a line whose end has not come (a progress bar, a prompt).
const STALE: Duration = Duration::from_secs(1);

/// Redacts a line before it is echoed (in order: it may remember what earlier lines held).
pub type Redact = Box<dyn FnMut(&str) -> String + Send>;

/// Why an echo looks at what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// New bytes came: whole lines go.
    Lines,
    /// A log line has waited [`STALE`] for its end: it goes up to its last word (a secret being printed is one
    /// word, so it is never cut in two, where neither half would be found).
    Stale,
    /// The echo stops: everything goes.
    Last,
}

/// A thread copying what is appended to a log (and an agent's event stream) to another stream, line by line,
/// redacted, until [`Echo::finish`]: the engine or the cluster keeps what a container prints in its own logs.
pub struct Echo {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// One file an echo follows.
struct Followed {
    path: PathBuf,
    file: Option<std::fs::File>,
    at: u64,
    /// A line whose end has not come yet, and since when it waits.
    partial: Vec<u8>,
    waiting: Option<Instant>,
    /// What its lines go after (an event stream's mark; none for the log).
    mark: Option<u8>,
}

/// Where an echo writes, and how it redacts.
struct Out {
    to: Box<dyn Write + Send>,
    redact: Option<Redact>,
}

impl Followed {
    /// Copies the whole lines appended since the last look to `out`; a line held back too long, or (`last`)
    /// what is left, too.
    fn copy(&mut self, chunk: &mut [u8], out: &mut Out, last: bool) -> std::io::Result<()> {
        if self.file.is_none() {
            self.file = std::fs::File::open(&self.path).ok();
        }
        if let Some(mut file) = self.file.take() {
            while let Ok(read) = file
                .seek(std::io::SeekFrom::Start(self.at))
                .and_then(|_| file.read(chunk))
                && read > 0
            {
                self.at += read as u64;
                self.partial.extend_from_slice(&chunk[..read]);
                self.lines_out(out, Cut::Lines)?;
            }
            self.file = Some(file);
        }
        let stale = self.waiting.is_some_and(|since| since.elapsed() >= STALE);
        let cut = match (last, stale) {
            (true, _) => Cut::Last,
            (false, true) => Cut::Stale,
            (false, false) => Cut::Lines,
        };
        self.lines_out(out, cut)?;
        out.to.flush()
    }

    /// Writes the whole lines held, and what [`Cut`] lets go of the one not ended yet; one past [`MAX_LINE`] goes
    /// up to its last word, as a piece with more to come (an event's pieces are never sent before the end
    /// otherwise: the stream's lines are joined whole on ccfan's side).
    fn lines_out(&mut self, out: &mut Out, cut: Cut) -> std::io::Result<()> {
        let line_end = self
            .partial
            .iter()
            .rposition(|byte| *byte == b'\n')
            .map_or(0, |at| at + 1);
        let unended = &self.partial[line_end..];
        let last_word = unended
            .iter()
            .rposition(u8::is_ascii_whitespace)
            .map(|at| line_end + at + 1);
        let (end, open) = match cut {
            Cut::Last => (self.partial.len(), false),
            _ if unended.len() >= MAX_LINE => (last_word.unwrap_or(self.partial.len()), true),
            Cut::Stale if self.mark.is_none() => (last_word.unwrap_or(line_end), false),
            Cut::Stale | Cut::Lines => (line_end, false),
        };
        let whole: Vec<u8> = self.partial.drain(..end).collect();
        self.waiting = match (self.partial.is_empty(), self.waiting) {
            (true, _) => None,
            (false, Some(since)) if end == 0 => Some(since),
            (false, _) => Some(Instant::now()),
        };
        for line in whole.split_inclusive(|byte| *byte == b'\n') {
            let (line, goes_on) = match line.strip_suffix(b"\n") {
                Some(ended) => (ended, false),
                None => (line, open),
            };
            let redacted = out
                .redact
                .as_mut()
                .map(|redact| redact(&String::from_utf8_lossy(line)).into_bytes());
            let line = redacted.as_deref().unwrap_or(line);
            let pieces: Vec<&[u8]> = if line.is_empty() {
                vec![line]
            } else {
                line.chunks(PIECE).collect()
            };
            for (n, piece) in pieces.iter().enumerate() {
                let more = n + 1 < pieces.len() || goes_on;
                out.to.write_all(&frame(self.mark.is_some(), more, piece))?;
                out.to.write_all(piece)?;
                out.to.write_all(b"\n")?;
            }
        }
        Ok(())
    }
}

/// What goes before a piece of a line in the echo, so ccfan's side tells the event stream's pieces from the
/// log's and joins a long line again: an event's piece is [`EVENT_MARK`] then `+` (more follows) or `.`; a log's
/// piece with more to follow is [`MORE_MARK`]; a log line's last (or only) piece has nothing, unless it starts
/// with one of the marks, when [`LITERAL_MARK`] keeps it a log line.
fn frame(event: bool, more: bool, piece: &[u8]) -> Vec<u8> {
    match (event, more) {
        (true, true) => vec![EVENT_MARK, b'+'],
        (true, false) => vec![EVENT_MARK, b'.'],
        (false, true) => vec![MORE_MARK],
        (false, false)
            if piece
                .first()
                .is_some_and(|byte| [EVENT_MARK, MORE_MARK, LITERAL_MARK].contains(byte)) =>
        {
            vec![LITERAL_MARK]
        }
        (false, false) => Vec::new(),
    }
}

impl Echo {
    /// Starts copying the lines of `log` (once it exists) to `to`, each through `redact`.
    pub fn start(log: PathBuf, to: Box<dyn Write + Send>, redact: Option<Redact>) -> Echo {
        Echo::follow(vec![(log, None)], Out { to, redact })
    }

    /// Starts copying the lines of `log` and of the agent's event stream `events` to `to`, each through
    /// `redact`, each line of the stream after [`EVENT_MARK`].
    pub fn start_with_events(
        log: PathBuf,
        events: PathBuf,
        to: Box<dyn Write + Send>,
        redact: Option<Redact>,
    ) -> Echo {
        Echo::follow(
            vec![(log, None), (events, Some(EVENT_MARK))],
            Out { to, redact },
        )
    }

    fn follow(files: Vec<(PathBuf, Option<u8>)>, mut out: Out) -> Echo {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let mut files: Vec<Followed> = files
            .into_iter()
            .map(|(path, mark)| Followed {
                path,
                file: None,
                at: 0,
                partial: Vec::new(),
                waiting: None,
                mark,
            })
            .collect();
        let thread = std::thread::spawn(move || {
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                // The last pass after the stop reads what was written before it.
                let last = stopping.load(Ordering::SeqCst);
                for file in &mut files {
                    if file.copy(&mut chunk, &mut out, last).is_err() {
                        return;
                    }
                }
                if last {
                    return;
                }
                std::thread::sleep(POLL);
            }
        });
        Echo {
            stop,
            thread: Some(thread),
        }
    }

    /// Copies what is left and stops.
    pub fn finish(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn an_echo_copies_a_growing_log_whole() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("worker.log");
        let seen = Shared::default();
        let echo = Echo::start(
            log.clone(),
            Box::new(seen.clone()),
            Some(Box::new(|line: &str| {
                line.replace("sk-live-123", "[redacted]")
            })),
        );
        std::thread::sleep(POLL * 2);
        std::fs::write(&log, b"one\n").unwrap();
        std::thread::sleep(POLL * 3);
        assert_eq!(
            seen.0.lock().unwrap().as_slice(),
            b"one\n",
            "copied while running"
        );
        let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        file.write_all(b"two sk-live-123\nprogress 50% sk-li")
            .unwrap();
        // A line whose end does not come goes out once it waited long enough, up to its last word: a secret
        // being printed is not cut in two.
        std::thread::sleep(STALE + POLL * 3);
        assert_eq!(
            String::from_utf8_lossy(&seen.0.lock().unwrap()),
            "one\ntwo [redacted]\nprogress 50% \n"
        );
        file.write_all(b"ve-123 done\n").unwrap();
        echo.finish();
        assert_eq!(
            String::from_utf8_lossy(&seen.0.lock().unwrap()),
            "one\ntwo [redacted]\nprogress 50% \n[redacted] done\n"
        );
    }

    #[test]
    fn an_echo_with_events_sends_whole_lines_and_marks_the_stream() {
        let dir = tempfile::tempdir().unwrap();
        let (log, events) = (
            dir.path().join("worker.log"),
            dir.path().join("events.jsonl"),
        );
        let seen = Shared::default();
        let echo =
            Echo::start_with_events(log.clone(), events.clone(), Box::new(seen.clone()), None);
        std::fs::write(&log, b"half a li").unwrap();
        std::fs::write(&events, b"{\"a\":1}\n{\"b\":").unwrap();
        std::thread::sleep(POLL * 3);
        assert_eq!(
            seen.0.lock().unwrap().as_slice(),
            b"\x1e.{\"a\":1}\n",
            "only whole lines while running"
        );
        let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        file.write_all(b"ne\nend").unwrap();
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&events)
            .unwrap();
        file.write_all(b"2}\n").unwrap();
        echo.finish();
        assert_eq!(
            String::from_utf8_lossy(&seen.0.lock().unwrap()),
            "\x1e.{\"a\":1}\nhalf a line\nend\n\x1e.{\"b\":2}\n"
        );
    }

    #[test]
    fn what_an_echo_frames_the_live_log_takes_apart_again() {
        let dir = tempfile::tempdir().unwrap();
        let (log, events) = (
            dir.path().join("worker.log"),
            dir.path().join("events.jsonl"),
        );
        let long = "x".repeat(PIECE * 2 + 17);
        let log_text = format!("short\n{long}\n\u{1e}looks like an event\n\u{1f}\n\n");
        let events_text = format!("{{\"a\":\"{long}\"}}\n{{}}\n");
        std::fs::write(&log, &log_text).unwrap();
        std::fs::write(&events, &events_text).unwrap();
        let seen = Shared::default();
        let echo = Echo::start_with_events(log, events.clone(), Box::new(seen.clone()), None);
        // An event past the longest line held goes out before its end, in pieces joined again there.
        let huge = format!("{{\"b\":\"{}\"}}\n", "word ".repeat(MAX_LINE / 4));
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&events)
            .unwrap();
        std::thread::sleep(POLL * 3);
        file.write_all(&huge.as_bytes()[..MAX_LINE + 10]).unwrap();
        std::thread::sleep(POLL * 4);
        file.write_all(&huge.as_bytes()[MAX_LINE + 10..]).unwrap();
        echo.finish();
        let events_text = format!("{events_text}{huge}");
        let (log_back, events_back) = (dir.path().join("log-back"), dir.path().join("events-back"));
        let mut live = crate::sandbox::live::LiveLog::open(crate::sandbox::live::Live {
            log: &log_back,
            events: Some(&events_back),
            cap: 4 << 20,
        })
        .unwrap();
        let framed = seen.0.lock().unwrap().clone();
        assert!(
            framed
                .split(|byte| *byte == b'\n')
                .all(|line| line.len() <= PIECE + 2),
            "no line of the echo is longer than a piece"
        );
        // Fed in small chunks, as a stream comes.
        for chunk in framed.chunks(333) {
            live.push(chunk);
        }
        let same = |back: &Path, text: &str| {
            let back = std::fs::read_to_string(back).unwrap();
            let differs = back.bytes().zip(text.bytes()).position(|(a, b)| a != b);
            assert!(
                back == text,
                "{} bytes back of {}, first difference at {differs:?}: {:?}",
                back.len(),
                text.len(),
                &back[differs.unwrap_or(0).saturating_sub(20)..][..60.min(back.len())]
            );
        };
        same(&log_back, &log_text);
        same(&events_back, &events_text);
    }

    #[test]
    fn input_not_arriving_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let error = await_input(
            dir.path(),
            Duration::from_millis(150),
            &AtomicBool::new(false),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("did not arrive"), "{error}");
        std::fs::write(dir.path().join(crate::sandbox::archive::READY), b"").unwrap();
        await_input(
            dir.path(),
            Duration::from_millis(150),
            &AtomicBool::new(false),
        )
        .unwrap();
    }
}
