//! The only place that writes to the terminal: a live progress display (indicatif) on a TTY, plain progress lines
//! on stderr otherwise, and the tables and JSON documents on stdout.

mod gate;
mod hooks;
mod progress;

use std::io::Write;

pub use gate::{Judged, human_scan, human_verify, sarif_text, scan_sarif};
pub use hooks::{blocked_message, describe_hook, where_line};
pub use progress::{Progress, agent_line};

use crate::model::{RunView, TaskState};
use crate::pipeline::gc::GcReport;
use crate::status::RunList;
use crate::util::format_secs;

/// The first line of `text`, cut at `max` characters with an ellipsis.
pub fn one_line(text: &str, max: usize) -> String {
    // Text a worker controls never reaches the terminal with control characters (escape sequences) in it.
    let line: String = text
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    let line = line.as_str();
    if line.chars().count() <= max {
        return line.to_string();
    }
    let mut cut: String = line.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

pub use crate::util::short;

/// Writes `text` to stdout; a closed pipe is not an error.
pub fn out(text: &str) -> std::io::Result<()> {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Writes `text` to stderr (messages beside the result on stdout).
pub fn err(text: &str) {
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// Pretty JSON plus a newline.
pub fn json<T: serde::Serialize>(value: &T) -> String {
    let mut text =
        serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}

/// Lays rows out in aligned columns (the last column is not padded).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                if i == last {
                    cell.clone()
                } else {
                    format!("{cell:<w$}", w = widths[i])
                }
            })
            .collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    text
}

/// The human view of one run.
pub fn run_view(view: &RunView) -> String {
    let mut text = format!(
        "run {} ({}) · base {} ({}){}\n\n",
        view.run_id,
        view.state.as_str(),
        short(&view.base),
        view.base_rev,
        view.target_branch
            .as_deref()
            .map(|b| format!(" · into {b}"))
            .unwrap_or_default()
    );
    let rows: Vec<Vec<String>> = view
        .tasks
        .iter()
        .map(|task| {
            vec![
                task.id.to_string(),
                task.state.to_string(),
                task.attempts.to_string(),
                task.elapsed_secs.map(format_secs).unwrap_or_default(),
                task.commit.as_deref().map(short).unwrap_or("-").to_string(),
                match (&task.agent, task.state) {
                    (Some(agent), TaskState::Running) => one_line(&agent_line(agent), 160),
                    _ => one_line(task.reason.as_deref().unwrap_or_default(), 160),
                },
            ]
        })
        .collect();
    text.push_str(&table(
        &["TASK", "STATE", "ATTEMPTS", "TIME", "COMMIT", "NOTE"],
        &rows,
    ));
    if let Some(first) = view.tasks.first() {
        let folder = first
            .worktree
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        text.push_str(&format!(
            "\nworktrees: {folder}/<task>\nbranches:  ccfan/{run}/<task>   salvage: refs/ccfan/{run}/<task>/attempt-<n>\n",
            run = view.run_id
        ));
    }
    if let Some(usage) = &view.usage {
        text.push_str(&format!(
            "usage:     {} (all agent attempts)\n",
            usage.short()
        ));
    }
    if let Some(ledger) = &view.ledger {
        text.push_str(&cost_line(ledger));
    }
    let count = |state: TaskState| view.tasks.iter().filter(|t| t.state == state).count();
    let mut next = Vec::new();
    if count(TaskState::Accepted) > 0 && !view.no_merge {
        next.push(format!(
            "ccfan merge {}            land what is accepted",
            view.run_id
        ));
    }
    if count(TaskState::Blocked) > 0 {
        next.push(format!(
            "ccfan retry {}/<task>      a fresh rework budget for a blocked task",
            view.run_id
        ));
        next.push(format!(
            "ccfan rework {}/<task> --note \"…\"   another attempt with your note",
            view.run_id
        ));
    }
    if count(TaskState::Planned) > 0 {
        next.push(format!(
            "ccfan status {}/<task>     read a task's plan",
            view.run_id
        ));
        next.push(format!(
            "ccfan approve {}[/<task>]  run it with its plan (or `ccfan reject` to end it)",
            view.run_id
        ));
    }
    if count(TaskState::Skipped) > 0 {
        next.push(format!(
            "ccfan retry {}/<task>      start a skipped task once its prerequisites landed",
            view.run_id
        ));
    }
    if !next.is_empty() {
        text.push_str("next:      ");
        text.push_str(&next.join("\n           "));
        text.push('\n');
    }
    text
}

