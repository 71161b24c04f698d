//! The namespace's queue of ccfan's Jobs, shared by every ccfan that uses the namespace: a Job is created
//! suspended and let go once fewer than `max_jobs` unfinished ones sort before it (by creation time, then name).
//! A waiting ccfan beats a heartbeat on its Job, so a Job whose ccfan stopped neither holds a place for ever nor
//! stays behind: a ccfan that sees its heartbeat stand still for five minutes (by its own clock) deletes it, only
//! as it saw it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions};

use super::spec;
use super::{CALL, Cluster, KubeError, call_within, delete_as};
use crate::policy::KubernetesSettings;

/// The annotation a waiting Job's ccfan refreshes (seconds since the epoch, by that ccfan's clock).
pub const HEARTBEAT: &str = "io.ccfan.heartbeat";
/// How often a waiting ccfan refreshes its heartbeat.
const BEAT: Duration = Duration::from_secs(30);
/// A waiting Job whose heartbeat has not moved for this long belongs to a ccfan that stopped.
const STALE: Duration = Duration::from_secs(300);
/// How long after its creation a Job first looks at the queue (creation times are whole seconds: by then every
/// Job created in the same second exists).
const SAME_SECOND: Duration = Duration::from_millis(1500);
/// How often the queue is looked at.
const LOOK: Duration = Duration::from_secs(2);

/// Now, in seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
        })
}

/// The heartbeats this ccfan has seen, each with when it first saw that value (by its own clock: ccfans on other
/// machines keep other time).
#[derive(Default)]
struct Seen(HashMap<String, (String, Instant)>);

impl Seen {
    /// Notes `job`'s heartbeat; whether it is a waiting Job whose heartbeat has not moved for [`STALE`].
    fn stale(&mut self, job: &Job) -> bool {
        let (Some(name), Some(beat)) = (job.metadata.name.clone(), heartbeat(job)) else {
            return false;
        };
        let suspended = job
            .spec
            .as_ref()
            .and_then(|spec| spec.suspend)
            .unwrap_or(false);
        let entry = self
            .0
            .entry(name)
            .or_insert_with(|| (beat.clone(), Instant::now()));
        if entry.0 != beat {
            *entry = (beat, Instant::now());
        }
        suspended && entry.1.elapsed() > STALE
    }
}

fn heartbeat(job: &Job) -> Option<String> {
    job.metadata.annotations.as_ref()?.get(HEARTBEAT).cloned()
}

/// Waits for `job`'s place; `false`: cancelled first.
pub(super) async fn wait(
    cluster: &Cluster,
    job: &Job,
    settings: &KubernetesSettings,
    cancel: &AtomicBool,
) -> Result<bool, KubeError> {
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let ours = (
        job.metadata.creation_timestamp.clone(),
        job.metadata.name.clone(),
    );
    let name = job.metadata.name.clone().unwrap_or_default();
    let selector = format!("{}={}", spec::MANAGED_BY.0, spec::MANAGED_BY.1);
    let limit = settings.link_timeout.min(CALL);
    let (mut last_ok, mut last_beat, mut said) = (Instant::now(), Instant::now(), false);
    let mut seen = Seen::default();
    tokio::time::sleep(SAME_SECOND).await;
    loop {
        if cancel.load(Ordering::SeqCst) {
            return Ok(false);
        }
        if last_beat.elapsed() > BEAT {
            let beat = Patch::Merge(serde_json::json!({
                "metadata": {"annotations": {HEARTBEAT: now().to_string()}}
            }));
            let patch_params = PatchParams::default();
            let patched = jobs.patch(&name, &patch_params, &beat);
            if call_within(cluster, "beat the Job's heartbeat", limit, patched)
                .await
                .is_ok()
            {
                last_beat = Instant::now();
            }
        }
        let params = ListParams::default().labels(&selector);
        match call_within(cluster, "list the Jobs", limit, jobs.list(&params)).await {
            Ok(listed) => {
                last_ok = Instant::now();
                let mine = listed
                    .items
                    .iter()
                    .find(|other| other.metadata.name.as_deref() == Some(&name));
                if mine.is_none_or(|mine| mine.metadata.deletion_timestamp.is_some()) {
                    return Err(KubeError::Lost(format!(
                        "its Job {name} was deleted while it waited"
                    )));
                }
                let mut holding = Vec::new();
                for other in &listed.items {
                    if other.metadata.name.as_deref() == Some(&name) {
                        continue;
                    }
                    if seen.stale(other) {
                        remove_stale(cluster, other).await;
                    } else if holds_a_place(other) {
                        holding.push((
                            other.metadata.creation_timestamp.clone(),
                            other.metadata.name.clone(),
                        ));
                    }
                }
                let ahead = holding.iter().filter(|key| **key < ours).count();
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
        tokio::time::sleep(LOOK).await;
    }
}

/// Deletes a waiting Job whose ccfan stopped beating, only as it was seen (a heartbeat since keeps it).
async fn remove_stale(cluster: &Cluster, job: &Job) {
    let Some(name) = job.metadata.name.as_deref() else {
        return;
    };
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: job.metadata.uid.clone(),
            resource_version: job.metadata.resource_version.clone(),
        }),
        ..DeleteParams::background()
    };
    if delete_as(cluster, name, Duration::ZERO, params).await {
        tracing::info!("deleted Job {name}: its ccfan stopped while it waited");
    }
}

/// Whether a Job counts against the cap: not finished and not being deleted.
fn holds_a_place(job: &Job) -> bool {
    if job.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let status = job.status.clone().unwrap_or_default();
    !status
        .conditions
        .unwrap_or_default()
        .iter()
        .any(|condition| {
            matches!(condition.type_.as_str(), "Complete" | "Failed") && condition.status == "True"
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str, suspended: bool, beat: &str, done: bool) -> Job {
        let conditions = if done {
            serde_json::json!([{"type": "Complete", "status": "True"}])
        } else {
            serde_json::json!([])
        };
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "annotations": {HEARTBEAT: beat}},
            "spec": {"suspend": suspended, "template": {}},
            "status": {"conditions": conditions},
        }))
        .unwrap()
    }

    #[test]
    fn a_waiting_job_is_stale_only_once_its_heartbeat_stopped_moving_here() {
        let mut seen = Seen::default();
        assert!(
            !seen.stale(&job("a", true, "100", false)),
            "first seen: not stale"
        );
        seen.0.get_mut("a").unwrap().1 = Instant::now() - STALE * 2;
        assert!(
            seen.stale(&job("a", true, "100", false)),
            "its heartbeat did not move"
        );
        assert!(
            !seen.stale(&job("a", true, "130", false)),
            "it moved: its ccfan is alive"
        );
        seen.0.get_mut("a").unwrap().1 = Instant::now() - STALE * 2;
        assert!(
            !seen.stale(&job("a", false, "130", false)),
            "a running Job is never stale"
        );
    }

    #[test]
    fn only_unfinished_jobs_hold_a_place() {
        assert!(holds_a_place(&job("a", true, "1", false)));
        assert!(!holds_a_place(&job("a", false, "1", true)));
    }
}
