//! Stages 4+5 for a change no worker made — the staged index, a commit, a range, what a push sends — so the gate
//! that judges workers also stands in local git hooks. The policy's `[hooks]` section says which stages run and
//! which paths may change. Scope judges the net change (what lands in the tree); secrets judge every commit's own
//! lines, because a pushed or merged history lands too and a key removed in a later commit is still leaked.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::PipelineError;
use super::decide::decide;
use super::verify::{self, VerifyInput};
use crate::git::{self, RepoPaths};
use crate::input::InputError;
use crate::report::{Stage, Verdict, VerifyReport};

/// What kind of change is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// The index against HEAD (`git commit` is about to record it).
    Staged,
    /// One commit against its first parent.
    Commit,
    /// The commits of `A..B`.
    Range,
    /// What one pushed ref sends that the remote does not have.
    Push,
}

impl ChangeKind {
    fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Staged => "staged",
            ChangeKind::Commit => "commit",
            ChangeKind::Range => "range",
            ChangeKind::Push => "push",
        }
    }
}

/// What to judge, as the user or git named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The index (`index_file`: git's `GIT_INDEX_FILE` in a hook, else the repository's index).
    Staged {
        /// A temporary index git gave the hook.
        index_file: Option<PathBuf>,
        /// The commits being merged, when git said so (`git merge` names them to its pre-merge-commit hook in
        /// `GITHEAD_<sha>` variables); a `MERGE_HEAD` left by a stopped merge is read as well.
        merging: Vec<String>,
    },
    /// A commit.
    Commit {
        /// The revision.
        rev: String,
    },
    /// `A..B` (`A..` means up to HEAD, `..B` from HEAD).
    Range {
        /// The range as written.
        spec: String,
    },
    /// A pushed ref: everything reachable from `tip` and from none of `known`.
    Pushed {
        /// What is pushed, for messages (`refs/heads/x → origin refs/heads/x`).
        label: String,
        /// The pushed commit.
        tip: String,
        /// Commits the remote already has.
        known: Vec<String>,
    },
}

/// A change resolved to objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Its kind.
    pub kind: ChangeKind,
    /// For messages: `staged changes`, `commit 1a2b3c4d5e6f`, `range A..B`, the pushed ref.
    pub subject: String,
    /// The commit (or the empty tree) the net change is judged against.
    pub base: String,
    /// The commit judged, or for staged changes the staged tree.
    pub head: String,
    /// Whether `head` is a tree (staged changes): the tests stage needs a commit made for it.
    pub head_is_tree: bool,
    /// The commit `head`'s tree would sit on (staged changes: HEAD).
    pub parent: Option<String>,
    /// Commits whose own added lines are scanned for secrets (a range, a push, a merge being committed).
    pub commits: Vec<String>,
}

/// One change judged.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ChangeVerification {
    /// Its kind.
    pub kind: ChangeKind,
    /// What was judged.
    pub subject: String,
    /// Whether nothing blocks it.
    pub passed: bool,
    /// How many commits had their own lines scanned for secrets (a range, a push, a merge's commits).
    pub commits: usize,
    /// The gate's verdict (accept, or the findings that block).
    pub verdict: Verdict,
    /// The report.
    pub report: VerifyReport,
}

fn bad_revision(flag: &str, rev: &str, fix: &str) -> PipelineError {
    InputError::new(
        Path::new("<command line>"),
        format!("`{rev}` does not name a commit in this repository"),
    )
    .key(flag)
    .fix(fix)
    .into()
}

fn commit_of(repo: &RepoPaths, flag: &str, rev: &str, fix: &str) -> Result<String, PipelineError> {
    git::known_commit(repo, rev)?.ok_or_else(|| bad_revision(flag, rev, fix))
}

fn short(sha: &str) -> &str {
    &sha[..12.min(sha.len())]
}

