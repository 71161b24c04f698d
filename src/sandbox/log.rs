//! A worker's output log with a size cap: the pipe is always drained (so a chatty worker never blocks), bytes past
//! the cap are counted and dropped, and the log ends with a note saying so.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// The longest line handed on from an event stream (the rest of it is dropped).
pub const MAX_LINE: usize = 16 << 20;

/// The log file being written.
pub struct CappedLog {
    file: File,
    limit: u64,
}

/// The thread draining the pipe into the log.
pub struct Pump {
    done: mpsc::Receiver<(u64, bool)>,
    total: Arc<AtomicU64>,
}

impl CappedLog {
    /// Creates (truncates) the log file.
    pub fn create(path: &Path, limit: u64) -> std::io::Result<CappedLog> {
        Ok(CappedLog {
            file: File::create(path)?,
            limit,
        })
    }

    /// Closes the log without output.
    pub fn finish(self) -> std::io::Result<()> {
        self.file.sync_all()
    }

    /// Starts draining `reader` into the log on a thread of its own.
    pub fn pump(self, reader: std::io::PipeReader) -> Pump {
        self.pump_lines(reader, None)
    }

    /// [`CappedLog::pump`], also sending every line (the last one even without its newline; a line longer than
    /// [`MAX_LINE`] is cut there) to `lines`, whatever the cap kept of it in the file.
    pub fn pump_lines(
        self,
        mut reader: std::io::PipeReader,
        lines: Option<mpsc::SyncSender<String>>,
    ) -> Pump {
        let (sender, done) = mpsc::channel();
        let CappedLog { mut file, limit } = self;
        let seen = Arc::new(AtomicU64::new(0));
        let shared = Arc::clone(&seen);
        std::thread::spawn(move || {
            let mut total: u64 = 0;
            let mut buffer = vec![0u8; 64 * 1024];
            let mut line: Vec<u8> = Vec::new();
            let send = |line: &mut Vec<u8>| {
                if let Some(lines) = &lines {
                    let _ = lines.send(String::from_utf8_lossy(line).into_owned());
                }
                line.clear();
            };
            loop {
                let read = match reader.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(read) => read,
                    Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                let room = limit.saturating_sub(total);
                let keep = usize::try_from(room).unwrap_or(usize::MAX).min(read);
                if keep > 0 && file.write_all(&buffer[..keep]).is_err() {
                    break;
                }
                total += read as u64;
                shared.store(total, Ordering::Relaxed);
                if lines.is_some() {
                    for &byte in &buffer[..read] {
                        if byte == b'\n' {
                            send(&mut line);
                        } else if line.len() < MAX_LINE {
                            line.push(byte);
                        }
                    }
                }
            }
            if !line.is_empty() {
                send(&mut line);
            }
            let capped = total > limit;
            if capped {
                let _ = write!(
                    file,
                    "\n[ccfan: output capped at {limit} bytes; {} more bytes were dropped]\n",
                    total - limit
                );
            }
            let _ = file.flush();
            let _ = sender.send((total, capped));
        });
        Pump { done, total: seen }
    }
}

impl Pump {
    /// Bytes read so far.
    pub fn bytes(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// `(bytes written by the worker, capped)` once the pipe closed and everything was written, else `None`.
    pub fn done(&self) -> Option<(u64, bool)> {
        self.done.try_recv().ok()
    }

    /// Waits up to `wait` for the pipe to close; returns `(bytes written by the worker, capped)`.
    pub fn finish(self, wait: Duration) -> (u64, bool) {
        self.done.recv_timeout(wait).unwrap_or((0, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (reader, mut writer) = std::io::pipe().unwrap();
        let pump = CappedLog::create(&path, 10).unwrap().pump(reader);
        writer.write_all(b"0123456789abcdef").unwrap();
        drop(writer);
        assert_eq!(pump.finish(Duration::from_secs(5)), (16, true));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("0123456789\n[ccfan: output capped at 10 bytes; 6 more"),
            "{text}"
        );
    }

    #[test]
    fn lines_reach_the_sender_even_past_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stream");
        let (reader, mut writer) = std::io::pipe().unwrap();
        let (sender, lines) = mpsc::sync_channel(8);
        let pump = CappedLog::create(&path, 8)
            .unwrap()
            .pump_lines(reader, Some(sender));
        writer.write_all(b"{\"a\":1}\n{\"b\":2}\npartial").unwrap();
        drop(writer);
        assert_eq!(pump.finish(Duration::from_secs(5)), (23, true));
        let got: Vec<String> = lines.try_iter().collect();
        assert_eq!(got, ["{\"a\":1}", "{\"b\":2}", "partial"]);
    }
}
