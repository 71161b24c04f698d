//! Stage 3 elsewhere, for an agent worker (Codex CLI, Claude Code): what the order says about the agent, and its
//! home carried both ways. The agent's private home (the user's config seeded in, the sessions a rework resumes)
//! goes out with the attempt and comes back with it; inside, the runner keeps the agent's event stream apart from
//! its log and holds it to the same limits as at home with its own tally, and here the stream is read again into
//! the attempt's summary. The agent's command line is built here, with the container's paths.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::agents::tally::Tally;
use crate::agents::{Agent, Usage};
use crate::model::{AgentConfig, ApiRetryLimit};
use crate::sandbox::archive::{self, Bounds, MAX_AGENT_HOME};

/// The agent's home, in the attempt's input.
pub const HOME: &str = "agent-home";
/// The agent's home as it came out, a tar in the attempt's output.
pub const HOME_TAR: &str = "agent-home.tar";
/// The agent's event stream (its stdout), in the attempt's output.
pub const EVENTS: &str = "events.jsonl";
/// The runner's summary of the whole stream (the kept stream is capped; the runner's tally saw every line).
pub const SUMMARY: &str = "agent.json";
/// The most files of an agent's home carried.
const MAX_HOME_FILES: usize = 20_000;

/// What the runner needs to know of an agent worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentOrder {
    /// Which agent.
    pub agent: Agent,
    /// Its program (the order's `argv[0]`), probed in the image before it runs.
    pub program: String,
    /// The variable that points it at its home (`CODEX_HOME`, `CLAUDE_CONFIG_DIR`).
    pub home_variable: String,
    /// The most model turns (the runner stops it past them, as ccfan does at home).
    pub max_turns: Option<u32>,
    /// When it stops an agent that cannot reach its model API.
    pub api_retry: ApiRetryLimit,
    /// Whether the attempt resumes an earlier session.
    pub resumed: bool,
    /// What earlier attempts in the resumed session already used (the agents report some counts per session).
    pub baseline: Usage,
    /// The model the profile names (what tokens are priced by until the agent names its own).
    pub model: Option<String>,
}

/// An agent worker made ready on this machine to run elsewhere.
#[derive(Debug, Clone)]
pub struct AgentPlan {
    /// What the order says about it.
    pub order: AgentOrder,
    /// Its command line, with the container's paths.
    pub argv: Vec<String>,
    /// Variables the agent needs besides the profile's.
    pub env: Vec<(String, String)>,
    /// Its private home here (under the task's agent home): sent out, and where it comes back to.
    pub home: PathBuf,
}

/// Gets an agent worker ready to run in a container: its private home made (the user's config and credentials
/// seeded in, as at home), its command line for `prompt` with the program as the image names it.
pub fn plan(
    agent: Agent,
    config: &AgentConfig,
    agent_home: &Path,
    host_env: &[(std::ffi::OsString, std::ffi::OsString)],
    prompt: &str,
    resume: Option<(&str, Usage)>,
) -> std::io::Result<AgentPlan> {
    let (variable, home) = crate::agents::home::prepare(agent, agent_home, host_env)?;
    let order = AgentOrder {
        agent,
        program: config.program.clone(),
        home_variable: variable.to_string(),
        max_turns: config.max_turns,
        api_retry: config.api_retry,
        resumed: resume.is_some(),
        baseline: resume.map(|(_, baseline)| baseline).unwrap_or_default(),
        model: config.model.clone(),
    };
    Ok(AgentPlan {
        argv: agent.argv(config, prompt, resume.map(|(session, _)| session), false),
        env: crate::agents::fixed_env(agent)
            .iter()
            .map(|(name, value)| ((*name).to_string(), (*value).to_string()))
            .collect(),
        order,
        home,
    })
}

/// Copies the agent's home into the attempt's `input` (regular files and folders only, at most
/// [`MAX_AGENT_HOME`] bytes).
pub fn pack_home(home: &Path, input: &Path) -> Result<(), String> {
    copy_tree(home, &input.join(HOME))
}

