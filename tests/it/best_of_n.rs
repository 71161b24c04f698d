//! Best-of-N: one task run as several candidates in parallel, each in its own tree from the same base; the gate
//! judges each, the rule picks the winner, only the winner lands, and the others keep their work and say why
//! they lost.

use crate::env::{TestEnv, task};

/// Candidate 1 breaks the tests, candidate 2 strays out of scope, candidate 3 does the job.
const CANDIDATE: &str = r#"set -eu
echo "$CCFAN_CANDIDATE/$CCFAN_CANDIDATES" > "$PROBE/$CCFAN_TASK_ID.started"
mkdir -p src
case "$CCFAN_CANDIDATE" in
  1) echo broken > src/feature.txt ;;
  2) echo good > src/feature.txt; echo stray > README.md ;;
  3) echo good > src/feature.txt ;;
esac"#;

#[test]
fn three_candidates_the_good_one_lands_and_the_others_are_kept_with_why() {
    let env = TestEnv::new();
    env.commit_policy(
        "[run]\nmax_reworks = 0\n\n[tests]\ncommand = [\"sh\", \"-c\", \"! grep -q broken src/feature.txt\"]\n",
    );
    let probe = env.probe();
    let worker = env.script("candidate.sh", CANDIDATE);
    let tasks = env.tasks(&format!(
        "[workers.w]\nkind = \"command\"\ncommand = [\"{}\"]\nenv = {{ PROBE = \"{}\" }}\n\n\
         [[task]]\nid = \"feature\"\ngoal = \"write src/feature.txt\"\nallowed = [\"src/**\"]\nworker = \"w\"\ncandidates = 3\n",
        worker.display(),
        probe.display()
    ));
    let ran = env.run(&tasks, &["--jobs", "3"]);
    assert_eq!(ran.code, 0, "{ran:?}");
    let run = ran.json();
    for n in 1..=3 {
        assert_eq!(
            std::fs::read_to_string(probe.join(format!("feature-c{n}.started")))
                .unwrap()
                .trim(),
            format!("{n}/3")
        );
        assert_eq!(
            task(&run, &format!("feature-c{n}"))["candidate"]["of"],
            "feature"
        );
    }
    insta::assert_json_snapshot!("candidate_shape", task(&run, "feature-c3")["candidate"]);
    let winner = task(&run, "feature-c3");
    assert_eq!(winner["state"], "merged", "{winner}");
    assert_eq!(env.git(&["show", "main:src/feature.txt"]).trim(), "good");
    assert!(!env.git(&["show", "main:README.md"]).contains("stray"));
    for (id, why) in [("feature-c1", "tests"), ("feature-c2", "README.md")] {
        let lost = task(&run, id);
        assert!(
            matches!(lost["state"].as_str(), Some("blocked" | "rolled_back")),
            "{lost}"
        );
        assert!(lost["reason"].as_str().unwrap().contains(why), "{lost}");
        // Its work is kept on its salvage refs.
        let refs = lost["salvage_refs"].as_array().unwrap();
        assert!(!refs.is_empty(), "{lost}");
        env.git(&["rev-parse", "--verify", refs[0].as_str().unwrap()]);
    }
    // Candidates of one task do not count as tasks that may change the same files.
    assert!(
        !ran.stderr.contains("tasks may change the same files"),
        "{ran:?}"
    );
}

#[test]
fn two_good_candidates_the_rule_picks_one_and_the_other_is_not_chosen() {
    let env = TestEnv::new();
    let small = env.script("small.sh", "mkdir -p src && echo one > src/f.txt");
    let large = env.script(
        "large.sh",
        "mkdir -p src && printf 'one\\ntwo\\nthree\\n' > src/f.txt",
    );
    let tasks = env.tasks(&format!(
        "[workers.small]\nkind = \"command\"\ncommand = [\"{}\"]\n[workers.large]\nkind = \"command\"\ncommand = [\"{}\"]\n\n\
         [[task]]\nid = \"f\"\ngoal = \"write src/f.txt\"\nallowed = [\"src/**\"]\nworkers = [\"large\", \"small\"]\n",
        small.display(),
        large.display()
    ));
    let ran = env.run(&tasks, &["--no-merge"]);
    assert_eq!(ran.code, 0, "{ran:?}");
    let run = ran.json();
    let chosen = task(&run, "f-c2");
    assert_eq!(chosen["state"], "accepted", "{chosen}");
    assert!(
        chosen["reason"]
            .as_str()
            .unwrap()
            .contains("chosen from 2 candidates of f"),
        "{chosen}"
    );
    let other = task(&run, "f-c1");
    assert_eq!(other["state"], "not_chosen", "{other}");
    let why = other["reason"].as_str().unwrap();
    assert!(
        why.contains("f-c2 won (a smaller change: 1 lines against 3)"),
        "{why}"
    );
    // `merge` lands the chosen one only.
    let merged = env.ccfan(&["merge", run["run_id"].as_str().unwrap(), "--json"]);
    assert_eq!(merged.code, 0, "{merged:?}");
    assert_eq!(env.git(&["show", "main:src/f.txt"]).trim(), "one");
    let view = merged.json();
    assert_eq!(task(&view["run"], "f-c2")["state"], "merged");
    assert_eq!(task(&view["run"], "f-c1")["state"], "not_chosen");
    // A second candidate never lands on top of the first, even when a person accepts it.
    let run_id = run["run_id"].as_str().unwrap();
    let forced = env.ccfan(&[
        "accept",
        &format!("{run_id}/f-c1"),
        "--force",
        "--reason",
        "I prefer this one",
    ]);
    assert_eq!(forced.code, 0, "{forced:?}");
    let again = env.ccfan(&["merge", run_id, "--json"]);
    let loser = task(&again.json()["run"], "f-c1").clone();
    assert_eq!(loser["state"], "not_chosen", "{loser}");
    assert!(
        loser["reason"]
            .as_str()
            .unwrap()
            .contains("f-c2 already landed for f"),
        "{loser}"
    );
    assert_eq!(env.git(&["show", "main:src/f.txt"]).trim(), "one");
}

#[test]
fn bad_candidate_settings_are_refused_with_the_key() {
    let env = TestEnv::new();
    let worker = env.script("noop.sh", "exit 0");
    let refused = |task_body: &str| {
        let tasks = env.tasks(&format!(
            "[workers.w]\nkind = \"command\"\ncommand = [\"{}\"]\n\n[[task]]\nid = \"t\"\ngoal = \"g\"\nallowed = [\"x/**\"]\n{task_body}",
            worker.display()
        ));
        let ran = env.run(&tasks, &[]);
        assert_eq!(ran.code, 2, "{ran:?}");
        ran.stderr
    };
    assert!(refused("worker = \"w\"\ncandidates = 1\n").contains("task[1].candidates"));
    assert!(refused("worker = \"w\"\ncandidates = 9\n").contains("task[1].candidates"));
    assert!(refused("worker = \"w\"\nworkers = [\"w\", \"w\"]\n").contains("task[1].workers"));
    assert!(
        refused("workers = [\"w\", \"nobody\"]\n").contains("no worker profile named `nobody`")
    );
    assert!(refused("workers = [\"w\", \"w\"]\ncandidates = 3\n").contains("task[1].candidates"));
}
