//! `ccfan init`: a first `ccfan.toml` for a repository — the test command its build files point to (Cargo,
//! npm/pnpm/yarn, uv/pytest, Go, make) and the agent CLIs installed here as worker profiles, with the rest of the
//! policy as comments to uncomment. Detection reads files only; writing and refusing to overwrite is the caller's.

use std::path::Path;

use crate::model::agent::Agent;

/// A test command found in a repository, and the file that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetectedTests {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Why: the file it was read from.
    pub because: String,
}

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|word| (*word).to_string()).collect()
}

/// The test command of the project at `root`, by its build files, first match wins: Cargo, a `package.json` with
/// a real `test` script (pnpm, yarn or npm by lockfile), uv or pytest, Go, a Makefile with a `test` target.
pub fn detect_tests(root: &Path) -> Option<DetectedTests> {
    let has = |name: &str| root.join(name).is_file();
    let found = |words: &[&str], because: &str| {
        Some(DetectedTests {
            argv: argv(words),
            because: because.to_string(),
        })
    };
    if has("Cargo.toml") {
        return found(&["cargo", "test"], "Cargo.toml");
    }
    if let Some(script) = package_test_script(root)
        && !script.contains("no test specified")
    {
        return if has("pnpm-lock.yaml") {
            found(&["pnpm", "test"], "package.json and pnpm-lock.yaml")
        } else if has("yarn.lock") {
            found(&["yarn", "test"], "package.json and yarn.lock")
        } else {
            found(&["npm", "test"], "package.json")
        };
    }
    if has("uv.lock") {
        return found(&["uv", "run", "pytest"], "uv.lock");
    }
    let pytest_config = has("pytest.ini")
        || has("conftest.py")
        || read_small(&root.join("pyproject.toml"))
            .is_some_and(|text| text.contains("[tool.pytest"))
        || read_small(&root.join("setup.cfg")).is_some_and(|text| text.contains("[tool:pytest]"));
    if pytest_config {
        return found(&["python3", "-m", "pytest"], "the pytest configuration");
    }
    if has("go.mod") {
        return found(&["go", "test", "./..."], "go.mod");
    }
    let make_test = ["Makefile", "makefile", "GNUmakefile"].iter().any(|name| {
        read_small(&root.join(name))
            .is_some_and(|text| text.lines().any(|line| line.starts_with("test:")))
    });
    if make_test {
        return found(&["make", "test"], "the Makefile's test target");
    }
    None
}

/// A small text file's content (at most 1 MiB), if it is one.
fn read_small(path: &Path) -> Option<String> {
    let bytes = crate::util::read_regular(path, 1 << 20).ok()?;
    String::from_utf8(bytes).ok()
}

/// The `scripts.test` of `package.json`, if any.
fn package_test_script(root: &Path) -> Option<String> {
    let text = read_small(&root.join("package.json"))?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json.get("scripts")?
        .get("test")?
        .as_str()
        .map(str::to_string)
}

/// The starter `ccfan.toml`: the detected tests, the installed agents as profiles, everything else commented.
pub fn starter(tests: Option<&DetectedTests>, agents: &[Agent]) -> String {
    let mut text = String::from(
        "# ccfan.toml, written by `ccfan init`. Every key is optional; README \"The policy\" lists them all.\n\n",
    );
    match tests {
        Some(tests) => {
            let words: Vec<String> = tests.argv.iter().map(|word| format!("{word:?}")).collect();
            text.push_str(&format!(
                "# The gate runs this on the exact tree that would land (the merge preview).\n[tests]\ncommand = [{}]   # from {}\n# timeout = \"10m\"\n\n",
                words.join(", "),
                tests.because
            ));
        }
        None => text.push_str(
            "# No test command found (Cargo, npm/pnpm/yarn, uv/pytest, Go, make): the gate runs none until you set one.\n# [tests]\n# command = [\"make\", \"check\"]\n\n",
        ),
    }
    if agents.is_empty() {
        text.push_str(
            "# No agent CLI found on PATH (codex, claude). Install one, or describe your own worker:\n# [workers.mine]\n# kind = \"command\"\n# command = [\"./scripts/agent.sh\"]\n\n",
        );
    } else {
        text.push_str("# The agent CLIs installed here, as workers: `worker = \"NAME\"` in a task or a delegate call.\n");
        for agent in agents {
            text.push_str(&format!(
                "[workers.{name}]\nkind = \"{name}\"\n# model = \"…\"        # the agent's own default otherwise\n# max_turns = 40\n\n",
                name = agent.name()
            ));
        }
    }
    text.push_str(
        "# [run]\n# worker = \"codex\"      # for tasks that name none\n# jobs = 4\n# max_reworks = 3\n\n\
         # [setup]                # once per lockfile change; what it leaves that git ignores is copied into each task tree\n\
         # command = [\"npm\", \"ci\"]\n# inputs = [\"package-lock.json\"]\n\n\
         # [sandbox]\n# network = false        # workers' default; a worker profile's `network = true` wins\n",
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        dir
    }

    /// Files of a fixture project, and the test command expected for it.
    type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a [&'a str]>);

    #[test]
    fn each_kind_of_project_gets_its_test_command() {
        let cases: [Case<'_>; 9] = [
            (&[("Cargo.toml", "[package]")], Some(&["cargo", "test"])),
            (
                &[("package.json", r#"{"scripts":{"test":"vitest"}}"#)],
                Some(&["npm", "test"]),
            ),
            (
                &[
                    ("package.json", r#"{"scripts":{"test":"jest"}}"#),
                    ("pnpm-lock.yaml", ""),
                ],
                Some(&["pnpm", "test"]),
            ),
            (
                &[
                    ("package.json", r#"{"scripts":{"test":"jest"}}"#),
                    ("yarn.lock", ""),
                ],
                Some(&["yarn", "test"]),
            ),
            (
                &[(
                    "package.json",
                    r#"{"scripts":{"test":"echo \"Error: no test specified\" && exit 1"}}"#,
                )],
                None,
            ),
            (
                &[("pyproject.toml", "[project]"), ("uv.lock", "")],
                Some(&["uv", "run", "pytest"]),
            ),
            (
                &[("pyproject.toml", "[tool.pytest.ini_options]\n")],
                Some(&["python3", "-m", "pytest"]),
            ),
            (&[("go.mod", "module x")], Some(&["go", "test", "./..."])),
            (
                &[("Makefile", "build:\n\tcc x.c\ntest: build\n\t./t\n")],
                Some(&["make", "test"]),
            ),
        ];
        for (files, expected) in cases {
            let dir = project(files);
            let found = detect_tests(dir.path()).map(|tests| tests.argv);
            assert_eq!(found, expected.map(argv), "{files:?}");
        }
    }

    #[test]
    fn the_starter_is_a_valid_policy_with_or_without_agents_and_tests() {
        let tests = DetectedTests {
            argv: argv(&["cargo", "test"]),
            because: "Cargo.toml".to_string(),
        };
        for (tests, agents) in [
            (Some(&tests), &[Agent::Codex, Agent::Claude][..]),
            (None, &[][..]),
            (Some(&tests), &[Agent::Claude][..]),
        ] {
            let text = starter(tests, agents);
            let policy = crate::policy::load_source(Some(("ccfan.toml".into(), text.clone())))
                .unwrap_or_else(|error| panic!("{error}\n{text}"));
            assert_eq!(policy.tests.is_some(), tests.is_some(), "{text}");
            for agent in agents {
                assert!(policy.workers.contains_key(agent.name()), "{text}");
            }
        }
    }
}
