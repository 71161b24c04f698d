//! The cost ledger: what each attempt cost — the agent's own figure when it reports one (Claude Code does), else its
//! tokens priced from a table kept as data (`data/prices.toml`: per provider and model, with the date it was read;
//! the user's `$XDG_CONFIG_HOME/ccfan/prices.toml` replaces entries of it). Cached input, cache writes and
//! reasoning are priced as the providers price them: tools that priced cached tokens as fresh input were 10–20× off.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::input::InputError;
use crate::model::agent::{Agent, Usage};
use crate::model::ledger::{Cost, CostSource};

/// The table compiled into ccfan.
const BUILTIN: &str = include_str!("../data/prices.toml");

/// Prices per million tokens for one model.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct Price {
    provider: String,
    model: String,
    input: f64,
    #[serde(default)]
    cached_input: Option<f64>,
    #[serde(default)]
    cache_write: Option<f64>,
    output: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TableFile {
    date: String,
    #[serde(default)]
    price: Vec<Price>,
}

/// A price table: the built-in one, with the user's entries over it.
#[derive(Debug, Clone)]
pub struct PriceTable {
    prices: Vec<(Price, String)>,
}

fn parse(path: &Path, text: &str) -> Result<TableFile, InputError> {
    let table: TableFile = toml::from_str(text).map_err(|error| {
        InputError::new(path, error.message().to_string())
            .at_offset(text, error.span().map(|span| span.start))
            .fix("write `date = \"YYYY-MM-DD\"` and [[price]] entries with provider, model, input, output (and optionally cached_input, cache_write), in US dollars per million tokens")
    })?;
    for (i, price) in table.price.iter().enumerate() {
        let rates = [
            Some(price.input),
            price.cached_input,
            price.cache_write,
            Some(price.output),
        ];
        if rates
            .into_iter()
            .flatten()
            .any(|rate| !rate.is_finite() || rate < 0.0)
        {
            return Err(InputError::new(
                path,
                format!(
                    "price[{i}] ({}) has a negative or non-finite rate",
                    price.model
                ),
            )
            .key(format!("price[{i}]"))
            .fix("give every rate as a number of US dollars per million tokens, 0 or more"));
        }
    }
    Ok(table)
}

impl PriceTable {
    /// The built-in table.
    pub fn builtin() -> PriceTable {
        let table = parse(Path::new("data/prices.toml"), BUILTIN).unwrap_or(TableFile {
            date: String::new(),
            price: Vec::new(),
        });
        let date = table.date;
        PriceTable {
            prices: table
                .price
                .into_iter()
                .map(|price| (price, date.clone()))
                .collect(),
        }
    }

    /// The built-in table with the user's (`$XDG_CONFIG_HOME/ccfan/prices.toml`, if there is one) over it. A
    /// broken user table is bad input naming the file and field.
    pub fn load() -> Result<PriceTable, InputError> {
        let mut table = PriceTable::builtin();
        if let Some(path) = user_table().filter(|path| path.exists()) {
            table.overlay(&path)?;
        }
        Ok(table)
    }

    /// Puts the entries of the table at `path` over this one (same provider and model: replaced).
    pub fn overlay(&mut self, path: &Path) -> Result<(), InputError> {
        let text = crate::input::read_text(path, "price table")?;
        let user = parse(path, &text)?;
        for price in user.price {
            self.prices.retain(|(known, _)| {
                !(known.provider == price.provider && known.model == price.model)
            });
            self.prices.push((price, user.date.clone()));
        }
        Ok(())
    }

    /// The price of `agent`'s `model`: the table entry of that name, or of that name less a date suffix
    /// (`claude-sonnet-4-5-20250929`, `gpt-5-2025-08-07`): never a longer name's (`gpt-5-nano` is not `gpt-5`).
    fn find(&self, agent: Agent, model: &str) -> Option<&(Price, String)> {
        let provider = provider(agent);
        self.prices
            .iter()
            .find(|(price, _)| price.provider == provider && names(model, &price.model))
    }

    /// What an attempt cost: the agent's figure, else its tokens priced for `model`; `None` when neither is known.
    pub fn cost(&self, agent: Agent, model: Option<&str>, usage: &Usage) -> Option<Cost> {
        if let Some(usd) = usage.cost_usd {
            return Some(Cost {
                usd,
                source: CostSource::Agent,
            });
        }
        if usage.is_empty() {
            return None;
        }
        let (price, date) = self.find(agent, model?)?;
        let per = |tokens: u64, rate: f64| tokens as f64 * rate / 1_000_000.0;
        let cached = usage.cached_input_tokens.min(usage.input_tokens);
        let written = usage.cache_write_tokens.min(usage.input_tokens - cached);
        let fresh = usage.input_tokens - cached - written;
        let usd = per(fresh, price.input)
            + per(cached, price.cached_input.unwrap_or(price.input))
            + per(written, price.cache_write.unwrap_or(price.input))
            + per(usage.output_tokens, price.output);
        Some(Cost {
            usd,
            source: CostSource::Table {
                date: date.clone(),
                model: price.model.clone(),
            },
        })
    }
}

