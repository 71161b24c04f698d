//! The stdio transport's front door: every line a client sends is read with a size cap and checked for JSON before
//! rmcp sees it. rmcp (like the other SDKs) drops a line that is not JSON without a word; JSON-RPC says such a line
//! gets a `-32700` parse error with a null id, so a client that sent a broken message learns so instead of waiting
//! for an answer that never comes. Well-formed lines pass to rmcp unchanged; its replies and ours share stdout
//! under one lock, a whole line at a time.

use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::Mutex;

/// The largest message a client may send over stdio; a longer line is answered with a parse error and skipped.
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;

/// What reading one line gave.
enum Line {
    /// A whole line (without its newline).
    Whole(Vec<u8>),
    /// A line over the cap, skipped to its newline.
    Oversized,
    /// End of input.
    Eof,
}

/// Reads one line of at most `cap` bytes, discarding the rest of a longer one (memory stays bounded).
async fn read_line<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    cap: usize,
) -> std::io::Result<Line> {
    let mut line = Vec::new();
    let mut oversized = false;
    loop {
        let buffer = reader.fill_buf().await?;
        if buffer.is_empty() {
            // A last line without its newline is still answered (or passed on); the next call sees the end.
            return Ok(match (oversized, line.is_empty()) {
                (true, _) => Line::Oversized,
                (false, true) => Line::Eof,
                (false, false) => Line::Whole(line),
            });
        }
        let (taken, done) = match memchr::memchr(b'\n', buffer) {
            Some(at) => (at + 1, true),
            None => (buffer.len(), false),
        };
        let content = &buffer[..if done { taken - 1 } else { taken }];
        if !oversized {
            if line.len() + content.len() > cap {
                oversized = true;
                line = Vec::new();
            } else {
                line.extend_from_slice(content);
            }
        }
        reader.consume(taken);
        if done {
            return Ok(if oversized {
                Line::Oversized
            } else {
                Line::Whole(line)
            });
        }
    }
}

/// The JSON-RPC parse error (id null) for a line that is not JSON.
fn parse_error(detail: &str) -> Vec<u8> {
    let mut reply = serde_json::to_vec(&serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": {"code": -32700, "message": format!("Parse error: {detail}")},
    }))
    .unwrap_or_default();
    reply.push(b'\n');
    reply
}

/// Why `line` is not a JSON message, if it is not.
fn not_json(line: &[u8]) -> Option<String> {
    // serde_json refuses nesting past 128 levels and numbers out of range, so neither a deep nest nor `1e400`
    // gets further than this.
    serde_json::from_slice::<serde_json::Value>(line)
        .err()
        .map(|error| error.to_string())
}

/// Copies client lines from `input` to `to_rmcp`, answering those that are not JSON (or are too long) on `output`
/// itself. Ends at the end of `input`, closing `to_rmcp` so rmcp sees the end too.
pub async fn filter_input<R, W, O>(
    input: R,
    mut to_rmcp: W,
    output: Arc<Mutex<O>>,
    cap: usize,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    O: AsyncWrite + Unpin,
{
    let mut reader = BufReader::new(input);
    loop {
        let reply = match read_line(&mut reader, cap).await? {
            Line::Eof => break,
            Line::Oversized => parse_error(&format!("message longer than {cap} bytes")),
            Line::Whole(line) => {
                let trimmed = line.strip_suffix(b"\r").unwrap_or(&line);
                // A byte-order mark some clients put first is not part of the message (rmcp drops it too).
                let trimmed = trimmed.strip_prefix(b"\xef\xbb\xbf").unwrap_or(trimmed);
                if trimmed.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match not_json(trimmed) {
                    None => {
                        to_rmcp.write_all(trimmed).await?;
                        to_rmcp.write_all(b"\n").await?;
                        to_rmcp.flush().await?;
                        continue;
                    }
                    Some(why) => parse_error(&why),
                }
            }
        };
        tracing::debug!("answered an unparsable MCP message with a parse error");
        let mut out = output.lock().await;
        out.write_all(&reply).await?;
        out.flush().await?;
    }
    to_rmcp.shutdown().await
}

/// Copies rmcp's replies from `from_rmcp` to `output`, one whole line under the lock at a time.
pub async fn forward_output<R, O>(from_rmcp: R, output: Arc<Mutex<O>>) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    O: AsyncWrite + Unpin,
{
    let mut reader = BufReader::new(from_rmcp);
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        let mut out = output.lock().await;
        out.write_all(&line).await?;
        out.flush().await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn answers(input: &[u8]) -> (String, String) {
        let output = Arc::new(Mutex::new(Vec::new()));
        let (to_rmcp, mut rmcp_side) = tokio::io::duplex(1 << 20);
        filter_input(input, to_rmcp, output.clone(), 1024)
            .await
            .unwrap();
        let mut passed = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut rmcp_side, &mut passed)
            .await
            .unwrap();
        let replies = String::from_utf8(output.lock().await.clone()).unwrap();
        (replies, String::from_utf8(passed).unwrap())
    }

    #[tokio::test]
    async fn broken_lines_get_a_parse_error_and_good_ones_pass() {
        let deep = "[".repeat(200_000);
        let long = format!("{{\"x\": \"{}\"}}", "a".repeat(2000));
        let input = [
            b"not json".as_slice(),
            b"{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": \"ping\"",
            b"\xff\xfe{}",
            b"{\"a\": \"\0\"}",
            b"{\"jsonrpc\": \"2.0\", \"id\": 1e400, \"method\": \"ping\"}",
            deep.as_bytes(),
            long.as_bytes(),
            b"",
            b"{\"jsonrpc\": \"2.0\", \"id\": 2, \"method\": \"ping\"}\r",
            b"\xef\xbb\xbf{\"jsonrpc\": \"2.0\", \"id\": 3, \"method\": \"ping\"}",
            b"{\"truncated at the end",
        ]
        .join(&b'\n');
        let (replies, passed) = answers(&input).await;
        let replies: Vec<serde_json::Value> = replies
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(replies.len(), 8, "{replies:?}");
        for reply in &replies {
            assert_eq!(reply["error"]["code"], -32700, "{reply}");
            assert!(reply["id"].is_null(), "{reply}");
        }
        assert!(
            replies[6]["error"]["message"]
                .as_str()
                .unwrap()
                .contains("longer than 1024 bytes")
        );
        assert_eq!(
            passed,
            "{\"jsonrpc\": \"2.0\", \"id\": 2, \"method\": \"ping\"}\n\
             {\"jsonrpc\": \"2.0\", \"id\": 3, \"method\": \"ping\"}\n"
        );
    }
}
