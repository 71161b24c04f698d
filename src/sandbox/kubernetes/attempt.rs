//! One attempt in the cluster, from its place in the namespace's queue to its Job's deletion: the Job created
//! suspended, its Secret and NetworkPolicy made (owned by it, so they go with it), the Job let go, the pod watched
//! until it runs, the input sent in over exec, the runner's log followed into the attempt's log while the runner
//! is watched to its end (killed past the time limit, or when cancelled), the output taken back over exec, and
//! the Job deleted with everything it owns whatever happened.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{
    Api, AttachParams, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams,
    WatchEvent, WatchParams,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::spec::{self, KEEPER, Names, ROOT, RUNNER};
use super::{Cluster, KubeError};
use crate::model::ExitStatus;
use crate::policy::KubernetesSettings;
use crate::sandbox::container::{ContainerOutcome, ContainerRun, LiveLog, block_on};

/// How long one call to the API may take.
const CALL: Duration = Duration::from_secs(120);
/// How often the queue, the time limit and cancellation are looked at.
const TICK: Duration = Duration::from_millis(250);
/// The most bytes of output taken back.
const MAX_OUT: u64 = 1 << 30;
/// The longest one watch of the pod is followed before the pod is listed again.
const WATCH: Duration = Duration::from_secs(30);
/// How long the deletion of an attempt's Job is tried while the API fails.
const CLEAN_UP: Duration = Duration::from_secs(30);
/// How long after its creation a Job first looks at the queue (creation times are whole seconds).
const SAME_SECOND: Duration = Duration::from_millis(1500);
/// A suspended Job older than this belongs to a ccfan that stopped: it holds no place in the queue.
const STALE_QUEUED: Duration = Duration::from_secs(3600);

/// Runs one attempt's Job to its end; see the module's summary.
pub fn run(
    run: &ContainerRun<'_>,
    settings: &KubernetesSettings,
) -> Result<ContainerOutcome, KubeError> {
    block_on(async {
        let cluster = Cluster::connect(settings).await?;
        let token = run
            .labels
            .iter()
            .find(|(key, _)| key == spec::TOKEN)
            .map(|(_, token)| token.as_str())
            .ok_or_else(|| KubeError::Config("the attempt has no process token".to_string()))?;
        let names = Names::of(token);
        let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
        let job = spec::job(run, settings, &names).map_err(unbuildable)?;
        let created = call(
            &cluster,
            "create the Job",
            jobs.create(&PostParams::default(), &job),
        )
        .await?;
        let result = std::panic::AssertUnwindSafe(carry(&cluster, &names, &created, run, settings))
            .catch_unwind()
            .await;
        delete(&cluster, &names.job, settings.link_timeout.max(CLEAN_UP)).await;
        result.unwrap_or_else(|_| {
            Err(KubeError::Io {
                context: "the attempt stopped unexpectedly (its Job was deleted)".to_string(),
                source: std::io::Error::other("panicked"),
            })
        })
    })
}

fn unbuildable(error: serde_json::Error) -> KubeError {
    KubeError::Config(format!("cannot build the attempt's objects: {error}"))
}