/// Copies the regular files and folders of `home` to `target`, at most [`MAX_AGENT_HOME`] bytes.
fn copy_tree(home: &Path, target: &Path) -> Result<(), String> {
    let mut total = 0u64;
    let mut files = 0usize;
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let from = home.join(&relative);
        std::fs::create_dir_all(target.join(&relative))
            .map_err(|e| format!("cannot copy the agent's home: {e}"))?;
        let entries = std::fs::read_dir(&from)
            .map_err(|e| format!("cannot read the agent's home {}: {e}", from.display()))?;
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let name = relative.join(entry.file_name());
            if kind.is_dir() {
                pending.push(name);
            } else if kind.is_file() {
                files += 1;
                total += entry.metadata().map_or(0, |meta| meta.len());
                if total > MAX_AGENT_HOME || files > MAX_HOME_FILES {
                    return Err(format!(
                        "the agent's home {} is over {} MiB or {MAX_HOME_FILES} files, too much to carry to a \
                         container; remove old sessions there, or run this worker with sandbox.backend = \"auto\"",
                        home.display(),
                        MAX_AGENT_HOME >> 20
                    ));
                }
                std::fs::copy(entry.path(), target.join(&name))
                    .map_err(|e| format!("cannot copy {}: {e}", entry.path().display()))?;
            }
        }
    }
    Ok(())
}

/// Takes the agent's home that came back in `output` as `home`, replacing it: regular files and folders only,
/// none written through a link, at most [`MAX_AGENT_HOME`] bytes. The user's config files stay this machine's
/// copies (what the agent changed in them there is dropped); its credentials come back (a login it refreshed).
/// Nothing changes when none came back, or when it cannot be taken whole.
pub fn bring_home(agent: Agent, output: &Path, home: &Path) -> Result<(), String> {
    crate::agents::home::recover_swap(home);
    let tar = output.join(HOME_TAR);
    let Ok(file) = crate::util::open_regular(&tar) else {
        return Ok(());
    };
    let incoming = home.with_extension("incoming");
    let _ = std::fs::remove_dir_all(&incoming);
    let config = config_files(agent);
    let taken = archive::extract_files(
        std::io::BufReader::new(file),
        Path::new(HOME),
        &incoming,
        Bounds {
            bytes: MAX_AGENT_HOME,
            // Its files and their folders.
            entries: MAX_HOME_FILES * 2 + 1,
        },
        &config,
    )
    .and_then(|_| settle(agent, home, &incoming, &config));
    let _ = std::fs::remove_dir_all(&incoming);
    taken.map_err(|error| format!("the agent's home did not come back whole: {error}"))
}

/// Makes the home taken in at `incoming` private, with this machine's config files, and swaps it in for `home`:
/// what the agent deleted there stays deleted. A crash between the two renames leaves the old home beside, and
/// [`crate::agents::home::recover_swap`] puts it back.
fn settle(agent: Agent, home: &Path, incoming: &Path, config: &[&str]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(incoming, std::fs::Permissions::from_mode(0o700))?;
    for name in crate::agents::home::seeded_files(agent) {
        let file = incoming.join(name);
        if std::fs::symlink_metadata(&file).is_ok_and(|meta| meta.is_file()) {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    for name in config {
        let kept = home.join(name);
        if std::fs::symlink_metadata(&kept).is_ok_and(|meta| meta.is_file()) {
            std::fs::copy(&kept, incoming.join(name))?;
        }
    }
    let old = crate::agents::home::swapped_out(home);
    let _ = std::fs::remove_dir_all(&old);
    if std::fs::symlink_metadata(home).is_ok() {
        std::fs::rename(home, &old)?;
    }
    if let Err(error) = std::fs::rename(incoming, home) {
        let _ = std::fs::rename(&old, home);
        return Err(error);
    }
    if let Err(error) = std::fs::remove_dir_all(&old) {
        tracing::warn!("cannot remove {}: {error}", old.display());
    }
    Ok(())
}

/// The files of the agent's home seeded from the user's own that are configuration, not credentials.
fn config_files(agent: Agent) -> Vec<&'static str> {
    crate::agents::home::seeded_files(agent)
        .into_iter()
        .filter(|name| !matches!(*name, "auth.json" | ".credentials.json"))
        .collect()
}

/// In the container: moves the home that came in with the attempt to `to` (an empty one if none came).
pub fn take_home(input: &Path, to: &Path) -> std::io::Result<()> {
    let from = input.join(HOME);
    if !from.is_dir() {
        return std::fs::create_dir_all(to);
    }
    if std::fs::rename(&from, to).is_ok() {
        return Ok(());
    }
    // Another file system: copied instead.
    copy_tree(&from, to).map_err(std::io::Error::other)
}

/// In the container: writes the agent's `home` as a tar into `output`, for a rework to resume its session. Left
/// out (with a warning on the runner's stderr) when it is over [`MAX_AGENT_HOME`] bytes.
pub fn give_home(home: &Path, output: &Path) -> std::io::Result<()> {
    let path = output.join(HOME_TAR);
    let file = std::fs::File::create(&path)?;
    let mut builder = tar::Builder::new(Capped {
        inner: std::io::BufWriter::new(file),
        left: MAX_AGENT_HOME,
    });
    builder.mode(tar::HeaderMode::Deterministic);
    builder.follow_symlinks(false);
    let written = builder
        .append_dir_all(HOME, home)
        .and_then(|()| builder.into_inner())
        .and_then(|mut capped| capped.flush());
    if let Err(error) = written {
        let _ = std::fs::remove_file(&path);
        tracing::warn!(
            "the agent's home is not brought back ({error}); a rework starts a new session"
        );
    }
    Ok(())
}

/// A writer that fails once more than its bytes were written.
struct Capped<W> {
    inner: W,
    left: u64,
}

impl<W: Write> Write for Capped<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let len = bytes.len() as u64;
        if len > self.left {
            return Err(std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                format!("over {} MiB", MAX_AGENT_HOME >> 20),
            ));
        }
        self.left -= len;
        self.inner.write_all(bytes)?;
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// In the container: the agent's stream read into a tally as ccfan does at home, every line of it (the kept
/// stream is capped): it stops the agent where ccfan would (too many turns, a model API it keeps retrying), and
/// its summary goes back with the attempt.
pub struct Limits {
    agent: Agent,
    tally: Tally,
}

