//! The attempt's files over the API: its input sent into the pod and its output taken back through exec in the
//! keeper container (`ccfan runner --take-input` / `--give-output`, tars on stdin and stdout, streamed from and to
//! files, never held in memory), the runner's log followed live, and the end of it kept. What the pod prints is
//! not trusted: only a cleaned last line of it reaches an error.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams, LogParams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::spec::{self, KEEPER, ROOT, RUNNER};
use super::watch::last_line;
use super::{Cluster, KubeError, call};

/// The most bytes of output taken back.
const MAX_OUT: u64 = 1 << 30;
/// How much of what an exec printed on stderr is kept for its error.
const STDERR_TAIL: usize = 4096;

/// One exec in the keeper.
struct Exec<'a> {
    cluster: &'a Cluster,
    pod: &'a str,
    what: &'static str,
    cancel: &'a AtomicBool,
}

impl Exec<'_> {
    /// Runs `argv` with the file `stdin` on its stdin and its stdout into the file `stdout`, checks its status.
    async fn run(
        &self,
        argv: &[&str],
        stdin: Option<&Path>,
        stdout: Option<&Path>,
    ) -> Result<(), KubeError> {
        let pods: Api<Pod> = Api::namespaced(self.cluster.client.clone(), &self.cluster.namespace);
        let params = AttachParams::default()
            .container(KEEPER)
            .stdin(stdin.is_some())
            .stdout(stdout.is_some())
            .stderr(true);
        let argv: Vec<String> = argv.iter().map(|arg| arg.to_string()).collect();
        let mut attached =
            call(self.cluster, self.what, pods.exec(self.pod, argv, &params)).await?;
        let status = attached.take_status();
        let (mut err, mut out, input) = (attached.stderr(), attached.stdout(), attached.stdin());
        let send = async {
            if let (Some(path), Some(mut to)) = (stdin, input) {
                let mut file = tokio::fs::File::open(path).await?;
                tokio::io::copy(&mut file, &mut to).await?;
                to.shutdown().await?;
            }
            Ok::<(), std::io::Error>(())
        };
        let receive = async {
            match (stdout, out.as_mut()) {
                (Some(path), Some(from)) => spool(from, path).await.map(|_| ()),
                _ => Ok(()),
            }
        };
        let complain = async {
            let mut tail = Vec::new();
            if let Some(from) = err.as_mut() {
                let mut chunk = [0u8; 4096];
                // Read to its end (a full pipe would stall the exec); only the tail is kept.
                while let Ok(read) = from.read(&mut chunk).await
                    && read > 0
                {
                    tail.extend_from_slice(&chunk[..read]);
                    let excess = tail.len().saturating_sub(STDERR_TAIL);
                    tail.drain(..excess);
                }
            }
            tail
        };
        let io = |source| KubeError::Io {
            context: format!("cannot {}", self.what),
            source,
        };
        // The copies and stderr run together; a copy that fails ends the exec at once (stderr may never end then).
        let copies = async {
            let mut copying = std::pin::pin!(async { tokio::try_join!(send, receive) });
            let mut complain = std::pin::pin!(complain);
            let (mut copied, mut complaint) = (None, None);
            while copied.is_none() || complaint.is_none() {
                tokio::select! {
                    done = &mut copying, if copied.is_none() => {
                        done.map_err(io)?;
                        copied = Some(());
                    }
                    tail = &mut complain, if complaint.is_none() => complaint = Some(tail),
                }
            }
            Ok::<Vec<u8>, KubeError>(complaint.unwrap_or_default())
        };
        let limit = Duration::from_secs(spec::COPY_SECS);
        let complaint = tokio::select! {
            copied = tokio::time::timeout(limit, copies) => copied.map_err(|_| self.failed(
                format!("not done within {} s", spec::COPY_SECS),
            ))??,
            () = cancelled(self.cancel) => return Err(KubeError::Cancelled),
        };
        let status = match status {
            Some(status) => status.await,
            None => None,
        };
        let _ = attached.join().await;
        match status {
            Some(status) if status.status.as_deref() == Some("Success") => Ok(()),
            other => Err(self.failed(format!(
                "{} {}",
                last_line(
                    &other
                        .and_then(|status| status.message)
                        .unwrap_or_else(|| "no status".into())
                ),
                last_line(&String::from_utf8_lossy(&complaint))
            ))),
        }
    }

    fn failed(&self, message: String) -> KubeError {
        KubeError::Api {
            namespace: self.cluster.namespace.clone(),
            what: self.what,
            message,
        }
    }
}