/// The human history of one task.
/// `cost:      $0.4210 (codex $0.31, claude $0.11); 1 attempt unpriced (no model or price)`.
fn cost_line(ledger: &crate::model::ledger::Ledger) -> String {
    let profiles: Vec<String> = ledger
        .by_profile
        .iter()
        .map(|(profile, totals)| format!("{profile} ${:.2}", totals.cost_usd))
        .collect();
    let mut line = format!("cost:      ${:.4}", ledger.total.cost_usd);
    if profiles.len() > 1 {
        line.push_str(&format!(" ({})", profiles.join(", ")));
    }
    if ledger.total.unpriced > 0 {
        line.push_str(&format!(
            "; {} attempt(s) unpriced: no model known or no price for it (set `model` in the worker profile, or add it to $XDG_CONFIG_HOME/ccfan/prices.toml)",
            ledger.total.unpriced
        ));
    }
    line.push('\n');
    line
}

/// A reviewed task's reviewer, its reviews and their cost, and the review findings the latest verdict sent back.
fn review_lines(text: &mut String, history: &crate::status::TaskHistory) {
    let Some(review) = &history.task.review else {
        return;
    };
    text.push_str(&format!(
        "\nreview: {} by `{}`{} · {} review(s){}{}{}\n",
        review.mode.as_str(),
        review.reviewer,
        if review.cross { " (cross)" } else { "" },
        review.reviews,
        review
            .latest
            .map(|latest| format!(", latest {}", latest.as_str()))
            .unwrap_or_default(),
        review
            .usage
            .map(|usage| format!(" · {}", usage.short()))
            .unwrap_or_default(),
        review
            .cost_usd
            .map(|cost| format!(" · ${cost:.4}"))
            .unwrap_or_default(),
    ));
    let latest = history
        .attempts
        .iter()
        .rev()
        .find_map(|a| a.verdict.as_ref());
    if let Some(crate::report::Verdict::Rework { findings }) = latest {
        for finding in findings
            .iter()
            .filter(|f| f.stage == crate::report::Stage::Review)
        {
            let place = match (&finding.path, finding.line) {
                (Some(path), Some(line)) => format!("{path}:{line}: "),
                (Some(path), None) => format!("{path}: "),
                (None, _) => String::new(),
            };
            text.push_str(&format!("  {} {place}{}\n", finding.rule, finding.message));
        }
    }
}

