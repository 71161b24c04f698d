//! Best-of-N (`candidates = 3`, or `workers = ["codex", "claude"]`): one task of the tasks file runs as several
//! candidate tasks (`<id>-c1`, `<id>-c2`, …), each in its own tree from the same base, judged by the same gate.
//! Once they all settled, [`pick`] chooses the winner by a documented rule and only the winner lands; every other
//! candidate keeps its work on its salvage refs and says why it lost.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use super::PipelineError;
use super::carry::Carrier;
use crate::input::InputError;
use crate::model::review::ReviewOutcome;
use crate::model::{Candidate, TaskId, TaskSpec, TaskState, WorkerProfile};
use crate::store::task_head;
use crate::tasks_file::TasksFile;

/// The most candidates one task may run as.
pub const MAX_CANDIDATES: u32 = 8;

/// The id of candidate `n` of task `of`.
pub fn candidate_id(of: &TaskId, n: u32) -> Result<TaskId, crate::ids::IdError> {
    TaskId::parse(format!("{of}-c{n}"))
}

/// `task` as its candidates: one spec per worker (`workers`), or `count` copies of it. `Err`: a candidate's id
/// would not be valid (the task's id is too long to take `-cN`).
pub fn expand(
    task: TaskSpec,
    workers: Vec<WorkerProfile>,
    count: u32,
) -> Result<Vec<TaskSpec>, crate::ids::IdError> {
    let total = count.max(u32::try_from(workers.len()).unwrap_or(u32::MAX));
    (1..=total)
        .map(|n| {
            let mut spec = task.clone();
            spec.id = candidate_id(&task.id, n)?;
            if let Some(worker) = workers.get(n as usize - 1) {
                spec.worker = worker.clone();
            }
            spec.candidate = Some(Candidate {
                of: task.id.clone(),
                n,
                total,
            });
            Ok(spec)
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
        let id = task.id.clone();
        let candidates = expand(task, profiles, count).map_err(|_| {
            located(
                span,
                key,
                format!("task id `{id}` is too long to name its candidates `{id}-c1`, …"),
                "use an id of at most 60 characters for a task with candidates",
            )
        })?;
        all.extend(candidates);
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
    /// Whether the gate accepted it (or a person did: see `forced`).
    pub accepted: bool,
    /// A person accepted it over the gate, or chose it over the rule (`accept --force`): that choice comes first.
    pub forced: bool,
    /// Attempts it took.
    pub attempts: u32,
    /// Lines its change adds and removes.
    pub diff_lines: usize,
    /// What its attempts cost, in US dollars, when known.
    pub cost_usd: Option<f64>,
    /// Tokens its attempts used.
    pub tokens: u64,
    /// What its reviewer said of its latest attempt, and how many of its comments were more than notes (`None`:
    /// not reviewed).
    pub review: Option<(ReviewOutcome, usize)>,
}

/// How much a reviewer preferred a candidate (lower is better): approved (fewer comments first), not reviewed,
/// changes requested by an advisory reviewer (fewer first), no valid answer.
fn review_rank(review: Option<(ReviewOutcome, usize)>) -> (u8, usize) {
    match review {
        Some((ReviewOutcome::Approve, comments)) => (0, comments),
        None => (1, 0),
        Some((ReviewOutcome::RequestChanges, comments)) => (2, comments),
        Some((ReviewOutcome::Invalid | ReviewOutcome::Failed, _)) => (3, 0),
    }
}

fn describe_review(review: Option<(ReviewOutcome, usize)>) -> String {
    match review {
        Some((ReviewOutcome::Approve, comments)) => format!("approved with {comments} comment(s)"),
        None => "not reviewed".to_string(),
        Some((ReviewOutcome::RequestChanges, comments)) => {
            format!("changes requested with {comments} comment(s)")
        }
        Some((ReviewOutcome::Invalid | ReviewOutcome::Failed, _)) => "no valid review".to_string(),
    }
}

/// How `a` compares with `b` under the rule (`Less`: `a` is better), and the criterion that decided.
fn compare(a: &Contender, b: &Contender) -> (Ordering, String) {
    if a.forced != b.forced {
        let by = "chosen by a person (accept --force)".to_string();
        return (
            if a.forced {
                Ordering::Less
            } else {
                Ordering::Greater
            },
            by,
        );
    }
    let (x, y) = (review_rank(a.review), review_rank(b.review));
    if x != y {
        let by = format!(
            "the reviewer's preference: {} against {}",
            describe_review(if x < y { a.review } else { b.review }),
            describe_review(if x < y { b.review } else { a.review })
        );
        return (x.cmp(&y), by);
    }
    if a.attempts != b.attempts {
        let by = format!(
            "fewer attempts: {} against {}",
            a.attempts.min(b.attempts),
            a.attempts.max(b.attempts)
        );
        return (a.attempts.cmp(&b.attempts), by);
    }
    if a.diff_lines != b.diff_lines {
        let (small, large) = (
            a.diff_lines.min(b.diff_lines),
            a.diff_lines.max(b.diff_lines),
        );
        return (
            a.diff_lines.cmp(&b.diff_lines),
            format!("a smaller change: {small} lines against {large}"),
        );
    }
    if let (Some(x), Some(y)) = (a.cost_usd, b.cost_usd)
        && x != y
    {
        let by = format!("a lower cost: ${:.4} against ${:.4}", x.min(y), x.max(y));
        return (x.total_cmp(&y), by);
    }
    if a.tokens != b.tokens {
        let by = format!(
            "fewer tokens: {} against {}",
            a.tokens.min(b.tokens),
            a.tokens.max(b.tokens)
        );
        return (a.tokens.cmp(&b.tokens), by);
    }
    (
        a.n.cmp(&b.n),
        "a tie, broken by candidate number".to_string(),
    )
}

/// The winner of a best-of-N group and why each other accepted candidate lost. Among the accepted candidates: one
/// a person chose (`accept --force`) first; then the reviewer's preference (approved with the fewest comments, then
/// not reviewed, then an advisory request for changes); then the fewest attempts (reworks); then the smallest
/// change; then
/// the lowest cost (US dollars when both are priced, else tokens); then the lowest number. `None` when none was
/// accepted.
pub fn pick(contenders: &[Contender]) -> Option<(usize, Vec<(usize, String)>)> {
    let accepted: Vec<usize> = (0..contenders.len())
        .filter(|&i| contenders[i].accepted)
        .collect();
    let winner = accepted.iter().copied().reduce(|best, next| {
        match compare(&contenders[next], &contenders[best]).0 {
            Ordering::Less => next,
            Ordering::Equal | Ordering::Greater => best,
        }
    })?;
    let best = &contenders[winner];
    let losers = accepted
        .into_iter()
        .filter(|&index| index != winner)
        .map(|index| {
            let by = compare(best, &contenders[index]).1;
            (
                index,
                format!(
                    "not chosen: {} won ({by}); its work stays on its salvage refs",
                    best.id
                ),
            )
        })
        .collect();
    Some((winner, losers))
}

impl Carrier<'_> {
    /// Chooses the winner of every best-of-N group whose candidates all settled and none of which landed, among
    /// the candidates the gate accepted (those left `not_chosen` before included, so a winner that failed its
    /// landing gives way to the next best): the winner is left accepted, the others end `not_chosen` with why.
    /// Returns the groups whose winner changed.
    pub(super) fn pick_candidates(&self) -> Result<Vec<TaskId>, PipelineError> {
        let tasks = self.store().tasks(self.run_id)?;
        let mut groups: BTreeMap<TaskId, Vec<&crate::store::TaskRow>> = BTreeMap::new();
        for task in &tasks {
            if let Some(candidate) = &task.spec.candidate {
                groups.entry(candidate.of.clone()).or_default().push(task);
            }
        }
        let spent = self.spent_by_task()?;
        let mut changed = Vec::new();
        for (of, members) in groups {
            let landed = members.iter().any(|t| t.state == TaskState::Merged);
            if landed || members.iter().any(|t| !t.state.is_final()) {
                continue;
            }
            let contenders = members
                .iter()
                .map(|task| self.contender(task, &spent))
                .collect::<Result<Vec<_>, _>>()?;
            let Some((winner, losers)) = pick(&contenders) else {
                continue;
            };
            let mut decided = false;
            for (index, why) in losers {
                let task = members[index];
                if task.state != TaskState::NotChosen || task.reason.as_deref() != Some(&why) {
                    self.transition(&task.id, task.attempts, TaskState::NotChosen, Some(why))?;
                    decided = true;
                }
            }
            let won = members[winner];
            // Told once, when it is chosen (a later reason, such as why its landing failed, is kept).
            if decided || won.state != TaskState::Accepted {
                let chosen = format!("chosen from {} candidates of {of}", members.len());
                self.transition(&won.id, won.attempts, TaskState::Accepted, Some(chosen))?;
            }
            if won.state != TaskState::Accepted {
                changed.push(of);
            }
        }
        Ok(changed)
    }

    /// `task` as the rule sees it.
    fn contender(
        &self,
        task: &crate::store::TaskRow,
        spent: &BTreeMap<TaskId, (Option<f64>, u64)>,
    ) -> Result<Contender, PipelineError> {
        let attempts = self.store().attempts(self.run_id, &task.id)?;
        let diff_lines = match task_head(&attempts, self.base_sha)
            .and_then(|head| head.commit.map(|commit| (head.base, commit)))
        {
            Some((base, commit)) => crate::git::diff_files(self.repo, &base, &commit)?
                .iter()
                .map(|change| change.added + change.removed)
                .sum(),
            None => 0,
        };
        let (cost_usd, tokens) = spent.get(&task.id).copied().unwrap_or((None, 0));
        Ok(Contender {
            id: task.id.clone(),
            n: task.spec.candidate.as_ref().map_or(0, |c| c.n),
            // Left `not_chosen` before, it was accepted by the gate.
            accepted: matches!(task.state, TaskState::Accepted | TaskState::NotChosen),
            forced: task.forced.is_some(),
            attempts: task.attempts,
            diff_lines,
            cost_usd,
            tokens,
            review: self.review_of(task, &attempts)?,
        })
    }

    /// What the reviewer said of a task's latest reviewed attempt: its outcome, and its comments that were more than
    /// notes (from that attempt's gate report).
    fn review_of(
        &self,
        task: &crate::store::TaskRow,
        attempts: &[crate::store::AttemptRow],
    ) -> Result<Option<(ReviewOutcome, usize)>, PipelineError> {
        let Some(latest) = attempts.iter().rev().find(|a| a.state == "recorded") else {
            return Ok(None);
        };
        let reviews = self.store().reviews(self.run_id, &task.id)?;
        let Some(review) = reviews.iter().rev().find(|r| r.attempt == latest.n) else {
            return Ok(None);
        };
        let comments = crate::paths::AttemptDir::of(&latest.dir)
            .latest_report()
            .and_then(|bytes| serde_json::from_slice::<crate::report::VerifyReport>(&bytes).ok())
            .map_or(0, |report| {
                report
                    .findings()
                    .filter(|f| {
                        f.stage == crate::report::Stage::Review && f.rule == "review-comment"
                    })
                    .filter(|f| f.level != crate::report::Level::Info)
                    .count()
            });
        Ok(Some((review.outcome, comments)))
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

    /// Why an accepted candidate must not land: another candidate of its task landed (roll that one back first).
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
                    "not chosen: {} already landed for {}; roll it back, then accept this one, to land it instead",
                    other.id, candidate.of
                )
            }))
    }
}

#[cfg(test)]
mod tests;
