//! Stage 3 (run worker), agent workers: each task's agent gets a private home (`CODEX_HOME`,
//! `CLAUDE_CONFIG_DIR`) in ccfan's state, seeded once with copies of the user's agent config and credentials.
//! The agent writes its sessions there — so a rework can resume them — and never into the user's own `~/.codex`
//! or `~/.claude`, where a planted hook or MCP server would run on the host the next time the user starts it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::Agent;

/// The files copied from the user's agent home (when they exist), and the variable that points the agent at its
/// private copy.
fn layout(agent: Agent) -> (&'static str, &'static str, &'static [&'static str]) {
    match agent {
        Agent::Codex => (
            "CODEX_HOME",
            ".codex",
            &["config.toml", "auth.json", "AGENTS.md"],
        ),
        Agent::Claude => (
            "CLAUDE_CONFIG_DIR",
            ".claude",
            &[".credentials.json", "settings.json", "CLAUDE.md"],
        ),
    }
}

fn var(env: &[(OsString, OsString)], name: &str) -> Option<PathBuf> {
    env.iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| PathBuf::from(value))
        .filter(|path| path.is_absolute())
}

/// Makes (or reuses) the agent's private home under `root` and returns the variable to set and its folder. The
/// user's home is found from the worker's environment: the agent's own variable if passed, else `$HOME`.
pub fn prepare(
    agent: Agent,
    root: &Path,
    env: &[(OsString, OsString)],
) -> std::io::Result<(&'static str, PathBuf)> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let (variable, default_dir, files) = layout(agent);
    let home = root.join(agent.name());
    recover_swap(&home);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&home)?;
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))?;
    let user_home = var(env, "HOME");
    let configured = var(env, variable);
    let source = configured
        .clone()
        .or_else(|| user_home.as_ref().map(|h| h.join(default_dir)));
    let mut copies: Vec<(PathBuf, PathBuf)> = Vec::new();
    if let Some(source) = &source {
        copies.extend(files.iter().map(|f| (source.join(f), home.join(f))));
    }
    if agent == Agent::Claude {
        // Claude Code keeps its account state in `~/.claude.json`, or inside its config dir when one is set.
        let state = match (&configured, &user_home) {
            (Some(dir), _) => Some(dir.join(".claude.json")),
            (None, Some(home)) => Some(home.join(".claude.json")),
            (None, None) => None,
        };
        copies.extend(state.map(|from| (from, home.join(".claude.json"))));
    }
    for (from, to) in copies {
        // Whatever is there already (the agent's own edits, or a symlink it planted) is never written through.
        if std::fs::symlink_metadata(&to).is_ok() || !from.is_file() {
            continue;
        }
        let bytes = std::fs::read(&from)?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&to)?;
        std::io::Write::write_all(&mut file, &bytes)?;
    }
    Ok((variable, home))
}

/// The files of an agent's private home that are the user's own (copied in by [`prepare`]): credentials and
/// config, which ccfan never rewrites. Everything else there is what the agent wrote.
pub fn seeded_files(agent: Agent) -> Vec<&'static str> {
    let (_, _, files) = layout(agent);
    let mut seeded = files.to_vec();
    if agent == Agent::Claude {
        seeded.push(".claude.json");
    }
    seeded
}

/// Where a home swapped out for one that came back from a container waits until the swap is done.
pub fn swapped_out(home: &Path) -> PathBuf {
    home.with_extension("old")
}

/// Puts back a home whose swap was cut off (a crash between its two renames): missing, with the old one beside.
pub fn recover_swap(home: &Path) {
    let old = swapped_out(home);
    if std::fs::symlink_metadata(home).is_err()
        && std::fs::symlink_metadata(&old).is_ok_and(|meta| meta.is_dir())
        && let Err(error) = std::fs::rename(&old, home)
    {
        tracing::warn!("cannot put back {}: {error}", home.display());
    }
}

/// Whether the private home under `root` still holds session `id`, resumable by an agent working in `tree`
/// (Codex: `sessions/**/rollout-…-ID.jsonl`, found from anywhere; Claude Code: `projects/*/ID.jsonl` recorded in
/// `tree`, as it resumes only sessions of the folder it runs in: an attempt that moved between a container and
/// this machine starts a new one).
pub fn has_session(agent: Agent, root: &Path, id: &str, tree: &Path) -> bool {
    let (top, depth) = match agent {
        Agent::Codex => ("sessions", 4),
        Agent::Claude => ("projects", 2),
    };
    fn find(dir: &Path, id: &str, depth: u32) -> bool {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return false;
        };
        entries.flatten().any(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            match entry.file_type() {
                Ok(kind) if kind.is_dir() && depth > 0 => find(&entry.path(), id, depth - 1),
                Ok(kind) if kind.is_file() => name.ends_with(".jsonl") && name.contains(id),
                _ => false,
            }
        })
    }
    !id.is_empty()
        && find(&root.join(agent.name()).join(top), id, depth)
        && match agent {
            Agent::Codex => true,
            Agent::Claude => claude_session_in(&root.join(agent.name()).join(top), id, tree),
        }
}

