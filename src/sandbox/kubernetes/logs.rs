//! A running pod's log followed into the attempt's live log, across dropped streams: a cluster's log stream ends
//! when a proxy or the API server lets it go, long before the runner does. Each line comes with its timestamp,
//! so a new stream asks for the log since the last second seen and skips the lines already passed on (those
//! before the last timestamp, and as many at it as were seen).

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams};

use super::spec::RUNNER;
use crate::sandbox::live::LiveLog;

/// How long a dropped log stream waits before it is asked for again.
const AGAIN: Duration = Duration::from_secs(1);

/// Where in a log the lines passed on so far end.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Position {
    /// The last timestamp passed on.
    last: Option<jiff::Timestamp>,
    /// Lines with exactly that timestamp passed on.
    at_last: usize,
    /// Lines at `last` still to skip in the stream now read (those passed on from an earlier one).
    skip: usize,
}

impl Position {
    /// The `sinceTime` a new stream starts from: the last timestamp's second (the API takes whole seconds).
    fn since(&self) -> Option<jiff::Timestamp> {
        self.last
            .and_then(|last| jiff::Timestamp::from_second(last.as_second()).ok())
    }

    /// A new stream begins: the lines at the last timestamp come again and are skipped.
    fn again(&mut self) {
        self.skip = self.at_last;
    }

    /// Whether a line stamped `at` is new (and so passed on), noting it.
    fn take(&mut self, at: jiff::Timestamp) -> bool {
        match self.last {
            Some(last) if at < last => false,
            Some(last) if at == last => {
                if self.skip > 0 {
                    self.skip -= 1;
                    return false;
                }
                self.at_last += 1;
                true
            }
            _ => {
                self.last = Some(at);
                self.at_last = 1;
                self.skip = 0;
                true
            }
        }
    }

    /// What of a `timestamps=true` log line is passed on: the line without its stamp, if new (a line without a
    /// stamp as it is).
    fn line<'l>(&mut self, line: &'l [u8]) -> Option<&'l [u8]> {
        let Some(space) = line.iter().position(|byte| *byte == b' ') else {
            return Some(line);
        };
        let stamp = std::str::from_utf8(&line[..space])
            .ok()
            .and_then(|text| text.parse::<jiff::Timestamp>().ok());
        match stamp {
            Some(at) => self.take(at).then_some(&line[space + 1..]),
            None => Some(line),
        }
    }
}

/// Appends the runner's log (the worker's output, echoed as it is written) to the live log until the runner
/// ended, asking again whenever a stream ends before it did (its caller stops it if it hangs).
pub(super) async fn follow(pods: Api<Pod>, pod: String, live: Option<LiveLog>) {
    let Some(mut live) = live else {
        return;
    };
    let mut position = Position::default();
    loop {
        let params = LogParams {
            container: Some(RUNNER.to_string()),
            follow: true,
            timestamps: true,
            since_time: position.since(),
            ..Default::default()
        };
        if let Ok(stream) = pods.log_stream(&pod, &params).await
            && !pass_on(stream, &mut position, &mut live).await
        {
            return;
        }
        if runner_ended(&pods, &pod).await {
            return;
        }
        position.again();
        tokio::time::sleep(AGAIN).await;
    }
}

/// Whether the pod's runner has ended (so its log has, too); `false` when the API does not say.
async fn runner_ended(pods: &Api<Pod>, pod: &str) -> bool {
    let Ok(Ok(found)) = tokio::time::timeout(AGAIN * 10, pods.get(pod)).await else {
        return false;
    };
    found
        .status
        .and_then(|status| status.container_statuses)
        .unwrap_or_default()
        .iter()
        .any(|container| {
            container.name == RUNNER
                && container
                    .state
                    .as_ref()
                    .is_some_and(|state| state.terminated.is_some())
        })
}

/// The longest line waited for (the runner's pieces, with the cluster's timestamp, are far shorter).
const MAX_LINE: usize = 64 * 1024;

/// Passes one stream's new lines on, until it ends; `false` once the live log is full.
async fn pass_on(
    stream: impl futures_util::AsyncBufRead,
    position: &mut Position,
    live: &mut LiveLog,
) -> bool {
    let mut stream = std::pin::pin!(stream);
    let mut chunk = vec![0u8; 16 * 1024];
    let mut partial: Vec<u8> = Vec::new();
    loop {
        let read = futures_util::AsyncReadExt::read(&mut stream, &mut chunk)
            .await
            .unwrap_or(0);
        partial.extend_from_slice(&chunk[..read]);
        // Whole lines only: the runner ends every line it echoes, so a stream that ends within one was cut, and
        // the line comes whole from the next (it is not marked seen). One past any the runner sends goes as is.
        let end = match partial.iter().rposition(|byte| *byte == b'\n') {
            Some(at) => at + 1,
            None if partial.len() > MAX_LINE => partial.len(),
            None if read == 0 => return true,
            None => continue,
        };
        let whole: Vec<u8> = partial.drain(..end).collect();
        for line in whole.split_inclusive(|byte| *byte == b'\n') {
            if let Some(new) = position.line(line)
                && !live.push(new)
            {
                return false;
            }
        }
        if read == 0 {
            return true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passed(position: &mut Position, lines: &[&str]) -> Vec<String> {
        lines
            .iter()
            .filter_map(|line| position.line(line.as_bytes()))
            .map(|line| String::from_utf8_lossy(line).into_owned())
            .collect()
    }

    #[tokio::test]
    async fn a_line_a_dropped_stream_cut_comes_whole_from_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("worker.log");
        let mut live = LiveLog::open(crate::sandbox::live::Live {
            log: &log,
            events: None,
            cap: 1 << 20,
        })
        .unwrap();
        let mut position = Position::default();
        let cut = futures_util::io::Cursor::new(
            b"2026-12-03T15:13:45.9Z a\n2026-12-03T15:13:46.5Z the line is c".to_vec(),
        );
        assert!(pass_on(cut, &mut position, &mut live).await);
        position.again();
        let next = futures_util::io::Cursor::new(
            b"2026-12-03T15:13:45.9Z a\n2026-12-03T15:13:46.5Z the line is cut here\n".to_vec(),
        );
        assert!(pass_on(next, &mut position, &mut live).await);
        drop(live);
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "a\nthe line is cut here\n"
        );
    }

    #[test]
    fn a_new_stream_passes_on_only_the_lines_not_seen() {
        let mut position = Position::default();
        let first = [
            "2026-12-03T15:13:45.9Z zero\n",
            "2026-12-03T15:13:46.604678971Z a\n",
            "2026-12-03T15:13:46.604678971Z b\n",
        ];
        assert_eq!(passed(&mut position, &first), ["zero\n", "a\n", "b\n"]);
        assert_eq!(
            position.since().unwrap().to_string(),
            "2026-12-03T15:13:46Z",
            "asked again from the last second"
        );
        // The stream dropped; the next one starts at that second and brings a third line at the same instant.
        position.again();
        let second = [
            "2026-12-03T15:13:46.1Z before\n",
            "2026-12-03T15:13:46.604678971Z a\n",
            "2026-12-03T15:13:46.604678971Z b\n",
            "2026-12-03T15:13:46.604678971Z b2\n",
            "2026-12-03T15:13:47.5Z c\n",
        ];
        assert_eq!(passed(&mut position, &second), ["b2\n", "c\n"]);
        // A line without a stamp is passed on as it is.
        assert_eq!(passed(&mut position, &["no stamp"]), ["no stamp"]);
    }
}
