//! Stage 1, plan: a parsed tasks file + the policy → a [`Plan`] of fully resolved tasks. Pure (no I/O) so every
//! bad value is reported, with its file, line and key, before any state or worktree exists.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use crate::input::InputError;
use crate::model::{TaskId, TaskSpec, WorkerProfile};
use crate::policy::{self, Policy};
use crate::tasks_file::{TaskFields, TasksFile};

/// What a run will do: tasks in task-file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Resolved tasks.
    pub tasks: Vec<TaskSpec>,
}

/// Resolves every task of `file` against `policy`.
pub fn plan(file: &TasksFile, policy: &Policy) -> Result<Plan, InputError> {
    if file.tasks.is_empty() {
        return Err(InputError::new(&file.path, "the tasks file holds no task")
            .key("task")
            .fix("add at least one [[task]] table with a goal"));
    }
    check_defaults(file)?;
    let mut workers: BTreeMap<String, WorkerProfile> = policy.workers.clone();
    let base_dir = file.path.parent().unwrap_or(std::path::Path::new("."));
    for (name, section) in &file.workers {
        let profile = section
            .resolve(name, &file.path, &file.source, base_dir)
            .map_err(|mut error| {
                if !file.has_lines {
                    error.line = None;
                }
                error
            })?;
        workers.insert(name.clone(), profile);
    }
    let mut seen = HashSet::new();
    let mut tasks = Vec::with_capacity(file.tasks.len());
    for (index, entry) in file.tasks.iter().enumerate() {
        let (id, goal) = identity(file, index, entry, &mut seen)?;
        let fields = entry.get_ref();
        let key = |name: &str| format!("task[{}].{name}", index + 1);
        let located = |mut error: InputError| {
            if !file.has_lines {
                error.line = None;
            }
            error
        };
        let allowed = match fields.allowed.as_ref().or(file.defaults.allowed.as_ref()) {
            Some(globs) => policy::check_globs(&file.path, &file.source, &key("allowed"), globs)
                .map_err(located)?,
            None => policy.allowed.clone(),
        };
        let mut denied = policy.denied.clone();
        if let Some(globs) = fields.denied.as_ref().or(file.defaults.denied.as_ref()) {
            for glob in policy::check_globs(&file.path, &file.source, &key("denied"), globs)
                .map_err(located)?
            {
                if !denied.contains(&glob) {
                    denied.push(glob);
                }
            }
        }
        let worker = pick_worker(file, policy, &workers, index, entry, &id)?;
        let timeout = match fields.timeout.as_ref().or(file.defaults.timeout.as_ref()) {
            Some(value) => policy::duration(&file.path, &file.source, &key("timeout"), value)
                .map_err(located)?,
            None => worker.timeout.unwrap_or(policy.timeout),
        };
        let review = super::reviewers::wanted(file, policy, &workers, index, fields, &worker)
            .map_err(located)?;
        tasks.push(TaskSpec {
            id,
            goal,
            allowed,
            denied,
            constraints: list(
                fields
                    .constraints
                    .clone()
                    .or(file.defaults.constraints.clone()),
            ),
            acceptance: list(
                fields
                    .acceptance
                    .clone()
                    .or(file.defaults.acceptance.clone()),
            ),
            worker,
            timeout: clamp_timeout(timeout),
            after: Vec::new(),
            candidate: None,
            review,
        });
    }
    super::order::resolve_after(file, &mut tasks)?;
    let mut tasks = super::candidates::expand_all(file, tasks, &workers)?;
    super::reviewers::cross(file, &mut tasks)?;
    Ok(Plan { tasks })
}

