//! The objects one attempt puts in a cluster, built as values (pure, unit-tested, and the same objects the tests
//! run through `podman kube play`): a Job of one pod — the runner, which waits for its input and runs the worker,
//! and a keeper, which holds the pod up so the runner's output can be taken once it ended — the Secret the
//! worker's passed variables travel in, and the NetworkPolicy that lets the pod reach only what its profile says.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde_json::json;
use sha2::Digest;

use super::super::container::ContainerRun;
use crate::policy::KubernetesSettings;

/// The label every object of ccfan carries.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "ccfan");
/// The label naming an attempt's objects (a hash of its process token: tokens are longer than label values).
pub const TOKEN: &str = "io.ccfan.token";
/// The container that runs the worker.
pub const RUNNER: &str = "runner";
/// The container that holds the pod up and takes the files in and out.
pub const KEEPER: &str = "keeper";
/// Where the attempt's files live in the pod.
pub const ROOT: &str = "/ccfan";
/// How long the runner waits for its input, and copies in or out may take.
pub const COPY_SECS: u64 = 600;

/// An attempt's names in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The Job's (and its Secret's and NetworkPolicy's) name.
    pub job: String,
    /// The value of [`TOKEN`].
    pub token: String,
}

impl Names {
    /// The names of the attempt with process token `token`: the same every time, so recovery finds them.
    pub fn of(token: &str) -> Names {
        let digest = sha2::Sha256::digest(token.as_bytes());
        let hash: String = digest
            .iter()
            .take(10)
            .map(|byte| format!("{byte:02x}"))
            .collect();
        Names {
            job: format!("ccfan-{hash}"),
            token: hash,
        }
    }
}

/// A label value from any text: at most 63 of `[A-Za-z0-9._-]`, starting and ending alphanumeric.
pub fn label_value(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    cleaned
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// The labels of every object of the attempt: ccfan's, the token's, and the run's, task's and attempt's
/// (cleaned to label values; their exact values are annotations).
fn labels(run: &ContainerRun<'_>, names: &Names) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = run
        .labels
        .iter()
        .filter(|(key, _)| key != TOKEN)
        .map(|(key, value)| (key.clone(), label_value(value)))
        .collect();
    labels.insert(MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string());
    labels.insert(TOKEN.to_string(), names.token.clone());
    labels
}

fn annotations(run: &ContainerRun<'_>) -> BTreeMap<String, String> {
    run.labels.iter().cloned().collect()
}

/// How long the Job may be active (scheduling, pulling, copies in and out, and the attempt's own limit): past it
/// the cluster ends it even when ccfan is gone.
pub fn active_deadline(run: &ContainerRun<'_>, cluster: &KubernetesSettings) -> u64 {
    cluster.start_timeout.as_secs() + run.timeout.as_secs() + 2 * COPY_SECS
}

/// The attempt's Job, created suspended (its Secret and NetworkPolicy are made before its pod exists).
pub fn job(
    run: &ContainerRun<'_>,
    cluster: &KubernetesSettings,
    names: &Names,
) -> Result<Job, serde_json::Error> {
    let deadline = active_deadline(run, cluster);
    let mut limits = serde_json::Map::new();
    if let Some(memory) = run.limits.memory {
        limits.insert("memory".into(), json!(memory.to_string()));
    }
    if let Some(cpus) = run.settings.cpus {
        limits.insert(
            "cpu".into(),
            json!(format!("{}m", (cpus * 1000.0).ceil() as u64)),
        );
    }
    let mut volume = serde_json::Map::new();
    if let Some(storage) = cluster.storage {
        limits.insert("ephemeral-storage".into(), json!(storage.to_string()));
        volume.insert("sizeLimit".into(), json!(storage.to_string()));
    }
    let env_from = if run.env.is_empty() {
        json!([])
    } else {
        json!([{"secretRef": {"name": names.job}}])
    };
    let locked_down = json!({
        "allowPrivilegeEscalation": false,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    });
    // Named after the Job: Podman's `kube play` shares an emptyDir between pods whose volumes share a name.
    let mount = json!([{"name": names.job, "mountPath": ROOT}]);
    let runner_argv = [
        "ccfan".to_string(),
        "runner".into(),
        "--input".into(),
        format!("{ROOT}/in"),
        "--output".into(),
        format!("{ROOT}/out"),
        "--work".into(),
        format!("{ROOT}/work"),
        "--await-input".into(),
        (cluster.start_timeout.as_secs() + COPY_SECS).to_string(),
        "--echo".into(),
    ];
    let labels = labels(run, names);
    serde_json::from_value(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": names.job, "labels": labels, "annotations": annotations(run)},
        "spec": {
            "suspend": true,
            "backoffLimit": 0,
            "activeDeadlineSeconds": deadline,
            "ttlSecondsAfterFinished": cluster.ttl_seconds,
            "template": {
                "metadata": {"labels": labels, "annotations": annotations(run)},
                "spec": {
                    // With drop-ALL, no escalation and RuntimeDefault seccomp below, the pod meets the `restricted`
                    // Pod Security level; the image must run as a numeric non-root user (the Containerfile's does).
                    "securityContext": {"runAsNonRoot": true},
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": false,
                    "enableServiceLinks": false,
                    "terminationGracePeriodSeconds": 5,
                    "volumes": [{"name": names.job, "emptyDir": volume}],
                    "containers": [
                        {
                            "name": RUNNER,
                            "image": run.settings.image,
                            "imagePullPolicy": cluster.pull_policy,
                            "command": runner_argv,
                            "workingDir": ROOT,
                            "envFrom": env_from,
                            "resources": {"limits": limits, "requests": limits},
                            "volumeMounts": mount,
                            "securityContext": locked_down,
                        },
                        {
                            "name": KEEPER,
                            "image": run.settings.image,
                            "imagePullPolicy": cluster.pull_policy,
                            "command": ["ccfan", "runner", "--hold", deadline.to_string()],
                            "workingDir": ROOT,
                            "resources": {
                                "requests": {"cpu": "10m", "memory": "64Mi"},
                                "limits": {"cpu": "500m", "memory": "512Mi"},
                            },
                            "volumeMounts": mount,
                            "securityContext": locked_down,
                        },
                    ],
                },
            },
        },
    }))
}

