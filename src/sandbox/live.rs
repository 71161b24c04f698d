//! An attempt's log followed while its worker runs elsewhere (a container, a pod): what the engine or the
//! cluster streams is appended to the attempt's log, up to a cap, so status, the dashboard and MCP show it live.

use std::path::Path;

use futures_util::StreamExt;

/// What starts a piece of a line of an agent's event stream in the runner's echo, then `+` (more of the line
/// follows) or `.`: the ASCII record separator, by which the log's lines and the stream's are told apart.
pub const EVENT_MARK: u8 = 0x1e;
/// What starts a piece of a log line that goes on in the next one (the echo sends lines in pieces).
pub const MORE_MARK: u8 = 0x1f;
/// What starts a log line that itself starts with a mark; a log line's last (or only) piece has no mark.
pub const LITERAL_MARK: u8 = 0x1c;

/// Where what a worker elsewhere prints goes while it runs.
#[derive(Debug, Clone, Copy)]
pub struct Live<'a> {
    /// The attempt's log.
    pub log: &'a Path,
    /// An agent's event stream, when the runner sends one along (its lines marked with [`EVENT_MARK`]).
    pub events: Option<&'a Path>,
    /// The most bytes written to each (the attempt's log limit).
    pub cap: u64,
}

/// An attempt's log followed while its worker runs elsewhere: appended to, up to a number of bytes each; with an
/// event stream, split line by line between the two.
pub struct LiveLog {
    log: Capped,
    events: Option<Capped>,
    /// A line whose end has not come yet.
    pending: Vec<u8>,
    /// The pieces of a long log line, and of an event, so far.
    carry: (Vec<u8>, Vec<u8>),
}

/// A file appended to, up to a number of bytes.
struct Capped {
    file: std::fs::File,
    written: u64,
    cap: u64,
}

impl Capped {
    fn open(path: &Path, cap: u64) -> Option<Capped> {
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            Ok(file) => Some(Capped {
                file,
                written: 0,
                cap,
            }),
            Err(error) => {
                tracing::warn!("cannot write {}: {error}", path.display());
                None
            }
        }
    }

    /// Appends what fits under the cap.
    fn push(&mut self, bytes: &[u8]) {
        use std::io::Write;
        let room = usize::try_from(self.cap.saturating_sub(self.written)).unwrap_or(usize::MAX);
        let keep = room.min(bytes.len());
        if keep > 0 && self.file.write_all(&bytes[..keep]).is_err() {
            self.written = self.cap;
            return;
        }
        self.written += keep as u64;
    }

    /// Whether more can be written.
    fn room(&self) -> bool {
        self.written < self.cap
    }
}

/// The longest line put together again from the runner's pieces (its echo holds lines of up to a MiB whole).
const MAX_PENDING: usize = 4 << 20;

impl Drop for LiveLog {
    /// What is left when the stream ends: a line it did not end, and the pieces of one whose last did not come.
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            self.push(b"\n");
        }
        let (log, events) = (
            std::mem::take(&mut self.carry.0),
            std::mem::take(&mut self.carry.1),
        );
        for (mut carry, file) in [(log, Some(&mut self.log)), (events, self.events.as_mut())] {
            if let Some(file) = file
                && !carry.is_empty()
            {
                carry.push(b'\n');
                file.push(&carry);
            }
        }
    }
}

impl LiveLog {
    /// The files of `live` opened for appending (`None`, with a warning, when one cannot be).
    pub fn open(live: Live<'_>) -> Option<LiveLog> {
        let events = match live.events {
            Some(events) => Some(Capped::open(events, live.cap)?),
            None => None,
        };
        Some(LiveLog {
            log: Capped::open(live.log, live.cap)?,
            events,
            pending: Vec::new(),
            carry: (Vec::new(), Vec::new()),
        })
    }

    /// Appends what fits under the caps; `false` once nothing more can be written.
    pub fn push(&mut self, bytes: &[u8]) -> bool {
        self.pending.extend_from_slice(bytes);
        let end = match self.pending.iter().rposition(|byte| *byte == b'\n') {
            Some(at) => at + 1,
            None if self.pending.len() > MAX_PENDING => self.pending.len(),
            None => return true,
        };
        let whole: Vec<u8> = self.pending.drain(..end).collect();
        for line in whole.split_inclusive(|byte| *byte == b'\n') {
            let line = line.strip_suffix(b"\n").unwrap_or(line);
            let (event, more, piece) = unframe(line);
            let (carry, file) = if event {
                (&mut self.carry.1, self.events.as_mut())
            } else {
                (&mut self.carry.0, Some(&mut self.log))
            };
            carry.extend_from_slice(piece);
            if more && carry.len() < MAX_PENDING {
                continue;
            }
            carry.push(b'\n');
            if let Some(file) = file {
                file.push(carry);
            }
            carry.clear();
        }
        // Followed on while either has room.
        self.log.room() || self.events.as_ref().is_some_and(Capped::room)
    }
}

/// A piece of a line of the runner's echo: whether it is the event stream's, whether more of the line follows,
/// and the piece (the marks above).
fn unframe(line: &[u8]) -> (bool, bool, &[u8]) {
    match line {
        [EVENT_MARK, b'+', piece @ ..] => (true, true, piece),
        [EVENT_MARK, b'.', piece @ ..] => (true, false, piece),
        [MORE_MARK, piece @ ..] => (false, true, piece),
        [LITERAL_MARK, piece @ ..] => (false, false, piece),
        piece => (false, false, piece),
    }
}

/// Appends what the container prints to its live log until it ends.
pub(super) async fn follow_container(docker: bollard::Docker, id: String, live: Option<LiveLog>) {
    let Some(mut live) = live else {
        return;
    };
    let options = bollard::query_parameters::LogsOptions {
        follow: true,
        stdout: true,
        stderr: true,
        ..Default::default()
    };
    let mut stream = docker.logs(&id, Some(options));
    while let Some(Ok(chunk)) = stream.next().await {
        if !live.push(&chunk.into_bytes()) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_stream_with_events_is_split_line_by_line() {
        let dir = tempfile::tempdir().unwrap();
        let (log, events) = (dir.path().join("log"), dir.path().join("events"));
        let mut live = LiveLog::open(Live {
            log: &log,
            events: Some(&events),
            cap: 1024,
        })
        .unwrap();
        assert!(live.push(b"plain\n\x1e.{\"a\""));
        assert!(live.push(b":1}\nmore\n"));
        // A long line in pieces, an event in pieces, and a log line that starts with a mark.
        assert!(live.push(b"\x1flo\nng\n\x1e+{\n\x1e.}\n\x1c\x1eliteral\n"));
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "plain\nmore\nlong\n\x1eliteral\n"
        );
        assert_eq!(std::fs::read_to_string(&events).unwrap(), "{\"a\":1}\n{}\n");
        // Capped: what fits is written, and then nothing more is followed.
        let small = dir.path().join("small");
        let mut live = LiveLog::open(Live {
            log: &small,
            events: None,
            cap: 4,
        })
        .unwrap();
        assert!(live.push(b"ab\n"));
        assert!(!live.push(b"cdef\n"), "the cap is reached");
        assert_eq!(std::fs::read_to_string(&small).unwrap(), "ab\nc");
    }
}
