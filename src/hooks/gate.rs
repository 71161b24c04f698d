//! The hooks' gate as a library function: a hook invocation in (which hook, its arguments, what git and the
//! pre-commit framework put in its environment, and its standard input when it needs one), the verified changes
//! out. Which change each hook judges — the staged tree, a merge with its merged commits, every pushed range —
//! is decided here; the CLI only gathers the invocation and renders the result.

use std::path::PathBuf;

use super::HookName;
use crate::git::RepoPaths;
use crate::input::InputError;
use crate::pipeline::PipelineError;
use crate::pipeline::change::{self, ChangeKind, ChangeVerification, Target};
use crate::pipeline::gate::Gate;
use crate::policy::Policy;

/// Everything a hook was called with.
pub struct HookInvocation<'a> {
    /// The hook as installed (the pre-commit framework runs one entry for pre-commit and pre-merge-commit).
    pub hook: HookName,
    /// Its arguments (pre-push: the remote's name and URL).
    pub args: &'a [String],
    /// Its environment: `GITHEAD_<sha>`, the framework's `PRE_COMMIT_*` (values read lossily: only names and
    /// ref names are taken from them).
    pub env: &'a [(String, String)],
    /// The index git gave it (`GIT_INDEX_FILE`, made absolute against where git ran the hook), byte for byte.
    pub index_file: Option<PathBuf>,
    /// Its standard input, read only when it is needed (pre-push's ref lines).
    pub stdin: &'a mut dyn FnMut() -> Result<String, InputError>,
}

impl HookInvocation<'_> {
    fn var(&self, name: &str) -> Option<String> {
        self.env
            .iter()
            .find(|(key, value)| key == name && !value.is_empty())
            .map(|(_, value)| value.clone())
    }

    /// The commits `git merge` is merging.
    fn merging_heads(&self) -> Vec<String> {
        merging_heads(self.env.iter().map(|(name, _)| name.as_str()))
    }
}

/// The commits `git merge` is merging, as it names them to its hooks (`GITHEAD_<sha>=<name>`), from the names of
/// the environment's variables.
pub fn merging_heads<'n>(names: impl Iterator<Item = &'n str>) -> Vec<String> {
    names
        .filter_map(|name| {
            let sha = name.strip_prefix("GITHEAD_")?;
            (sha.len() >= 40 && sha.bytes().all(|byte| byte.is_ascii_hexdigit()))
                .then(|| sha.to_string())
        })
        .collect()
}

/// Runs the gate a hook stands for: returns the hook as judged (a pre-commit during a merge is the merge's) and
/// the verified changes (none when a push brings the remote nothing new).
pub fn verify_hook(
    repo: &RepoPaths,
    policy: &Policy,
    gate: &Gate<'_>,
    invocation: &mut HookInvocation<'_>,
) -> Result<(HookName, Vec<ChangeVerification>), PipelineError> {
    let merging = invocation.merging_heads();
    let hook = match invocation.hook {
        HookName::PreCommit if !merging.is_empty() => HookName::PreMergeCommit,
        other => other,
    };
    let (targets, stages) = match hook {
        HookName::PreCommit | HookName::PreMergeCommit => (
            vec![Target::Staged {
                index_file: invocation.index_file.clone(),
                merging,
            }],
            &policy.hooks.stages,
        ),
        HookName::PrePush => (push_targets(repo, invocation)?, &policy.hooks.push_stages),
    };
    let mut results = Vec::new();
    for target in &targets {
        let change = change::resolve(repo, target)?;
        if change.kind != ChangeKind::Staged && change.commits.is_empty() {
            continue; // the remote has all of it already
        }
        results.push(gate.check_change(&change, stages)?);
    }
    Ok((hook, results))
}

/// What a pre-push hook pushes: from the pre-commit framework's variables when it runs us, else from git's lines on
/// standard input.
fn push_targets(
    repo: &RepoPaths,
    invocation: &mut HookInvocation<'_>,
) -> Result<Vec<Target>, PipelineError> {
    if let (Some(from), Some(to)) = (
        invocation.var("PRE_COMMIT_FROM_REF"),
        invocation.var("PRE_COMMIT_TO_REF"),
    ) {
        return Ok(vec![Target::Range {
            spec: format!("{from}..{to}"),
        }]);
    }
    let pushed = match (
        invocation.var("PRE_COMMIT"),
        invocation.var("PRE_COMMIT_LOCAL_BRANCH"),
    ) {
        // The framework pushing a branch down to its root commit gives no range: everything the remote lacks.
        (Some(_), Some(local)) => vec![change::PushedRef {
            local_sha: crate::git::known_commit(repo, &local)?.unwrap_or_else(|| local.clone()),
            remote_ref: invocation
                .var("PRE_COMMIT_REMOTE_BRANCH")
                .unwrap_or_else(|| local.clone()),
            remote_sha: "0".repeat(40),
            local_ref: local,
        }],
        (_, _) => change::parse_pushed(&(invocation.stdin)()?)?,
    };
    let remote = invocation
        .var("PRE_COMMIT_REMOTE_NAME")
        .or_else(|| invocation.args.first().cloned());
    change::push_targets(repo, remote.as_deref(), &pushed)
}