pub fn task_history(history: &crate::status::TaskHistory) -> String {
    let task = &history.task;
    let mut text = format!(
        "task {} of run {} · {} · {} attempt(s) · branch {}\n",
        task.id, history.run_id, task.state, task.attempts, task.branch
    );
    if let Some(reason) = &task.reason {
        text.push_str(&format!("  {reason}\n"));
    }
    let attempts: Vec<Vec<String>> = history
        .attempts
        .iter()
        .map(|a| {
            vec![
                a.attempt.to_string(),
                a.base.as_deref().map(short).unwrap_or("-").to_string(),
                a.commit.as_deref().map(short).unwrap_or("-").to_string(),
                a.exit_status
                    .as_ref()
                    .map_or_else(|| "-".to_string(), ToString::to_string),
                a.verdict
                    .as_ref()
                    .map_or_else(|| "-".to_string(), |v| v.name().to_string()),
                a.agent.as_ref().map_or_else(
                    || "-".to_string(),
                    |agent| {
                        format!(
                            "{} turn(s), {} command(s) · {}",
                            agent.turns,
                            agent.commands_run,
                            agent.usage.short()
                        )
                    },
                ),
            ]
        })
        .collect();
    let mut header = vec!["ATTEMPT", "BASE", "COMMIT", "EXIT", "VERDICT", "AGENT"];
    let mut attempts = attempts;
    if history.attempts.iter().all(|a| a.agent.is_none()) {
        header.pop();
        attempts.iter_mut().for_each(|row| drop(row.pop()));
    }
    text.push('\n');
    text.push_str(&table(&header, &attempts));
    review_lines(&mut text, history);
    if let Some(plan) = &history.plan {
        let approved = match task.plan.as_ref().and_then(|p| p.approval.as_ref()) {
            Some(approval) => format!(
                "approved by {} at {}{}",
                approval.by,
                approval.at,
                approval
                    .note
                    .as_ref()
                    .map(|note| format!(" (note: {note})"))
                    .unwrap_or_default()
            ),
            None => "not approved".to_string(),
        };
        text.push_str(&format!("\nplan ({approved}):\n{}\n", plan.trim_end()));
    }
    if let Some(agent) = history.attempts.iter().rev().find_map(|a| a.agent.as_ref()) {
        text.push_str(&format!(
            "\n{} session {}{}\n",
            agent.agent,
            agent.session_id.as_deref().unwrap_or("(none reported)"),
            if agent.resumed { " (resumed)" } else { "" }
        ));
        for command in agent.commands.iter().rev().take(5).rev() {
            let code = command
                .exit_code
                .map(|code| format!(" → {code}"))
                .unwrap_or_default();
            text.push_str(&format!("  $ {}{code}\n", one_line(&command.command, 120)));
        }
        if !agent.files_changed.is_empty() {
            text.push_str(&format!(
                "  edited: {}\n",
                one_line(&agent.files_changed.join(", "), 400)
            ));
        }
    }
    let transitions: Vec<Vec<String>> = history
        .transitions
        .iter()
        .map(|t| {
            vec![
                t.at.clone(),
                t.state.to_string(),
                one_line(t.reason.as_deref().unwrap_or_default(), 200),
            ]
        })
        .collect();
    text.push('\n');
    text.push_str(&table(&["AT", "STATE", "REASON"], &transitions));
    text
}

/// The human run list.
pub fn run_list(list: &RunList) -> String {
    if list.runs.is_empty() {
        return "no runs yet in this repository (start one with `ccfan run --tasks FILE`)\n"
            .to_string();
    }
    let rows: Vec<Vec<String>> = list
        .runs
        .iter()
        .map(|run| {
            let counts: Vec<String> = run
                .tasks
                .iter()
                .map(|(state, n)| format!("{n} {state}"))
                .collect();
            vec![
                run.run_id.to_string(),
                run.state.as_str().to_string(),
                run.created_at.clone(),
                short(&run.base).to_string(),
                counts.join(", "),
            ]
        })
        .collect();
    table(&["RUN", "STATE", "STARTED", "BASE", "TASKS"], &rows)
}

/// The human gc report.
pub fn gc_report(report: &GcReport) -> String {
    let mut text = String::new();
    let verb = if report.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for removed in &report.removed {
        text.push_str(&format!(
            "{verb} {}/{}: worktree {} and branch {}\n",
            removed.run_id,
            removed.task_id,
            removed.worktree.display(),
            removed.branch
        ));
        for name in &removed.salvaged {
            text.push_str(&format!("  kept unsaved work on {name}\n"));
        }
    }
    for skipped in &report.skipped {
        let what = match &skipped.task_id {
            Some(task) => format!("{}/{task}", skipped.run_id),
            None => skipped.run_id.to_string(),
        };
        text.push_str(&format!("skipped {what}: {}\n", skipped.reason));
    }
    if report.verify_checkouts_removed > 0 {
        text.push_str(&format!(
            "removed {} abandoned verification checkout(s)\n",
            report.verify_checkouts_removed
        ));
    }
    if report.layers_removed > 0 {
        text.push_str(&format!(
            "removed {} base layer(s) and setup log(s) no run needs\n",
            report.layers_removed
        ));
    }
    if report.removed.is_empty()
        && report.skipped.is_empty()
        && report.verify_checkouts_removed == 0
        && report.layers_removed == 0
    {
        text.push_str("nothing to remove\n");
    } else if !report.dry_run {
        text.push_str(
            "salvage refs (refs/ccfan/…) are kept; every attempt can still be seen with git log\n",
        );
    }
    text
}

