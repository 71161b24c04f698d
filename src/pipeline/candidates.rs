//! Best-of-N (`candidates = 3`, or `workers = ["codex", "claude"]`): one task of the tasks file runs as several
//! candidate tasks (`<id>-c1`, `<id>-c2`, …), each in its own tree from the same base, judged by the same gate.
//! Once they all settled, [`pick`] chooses the winner by a documented rule and only the winner lands; every other
//! candidate keeps its work on its salvage refs and says why it lost.

use std::collections::BTreeMap;

use super::PipelineError;
use super::carry::Carrier;
use crate::input::InputError;
use crate::model::{Candidate, TaskId, TaskSpec, TaskState, WorkerProfile};
use crate::store::task_head;
use crate::tasks_file::TasksFile;

/// The most candidates one task may run as.
pub const MAX_CANDIDATES: u32 = 8;

/// The id of candidate `n` of task `of`.
pub fn candidate_id(of: &TaskId, n: u32) -> Result<TaskId, crate::ids::IdError> {
    TaskId::parse(format!("{of}-c{n}"))
}

/// `task` as its candidates: one spec per worker (`workers`), or `count` copies of it.
pub fn expand(task: TaskSpec, workers: Vec<WorkerProfile>, count: u32) -> Vec<TaskSpec> {
    let total = count.max(u32::try_from(workers.len()).unwrap_or(u32::MAX));
    (1..=total)
        .filter_map(|n| {
            let mut spec = task.clone();
            spec.id = candidate_id(&task.id, n).ok()?;
            if let Some(worker) = workers.get(n as usize - 1) {
                spec.worker = worker.clone();
            }
            spec.candidate = Some(Candidate {
                of: task.id.clone(),
                n,
                total,
            });
            Some(spec)
        })
        .collect()
}

/// Every task of the file as it runs: a task with `candidates` or `workers` as its candidates, the others as they
/// are (`tasks` holds one spec per `[[task]]`, in file order, their `after` resolved).
pub fn expand_all(
    file: &TasksFile,
    tasks: Vec<TaskSpec>,
    workers: &BTreeMap<String, WorkerProfile>,
) -> Result<Vec<TaskSpec>, InputError> {
    let mut all = Vec::with_capacity(tasks.len());
    let mut expanded: Vec<TaskId> = Vec::new();
    for (index, (entry, task)) in file.tasks.iter().zip(tasks).enumerate() {
        let fields = entry.get_ref();
        let located = |span: std::ops::Range<usize>, key: &str, message: String, fix: &str| {
            let mut error = file
                .error_at(Some(span), message)
                .key(format!("task[{}].{key}", index + 1))
                .fix(fix);
            if !file.has_lines {
                error.line = None;
            }
            error
        };
        let profiles = match &fields.workers {
            None => Vec::new(),
            Some(names) => {
                if fields.worker.is_some() {
                    return Err(located(
                        names.span(),
                        "workers",
                        format!("task `{}` sets both worker and workers", task.id),
                        "set worker for one worker, or workers for one candidate per worker",
                    ));
                }
                let mut profiles = Vec::new();
                for name in names.get_ref() {
                    let profile = workers.get(name).ok_or_else(|| {
                        located(
                            names.span(),
                            "workers",
                            format!("no worker profile named `{name}`"),
                            "name profiles of ccfan.toml or of this file's [workers.NAME]",
                        )
                    })?;
                    profiles.push(profile.clone());
                }
                profiles
            }
        };
        let count = match &fields.candidates {
            Some(count) => *count.get_ref(),
            None => u32::try_from(profiles.len()).unwrap_or(u32::MAX),
        };
        if fields.candidates.is_none() && fields.workers.is_none() {
            all.push(task);
            continue;
        }
        let (span, key) = match (&fields.candidates, &fields.workers) {
            (Some(count), _) => (count.span(), "candidates"),
            (None, Some(names)) => (names.span(), "workers"),
            (None, None) => (entry.span(), "candidates"),
        };
        if !(2..=MAX_CANDIDATES).contains(&count)
            || (!profiles.is_empty() && profiles.len() != count as usize)
        {
            return Err(located(
                span,
                key,
                format!(
                    "task `{}` would run as {count} candidate(s){}",
                    task.id,
                    if profiles.is_empty() {
                        String::new()
                    } else {
                        format!(" with {} worker(s) named", profiles.len())
                    }
                ),
                "run a task as 2 to 8 candidates; with workers, name one per candidate (candidates may then be left out)",
            ));
        }
        expanded.push(task.id.clone());
        all.extend(expand(task, profiles, count));
    }
    check_expanded(file, &all, &expanded)?;
    Ok(all)
}

