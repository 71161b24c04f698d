//! The attempt's pod, watched: listed, then watched from that version for a while, then listed again (a quiet
//! watch says nothing of the link; a list that fails for the link timeout ends the attempt as lost). Two waits
//! use it: until the pod can take its input, and until the runner ends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::api::{Api, ListParams, WatchEvent, WatchParams};

use super::spec::{self, KEEPER, Names, RUNNER};
use super::{CALL, Cluster, KubeError, call, call_within};
use crate::model::ExitStatus;
use crate::policy::KubernetesSettings;

/// How often the time limit and cancellation are looked at.
const TICK: Duration = Duration::from_millis(250);
/// The longest one watch of the pod is followed before the pod is listed again.
const WATCH: Duration = Duration::from_secs(30);
/// How long an image pull or a container's creation may keep failing before the attempt fails (registries
/// refuse now and then; a Secret may arrive late).
const PULL_FAILING: Duration = Duration::from_secs(20);

/// What is known of the pod: `None` before the first answer, `Some(None)` when there is none.
type Look<'p> = Option<Option<&'p Pod>>;
/// What a look at the pod decided.
type Decided<T> = Option<Result<T, KubeError>>;

pub(super) struct PodWatch<'a> {
    cluster: &'a Cluster,
    /// How long the API may fail before the attempt is lost.
    link: Duration,
    pods: Api<Pod>,
    selector: String,
}

