//! The shareable run report: one run frozen as a self-contained HTML file (no external assets, no script: it
//! renders with the network off, e.g. as a CI artifact) or as a Markdown summary for a pull-request comment. Every
//! text that came from a worker — reasons, findings, diffs, log tails — is redacted before it is written.

use std::fmt::Write as _;

use crate::git::{self, RepoPaths};
use crate::model::{RunId, RunView, TaskState, TaskView};
use crate::paths::AttemptDir;
use crate::report::{StageReport, VerifyReport};
use crate::secrets::RulePack;
use crate::status::TaskHistory;
use crate::store::{Store, StoreError};

/// The most diff text kept per task.
const DIFF_CAP: usize = 200 << 10;
/// Diffs longer than this many lines start collapsed.
const DIFF_OPEN_LINES: usize = 400;
/// Lines of a worker's log kept.
const LOG_TAIL_LINES: usize = 40;
/// How much of a log's end is read (and redacted as a whole) to show its last lines.
const LOG_WINDOW: u64 = 1 << 20;

/// One task, as the report shows it.
pub struct TaskPart {
    /// Its history: state, attempts, transitions.
    pub history: TaskHistory,
    /// The gate's stages on its latest judged attempt.
    pub stages: Vec<StageReport>,
    /// Its change from its base to its latest commit, redacted, and whether it was cut.
    pub diff: Option<(String, bool)>,
    /// The end of its latest attempt's log, redacted.
    pub log_tail: Option<String>,
}

/// Everything a report shows.
pub struct RunReport {
    /// The run.
    pub view: RunView,
    /// Its tasks, in task-file order.
    pub tasks: Vec<TaskPart>,
}

/// Reads one run's report from the store, the attempts' folders and git; every worker text redacted by `rules`.
pub fn gather(
    repo: &RepoPaths,
    store: &Store,
    rules: &RulePack,
    run_id: &RunId,
) -> Result<RunReport, StoreError> {
    let view = crate::status::run_view(store, run_id)?;
    let mut tasks = Vec::new();
    for task in view.tasks.clone() {
        tasks.push(task_part(repo, store, rules, &view, task, None)?);
    }
    Ok(RunReport { view, tasks })
}

/// One task of `view` as the report shows it: its latest attempt, or attempt `pick` (its gate stages, its change
/// from its own base, its log), every worker text redacted by `rules`.
pub fn task_part(
    repo: &RepoPaths,
    store: &Store,
    rules: &RulePack,
    view: &RunView,
    task: TaskView,
    pick: Option<u32>,
) -> Result<TaskPart, StoreError> {
    let run_id = &view.run_id;
    let history = crate::status::history_of(store, run_id, task)?;
    let mut rows = store.attempts(run_id, &history.task.id)?;
    if let Some(n) = pick {
        rows.retain(|attempt| attempt.n == n);
    }
    let latest = rows.last();
    let stages = rows
        .iter()
        .rev()
        .find_map(|attempt| {
            let dir = AttemptDir::of(&attempt.dir);
            let bytes = crate::util::read_regular(
                &AttemptDir::verify_report(&dir.artifacts(false)),
                crate::util::MAX_WORKER_FILE,
            )
            .ok()?;
            serde_json::from_slice::<VerifyReport>(&bytes).ok()
        })
        .map(|report| report.stages)
        .unwrap_or_default();
    let base = latest
        .and_then(|attempt| attempt.base.clone())
        .unwrap_or_else(|| view.base.clone());
    let commit = match pick {
        Some(_) => rows.iter().rev().find_map(|attempt| attempt.commit.clone()),
        None => history.task.commit.clone(),
    };
    let diff = commit.as_ref().and_then(|commit| {
        git::patch_text(repo, &base, commit, DIFF_CAP)
            .ok()
            .map(|(text, cut)| (rules.redact_text(&text), cut))
    });
    let log_tail = latest.and_then(|attempt| log_tail(&attempt.log_path, rules));
    Ok(TaskPart {
        history,
        stages,
        diff,
        log_tail,
    })
}

/// The end of a worker's log, redacted: a window well before the last lines is redacted first, so a secret that
/// spans the cut (a private key whose header is above it) is still recognised.
fn log_tail(path: &std::path::Path, rules: &RulePack) -> Option<String> {
    let bytes = crate::util::read_regular_tail(path, LOG_WINDOW).ok()?;
    let text = rules.redact_text(&String::from_utf8_lossy(&bytes));
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
    (!tail.trim().is_empty()).then_some(tail)
}

