//! Stage 3 (run worker), agent workers: the prompt — the task (goal, scope, constraints, acceptance criteria) and
//! how to finish on a first attempt; the gate's findings on a rework, sent into the same session so the agent
//! keeps what it already knows.

use std::fmt::Write as _;

use crate::model::{AttemptMode, Handoff, TaskSpec};
use crate::report::Finding;

/// The sections the final message must hold (the completeness stage checks them).
const FINISH: &str =
    "Do not commit, push, or create branches or tags: ccfan records your changes itself.
When you are done, end with a final message that has exactly these three sections:
## Summary
What you changed and why, in a few lines.
## Tests
The commands you ran to check your work and what they showed (or why you could not run any).
## Files Changed
One line per file you changed, as `- path/relative/to/the/repository`.";

/// The final message a planning agent ends with (ccfan stores it as the plan).
const PLAN_FINISH: &str = "This is the planning step: do not change, create or delete any file (the working directory
is read-only to you) and do not run commands that write. Read what you need, then end with a final message that
is the plan a person will approve before you carry it out:
## Plan
The steps, in order, each naming the files it changes and how.
## Risks
What could go wrong, and what you are unsure of.
## Tests
How you will check the work.";

/// What a reviewer must end with.
const REVIEW_FINISH: &str = "Do not change, create or delete any file (the working directory is read-only to you) and
do not run commands that write. Judge whether the change does what the task asks, within its constraints and
acceptance criteria: look for wrong or missing behaviour, tests deleted or weakened to pass, hacks that only satisfy
the checks, and changes the task did not ask for. Then end with a final message that is only this JSON object:";

/// What a reviewer is shown of the change: the parts of a review prompt that are not the task.
#[derive(Debug, Clone, Copy)]
pub struct ReviewShown<'a> {
    /// The whole diff as a file.
    pub diff_file: &'a std::path::Path,
    /// The diff, or its head.
    pub diff: &'a str,
    /// Whether `diff` is all of it.
    pub whole: bool,
    /// The files changed.
    pub changed: &'a [String],
    /// The gate's findings so far.
    pub findings: &'a [Finding],
    /// What this reviewer said of the previous attempt (its comments), when it reviewed one.
    pub earlier: &'a [Finding],
    /// The answer's format.
    pub answer_format: &'a str,
}

/// The prompt of a reviewer: the task as its author got it, the exact change, what the gate found so far, and the
/// answer's format.
pub fn review(task: &TaskSpec, shown: &ReviewShown<'_>) -> String {
    let mut prompt = format!(
        "You are a code reviewer run by ccfan. Another worker made a change for the task below; your working \
         directory is a read-only checkout of the repository with that change applied (as it would land). Review \
         the change itself, not the rest of the repository.\n\n## Task `{}`\n{}\n",
        task.id,
        task.goal.trim()
    );
    task_body(&mut prompt, task, &[]);
    let mut listed = String::new();
    for path in shown.changed {
        if listed.len() > MAX_LISTED {
            let _ = write!(listed, ", … (the diff file has them all)");
            break;
        }
        let _ = write!(
            listed,
            "{}`{path}`",
            if listed.is_empty() { "" } else { ", " }
        );
    }
    let _ = write!(
        prompt,
        "\n## The change\n{} file(s) changed: {listed}.\n",
        shown.changed.len()
    );
    let mut tail = String::new();
    if !shown.earlier.is_empty() {
        tail.push_str(
            "\n## Your review of the previous attempt\nThe author reworked the change after these comments; check \
             whether they are addressed rather than starting over:\n",
        );
        tail.push_str(&numbered(shown.earlier));
    }
    if !shown.findings.is_empty() {
        tail.push_str("\n## What ccfan's gate found so far (none of it blocking)\n");
        tail.push_str(&numbered(shown.findings));
    }
    let _ = write!(
        tail,
        "\n## How to answer\n{REVIEW_FINISH}\n{}\nUse \"request_changes\" only for what must change before the \
         change can land, each comment naming the file (relative to the repository) and line where it can.\n",
        shown.answer_format
    );
    // The prompt is one argument (Linux caps one at 128 KiB): the diff gets what the rest leaves.
    let room = MAX_REVIEW_PROMPT.saturating_sub(prompt.len() + tail.len() + 512);
    let (diff, whole) = head_on_a_line(shown.diff, room);
    let whole = whole && shown.whole;
    let fence = "`".repeat(longest_backtick_run(diff).max(2) + 1);
    let _ = write!(
        prompt,
        "The whole diff from the task's base is in `{}`{}.\n\n{fence}diff\n{}\n{fence}\n",
        shown.diff_file.display(),
        if whole {
            " (all of it is below)"
        } else {
            "; only its beginning is below: read the file for the rest"
        },
        diff.trim_end()
    );
    prompt.push_str(&tail);
    prompt
}