/// Whether the reported `model` is the table's `name`, exactly or with a date suffix.
fn names(model: &str, name: &str) -> bool {
    let Some(rest) = model.strip_prefix(name) else {
        return false;
    };
    let digits = |text: &str| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    match rest.strip_prefix('-') {
        None => rest.is_empty(),
        Some(date) => {
            (date.len() == 8 && digits(date))
                || (date.len() == 10
                    && date.split('-').map(str::len).eq([4, 2, 2])
                    && date.split('-').all(digits))
        }
    }
}

/// The provider whose prices an agent pays.
fn provider(agent: Agent) -> &'static str {
    match agent {
        Agent::Codex => "openai",
        Agent::Claude => "anthropic",
    }
}

/// Where the user's own table lives.
pub fn user_table() -> Option<PathBuf> {
    std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))
        .map(|config| config.join("ccfan").join("prices.toml"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ledger::Ledger;

    fn usage(input: u64, cached: u64, written: u64, output: u64) -> Usage {
        Usage {
            input_tokens: input,
            cached_input_tokens: cached,
            cache_write_tokens: written,
            output_tokens: output,
            reasoning_output_tokens: output / 2,
            cost_usd: None,
        }
    }

    #[test]
    fn cached_and_cache_write_tokens_are_priced_as_the_provider_prices_them() {
        let table = PriceTable::builtin();
        // Codex: 1M input of which 900k cached, 100k output, on gpt-5-codex ($1.25, $0.125 cached, $10 out).
        let cost = table
            .cost(
                Agent::Codex,
                Some("gpt-5-codex"),
                &usage(1_000_000, 900_000, 0, 100_000),
            )
            .unwrap();
        assert!((cost.usd - (0.125 + 0.1125 + 1.0)).abs() < 1e-9, "{cost:?}");
        // Priced as fresh input, the same tokens would cost 2.25: the ledger must not do that.
        // Claude: a dated model name matches its family; cache writes at their own rate.
        let cost = table
            .cost(
                Agent::Claude,
                Some("claude-sonnet-4-5-20250929"),
                &usage(1_000_000, 500_000, 200_000, 10_000),
            )
            .unwrap();
        let expected = 0.3 * 3.0 + 0.5 * 0.30 + 0.2 * 3.75 + 0.01 * 15.0;
        assert!((cost.usd - expected).abs() < 1e-9, "{cost:?}");
        assert_eq!(
            cost.source,
            CostSource::Table {
                date: "2025-10-15".into(),
                model: "claude-sonnet-4-5".into()
            }
        );
    }

    #[test]
    fn a_model_is_its_table_name_or_that_name_with_a_date() {
        assert!(names("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"));
        assert!(names("gpt-5-2025-08-07", "gpt-5"));
        assert!(names("gpt-5", "gpt-5"));
        assert!(!names("gpt-5-nano", "gpt-5"));
        assert!(!names("gpt-5-pro", "gpt-5"));
        assert!(!names("gpt-50", "gpt-5"));
        let table = PriceTable::builtin();
        assert!(
            table
                .cost(Agent::Codex, Some("gpt-5-nano"), &usage(10, 0, 0, 10))
                .is_none()
        );
    }

    #[test]
    fn the_agents_own_cost_wins_and_unknown_models_stay_unpriced() {
        let table = PriceTable::builtin();
        let mut reported = usage(10, 0, 0, 10);
        reported.cost_usd = Some(0.5);
        assert_eq!(
            table.cost(Agent::Claude, None, &reported).unwrap().source,
            CostSource::Agent
        );
        assert!(
            table
                .cost(Agent::Codex, None, &usage(10, 0, 0, 10))
                .is_none()
        );
        assert!(
            table
                .cost(Agent::Codex, Some("some-new-model"), &usage(10, 0, 0, 10))
                .is_none()
        );
        let mut ledger = Ledger::default();
        ledger.add("codex", "2026-12-02", &usage(10, 0, 0, 10), None);
        ledger.add(
            "codex",
            "2026-12-02",
            &reported,
            table.cost(Agent::Claude, None, &reported).as_ref(),
        );
        assert_eq!(ledger.total.unpriced, 1);
        assert!((ledger.by_day["2026-12-02"].cost_usd - 0.5).abs() < 1e-9);
    }

    /// The summary ccfan keeps of a recorded transcript.
    fn summary_of(agent: Agent, name: &str) -> crate::model::agent::AgentSummary {
        let parse = match agent {
            Agent::Codex => crate::agents::codex::parse_line,
            Agent::Claude => crate::agents::claude::parse_line,
        };
        let mut tally = crate::agents::tally::Tally::new(
            agent,
            Path::new("/w"),
            None,
            false,
            Usage::default(),
            crate::model::ApiRetryLimit::default(),
        );
        for event in crate::agents::replay_transcript(name, parse) {
            tally.observe(event);
        }
        tally.finish()
    }

    #[test]
    fn recorded_streams_of_both_agents_give_the_ledger_expected_from_the_table() {
        let table = PriceTable::builtin();
        // Codex 0.169.0 reports tokens (300 of 3006 input cached, 30 of 156 output reasoning) and no cost or
        // model: the profile's model prices them.
        let codex = summary_of(Agent::Codex, "codex-0.169.0-edit.jsonl");
        assert_eq!(
            (
                codex.usage.input_tokens,
                codex.usage.cached_input_tokens,
                codex.usage.reasoning_output_tokens
            ),
            (3006, 300, 30)
        );
        assert!(
            table
                .cost(Agent::Codex, codex.model.as_deref(), &codex.usage)
                .is_none()
        );
        let codex_cost = table
            .cost(Agent::Codex, Some("gpt-5-codex"), &codex.usage)
            .unwrap();
        let expected = (2706.0 * 1.25 + 300.0 * 0.125 + 156.0 * 10.0) / 1e6;
        assert!((codex_cost.usd - expected).abs() < 1e-12, "{codex_cost:?}");
        // Claude Code 2.1.330 names its model and reports its own cost, which wins.
        let claude = summary_of(Agent::Claude, "claude-2.1.330-edit.jsonl");
        assert!(claude.model.is_some());
        let claude_cost = table
            .cost(Agent::Claude, claude.model.as_deref(), &claude.usage)
            .unwrap();
        assert_eq!(claude_cost.source, CostSource::Agent);
        assert!((claude_cost.usd - 0.014544).abs() < 1e-12);
        let mut ledger = Ledger::default();
        ledger.add("codex", "2026-12-02", &codex.usage, Some(&codex_cost));
        ledger.add("claude", "2026-12-02", &claude.usage, Some(&claude_cost));
        ledger.add("codex", "2026-12-03", &codex.usage, None);
        assert_eq!(ledger.total.attempts, 3);
        assert_eq!(ledger.total.unpriced, 1);
        assert!((ledger.total.cost_usd - (expected + 0.014544)).abs() < 1e-12);
        assert!((ledger.by_profile["codex"].cost_usd - expected).abs() < 1e-12);
        assert_eq!(ledger.by_day["2026-12-03"].unpriced, 1);
        assert_eq!(ledger.by_profile["codex"].usage.input_tokens, 2 * 3006);
    }

    #[test]
    fn a_users_table_replaces_entries_and_a_broken_one_names_its_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prices.toml");
        std::fs::write(
            &path,
            "date = \"2026-12-01\"\n[[price]]\nprovider = \"openai\"\nmodel = \"gpt-5-codex\"\ninput = 2.0\noutput = 20.0\n",
        )
        .unwrap();
        let mut table = PriceTable::builtin();
        table.overlay(&path).unwrap();
        let cost = table
            .cost(
                Agent::Codex,
                Some("gpt-5-codex"),
                &usage(1_000_000, 0, 0, 0),
            )
            .unwrap();
        assert!((cost.usd - 2.0).abs() < 1e-9);
        std::fs::write(&path, "date = \"x\"\n[[price]]\nprovider = \"openai\"\nmodel = \"m\"\ninput = -1\noutput = 1\n").unwrap();
        let error = PriceTable::builtin()
            .overlay(&path)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("prices.toml") && error.contains("price[0]"),
            "{error}"
        );
        std::fs::write(
            &path,
            "date = \"x\"\n[[price]]\nprovider = \"openai\"\nmodel = \"m\"\ninput = 1\n",
        )
        .unwrap();
        let error = PriceTable::builtin()
            .overlay(&path)
            .unwrap_err()
            .to_string();
        assert!(error.contains("output"), "{error}");
    }
}
