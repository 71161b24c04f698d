//! The cost ledger's values: what an attempt cost and where the figure came from, and usage and cost summed per
//! task, run, worker profile and day. Pricing itself lives in the cost module.

use std::collections::BTreeMap;

use serde::Serialize;

use super::agent::Usage;

/// Where an attempt's cost came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CostSource {
    /// The agent reported it.
    Agent,
    /// Its tokens priced from the table of this date, for this model.
    Table {
        /// The table's date.
        date: String,
        /// The model priced.
        model: String,
    },
}

/// What one attempt cost.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cost {
    /// US dollars.
    pub usd: f64,
    /// Where the figure came from.
    pub source: CostSource,
}

/// Usage and cost summed over attempts.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    /// Attempts counted.
    pub attempts: u32,
    /// Their tokens.
    pub usage: Usage,
    /// Their cost in US dollars, over the attempts whose cost is known.
    pub cost_usd: f64,
    /// Attempts with tokens but no known cost (no model, or a model the table lacks).
    pub unpriced: u32,
}

impl Totals {
    /// Adds one attempt.
    pub fn add(&mut self, usage: &Usage, cost: Option<&Cost>) {
        self.attempts += 1;
        self.usage = self.usage.plus(*usage);
        match cost {
            Some(cost) => self.cost_usd += cost.usd,
            None if !usage.is_empty() => self.unpriced += 1,
            None => {}
        }
    }
}

/// A run's ledger: its total, per worker profile, and per day (UTC, of each attempt's start).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Ledger {
    /// Every attempt.
    pub total: Totals,
    /// Per worker profile.
    pub by_profile: BTreeMap<String, Totals>,
    /// Per day, `YYYY-MM-DD`.
    pub by_day: BTreeMap<String, Totals>,
}

impl Ledger {
    /// Adds one attempt of `profile`, started on `day`.
    pub fn add(&mut self, profile: &str, day: &str, usage: &Usage, cost: Option<&Cost>) {
        self.total.add(usage, cost);
        self.by_profile
            .entry(profile.to_string())
            .or_default()
            .add(usage, cost);
        self.by_day
            .entry(day.to_string())
            .or_default()
            .add(usage, cost);
    }
}