impl<'a> PodWatch<'a> {
    pub(super) fn new(cluster: &'a Cluster, names: &Names, link: Duration) -> PodWatch<'a> {
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
        mut decide: impl FnMut(Look<'_>) -> Decided<T>,
    ) -> Result<T, KubeError> {
        let mut latest: Option<Option<Pod>> = None;
        let mut last_ok = Instant::now();
        loop {
            let params = ListParams::default().labels(&self.selector);
            let listing = self.pods.list(&params);
            let version =
                match call_within(self.cluster, "list the pod", self.link.min(CALL), listing).await
                {
                    Ok(listed) => {
                        last_ok = Instant::now();
                        latest = Some(listed.items.into_iter().next());
                        listed
                            .metadata
                            .resource_version
                            .unwrap_or_else(|| "0".to_string())
                    }
                    Err(error) => {
                        if last_ok.elapsed() > self.link {
                            return Err(KubeError::Lost(error.to_string()));
                        }
                        if let Some(decided) = decide(latest.as_ref().map(Option::as_ref)) {
                            return decided;
                        }
                        tokio::time::sleep(TICK * 4).await;
                        continue;
                    }
                };
            if let Some(decided) = decide(latest.as_ref().map(Option::as_ref)) {
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
            let watching = Instant::now();

            while watching.elapsed() < self.link.min(WATCH) {
                let mut tick = std::pin::pin!(tokio::time::sleep(TICK));
                tokio::select! {
                    event = stream.next() => match event {
                        Some(Ok(WatchEvent::Added(pod) | WatchEvent::Modified(pod))) => {
                            last_ok = Instant::now();
                            latest = Some(Some(pod));
                        }
                        Some(Ok(WatchEvent::Deleted(_))) => latest = Some(None),
                        Some(Ok(WatchEvent::Bookmark(_))) => {}
                        // A watch that ends or fails (an expired version among them) is listed again.
                        Some(Ok(WatchEvent::Error(_)) | Err(_)) | None => break,
                    },
                    () = &mut tick => {}
                }
                if let Some(decided) = decide(latest.as_ref().map(Option::as_ref)) {
                    return decided;
                }
            }
            // A watch that a proxy keeps closing at once is not looped on.
            if watching.elapsed() < Duration::from_secs(1) {
                tokio::time::sleep(TICK * 4).await;
            }
        }
    }

    /// Waits until the pod runs its keeper (files can go in); `Err(exit)`: the attempt was cancelled first.
    pub(super) async fn started(
        &self,
        image: &str,
        settings: &KubernetesSettings,
        cancel: &AtomicBool,
    ) -> Result<Result<String, ExitStatus>, KubeError> {
        let since = Instant::now();
        let mut pull_failing: Option<Instant> = None;
        self.until(|look| {
            if cancel.load(Ordering::SeqCst) {
                return Some(Ok(Err(ExitStatus::Cancelled)));
            }
            let pod = look.flatten();
            if let Some(why) = pod.and_then(|pod| cannot_start(pod, image, &mut pull_failing)) {
                return Some(Err(KubeError::NotStarted(why)));
            }
            if let Some(pod) = pod
                && running(pod, KEEPER)
            {
                return pod.metadata.name.clone().map(|name| Ok(Ok(name)));
            }
            (since.elapsed() > settings.start_timeout).then(|| {
                Err(KubeError::NotStarted(format!(
                    "not running after {} s ({}); see `kubectl describe job,pod -l {}` (a quota or the namespace's \
                     Pod Security level can refuse the pod), or raise [sandbox.kubernetes] start_timeout",
                    settings.start_timeout.as_secs(),
                    pod.map_or("no pod yet".to_string(), waiting_reasons),
                    self.selector
                )))
            })
        })
        .await
    }

    /// Waits for the runner's end: its exit code, or timed out or cancelled (the Job is deleted then). A pod that
    /// goes away or is evicted first is lost: how the attempt ended is not known.
    pub(super) async fn runner_end(
        &self,
        timeout: Duration,
        cancel: &AtomicBool,
        began: Instant,
    ) -> Result<ExitStatus, KubeError> {
        self.until(|look| {
            if cancel.load(Ordering::SeqCst) {
                return Some(Ok(ExitStatus::Cancelled));
            }
            if began.elapsed() >= timeout {
                return Some(Ok(ExitStatus::TimedOut));
            }
            let pod = look?;
            let Some(pod) = pod else {
                return Some(Err(KubeError::Lost(
                    "the attempt's pod is gone".to_string(),
                )));
            };
            if let Some(why) = disrupted(pod) {
                return Some(Err(KubeError::Lost(why)));
            }
            if let Some(code) = terminated(pod, RUNNER) {
                return Some(Ok(ExitStatus::Code { code }));
            }
            let phase = pod.status.as_ref().and_then(|status| status.phase.clone());
            matches!(phase.as_deref(), Some("Failed" | "Succeeded")).then(|| {
                Err(KubeError::Lost(format!(
                    "the pod ended ({}) before its runner did",
                    last_line(
                        &pod.status
                            .as_ref()
                            .and_then(|s| s.reason.clone())
                            .unwrap_or_default()
                    )
                )))
            })
        })
        .await
    }
}

/// Why the pod is being taken away from under the attempt (deleted, evicted, preempted), if it is.
fn disrupted(pod: &Pod) -> Option<String> {
    if pod.metadata.deletion_timestamp.is_some() {
        return Some(
            "the attempt's pod is being deleted (drained, evicted or deleted by someone)"
                .to_string(),
        );
    }
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    conditions
        .iter()
        .find(|condition| condition.type_ == "DisruptionTarget" && condition.status == "True")
        .map(|condition| {
            format!(
                "the attempt's pod is being disrupted: {}",
                last_line(condition.reason.as_deref().unwrap_or("DisruptionTarget"))
            )
        })
}

fn container_status<'p>(pod: &'p Pod, name: &str) -> Option<&'p ContainerStatus> {
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

/// Why the pod will not start: a failed pod, an image that cannot be named, or a pull or a container's creation
/// that kept failing for [`PULL_FAILING`] (`pull_failing`: since when).
fn cannot_start(pod: &Pod, image: &str, pull_failing: &mut Option<Instant>) -> Option<String> {
    let status = pod.status.as_ref()?;
    if matches!(status.phase.as_deref(), Some("Failed")) {
        // The pod's own reason is often empty when a container failed: theirs say why.
        let containers: Vec<String> = status
            .container_statuses
            .iter()
            .flatten()
            .filter_map(|container| {
                let state = container.state.as_ref()?;
                let (reason, message) = match (&state.terminated, &state.waiting) {
                    (Some(ended), _) => (ended.reason.clone(), ended.message.clone()),
                    (None, Some(waiting)) => (waiting.reason.clone(), waiting.message.clone()),
                    (None, None) => return None,
                };
                Some(format!(
                    "{}: {} {}",
                    container.name,
                    last_line(reason.as_deref().unwrap_or_default()),
                    last_line(message.as_deref().unwrap_or_default())
                ))
            })
            .collect();
        return Some(format!(
            "the pod failed: {} {} {}",
            last_line(status.reason.as_deref().unwrap_or_default()),
            last_line(status.message.as_deref().unwrap_or_default()),
            containers.join("; ")
        ));
    }
    let mut pulling = false;
    let found = status.container_statuses.as_ref()?.iter().find_map(|container| {
        let waiting = container.state.as_ref()?.waiting.as_ref()?;
        let reason = waiting.reason.as_deref()?;
        let at_once = matches!(reason, "InvalidImageName" | "ErrImageNeverPull");
        // These can pass (a registry's refusal, a Secret not there yet): they fail the attempt once they last.
        let pull = matches!(
            reason,
            "ErrImagePull"
                | "ImagePullBackOff"
                | "CreateContainerConfigError"
                | "CreateContainerError"
                | "RunContainerError"
        );
        pulling |= pull;
        let failing_long = pull && pull_failing.is_some_and(|since| since.elapsed() > PULL_FAILING);
        (at_once || failing_long).then(|| {
            format!(
                "{reason} of container {}: {} (is the image {image} there, and can the cluster pull it?)",
                container.name,
                last_line(waiting.message.as_deref().unwrap_or_default()),
            )
        })
    });
    if pulling {
        pull_failing.get_or_insert_with(Instant::now);
    } else {
        *pull_failing = None;
    }
    found
}

/// The last line of a message from the cluster, without control characters, at most 300 characters.
pub(super) fn last_line(message: &str) -> String {
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
                last_line(waiting.reason.as_deref().unwrap_or_default())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_pull_fails_the_attempt_only_once_it_keeps_failing() {
        let failing = pod(serde_json::json!({"status": {"containerStatuses": [{
            "name": "runner", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ErrImagePull", "message": "rate limited\nretry"}}}]}}));
        let mut since = None;
        assert_eq!(cannot_start(&failing, "i", &mut since), None);
        assert!(since.is_some());
        since = Some(Instant::now() - PULL_FAILING * 2);
        let why = cannot_start(&failing, "i", &mut since).unwrap();
        assert!(
            why.contains("ErrImagePull") && why.contains("retry") && !why.contains('\n'),
            "{why}"
        );
        let invalid = pod(serde_json::json!({"status": {"containerStatuses": [{
            "name": "runner", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "InvalidImageName"}}}]}}));
        assert!(cannot_start(&invalid, "i", &mut None).is_some());
    }

    #[test]
    fn an_evicted_pod_is_a_lost_attempt() {
        let evicted = pod(serde_json::json!({"status": {"conditions": [
            {"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI"}]}}));
        assert!(
            disrupted(&evicted)
                .unwrap()
                .contains("EvictionByEvictionAPI")
        );
        let deleting =
            pod(serde_json::json!({"metadata": {"deletionTimestamp": "2026-12-03T00:00:00Z"}}));
        assert!(disrupted(&deleting).is_some());
        assert!(disrupted(&pod(serde_json::json!({}))).is_none());
    }
}