/// Resolves once `cancel` is set.
pub(super) async fn cancelled(cancel: &AtomicBool) {
    while !cancel.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Copies a stream to a new file, at most [`MAX_OUT`] bytes (more is an error, never a silent cut).
async fn spool(mut from: impl tokio::io::AsyncRead + Unpin, path: &Path) -> std::io::Result<u64> {
    let mut file = tokio::fs::File::create(path).await?;
    let copied = tokio::io::copy(&mut (&mut from).take(MAX_OUT + 1), &mut file).await?;
    if copied > MAX_OUT {
        return Err(std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!("the pod's output is over {MAX_OUT} bytes"),
        ));
    }
    file.flush().await?;
    Ok(copied)
}

/// Sends the attempt's input (packed to a file beside it) into the pod.
pub(super) async fn put_input(
    cluster: &Cluster,
    pod: &str,
    input: &Path,
    cancel: &AtomicBool,
) -> Result<(), KubeError> {
    let packed = input.with_extension("tar");
    crate::sandbox::archive::pack_input_to(input, &packed).map_err(|source| KubeError::Io {
        context: format!("cannot pack {}", input.display()),
        source,
    })?;
    let into = format!("{ROOT}/in");
    let exec = Exec {
        cluster,
        pod,
        what: "copy the attempt's input in",
        cancel,
    };
    let sent = exec
        .run(
            &["ccfan", "runner", "--take-input", into.as_str()],
            Some(&packed),
            None,
        )
        .await;
    let _ = std::fs::remove_file(&packed);
    sent
}

/// Takes the runner's output back into `output`, through the same checks as a container's.
pub(super) async fn take_output(
    cluster: &Cluster,
    pod: &str,
    output: &Path,
    cancel: &AtomicBool,
) -> Result<(), KubeError> {
    let spooled = output.with_extension("tar");
    let from = format!("{ROOT}/out");
    let exec = Exec {
        cluster,
        pod,
        what: "copy the attempt's output out",
        cancel,
    };
    let taken = exec
        .run(
            &["ccfan", "runner", "--give-output", from.as_str()],
            None,
            Some(&spooled),
        )
        .await;
    let unpacked = taken.and_then(|()| {
        let file = std::fs::File::open(&spooled).map_err(|source| KubeError::Io {
            context: format!("cannot read {}", spooled.display()),
            source,
        })?;
        crate::sandbox::archive::unpack_output(file, output).map_err(|source| KubeError::Io {
            context: "cannot take the pod's output".to_string(),
            source,
        })
    });
    let _ = std::fs::remove_file(&spooled);
    unpacked
}

/// The runner's own messages at the end of its log (its `error:` lines: the rest is the worker's output, which
/// comes back as a file), kept beside the attempt for what a failed runner said.
pub(super) async fn save_runner_log(cluster: &Cluster, pod: &str, to: &Path) {
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let params = LogParams {
        container: Some(RUNNER.to_string()),
        tail_lines: Some(40),
        limit_bytes: Some(64 * 1024),
        ..Default::default()
    };
    let Ok(text) = call(cluster, "read the runner's log", pods.logs(pod, &params)).await else {
        return;
    };
    let said: Vec<&str> = text
        .lines()
        .filter(|line| line.starts_with("error"))
        .collect();
    if let Err(error) = std::fs::write(to, said.join("\n")) {
        tracing::warn!("cannot write {}: {error}", to.display());
    }
}
