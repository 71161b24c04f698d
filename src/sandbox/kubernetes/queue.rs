//! The namespace's queue of ccfan's Jobs, shared by every ccfan that uses the namespace: a Job is created
//! suspended and let go once fewer than `max_jobs` unfinished ones sort before it (by creation time, then name).
//! A waiting ccfan beats a heartbeat on its Job, so a Job whose ccfan stopped neither holds a place for ever nor
//! stays behind: whoever sees it stale deletes it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ListParams, Patch, PatchParams};

use super::spec;
use super::{CALL, Cluster, KubeError, call_within, delete};
use crate::policy::KubernetesSettings;

/// The annotation a waiting Job's ccfan refreshes (seconds since the epoch, by that ccfan's clock).
pub const HEARTBEAT: &str = "io.ccfan.heartbeat";
/// How often a waiting ccfan refreshes its heartbeat.
const BEAT: Duration = Duration::from_secs(30);
/// A suspended Job whose heartbeat is older than this belongs to a ccfan that stopped.
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
    let (mut last_ok, mut last_beat, mut said) = (Instant::now(), Instant::now(), false);
    tokio::time::sleep(SAME_SECOND).await;
    loop {
        if cancel.load(Ordering::SeqCst) {
            return Ok(false);
        }
        if last_beat.elapsed() > BEAT {
            let beat = Patch::Merge(serde_json::json!({
                "metadata": {"annotations": {HEARTBEAT: now().to_string()}}
            }));
            let _ = jobs.patch(&name, &PatchParams::default(), &beat).await;
            last_beat = Instant::now();
        }
        let limit = settings.link_timeout.min(CALL);
        let params = ListParams::default().labels(&selector);
        let listing = jobs.list(&params);
        match call_within(cluster, "list the Jobs", limit, listing).await {
            Ok(listed) => {
                last_ok = Instant::now();
                for stale in listed.items.iter().filter(|other| stale(other)) {
                    if let Some(stale) = stale.metadata.name.as_deref().filter(|n| *n != name) {
                        tracing::info!("deleting Job {stale}: its ccfan stopped while it waited");
                        delete(cluster, stale, Duration::ZERO).await;
                    }
                }
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
        tokio::time::sleep(LOOK).await;
    }
}

/// Whether a Job counts against the cap: not finished, not being deleted, and not stale.
fn holds_a_place(job: &Job) -> bool {
    if job.metadata.deletion_timestamp.is_some() || stale(job) {
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

/// A suspended Job whose ccfan has not beaten its heartbeat (or, without one, that was made) for [`STALE`].
fn stale(job: &Job) -> bool {
    let suspended = job
        .spec
        .as_ref()
        .and_then(|spec| spec.suspend)
        .unwrap_or(false);
    let beaten = job
        .metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(HEARTBEAT))
        .and_then(|beat| beat.parse::<i64>().ok())
        .or_else(|| {
            job.metadata
                .creation_timestamp
                .as_ref()
                .map(|created| created.0.as_second())
        });
    suspended && beaten.is_some_and(|beat| now() - beat > STALE.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(suspended: bool, beat: Option<i64>, done: bool) -> Job {
        let mut annotations = serde_json::Map::new();
        if let Some(beat) = beat {
            annotations.insert(HEARTBEAT.into(), serde_json::json!(beat.to_string()));
        }
        let conditions = if done {
            serde_json::json!([{"type": "Complete", "status": "True"}])
        } else {
            serde_json::json!([])
        };
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "j", "annotations": annotations},
            "spec": {"suspend": suspended, "template": {}},
            "status": {"conditions": conditions},
        }))
        .unwrap()
    }

    #[test]
    fn only_live_unfinished_jobs_hold_a_place() {
        assert!(holds_a_place(&job(true, Some(now()), false)));
        assert!(
            holds_a_place(&job(false, Some(now() - 3600), false)),
            "a running Job is never stale"
        );
        assert!(
            !holds_a_place(&job(true, Some(now() - 3600), false)),
            "its ccfan stopped"
        );
        assert!(!holds_a_place(&job(false, None, true)));
        assert!(stale(&job(true, Some(now() - 3600), false)));
    }
}
