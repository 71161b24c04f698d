//! Stage 1, who reviews each task: the task's own `review`, else the policy's `[review]`, resolved to a worker
//! profile at plan time (so a bad name is bad input with its line, and a retry months later reviews the same way).
//! With `cross = true` the tasks of a run review each other: each gets another task's profile than its author's.

use std::collections::BTreeMap;

use crate::input::InputError;
use crate::model::review::{ReviewMode, ReviewSpec};
use crate::model::{TaskSpec, WorkerProfile};
use crate::policy::Policy;
use crate::policy::review::DEFAULT_REVIEW_TIMEOUT;
use crate::tasks_file::{ReviewField, TaskFields, TasksFile};

/// The review task `index` asked for (before `cross` picks its reviewer): `None` when it has none.
pub fn wanted(
    file: &TasksFile,
    policy: &Policy,
    workers: &BTreeMap<String, WorkerProfile>,
    index: usize,
    fields: &TaskFields,
    author: &WorkerProfile,
) -> Result<Option<ReviewSpec>, InputError> {
    let key = format!("task[{}].review", index + 1);
    let settings = policy.review.as_ref();
    let field = fields.review.as_ref().or(file.defaults.review.as_ref());
    let Some(field) = field else {
        return from_policy(policy, workers, author);
    };
    let span = Some(field.span());
    let asked = asked(file, policy, workers, author, &key, field)?;
    // A repository's required review is a floor: a tasks file (often an agent's) may name another reviewer, but not
    // turn the review off or make it advisory.
    if let Some(settings) = settings.filter(|settings| settings.mode == ReviewMode::Required)
        && asked
            .as_ref()
            .is_none_or(|review| review.mode == ReviewMode::Advisory)
    {
        return Err(file
            .error_at(span, "this task turns off a review the policy requires")
            .key(&key)
            .fix(format!(
                "remove the task's review, or change [review] in {} (mode = \"advisory\" lets tasks choose)",
                settings.declared_in.display()
            )));
    }
    Ok(asked)
}

