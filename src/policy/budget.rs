//! Policy, `[budget]`: caps on what a run and each of its tasks may spend, in US dollars (the cost ledger's figures)
//! and in tokens (input plus output, as the agents report them). Crossing one stops new attempts and the running
//! ones; the tasks end `over_budget`, their work kept like any other.

use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use crate::input::InputError;

/// `[budget]` as resolved: every cap optional. Dollars are kept in millionths, so the policy stays comparable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BudgetSettings {
    /// The whole run's cost cap, in millionths of a US dollar.
    pub run_micro_usd: Option<u64>,
    /// Each task's cost cap (all its attempts), in millionths of a US dollar.
    pub task_micro_usd: Option<u64>,
    /// The whole run's token cap.
    pub run_tokens: Option<u64>,
    /// Each task's token cap.
    pub task_tokens: Option<u64>,
}

impl BudgetSettings {
    /// Whether any cap is set.
    pub fn is_set(&self) -> bool {
        *self != BudgetSettings::default()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BudgetSection {
    run_usd: Option<Spanned<f64>>,
    task_usd: Option<Spanned<f64>>,
    run_tokens: Option<Spanned<i64>>,
    task_tokens: Option<Spanned<i64>>,
}

pub(super) fn resolve(
    file: &Path,
    source: &str,
    section: Option<BudgetSection>,
    base: Option<&BudgetSettings>,
) -> Result<BudgetSettings, InputError> {
    let base = base.copied().unwrap_or_default();
    let Some(section) = section else {
        return Ok(base);
    };
    let usd = |value: Option<Spanned<f64>>, key: &str, inherited: Option<u64>| match value {
        None => Ok(inherited),
        Some(value) if value.get_ref().is_finite() && *value.get_ref() > 0.0 => {
            Ok(Some((value.get_ref() * 1_000_000.0).round() as u64))
        }
        Some(value) => Err(InputError::new(
            file,
            format!("{} is not a cap in US dollars", value.get_ref()),
        )
        .key(key)
        .at_offset(source, Some(value.span().start))
        .fix("give a positive number of US dollars, e.g. 5.0; leave the key out for no cap")),
    };
    let tokens = |value: Option<Spanned<i64>>, key: &str, inherited: Option<u64>| match value {
        None => Ok(inherited),
        Some(value) if *value.get_ref() > 0 => Ok(Some(*value.get_ref() as u64)),
        Some(value) => Err(InputError::new(
            file,
            format!("{} is not a token cap", value.get_ref()),
        )
        .key(key)
        .at_offset(source, Some(value.span().start))
        .fix("give a positive number of tokens, e.g. 2_000_000; leave the key out for no cap")),
    };
    Ok(BudgetSettings {
        run_micro_usd: usd(section.run_usd, "budget.run_usd", base.run_micro_usd)?,
        task_micro_usd: usd(section.task_usd, "budget.task_usd", base.task_micro_usd)?,
        run_tokens: tokens(section.run_tokens, "budget.run_tokens", base.run_tokens)?,
        task_tokens: tokens(section.task_tokens, "budget.task_tokens", base.task_tokens)?,
    })
}