/// Candidate ids clash with no other task, and no task waits for a task that runs as candidates.
fn check_expanded(
    file: &TasksFile,
    all: &[TaskSpec],
    expanded: &[TaskId],
) -> Result<(), InputError> {
    let mut seen = std::collections::HashSet::new();
    for task in all {
        if !seen.insert(&task.id) {
            return Err(InputError::new(
                &file.path,
                format!(
                    "task id `{}` is used twice once candidates are named `<id>-c<n>`",
                    task.id
                ),
            )
            .key("task.id")
            .fix("rename the task whose id looks like a candidate's"));
        }
        if let Some(waited) = task.after.iter().find(|id| expanded.contains(id)) {
            return Err(InputError::new(
                &file.path,
                format!(
                    "task `{}` waits for `{waited}`, which runs as candidates: waiting for a best-of-N task is not supported yet",
                    task.id
                ),
            )
            .key("after")
            .fix("run the best-of-N task in a run of its own first, or drop its candidates"));
        }
    }
    Ok(())
}

/// One candidate as the rule sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Contender {
    /// Its task.
    pub id: TaskId,
    /// Its number.
    pub n: u32,
    /// Whether the gate accepted it.
    pub accepted: bool,
    /// Attempts it took.
    pub attempts: u32,
    /// Lines its change adds and removes.
    pub diff_lines: usize,
    /// What its attempts cost, in US dollars, when known.
    pub cost_usd: Option<f64>,
    /// Tokens its attempts used.
    pub tokens: u64,
}

/// The winner of a best-of-N group and why each other accepted candidate lost: among the candidates the gate
/// accepted, the one with the fewest attempts (reworks), then the smallest diff, then the lowest cost (US
/// dollars when both are known, else tokens), then the lowest number. `None` when the gate accepted none.
pub fn pick(contenders: &[Contender]) -> Option<(usize, Vec<(usize, String)>)> {
    let key = |c: &Contender| {
        (
            c.attempts,
            c.diff_lines,
            (c.cost_usd.unwrap_or(f64::MAX) * 1e6) as u64,
            c.tokens,
            c.n,
        )
    };
    let winner = contenders
        .iter()
        .enumerate()
        .filter(|(_, c)| c.accepted)
        .min_by_key(|(_, c)| key(c))?
        .0;
    let best = &contenders[winner];
    let losers = contenders
        .iter()
        .enumerate()
        .filter(|(index, c)| c.accepted && *index != winner)
        .map(|(index, c)| (index, why_lost(best, c)))
        .collect();
    Some((winner, losers))
}

/// The first criterion of the rule that put `loser` behind `best`.
fn why_lost(best: &Contender, loser: &Contender) -> String {
    let by = if loser.attempts != best.attempts {
        format!(
            "fewer attempts: {} against {}",
            best.attempts, loser.attempts
        )
    } else if loser.diff_lines != best.diff_lines {
        format!(
            "a smaller change: {} lines against {}",
            best.diff_lines, loser.diff_lines
        )
    } else if let (Some(b), Some(l)) = (best.cost_usd, loser.cost_usd)
        && b != l
    {
        format!("a lower cost: ${b:.4} against ${l:.4}")
    } else if loser.tokens != best.tokens {
        format!("fewer tokens: {} against {}", best.tokens, loser.tokens)
    } else {
        "a tie, broken by candidate number".to_string()
    };
    format!(
        "not chosen: {} won ({by}); its work stays on its salvage refs",
        best.id
    )
}

