//! Policy, `[sandbox.kubernetes]`: where workers run with `backend = "kubernetes"` — the kubeconfig context and
//! namespace, how many of ccfan's Jobs may run there at once, how long a finished Job is kept, where a worker with
//! the network may reach, and the image pull policy. The image and CPUs come from `[sandbox.container]`, so one
//! line (`backend`) moves a policy from Podman to a cluster.

use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use crate::input::InputError;

/// `[sandbox.kubernetes]`, resolved (defaults filled in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesSettings {
    /// The kubeconfig context (`None`: the current one, or the in-cluster service account).
    pub context: Option<String>,
    /// The namespace (`None`: the context's, else `default`).
    pub namespace: Option<String>,
    /// The most of ccfan's Jobs active at once in the namespace, from every run and every user of it.
    pub max_jobs: u32,
    /// `ttlSecondsAfterFinished` of each Job (the cluster removes a finished Job ccfan could not).
    pub ttl_seconds: u32,
    /// Where a worker whose profile has the network may reach (CIDRs; empty: anywhere). DNS is always allowed to
    /// such a worker; a worker without the network reaches nothing.
    pub egress: Vec<String>,
    /// `imagePullPolicy`: `Always`, `IfNotPresent` or `Never`.
    pub pull_policy: String,
    /// How long an attempt's pod may take to start (scheduling, image pull) before the attempt fails.
    pub start_timeout: std::time::Duration,
    /// How long the API may fail to answer before a running attempt counts as lost (`interrupted`).
    pub link_timeout: std::time::Duration,
    /// The most disk an attempt's pod may use (its emptyDir's `sizeLimit` and the runner's `ephemeral-storage`);
    /// past it the kubelet evicts the pod and the attempt is lost. `None`: the namespace's limits only.
    pub storage: Option<u64>,
}

