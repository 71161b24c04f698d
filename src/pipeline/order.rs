//! Stages 1-2, the order prerequisites impose (`after = ["design"]`), as pure functions: `after` resolved and the
//! cycle check at plan time, the order tasks start and land in, and the [`Schedule`] a run's job threads pick
//! from — a task starts only once every prerequisite settled as landed, and is skipped when one did not.

use crate::input::InputError;
use crate::model::{TaskId, TaskSpec};
use crate::tasks_file::TasksFile;

/// Each task's `after`: ids of other tasks in the file, each named once, with no cycle among them.
pub fn resolve_after(file: &TasksFile, tasks: &mut [TaskSpec]) -> Result<(), InputError> {
    let ids: Vec<TaskId> = tasks.iter().map(|task| task.id.clone()).collect();
    for (index, entry) in file.tasks.iter().enumerate() {
        let Some(after) = &entry.get_ref().after else {
            continue;
        };
        let key = format!("task[{}].after", index + 1);
        let error = |message: String, fix: String| {
            let mut error = file
                .error_at(Some(after.span()), message)
                .key(&key)
                .fix(fix);
            if !file.has_lines {
                error.line = None;
            }
            error
        };
        let mut resolved: Vec<TaskId> = Vec::new();
        for name in after.get_ref().clone().into_vec() {
            let Some(id) = ids.iter().find(|id| id.as_str() == name.trim()) else {
                return Err(error(
                    format!(
                        "task `{}` waits for `{name}`, which is no task of this file",
                        ids[index]
                    ),
                    format!(
                        "name tasks of this file: {}",
                        ids.iter()
                            .map(TaskId::as_str)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            };
            if *id == ids[index] {
                return Err(error(
                    format!("task `{id}` waits for itself"),
                    "remove its own id from after".into(),
                ));
            }
            if resolved.contains(id) {
                return Err(error(
                    format!("task `{}` names `{id}` twice in after", ids[index]),
                    "name each prerequisite once".into(),
                ));
            }
            resolved.push(id.clone());
        }
        tasks[index].after = resolved;
    }
    if let Some(cycle) = find_cycle(&prerequisites(tasks)) {
        let path: Vec<&str> = cycle.iter().map(|&task| ids[task].as_str()).collect();
        let first = cycle[0];
        let span = file.tasks[first]
            .get_ref()
            .after
            .as_ref()
            .map(|after| after.span());
        let mut error = file
            .error_at(
                span,
                format!(
                    "the tasks wait for each other in a cycle: {}",
                    path.join(" → ")
                ),
            )
            .key(format!("task[{}].after", first + 1))
            .fix("break the cycle: a task can only wait for tasks that do not wait for it");
        if !file.has_lines {
            error.line = None;
        }
        return Err(error);
    }
    Ok(())
}

/// Each task's prerequisites, as indices into `tasks` (names no task carries are left out: the plan refuses
/// them before this runs).
pub fn prerequisites(tasks: &[TaskSpec]) -> Vec<Vec<usize>> {
    tasks
        .iter()
        .map(|task| {
            task.after
                .iter()
                .filter_map(|name| tasks.iter().position(|other| &other.id == name))
                .collect()
        })
        .collect()
}

/// A cycle among the prerequisites, as the path that closes it (`[a, b, a]`: a waits for b, which waits for a).
pub fn find_cycle(prerequisites: &[Vec<usize>]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut marks = vec![Mark::New; prerequisites.len()];
    for root in 0..prerequisites.len() {
        if marks[root] != Mark::New {
            continue;
        }
        // Depth first, without recursion: (task, next prerequisite to look at).
        let mut path: Vec<(usize, usize)> = vec![(root, 0)];
        marks[root] = Mark::Open;
        while let Some((task, next)) = path.last_mut() {
            let task = *task;
            let Some(&needed) = prerequisites[task].get(*next) else {
                marks[task] = Mark::Done;
                path.pop();
                continue;
            };
            *next += 1;
            match marks[needed] {
                Mark::New => {
                    marks[needed] = Mark::Open;
                    path.push((needed, 0));
                }
                Mark::Open => {
                    let from = path.iter().position(|(t, _)| *t == needed).unwrap_or(0);
                    let mut cycle: Vec<usize> = path[from..].iter().map(|(t, _)| *t).collect();
                    cycle.push(needed);
                    return Some(cycle);
                }
                Mark::Done => {}
            }
        }
    }
    None
}

/// Every task once, each after its prerequisites, otherwise in task-file order (the earliest ready task first).
/// Tasks caught in a cycle (refused at plan time) come last, in file order.
pub fn topological(prerequisites: &[Vec<usize>]) -> Vec<usize> {
    let count = prerequisites.len();
    let mut placed = vec![false; count];
    let mut order = Vec::with_capacity(count);
    while order.len() < count {
        let ready = (0..count)
            .find(|&task| !placed[task] && prerequisites[task].iter().all(|&p| placed[p]))
            .or_else(|| (0..count).find(|&task| !placed[task]));
        let Some(task) = ready else { break };
        placed[task] = true;
        order.push(task);
    }
    order
}

/// How a task ended, for the tasks that wait for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// Its work is where dependants start from (landed; with `--no-merge`, accepted).
    Landed,
    /// It ended without landing: how (`blocked`, `rolled_back`, `skipped`, …).
    NotLanded(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    Pending,
    Taken,
    Settled(Settled),
}

/// What a job thread does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick {
    /// Carry this task: every prerequisite landed (and the task before it in its serial group ended).
    Start(usize),
    /// Do not start this task: a prerequisite ended without landing (why).
    Skip(usize, String),
    /// Cancel this task before it starts: it was cancelled while it waited.
    Cancel(usize),
    /// Nothing can start until a task in flight settles.
    Wait,
    /// Every task was picked.
    Done,
}

/// Which task starts next, for a run's job threads: prerequisites first, a serial group (`run.overlap =
/// "serialize"`) one task at a time, otherwise in [`topological`] order.
#[derive(Debug, Clone)]
pub struct Schedule {
    prerequisites: Vec<Vec<usize>>,
    /// The task before each one in its serial group.
    follows: Vec<Option<usize>>,
    order: Vec<usize>,
    slots: Vec<Slot>,
}

impl Schedule {
    /// A schedule of tasks with these prerequisites, in serial `groups` (each group's tasks run one after
    /// another, in the order prerequisites allow).
    pub fn new(prerequisites: Vec<Vec<usize>>, groups: &[Vec<usize>]) -> Schedule {
        let order = topological(&prerequisites);
        let position = |task: usize| order.iter().position(|&t| t == task).unwrap_or(usize::MAX);
        let mut follows = vec![None; prerequisites.len()];
        for group in groups {
            let mut sorted = group.clone();
            sorted.sort_by_key(|&task| position(task));
            for pair in sorted.windows(2) {
                follows[pair[1]] = Some(pair[0]);
            }
        }
        let slots = vec![Slot::Pending; prerequisites.len()];
        Schedule {
            prerequisites,
            follows,
            order,
            slots,
        }
    }

    /// The next pick, marking it taken (a skip or cancel settles the task as not landed). `cancelled` says which
    /// waiting tasks were cancelled; `ids` names tasks in reasons.
    pub fn next(&mut self, ids: &[TaskId], cancelled: impl Fn(usize) -> bool) -> Pick {
        let mut waiting = false;
        for &task in &self.order {
            if self.slots[task] != Slot::Pending {
                continue;
            }
            if cancelled(task) {
                self.slots[task] = Slot::Taken;
                return Pick::Cancel(task);
            }
            let failed = self.prerequisites[task]
                .iter()
                .find_map(|&p| match &self.slots[p] {
                    Slot::Settled(Settled::NotLanded(how)) => Some((p, how.clone())),
                    Slot::Pending | Slot::Taken | Slot::Settled(Settled::Landed) => None,
                });
            if let Some((prerequisite, how)) = failed {
                self.slots[task] = Slot::Settled(Settled::NotLanded("skipped".into()));
                return Pick::Skip(
                    task,
                    format!(
                        "not started: its prerequisite {} ended {how}, so its work is not there to build on",
                        ids[prerequisite]
                    ),
                );
            }
            let ready = self.prerequisites[task]
                .iter()
                .all(|&p| self.slots[p] == Slot::Settled(Settled::Landed))
                && self.follows[task]
                    .is_none_or(|before| matches!(self.slots[before], Slot::Settled(_)));
            if ready {
                self.slots[task] = Slot::Taken;
                return Pick::Start(task);
            }
            waiting = true;
        }
        if waiting { Pick::Wait } else { Pick::Done }
    }

    /// Records how a started task ended.
    pub fn settle(&mut self, task: usize, settled: Settled) {
        self.slots[task] = Slot::Settled(settled);
    }

    /// Whether `task` is still to be picked.
    pub fn is_pending(&self, task: usize) -> bool {
        self.slots[task] == Slot::Pending
    }

    /// Whether any task is still to be picked.
    pub fn any_pending(&self) -> bool {
        self.slots.contains(&Slot::Pending)
    }

    /// Takes every pending task `cancelled` names (the caller stores and settles each).
    pub fn cancel_pending(&mut self, cancelled: impl Fn(usize) -> bool) -> Vec<usize> {
        let picked: Vec<usize> = (0..self.slots.len())
            .filter(|&task| self.slots[task] == Slot::Pending && cancelled(task))
            .collect();
        for &task in &picked {
            self.slots[task] = Slot::Taken;
        }
        picked
    }

    /// The prerequisites of `task` that have not landed yet.
    pub fn waits_for(&self, task: usize) -> Vec<usize> {
        self.prerequisites[task]
            .iter()
            .copied()
            .filter(|&p| self.slots[p] != Slot::Settled(Settled::Landed))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::fixtures::task;

    fn plan_text(text: &str) -> Result<crate::pipeline::plan::Plan, InputError> {
        let policy = crate::policy::load(None)?;
        let worker = "[workers.w]\nkind = \"command\"\ncommand = [\"true\"]\n";
        crate::pipeline::plan::plan(
            &crate::tasks_file::parse(
                std::path::Path::new("tasks.toml"),
                &format!("{text}\n{worker}"),
            )?,
            &policy,
        )
    }

    #[test]
    fn after_names_tasks_of_the_file_and_no_cycle() {
        let plan = plan_text(
            "[defaults]\nworker = \"w\"\n[[task]]\nid = \"design\"\ngoal = \"a\"\n\
             [[task]]\nid = \"api\"\ngoal = \"b\"\nafter = \"design\"\n\
             [[task]]\nid = \"ui\"\ngoal = \"c\"\nafter = [\"api\", \"design\"]\n",
        )
        .unwrap();
        assert_eq!(plan.tasks[0].after, Vec::<TaskId>::new());
        assert_eq!(plan.tasks[1].after, [TaskId::parse("design").unwrap()]);
        assert_eq!(plan.tasks[2].after.len(), 2);
        let refused =
            |text: &str| plan_text(&format!("[defaults]\nworker = \"w\"\n{text}")).unwrap_err();
        let unknown = refused("[[task]]\nid = \"a\"\ngoal = \"x\"\nafter = [\"nope\"]\n");
        assert!(
            unknown.message.contains("`nope`, which is no task"),
            "{unknown}"
        );
        assert_eq!(
            (unknown.line, unknown.key.as_deref()),
            (Some(6), Some("task[1].after"))
        );
        let own = refused("[[task]]\nid = \"a\"\ngoal = \"x\"\nafter = \"a\"\n");
        assert!(own.message.contains("waits for itself"), "{own}");
        let twice = refused(
            "[[task]]\nid = \"a\"\ngoal = \"x\"\n[[task]]\nid = \"b\"\ngoal = \"y\"\nafter = [\"a\", \"a\"]\n",
        );
        assert!(twice.message.contains("twice"), "{twice}");
        let cycle = refused(
            "[[task]]\nid = \"a\"\ngoal = \"x\"\nafter = \"c\"\n[[task]]\nid = \"b\"\ngoal = \"y\"\nafter = \"a\"\n\
             [[task]]\nid = \"c\"\ngoal = \"z\"\nafter = \"b\"\n",
        );
        assert!(cycle.message.contains("a → c → b → a"), "{cycle}");
        assert_eq!(cycle.key.as_deref(), Some("task[1].after"));
        let defaults = plan_text(
            "[defaults]\nworker = \"w\"\nafter = \"a\"\n[[task]]\nid = \"a\"\ngoal = \"x\"\n",
        )
        .unwrap_err();
        assert_eq!(defaults.key.as_deref(), Some("defaults.after"));
    }

    fn ids(n: usize) -> Vec<TaskId> {
        (0..n).map(|i| task(&format!("t{i}"))).collect()
    }

    #[test]
    fn a_cycle_is_found_with_the_path_that_closes_it() {
        assert_eq!(find_cycle(&[vec![], vec![0], vec![1]]), None);
        assert_eq!(
            find_cycle(&[vec![1], vec![2], vec![0]]),
            Some(vec![0, 1, 2, 0])
        );
        assert_eq!(find_cycle(&[vec![], vec![1]]), Some(vec![1, 1]));
        // A diamond is no cycle.
        assert_eq!(find_cycle(&[vec![], vec![0], vec![0], vec![1, 2]]), None);
    }

    #[test]
    fn prerequisites_come_first_and_file_order_breaks_ties() {
        assert_eq!(topological(&[vec![2], vec![], vec![]]), vec![1, 2, 0]);
        assert_eq!(topological(&[vec![], vec![], vec![]]), vec![0, 1, 2]);
    }

    #[test]
    fn a_chain_runs_in_order_beside_an_independent_task() {
        // t0 → t1 → t2, t3 independent.
        let mut schedule = Schedule::new(vec![vec![], vec![0], vec![1], vec![]], &[]);
        let ids = ids(4);
        let none = |_| false;
        assert_eq!(schedule.next(&ids, none), Pick::Start(0));
        assert_eq!(schedule.next(&ids, none), Pick::Start(3));
        assert_eq!(schedule.next(&ids, none), Pick::Wait);
        assert_eq!(schedule.waits_for(2), vec![1]);
        schedule.settle(0, Settled::Landed);
        assert_eq!(schedule.next(&ids, none), Pick::Start(1));
        assert_eq!(schedule.next(&ids, none), Pick::Wait);
        schedule.settle(1, Settled::Landed);
        assert_eq!(schedule.next(&ids, none), Pick::Start(2));
        assert_eq!(schedule.next(&ids, none), Pick::Done);
    }

    #[test]
    fn a_failed_prerequisite_skips_the_rest_of_its_chain_with_the_reason() {
        let mut schedule = Schedule::new(vec![vec![], vec![0], vec![1]], &[]);
        let ids = ids(3);
        let none = |_| false;
        assert_eq!(schedule.next(&ids, none), Pick::Start(0));
        schedule.settle(0, Settled::NotLanded("blocked".into()));
        let Pick::Skip(1, why) = schedule.next(&ids, none) else {
            panic!("t1 is skipped");
        };
        assert!(why.contains("t0 ended blocked"), "{why}");
        let Pick::Skip(2, why) = schedule.next(&ids, none) else {
            panic!("t2 is skipped");
        };
        assert!(why.contains("t1 ended skipped"), "{why}");
        assert_eq!(schedule.next(&ids, none), Pick::Done);
    }

    #[test]
    fn a_task_cancelled_while_it_waits_is_cancelled_at_once() {
        let mut schedule = Schedule::new(vec![vec![], vec![0]], &[]);
        let ids = ids(2);
        assert_eq!(schedule.next(&ids, |_| false), Pick::Start(0));
        assert_eq!(schedule.next(&ids, |task| task == 1), Pick::Cancel(1));
        assert!(!schedule.is_pending(1) && !schedule.any_pending());
        assert_eq!(schedule.next(&ids, |_| false), Pick::Done);
        // A sweep takes cancelled tasks whatever their prerequisites, and only pending ones.
        let three: Vec<TaskId> = ["a", "b", "c"].into_iter().map(task).collect();
        let mut schedule = Schedule::new(vec![vec![], vec![0], vec![0]], &[]);
        assert_eq!(schedule.next(&three, |_| false), Pick::Start(0));
        assert_eq!(schedule.cancel_pending(|task| task < 2), vec![1]);
        assert!(schedule.is_pending(2) && schedule.any_pending());
    }

    #[test]
    fn a_serial_group_runs_one_at_a_time_in_the_order_prerequisites_allow() {
        // t0 and t1 overlap (one group); t0 waits for t1.
        let mut schedule = Schedule::new(vec![vec![1], vec![]], &[vec![0, 1]]);
        let ids = ids(2);
        let none = |_| false;
        assert_eq!(schedule.next(&ids, none), Pick::Start(1));
        assert_eq!(schedule.next(&ids, none), Pick::Wait);
        schedule.settle(1, Settled::Landed);
        assert_eq!(schedule.next(&ids, none), Pick::Start(0));
        // Without prerequisites, a group still runs one after another, whatever the first one's end.
        let mut schedule = Schedule::new(vec![vec![], vec![]], &[vec![0, 1]]);
        assert_eq!(schedule.next(&ids, none), Pick::Start(0));
        assert_eq!(schedule.next(&ids, none), Pick::Wait);
        schedule.settle(0, Settled::NotLanded("blocked".into()));
        assert_eq!(schedule.next(&ids, none), Pick::Start(1));
    }
}
