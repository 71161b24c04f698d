//! `ccfan scorecard`: the library's scorecard of the repository's runs, as a table or JSON.

use std::path::Path;

use super::args::ScorecardArgs;
use super::{CliError, Exit, render, repo_at};
use crate::input::InputError;
use crate::pipeline::{self, PipelineError};

/// Runs `ccfan scorecard`.
pub fn scorecard(start: &Path, args: ScorecardArgs) -> Result<Exit, CliError> {
    let repo = repo_at(start)?;
    let since = args.since.as_deref().map(since_millis).transpose()?;
    let (store, _) = pipeline::open_state(&repo)?;
    let prices = crate::cost::PriceTable::load().map_err(PipelineError::from)?;
    let card = crate::scorecard::scorecard(&store, &prices, since).map_err(PipelineError::from)?;
    render::out(&if args.json {
        render::json(&card)
    } else {
        table(&card)
    })?;
    Ok(Exit::Success)
}

/// `--since`: a date (`YYYY-MM-DD`, UTC midnight) or a time ago (`7d`), as milliseconds since the epoch.
fn since_millis(text: &str) -> Result<i64, PipelineError> {
    let at = humantime::parse_duration(text)
        .ok()
        .and_then(|ago| std::time::SystemTime::now().checked_sub(ago))
        .or_else(|| humantime::parse_rfc3339(&format!("{text}T00:00:00Z")).ok());
    at.and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|since| since.as_millis() as i64)
        .ok_or_else(|| {
            InputError::new(
                Path::new("<command line>"),
                format!("`{text}` is not a date or a time ago"),
            )
            .key("--since")
            .fix("give a date like 2026-12-01 or a time ago like 7d or 24h")
            .into()
        })
}

fn table(card: &crate::scorecard::Scorecard) -> String {
    if card.rows.is_empty() {
        return format!("no task ran in the {} run(s) counted\n", card.runs);
    }
    let money = |usd: Option<f64>| usd.map_or_else(|| "-".to_string(), |usd| format!("${usd:.4}"));
    let rows: Vec<Vec<String>> = card
        .rows
        .iter()
        .map(|row| {
            vec![
                row.profile.clone(),
                row.model.clone(),
                row.tasks.to_string(),
                format!("{}/{}", row.accepted_first_attempt, row.accepted),
                format!("{:.2}", row.mean_reworks),
                row.scope_violations.to_string(),
                row.secrets_caught.to_string(),
                row.tests_failed.to_string(),
                row.median_secs
                    .map_or_else(|| "-".into(), |secs| format!("{secs:.1}s")),
                money(Some(row.cost_usd)),
                money(row.cost_per_accepted_usd),
            ]
        })
        .collect();
    let mut text = format!("{} run(s)\n\n", card.runs);
    text.push_str(&render::table(
        &[
            "PROFILE",
            "MODEL",
            "TASKS",
            "1ST/ACCEPTED",
            "REWORKS",
            "SCOPE",
            "SECRETS",
            "TESTS-FAILED",
            "MEDIAN",
            "COST",
            "PER-ACCEPTED",
        ],
        &rows,
    ));
    let unpriced: u32 = card.rows.iter().map(|row| row.unpriced_attempts).sum();
    if unpriced > 0 {
        text.push_str(&format!(
            "\n{unpriced} attempt(s) unpriced (no model or no price known): their cost is not in COST\n"
        ));
    }
    text
}

/// Runs `ccfan report`.
pub fn report(start: &Path, args: super::args::ReportArgs) -> Result<Exit, CliError> {
    let repo = repo_at(start)?;
    write_report(
        &repo,
        &args.run,
        args.out.as_deref(),
        args.format.as_deref(),
    )?;
    Ok(Exit::Success)
}

/// Writes the run's report to `out` (or prints it): HTML, or Markdown when asked or `out` ends in `.md`.
pub(super) fn write_report(
    repo: &crate::git::RepoPaths,
    run_id: &crate::model::RunId,
    out: Option<&Path>,
    format: Option<&str>,
) -> Result<(), CliError> {
    let (store, _) = pipeline::open_state(repo)?;
    let rules = pipeline::display_rules(repo).map_err(PipelineError::from)?;
    let gathered =
        crate::run_report::gather(repo, &store, &rules, run_id).map_err(PipelineError::from)?;
    let markdown = match (format, out) {
        (Some(format), _) => format == "md",
        (None, Some(out)) => out.extension().is_some_and(|ext| ext == "md"),
        (None, None) => true,
    };
    let text = if markdown {
        crate::run_report::markdown(&gathered, &rules)
    } else {
        crate::run_report::html(&gathered, &rules)
    };
    match out {
        Some(out) => std::fs::write(out, text).map_err(|source| {
            CliError::from(PipelineError::Io {
                context: format!("cannot write the report to {}", out.display()),
                source,
            })
        }),
        None => render::out(&text).map_err(CliError::from),
    }
}