/// Task `index`'s id (checked, unique) and goal (not empty).
fn identity(
    file: &TasksFile,
    index: usize,
    entry: &toml::Spanned<crate::tasks_file::TaskFields>,
    seen: &mut HashSet<TaskId>,
) -> Result<(TaskId, String), InputError> {
    let fields = entry.get_ref();
    let key = |name: &str| format!("task[{}].{name}", index + 1);
    let id = match &fields.id {
        Some(id) => TaskId::parse(id.get_ref().as_str()).map_err(|_| {
            file.error_at(
                Some(id.span()),
                format!("`{}` is not a valid task id", id.get_ref()),
            )
            .key(key("id"))
            .fix("use 1-64 letters, digits, `-`, `_` or `.`, not starting with `.` or `-`")
        })?,
        None => TaskId::in_file_at(index),
    };
    if !seen.insert(id.clone()) {
        return Err(file
            .error_at(
                fields.id.as_ref().map(|i| i.span()).or(Some(entry.span())),
                format!("duplicate task id `{id}`"),
            )
            .key(key("id"))
            .fix("give every task its own id (unnamed tasks are t1, t2, … by position)"));
    }
    let goal = match &fields.goal {
        Some(goal) if goal.get_ref().trim().is_empty() => {
            return Err(file
                .error_at(Some(goal.span()), "the goal is empty")
                .key(key("goal"))
                .fix("write what the worker must achieve"));
        }
        Some(goal) => goal.get_ref().clone(),
        None => {
            return Err(file
                .error_at(Some(entry.span()), format!("task `{id}` has no goal"))
                .key(key("goal"))
                .fix("add goal = \"what the worker must achieve\""));
        }
    };
    Ok((id, goal))
}

/// The worker profile task `index` runs with: its own `worker`, the tasks file's default, or the policy's.
fn pick_worker(
    file: &TasksFile,
    policy: &Policy,
    workers: &BTreeMap<String, WorkerProfile>,
    index: usize,
    entry: &toml::Spanned<crate::tasks_file::TaskFields>,
    id: &str,
) -> Result<WorkerProfile, InputError> {
    let key = format!("task[{}].worker", index + 1);
    let fields = entry.get_ref();
    // Best-of-N with `workers`: each candidate gets its own (checked where they are made); the first stands in.
    if let (None, Some(names)) = (&fields.worker, &fields.workers)
        && let Some(name) = names.get_ref().first()
    {
        return workers.get(name).cloned().ok_or_else(|| {
            file.error_at(
                Some(names.span()),
                format!("no worker profile named `{name}`"),
            )
            .key(format!("task[{}].workers", index + 1))
            .fix(known_workers(workers))
        });
    }
    match fields.worker.as_ref().or(file.defaults.worker.as_ref()) {
        Some(name) => workers.get(name.get_ref()).cloned().ok_or_else(|| {
            file.error_at(
                Some(name.span()),
                format!("no worker profile named `{}`", name.get_ref()),
            )
            .key(key)
            .fix(known_workers(workers))
        }),
        None => match &policy.default_worker {
            Some(name) => workers.get(name).cloned().ok_or_else(|| {
                InputError::new(
                    &file.path,
                    format!("the policy's run.worker names `{name}`, which is not defined"),
                )
                .key("run.worker")
                .fix(known_workers(workers))
            }),
            None => Err(file
                .error_at(Some(entry.span()), format!("task `{id}` names no worker"))
                .key(key)
                .fix(if workers.is_empty() {
                    known_workers(workers)
                } else {
                    format!(
                        "set worker = \"NAME\" on the task or in [defaults], or run.worker in ccfan.toml; {}",
                        known_workers(workers)
                    )
                })),
        },
    }
}

fn list(value: Option<crate::tasks_file::StringList>) -> Vec<String> {
    value
        .map(crate::tasks_file::StringList::into_vec)
        .unwrap_or_default()
}

/// Timeouts beyond a week are surely typos; keep arithmetic on deadlines safe.
fn clamp_timeout(timeout: Duration) -> Duration {
    timeout.min(Duration::from_secs(7 * 24 * 3600))
}

fn known_workers(workers: &BTreeMap<String, WorkerProfile>) -> String {
    if workers.is_empty() {
        "no worker profile exists: install the Codex CLI (`codex`) or Claude Code (`claude`) to get its built-in profile, or define [workers.NAME] kind = \"command\", command = [...] in ccfan.toml (`ccfan init` writes one)".to_string()
    } else {
        let names: Vec<&str> = workers.keys().map(String::as_str).collect();
        format!("use one of: {}", names.join(", "))
    }
}

