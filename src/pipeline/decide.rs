//! Stage 5, decide: a pure function of the verification report, the policy and the rework budget. No I/O, no
//! `Result`: Accept, Rework and Rollback are values, so every branch is a unit test away.

pub use super::lifecycle::Budget;
use crate::policy::Policy;
use crate::report::{Finding, StageStatus, Verdict, VerifyReport};

/// What the gate concludes about an attempt, given its rework `budget`.
///
/// - Nothing blocking (no error-level finding, no stage that could not run): **Accept**.
/// - A stage ccfan could not run, or a blocking finding whose stage or rule is listed in the policy's
///   `gate.not_reworkable`: **Rollback** — another attempt would not fix it.
/// - Otherwise **Rework** with the blocking findings, while the rework budget (`run.max_reworks` further attempts
///   after the first) lasts; after that **Rollback**, naming what was still wrong.
pub fn decide(report: &VerifyReport, policy: &Policy, budget: Budget) -> Verdict {
    let errors: Vec<String> = report
        .stages
        .iter()
        .filter(|stage| stage.status == StageStatus::Error)
        .map(|stage| match &stage.note {
            Some(note) => format!("the {} stage could not run: {note}", stage.stage),
            None => format!("the {} stage could not run", stage.stage),
        })
        .collect();
    let blocking: Vec<Finding> = report
        .findings()
        .filter(|finding| finding.is_blocking())
        .cloned()
        .collect();
    if errors.is_empty() && blocking.is_empty() {
        return Verdict::Accept;
    }
    let not_reworkable: Vec<String> = blocking
        .iter()
        .filter(|finding| {
            policy
                .gate
                .not_reworkable
                .iter()
                .any(|entry| entry == finding.stage.as_str() || entry == &finding.rule)
        })
        .map(describe)
        .collect();
    if !errors.is_empty() || !not_reworkable.is_empty() {
        let mut reasons = errors;
        reasons.extend(
            not_reworkable
                .into_iter()
                .map(|what| format!("not reworkable: {what}")),
        );
        return Verdict::Rollback {
            reasons,
            budget_spent: false,
        };
    }
    let (attempt, max_reworks) = match budget {
        Budget::Unbounded => return Verdict::Rework { findings: blocking },
        Budget::Attempt {
            attempt,
            max_reworks,
        } => (attempt, max_reworks),
    };
    if attempt.saturating_sub(1) >= max_reworks {
        let mut reasons = vec![format!(
            "still failing after {attempt} attempt(s); the rework budget (run.max_reworks = {max_reworks}) is spent"
        )];
        reasons.extend(blocking.iter().map(describe));
        return Verdict::Rollback {
            reasons,
            budget_spent: true,
        };
    }
    Verdict::Rework { findings: blocking }
}

fn describe(finding: &Finding) -> String {
    let place = match (&finding.path, finding.line) {
        (Some(path), Some(line)) => format!(" at {path}:{line}"),
        (Some(path), None) => format!(" at {path}"),
        (None, _) => String::new(),
    };
    format!(
        "{} {}{place}: {}",
        finding.stage, finding.rule, finding.message
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy;
    use crate::report::{DiffSummary, Stage, StageReport};

    fn report(stages: Vec<StageReport>) -> VerifyReport {
        VerifyReport {
            schema: 1,
            subject: "r/t".into(),
            base: "b".into(),
            commit: Some("c".into()),
            preview: None,
            diff: DiffSummary::default(),
            stages,
        }
    }

    fn stage(stage: Stage, status: StageStatus, findings: Vec<Finding>) -> StageReport {
        StageReport {
            stage,
            status,
            findings,
            duration_ms: 0,
            note: None,
        }
    }

    fn at(attempt: u32, policy: &Policy) -> Budget {
        Budget::Attempt {
            attempt,
            max_reworks: policy.max_reworks,
        }
    }

    #[test]
    fn a_change_without_a_budget_is_never_spent() {
        let finding = Finding::error(crate::report::Stage::Scope, "denied", "x");
        let report = report(vec![stage(
            crate::report::Stage::Scope,
            StageStatus::Fail,
            vec![finding.clone()],
        )]);
        assert_eq!(
            decide(&report, &policy(), Budget::Unbounded),
            Verdict::Rework {
                findings: vec![finding]
            }
        );
    }

    fn policy() -> Policy {
        policy::load(None).unwrap()
    }

    #[test]
    fn clean_report_is_accepted() {
        let warn = Finding::warning(Stage::Diff, "ci-config", "touches CI");
        let report = report(vec![
            stage(Stage::Diff, StageStatus::Pass, vec![warn]),
            stage(Stage::Tests, StageStatus::Skipped, vec![]),
        ]);
        assert_eq!(
            decide(&report, &policy(), at(1, &policy())),
            Verdict::Accept
        );
    }

    #[test]
    fn blocking_findings_are_reworked_while_budget_lasts() {
        let finding = Finding::error(Stage::Scope, "out-of-scope", "README.md is not allowed")
            .at("README.md", None);
        let report = report(vec![stage(
            Stage::Scope,
            StageStatus::Fail,
            vec![finding.clone()],
        )]);
        let policy = policy();
        assert_eq!(policy.max_reworks, 3);
        for attempt in 1..=3 {
            assert_eq!(
                decide(&report, &policy, at(attempt, &policy)),
                Verdict::Rework {
                    findings: vec![finding.clone()]
                }
            );
        }
        match decide(&report, &policy, at(4, &policy)) {
            Verdict::Rollback {
                reasons,
                budget_spent,
            } => {
                assert!(budget_spent);
                assert!(reasons[0].contains("rework budget"), "{reasons:?}");
                assert!(reasons[1].contains("README.md"), "{reasons:?}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn not_reworkable_findings_roll_back_at_once() {
        let mut policy = policy();
        policy.gate.not_reworkable = vec!["secrets".into()];
        let finding = Finding::error(
            Stage::Secrets,
            "aws-access-key-id",
            "AWS key AKIA…[REDACTED]…3F",
        );
        let report = report(vec![stage(
            Stage::Secrets,
            StageStatus::Fail,
            vec![finding],
        )]);
        match decide(&report, &policy, at(1, &policy)) {
            Verdict::Rollback {
                reasons,
                budget_spent,
            } => {
                assert!(
                    !budget_spent
                        && reasons[0].starts_with("not reworkable: secrets aws-access-key-id")
                )
            }
            other => panic!("{other:?}"),
        }
        // By rule id too.
        policy.gate.not_reworkable = vec!["aws-access-key-id".into()];
        assert!(matches!(
            decide(&report, &policy, at(1, &policy)),
            Verdict::Rollback { .. }
        ));
    }

    #[test]
    fn a_stage_that_could_not_run_rolls_back() {
        let mut tests = stage(Stage::Tests, StageStatus::Error, vec![]);
        tests.note = Some("cannot start `cargo`".into());
        match decide(&report(vec![tests]), &policy(), at(1, &policy())) {
            Verdict::Rollback { reasons, .. } => assert_eq!(
                reasons,
                ["the tests stage could not run: cannot start `cargo`"]
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn zero_rework_budget_rolls_back_the_first_failure() {
        let mut policy = policy();
        policy.max_reworks = 0;
        let finding = Finding::error(Stage::Tests, "tests-failed", "exit 1");
        let report = report(vec![stage(Stage::Tests, StageStatus::Fail, vec![finding])]);
        assert!(matches!(
            decide(&report, &policy, at(1, &policy)),
            Verdict::Rollback { .. }
        ));
    }
}
