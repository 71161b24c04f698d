//! An attempt's log followed while its worker runs elsewhere (a container, a pod): what the engine or the
//! cluster streams is appended to the attempt's log, up to a cap, so status, the dashboard and MCP show it live.

use std::path::Path;

use futures_util::StreamExt;

/// Where what a worker elsewhere prints goes while it runs.
#[derive(Debug, Clone, Copy)]
pub struct Live<'a> {
    /// The attempt's log.
    pub log: &'a Path,
    /// An agent's event stream, when the runner sends one along (its lines marked with
    /// [`crate::pipeline::pod::EVENT_MARK`]).
    pub events: Option<&'a Path>,
}

/// An attempt's log followed while its worker runs elsewhere: appended to, up to a number of bytes each; with an
/// event stream, split line by line between the two.
pub struct LiveLog {
    log: Capped,
    events: Option<Capped>,
    /// A line whose end has not come yet (only when splitting).
    pending: Vec<u8>,
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

    /// Appends what fits under the cap; `false` once nothing more can be written.
    fn push(&mut self, bytes: &[u8]) -> bool {
        use std::io::Write;
        let room = usize::try_from(self.cap.saturating_sub(self.written)).unwrap_or(usize::MAX);
        let keep = room.min(bytes.len());
        if keep > 0 && self.file.write_all(&bytes[..keep]).is_err() {
            return false;
        }
        self.written += keep as u64;
        self.written < self.cap
    }
}

/// The longest line held back waiting for its end when splitting (the runner sends shorter ones).
const MAX_PENDING: usize = 256 * 1024;

impl LiveLog {
    /// The files of `live` opened for appending (`None`, with a warning, when the log cannot be).
    pub fn open(live: Live<'_>, cap: u64) -> Option<LiveLog> {
        Some(LiveLog {
            log: Capped::open(live.log, cap)?,
            events: live.events.and_then(|events| Capped::open(events, cap)),
            pending: Vec::new(),
        })
    }

    /// Appends what fits under the caps; `false` once nothing more can be written.
    pub fn push(&mut self, bytes: &[u8]) -> bool {
        let Some(events) = self.events.as_mut() else {
            return self.log.push(bytes);
        };
        self.pending.extend_from_slice(bytes);
        let end = match self.pending.iter().rposition(|byte| *byte == b'\n') {
            Some(at) => at + 1,
            None if self.pending.len() > MAX_PENDING => self.pending.len(),
            None => return true,
        };
        let whole: Vec<u8> = self.pending.drain(..end).collect();
        let mut room = true;
        for line in whole.split_inclusive(|byte| *byte == b'\n') {
            room &= match line.split_first() {
                Some((&crate::pipeline::pod::EVENT_MARK, event)) => events.push(event),
                _ => self.log.push(line),
            };
        }
        room
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
        let mut live = LiveLog::open(
            Live {
                log: &log,
                events: Some(&events),
            },
            1024,
        )
        .unwrap();
        assert!(live.push(b"plain\n\x1e{\"a\""));
        assert!(live.push(b":1}\nmore\n"));
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "plain\nmore\n");
        assert_eq!(std::fs::read_to_string(&events).unwrap(), "{\"a\":1}\n");
        // Without a stream, bytes go to the log as they come.
        let raw = dir.path().join("raw");
        let mut live = LiveLog::open(
            Live {
                log: &raw,
                events: None,
            },
            4,
        )
        .unwrap();
        assert!(live.push(b"ab"));
        assert!(!live.push(b"cdef"), "the cap is reached");
        assert_eq!(std::fs::read_to_string(&raw).unwrap(), "abcd");
    }
}
