//! The fake's exec: `podman exec` in the pod's container, spoken over the API's websocket channel protocol.

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Shared, param, podman_conf, query_pairs};

/// Exec over the API's channel protocol (v5, or v4 without the close signal): 0 stdin, 1 stdout, 2 stderr,
/// 3 the status, 255 a stream closed.
pub(super) async fn exec(
    State(shared): State<Arc<Shared>>,
    UrlPath((_, name)): UrlPath<(String, String)>,
    RawQuery(query): RawQuery,
    upgrade: WebSocketUpgrade,
) -> Response {
    let pairs = query_pairs(&query);
    let command: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.clone())
        .collect();
    let container = param(&query, "container").unwrap_or_default();
    let stdin = param(&query, "stdin").as_deref() == Some("true");
    upgrade
        .protocols(["v5.channel.k8s.io", "v4.channel.k8s.io"])
        .on_upgrade(move |socket| {
            run_exec(
                shared,
                socket,
                format!("{name}-{container}"),
                command,
                stdin,
            )
        })
}

async fn run_exec(
    shared: Arc<Shared>,
    socket: WebSocket,
    container: String,
    command: Vec<String>,
    stdin: bool,
) {
    let mut podman = tokio::process::Command::new(&shared.podman);
    if let Some(conf) = podman_conf() {
        podman.env("CONTAINERS_CONF", conf);
    }
    podman.arg("exec");
    if stdin {
        podman.arg("-i");
    }
    let mut child = podman
        .arg(&container)
        .args(&command)
        .stdin(if stdin {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (mut sink, mut source) = socket.split();
    let (send, mut outgoing) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    let writer = tokio::spawn(async move {
        while let Some(frame) = outgoing.recv().await {
            if sink.send(Message::Binary(frame.into())).await.is_err() {
                return;
            }
        }
        let _ = sink.send(Message::Close(None)).await;
    });
    let mut child_stdin = child.stdin.take();
    let reader = tokio::spawn(async move {
        while let Some(Ok(message)) = source.next().await {
            let Message::Binary(bytes) = message else {
                continue;
            };
            match bytes.first() {
                Some(0) => {
                    if let Some(to) = child_stdin.as_mut()
                        && to.write_all(&bytes[1..]).await.is_err()
                    {
                        child_stdin = None;
                    }
                }
                Some(255) if bytes.get(1) == Some(&0) => child_stdin = None,
                _ => {}
            }
        }
    });
    let pump = |from: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>, channel: u8| {
        let send = send.clone();
        async move {
            let Some(mut from) = from else { return };
            let mut chunk = vec![0u8; 32 * 1024];
            while let Ok(read) = from.read(&mut chunk).await
                && read > 0
            {
                let mut frame = vec![channel];
                frame.extend_from_slice(&chunk[..read]);
                if send.send(frame).await.is_err() {
                    return;
                }
            }
        }
    };
    let stdout = child
        .stdout
        .take()
        .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>);
    let stderr = child
        .stderr
        .take()
        .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>);
    tokio::join!(pump(stdout, 1), pump(stderr, 2));
    let exit = child.wait().await.unwrap();
    let status = if exit.success() {
        json!({"metadata": {}, "status": "Success"})
    } else {
        let code = exit.code().unwrap_or(-1);
        json!({"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
               "message": format!("command terminated with non-zero exit code: {code}"),
               "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}})
    };
    let mut frame = vec![3u8];
    frame.extend_from_slice(status.to_string().as_bytes());
    let _ = send.send(frame).await;
    drop(send);
    let _ = writer.await;
    reader.abort();
}
