//! The runner's side of an attempt whose files travel over a cluster's API rather than an engine's copy: waiting
//! for its input to arrive in the pod, echoing the worker's output as it is written (the pod's log is how ccfan
//! follows a running attempt live), and holding the pod up until its output has been taken.

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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

/// What starts a line of an agent's event stream in the runner's echo (the log's lines go as they are): the
/// ASCII record separator, which ccfan's side splits the two apart by ([`crate::sandbox::live::LiveLog`]).
pub const EVENT_MARK: u8 = 0x1e;
/// The longest line an echo holds back waiting for its end (a longer one goes out in pieces).
const MAX_LINE: usize = 64 * 1024;

/// A thread copying what is appended to a log (and an agent's event stream) to another stream, until
/// [`Echo::finish`].
pub struct Echo {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// One file an echo follows.
struct Followed {
    path: PathBuf,
    file: Option<std::fs::File>,
    at: u64,
    /// In line mode, a line whose end has not come yet.
    partial: Vec<u8>,
    /// Line mode: whole lines only, each after this mark (the log's with none).
    lines: Option<Option<u8>>,
}

impl Followed {
    /// Copies what was appended since the last look to `to`; `last`: also what is left of an unended line.
    fn copy(&mut self, chunk: &mut [u8], to: &mut dyn Write, last: bool) -> std::io::Result<()> {
        if self.file.is_none() {
            self.file = std::fs::File::open(&self.path).ok();
        }
        if let Some(file) = self.file.as_mut() {
            while let Ok(read) = file
                .seek(std::io::SeekFrom::Start(self.at))
                .and_then(|_| file.read(chunk))
                && read > 0
            {
                self.at += read as u64;
                match self.lines {
                    None => to.write_all(&chunk[..read])?,
                    Some(mark) => {
                        self.partial.extend_from_slice(&chunk[..read]);
                        lines_out(&mut self.partial, mark, to, false)?;
                    }
                }
            }
        }
        if let Some(mark) = self.lines {
            lines_out(&mut self.partial, mark, to, last)?;
        }
        to.flush()
    }
}

/// Writes the whole lines `partial` holds (and, with `all` or past [`MAX_LINE`], the rest as a line), each after
/// `mark`.
fn lines_out(
    partial: &mut Vec<u8>,
    mark: Option<u8>,
    to: &mut dyn Write,
    all: bool,
) -> std::io::Result<()> {
    let end = match partial.iter().rposition(|byte| *byte == b'\n') {
        Some(at) => at + 1,
        None if all || partial.len() >= MAX_LINE => partial.len(),
        None => 0,
    };
    let whole: Vec<u8> = partial.drain(..end).collect();
    for line in whole.split_inclusive(|byte| *byte == b'\n') {
        if let Some(mark) = mark {
            to.write_all(&[mark])?;
        }
        to.write_all(line)?;
        if !line.ends_with(b"\n") {
            to.write_all(b"\n")?;
        }
    }
    Ok(())
}

impl Echo {
    /// Starts copying what `log` gets (once it exists) to `to`, as it comes.
    pub fn start(log: PathBuf, to: Box<dyn Write + Send>) -> Echo {
        Echo::follow(vec![(log, None)], to)
    }

    /// Starts copying the lines of `log` and of the agent's event stream `events` to `to`, whole lines only,
    /// each line of the stream after [`EVENT_MARK`].
    pub fn start_with_events(log: PathBuf, events: PathBuf, to: Box<dyn Write + Send>) -> Echo {
        Echo::follow(
            vec![(log, Some(None)), (events, Some(Some(EVENT_MARK)))],
            to,
        )
    }

    fn follow(files: Vec<(PathBuf, Option<Option<u8>>)>, mut to: Box<dyn Write + Send>) -> Echo {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let mut files: Vec<Followed> = files
            .into_iter()
            .map(|(path, lines)| Followed {
                path,
                file: None,
                at: 0,
                partial: Vec::new(),
                lines,
            })
            .collect();
        let thread = std::thread::spawn(move || {
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                // The last pass after the stop reads what was written before it.
                let last = stopping.load(Ordering::SeqCst);
                for file in &mut files {
                    if file.copy(&mut chunk, &mut to, last).is_err() {
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
        let echo = Echo::start(log.clone(), Box::new(seen.clone()));
        std::thread::sleep(POLL * 2);
        std::fs::write(&log, b"one\n").unwrap();
        std::thread::sleep(POLL * 3);
        assert_eq!(
            seen.0.lock().unwrap().as_slice(),
            b"one\n",
            "copied while running"
        );
        let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        file.write_all(b"two\n").unwrap();
        echo.finish();
        assert_eq!(seen.0.lock().unwrap().as_slice(), b"one\ntwo\n");
    }

    #[test]
    fn an_echo_with_events_sends_whole_lines_and_marks_the_stream() {
        let dir = tempfile::tempdir().unwrap();
        let (log, events) = (
            dir.path().join("worker.log"),
            dir.path().join("events.jsonl"),
        );
        let seen = Shared::default();
        let echo = Echo::start_with_events(log.clone(), events.clone(), Box::new(seen.clone()));
        std::fs::write(&log, b"half a li").unwrap();
        std::fs::write(&events, b"{\"a\":1}\n{\"b\":").unwrap();
        std::thread::sleep(POLL * 3);
        assert_eq!(
            seen.0.lock().unwrap().as_slice(),
            b"\x1e{\"a\":1}\n",
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
            "\x1e{\"a\":1}\nhalf a line\nend\n\x1e{\"b\":2}\n"
        );
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