impl Carrier<'_> {
    /// Chooses the winner of every best-of-N group whose candidates all settled: the winner stays accepted (it
    /// lands), the other accepted ones end `not_chosen` with why. A group whose winner was chosen before keeps it.
    pub(super) fn pick_candidates(&self) -> Result<(), PipelineError> {
        let tasks = self.store().tasks(self.run_id)?;
        let mut groups: BTreeMap<TaskId, Vec<&crate::store::TaskRow>> = BTreeMap::new();
        for task in &tasks {
            if let Some(candidate) = &task.spec.candidate {
                groups.entry(candidate.of.clone()).or_default().push(task);
            }
        }
        let spent = self.spent_by_task()?;
        for (of, members) in groups {
            let decided = members.iter().any(|t| {
                matches!(
                    t.state,
                    TaskState::NotChosen | TaskState::Merged | TaskState::Merging
                )
            });
            if decided || members.iter().any(|t| !t.state.is_final()) {
                continue;
            }
            let mut contenders = Vec::new();
            for task in &members {
                let attempts = self.store().attempts(self.run_id, &task.id)?;
                let diff_lines = match task_head(&attempts, self.base_sha) {
                    Some(head) => match &head.commit {
                        Some(commit) => crate::git::diff_files(self.repo, &head.base, commit)?
                            .iter()
                            .map(|change| change.added + change.removed)
                            .sum(),
                        None => 0,
                    },
                    None => 0,
                };
                let (cost_usd, tokens) = spent.get(&task.id).copied().unwrap_or((None, 0));
                contenders.push(Contender {
                    id: task.id.clone(),
                    n: task.spec.candidate.as_ref().map_or(0, |c| c.n),
                    accepted: task.state == TaskState::Accepted,
                    attempts: task.attempts,
                    diff_lines,
                    cost_usd,
                    tokens,
                });
            }
            let Some((winner, losers)) = pick(&contenders) else {
                continue;
            };
            for (index, why) in losers {
                let task = members[index];
                self.transition(&task.id, task.attempts, TaskState::NotChosen, Some(why))?;
            }
            let won = members[winner];
            if won
                .reason
                .as_deref()
                .is_some_and(|why| why.starts_with("chosen from"))
            {
                continue;
            }
            self.transition(
                &won.id,
                won.attempts,
                TaskState::Accepted,
                Some(format!(
                    "chosen from {} candidates of {of}: it lands",
                    members.len()
                )),
            )?;
        }
        Ok(())
    }

    /// What each task of the run spent: US dollars when every attempt is priced, and tokens.
    fn spent_by_task(&self) -> Result<BTreeMap<TaskId, (Option<f64>, u64)>, PipelineError> {
        let mut spent: BTreeMap<TaskId, (Option<f64>, u64)> = BTreeMap::new();
        for (task, summary) in self.store().run_attempt_agents(self.run_id)? {
            let cost = self
                .prices
                .cost(summary.agent, summary.model.as_deref(), &summary.usage)
                .map(|cost| cost.usd);
            let entry = spent.entry(task).or_insert((Some(0.0), 0));
            entry.0 = entry.0.zip(cost).map(|(a, b)| a + b);
            entry.1 += summary.usage.input_tokens + summary.usage.output_tokens;
        }
        Ok(spent)
    }

    /// Why an accepted candidate must not land: another candidate of its group landed (or is the one chosen).
    pub(super) fn outpicked(&self, task: &TaskSpec) -> Result<Option<String>, PipelineError> {
        let Some(candidate) = &task.candidate else {
            return Ok(None);
        };
        let tasks = self.store().tasks(self.run_id)?;
        Ok(tasks
            .iter()
            .filter(|other| other.id != task.id)
            .filter(|other| other.spec.candidate.as_ref().is_some_and(|c| c.of == candidate.of))
            .find(|other| matches!(other.state, TaskState::Merged | TaskState::Merging))
            .map(|other| {
                format!(
                    "not merged: {} already landed for {}; roll it back first to land this candidate instead",
                    other.id, candidate.of
                )
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::fixtures::task;

    fn contender(n: u32, accepted: bool, attempts: u32, diff_lines: usize) -> Contender {
        Contender {
            id: task(&format!("t-c{n}")),
            n,
            accepted,
            attempts,
            diff_lines,
            cost_usd: None,
            tokens: 100,
        }
    }

    #[test]
    fn a_task_expands_into_its_candidates_with_their_workers_and_prerequisites() {
        let policy = crate::policy::load(None).unwrap();
        let text = "[workers.a]\nkind = \"command\"\ncommand = [\"true\"]\n[workers.b]\nkind = \"command\"\ncommand = [\"false\"]\n\
                    [[task]]\nid = \"base\"\ngoal = \"g\"\nworker = \"a\"\n\
                    [[task]]\nid = \"x\"\ngoal = \"g\"\nworkers = [\"a\", \"b\"]\nafter = \"base\"\n\
                    [[task]]\nid = \"y\"\ngoal = \"g\"\nworker = \"b\"\ncandidates = 3\n";
        let file = crate::tasks_file::parse(std::path::Path::new("t.toml"), text).unwrap();
        let plan = crate::pipeline::plan::plan(&file, &policy).unwrap();
        let ids: Vec<&str> = plan.tasks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["base", "x-c1", "x-c2", "y-c1", "y-c2", "y-c3"]);
        assert_eq!(plan.tasks[1].worker.name, "a");
        assert_eq!(plan.tasks[2].worker.name, "b");
        assert_eq!(plan.tasks[2].after, [task("base")]);
        assert_eq!(
            plan.tasks[5].candidate,
            Some(Candidate {
                of: task("y"),
                n: 3,
                total: 3
            })
        );
        let waits = text.to_string()
            + "[[task]]\nid = \"z\"\ngoal = \"g\"\nworker = \"a\"\nafter = \"y\"\n";
        let file = crate::tasks_file::parse(std::path::Path::new("t.toml"), &waits).unwrap();
        let error = crate::pipeline::plan::plan(&file, &policy).unwrap_err();
        assert!(
            error.message.contains("which runs as candidates"),
            "{error}"
        );
    }

    #[test]
    fn the_rule_prefers_accepted_then_fewer_attempts_then_a_smaller_diff_then_cost() {
        assert_eq!(
            pick(&[contender(1, false, 1, 1), contender(2, false, 1, 1)]),
            None
        );
        let (winner, losers) = pick(&[
            contender(1, false, 1, 1),
            contender(2, true, 2, 5),
            contender(3, true, 1, 50),
        ])
        .unwrap();
        assert_eq!(winner, 2);
        assert_eq!(losers.len(), 1);
        assert!(
            losers[0]
                .1
                .contains("t-c3 won (fewer attempts: 1 against 2)"),
            "{losers:?}"
        );
        let (winner, losers) = pick(&[contender(1, true, 1, 9), contender(2, true, 1, 3)]).unwrap();
        assert_eq!(winner, 1);
        assert!(
            losers[0].1.contains("a smaller change: 3 lines against 9"),
            "{losers:?}"
        );
        let mut cheap = contender(1, true, 1, 3);
        cheap.cost_usd = Some(0.01);
        let mut dear = contender(2, true, 1, 3);
        dear.cost_usd = Some(0.5);
        let (winner, losers) = pick(&[dear, cheap]).unwrap();
        assert_eq!(winner, 1);
        assert!(losers[0].1.contains("a lower cost"), "{losers:?}");
        let (winner, losers) = pick(&[contender(2, true, 1, 3), contender(1, true, 1, 3)]).unwrap();
        assert_eq!(winner, 1);
        assert!(losers[0].1.contains("tie"), "{losers:?}");
    }
}