/// The owner reference that has the cluster delete an object with its Job.
pub fn owned_by(job: &Job) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: "batch/v1".to_string(),
        kind: "Job".to_string(),
        name: job.metadata.name.clone()?,
        uid: job.metadata.uid.clone()?,
        controller: None,
        block_owner_deletion: None,
    })
}

/// The Secret holding the variables the worker gets from this machine by name (API keys): never in the Job.
pub fn secret(
    run: &ContainerRun<'_>,
    names: &Names,
    owner: Option<OwnerReference>,
) -> Result<Secret, serde_json::Error> {
    let data: BTreeMap<&str, &str> = run
        .env
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": names.job,
            "labels": labels(run, names),
            "ownerReferences": owner.into_iter().collect::<Vec<_>>(),
        },
        "type": "Opaque",
        "stringData": data,
    }))
}

/// The NetworkPolicy of the attempt's pod: nothing comes in; nothing goes out unless the worker has the network,
/// and then only to the policy's `egress` blocks (anywhere when it names none) and DNS.
pub fn network_policy(
    run: &ContainerRun<'_>,
    cluster: &KubernetesSettings,
    names: &Names,
    owner: Option<OwnerReference>,
) -> Result<NetworkPolicy, serde_json::Error> {
    // Anywhere is every address but the link-local ones, where clouds serve their nodes' credentials.
    let blocks: Vec<_> = if cluster.egress.is_empty() {
        vec![
            json!({"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.0.0/16"]}}),
            json!({"ipBlock": {"cidr": "::/0", "except": ["fe80::/10", "fd00:ec2::254/128"]}}),
        ]
    } else {
        cluster
            .egress
            .iter()
            .map(|cidr| json!({"ipBlock": {"cidr": cidr}}))
            .collect()
    };
    let egress = if run.network {
        json!([
            {"to": blocks},
            // Names are resolved by the cluster's DNS only, not by any server on port 53.
            {
                "to": [
                    {
                        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                    },
                    // NodeLocal DNSCache's address, where clusters run it.
                    {"ipBlock": {"cidr": "169.254.20.10/32"}},
                ],
                "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
            },
        ])
    } else {
        json!([])
    };
    serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": names.job,
            "labels": labels(run, names),
            "ownerReferences": owner.into_iter().collect::<Vec<_>>(),
        },
        "spec": {
            "podSelector": {"matchLabels": {TOKEN: names.token}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": egress,
        },
    }))
}