/// Resolves a target to the objects the gate reads.
pub fn resolve(repo: &RepoPaths, target: &Target) -> Result<Change, PipelineError> {
    match target {
        Target::Staged {
            index_file,
            merging,
        } => {
            let parent = git::head_commit(repo)?;
            let head = git::staged_tree(repo, index_file.as_deref())?;
            let base = match &parent {
                Some(commit) => commit.clone(),
                None => git::empty_tree(repo)?,
            };
            // A merge being committed brings the merged branch's history along: judge its commits' lines too.
            let mut heads = git::merge_heads(repo);
            for rev in merging {
                if let Some(commit) = git::known_commit(repo, rev)?
                    && !heads.contains(&commit)
                {
                    heads.push(commit);
                }
            }
            let mut commits: Vec<String> = Vec::new();
            if let Some(ours) = &parent {
                for merged in &heads {
                    for commit in git::walk_range(repo, merged, std::slice::from_ref(ours))?.0 {
                        if !commits.contains(&commit) {
                            commits.push(commit);
                        }
                    }
                }
            }
            let subject = if commits.is_empty() {
                "staged changes".to_string()
            } else {
                format!("staged merge ({} merged commit(s))", commits.len())
            };
            Ok(Change {
                kind: ChangeKind::Staged,
                subject,
                base,
                head,
                head_is_tree: true,
                parent,
                commits,
            })
        }
        Target::Commit { rev } => {
            let head = commit_of(repo, "--commit", rev, "name a commit, e.g. HEAD or a1b2c3d")?;
            let base = match git::first_parent(repo, &head)? {
                Some(parent) => parent,
                None => git::empty_tree(repo)?,
            };
            Ok(Change {
                kind: ChangeKind::Commit,
                subject: format!("commit {}", short(&head)),
                base,
                head: head.clone(),
                head_is_tree: false,
                parent: None,
                commits: Vec::new(),
            })
        }
        Target::Range { spec } => {
            let fix = "write A..B, e.g. origin/main..HEAD";
            let Some((from, to)) = spec.split_once("..").filter(|(_, to)| !to.starts_with('.'))
            else {
                return Err(InputError::new(
                    Path::new("<command line>"),
                    format!("`{spec}` is not a range"),
                )
                .key("--range")
                .fix(fix)
                .into());
            };
            let or_head = |rev: &str| if rev.is_empty() { "HEAD" } else { rev }.to_string();
            let (from, to) = (or_head(from), or_head(to));
            let hide = commit_of(repo, "--range", &from, fix)?;
            let tip = commit_of(repo, "--range", &to, fix)?;
            let mut change = ranged(repo, &tip, &[hide])?;
            change.kind = ChangeKind::Range;
            change.subject = format!("range {from}..{to}");
            Ok(change)
        }
        Target::Pushed { label, tip, known } => {
            let mut change = ranged(repo, tip, known)?;
            change.subject = label.clone();
            Ok(change)
        }
    }
}

fn ranged(repo: &RepoPaths, tip: &str, hide: &[String]) -> Result<Change, PipelineError> {
    let (commits, base) = git::walk_range(repo, tip, hide)?;
    let base = match base {
        Some(base) => base,
        None => git::empty_tree(repo)?,
    };
    Ok(Change {
        kind: ChangeKind::Push,
        subject: String::new(),
        base,
        head: tip.to_string(),
        head_is_tree: false,
        parent: None,
        commits,
    })
}

impl super::gate::Gate<'_> {
    /// Judges one change no worker made with `stages` (the policy's `hooks.stages`, or `hooks.push_stages` for a
    /// push) and the `[hooks]` globs.
    pub fn check_change(
        &self,
        change: &Change,
        stages: &[Stage],
    ) -> Result<ChangeVerification, PipelineError> {
        let super::gate::Gate {
            repo,
            policy,
            rules,
            scratch_root,
            includes,
            cancel,
        } = *self;
        let mut judged_by = policy.clone();
        judged_by.gate.stages = stages.to_vec();
        let runs_commands = stages
            .iter()
            .any(|stage| matches!(stage, Stage::Tests | Stage::Checks));
        // The tests stage checks a commit out: a staged tree gets one, on HEAD and on no ref.
        let commit_for_tests = match (runs_commands, change.head_is_tree) {
            (true, true) => git::detached_commit(
                repo,
                &change.head,
                change.parent.as_deref(),
                "ccfan: staged changes (verification)",
            )?,
            (true, false) | (false, _) => change.head.clone(),
        };
        let artifacts = crate::paths::StateLayout::of(repo)
            .root
            .join("verify")
            .join(change.kind.as_str());
        if runs_commands {
            std::fs::create_dir_all(&artifacts).map_err(|source| PipelineError::Io {
                context: format!("cannot create {}", artifacts.display()),
                source,
            })?;
        }
        let history = if change.commits.is_empty() {
            None
        } else {
            let mut lines = Vec::new();
            for commit in &change.commits {
                lines.extend(git::commit_added_lines(repo, commit)?);
            }
            if change.head_is_tree {
                // A merge's own resolution, beyond what the merged commits wrote.
                lines.extend(git::added_lines(repo, Some(&change.base), &change.head)?);
            }
            Some(lines)
        };
        let input = VerifyInput {
            repo,
            policy: &judged_by,
            rules,
            subject: change.subject.clone(),
            base: &change.base,
            // The tests stage needs a commit; a staged tree gets its stand-in (the same tree, so the same diff).
            commit: Some(if runs_commands {
                &commit_for_tests
            } else {
                &change.head
            }),
            allowed: &policy.hooks.allowed,
            denied: &policy.hooks.denied,
            target_tip: &commit_for_tests,
            logs: Vec::new(),
            history,
            inline_allow: policy.hooks.inline_allow,
            artifacts: &artifacts,
            scratch: scratch_root.join(format!(
                "{}-{}",
                change.kind.as_str(),
                crate::util::random_hex(4)
            )),
            final_report: None,
            includes,
            env: &[],
            cancel,
            // The hooks' gate checks a person's change, which has no task for a reviewer to judge it against.
            worker_stage: None,
            review: verify::review::ReviewStep::None,
        };
        let mut report = verify::verify(&input).map_err(|error| match error {
            verify::VerifyError::Git(git) => PipelineError::Git(git),
        })?;
        // Paths and test output come from the change: whatever the rules find in them is redacted, as for workers.
        super::gate::scrub_report(&mut report, rules);
        // A person's change has no rework budget: a blocking finding blocks, and says only what it is.
        let verdict = decide(&report, &judged_by, super::lifecycle::Budget::Unbounded);
        Ok(ChangeVerification {
            kind: change.kind,
            subject: change.subject.clone(),
            passed: matches!(verdict, Verdict::Accept),
            commits: change.commits.len(),
            verdict,
            report,
        })
    }
}

