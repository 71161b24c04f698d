//! The door to a Kubernetes cluster (kube-rs): one Job per portable attempt. Its files go in and come out through
//! the API's exec streams (a pod cannot mount this machine's worktree), the worker's output is followed live
//! through the pod's log, the Job's lifetime is bounded by the cluster as well as by ccfan, its Secret and
//! NetworkPolicy go with it, and the namespace never holds more of ccfan's Jobs than the policy's cap.

mod admin;
mod attempt;
mod exec;
mod logs;
mod queue;
pub mod spec;
mod watch;

pub use admin::{check, remove_leftovers};
pub use attempt::run;

use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, DeleteParams};

use crate::policy::KubernetesSettings;

/// How long one call to the API may take.
const CALL: Duration = Duration::from_secs(120);

/// Why an attempt could not be carried in the cluster.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// No cluster could be reached with the kubeconfig (or in-cluster) settings.
    #[error("cannot use the cluster: {0}")]
    Config(String),
    /// The API server refused or failed a call.
    #[error("the cluster ({namespace}): {what}: {message}")]
    Api {
        /// The namespace.
        namespace: String,
        /// What ccfan asked.
        what: &'static str,
        /// What the server said.
        message: String,
    },
    /// The attempt's pod did not start.
    #[error("the attempt's pod did not start: {0}")]
    NotStarted(String),
    /// The API did not answer a call (no connection, or no answer in time).
    #[error("the cluster ({namespace}): {what}: no answer: {message}")]
    Unanswered {
        /// The namespace.
        namespace: String,
        /// What ccfan asked.
        what: &'static str,
        /// What failed.
        message: String,
    },
    /// The API stopped answering while the attempt ran.
    #[error("lost the link to the cluster: {0}")]
    Lost(String),
    /// The attempt was cancelled while its files were being copied.
    #[error("cancelled")]
    Cancelled,
    /// A file of the attempt could not be read or written.
    #[error("{context}")]
    Io {
        /// What ccfan was doing.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl From<super::container::ClientFailed> for KubeError {
    fn from(failed: super::container::ClientFailed) -> Self {
        KubeError::Io {
            context: "the cluster's client could not run".to_string(),
            source: failed.0,
        }
    }
}

/// A client of the policy's cluster and the namespace it works in, with the address it talks to.
pub(super) struct Cluster {
    pub client: kube::Client,
    pub namespace: String,
    pub server: String,
}

impl Cluster {
    /// From the policy's context (else the kubeconfig's current one, else the pod's service account).
    pub async fn connect(settings: &KubernetesSettings) -> Result<Cluster, KubeError> {
        // A credential plugin that waits for a person, or a server that does not answer, is not waited for.
        tokio::time::timeout(CALL, Self::connect_now(settings))
            .await
            .unwrap_or_else(|_| {
                Err(KubeError::Config(format!(
                    "no cluster client within {} s (does the kubeconfig's credential plugin wait for input?)",
                    CALL.as_secs()
                )))
            })
    }

    async fn connect_now(settings: &KubernetesSettings) -> Result<Cluster, KubeError> {
        let config = match &settings.context {
            Some(context) => {
                let options = kube::config::KubeConfigOptions {
                    context: Some(context.clone()),
                    ..Default::default()
                };
                kube::Config::from_kubeconfig(&options)
                    .await
                    .map_err(|error| {
                        KubeError::Config(format!(
                            "context {context} of the kubeconfig: {error} (see `kubectl config get-contexts`, or fix \
                             [sandbox.kubernetes] context)"
                        ))
                    })?
            }
            None => kube::Config::infer().await.map_err(|error| {
                KubeError::Config(format!(
                    "no kubeconfig or in-cluster account: {error} (set KUBECONFIG, or [sandbox.kubernetes] context)"
                ))
            })?,
        };
        let namespace = settings
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let server = config.cluster_url.to_string();
        let client = kube::Client::try_from(config).map_err(|error| {
            KubeError::Config(format!("cannot make a client of {server}: {error}"))
        })?;
        Ok(Cluster {
            client,
            namespace,
            server,
        })
    }

    /// An error of `what` from the API: the server's refusal, or no answer.
    pub fn failed(&self, what: &'static str) -> impl FnOnce(kube::Error) -> KubeError + '_ {
        move |error| match error {
            kube::Error::Api(_) => KubeError::Api {
                namespace: self.namespace.clone(),
                what,
                message: error.to_string(),
            },
            other => KubeError::Unanswered {
                namespace: self.namespace.clone(),
                what,
                message: other.to_string(),
            },
        }
    }
}

/// `work`, with the API's error named `what`, or an error when it does not answer within [`CALL`].
pub(super) async fn call<T>(
    cluster: &Cluster,
    what: &'static str,
    work: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, KubeError> {
    call_within(cluster, what, CALL, work).await
}

/// [`call`] with a limit of its own (a look that tells whether the link still holds).
pub(super) async fn call_within<T>(
    cluster: &Cluster,
    what: &'static str,
    limit: Duration,
    work: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, KubeError> {
    match tokio::time::timeout(limit, work).await {
        Ok(done) => done.map_err(cluster.failed(what)),
        Err(_) => Err(KubeError::Unanswered {
            namespace: cluster.namespace.clone(),
            what,
            message: format!("none within {} s", limit.as_secs_f32()),
        }),
    }
}

/// Deletes the Job, its pod and what it owns (best effort: its TTL and deadline remove it otherwise).
/// Tried again for `patience` while the API fails (a link that comes back in time still cleans up).
pub(super) async fn delete(cluster: &Cluster, name: &str, patience: Duration) -> bool {
    delete_as(cluster, name, patience, DeleteParams::background()).await
}

/// [`delete`] with `params` (preconditions: only the Job as it was seen).
pub(super) async fn delete_as(
    cluster: &Cluster,
    name: &str,
    patience: Duration,
    params: DeleteParams,
) -> bool {
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let since = Instant::now();
    loop {
        // Each try gets time to reach the server, however little patience is left.
        let limit = patience.min(CALL).max(Duration::from_secs(10));
        match tokio::time::timeout(limit, jobs.delete(name, &params)).await {
            Ok(Ok(_)) => return true,
            Ok(Err(kube::Error::Api(status))) if status.is_not_found() => return true,
            // Its precondition failed: it changed since it was seen (a heartbeat): it is not deleted.
            Ok(Err(kube::Error::Api(status))) if status.code == 409 => return false,
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
