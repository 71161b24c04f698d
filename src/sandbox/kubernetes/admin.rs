//! What ccfan asks a cluster outside an attempt: `ccfan doctor`'s check of the context, the namespace and the
//! permissions an attempt needs, and recovery's deletion of the Jobs a killed ccfan left.

use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams, PostParams};

use super::spec::{Names, TOKEN};
use super::{Cluster, KubeError};
use crate::policy::KubernetesSettings;
use crate::sandbox::container::block_on;

/// What an attempt does in its namespace: (API group, resource, subresource, verb).
pub const NEEDED: [(&str, &str, &str, &str); 11] = [
    ("batch", "jobs", "", "create"),
    ("batch", "jobs", "", "patch"),
    ("batch", "jobs", "", "list"),
    ("batch", "jobs", "", "delete"),
    ("", "pods", "", "list"),
    ("", "pods", "", "watch"),
    ("", "pods", "log", "get"),
    ("", "pods", "exec", "create"),
    // Exec opens a websocket with a GET, which API servers before 1.35 authorise as `get`.
    ("", "pods", "exec", "get"),
    ("", "secrets", "", "create"),
    ("networking.k8s.io", "networkpolicies", "", "create"),
];

/// `ccfan doctor`: whether the cluster answers, the namespace is there and every permission an attempt needs is
/// granted (`Ok`: what it is), or what is wrong, with the fix.
pub fn check(settings: &KubernetesSettings, image: &str) -> Result<String, String> {
    block_on(async {
        let cluster = match Cluster::connect(settings).await {
            Ok(cluster) => cluster,
            Err(error) => return Ok(Err(error.to_string())),
        };
        let version = match cluster.client.apiserver_version().await {
            Ok(version) => version.git_version,
            Err(error) => {
                return Ok(Err(format!(
                    "the cluster at {} does not answer: {error}",
                    cluster.server
                )));
            }
        };
        let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
        // Reading namespaces may not be granted (an error): the reviews below tell what matters then.
        if let Ok(None) = namespaces.get_opt(&cluster.namespace).await {
            return Ok(Err(format!(
                "namespace {} does not exist at {} (create it: `kubectl create namespace {}`, or set \
                 [sandbox.kubernetes] namespace)",
                cluster.namespace, cluster.server, cluster.namespace
            )));
        }
        let missing = missing_permissions(&cluster).await?;
        if !missing.is_empty() {
            return Ok(Err(format!(
                "in namespace {} at {}, this account may not {} (grant them with a Role and RoleBinding: the README's \
                 \"Workers on Kubernetes\" has one)",
                cluster.namespace,
                cluster.server,
                missing.join(", ")
            )));
        }
        Ok(Ok(format!(
            "kubernetes {version} at {}, namespace {}, image {image} (pulled by the cluster: not checked here); \
             every permission an attempt needs is granted",
            cluster.server, cluster.namespace
        )))
    })
    .unwrap_or_else(|error: KubeError| Err(error.to_string()))
}

/// The permissions of [`NEEDED`] the cluster does not grant, as `verb resource[/subresource]`.
async fn missing_permissions(cluster: &Cluster) -> Result<Vec<String>, KubeError> {
    let reviews: Api<SelfSubjectAccessReview> = Api::all(cluster.client.clone());
    let mut missing = Vec::new();
    for (group, resource, subresource, verb) in NEEDED {
        let review: SelfSubjectAccessReview = serde_json::from_value(serde_json::json!({
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {
                "namespace": cluster.namespace,
                "group": group,
                "resource": resource,
                "subresource": subresource,
                "verb": verb,
            }},
        }))
        .map_err(|error| KubeError::Config(error.to_string()))?;
        let answer = reviews
            .create(&PostParams::default(), &review)
            .await
            .map_err(cluster.failed("review a permission"))?;
        if !answer.status.is_some_and(|status| status.allowed) {
            let what = if subresource.is_empty() {
                resource.to_string()
            } else {
                format!("{resource}/{subresource}")
            };
            missing.push(format!("{verb} {what}"));
        }
    }
    Ok(missing)
}

/// Deletes the Jobs left by the attempt with process token `token` (a crash of ccfan mid-attempt), with what they
/// own; returns how many.
pub fn remove_leftovers(settings: &KubernetesSettings, token: &str) -> usize {
    let names = Names::of(token);
    let removed = block_on(async {
        let cluster = Cluster::connect(settings).await?;
        let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
        let listed = jobs
            .list(&ListParams::default().labels(&format!("{TOKEN}={}", names.token)))
            .await
            .map_err(cluster.failed("list the Jobs"))?;
        let mut removed = 0;
        for job in listed.items {
            if let Some(name) = job.metadata.name
                && super::delete(&cluster, &name, settings.link_timeout).await
            {
                removed += 1;
            }
        }
        Ok::<usize, KubeError>(removed)
    });
    removed.unwrap_or_else(|error| {
        tracing::warn!("cannot remove the Jobs left by {token}: {error}");
        0
    })
}