/// One line of a pre-push hook's standard input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedRef {
    /// The local ref (`refs/heads/x`, or `(delete)`).
    pub local_ref: String,
    /// What is pushed (all zeros for a deletion).
    pub local_sha: String,
    /// The remote ref.
    pub remote_ref: String,
    /// What the remote has now (all zeros for a new ref).
    pub remote_sha: String,
}

/// Parses a pre-push hook's standard input: `<local ref> <local sha> <remote ref> <remote sha>` per line.
pub fn parse_pushed(input: &str) -> Result<Vec<PushedRef>, InputError> {
    input
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| match line.split_whitespace().collect::<Vec<_>>()[..] {
            [local_ref, local_sha, remote_ref, remote_sha] => Ok(PushedRef {
                local_ref: local_ref.to_string(),
                local_sha: local_sha.to_string(),
                remote_ref: remote_ref.to_string(),
                remote_sha: remote_sha.to_string(),
            }),
            _ => Err(InputError::new(
                Path::new("<pre-push input>"),
                format!("`{line}` is not a pushed-ref line"),
            )
            .fix("git gives `<local ref> <local sha> <remote ref> <remote sha>`; run this from a pre-push hook")),
        })
        .collect()
}

/// The targets of a push: each pushed tip against what the remote is known to have — the remote ref's commit when
/// this clone has it, and the remote's tracking branches (a new branch, a force push, a merge of the remote's own
/// work). `remote` is what git gives the hook: a configured remote's name, or the URL pushed to (then the remote
/// with that URL; none matching, nothing is assumed known). Deletions push nothing and are skipped.
pub fn push_targets(
    repo: &RepoPaths,
    remote: Option<&str>,
    pushed: &[PushedRef],
) -> Result<Vec<Target>, PipelineError> {
    let configured = match remote {
        Some(remote) => git::configured_remote(repo, remote)?,
        None => None,
    };
    let tracked = match &configured {
        Some(name) => git::remote_tips(repo, name)?,
        None => Vec::new(),
    };
    let shown = match (&configured, remote) {
        (Some(name), _) => format!("{name} "),
        (None, Some(url)) => format!("{} ", git::display_url(url)),
        (None, None) => String::new(),
    };
    let mut targets = Vec::new();
    for line in pushed {
        if git::is_null_id(&line.local_sha) {
            continue;
        }
        let tip = git::known_commit(repo, &line.local_sha)?.ok_or_else(|| {
            bad_revision(
                "<pre-push input>",
                &line.local_sha,
                "push a commit this clone has",
            )
        })?;
        let mut known = tracked.clone();
        if !git::is_null_id(&line.remote_sha)
            && let Some(theirs) = git::known_commit(repo, &line.remote_sha)?
            && !known.contains(&theirs)
        {
            known.push(theirs);
        }
        targets.push(Target::Pushed {
            label: format!("push {} → {shown}{}", line.local_ref, line.remote_ref),
            tip,
            known,
        });
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushed_lines_parse_and_bad_lines_say_what_git_gives() {
        let zero = "0".repeat(40);
        let input = format!(
            "refs/heads/main abc refs/heads/main {zero}\n\n(delete) {zero} refs/heads/old def\n"
        );
        let pushed = parse_pushed(&input).unwrap();
        assert_eq!(pushed.len(), 2);
        assert_eq!(pushed[0].remote_sha, zero);
        assert_eq!(pushed[1].local_ref, "(delete)");
        let error = parse_pushed("refs/heads/main abc\n").unwrap_err();
        assert!(error.to_string().contains("pushed-ref line"), "{error}");
    }

    #[test]
    fn urls_lose_their_credentials_when_shown() {
        assert_eq!(
            git::display_url("https://user:s3cr3t@example.com/x.git"),
            "https://example.com/x.git"
        );
        assert_eq!(
            git::display_url("git@example.com:x.git"),
            "git@example.com:x.git"
        );
        assert_eq!(git::display_url("/srv/x.git"), "/srv/x.git");
    }
}
