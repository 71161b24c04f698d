//! Seeing the fleet: the scorecard across runs, per worker profile, from what the gate really found.

use crate::env::TestEnv;

#[test]
fn the_scorecard_counts_first_attempt_acceptance_reworks_scope_and_secrets_per_profile() {
    let env = TestEnv::new();
    env.commit_policy("[run]\nmax_reworks = 1\n");
    let good = env.script("good.sh", "echo ok >> src.txt");
    // Out of scope on the first attempt, inside it on the second.
    let stray = env.script(
        "stray.sh",
        "if [ \"$CCFAN_ATTEMPT\" = 1 ]; then echo x > outside.txt; else rm outside.txt; echo y > docs.txt; fi",
    );
    let leak = env.script(
        "leak.sh",
        r#"key="AKIA$(LC_ALL=C tr -dc 'A-Z2-7' </dev/urandom | head -c 16)"
printf 'AWS_ACCESS_KEY_ID=%s\n' "$key" > deploy.env"#,
    );
    let tasks = env.tasks(&format!(
        "[workers.good]\nkind = \"command\"\ncommand = [\"{}\"]\n\
         [workers.stray]\nkind = \"command\"\ncommand = [\"{}\"]\n\
         [workers.leak]\nkind = \"command\"\ncommand = [\"{}\"]\n\
         [[task]]\nid = \"g1\"\ngoal = \"x\"\nworker = \"good\"\nallowed = [\"src.txt\"]\n\
         [[task]]\nid = \"s1\"\ngoal = \"x\"\nworker = \"stray\"\nallowed = [\"docs.txt\"]\n\
         [[task]]\nid = \"l1\"\ngoal = \"x\"\nworker = \"leak\"\n",
        good.display(),
        stray.display(),
        leak.display()
    ));
    let ran = env.run(&tasks, &["--no-merge"]);
    assert_eq!(ran.code, 1, "{ran:?}");
    let card = env.ccfan(&["scorecard", "--json"]);
    assert_eq!(card.code, 0, "{card:?}");
    let card = card.json();
    assert_eq!(card["runs"], 1, "{card}");
    let row = |profile: &str| {
        card["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|row| row["profile"] == profile)
            .unwrap_or_else(|| panic!("no row for {profile}: {card}"))
            .clone()
    };
    let good = row("good");
    assert_eq!(
        (
            &good["model"],
            &good["tasks"],
            &good["accepted"],
            &good["accepted_first_attempt"]
        ),
        (&"-".into(), &1.into(), &1.into(), &1.into()),
        "{good}"
    );
    assert_eq!(good["mean_reworks"], 0.0);
    let stray = row("stray");
    assert_eq!(
        (&stray["accepted"], &stray["accepted_first_attempt"]),
        (&1.into(), &0.into()),
        "{stray}"
    );
    assert_eq!(stray["mean_reworks"], 1.0, "{stray}");
    assert_eq!(stray["scope_violations"], 1, "{stray}");
    let leak = row("leak");
    assert_eq!(leak["accepted"], 0, "{leak}");
    assert!(leak["secrets_caught"].as_u64().unwrap() >= 1, "{leak}");
    assert!(good["median_secs"].as_f64().is_some());
    // The table names every profile; a bad --since is bad input naming the flag.
    let table = env.ccfan(&["scorecard"]);
    assert!(
        table.stdout.contains("good")
            && table.stdout.contains("stray")
            && table.stdout.contains("1ST/ACCEPTED"),
        "{table:?}"
    );
    let future = env
        .ccfan(&["scorecard", "--json", "--since", "2999-01-01"])
        .json();
    assert_eq!(future["runs"], 0, "{future}");
    let bad = env.ccfan(&["scorecard", "--since", "last tuesday"]);
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(bad.stderr.contains("--since"), "{bad:?}");
}