/// The namespace's baseline NetworkPolicy: nothing in or out for any pod of ccfan's. Policies add up, so each
/// attempt's own policy opens only what its worker may reach, and a pod whose own policy goes first (they are
/// deleted with the Job in no set order) stays closed.
pub fn baseline_policy() -> Result<NetworkPolicy, serde_json::Error> {
    serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "ccfan-baseline", "labels": {MANAGED_BY.0: MANAGED_BY.1}},
        "spec": {
            "podSelector": {"matchLabels": {MANAGED_BY.0: MANAGED_BY.1}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": [],
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{ContainerSettings, SandboxBackend, SandboxLimits};
    use serde_json::Value;
    use std::sync::atomic::AtomicBool;

    fn with_run<T>(network: bool, work: impl FnOnce(&ContainerRun<'_>) -> T) -> T {
        let settings = ContainerSettings {
            image: "registry.example/ccfan-worker:1".into(),
            socket: None,
            cpus: Some(1.5),
        };
        let cancel = AtomicBool::new(false);
        let dir = std::path::Path::new("/tmp");
        let run = ContainerRun {
            backend: SandboxBackend::Kubernetes,
            settings: &settings,
            input: dir,
            output: dir,
            argv: vec![],
            env: vec![("API_KEY".into(), "sk-value".into())],
            network,
            limits: SandboxLimits {
                memory: Some(1 << 30),
                pids: Some(512),
                tmp_size: 1 << 30,
                max_output: 1 << 20,
            },
            timeout: std::time::Duration::from_secs(900),
            cancel: &cancel,
            labels: vec![
                (TOKEN.into(), "20261203-abc-t1-1-x".into()),
                ("io.ccfan.task".into(), "fix the λ parser".into()),
            ],
            log: dir,
            live: None,
        };
        work(&run)
    }

    #[test]
    fn the_job_runs_once_locked_down_with_its_secret_by_reference() {
        let cluster = KubernetesSettings::default();
        let names = Names::of("20261203-abc-t1-1-x");
        let job = with_run(false, |run| job(run, &cluster, &names)).unwrap();
        let value = serde_json::to_value(&job).unwrap();
        let spec = &value["spec"];
        assert_eq!(spec["backoffLimit"], 0);
        assert_eq!(spec["suspend"], true);
        assert_eq!(spec["activeDeadlineSeconds"], 300 + 900 + 1200);
        assert_eq!(spec["ttlSecondsAfterFinished"], 600);
        let pod = &spec["template"]["spec"];
        assert_eq!(pod["automountServiceAccountToken"], false);
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        let runner = &pod["containers"][0];
        assert_eq!(runner["resources"]["limits"]["memory"], "1073741824");
        assert_eq!(runner["resources"]["limits"]["cpu"], "1500m");
        assert_eq!(
            (
                &runner["resources"]["limits"]["ephemeral-storage"],
                &pod["volumes"][0]["emptyDir"]
            ),
            (&Value::Null, &json!({})),
            "no disk bound unless the policy sets one"
        );
        let bounded = KubernetesSettings {
            storage: Some(20 << 30),
            ..KubernetesSettings::default()
        };
        let bounded = with_run(false, |run| super::job(run, &bounded, &names)).unwrap();
        let pod = &serde_json::to_value(&bounded).unwrap()["spec"]["template"]["spec"];
        assert_eq!(
            pod["containers"][0]["resources"]["limits"]["ephemeral-storage"],
            "21474836480"
        );
        assert_eq!(pod["volumes"][0]["emptyDir"]["sizeLimit"], "21474836480");
        assert_eq!(runner["envFrom"][0]["secretRef"]["name"], names.job);
        assert!(
            !value.to_string().contains("sk-value"),
            "a secret value is in the Job"
        );
        assert_eq!(runner["securityContext"]["allowPrivilegeEscalation"], false);
        let labels = &spec["template"]["metadata"]["labels"];
        assert_eq!(labels[TOKEN], names.token);
        assert_eq!(labels["io.ccfan.task"], "fix-the---parser");
        assert_eq!(
            value["metadata"]["annotations"]["io.ccfan.task"],
            "fix the λ parser"
        );
        assert!(names.job.len() <= 63 && names.job.starts_with("ccfan-"));
    }

    #[test]
    fn the_network_policy_follows_the_profile() {
        let names = Names::of("t");
        let mut cluster = KubernetesSettings::default();
        let closed = with_run(false, |run| network_policy(run, &cluster, &names, None)).unwrap();
        let closed = serde_json::to_value(&closed).unwrap();
        assert_eq!(closed["spec"]["egress"], json!([]));
        assert_eq!(closed["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
        let open = with_run(true, |run| network_policy(run, &cluster, &names, None)).unwrap();
        let open = serde_json::to_value(&open).unwrap();
        assert_eq!(
            open["spec"]["egress"][0]["to"][0]["ipBlock"]["cidr"],
            "0.0.0.0/0"
        );
        assert_eq!(
            open["spec"]["egress"][0]["to"][0]["ipBlock"]["except"],
            json!(["169.254.0.0/16"]),
            "the metadata service is reachable"
        );
        let dns = &open["spec"]["egress"][1];
        assert_eq!(
            dns["to"][0]["podSelector"]["matchLabels"]["k8s-app"],
            "kube-dns"
        );
        cluster.egress = vec!["10.0.0.0/8".into()];
        let some = with_run(true, |run| network_policy(run, &cluster, &names, None)).unwrap();
        let some = serde_json::to_value(&some).unwrap();
        assert_eq!(
            some["spec"]["egress"][0]["to"][0]["ipBlock"]["cidr"],
            "10.0.0.0/8"
        );
        assert_eq!(some["spec"]["egress"][1]["ports"][0]["port"], 53);
    }

    #[test]
    fn label_values_are_cleaned() {
        assert_eq!(label_value("-a b/c-"), "a-b-c");
        assert_eq!(label_value(&"x".repeat(80)).len(), 63);
        assert_eq!(label_value("λ"), "");
    }
}
