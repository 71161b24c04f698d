//! Unit tests of policy loading: presets, overrides, agent worker defaults, and errors naming key and line.
use super::*;
use crate::model::WorkerKind;

fn load_text(text: &str) -> Result<Policy, InputError> {
    let dir = tempfile::tempdir().map_err(|e| InputError::new(Path::new("tmp"), e.to_string()))?;
    let path = dir.path().join("ccfan.toml");
    std::fs::write(&path, text).map_err(|e| InputError::new(&path, e.to_string()))?;
    load(Some(&path))
}

#[test]
fn presets_load_and_differ() {
    let default = load(None).unwrap();
    assert_eq!(default.timeout, Duration::from_secs(1800));
    assert!(default.denied.iter().any(|glob| glob == ".git/**"));
    let strict = load_text("extends = \"strict\"\n").unwrap();
    assert!(strict.allowed.is_empty());
    assert_eq!(strict.max_reworks, 1);
}

#[test]
fn agent_workers_get_their_defaults_and_reject_command_keys() {
    let policy = load_text(
        "[workers.cx]\nkind = \"codex\"\nmodel = \"gpt-5.5\"\nmax_turns = 12\nargs = [\"--ignore-rules\"]\n\
         [workers.cl]\nkind = \"claude\"\nprogram = \"bin/claude\"\nnetwork = false\n",
    )
    .unwrap();
    let codex = &policy.workers["cx"];
    let WorkerKind::Codex(config) = &codex.kind else {
        panic!("{codex:?}");
    };
    assert_eq!(config.program, "codex");
    assert_eq!(config.max_turns, Some(12));
    assert_eq!(config.args, ["--ignore-rules"]);
    assert_eq!(
        codex.network,
        Some(true),
        "agents reach their model by default"
    );
    assert!(codex.pass_env.iter().any(|name| name == "CODEX_API_KEY"));
    let claude = &policy.workers["cl"];
    let WorkerKind::Claude(config) = &claude.kind else {
        panic!("{claude:?}");
    };
    assert!(
        Path::new(&config.program).is_absolute(),
        "relative to the policy file"
    );
    assert_eq!(claude.network, Some(false));
    assert!(
        claude
            .pass_env
            .iter()
            .any(|name| name == "ANTHROPIC_API_KEY")
    );

    for (text, key) in [
        (
            "[workers.x]\nkind = \"codex\"\ncommand = [\"codex\"]\n",
            "workers.x.command",
        ),
        (
            "[workers.x]\nkind = \"claude\"\nmax_turns = 0\n",
            "workers.x.max_turns",
        ),
        (
            "[workers.x]\nkind = \"command\"\ncommand = [\"a\"]\nmodel = \"m\"\n",
            "workers.x.model",
        ),
    ] {
        let error = load_text(text).unwrap_err().to_string();
        assert!(error.contains(key), "{error}");
    }
}

#[test]
fn user_file_overrides_preset() {
    let policy = load_text(
        "[run]\njobs = 3\ntimeout = \"90s\"\nworker = \"w\"\n[workers.w]\nkind = \"command\"\ncommand = [\"./w.sh\"]\n",
    )
    .unwrap();
    assert_eq!(policy.jobs, Some(3));
    assert_eq!(policy.timeout, Duration::from_secs(90));
    let WorkerKind::Command { argv } = &policy.workers["w"].kind else {
        panic!("a command worker");
    };
    assert!(
        argv[0].ends_with("/./w.sh") || argv[0].ends_with("/w.sh"),
        "{argv:?}"
    );
    assert!(Path::new(&argv[0]).is_absolute());
    assert_eq!(
        policy.denied,
        load(None).unwrap().denied,
        "denied list comes from the preset"
    );
}

#[test]
fn errors_name_key_and_line() {
    let error = load_text("[run]\njobs = 0\n").unwrap_err();
    assert_eq!(
        (error.key.as_deref(), error.line),
        (Some("run.jobs"), Some(2))
    );
    let error = load_text("[run]\ntimeout = \"soon\"\n").unwrap_err();
    assert_eq!(
        (error.key.as_deref(), error.line),
        (Some("run.timeout"), Some(2))
    );
    let error = load_text("[scope]\nallowed = [\"src/**\", \"a/[\"]\n").unwrap_err();
    assert_eq!(error.key.as_deref(), Some("scope.allowed"));
    let error = load_text("[runn]\n").unwrap_err();
    assert!(error.message.contains("unknown field"), "{error}");
    assert_eq!(error.line, Some(1));
    let error = load_text("extends = \"lax\"\n").unwrap_err();
    assert!(error.to_string().contains("default, strict"), "{error}");
    let error = load_text("[workers.w]\nkind = \"command\"\ncommand = []\n").unwrap_err();
    assert_eq!(error.key.as_deref(), Some("workers.w.command"));
    let error = load_text("[workers.w]\nkind = \"robot\"\n").unwrap_err();
    assert_eq!(error.key.as_deref(), Some("workers.w.kind"));
}

#[test]
fn installed_agents_get_built_in_profiles_and_a_lone_one_is_the_default() {
    use crate::agents::Agent;
    let mut policy = super::load_source(None).unwrap();
    super::add_installed_agents(&mut policy, &[Agent::Claude]);
    let claude = &policy.workers["claude"];
    assert!(matches!(claude.kind, crate::model::WorkerKind::Claude(_)));
    assert_eq!(claude.network, Some(true), "an agent reaches its model");
    assert_eq!(policy.default_worker.as_deref(), Some("claude"));
    // Two agents: both profiles, no default (the task must choose).
    let mut policy = super::load_source(None).unwrap();
    super::add_installed_agents(&mut policy, &[Agent::Codex, Agent::Claude]);
    assert!(policy.workers.contains_key("codex") && policy.workers.contains_key("claude"));
    assert_eq!(policy.default_worker, None);
    // A policy's own profiles win, and keep a task from silently going to an agent.
    let mut policy = super::load_source(Some((
        "ccfan.toml".into(),
        "[workers.codex]\nkind = \"command\"\ncommand = [\"true\"]\n".to_string(),
    )))
    .unwrap();
    super::add_installed_agents(&mut policy, &[Agent::Codex]);
    assert!(policy.workers["codex"].kind.command().is_some());
    assert_eq!(policy.default_worker, None);
}