fn mark(state: TaskState) -> &'static str {
    match state {
        TaskState::Merged | TaskState::Accepted => "✅",
        TaskState::Blocked
        | TaskState::Failed
        | TaskState::TimedOut
        | TaskState::Error
        | TaskState::OverBudget
        | TaskState::Conflict => "⛔",
        TaskState::RolledBack
        | TaskState::Cancelled
        | TaskState::Interrupted
        | TaskState::Skipped
        | TaskState::Rejected
        | TaskState::NotChosen => "↩️",
        TaskState::Planned => "📝",
        TaskState::Queued
        | TaskState::Waiting
        | TaskState::Preparing
        | TaskState::Running
        | TaskState::Completed
        | TaskState::Verifying
        | TaskState::Rework
        | TaskState::Merging => "⏳",
    }
}

/// `3 tasks: 2 merged, 1 blocked`.
fn counts(view: &RunView) -> String {
    let mut parts = Vec::new();
    for state in TaskState::ALL {
        let n = view.tasks.iter().filter(|task| task.state == state).count();
        if n > 0 {
            parts.push(format!("{n} {state}"));
        }
    }
    format!("{} task(s): {}", view.tasks.len(), parts.join(", "))
}

fn short(sha: &str) -> &str {
    &sha[..10.min(sha.len())]
}

fn cost(view: &RunView) -> String {
    match &view.ledger {
        Some(ledger) if ledger.total.unpriced > 0 => format!(
            " · cost ${:.4} ({} attempt(s) unpriced)",
            ledger.total.cost_usd, ledger.total.unpriced
        ),
        Some(ledger) => format!(" · cost ${:.4}", ledger.total.cost_usd),
        None => String::new(),
    }
}

/// Text as Markdown shows it literally: HTML escaped, and every character Markdown (or a pull-request page) gives a
/// meaning to — code spans, emphasis, links, table cells, mentions — written as an entity.
fn md(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in escape(text).chars() {
        match ch {
            '`' | '*' | '_' | '[' | ']' | '|' | '@' | '\\' | '~' => {
                let _ = write!(out, "&#{};", u32::from(ch));
            }
            other => out.push(other),
        }
    }
    out
}

/// One line for a Markdown table cell: literal text, no newlines, at most 120 characters.
fn cell(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let line = if line.chars().count() <= 120 {
        line
    } else {
        let mut cut: String = line.chars().take(119).collect();
        cut.push('…');
        cut
    };
    md(&line)
}

/// The Markdown summary: a table of the tasks, then the blocking findings of those that did not land.
pub fn markdown(report: &RunReport, rules: &RulePack) -> String {
    let view = &report.view;
    let mut text = format!(
        "## ccfan run `{}` — {}\n\nbase `{}` ({}){}{}\n\n| task | state | attempts | diff | cost | note |\n|---|---|---:|---|---:|---|\n",
        view.run_id,
        counts(view),
        short(&view.base),
        md(&view.base_rev),
        view.target_branch
            .as_ref()
            .map_or_else(String::new, |branch| format!(
                " → <code>{}</code>",
                md(branch)
            )),
        cost(view),
    );
    for part in &report.tasks {
        let task = &part.history.task;
        let diff = part
            .diff
            .as_ref()
            .map_or_else(|| "–".to_string(), |(patch, _)| diff_counts(patch));
        let _ = writeln!(
            text,
            "| `{}` | {} {} | {} | {} | {} | {} |",
            task.id,
            mark(task.state),
            task.state,
            task.attempts,
            diff,
            task.cost_usd
                .map_or_else(|| "–".to_string(), |usd| format!("${usd:.4}")),
            cell(&rules.redact_text(task.reason.as_deref().unwrap_or(""))),
        );
    }
    for part in &report.tasks {
        let task = &part.history.task;
        let findings: Vec<String> = part
            .stages
            .iter()
            .flat_map(|stage| &stage.findings)
            .filter(|finding| finding.level == crate::report::Level::Error)
            .take(10)
            .map(|finding| {
                format!(
                    "- **{}** <code>{}</code>{}: {}",
                    finding.stage.as_str(),
                    md(&finding.rule),
                    finding
                        .path
                        .as_ref()
                        .map_or_else(String::new, |path| format!(
                            " at <code>{}</code>",
                            md(&rules.redact_text(path))
                        )),
                    md(&rules.redact_text(&finding.message))
                )
            })
            .collect();
        if task.state.is_landed_or_accepted() || findings.is_empty() {
            continue;
        }
        let _ = write!(
            text,
            "\n<details><summary><code>{}</code>: what the gate found</summary>\n\n{}\n\n</details>\n",
            task.id,
            findings.join("\n")
        );
    }
    text.push_str("\n<sub>`ccfan status ");
    text.push_str(view.run_id.as_str());
    text.push_str(
        "` shows everything; `ccfan report --format html` makes the full report.</sub>\n",
    );
    text
}

