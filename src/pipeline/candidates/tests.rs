//! The best-of-N rule and expansion, unit-tested.
use super::*;
use crate::ids::fixtures::task;

fn contender(n: u32, accepted: bool, attempts: u32, diff_lines: usize) -> Contender {
    Contender {
        id: task(&format!("t-c{n}")),
        n,
        accepted,
        forced: false,
        attempts,
        diff_lines,
        cost_usd: None,
        tokens: 100,
        review: None,
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
    let waits =
        text.to_string() + "[[task]]\nid = \"z\"\ngoal = \"g\"\nworker = \"a\"\nafter = \"y\"\n";
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
    // Tokens decide only when the cost is not known for both; a person's choice comes before the rule.
    let mut priced = contender(1, true, 1, 3);
    priced.cost_usd = Some(0.5);
    priced.tokens = 900;
    let (winner, losers) = pick(&[priced.clone(), contender(2, true, 1, 3)]).unwrap();
    assert_eq!(winner, 1);
    assert!(
        losers[0].1.contains("fewer tokens: 100 against 900"),
        "{losers:?}"
    );
    let mut chosen = contender(3, true, 4, 300);
    chosen.forced = true;
    let (winner, losers) = pick(&[contender(1, true, 1, 1), chosen]).unwrap();
    assert_eq!(winner, 1);
    assert!(losers[0].1.contains("chosen by a person"), "{losers:?}");
}

#[test]
fn the_reviewer_s_preference_comes_before_attempts_and_size() {
    let mut approved = contender(1, true, 3, 90);
    approved.review = Some((ReviewOutcome::Approve, 1));
    let mut cleaner = contender(2, true, 3, 90);
    cleaner.review = Some((ReviewOutcome::Approve, 0));
    let mut advised_against = contender(3, true, 1, 1);
    advised_against.review = Some((ReviewOutcome::RequestChanges, 2));
    let unreviewed = contender(4, true, 1, 1);
    let (winner, losers) = pick(&[
        approved.clone(),
        advised_against.clone(),
        unreviewed.clone(),
        cleaner,
    ])
    .unwrap();
    assert_eq!(winner, 3);
    assert!(
        losers[0].1.contains(
            "the reviewer's preference: approved with 0 comment(s) against approved with 1 comment(s)"
        ),
        "{losers:?}"
    );
    let (winner, losers) = pick(&[advised_against, unreviewed]).unwrap();
    assert_eq!(winner, 1);
    assert!(
        losers[0]
            .1
            .contains("not reviewed against changes requested"),
        "{losers:?}"
    );
}