/// `work`, with the API's error named `what`, or an error when it does not answer within [`CALL`].
async fn call<T>(
    cluster: &Cluster,
    what: &'static str,
    work: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, KubeError> {
    call_within(cluster, what, CALL, work).await
}

/// [`call`] with a limit of its own (a look that tells whether the link still holds).
async fn call_within<T>(
    cluster: &Cluster,
    what: &'static str,
    limit: Duration,
    work: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, KubeError> {
    match tokio::time::timeout(limit, work).await {
        Ok(done) => done.map_err(cluster.failed(what)),
        Err(_) => Err(KubeError::Api {
            namespace: cluster.namespace.clone(),
            what,
            message: format!("no answer within {} s", limit.as_secs_f32()),
        }),
    }
}

/// Deletes the Job, its pod and what it owns (best effort: its TTL and deadline remove it otherwise).
/// Tried again for `patience` while the API fails (a link that comes back in time still cleans up).
pub(super) async fn delete(cluster: &Cluster, name: &str, patience: Duration) -> bool {
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let since = Instant::now();
    loop {
        let limit = patience.min(CALL);
        match tokio::time::timeout(limit, jobs.delete(name, &DeleteParams::background())).await {
            Ok(Ok(_)) => return true,
            Ok(Err(kube::Error::Api(status))) if status.is_not_found() => return true,
            Ok(Err(error)) if since.elapsed() >= patience => {
                tracing::warn!(
                    "cannot delete Job {name} in {}: {error} (its activeDeadlineSeconds and \
                     ttlSecondsAfterFinished remove it)",
                    cluster.namespace
                );
                return false;
            }
            Err(_) if since.elapsed() >= patience => return false,
            Ok(Err(_)) | Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

fn ended(exit: ExitStatus, since: Instant) -> ContainerOutcome {
    ContainerOutcome {
        exit,
        duration: since.elapsed(),
    }
}

async fn carry(
    cluster: &Cluster,
    names: &Names,
    job: &Job,
    run: &ContainerRun<'_>,
    settings: &KubernetesSettings,
) -> Result<ContainerOutcome, KubeError> {
    let queued = Instant::now();
    if !queue(cluster, job, settings, run).await? {
        return Ok(ended(ExitStatus::Cancelled, queued));
    }
    let owner = spec::owned_by(job);
    if !run.env.is_empty() {
        let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
        let secret = spec::secret(run, names, owner.clone()).map_err(unbuildable)?;
        call(
            cluster,
            "create the Secret",
            secrets.create(&PostParams::default(), &secret),
        )
        .await?;
    }
    let policies: Api<NetworkPolicy> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let policy = spec::network_policy(run, settings, names, owner).map_err(unbuildable)?;
    call(
        cluster,
        "create the NetworkPolicy",
        policies.create(&PostParams::default(), &policy),
    )
    .await?;
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let go = Patch::Merge(serde_json::json!({"spec": {"suspend": false}}));
    call(
        cluster,
        "start the Job",
        jobs.patch(&names.job, &PatchParams::default(), &go),
    )
    .await?;
    let pods = PodWatch::new(cluster, names, settings.link_timeout);
    let pod = match pods.started(run, settings).await? {
        Ok(pod) => pod,
        Err(stopped) => return Ok(ended(stopped, queued)),
    };
    put_input(cluster, &pod, run.input).await?;
    let began = Instant::now();
    let follower = run.live.map(|live| {
        tokio::spawn(follow(
            Api::namespaced(cluster.client.clone(), &cluster.namespace),
            pod.clone(),
            LiveLog::open(live, run.limits.max_output),
        ))
    });
    let exit = pods.runner_end(run, began).await;
    if let Some(follower) = follower {
        // What the log still holds arrives once the runner ended; a follower that hangs is let go.
        if tokio::time::timeout(Duration::from_secs(5), follower)
            .await
            .is_err()
        {
            tracing::debug!("the log of {pod} did not end");
        }
    }
    let exit = exit?;
    save_runner_log(cluster, &pod, run.log).await;
    if let ExitStatus::Code { code: 0 } = exit {
        take_output(cluster, &pod, run.output).await?;
    }
    Ok(ended(exit, began))
}

/// Waits for a place among the namespace's ccfan Jobs: the Job goes once fewer than the cap of unfinished ones
/// were created before it (a queue every ccfan sharing the namespace sees the same way: by creation time, then
/// name). Creation times are whole seconds, so the first look waits for the second of its creation to pass: by
/// then every Job that sorts before it exists. `false`: cancelled.
async fn queue(
    cluster: &Cluster,
    job: &Job,
    settings: &KubernetesSettings,
    run: &ContainerRun<'_>,
) -> Result<bool, KubeError> {
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let ours = (
        job.metadata.creation_timestamp.clone(),
        job.metadata.name.clone(),
    );
    let selector = format!("{}={}", spec::MANAGED_BY.0, spec::MANAGED_BY.1);
    let mut last_ok = Instant::now();
    let mut said = false;
    tokio::time::sleep(SAME_SECOND).await;
    loop {
        if run.cancel.load(Ordering::SeqCst) {
            return Ok(false);
        }
        match call_within(
            cluster,
            "list the Jobs",
            settings.link_timeout.min(CALL),
            jobs.list(&ListParams::default().labels(&selector)),
        )
        .await
        {
            Ok(listed) => {
                last_ok = Instant::now();
                let ahead = listed
                    .items
                    .iter()
                    .filter(|other| holds_a_place(other))
                    .filter(|other| {
                        (
                            other.metadata.creation_timestamp.clone(),
                            other.metadata.name.clone(),
                        ) < ours
                    })
                    .count();
                if ahead < settings.max_jobs as usize {
                    return Ok(true);
                }
                if !said {
                    tracing::info!(
                        "{ahead} of ccfan's Jobs are ahead in {} (max_jobs = {}): waiting",
                        cluster.namespace,
                        settings.max_jobs
                    );
                    said = true;
                }
            }
            Err(error) if last_ok.elapsed() > settings.link_timeout => {
                return Err(KubeError::Lost(error.to_string()));
            }
            Err(error) => tracing::debug!("{error}"),
        }
        tokio::time::sleep(TICK * 4).await;
    }
}

/// Whether a Job counts against the cap: not finished, not being deleted, and not a stale queued one.
fn holds_a_place(job: &Job) -> bool {
    if job.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let status = job.status.clone().unwrap_or_default();
    let finished = status
        .conditions
        .unwrap_or_default()
        .iter()
        .any(|condition| {
            matches!(condition.type_.as_str(), "Complete" | "Failed") && condition.status == "True"
        });
    let suspended = job
        .spec
        .as_ref()
        .and_then(|spec| spec.suspend)
        .unwrap_or(false);
    let stale = suspended
        && job
            .metadata
            .creation_timestamp
            .as_ref()
            .is_some_and(|created| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |since| since.as_secs() as i64);
                now - created.0.as_second() > STALE_QUEUED.as_secs() as i64
            });
    !finished && !stale
}

/// The attempt's pod, watched: listed, then watched from that version until the watch ends, then listed again.
struct PodWatch<'a> {
    cluster: &'a Cluster,
    /// How long the API may fail before the attempt is lost.
    link: Duration,
    pods: Api<Pod>,
    selector: String,
}

/// What a look at the pod decided.
type Decided<T> = Option<Result<T, KubeError>>;

impl<'a> PodWatch<'a> {
    fn new(cluster: &'a Cluster, names: &Names, link: Duration) -> PodWatch<'a> {
        PodWatch {
            cluster,
            link,
            pods: Api::namespaced(cluster.client.clone(), &cluster.namespace),
            selector: format!("{}={}", spec::TOKEN, names.token),
        }
    }

    /// Looks at the pod on every change and every tick until `decide` decides; the API failing for longer than
    /// the link timeout ends it as lost.
    async fn until<T>(
        &self,
        mut decide: impl FnMut(Option<&Pod>) -> Decided<T>,
    ) -> Result<T, KubeError> {
        let mut latest: Option<Pod> = None;
        let mut last_ok = Instant::now();
        loop {
            let listed = call_within(
                self.cluster,
                "list the pod",
                self.link.min(CALL),
                self.pods
                    .list(&ListParams::default().labels(&self.selector)),
            )
            .await;
            let version = match listed {
                Ok(listed) => {
                    last_ok = Instant::now();
                    latest = listed.items.into_iter().next();
                    listed
                        .metadata
                        .resource_version
                        .unwrap_or_else(|| "0".to_string())
                }
                Err(error) => {
                    if last_ok.elapsed() > self.link {
                        return Err(KubeError::Lost(error.to_string()));
                    }
                    if let Some(decided) = decide(latest.as_ref()) {
                        return decided;
                    }
                    tokio::time::sleep(TICK * 4).await;
                    continue;
                }
            };
            if let Some(decided) = decide(latest.as_ref()) {
                return decided;
            }
            let params = WatchParams::default().labels(&self.selector).timeout(30);
            let Ok(stream) = call(
                self.cluster,
                "watch the pod",
                self.pods.watch(&params, &version),
            )
            .await
            else {
                tokio::time::sleep(TICK * 4).await;
                continue;
            };
            let mut stream = std::pin::pin!(stream);
            // A quiet watch says nothing of the link: it is listed again now and then, which does.
            let watching = Instant::now();
            while watching.elapsed() < self.link.min(WATCH) {
                let mut tick = std::pin::pin!(tokio::time::sleep(TICK));
                tokio::select! {
                    event = stream.next() => match event {
                        Some(Ok(WatchEvent::Added(pod) | WatchEvent::Modified(pod))) => {
                            last_ok = Instant::now();
                            latest = Some(pod);
                        }
                        Some(Ok(WatchEvent::Deleted(_))) => latest = None,
                        Some(Ok(WatchEvent::Bookmark(_))) => {}
                        // A watch that ends or fails is listed again.
                        Some(Ok(WatchEvent::Error(_)) | Err(_)) | None => break,
                    },
                    () = &mut tick => {}
                }
                if let Some(decided) = decide(latest.as_ref()) {
                    return decided;
                }
            }
        }
    }

    /// Waits until the pod runs its keeper (files can go in); `Err(exit)`: the attempt was cancelled first.
    async fn started(
        &self,
        run: &ContainerRun<'_>,
        settings: &KubernetesSettings,
    ) -> Result<Result<String, ExitStatus>, KubeError> {
        let since = Instant::now();
        self.until(|pod| {
            if run.cancel.load(Ordering::SeqCst) {
                return Some(Ok(Err(ExitStatus::Cancelled)));
            }
            let why = pod.and_then(|pod| cannot_start(pod, &run.settings.image));
            if let Some(why) = why {
                return Some(Err(KubeError::NotStarted(why)));
            }
            if let Some(pod) = pod
                && running(pod, KEEPER)
            {
                return pod.metadata.name.clone().map(|name| Ok(Ok(name)));
            }
            (since.elapsed() > settings.start_timeout).then(|| {
                Err(KubeError::NotStarted(format!(
                    "not running after {} s ({}); see `kubectl describe pod -l {}` or raise [sandbox.kubernetes] \
                     start_timeout",
                    settings.start_timeout.as_secs(),
                    pod.map_or("no pod yet".to_string(), waiting_reasons),
                    self.selector
                )))
            })
        })
        .await
    }

    /// Waits for the runner's end: its exit code, or timed out or cancelled (the Job is deleted then).
    async fn runner_end(
        &self,
        run: &ContainerRun<'_>,
        began: Instant,
    ) -> Result<ExitStatus, KubeError> {
        self.until(|pod| {
            if run.cancel.load(Ordering::SeqCst) {
                return Some(Ok(ExitStatus::Cancelled));
            }
            if began.elapsed() >= run.timeout {
                return Some(Ok(ExitStatus::TimedOut));
            }
            let Some(pod) = pod else {
                return Some(Err(KubeError::Lost(
                    "the attempt's pod is gone".to_string(),
                )));
            };
            if let Some(code) = terminated(pod, RUNNER) {
                return Some(Ok(ExitStatus::Code { code }));
            }
            let phase = pod.status.as_ref().and_then(|status| status.phase.clone());
            matches!(phase.as_deref(), Some("Failed" | "Succeeded")).then(|| {
                Err(KubeError::Lost(format!(
                    "the pod ended ({}) before its runner did",
                    pod.status
                        .as_ref()
                        .and_then(|s| s.reason.clone())
                        .unwrap_or_default()
                )))
            })
        })
        .await
    }
}

fn container_status<'p>(
    pod: &'p Pod,
    name: &str,
) -> Option<&'p k8s_openapi::api::core::v1::ContainerStatus> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|status| status.name == name)
}

fn running(pod: &Pod, name: &str) -> bool {
    container_status(pod, name)
        .and_then(|status| status.state.as_ref())
        .is_some_and(|state| state.running.is_some())
}

fn terminated(pod: &Pod, name: &str) -> Option<i32> {
    container_status(pod, name)?
        .state
        .as_ref()?
        .terminated
        .as_ref()
        .map(|ended| ended.exit_code)
}

/// Why the pod will not start, when a container waits for a reason that does not pass by itself.
fn cannot_start(pod: &Pod, image: &str) -> Option<String> {
    let status = pod.status.as_ref()?;
    if matches!(status.phase.as_deref(), Some("Failed")) {
        return Some(format!(
            "the pod failed: {} {}",
            status.reason.clone().unwrap_or_default(),
            status.message.clone().unwrap_or_default()
        ));
    }
    status
        .container_statuses
        .as_ref()?
        .iter()
        .find_map(|container| {
            let waiting = container.state.as_ref()?.waiting.as_ref()?;
            let reason = waiting.reason.as_deref()?;
            matches!(
            reason,
            "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" | "ErrImageNeverPull"
        )
        .then(|| {
            format!(
                "{} of container {}: {} (is the image {image} there, and can the cluster pull it?)",
                reason,
                container.name,
                last_line(waiting.message.as_deref().unwrap_or_default()),
            )
        })
        })
}

/// The last line of a message from the cluster, without control characters, at most 300 characters.
fn last_line(message: &str) -> String {
    let line = message
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or_default();
    line.chars().filter(|c| !c.is_control()).take(300).collect()
}

fn waiting_reasons(pod: &Pod) -> String {
    let status = pod.status.clone().unwrap_or_default();
    let waiting: Vec<String> = status
        .container_statuses
        .unwrap_or_default()
        .iter()
        .filter_map(|container| {
            let waiting = container.state.as_ref()?.waiting.as_ref()?;
            Some(format!(
                "{}: {}",
                container.name,
                waiting.reason.clone().unwrap_or_default()
            ))
        })
        .collect();
    if waiting.is_empty() {
        format!(
            "phase {}",
            status.phase.unwrap_or_else(|| "unknown".to_string())
        )
    } else {
        waiting.join(", ")
    }
}

/// Exec in the keeper: `argv`, with what it printed on stderr and its status checked.
async fn exec(
    cluster: &Cluster,
    pod: &str,
    what: &'static str,
    argv: &[&str],
    stdin: Option<Vec<u8>>,
    stdout: Option<&Path>,
) -> Result<(), KubeError> {
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let params = AttachParams::default()
        .container(KEEPER)
        .stdin(stdin.is_some())
        .stdout(stdout.is_some())
        .stderr(true);
    let argv: Vec<String> = argv.iter().map(|arg| arg.to_string()).collect();
    let mut attached = call(cluster, what, pods.exec(pod, argv, &params)).await?;
    let status = attached.take_status();
    let mut stderr = attached.stderr();
    let mut out = attached.stdout();
    let io = |context: String| move |source| KubeError::Io { context, source };
    let send = async {
        if let (Some(bytes), Some(mut to)) = (stdin, attached.stdin()) {
            to.write_all(&bytes).await?;
            to.shutdown().await?;
        }
        Ok::<(), std::io::Error>(())
    };
    let receive = async {
        let (Some(path), Some(from)) = (stdout, out.as_mut()) else {
            return Ok(0);
        };
        spool(from, path).await
    };
    let complain = async {
        let mut text = Vec::new();
        if let Some(from) = stderr.as_mut() {
            let _ = from.take(64 * 1024).read_to_end(&mut text).await;
        }
        text
    };
    let copied = tokio::time::timeout(Duration::from_secs(spec::COPY_SECS), async {
        tokio::join!(send, receive, complain)
    })
    .await
    .map_err(|_| KubeError::Api {
        namespace: cluster.namespace.clone(),
        what,
        message: format!("not done within {} s", spec::COPY_SECS),
    })?;
    let (sent, received, complaint) = copied;
    sent.map_err(io(format!("cannot {what}")))?;
    received.map_err(io(format!("cannot {what}")))?;
    let status = match status {
        Some(status) => status.await,
        None => None,
    };
    let _ = attached.join().await;
    match status {
        Some(status) if status.status.as_deref() == Some("Success") => Ok(()),
        other => Err(KubeError::Api {
            namespace: cluster.namespace.clone(),
            what,
            message: format!(
                "{} {}",
                other
                    .and_then(|status| status.message)
                    .unwrap_or_else(|| "no status".to_string()),
                String::from_utf8_lossy(&complaint).trim()
            ),
        }),
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

async fn put_input(cluster: &Cluster, pod: &str, input: &Path) -> Result<(), KubeError> {
    let tar = crate::sandbox::archive::pack_input(input).map_err(|source| KubeError::Io {
        context: format!("cannot pack {}", input.display()),
        source,
    })?;
    let into = format!("{ROOT}/in");
    let argv = ["ccfan", "runner", "--take-input", into.as_str()];
    exec(
        cluster,
        pod,
        "copy the attempt's input in",
        &argv,
        Some(tar),
        None,
    )
    .await
}

async fn take_output(cluster: &Cluster, pod: &str, output: &Path) -> Result<(), KubeError> {
    let spooled = output.with_extension("tar");
    let from = format!("{ROOT}/out");
    let argv = ["ccfan", "runner", "--give-output", from.as_str()];
    let taken = exec(
        cluster,
        pod,
        "copy the attempt's output out",
        &argv,
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

/// The end of the runner's own log, kept beside the attempt (what a failed runner said).
async fn save_runner_log(cluster: &Cluster, pod: &str, to: &Path) {
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let params = LogParams {
        container: Some(RUNNER.to_string()),
        tail_lines: Some(40),
        limit_bytes: Some(64 * 1024),
        ..Default::default()
    };
    if let Ok(text) = call(cluster, "read the runner's log", pods.logs(pod, &params)).await
        && let Err(error) = std::fs::write(to, text)
    {
        tracing::warn!("cannot write {}: {error}", to.display());
    }
}

/// Appends the runner's log (the worker's output, echoed as it is written) to the live log while it runs.
async fn follow(pods: Api<Pod>, pod: String, live: Option<LiveLog>) {
    let Some(mut live) = live else {
        return;
    };
    let params = LogParams {
        container: Some(RUNNER.to_string()),
        follow: true,
        ..Default::default()
    };
    let Ok(stream) = pods.log_stream(&pod, &params).await else {
        return;
    };
    let mut stream = std::pin::pin!(stream);
    let mut chunk = vec![0u8; 16 * 1024];
    while let Ok(read) = futures_util::AsyncReadExt::read(&mut stream, &mut chunk).await
        && read > 0
    {
        if !live.push(&chunk[..read]) {
            return;
        }
    }
}