impl Limits {
    /// The limits of `order`'s agent working in `tree`.
    pub fn new(order: &AgentOrder, tree: &Path) -> Limits {
        Limits {
            agent: order.agent,
            tally: Tally::new(
                order.agent,
                tree,
                order.max_turns,
                order.resumed,
                order.baseline,
                order.api_retry,
            )
            .with_model(order.model.clone()),
        }
    }

    /// Writes the summary of the whole stream into `output`.
    pub fn give_summary(self, output: &Path) -> std::io::Result<()> {
        let summary = self.tally.finish();
        std::fs::write(
            output.join(SUMMARY),
            serde_json::to_vec(&summary).unwrap_or_default(),
        )
    }
}

/// The runner's summary that came back in `output` (bounded), if any: the attempt's, redacted by the caller.
/// The worker shares the container with the runner and could have rewritten it, so what it says is held to what
/// a tally makes: the order's agent, counts and texts within bounds, a session id that is a plain id.
pub fn summary_back(
    output: &Path,
    order: &AgentOrder,
) -> Option<crate::agents::tally::AgentSummary> {
    let bytes = crate::util::read_regular(&output.join(SUMMARY), MAX_SUMMARY).ok()?;
    let summary: crate::agents::tally::AgentSummary = serde_json::from_slice(&bytes).ok()?;
    Some(summary.bounded(order.agent, order.resumed))
}

/// The most bytes of the runner's summary read back.
pub const MAX_SUMMARY: u64 = 4 << 20;

impl crate::sandbox::StreamHandler for Limits {
    fn line(&mut self, line: &str) -> Option<String> {
        let events = self.agent.parse_line(line);
        if events.is_empty() {
            self.tally.activity();
        }
        let mut stop = None;
        for event in events {
            if let Some(reason) = self.tally.observe(event) {
                stop.get_or_insert(reason);
            }
        }
        stop
    }