fn check_defaults(file: &TasksFile) -> Result<(), InputError> {
    let TaskFields {
        id,
        goal,
        after,
        candidates,
        workers,
        ..
    } = &file.defaults;
    if candidates.is_some() || workers.is_some() {
        return Err(
            InputError::new(&file.path, "[defaults] cannot set candidates or workers")
                .key("defaults.candidates")
                .fix("set candidates or workers on each [[task]] to run as several candidates"),
        );
    }
    if let Some(after) = after {
        return Err(file
            .error_at(Some(after.span()), "[defaults] cannot set after")
            .key("defaults.after")
            .fix("set after on each [[task]] that waits for another"));
    }
    if let Some(id) = id {
        return Err(file
            .error_at(Some(id.span()), "[defaults] cannot set an id")
            .key("defaults.id")
            .fix("set id on each [[task]]"));
    }
    if let Some(goal) = goal {
        return Err(file
            .error_at(Some(goal.span()), "[defaults] cannot set a goal")
            .key("defaults.goal")
            .fix("set goal on each [[task]]"));
    }
    Ok(())
}

/// Two tasks whose allowed globs can match the same file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobOverlap {
    /// Index of the earlier task.
    pub first: usize,
    /// Index of the later task.
    pub second: usize,
    /// The earlier task's glob.
    pub first_glob: String,
    /// The later task's glob.
    pub second_glob: String,
}

/// The part of a glob before its first wildcard.
fn literal_prefix(glob: &str) -> &str {
    let end = glob.find(['*', '?', '[', '{']).unwrap_or(glob.len());
    &glob[..end]
}

/// Whether two globs can match one path. Conservative: a literal path is matched against the other glob; two
/// wildcard globs overlap when one's literal prefix starts the other's (`src/**` and `src/api/*.rs` do).
fn globs_may_overlap(a: &str, b: &str) -> bool {
    let matches = |glob: &str, path: &str| {
        globset::GlobBuilder::new(glob)
            .literal_separator(true)
            .build()
            .is_ok_and(|glob| glob.compile_matcher().is_match(path))
    };
    let (pa, pb) = (literal_prefix(a), literal_prefix(b));
    match (pa.len() == a.len(), pb.len() == b.len()) {
        (true, true) => a == b,
        (true, false) => matches(b, a),
        (false, true) => matches(a, b),
        (false, false) => pa.starts_with(pb) || pb.starts_with(pa),
    }
}

/// Pairs of tasks whose allowed globs overlap (each pair once, with the first overlapping globs).
pub fn overlaps(tasks: &[TaskSpec]) -> Vec<GlobOverlap> {
    let mut found = Vec::new();
    for (first, a) in tasks.iter().enumerate() {
        for (offset, b) in tasks[first + 1..].iter().enumerate() {
            // Candidates of one task change the same files by design, each in its own tree; one of them lands.
            if a.candidate.is_some()
                && a.candidate.as_ref().map(|c| &c.of) == b.candidate.as_ref().map(|c| &c.of)
            {
                continue;
            }
            let pair = a.allowed.iter().find_map(|ga| {
                b.allowed
                    .iter()
                    .find(|gb| globs_may_overlap(ga, gb))
                    .map(|gb| (ga.clone(), gb.clone()))
            });
            if let Some((first_glob, second_glob)) = pair {
                found.push(GlobOverlap {
                    first,
                    second: first + 1 + offset,
                    first_glob,
                    second_glob,
                });
            }
        }
    }
    found
}

