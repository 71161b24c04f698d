//! The fake's pods: a Job's pod played by Podman as the kubelet would make it, its status read back from Podman,
//! lists and watches of it, and its log.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use super::{Pod, Shared, now_rfc3339, param, podman_conf, selects};

/// The Job's pod, as the kubelet would make it: once the Secret it names is there, with the Secret's values as
/// its variables, on no network when a NetworkPolicy selecting it allows no egress.
pub(super) async fn play(shared: Arc<Shared>, job: Value) {
    let job_name = job["metadata"]["name"].as_str().unwrap().to_string();
    // As the Job controller names them: the Job's name and five random characters.
    let suffix: String = shared
        .next_version()
        .chars()
        .rev()
        .chain("xxxxx".chars())
        .take(5)
        .map(|digit| (b'a' + (digit as u8 % 26)) as char)
        .collect();
    let pod_name = format!("{job_name}-{suffix}");
    let template = job["spec"]["template"].clone();
    let labels = template["metadata"]["labels"].clone();
    let mut spec = template["spec"].clone();
    let containers: Vec<String> = spec["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    shared.objects.lock().unwrap().pods.insert(
        pod_name.clone(),
        Pod {
            job: job_name.clone(),
            labels: labels.clone(),
            containers,
            spec: spec.clone(),
            played: None,
        },
    );
    let started = Instant::now();
    let secret_values = loop {
        let wanted: Vec<String> = spec["containers"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|c| c["envFrom"].as_array().cloned().unwrap_or_default())
            .filter_map(|from| from["secretRef"]["name"].as_str().map(String::from))
            .collect();
        let values = {
            let objects = shared.objects.lock().unwrap();
            wanted
                .iter()
                .all(|name| objects.secrets.contains_key(name))
                .then(|| {
                    wanted
                        .iter()
                        .flat_map(|name| {
                            objects.secrets[name]["stringData"]
                                .as_object()
                                .cloned()
                                .unwrap_or_default()
                        })
                        .collect::<Vec<_>>()
                })
        };
        if let Some(values) = values {
            break values;
        }
        if started.elapsed() > Duration::from_secs(30) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for container in spec["containers"].as_array_mut().unwrap() {
        if container.get("envFrom").is_some() {
            let env: Vec<Value> = secret_values
                .iter()
                .map(|(name, value)| json!({"name": name, "value": value}))
                .collect();
            container["env"] = json!(env);
            container.as_object_mut().unwrap().remove("envFrom");
        }
    }
    let closed = shared
        .objects
        .lock()
        .unwrap()
        .policies
        .values()
        .filter(|policy| {
            let selector = &policy["spec"]["podSelector"]["matchLabels"];
            selector
                .as_object()
                .is_some_and(|wanted| wanted.iter().all(|(k, v)| labels[k] == *v))
        })
        // Policies add up: the pod is closed when some select it and none of those allows egress.
        .fold(None, |closed: Option<bool>, policy| {
            Some(closed.unwrap_or(true) && policy["spec"]["egress"] == json!([]))
        })
        .unwrap_or(false);
    let mut pod_labels = labels.clone();
    pod_labels["ccfan-fake"] = json!(shared.id);
    let manifest = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod_name, "labels": pod_labels},
        "spec": spec,
    });
    let file = shared.dir.join(format!("{pod_name}.json"));
    std::fs::write(&file, manifest.to_string()).unwrap();
    let file = file.to_string_lossy().into_owned();
    let mut args = vec!["kube", "play", "--quiet"];
    if closed {
        args.extend(["--network", "none"]);
    }
    args.push(&file);
    let played = shared.podman(&args).await;
    let result = if played.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&played.stderr).trim().to_string())
    };
    let deleted = {
        let mut objects = shared.objects.lock().unwrap();
        match objects.pods.get_mut(&pod_name) {
            Some(pod) => {
                pod.played = Some(result);
                false
            }
            None => true,
        }
    };
    // Deleted while it was being played.
    if deleted {
        shared
            .podman(&["pod", "rm", "-f", "-t", "0", &pod_name])
            .await;
    }
}

