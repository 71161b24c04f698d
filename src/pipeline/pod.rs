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

/// A thread copying what is appended to a log to another stream, until [`Echo::finish`].
pub struct Echo {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Echo {
    /// Starts copying what `log` gets (once it exists) to `to`.
    pub fn start(log: PathBuf, mut to: Box<dyn Write + Send>) -> Echo {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut file = None;
            let mut at = 0u64;
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                // The last pass after the stop reads what was written before it.
                let last = stopping.load(Ordering::SeqCst);
                if file.is_none() {
                    file = std::fs::File::open(&log).ok();
                }
                if let Some(file) = file.as_mut() {
                    while let Ok(read) = file
                        .seek(std::io::SeekFrom::Start(at))
                        .and_then(|_| file.read(&mut chunk))
                        && read > 0
                    {
                        at += read as u64;
                        if to
                            .write_all(&chunk[..read])
                            .and_then(|()| to.flush())
                            .is_err()
                        {
                            return;
                        }
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
