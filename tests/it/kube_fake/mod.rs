//! An in-process fake of the Kubernetes API server, for the calls ccfan makes (create, patch, list, watch, logs,
//! exec, delete, access reviews), backed by Podman: a Job's pod is the Pod `podman kube play` runs, exec is
//! `podman exec` over the API's websocket channels, logs are `podman logs -f`. What ccfan asked is recorded for the
//! tests to check (the objects, the deletions and their propagation, how many Jobs ran at once).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

mod exec;
mod pods;

use exec::exec;
use pods::{container_state, list_pods, play, pod_log};

/// The fake cluster: its address, a kubeconfig naming it, and what it saw.
pub struct FakeCluster {
    pub kubeconfig: PathBuf,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

struct Shared {
    /// Labels this fake's pods, apart from other tests' fakes.
    id: String,
    podman: PathBuf,
    dir: PathBuf,
    namespace: String,
    denied: Mutex<Vec<String>>,
    objects: Mutex<Objects>,
    /// Every object ccfan created, by kind, as it sent it.
    kept: Mutex<Vec<(String, Value)>>,
    version: AtomicU64,
    calls: Mutex<Vec<String>>,
    active: AtomicUsize,
    most_active: AtomicUsize,
    online: AtomicBool,
    /// Log streams end after this long (`None`: when the container's log does).
    cut_logs: Mutex<Option<Duration>>,
}

#[derive(Default)]
struct Objects {
    jobs: BTreeMap<String, Value>,
    secrets: BTreeMap<String, Value>,
    policies: BTreeMap<String, Value>,
    /// Pod name → (its Job, its labels, its containers, how its play went: `None` while not played).
    pods: BTreeMap<String, Pod>,
}

#[derive(Clone)]
struct Pod {
    job: String,
    labels: Value,
    containers: Vec<String>,
    spec: Value,
    played: Option<Result<(), String>>,
}

impl FakeCluster {
    /// Serves the fake on a loopback port for namespace `namespace`; pods run with `podman`.
    pub fn start(podman: &Path, dir: &Path, namespace: &str) -> FakeCluster {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let shared = Arc::new(Shared {
            id: format!(
                "{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::SeqCst)
            ),
            podman: podman.to_path_buf(),
            dir: dir.to_path_buf(),
            namespace: namespace.to_string(),
            denied: Mutex::default(),
            objects: Mutex::default(),
            kept: Mutex::default(),
            version: AtomicU64::new(1),
            calls: Mutex::default(),
            active: AtomicUsize::new(0),
            most_active: AtomicUsize::new(0),
            online: AtomicBool::new(true),
            cut_logs: Mutex::new(None),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let address = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/version", get(version))
            .route("/api/v1/namespaces/{ns}", get(namespace_object))
            .route(
                "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                post(review),
            )
            .route(
                "/apis/batch/v1/namespaces/{ns}/jobs",
                get(list_jobs).post(create_job),
            )
            .route(
                "/apis/batch/v1/namespaces/{ns}/jobs/{name}",
                axum::routing::patch(patch_job).delete(delete_job),
            )
            .route("/api/v1/namespaces/{ns}/secrets", post(create_secret))
            .route(
                "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies",
                post(create_policy),
            )
            .route("/api/v1/namespaces/{ns}/pods", get(list_pods))
            .route("/api/v1/namespaces/{ns}/pods/{name}", get(pods::get_pod))
            .route("/api/v1/namespaces/{ns}/pods/{name}/log", get(pod_log))
            .route("/api/v1/namespaces/{ns}/pods/{name}/exec", get(exec))
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(&shared),
                note_request,
            ))
            .with_state(Arc::clone(&shared));
        runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{address}\n\
                 users:\n- name: fake\n  user:\n    token: fake-token\ncontexts:\n- name: fake\n  context:\n    \
                 cluster: fake\n    user: fake\n    namespace: {namespace}\ncurrent-context: fake\n"
            ),
        )
        .unwrap();
        FakeCluster {
            kubeconfig,
            shared,
            runtime: Some(runtime),
        }
    }

    /// Answers "not allowed" to access reviews of `what` (`verb resource[/subresource]`).
    pub fn deny(&self, what: &str) {
        self.shared.denied.lock().unwrap().push(what.to_string());
    }

    /// Ends every log stream after `after` (as a proxy with a short idle timeout does), or never.
    pub fn cut_logs_after(&self, after: Option<Duration>) {
        *self.shared.cut_logs.lock().unwrap() = after;
    }

    /// Stops answering (as a cluster whose link is lost), or answers again.
    pub fn set_online(&self, online: bool) {
        self.shared.online.store(online, Ordering::SeqCst);
    }

    /// What ccfan asked, in order (`POST jobs NAME`, `PATCH jobs NAME`, `DELETE jobs NAME Background`, …).
    pub fn calls(&self) -> Vec<String> {
        self.shared.calls.lock().unwrap().clone()
    }

    /// Every Job ccfan created, as it sent it.
    pub fn jobs_created(&self) -> Vec<Value> {
        self.shared.created("jobs")
    }

    /// Every object of `kind` (jobs, secrets, networkpolicies) ccfan created, as it sent it.
    pub fn created(&self, kind: &str) -> Vec<Value> {
        self.shared.created(kind)
    }

    /// The Jobs still there.
    pub fn jobs_left(&self) -> Vec<String> {
        self.shared
            .objects
            .lock()
            .unwrap()
            .jobs
            .keys()
            .cloned()
            .collect()
    }

    /// The most Jobs that ran (were let go and not yet deleted) at once.
    pub fn most_active(&self) -> usize {
        self.shared.most_active.load(Ordering::SeqCst)
    }

    /// Podman's pods of this fake still there.
    pub fn pods_left(&self) -> String {
        let listed = crate::env::podman_env(&mut std::process::Command::new(&self.shared.podman))
            .args([
                "pod",
                "ps",
                "-q",
                "--filter",
                &format!("label=ccfan-fake={}", self.shared.id),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&listed.stdout).trim().to_string()
    }

    fn pod_names(&self) -> Vec<String> {
        self.shared
            .objects
            .lock()
            .unwrap()
            .pods
            .keys()
            .cloned()
            .collect()
    }

    /// Whether a pod of this fake is running now.
    pub fn a_pod_runs(&self) -> bool {
        let pods = self.pod_names();
        pods.iter().any(|pod| {
            let runtime = self.runtime.as_ref().unwrap();
            let state = runtime.block_on(container_state(&self.shared, &format!("{pod}-runner")));
            state.0 == "running"
        })
    }
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        let pods = self.pod_names();
        for pod in pods {
            let _ = crate::env::podman_env(&mut std::process::Command::new(&self.shared.podman))
                .args(["pod", "rm", "-f", "-t", "0", &pod])
                .output();
        }
        let jobs: Vec<String> = self
            .shared
            .objects
            .lock()
            .unwrap()
            .jobs
            .keys()
            .cloned()
            .collect();
        for job in jobs {
            let _ = crate::env::podman_env(&mut std::process::Command::new(&self.shared.podman))
                .args(["volume", "rm", "-f", &job])
                .output();
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

impl Shared {
    fn next_version(&self) -> String {
        self.version.fetch_add(1, Ordering::SeqCst).to_string()
    }

    fn record(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }

    fn created(&self, kind: &str) -> Vec<Value> {
        self.kept
            .lock()
            .unwrap()
            .iter()
            .filter(|(of, _)| of == kind)
            .map(|(_, object)| object.clone())
            .collect()
    }

    /// Keeps what ccfan sent (in memory: handlers run at once, and appends to one file would interleave).
    fn keep(&self, kind: &str, object: &Value) {
        self.kept
            .lock()
            .unwrap()
            .push((kind.to_string(), object.clone()));
    }

    async fn podman(&self, args: &[&str]) -> std::process::Output {
        let mut command = tokio::process::Command::new(&self.podman);
        if let Some(conf) = podman_conf() {
            command.env("CONTAINERS_CONF", conf);
        }
        command.args(args).output().await.unwrap()
    }
}

/// Every request, in `requests.log` beside the fake's files (for a failing test's reader).
async fn note_request(
    State(shared): State<Arc<Shared>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use std::io::Write;
    if let Ok(mut log) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(shared.dir.join("requests.log"))
    {
        // One write per line: requests are noted at once, and pieces written apart would interleave.
        let line = format!("{} {}\n", request.method(), request.uri());
        let _ = log.write_all(line.as_bytes());
    }
    // Offline, a request gets no answer until the fake is back (a link whose packets are dropped).
    while !shared.online.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    next.run(request).await
}

/// The containers.conf the tests point podman at (see `env::podman_env`).
fn podman_conf() -> Option<std::ffi::OsString> {
    let mut probe = std::process::Command::new("true");
    crate::env::podman_env(&mut probe);
    probe
        .get_envs()
        .find(|(name, _)| *name == "CONTAINERS_CONF")
        .and_then(|(_, value)| value.map(|v| v.to_os_string()))
}

pub(super) fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code.as_u16(),
    });
    (code, axum::Json(body)).into_response()
}