/// `+12 −3` of a patch.
fn diff_counts(patch: &str) -> String {
    let added = patch
        .lines()
        .filter(|line| line.starts_with('+') && !line.starts_with("+++"))
        .count();
    let removed = patch
        .lines()
        .filter(|line| line.starts_with('-') && !line.starts_with("---"))
        .count();
    format!("+{added} −{removed}")
}

/// HTML text: `&`, `<`, `>`, `"` and `'` escaped.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:72rem;padding:0 1rem;color:#1f2328}\
h1{font-size:1.4rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #d0d7de}\
table{border-collapse:collapse;width:100%}td,th{border:1px solid #d0d7de;padding:.3rem .5rem;text-align:left;vertical-align:top}\
code,pre{font:12px/1.4 ui-monospace,monospace}pre{background:#f6f8fa;padding:.6rem;overflow:auto}\
.add{background:#dafbe1;display:block}.del{background:#ffebe9;display:block}.hunk{color:#6639ba;display:block}\
.pass{color:#1a7f37}.fail{color:#cf222e}.skip{color:#656d76}.meta{color:#656d76}";

/// The self-contained HTML report: the run, each task's state, timeline, gate stages, diff and log tail.
pub fn html(report: &RunReport, rules: &RulePack) -> String {
    let view = &report.view;
    let mut page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>ccfan run {id}</title>\
         <style>{STYLE}</style></head><body>\n<h1>ccfan run <code>{id}</code></h1>\n<p class=\"meta\">{counts} · base \
         <code>{base}</code> ({rev}){target} · started {created}{cost}</p>\n<table><tr><th>task</th><th>state</th>\
         <th>attempts</th><th>time</th><th>cost</th><th>note</th></tr>\n",
        id = escape(view.run_id.as_str()),
        counts = escape(&counts(view)),
        base = short(&view.base),
        rev = escape(&view.base_rev),
        target = view
            .target_branch
            .as_ref()
            .map_or_else(String::new, |branch| format!(
                " → <code>{}</code>",
                escape(branch)
            )),
        created = escape(&view.created_at),
        cost = escape(&cost(view)),
    );
    for part in &report.tasks {
        let task = &part.history.task;
        let _ = writeln!(
            page,
            "<tr><td><a href=\"#t-{id}\"><code>{id}</code></a></td><td>{mark} {state}</td><td>{attempts}</td><td>{time}</td><td>{cost}</td><td>{note}</td></tr>",
            id = escape(task.id.as_str()),
            mark = mark(task.state),
            state = task.state,
            attempts = task.attempts,
            time = task
                .elapsed_secs
                .map_or_else(|| "–".into(), |secs| format!("{secs:.1}s")),
            cost = task
                .cost_usd
                .map_or_else(|| "–".into(), |usd| format!("${usd:.4}")),
            note = escape(&rules.redact_text(task.reason.as_deref().unwrap_or(""))),
        );
    }
    page.push_str("</table>\n");
    for part in &report.tasks {
        task_section(&mut page, part, rules);
    }
    page.push_str("<p class=\"meta\">Made by <code>ccfan report</code>; secrets are shown redacted.</p>\n</body></html>\n");
    page
}

/// One task's section (timeline, gate stages, diff, log tail) as an HTML fragment, for the dashboard's detail view.
pub fn task_html(part: &TaskPart, rules: &RulePack) -> String {
    let mut page = String::new();
    task_section(&mut page, part, rules);
    page
}

/// Plan mode: the task's plan, and who approved it when (its evidence); and who reviews it, how the latest review
/// ended, and what the reviews cost (part of the task's cost).
fn plan_section(page: &mut String, history: &crate::status::TaskHistory, rules: &RulePack) {
    if let Some(review) = &history.task.review {
        let _ = writeln!(page, "<p>{}</p>", escape(&review.line()));
    }
    let Some(plan) = &history.plan else { return };
    let approved = match history.task.plan.as_ref().and_then(|p| p.approval.as_ref()) {
        Some(approval) => format!(
            "approved by {} at {} (plan {}){}",
            approval.by,
            approval.at,
            approval.plan_sha256.get(..12).unwrap_or_default(),
            approval
                .note
                .as_ref()
                .map(|note| format!(", note: {note}"))
                .unwrap_or_default()
        ),
        None => "not approved".to_string(),
    };
    let _ = writeln!(
        page,
        "<details open><summary>plan — {}</summary><pre>{}</pre></details>",
        escape(&rules.redact_text(&approved)),
        escape(&rules.redact_text(plan))
    );
}

fn task_section(page: &mut String, part: &TaskPart, rules: &RulePack) {
    let task = &part.history.task;
    let _ = writeln!(
        page,
        "<h2 id=\"t-{id}\"><code>{id}</code> — {mark} {state}</h2>",
        id = escape(task.id.as_str()),
        mark = mark(task.state),
        state = task.state
    );
    page.push_str("<details open><summary>timeline</summary><table><tr><th>at</th><th>state</th><th>why</th></tr>\n");
    for step in &part.history.transitions {
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&step.at),
            step.state,
            escape(&rules.redact_text(step.reason.as_deref().unwrap_or("")))
        );
    }
    page.push_str("</table></details>\n");
    plan_section(page, &part.history, rules);
    if !part.stages.is_empty() {
        page.push_str("<details open><summary>gate</summary><table><tr><th>stage</th><th>outcome</th><th>ms</th><th>findings</th></tr>\n");
        for stage in &part.stages {
            let findings: Vec<String> = stage
                .findings
                .iter()
                .map(|finding| {
                    format!(
                        "<code>{}</code>{}: {}",
                        escape(&finding.rule),
                        finding
                            .path
                            .as_ref()
                            .map_or_else(String::new, |path| format!(
                                " at <code>{}</code>",
                                escape(path)
                            )),
                        escape(&rules.redact_text(&finding.message))
                    )
                })
                .collect();
            let (status, class) = match stage.status {
                crate::report::StageStatus::Pass => ("pass", "pass"),
                crate::report::StageStatus::Fail => ("fail", "fail"),
                crate::report::StageStatus::Error => ("error", "fail"),
                crate::report::StageStatus::Skipped => ("skipped", "skip"),
            };
            let _ = writeln!(
                page,
                "<tr><td>{}</td><td class=\"{class}\">{}</td><td>{}</td><td>{}</td></tr>",
                stage.stage.as_str(),
                status,
                stage.duration_ms,
                findings.join("<br>")
            );
        }
        page.push_str("</table></details>\n");
    }
    if part.diff.is_none() {
        page.push_str("<p class=\"meta\">no change recorded</p>\n");
    }
    if let Some((patch, cut)) = &part.diff {
        let lines = patch.lines().count();
        let open = if lines <= DIFF_OPEN_LINES {
            " open"
        } else {
            ""
        };
        let _ = write!(
            page,
            "<details{open}><summary>diff ({}, {lines} lines{})</summary><pre>",
            diff_counts(patch),
            if *cut { ", cut" } else { "" }
        );
        for line in patch.lines() {
            let class = if line.starts_with("@@") {
                "hunk"
            } else if line.starts_with('+') && !line.starts_with("+++") {
                "add"
            } else if line.starts_with('-') && !line.starts_with("---") {
                "del"
            } else {
                ""
            };
            if class.is_empty() {
                let _ = writeln!(page, "{}", escape(line));
            } else {
                let _ = write!(page, "<span class=\"{class}\">{}</span>", escape(line));
            }
        }
        page.push_str("</pre></details>\n");
    }
    if let Some(tail) = &part.log_tail {
        let _ = writeln!(
            page,
            "<details><summary>worker log (last {LOG_TAIL_LINES} lines)</summary><pre>{}</pre></details>",
            escape(tail)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_text_is_escaped_and_diffs_are_counted() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(
            diff_counts("--- a/x\n+++ b/x\n@@ -1 +1,2 @@\n-old\n+new\n+more\n"),
            "+2 −1"
        );
        assert_eq!(cell("a | b\nc"), "a &#124; b c");
        assert_eq!(
            md("`x` @you [a](b) <i>"),
            "&#96;x&#96; &#64;you &#91;a&#93;(b) &lt;i&gt;"
        );
    }
}