/// Whether Claude Code's transcript of session `id` (in a folder under `projects`) records `tree` as its working
/// folder: the `cwd` its lines carry, the canonical record (the folder's name is a lossy spelling of it).
fn claude_session_in(projects: &Path, id: &str, tree: &Path) -> bool {
    use std::io::BufRead;
    let canonical = std::fs::canonicalize(tree).ok();
    let wanted = |cwd: &str| {
        Path::new(cwd) == tree
            || canonical
                .as_deref()
                .is_some_and(|real| Path::new(cwd) == real)
    };
    let Ok(folders) = std::fs::read_dir(projects) else {
        return false;
    };
    folders.flatten().any(|folder| {
        let Ok(file) = crate::util::open_regular(&folder.path().join(format!("{id}.jsonl"))) else {
            return false;
        };
        // The first line naming a working folder decides; read at most the transcript's first MiB for it.
        std::io::BufReader::new(std::io::Read::take(file, 1 << 20))
            .lines()
            .map_while(Result::ok)
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(&line).ok())
            .find_map(|event| event.get("cwd")?.as_str().map(str::to_string))
            .is_some_and(|cwd| wanted(&cwd))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_a_private_copy_once() {
        let dir = tempfile::tempdir().unwrap();
        let user = dir.path().join("user");
        std::fs::create_dir_all(user.join(".codex")).unwrap();
        std::fs::write(user.join(".codex/config.toml"), "model = \"m\"\n").unwrap();
        std::fs::write(user.join(".codex/history.jsonl"), "private\n").unwrap();
        let env = vec![(OsString::from("HOME"), user.clone().into_os_string())];
        let root = dir.path().join("state/agent-home");
        let (variable, home) = prepare(Agent::Codex, &root, &env).unwrap();
        assert_eq!(variable, "CODEX_HOME");
        assert_eq!(
            std::fs::read_to_string(home.join("config.toml")).unwrap(),
            "model = \"m\"\n"
        );
        assert!(
            !home.join("history.jsonl").exists(),
            "only config and credentials are copied"
        );
        // The agent's own changes survive the next attempt; the user's file is untouched.
        std::fs::write(home.join("config.toml"), "changed").unwrap();
        prepare(Agent::Codex, &root, &env).unwrap();
        assert_eq!(
            std::fs::read_to_string(home.join("config.toml")).unwrap(),
            "changed"
        );
        assert_eq!(
            std::fs::read_to_string(user.join(".codex/config.toml")).unwrap(),
            "model = \"m\"\n"
        );
    }

    #[test]
    fn sessions_are_found_where_each_agent_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let codex = dir.path().join("codex/sessions/2026/11/21");
        std::fs::create_dir_all(&codex).unwrap();
        std::fs::write(codex.join("rollout-2026-11-21T22-40-01-abc-123.jsonl"), "").unwrap();
        let anywhere = Path::new("/anywhere");
        assert!(has_session(Agent::Codex, dir.path(), "abc-123", anywhere));
        assert!(!has_session(Agent::Codex, dir.path(), "abc-999", anywhere));
        let claude = dir.path().join("claude/projects/-ccfan-work-tree");
        std::fs::create_dir_all(&claude).unwrap();
        std::fs::write(
            claude.join("c976.jsonl"),
            "{\"type\":\"summary\"}\n{\"type\":\"user\",\"cwd\":\"/ccfan/work/tree\"}\n",
        )
        .unwrap();
        let container = Path::new("/ccfan/work/tree");
        assert!(has_session(Agent::Claude, dir.path(), "c976", container));
        assert!(
            !has_session(Agent::Claude, dir.path(), "c976", Path::new("/work/tree")),
            "a session of another folder is not resumable here"
        );
        assert!(!has_session(Agent::Claude, dir.path(), "", container));
    }

    #[test]
    fn a_planted_symlink_is_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let user = dir.path().join("user");
        std::fs::create_dir_all(user.join(".codex")).unwrap();
        std::fs::write(user.join(".codex/auth.json"), "{\"key\":1}").unwrap();
        let root = dir.path().join("home");
        std::fs::create_dir_all(root.join("codex")).unwrap();
        let target = dir.path().join("stolen.json");
        std::os::unix::fs::symlink(&target, root.join("codex/auth.json")).unwrap();
        let env = vec![(OsString::from("HOME"), user.into_os_string())];
        prepare(Agent::Codex, &root, &env).unwrap();
        assert!(
            !target.exists(),
            "the credentials were copied through the symlink"
        );
    }

    #[test]
    fn claude_takes_its_account_file_from_home() {
        let dir = tempfile::tempdir().unwrap();
        let user = dir.path().join("user");
        std::fs::create_dir_all(&user).unwrap();
        std::fs::write(user.join(".claude.json"), "{}").unwrap();
        let env = vec![(OsString::from("HOME"), user.into_os_string())];
        let (variable, home) = prepare(Agent::Claude, &dir.path().join("h"), &env).unwrap();
        assert_eq!(variable, "CLAUDE_CONFIG_DIR");
        assert!(home.join(".claude.json").is_file());
    }
}