    fn idle(&mut self) -> Option<String> {
        self.tally.check_at(std::time::Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn a_home_goes_out_and_comes_back_without_the_users_files_or_links() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("host-home");
        write(&home.join("config.toml"), "the user's config");
        write(&home.join("auth.json"), "{\"token\": \"old\"}");
        write(&home.join("sessions/2026/one.jsonl"), "first");
        write(&home.join("log/old.log"), "deleted there");
        std::os::unix::fs::symlink("/etc", home.join("elsewhere")).unwrap();
        let (input, work, output) = (
            dir.path().join("in"),
            dir.path().join("work"),
            dir.path().join("out"),
        );
        pack_home(&home, &input).unwrap();
        assert!(
            !input.join(HOME).join("elsewhere").exists(),
            "links stay here"
        );
        // In the container: the agent adds a session, edits its config, and plants a link.
        take_home(&input, &work.join(HOME)).unwrap();
        let there = work.join(HOME);
        assert_eq!(
            std::fs::read_to_string(there.join("sessions/2026/one.jsonl")).unwrap(),
            "first"
        );
        write(&there.join("sessions/2026/two.jsonl"), "second");
        write(&there.join("config.toml"), "notify = [\"sh\"]");
        write(&there.join("auth.json"), "{\"token\": \"refreshed\"}");
        std::fs::remove_dir_all(there.join("log")).unwrap();
        std::os::unix::fs::symlink("/root", there.join("planted")).unwrap();
        std::fs::create_dir_all(&output).unwrap();
        give_home(&there, &output).unwrap();
        bring_home(Agent::Codex, &output, &home).unwrap();
        assert_eq!(
            std::fs::read_to_string(home.join("sessions/2026/two.jsonl")).unwrap(),
            "second"
        );
        assert_eq!(
            std::fs::read_to_string(home.join("config.toml")).unwrap(),
            "the user's config",
            "the user's config files are never taken back"
        );
        assert_eq!(
            std::fs::read_to_string(home.join("auth.json")).unwrap(),
            "{\"token\": \"refreshed\"}",
            "a refreshed login comes back"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(&home), mode(&home.join("auth.json"))), (0o700, 0o600));
        assert!(std::fs::symlink_metadata(home.join("planted")).is_err());
        assert!(
            !home.join("log").exists(),
            "what the agent deleted there stays deleted"
        );
        assert!(!home.with_extension("incoming").exists() && !home.with_extension("old").exists());
    }

    #[test]
    fn a_home_coming_back_never_writes_through_a_link_here() {
        let dir = tempfile::tempdir().unwrap();
        let (home, outside) = (dir.path().join("home"), dir.path().join("outside"));
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        // A link a local attempt planted in the home, where the container's files would go.
        std::os::unix::fs::symlink(&outside, home.join("sessions")).unwrap();
        let there = dir.path().join("there");
        write(&there.join("sessions/x.jsonl"), "through the link?");
        let output = dir.path().join("out");
        std::fs::create_dir_all(&output).unwrap();
        give_home(&there, &output).unwrap();
        bring_home(Agent::Claude, &output, &home).unwrap();
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        assert!(
            std::fs::symlink_metadata(home.join("sessions"))
                .unwrap()
                .is_dir()
        );
        assert!(home.join("sessions/x.jsonl").is_file());
    }

    #[test]
    fn a_swap_cut_off_by_a_crash_is_put_back() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("claude");
        write(
            &crate::agents::home::swapped_out(&home).join("projects/s.jsonl"),
            "session",
        );
        let output = dir.path().join("out");
        std::fs::create_dir_all(&output).unwrap();
        bring_home(Agent::Claude, &output, &home).unwrap();
        assert_eq!(
            std::fs::read_to_string(home.join("projects/s.jsonl")).unwrap(),
            "session"
        );
        assert!(!crate::agents::home::swapped_out(&home).exists());
    }

    #[test]
    fn a_home_tar_past_its_bounds_is_refused_whole() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        write(&home.join("kept.jsonl"), "kept");
        let output = dir.path().join("out");
        std::fs::create_dir_all(&output).unwrap();
        let mut builder = tar::Builder::new(Vec::new());
        for n in 0..=(MAX_HOME_FILES * 2 + 1) {
            let mut header = tar::Header::new_gnu();
            header.set_size(0);
            header.set_entry_type(tar::EntryType::Regular);
            builder
                .append_data(&mut header, format!("{HOME}/f{n}"), &[][..])
                .unwrap();
        }
        std::fs::write(output.join(HOME_TAR), builder.into_inner().unwrap()).unwrap();
        let error = bring_home(Agent::Codex, &output, &home).unwrap_err();
        assert!(error.contains("entries"), "{error}");
        assert_eq!(
            std::fs::read_to_string(home.join("kept.jsonl")).unwrap(),
            "kept",
            "the home here is left as it was"
        );
    }

    #[test]
    fn no_home_back_is_not_an_error_and_a_large_one_is_left_out() {
        let dir = tempfile::tempdir().unwrap();
        bring_home(Agent::Codex, dir.path(), &dir.path().join("home")).unwrap();
        let mut capped = Capped {
            inner: Vec::new(),
            left: 4,
        };
        assert!(capped.write_all(b"abcd").is_ok());
        assert!(capped.write_all(b"e").is_err());
    }
}