/// Tasks grouped so that overlapping ones share a group (transitively); each group in task-file order, groups
/// ordered by their first task. With `overlap = "serialize"` each group runs on one job, one task after another.
pub fn serial_groups(count: usize, overlaps: &[GlobOverlap]) -> Vec<Vec<usize>> {
    let mut group: Vec<usize> = (0..count).collect();
    fn root(group: &mut [usize], mut i: usize) -> usize {
        while group[i] != i {
            group[i] = group[group[i]];
            i = group[i];
        }
        i
    }
    for overlap in overlaps {
        let (a, b) = (
            root(&mut group, overlap.first),
            root(&mut group, overlap.second),
        );
        let (low, high) = (a.min(b), a.max(b));
        group[high] = low;
    }
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for task in 0..count {
        let leader = root(&mut group, task);
        groups.entry(leader).or_default().push(task);
    }
    groups.into_values().collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::tasks_file::parse;

    const WORKER: &str = "[workers.w]\nkind = \"command\"\ncommand = [\"true\"]\n";

    fn plan_text(text: &str) -> Result<Plan, InputError> {
        let policy = policy::load(None)?;
        plan(
            &parse(Path::new("tasks.toml"), &format!("{text}\n{WORKER}"))?,
            &policy,
        )
    }

    #[test]
    fn defaults_fill_and_ids_number_by_position() {
        let plan = plan_text(
            "[defaults]\nworker = \"w\"\nallowed = [\"src/**\"]\ntimeout = \"2m\"\n\
             [[task]]\ngoal = \"a\"\n[[task]]\nid = \"named\"\ngoal = \"b\"\nallowed = [\"docs/**\"]\ndenied = [\"docs/x\"]\n[[task]]\ngoal = \"c\"\n",
        )
        .unwrap();
        let ids: Vec<_> = plan.tasks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["t1", "named", "t3"]);
        assert_eq!(plan.tasks[0].allowed, ["src/**"]);
        assert_eq!(plan.tasks[1].allowed, ["docs/**"]);
        assert!(plan.tasks[1].denied.contains(&"docs/x".to_string()));
        assert!(
            plan.tasks[1].denied.contains(&".git/**".to_string()),
            "policy denials always apply"
        );
        assert_eq!(plan.tasks[2].timeout, Duration::from_secs(120));
    }

    #[test]
    fn each_kind_of_bad_task_is_named() {
        let cases = [
            ("[[task]]\nworker = \"w\"\n", "task[1].goal", "no goal"),
            (
                "[[task]]\nworker = \"w\"\ngoal = \"  \"\n",
                "task[1].goal",
                "empty",
            ),
            (
                "[[task]]\nid = \"a b\"\ngoal = \"x\"\nworker = \"w\"\n",
                "task[1].id",
                "not a valid task id",
            ),
            (
                "[[task]]\nid = \"a\"\ngoal = \"x\"\nworker = \"w\"\n[[task]]\nid = \"a\"\ngoal = \"y\"\nworker = \"w\"\n",
                "task[2].id",
                "duplicate",
            ),
            (
                "[[task]]\ngoal = \"x\"\nworker = \"nobody\"\n",
                "task[1].worker",
                "no worker profile",
            ),
            (
                "[[task]]\ngoal = \"x\"\n",
                "task[1].worker",
                "names no worker",
            ),
            (
                "[[task]]\ngoal = \"x\"\nworker = \"w\"\ntimeout = \"5 parsecs\"\n",
                "task[1].timeout",
                "not a duration",
            ),
            (
                "[[task]]\ngoal = \"x\"\nworker = \"w\"\nallowed = [\"src/{a\"]\n",
                "task[1].allowed",
                "invalid glob",
            ),
            (
                "[defaults]\ngoal = \"x\"\n[[task]]\ngoal = \"y\"\nworker = \"w\"\n",
                "defaults.goal",
                "cannot set a goal",
            ),
            ("", "task", "no task"),
        ];
        for (text, key, words) in cases {
            let error = plan_text(text).unwrap_err();
            assert_eq!(error.key.as_deref(), Some(key), "{text}: {error}");
            assert!(error.to_string().contains(words), "{text}: {error}");
            assert!(error.fix.is_some(), "{error}");
        }
    }

    #[test]
    fn glob_overlap_is_conservative_and_explainable() {
        assert!(globs_may_overlap("src/**", "src/api/*.rs"));
        assert!(globs_may_overlap("**", "docs/x.md"));
        assert!(globs_may_overlap("docs/x.md", "docs/*.md"));
        assert!(!globs_may_overlap("docs/x.md", "src/*.rs"));
        assert!(!globs_may_overlap("src/**", "docs/**"));
        assert!(!globs_may_overlap("a.txt", "b.txt"));
        assert!(globs_may_overlap("a.txt", "a.txt"));
    }

    #[test]
    fn overlapping_tasks_share_a_serial_group() {
        let overlaps = [
            GlobOverlap {
                first: 0,
                second: 2,
                first_glob: "src/**".into(),
                second_glob: "src/a".into(),
            },
            GlobOverlap {
                first: 2,
                second: 3,
                first_glob: "x".into(),
                second_glob: "x".into(),
            },
        ];
        assert_eq!(
            serial_groups(5, &overlaps),
            vec![vec![0, 2, 3], vec![1], vec![4]]
        );
        assert_eq!(serial_groups(2, &[]), vec![vec![0], vec![1]]);
    }
}