fn query_pairs(query: &Option<String>) -> Vec<(String, String)> {
    query
        .as_deref()
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key), decode(value))
        })
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

fn param(query: &Option<String>, key: &str) -> Option<String> {
    query_pairs(query)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

/// Whether `labels` match a selector of `k=v` pairs.
fn selects(selector: &str, labels: &Value) -> bool {
    selector
        .split(',')
        .filter(|part| !part.is_empty())
        .all(|part| {
            let (key, value) = part.split_once('=').unwrap_or((part, ""));
            labels[key].as_str() == Some(value)
        })
}

async fn version() -> Response {
    axum::Json(json!({
        "major": "1", "minor": "37", "gitVersion": "v1.37.0-fake", "gitCommit": "fake", "gitTreeState": "clean",
        "buildDate": "2026-12-01T00:00:00Z", "goVersion": "go1.25", "compiler": "gc", "platform": "linux/amd64",
    }))
    .into_response()
}

async fn namespace_object(
    State(shared): State<Arc<Shared>>,
    UrlPath(ns): UrlPath<String>,
) -> Response {
    if ns != shared.namespace {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("namespaces \"{ns}\" not found"),
        );
    }
    axum::Json(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
        .into_response()
}

async fn review(
    State(shared): State<Arc<Shared>>,
    axum::Json(mut body): axum::Json<Value>,
) -> Response {
    let attributes = &body["spec"]["resourceAttributes"];
    let resource = match attributes["subresource"].as_str() {
        Some(sub) if !sub.is_empty() => {
            format!("{}/{sub}", attributes["resource"].as_str().unwrap())
        }
        _ => attributes["resource"].as_str().unwrap().to_string(),
    };
    let what = format!("{} {resource}", attributes["verb"].as_str().unwrap());
    let allowed = !shared.denied.lock().unwrap().contains(&what)
        && attributes["namespace"].as_str() == Some(shared.namespace.as_str());
    body["status"] = json!({"allowed": allowed});
    (StatusCode::CREATED, axum::Json(body)).into_response()
}

async fn create_job(
    State(shared): State<Arc<Shared>>,
    UrlPath(ns): UrlPath<String>,
    axum::Json(mut job): axum::Json<Value>,
) -> Response {
    if ns != shared.namespace {
        return status(StatusCode::NOT_FOUND, "NotFound", "no such namespace");
    }
    shared.keep("jobs", &job);
    let name = job["metadata"]["name"].as_str().unwrap().to_string();
    let mut objects = shared.objects.lock().unwrap();
    if objects.jobs.contains_key(&name) {
        return status(StatusCode::CONFLICT, "AlreadyExists", "the Job exists");
    }
    job["metadata"]["namespace"] = json!(ns);
    job["metadata"]["uid"] = json!(format!("uid-{name}"));
    job["metadata"]["creationTimestamp"] = json!(now_rfc3339());
    job["metadata"]["resourceVersion"] = json!(shared.next_version());
    job["status"] = json!({});
    objects.jobs.insert(name.clone(), job.clone());
    drop(objects);
    shared.record(format!("POST jobs {name}"));
    (StatusCode::CREATED, axum::Json(job)).into_response()
}

fn now_rfc3339() -> String {
    let output = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

async fn list_jobs(State(shared): State<Arc<Shared>>, RawQuery(query): RawQuery) -> Response {
    let selector = param(&query, "labelSelector").unwrap_or_default();
    let items: Vec<Value> = shared
        .objects
        .lock()
        .unwrap()
        .jobs
        .values()
        .filter(|job| selects(&selector, &job["metadata"]["labels"]))
        .cloned()
        .collect();
    axum::Json(json!({
        "apiVersion": "batch/v1", "kind": "JobList",
        "metadata": {"resourceVersion": shared.next_version()}, "items": items,
    }))
    .into_response()
}

async fn patch_job(
    State(shared): State<Arc<Shared>>,
    UrlPath((_, name)): UrlPath<(String, String)>,
    body: Bytes,
) -> Response {
    let patch: Value = serde_json::from_slice(&body).unwrap();
    let job = {
        let mut objects = shared.objects.lock().unwrap();
        let Some(job) = objects.jobs.get_mut(&name) else {
            return status(StatusCode::NOT_FOUND, "NotFound", "no such Job");
        };
        if let Some(suspend) = patch["spec"]["suspend"].as_bool() {
            job["spec"]["suspend"] = json!(suspend);
        }
        for (key, value) in patch["metadata"]["annotations"]
            .as_object()
            .into_iter()
            .flatten()
        {
            job["metadata"]["annotations"][key] = value.clone();
        }
        job["metadata"]["resourceVersion"] = json!(shared.next_version());
        job.clone()
    };
    shared.record(format!("PATCH jobs {name} {}", patch));
    if patch["spec"]["suspend"] == json!(false) {
        let now = shared.active.fetch_add(1, Ordering::SeqCst) + 1;
        shared.most_active.fetch_max(now, Ordering::SeqCst);
        tokio::spawn(play(Arc::clone(&shared), job.clone()));
    }
    axum::Json(job).into_response()
}

async fn delete_job(
    State(shared): State<Arc<Shared>>,
    UrlPath((_, name)): UrlPath<(String, String)>,
    body: Bytes,
) -> Response {
    let options: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (job, pods) = {
        let mut objects = shared.objects.lock().unwrap();
        let Some(job) = objects.jobs.remove(&name) else {
            return status(StatusCode::NOT_FOUND, "NotFound", "no such Job");
        };
        // The garbage collector: what the Job owns goes with it.
        let uid = job["metadata"]["uid"].clone();
        let owned = |object: &Value| {
            object["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|owners| owners.iter().any(|owner| owner["uid"] == uid))
        };
        objects.secrets.retain(|_, secret| !owned(secret));
        objects.policies.retain(|_, policy| !owned(policy));
        let pods: Vec<String> = objects
            .pods
            .iter()
            .filter(|(_, pod)| pod.job == name)
            .map(|(pod, _)| pod.clone())
            .collect();
        for pod in &pods {
            objects.pods.remove(pod);
        }
        (job, pods)
    };
    if job["spec"]["suspend"] == json!(false) {
        shared.active.fetch_sub(1, Ordering::SeqCst);
    }
    for pod in &pods {
        shared.podman(&["pod", "rm", "-f", "-t", "0", pod]).await;
    }
    // Podman keeps an emptyDir as a named volume: it goes with the pod, as in a cluster.
    shared.podman(&["volume", "rm", "-f", &name]).await;
    shared.record(format!(
        "DELETE jobs {name} {}",
        options["propagationPolicy"].as_str().unwrap_or("none")
    ));
    axum::Json(
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                      "details": {"name": name, "kind": "jobs"}}),
    )
    .into_response()
}

async fn create_secret(
    State(shared): State<Arc<Shared>>,
    axum::Json(mut secret): axum::Json<Value>,
) -> Response {
    shared.keep("secrets", &secret);
    let name = secret["metadata"]["name"].as_str().unwrap().to_string();
    secret["metadata"]["uid"] = json!(format!("uid-secret-{name}"));
    shared
        .objects
        .lock()
        .unwrap()
        .secrets
        .insert(name.clone(), secret.clone());
    shared.record(format!("POST secrets {name}"));
    (StatusCode::CREATED, axum::Json(secret)).into_response()
}

async fn create_policy(
    State(shared): State<Arc<Shared>>,
    axum::Json(mut policy): axum::Json<Value>,
) -> Response {
    let name = policy["metadata"]["name"].as_str().unwrap().to_string();
    policy["metadata"]["uid"] = json!(format!("uid-policy-{name}"));
    {
        let mut objects = shared.objects.lock().unwrap();
        if objects.policies.contains_key(&name) {
            return status(
                StatusCode::CONFLICT,
                "AlreadyExists",
                "the NetworkPolicy exists",
            );
        }
        objects.policies.insert(name.clone(), policy.clone());
    }
    shared.keep("networkpolicies", &policy);
    shared.record(format!("POST networkpolicies {name}"));
    (StatusCode::CREATED, axum::Json(policy)).into_response()
}
