//! One attempt in the cluster, from its place in the namespace's queue to its Job's deletion: the Job created
//! suspended, its Secret and NetworkPolicy made (owned by it, so they go with it), the Job let go, the pod watched
//! until it runs, the input sent in over exec, the runner's log followed into the attempt's log while the runner
//! is watched to its end (killed past the time limit, or when cancelled), the output taken back over exec, and
//! the Job deleted with everything it owns whatever happened.

use std::time::{Duration, Instant};

use futures_util::FutureExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, Patch, PatchParams, PostParams};

use super::exec::{put_input, save_runner_log, take_output};
use super::logs::follow;
use super::spec::{self, Names};
use super::watch::PodWatch;
use super::{Cluster, KubeError, call, delete, queue};
use crate::model::ExitStatus;
use crate::policy::KubernetesSettings;
use crate::sandbox::container::{ContainerOutcome, ContainerRun, block_on};
use crate::sandbox::live::LiveLog;

/// How long the deletion of an attempt's Job is tried while the API fails.
const CLEAN_UP: Duration = Duration::from_secs(30);

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
        let mut job = spec::job(run, settings, &names).map_err(unbuildable)?;
        job.metadata
            .annotations
            .get_or_insert_default()
            .insert(queue::HEARTBEAT.to_string(), queue::now().to_string());
        let patience = settings.link_timeout.max(CLEAN_UP);
        let created = match call(
            &cluster,
            "create the Job",
            jobs.create(&PostParams::default(), &job),
        )
        .await
        {
            Ok(created) => created,
            Err(error) => {
                // The server may have made it before its answer was lost: it goes (its name is known).
                delete(&cluster, &names.job, Duration::ZERO).await;
                return Err(error);
            }
        };
        let carried = async {
            // Once the Job exists, a call left unanswered means the link to it is lost.
            carry(&cluster, &names, &created, run, settings)
                .await
                .map_err(|error| match error {
                    KubeError::Unanswered { .. } => KubeError::Lost(error.to_string()),
                    other => other,
                })
        };
        let result = std::panic::AssertUnwindSafe(carried).catch_unwind().await;
        delete(&cluster, &names.job, patience).await;
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
    if !queue::wait(cluster, job, settings, run.cancel).await? {
        return Ok(ended(ExitStatus::Cancelled, queued));
    }
    prepare(cluster, names, job, run, settings).await?;
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let go = Patch::Merge(serde_json::json!({"spec": {"suspend": false}}));
    call(
        cluster,
        "start the Job",
        jobs.patch(&names.job, &PatchParams::default(), &go),
    )
    .await?;
    let pods = PodWatch::new(cluster, names, settings.link_timeout);
    let pod = match pods
        .started(&run.settings.image, settings, run.cancel)
        .await?
    {
        Ok(pod) => pod,
        Err(stopped) => return Ok(ended(stopped, queued)),
    };
    match put_input(cluster, &pod, run.input, run.cancel).await {
        Err(KubeError::Cancelled) => return Ok(ended(ExitStatus::Cancelled, queued)),
        other => other?,
    }
    let began = Instant::now();
    let follower = run.live.map(|live| {
        tokio::spawn(follow(
            Api::namespaced(cluster.client.clone(), &cluster.namespace),
            pod.clone(),
            LiveLog::open(live),
        ))
    });
    let exit = pods.runner_end(run.timeout, run.cancel, began).await;
    if let Some(mut follower) = follower {
        // What the log still holds arrives once the runner ended; a follower that hangs is stopped.
        if matches!(exit, Ok(ExitStatus::Code { .. }))
            && tokio::time::timeout(Duration::from_secs(5), &mut follower)
                .await
                .is_err()
        {
            tracing::debug!("the log of {pod} did not end");
        }
        follower.abort();
    }
    let exit = exit?;
    save_runner_log(cluster, &pod, run.log).await;
    if let ExitStatus::Code { code: 0 } = exit {
        match take_output(cluster, &pod, run.output, run.cancel).await {
            Ok(()) => {}
            Err(KubeError::Cancelled) => return Ok(ended(ExitStatus::Cancelled, began)),
            // The runner ended and its work is in the pod, but did not come back: the attempt is interrupted
            // (retried), not failed.
            Err(error @ (KubeError::Api { .. } | KubeError::Unanswered { .. })) => {
                return Err(KubeError::Lost(format!(
                    "its output could not be taken back: {error}"
                )));
            }
            Err(error) => return Err(error),
        }
    }
    Ok(ended(exit, began))
}

/// What the pod needs before it may exist: the namespace's baseline NetworkPolicy (nothing in or out for any of
/// ccfan's pods, so that the pod stays closed while its own policy is removed with it), the attempt's Secret and
/// its own NetworkPolicy, both owned by the Job.
async fn prepare(
    cluster: &Cluster,
    names: &Names,
    job: &Job,
    run: &ContainerRun<'_>,
    settings: &KubernetesSettings,
) -> Result<(), KubeError> {
    let owner = spec::owned_by(job);
    let policies: Api<NetworkPolicy> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let baseline = spec::baseline_policy().map_err(unbuildable)?;
    let what = "create the baseline NetworkPolicy";
    let post = PostParams::default();
    let creating = policies.create(&post, &baseline);
    match tokio::time::timeout(super::CALL, creating).await {
        // It is there already: made by an earlier attempt, or by the namespace's owner.
        Ok(Ok(_)) => {}
        Ok(Err(kube::Error::Api(status))) if status.code == 409 => {}
        Ok(Err(error)) => return Err(cluster.failed(what)(error)),
        Err(_) => {
            return Err(KubeError::Unanswered {
                namespace: cluster.namespace.clone(),
                what,
                message: format!("none within {} s", super::CALL.as_secs()),
            });
        }
    }
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
    let policy = spec::network_policy(run, settings, names, owner).map_err(unbuildable)?;
    call(
        cluster,
        "create the NetworkPolicy",
        policies.create(&PostParams::default(), &policy),
    )
    .await?;
    Ok(())
}