/// A container's state in Podman: (`created`/`running`/`exited`/`missing`, exit code).
pub(super) async fn container_state(shared: &Shared, container: &str) -> (String, i64) {
    let inspected = shared
        .podman(&[
            "inspect",
            "--format",
            "{{.State.Status}} {{.State.ExitCode}}",
            container,
        ])
        .await;
    let text = String::from_utf8_lossy(&inspected.stdout)
        .trim()
        .to_string();
    match text.split_once(' ') {
        Some((state, code)) if inspected.status.success() => {
            (state.to_string(), code.parse().unwrap_or(-1))
        }
        _ => ("missing".to_string(), -1),
    }
}

async fn pod_object(shared: &Shared, name: &str, pod: &Pod) -> Value {
    let mut statuses = Vec::new();
    let mut phase = "Pending";
    match &pod.played {
        None => {
            for container in &pod.containers {
                statuses.push(
                    json!({"name": container, "image": "", "imageID": "", "ready": false,
                    "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}),
                );
            }
        }
        Some(Err(why)) => {
            for container in &pod.containers {
                statuses.push(json!({"name": container, "image": "", "imageID": "", "ready": false,
                    "restartCount": 0, "state": {"waiting": {"reason": "ErrImagePull", "message": why}}}));
            }
        }
        Some(Ok(())) => {
            let mut running = 0;
            for container in &pod.containers {
                let (state, code) = container_state(shared, &format!("{name}-{container}")).await;
                let state = match state.as_str() {
                    "running" => {
                        running += 1;
                        json!({"running": {"startedAt": now_rfc3339()}})
                    }
                    "exited" | "stopped" => json!({"terminated": {"exitCode": code}}),
                    _ => json!({"waiting": {"reason": "ContainerCreating"}}),
                };
                statuses.push(
                    json!({"name": container, "image": "", "imageID": "", "ready": running > 0,
                    "restartCount": 0, "state": state}),
                );
            }
            phase = if running > 0 { "Running" } else { "Succeeded" };
        }
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": shared.namespace, "labels": pod.labels,
                     "resourceVersion": shared.next_version()},
        "spec": pod.spec,
        "status": {"phase": phase, "containerStatuses": statuses},
    })
}

async fn pods_selected(shared: &Shared, selector: &str) -> Vec<Value> {
    let pods: Vec<(String, Pod)> = shared
        .objects
        .lock()
        .unwrap()
        .pods
        .iter()
        .filter(|(_, pod)| selects(selector, &pod.labels))
        .map(|(name, pod)| (name.clone(), pod.clone()))
        .collect();
    let mut objects = Vec::new();
    for (name, pod) in pods {
        objects.push(pod_object(shared, &name, &pod).await);
    }
    objects
}

pub(super) async fn list_pods(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
) -> Response {
    let selector = param(&query, "labelSelector").unwrap_or_default();
    if param(&query, "watch").as_deref() == Some("true") {
        let limit: u64 = param(&query, "timeoutSeconds")
            .and_then(|t| t.parse().ok())
            .unwrap_or(30);
        return watch_pods(shared, selector, Duration::from_secs(limit));
    }
    let items = pods_selected(&shared, &selector).await;
    axum::Json(json!({"apiVersion": "v1", "kind": "PodList",
                      "metadata": {"resourceVersion": shared.next_version()}, "items": items}))
    .into_response()
}

/// One pod, as a list has it.
pub(super) async fn get_pod(
    State(shared): State<Arc<Shared>>,
    UrlPath((_, name)): UrlPath<(String, String)>,
) -> Response {
    let pod = shared.objects.lock().unwrap().pods.get(&name).cloned();
    match pod {
        Some(pod) => axum::Json(pod_object(&shared, &name, &pod).await).into_response(),
        None => super::status(axum::http::StatusCode::NOT_FOUND, "NotFound", "no such pod"),
    }
}