/// `ccfan salvage list`: one row per kept attempt.
pub fn salvage_list(entries: &[crate::pipeline::salvage::SalvageEntry]) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|entry| {
            vec![
                format!(
                    "{}/{}/{}",
                    entry.run_id,
                    entry.task_id,
                    entry
                        .attempt
                        .map_or_else(|| entry.name.clone(), |n| n.to_string())
                ),
                short(&entry.commit).to_string(),
                entry
                    .verdict
                    .as_ref()
                    .map_or_else(|| "-".to_string(), |v| v.name().to_string()),
                entry.reference.clone(),
            ]
        })
        .collect();
    table(&["ATTEMPT", "COMMIT", "VERDICT", "REF"], &rows)
}

/// `ccfan salvage show`: one kept attempt and what it changed.
pub fn salvage_detail(detail: &crate::pipeline::salvage::SalvageDetail) -> String {
    let mut text = format!(
        "{} = {} (parent {})\n",
        detail.entry.reference,
        detail.entry.commit,
        detail.parent.as_deref().map(short).unwrap_or("-")
    );
    if let Some(verdict) = &detail.entry.verdict {
        text.push_str(&format!("verdict: {}\n", verdict.name()));
    }
    let rows: Vec<Vec<String>> = detail
        .files
        .iter()
        .map(|file| {
            vec![
                format!("{:?}", file.kind).to_lowercase(),
                format!("+{} -{}", file.added, file.removed),
                file.path.clone(),
            ]
        })
        .collect();
    text.push('\n');
    text.push_str(&table(&["CHANGE", "LINES", "PATH"], &rows));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_view_reads_well() {
        use crate::model::{ExitStatus, RunState, TaskView};
        let task = |id: &str,
                    state: TaskState,
                    reason: Option<&str>,
                    commit: Option<&str>,
                    exit: ExitStatus| TaskView {
            id: crate::ids::fixtures::task(id),
            state,
            reason: reason.map(str::to_string),
            after: Vec::new(),
            candidate: None,
            review: None,
            waits_for: Vec::new(),
            plan: None,
            attempts: 1,
            branch: format!("ccfan/r1/{id}"),
            worktree: format!("/wt/repo-1/r1/{id}").into(),
            worktree_present: true,
            commit: commit.map(crate::ids::fixtures::commit),
            exit_status: Some(exit),
            salvage_refs: vec![],
            log: None,
            elapsed_secs: Some(1.25),
            verdict: None,
            agent: None,
            usage: None,
            cost_usd: None,
            already_landed: None,
        };
        let view = RunView {
            schema: 1,
            run_id: crate::ids::fixtures::run("r1"),
            state: RunState::Finished,
            created_at: "2026-11-21T20:00:00Z".to_string(),
            base: crate::ids::fixtures::commit("0123456789abcdef"),
            base_rev: "HEAD".to_string(),
            target_branch: Some("main".to_string()),
            tasks_file: "/tasks.toml".into(),
            no_merge: false,
            plan_mode: false,
            usage: None,
            ledger: None,
            tasks: vec![
                task(
                    "good",
                    TaskState::Completed,
                    None,
                    Some("fedcba9876543210"),
                    ExitStatus::Code { code: 0 },
                ),
                task(
                    "hang",
                    TaskState::TimedOut,
                    Some("killed at its 3s timeout"),
                    None,
                    ExitStatus::TimedOut,
                ),
            ],
        };
        insta::assert_snapshot!(run_view(&view));
    }

    #[test]
    fn agent_progress_reads_in_one_line() {
        let view = crate::model::AgentView {
            agent: crate::agents::Agent::Codex,
            session_id: Some("t1".into()),
            current: Some("running `cargo test --workspace`".into()),
            turns: 4,
            commands_run: 3,
            last_command: Some("cargo test".into()),
            files_changed: 2,
            usage: crate::agents::Usage {
                input_tokens: 12_345,
                output_tokens: 678,
                ..Default::default()
            },
        };
        assert_eq!(
            agent_line(&view),
            "codex: running `cargo test --workspace` · 3 command(s) · 2 file(s) · 12k in · 678 out"
        );
    }

    #[test]
    fn table_aligns_columns() {
        let text = table(
            &["A", "LONGER"],
            &[vec!["xyz".into(), "1".into()], vec!["q".into(), "".into()]],
        );
        insta::assert_snapshot!(text, @r"
        A    LONGER
        xyz  1
        q
        ");
    }
}
