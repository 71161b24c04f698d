//! Beside the stages, spending caps: what a task and its run have spent (the cost ledger's dollars, the agents'
//! tokens, live attempts included) against `[budget]`. Deciding is a pure function over those values; the carrier
//! stops the tasks it names.

use std::collections::HashMap;

use crate::cost::PriceTable;
use crate::model::TaskId;
use crate::model::agent::AgentSummary;
use crate::policy::BudgetSettings;

/// When a task's spending is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Before it starts an attempt.
    Starting,
    /// While its worker reports progress.
    Live,
    /// After an attempt.
    Ended,
}

/// Dollars and tokens spent.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spend {
    /// US dollars, over the attempts whose cost is known.
    pub usd: f64,
    /// Input plus output tokens.
    pub tokens: u64,
}

/// Which cap was crossed, and how it reads.
#[derive(Debug, Clone, PartialEq)]
pub enum Over {
    /// The task's own cap: only it stops.
    Task(String),
    /// The run's: every task still moving stops, and none starts.
    Run(String),
}

/// What each task and the whole run spent, from every attempt's agent summary (live ones included).
pub fn spend_of<'a>(
    prices: &PriceTable,
    summaries: impl IntoIterator<Item = (&'a TaskId, &'a AgentSummary)>,
) -> (HashMap<TaskId, Spend>, Spend) {
    let mut tasks: HashMap<TaskId, Spend> = HashMap::new();
    let mut run = Spend::default();
    for (task, summary) in summaries {
        let usd = prices
            .cost(summary.agent, summary.model.as_deref(), &summary.usage)
            .map_or(0.0, |cost| cost.usd);
        let tokens = summary
            .usage
            .input_tokens
            .saturating_add(summary.usage.output_tokens);
        let spent = tasks.entry(task.clone()).or_default();
        spent.usd += usd;
        spent.tokens = spent.tokens.saturating_add(tokens);
        run.usd += usd;
        run.tokens = run.tokens.saturating_add(tokens);
    }
    (tasks, run)
}

/// The first cap `task` and `run` cross, if any: the run's before the task's (it stops more).
pub fn check(budget: &BudgetSettings, task: Spend, run: Spend) -> Option<Over> {
    let dollars = |micro: u64| micro as f64 / 1_000_000.0;
    if let Some(cap) = budget.run_micro_usd.map(dollars)
        && run.usd >= cap
    {
        return Some(Over::Run(format!(
            "the run spent ${:.4}, its cap is ${cap:.2} (budget.run_usd)",
            run.usd
        )));
    }
    if let Some(cap) = budget.run_tokens
        && run.tokens >= cap
    {
        return Some(Over::Run(format!(
            "the run used {} tokens, its cap is {cap} (budget.run_tokens)",
            run.tokens
        )));
    }
    if let Some(cap) = budget.task_micro_usd.map(dollars)
        && task.usd >= cap
    {
        return Some(Over::Task(format!(
            "the task spent ${:.4}, its cap is ${cap:.2} (budget.task_usd)",
            task.usd
        )));
    }
    if let Some(cap) = budget.task_tokens
        && task.tokens >= cap
    {
        return Some(Over::Task(format!(
            "the task used {} tokens, its cap is {cap} (budget.task_tokens)",
            task.tokens
        )));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spend(usd: f64, tokens: u64) -> Spend {
        Spend { usd, tokens }
    }

    #[test]
    fn the_run_cap_comes_first_and_no_cap_never_stops() {
        let none = BudgetSettings::default();
        assert_eq!(
            check(&none, spend(1e9, u64::MAX), spend(1e9, u64::MAX)),
            None
        );
        let budget = BudgetSettings {
            run_micro_usd: Some(5_000_000),
            task_micro_usd: Some(1_000_000),
            run_tokens: None,
            task_tokens: Some(1000),
        };
        assert_eq!(check(&budget, spend(0.5, 999), spend(4.0, 5000)), None);
        assert!(
            matches!(check(&budget, spend(1.0, 0), spend(1.0, 0)), Some(Over::Task(reason)) if reason.contains("budget.task_usd"))
        );
        assert!(
            matches!(check(&budget, spend(0.0, 1000), spend(0.0, 1000)), Some(Over::Task(reason)) if reason.contains("budget.task_tokens"))
        );
        assert!(
            matches!(check(&budget, spend(2.0, 0), spend(5.0, 0)), Some(Over::Run(reason)) if reason.contains("budget.run_usd"))
        );
    }
}