/// A watch: every 200 ms the selected pods are looked at, and each change is a line of `{"type", "object"}`.
fn watch_pods(shared: Arc<Shared>, selector: String, limit: Duration) -> Response {
    let until = Instant::now() + limit;
    let seen: BTreeMap<String, Value> = BTreeMap::new();
    let stream = futures_util::stream::unfold(
        (shared, selector, seen),
        move |(shared, selector, mut seen)| async move {
            loop {
                if Instant::now() > until || !shared.online.load(Ordering::SeqCst) {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                let now = pods_selected(&shared, &selector).await;
                let mut lines = String::new();
                let mut names = Vec::new();
                for pod in now {
                    let name = pod["metadata"]["name"].as_str().unwrap().to_string();
                    names.push(name.clone());
                    let mut compared = pod.clone();
                    compared["metadata"]["resourceVersion"] = Value::Null;
                    compared["status"]["containerStatuses"]
                        .as_array_mut()
                        .into_iter()
                        .flatten()
                        .for_each(|s| {
                            s["state"]["running"] = json!(s["state"].get("running").is_some())
                        });
                    let kind = match seen.get(&name) {
                        None => "ADDED",
                        Some(before) if *before != compared => "MODIFIED",
                        Some(_) => continue,
                    };
                    seen.insert(name, compared);
                    lines.push_str(&json!({"type": kind, "object": pod}).to_string());
                    lines.push('\n');
                }
                let gone: Vec<String> = seen
                    .keys()
                    .filter(|n| !names.contains(n))
                    .cloned()
                    .collect();
                for name in gone {
                    let before = seen.remove(&name).unwrap();
                    lines.push_str(&json!({"type": "DELETED", "object": before}).to_string());
                    lines.push('\n');
                }
                if !lines.is_empty() {
                    return Some((
                        Ok::<Bytes, std::io::Error>(Bytes::from(lines)),
                        (shared, selector, seen),
                    ));
                }
            }
        },
    );
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap()
}

pub(super) async fn pod_log(
    State(shared): State<Arc<Shared>>,
    UrlPath((_, name)): UrlPath<(String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let container = param(&query, "container").unwrap_or_default();
    // Both of the container's streams, as a cluster's log has them.
    let mut args = vec![
        "-c".to_string(),
        "exec \"$0\" logs \"$@\" 2>&1".to_string(),
        shared.podman.to_string_lossy().into_owned(),
    ];
    if param(&query, "follow").as_deref() == Some("true") {
        args.push("-f".to_string());
    }
    if let Some(tail) = param(&query, "tailLines") {
        args.push(format!("--tail={tail}"));
    }
    if param(&query, "timestamps").as_deref() == Some("true") {
        args.push("--timestamps".to_string());
    }
    if let Some(since) = param(&query, "sinceTime") {
        args.push(format!("--since={since}"));
    }
    // A proxy that lets log streams go: each ends after this long.
    let cut = *shared.cut_logs.lock().unwrap();
    let ends = cut.map(|after| Instant::now() + after);
    args.push(format!("{name}-{container}"));
    let mut command = tokio::process::Command::new("sh");
    if let Some(conf) = podman_conf() {
        command.env("CONTAINERS_CONF", conf);
    }
    let mut child = command
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stream =
        futures_util::stream::unfold((child, stdout), move |(child, mut stdout)| async move {
            let mut chunk = vec![0u8; 8192];
            let read = match ends {
                Some(ends) => {
                    match tokio::time::timeout_at(ends.into(), stdout.read(&mut chunk)).await {
                        Ok(read) => read,
                        Err(_) => return None,
                    }
                }
                None => stdout.read(&mut chunk).await,
            };
            match read {
                Ok(0) | Err(_) => None,
                Ok(read) => {
                    chunk.truncate(read);
                    Some((
                        Ok::<Bytes, std::io::Error>(Bytes::from(chunk)),
                        (child, stdout),
                    ))
                }
            }
        });
    Response::builder().body(Body::from_stream(stream)).unwrap()
}