impl Default for KubernetesSettings {
    fn default() -> Self {
        KubernetesSettings {
            context: None,
            namespace: None,
            max_jobs: 16,
            ttl_seconds: 600,
            egress: Vec::new(),
            pull_policy: "IfNotPresent".to_string(),
            start_timeout: std::time::Duration::from_secs(300),
            link_timeout: std::time::Duration::from_secs(60),
            storage: None,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KubernetesSection {
    context: Option<Spanned<String>>,
    namespace: Option<Spanned<String>>,
    max_jobs: Option<Spanned<i64>>,
    ttl_seconds: Option<Spanned<i64>>,
    egress: Option<Vec<Spanned<String>>>,
    pull_policy: Option<Spanned<String>>,
    start_timeout: Option<Spanned<String>>,
    link_timeout: Option<Spanned<String>>,
    storage: Option<Spanned<String>>,
}

/// `[sandbox.kubernetes]` over the base's.
pub(super) fn resolve(
    file: &Path,
    source: &str,
    section: Option<KubernetesSection>,
    base: Option<&KubernetesSettings>,
) -> Result<KubernetesSettings, InputError> {
    let mut settings = base.cloned().unwrap_or_default();
    let Some(section) = section else {
        return Ok(settings);
    };
    let key = Key { file, source };
    if let Some(context) = key.check(section.context, "context", |c| Some(c.clone()).filter(|c| !c.trim().is_empty()),
        |_| "the context is empty".into(),
        "name a context of your kubeconfig (`kubectl config get-contexts`), or leave it out for the current one")? {
        settings.context = Some(context);
    }
    if let Some(namespace) = key.check(section.namespace, "namespace", |n| Some(n.clone()).filter(|n| dns_label(n)),
        |n| format!("`{n}` is not a namespace name"),
        "use lowercase letters, digits and '-', at most 63, starting and ending with a letter or digit")? {
        settings.namespace = Some(namespace);
    }
    if let Some(max) = key.check(
        section.max_jobs,
        "max_jobs",
        |max| u32::try_from(*max).ok().filter(|max| *max > 0),
        |max| format!("{max} is not a number of Jobs"),
        "give a whole number of at least 1",
    )? {
        settings.max_jobs = max;
    }
    if let Some(ttl) = key.check(
        section.ttl_seconds,
        "ttl_seconds",
        |ttl| u32::try_from(*ttl).ok(),
        |ttl| format!("{ttl} is not a number of seconds"),
        "give a whole number of seconds, e.g. 600",
    )? {
        settings.ttl_seconds = ttl;
    }
    if let Some(egress) = section.egress {
        settings.egress = Vec::with_capacity(egress.len());
        for cidr in egress {
            let cidr = key.check(Some(cidr), "egress", |c| Some(c.clone()).filter(|c| is_cidr(c)),
                |c| format!("`{c}` is not a CIDR"),
                "write address blocks such as \"10.0.0.0/8\" or \"2001:db8::/32\"; leave egress out to allow any")?;
            settings.egress.extend(cidr);
        }
    }
    let pull = |p: &String| {
        Some(p.clone()).filter(|p| matches!(p.as_str(), "Always" | "IfNotPresent" | "Never"))
    };
    if let Some(policy) = key.check(
        section.pull_policy,
        "pull_policy",
        pull,
        |p| format!("`{p}` is not an image pull policy"),
        "write \"Always\", \"IfNotPresent\" or \"Never\"",
    )? {
        settings.pull_policy = policy;
    }
    let duration = |d: &String| humantime::parse_duration(d).ok().filter(|d| !d.is_zero());
    let not_one = |d: &String| format!("`{d}` is not a duration");
    let fix = "write a duration such as \"5m\" or \"90s\"";
    if let Some(limit) = key.check(
        section.start_timeout,
        "start_timeout",
        duration,
        not_one,
        fix,
    )? {
        settings.start_timeout = limit;
    }
    if let Some(limit) = key.check(section.link_timeout, "link_timeout", duration, not_one, fix)? {
        settings.link_timeout = limit;
    }
    if let Some(storage) = key.check(
        section.storage,
        "storage",
        |s| crate::util::parse_size(s).ok().filter(|bytes| *bytes > 0),
        |s| format!("`{s}` is not a size"),
        "write a size such as \"20GiB\", or leave storage out for the namespace's limits",
    )? {
        settings.storage = Some(storage);
    }
    Ok(settings)
}

/// Where `[sandbox.kubernetes]` is, for its errors.
struct Key<'a> {
    file: &'a Path,
    source: &'a str,
}

impl Key<'_> {
    /// `value` through `ok`, or the error naming `sandbox.kubernetes.<key>`, its place and the fix.
    fn check<S, T>(
        &self,
        value: Option<Spanned<S>>,
        key: &str,
        ok: impl Fn(&S) -> Option<T>,
        message: impl Fn(&S) -> String,
        fix: &str,
    ) -> Result<Option<T>, InputError> {
        let Some(value) = value else {
            return Ok(None);
        };
        ok(value.get_ref()).map(Some).ok_or_else(|| {
            InputError::new(self.file, message(value.get_ref()))
                .key(format!("sandbox.kubernetes.{key}"))
                .at_offset(self.source, Some(value.span().start))
                .fix(fix)
        })
    }
}

/// A DNS-1123 label (a namespace's name).
pub(crate) fn dns_label(name: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    (1..=63).contains(&name.len())
        && name.chars().all(|c| alnum(c) || c == '-')
        && name.starts_with(alnum)
        && name.ends_with(alnum)
}

/// An IPv4 or IPv6 address block, `address/prefix`.
fn is_cidr(text: &str) -> bool {
    let Some((address, prefix)) = text.split_once('/') else {
        return false;
    };
    let Ok(prefix) = prefix.parse::<u8>() else {
        return false;
    };
    match address.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => prefix <= 32,
        Ok(std::net::IpAddr::V6(_)) => prefix <= 128,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<KubernetesSettings, InputError> {
        let section: KubernetesSection = toml::from_str(text).unwrap();
        resolve(Path::new("ccfan.toml"), text, Some(section), None)
    }

    #[test]
    fn settings_resolve_with_defaults() {
        let settings =
            parse("namespace = \"agents\"\negress = [\"10.0.0.0/8\", \"::/0\"]\n").unwrap();
        assert_eq!(settings.namespace.as_deref(), Some("agents"));
        assert_eq!(settings.egress, ["10.0.0.0/8", "::/0"]);
        assert_eq!(settings.storage, None);
        assert_eq!(
            parse("storage = \"20GiB\"\n").unwrap().storage,
            Some(20 << 30)
        );
        assert_eq!(settings.max_jobs, 16);
        assert_eq!(settings.pull_policy, "IfNotPresent");
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, key) in [
            ("namespace = \"Agents\"", "sandbox.kubernetes.namespace"),
            ("max_jobs = 0", "sandbox.kubernetes.max_jobs"),
            ("egress = [\"10.0.0.0\"]", "sandbox.kubernetes.egress"),
            ("egress = [\"10.0.0.0/33\"]", "sandbox.kubernetes.egress"),
            (
                "pull_policy = \"sometimes\"",
                "sandbox.kubernetes.pull_policy",
            ),
            (
                "start_timeout = \"soon\"",
                "sandbox.kubernetes.start_timeout",
            ),
            ("ttl_seconds = -1", "sandbox.kubernetes.ttl_seconds"),
            ("storage = \"0\"", "sandbox.kubernetes.storage"),
            ("storage = \"lots\"", "sandbox.kubernetes.storage"),
            ("link_timeout = \"0s\"", "sandbox.kubernetes.link_timeout"),
        ] {
            let error = parse(text).unwrap_err().to_string();
            assert!(error.contains(key), "{text}: {error}");
        }
    }
}