/// The most bytes of a reviewer's prompt (one argument of at most 128 KiB on Linux).
const MAX_REVIEW_PROMPT: usize = 120 * 1024;
/// The most bytes of changed paths listed in a reviewer's prompt.
const MAX_LISTED: usize = 8 * 1024;

/// The first `max` bytes of `text` ending on a line end, and whether that is all of it.
fn head_on_a_line(text: &str, max: usize) -> (&str, bool) {
    if text.len() <= max {
        return (text, true);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let end = text[..end].rfind('\n').map_or(0, |at| at + 1);
    (&text[..end], false)
}

/// The longest run of backticks in `text` (a code fence around it must be longer).
fn longest_backtick_run(text: &str) -> usize {
    text.split(|c| c != '`').map(str::len).max().unwrap_or(0)
}

/// The prompt of a planning session (plan mode): the whole task, and a plan as the only output.
pub fn plan(task: &TaskSpec, handoffs: &[Handoff]) -> String {
    let mut prompt = format!(
        "You are a worker agent run by ccfan, asked for a plan first. Your working directory is a git worktree made \
         for this one task.\n\n## Task `{}`\n{}\n",
        task.id,
        task.goal.trim()
    );
    task_body(&mut prompt, task, handoffs);
    let _ = write!(prompt, "\n## How to finish\n{PLAN_FINISH}\n");
    prompt
}

/// The prompt of a new session: the whole task, what the tasks it waited for changed, and (plan mode) the plan
/// a person approved.
pub fn first(
    task: &TaskSpec,
    attempt: u32,
    findings: &[Finding],
    handoffs: &[Handoff],
    plan: AttemptMode<'_>,
) -> String {
    let mut prompt = format!(
        "You are a worker agent run by ccfan. Your working directory is a git worktree made for this one task; \
         work only inside it.\n\n## Task `{}`\n{}\n",
        task.id,
        task.goal.trim()
    );
    task_body(&mut prompt, task, handoffs);
    approved_plan(&mut prompt, plan);
    if !findings.is_empty() {
        let _ = write!(
            prompt,
            "\n## Rework\nThis is attempt {attempt}. ccfan's gate sent the previous attempt back; its changes are \
             already in your working directory. Fix every finding:\n"
        );
        prompt.push_str(&numbered(findings));
    }
    let _ = write!(prompt, "\n## How to finish\n{FINISH}\n");
    prompt
}

/// The prompt sent into the resumed session of a rework: the findings to fix.
pub fn rework(
    task: &TaskSpec,
    attempt: u32,
    findings: &[Finding],
    plan: AttemptMode<'_>,
) -> String {
    let mut prompt = format!(
        "ccfan's gate checked your work on task `{}` and sent it back (this is attempt {attempt}). Your changes so \
         far are still in your working directory. Fix every finding below and change nothing else.\n\n## Findings\n",
        task.id
    );
    prompt.push_str(&numbered(findings));
    prompt.push_str(&scope(task));
    approved_plan(&mut prompt, plan);
    let _ = write!(prompt, "\n## How to finish\n{FINISH}\n");
    prompt
}

fn scope(task: &TaskSpec) -> String {
    let globs = |globs: &[String]| {
        globs
            .iter()
            .map(|g| format!("`{g}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut text = format!(
        "\n## Scope\nYou may change only paths matching: {}.\n",
        globs(&task.allowed)
    );
    if !task.denied.is_empty() {
        let _ = writeln!(text, "You must not change: {}.", globs(&task.denied));
    }
    text.push_str(
        "ccfan's gate rejects changes outside this scope, and any secret (API key, token, password, private key) \
         written into a file.\n",
    );
    text
}

/// The task as a worker needs it: its scope, what it builds on, its constraints and acceptance criteria.
fn task_body(prompt: &mut String, task: &TaskSpec, handoffs: &[Handoff]) {
    prompt.push_str(&scope(task));
    builds_on(prompt, handoffs);
    list(prompt, "Constraints", &task.constraints);
    list(prompt, "Acceptance criteria", &task.acceptance);
}

/// Plan mode: the plan a person approved, and their note.
fn approved_plan(prompt: &mut String, plan: AttemptMode<'_>) {
    if let AttemptMode::Approved { plan, note } = plan {
        let _ = write!(
            prompt,
            "\n## Approved plan\nA person approved this plan for the task; carry it out (the working directory is \
             yours to change now):\n\n{}\n",
            plan.trim()
        );
        if let Some(note) = note {
            let _ = writeln!(prompt, "\nTheir note: {}", note.trim());
        }
    }
}

/// The prerequisites' work the worktree already holds.
fn builds_on(prompt: &mut String, handoffs: &[Handoff]) {
    if handoffs.is_empty() {
        return;
    }
    prompt.push_str(
        "\n## Builds on\nThis task waited for the tasks below; your working directory already holds their work. \
         Build on it; do not redo or undo it.\n",
    );
    for handoff in handoffs {
        let place = match &handoff.landed_on {
            Some(branch) => format!(
                "landed on {branch} as {}",
                crate::util::short(&handoff.commit)
            ),
            None => format!("accepted as {}", crate::util::short(&handoff.commit)),
        };
        let _ = writeln!(
            prompt,
            "- `{}` ({place}): {}\n  changed: {}{}",
            handoff.task,
            handoff.goal.lines().next().unwrap_or_default(),
            handoff
                .files
                .iter()
                .map(|f| format!("`{f}`"))
                .collect::<Vec<_>>()
                .join(", "),
            if handoff.more_files > 0 {
                format!(" and {} more", handoff.more_files)
            } else {
                String::new()
            }
        );
    }
}

fn list(prompt: &mut String, title: &str, items: &[String]) {
    if items.is_empty() {
        return;
    }
    let _ = write!(prompt, "\n## {title}\n");
    for item in items {
        let _ = writeln!(prompt, "- {}", item.trim());
    }
}

/// Findings listed in a prompt (the prompt is one argument, and Linux caps one at 128 KiB).
const MAX_FINDINGS: usize = 50;
/// Characters kept of one finding's message.
const MAX_MESSAGE: usize = 500;

fn numbered(findings: &[Finding]) -> String {
    let mut text = String::new();
    for (n, finding) in findings.iter().enumerate().take(MAX_FINDINGS) {
        let place = match (&finding.path, finding.line) {
            (Some(path), Some(line)) => format!(" at `{path}:{line}`"),
            (Some(path), None) => format!(" at `{path}`"),
            (None, _) => String::new(),
        };
        let _ = writeln!(
            text,
            "{}. [{} {}]{place}: {}",
            n + 1,
            finding.stage,
            finding.rule,
            finding
                .message
                .chars()
                .take(MAX_MESSAGE)
                .collect::<String>()
        );
    }
    if findings.len() > MAX_FINDINGS {
        let _ = writeln!(
            text,
            "… and {} more of the same kinds; fix those too.",
            findings.len() - MAX_FINDINGS
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{WorkerKind, WorkerProfile};
    use crate::report::Stage;

    fn task() -> TaskSpec {
        TaskSpec {
            id: crate::ids::fixtures::task("docs"),
            goal: "Write the usage section.".into(),
            allowed: vec!["docs/**".into()],
            denied: vec!["docs/private/**".into()],
            constraints: vec!["keep it short".into()],
            acceptance: vec!["mentions --help".into()],
            worker: WorkerProfile {
                name: "w".into(),
                kind: WorkerKind::Command { argv: vec![] },
                timeout: None,
                env: vec![],
                pass_env: vec![],
                network: None,
                writable: vec![],
            },
            timeout: std::time::Duration::from_secs(60),
            after: Vec::new(),
            candidate: None,
            review: None,
        }
    }

    #[test]
    fn a_first_prompt_holds_the_whole_task() {
        let prompt = first(&task(), 1, &[], &[], AttemptMode::Work);
        for part in [
            "## Task `docs`",
            "Write the usage section.",
            "`docs/**`",
            "You must not change: `docs/private/**`",
            "- keep it short",
            "- mentions --help",
            "## Files Changed",
        ] {
            assert!(prompt.contains(part), "{part} missing from {prompt}");
        }
        assert!(!prompt.contains("## Rework") && !prompt.contains("## Builds on"));
    }

    #[test]
    fn a_task_that_waited_is_told_what_its_prerequisites_changed() {
        let handoff = Handoff {
            task: crate::ids::fixtures::task("design"),
            goal: "Write the API design.\nIn detail.".into(),
            commit: crate::model::CommitId::parse("0123456789abcdef0123456789abcdef01234567")
                .unwrap(),
            landed_on: Some("main".into()),
            files: vec!["docs/api.md".into()],
            more_files: 2,
        };
        let prompt = first(&task(), 1, &[], &[handoff], AttemptMode::Work);
        assert!(prompt.contains("## Builds on"), "{prompt}");
        assert!(
            prompt.contains("- `design` (landed on main as 0123456789): Write the API design.\n  changed: `docs/api.md` and 2 more"),
            "{prompt}"
        );
    }

    #[test]
    fn a_plan_is_asked_for_first_and_the_approved_plan_is_handed_on() {
        let planning = plan(&task(), &[]);
        assert!(planning.contains("Write the usage section.") && planning.contains("## Plan"));
        assert!(
            planning.contains("do not change, create or delete any file"),
            "{planning}"
        );
        assert!(!planning.contains("## Files Changed"));
        let executing = first(
            &task(),
            2,
            &[],
            &[],
            AttemptMode::Approved {
                plan: "1. add docs/usage.md",
                note: Some("keep it short"),
            },
        );
        assert!(
            executing.contains("## Approved plan\nA person approved this plan")
                && executing.contains("1. add docs/usage.md")
                && executing.contains("Their note: keep it short"),
            "{executing}"
        );
    }

    #[test]
    fn a_rework_lists_the_findings() {
        let findings = [
            Finding::error(Stage::Scope, "scope-denied", "outside the allowed paths")
                .at("src/x.rs", None),
            Finding::error(Stage::Secrets, "aws-access-key", "AKIA…[REDACTED]…3F")
                .at("a.txt", Some(3)),
        ];
        let prompt = rework(&task(), 2, &findings, AttemptMode::Work);
        assert!(
            prompt.contains("1. [scope scope-denied] at `src/x.rs`: outside the allowed paths")
        );
        assert!(prompt.contains("2. [secrets aws-access-key] at `a.txt:3`: AKIA…[REDACTED]…3F"));
        assert!(prompt.contains("attempt 2") && prompt.contains("`docs/**`"));
        let fresh = first(&task(), 2, &findings, &[], AttemptMode::Work);
        assert!(fresh.contains("## Rework") && fresh.contains("scope-denied"));
    }

    #[test]
    fn a_review_prompt_fits_one_argument_and_fences_the_diff_safely() {
        let huge = "+x\n".repeat(100_000) + "+```\n";
        let findings = vec![Finding::warning(
            crate::report::Stage::Review,
            "review-comment",
            "name the constant",
        )];
        let changed = vec!["src/a.rs".to_string()];
        let shown = ReviewShown {
            diff_file: std::path::Path::new("/tmp/diff.patch"),
            diff: &huge,
            whole: true,
            changed: &changed,
            findings: &[],
            earlier: &findings,
            answer_format: "{}",
        };
        let prompt = review(&task(), &shown);
        assert!(prompt.len() <= MAX_REVIEW_PROMPT, "{}", prompt.len());
        assert!(prompt.contains("only its beginning is below"));
        assert!(prompt.contains("## Your review of the previous attempt"));
        assert!(prompt.contains("name the constant"));
        let small = "+a\n+```\n+b\n";
        let prompt = review(
            &task(),
            &ReviewShown {
                diff: small,
                ..shown
            },
        );
        assert!(prompt.contains("````diff\n+a\n+```\n+b\n````"), "{prompt}");
        assert!(prompt.contains("(all of it is below)"));
    }
}