/// The review a task's own `review` asks for.
fn asked(
    file: &TasksFile,
    policy: &Policy,
    workers: &BTreeMap<String, WorkerProfile>,
    author: &WorkerProfile,
    key: &str,
    field: &toml::Spanned<ReviewField>,
) -> Result<Option<ReviewSpec>, InputError> {
    let settings = policy.review.as_ref();
    let timeout = settings.map_or(DEFAULT_REVIEW_TIMEOUT, |settings| settings.timeout);
    let policy_mode = settings.map_or(ReviewMode::Required, |settings| settings.mode);
    let span = Some(field.span());
    let profile = |name: &str, span: Option<std::ops::Range<usize>>| {
        workers.get(name).cloned().ok_or_else(|| {
            file.error_at(span, format!("no worker profile named `{name}` to review"))
                .key(key)
                .fix(known(workers))
        })
    };
    let spec = |profile: WorkerProfile, mode: ReviewMode| ReviewSpec {
        profile,
        mode,
        timeout,
        cross: false,
    };
    match field.get_ref() {
        ReviewField::Switch(false) => Ok(None),
        ReviewField::Switch(true) => match from_policy(policy, workers, author)? {
            Some(review) => Ok(Some(review)),
            None => Err(file
                .error_at(span, "review = true, but the policy has no [review]")
                .key(key)
                .fix("name the reviewer: review = \"NAME\", or add [review] worker = \"NAME\" to ccfan.toml")),
        },
        ReviewField::Worker(name) => Ok(Some(spec(profile(name, span)?, policy_mode))),
        ReviewField::Table(crate::tasks_file::ReviewTable { worker, mode }) => {
            let mode = match mode.as_deref() {
                None => policy_mode,
                Some("required") => ReviewMode::Required,
                Some("advisory") => ReviewMode::Advisory,
                Some(other) => {
                    return Err(file
                        .error_at(span, format!("`{other}` is not a review mode"))
                        .key(format!("{key}.mode"))
                        .fix(r#"write "required" (its verdict blocks) or "advisory" (comments only)"#));
                }
            };
            match worker {
                Some(name) => Ok(Some(spec(profile(name, span)?, mode))),
                None => match from_policy(policy, workers, author)? {
                    Some(review) => Ok(Some(ReviewSpec { mode, ..review })),
                    None => Err(file
                        .error_at(span, "review names no worker, and the policy has no [review]")
                        .key(format!("{key}.worker"))
                        .fix("write review = { worker = \"NAME\" }")),
                },
            }
        }
    }
}

/// The policy's `[review]` for a task written by `author`; with `cross`, a stand-in that [`cross`] replaces.
fn from_policy(
    policy: &Policy,
    workers: &BTreeMap<String, WorkerProfile>,
    author: &WorkerProfile,
) -> Result<Option<ReviewSpec>, InputError> {
    let Some(settings) = &policy.review else {
        return Ok(None);
    };
    let profile = match &settings.worker {
        Some(name) => workers.get(name).cloned().ok_or_else(|| {
            InputError::new(
                &settings.declared_in,
                format!("[review] names the worker profile `{name}`, which is not defined"),
            )
            .key("review.worker")
            .fix(known(workers))
        })?,
        // Only `cross` picks: the author stands in until it does.
        None => author.clone(),
    };
    Ok(Some(ReviewSpec {
        profile,
        mode: settings.mode,
        timeout: settings.timeout,
        cross: settings.cross,
    }))
}

/// `cross = true`: each task's reviewer becomes the profile of another task of the run (the next one after its
/// author's, in the tasks file's order, preferring another kind of agent), else the policy's `[review] worker`
/// when that differs from the author. Refused when no reviewer other than the author exists.
pub fn cross(file: &TasksFile, tasks: &mut [TaskSpec]) -> Result<(), InputError> {
    let mut profiles: Vec<WorkerProfile> = Vec::new();
    for task in tasks.iter() {
        if !profiles.iter().any(|known| known.name == task.worker.name) {
            profiles.push(task.worker.clone());
        }
    }
    for task in tasks.iter_mut() {
        let Some(review) = &mut task.review else {
            continue;
        };
        if !review.cross {
            continue;
        }
        match pick(&task.worker, &profiles) {
            Some(other) => review.profile = other.clone(),
            None if review.profile.name != task.worker.name => {}
            None => {
                return Err(InputError::new(
                    &file.path,
                    format!(
                        "review.cross = true, but every task of this run is written by `{}` and no other reviewer \
                         is named",
                        task.worker.name
                    ),
                )
                .key("review.cross")
                .fix("give the run's tasks different workers, or name a reviewer: [review] worker = \"NAME\""));
            }
        }
    }
    Ok(())
}

/// The reviewer `cross` gives a task written by `author`: the next profile after the author's that is another
/// kind (codex for claude, …), else the next other profile.
fn pick<'a>(author: &WorkerProfile, profiles: &'a [WorkerProfile]) -> Option<&'a WorkerProfile> {
    let at = profiles
        .iter()
        .position(|profile| profile.name == author.name)
        .unwrap_or(0);
    let order: Vec<&WorkerProfile> = profiles[at..]
        .iter()
        .chain(&profiles[..at])
        .filter(|profile| profile.name != author.name)
        .collect();
    let kind = |profile: &WorkerProfile| std::mem::discriminant(&profile.kind);
    order
        .iter()
        .find(|profile| kind(profile) != kind(author))
        .or(order.first())
        .copied()
}

fn known(workers: &BTreeMap<String, WorkerProfile>) -> String {
    let names: Vec<&str> = workers.keys().map(String::as_str).collect();
    if names.is_empty() {
        "define a [workers.NAME] profile to review with".to_string()
    } else {
        format!("use one of: {}", names.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::WorkerKind;

    fn config() -> crate::model::AgentConfig {
        crate::model::AgentConfig {
            program: "agent".into(),
            model: None,
            args: vec![],
            max_turns: None,
            api_retry: crate::model::ApiRetryLimit::default(),
        }
    }

    fn profile(name: &str, kind: &str) -> WorkerProfile {
        let kind = match kind {
            "codex" => WorkerKind::Codex(config()),
            "claude" => WorkerKind::Claude(config()),
            _ => WorkerKind::Command {
                argv: vec!["true".into()],
            },
        };
        WorkerProfile {
            name: name.into(),
            kind,
            timeout: None,
            env: vec![],
            pass_env: vec![],
            network: None,
            writable: vec![],
        }
    }

    #[test]
    fn cross_prefers_another_kind_then_another_name() {
        let profiles = vec![
            profile("cx", "codex"),
            profile("cx2", "codex"),
            profile("cl", "claude"),
        ];
        assert_eq!(pick(&profiles[0], &profiles).unwrap().name, "cl");
        assert_eq!(pick(&profiles[2], &profiles).unwrap().name, "cx");
        let same = vec![profile("a", "command"), profile("b", "command")];
        assert_eq!(pick(&same[0], &same).unwrap().name, "b");
        assert_eq!(pick(&same[1], &same).unwrap().name, "a");
        assert!(pick(&same[0], &same[..1]).is_none());
    }
}
