//! An attempt's log followed while its worker runs elsewhere (a container, a pod): what the engine or the
//! cluster streams is appended to the attempt's log, up to a cap, so status, the dashboard and MCP show it live.

use std::path::Path;

use futures_util::StreamExt;

/// An attempt's log followed while its worker runs elsewhere: appended to, up to a number of bytes.
pub struct LiveLog {
    file: std::fs::File,
    written: u64,
    cap: u64,
}

impl LiveLog {
    /// `path` opened for appending (`None`, with a warning, when it cannot be).
    pub fn open(path: &Path, cap: u64) -> Option<LiveLog> {
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            Ok(file) => Some(LiveLog {
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
    pub fn push(&mut self, bytes: &[u8]) -> bool {
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
