//! `TestEnv`: a throw-away repository with a hermetic git environment (set on each child process, never with
//! `env::set_var`), and helpers to drive the real binary.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub struct TestEnv {
    pub tmp: tempfile::TempDir,
    pub repo: PathBuf,
}

impl Drop for TestEnv {
    /// Copy-on-write task trees are mounts that outlive ccfan by design (until `gc`): a test's go with it, so
    /// neither the mount table nor the temp folders grow with every test run.
    fn drop(&mut self) {
        unmount_under(self.tmp.path());
    }
}

/// Unmounts everything mounted under `dir`, deepest first.
pub fn unmount_under(dir: &Path) {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut targets: Vec<PathBuf> = table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|target| PathBuf::from(target.replace("\\040", " ")))
        .filter(|target| target.starts_with(dir))
        .collect();
    targets.sort();
    for target in targets.iter().rev() {
        let _ = Command::new("umount").arg(target).status();
    }
}

/// What a ccfan invocation did.
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Ran {
    fn from(output: Output) -> Ran {
        Ran {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// Puts `folder` first on `command`'s PATH.
pub fn path_first(command: &mut Command, folder: &Path) {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![folder.to_path_buf()];
    paths.extend(std::env::split_paths(&path));
    command.env("PATH", std::env::join_paths(paths).unwrap());
}

impl Ran {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

impl std::fmt::Debug for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// The environment changes that make a child hermetic (`None` removes a variable).
pub fn hermetic_env(home: &Path) -> Vec<(OsString, Option<OsString>)> {
    let mut changes: Vec<(OsString, Option<OsString>)> = std::env::vars_os()
        .filter(|(name, _)| {
            // CCFAN_TREES is the mode the whole suite runs in (scripts/test.sh runs it in both).
            (name.to_string_lossy().starts_with("GIT_")
                || name.to_string_lossy().starts_with("CCFAN_"))
                && name != "CCFAN_TREES"
        })
        .map(|(name, _)| (name, None))
        .collect();
    let set = [
        ("HOME", home.to_path_buf()),
        ("XDG_CONFIG_HOME", home.join(".config")),
        ("XDG_DATA_HOME", home.join(".local/share")),
        ("GIT_CONFIG_NOSYSTEM", "1".into()),
        ("GIT_AUTHOR_NAME", "Test".into()),
        ("GIT_AUTHOR_EMAIL", "test@example.invalid".into()),
        ("GIT_COMMITTER_NAME", "Test".into()),
        ("GIT_COMMITTER_EMAIL", "test@example.invalid".into()),
        ("LC_ALL", "C".into()),
    ];
    changes.extend(
        set.into_iter()
            .map(|(name, value)| (OsString::from(name), Some(value.into_os_string()))),
    );
    changes
}

pub fn hermetic(command: &mut Command, home: &Path) {
    for (name, value) in hermetic_env(home) {
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
    }
    command.stdin(Stdio::null());
}

impl TestEnv {
    /// A repository on branch `main` with a README, `src/lib.txt` and a `.gitignore` ignoring `*.log`.
    pub fn new() -> TestEnv {
        TestEnv::with_tmp(tempfile::tempdir().unwrap())
    }

    /// Like [`TestEnv::new`], under `parent` instead of the system's temp dir (which the sandbox hides).
    pub fn new_in(parent: &Path) -> TestEnv {
        TestEnv::with_tmp(tempfile::tempdir_in(parent).unwrap())
    }

    fn with_tmp(tmp: tempfile::TempDir) -> TestEnv {
        let repo = tmp.path().join("repo");
        std::fs::create_dir_all(tmp.path().join("home")).unwrap();
        std::fs::create_dir_all(repo.join("src")).unwrap();
        let env = TestEnv { tmp, repo };
        env.git(&["init", "-q", "-b", "main"]);
        env.write("README.md", "# test repo\n");
        env.write("src/lib.txt", "one\ntwo\nthree\n");
        env.write(".gitignore", "*.log\n");
        env.git(&["add", "-A"]);
        env.git(&["commit", "-qm", "first"]);
        env
    }

    pub fn home(&self) -> PathBuf {
        self.tmp.path().join("home")
    }

    /// The folder workers can write probes into (outside the repository).
    pub fn probe(&self) -> PathBuf {
        let dir = self.tmp.path().join("probe");
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    pub fn worktree_root(&self) -> PathBuf {
        self.tmp.path().join("worktrees")
    }

    pub fn write(&self, relative: &str, content: &str) {
        let path = self.repo.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    /// Writes an executable shell script outside the repository; returns its path.
    pub fn script(&self, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let dir = self.tmp.path().join("workers");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// Writes a tasks file outside the repository; returns its path.
    pub fn tasks(&self, body: &str) -> PathBuf {
        let path = self.tmp.path().join("tasks.toml");
        std::fs::write(&path, body).unwrap();
        path
    }

    pub fn git(&self, args: &[&str]) -> String {
        let mut command = Command::new("git");
        hermetic(&mut command, &self.home());
        let output = command.current_dir(&self.repo).args(args).output().unwrap();
        assert!(
            output.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// What `command` sets for ccfan: hermetic git, the probe folder writable, worktrees under the temp dir.
    pub fn ccfan_env(&self) -> Vec<(OsString, Option<OsString>)> {
        let mut changes = hermetic_env(&self.home());
        changes.push((
            "CCFAN_SANDBOX_WRITABLE".into(),
            Some(self.probe().into_os_string()),
        ));
        changes.push((
            "CCFAN_WORKTREE_ROOT".into(),
            Some(self.worktree_root().into_os_string()),
        ));
        changes
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ccfan"));
        hermetic(&mut command, &self.home());
        // Workers in these tests report through probe files outside their worktree: the one extra place the
        // sandbox lets them write.
        command
            .env("CCFAN_SANDBOX_WRITABLE", self.probe())
            .env("CCFAN_WORKTREE_ROOT", self.worktree_root())
            .current_dir(&self.repo)
            .args(args);
        command
    }

    pub fn ccfan(&self, args: &[&str]) -> Ran {
        self.ccfan_with(args, &[])
    }

    /// [`TestEnv::ccfan`] with extra environment variables.
    pub fn ccfan_with(&self, args: &[&str], vars: &[(&str, &str)]) -> Ran {
        let Output {
            status,
            stdout,
            stderr,
        } = self
            .command(args)
            .envs(vars.iter().copied())
            .output()
            .unwrap();
        Ran {
            code: status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }

    /// `ccfan run --json` of the tasks file at `tasks`.
    pub fn run(&self, tasks: &Path, extra: &[&str]) -> Ran {
        let mut args = vec!["run", "--json", "--tasks", tasks.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.ccfan(&args)
    }

    /// Writes and commits the repository's `ccfan.toml`.
    pub fn commit_policy(&self, text: &str) {
        self.write("ccfan.toml", text);
        self.git(&["add", "ccfan.toml"]);
        self.git(&["commit", "-qm", "policy"]);
    }

    pub fn state_dir(&self) -> PathBuf {
        self.repo.join(".git/ccfan")
    }
}

/// Whether task trees are copy-on-write views in this test run: `CCFAN_TREES` is not `checkout` and ccfan may
/// mount overlays (it runs as root, as in CI).
pub fn copy_on_write() -> bool {
    std::env::var_os("CCFAN_TREES").is_none_or(|mode| mode != "checkout")
        && rustix::process::geteuid().is_root()
}

/// Whether bubblewrap is installed and can make namespaces here.
pub fn bwrap_works() -> bool {
    // Other tests mount and unmount task trees meanwhile; bubblewrap fails its start when one goes away while it
    // copies the mount table (ccfan starts it again in that case, and so does this probe).
    (0..6).any(|tries| {
        std::thread::sleep(std::time::Duration::from_millis(25 * tries));
        Command::new("bwrap")
            .args(["--ro-bind", "/", "/", "--unshare-pid", "--", "true"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    })
}

/// Waits (up to a minute) until `path` exists; `what` names what failed to happen.
pub fn wait_for_file(path: &Path, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !path.exists() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .next()
                .unwrap_or("");
            state != "Z" && state != "X"
        }
        Err(_) => false,
    }
}

impl TestEnv {
    /// Host pids of the processes this environment's workers started (they carry `PROBE=<probe dir>`). A pid a
    /// sandboxed worker writes is its PID namespace's, not the host's, so tests find processes this way.
    pub fn worker_processes(&self) -> Vec<u32> {
        let needle = format!("\0PROBE={}\0", self.probe().display()).into_bytes();
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| {
                let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
                    return false;
                };
                let mut haystack = vec![0];
                haystack.extend_from_slice(&environ);
                haystack.push(0);
                alive(pid)
                    && haystack
                        .windows(needle.len())
                        .any(|w| w == needle.as_slice())
            })
            .collect()
    }
}

/// Reads a pid written by a fixture worker, waiting for it to appear.
pub fn read_pid(path: &Path) -> u32 {
    for _ in 0..500 {
        if let Some(pid) = std::fs::read_to_string(path)
            .ok()
            .and_then(|text| text.trim().parse().ok())
        {
            return pid;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("no pid in {}", path.display());
}

/// A task from a run's JSON by id.
pub fn task<'a>(run: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    run["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .unwrap_or_else(|| panic!("no task {id} in {run}"))
}

/// A folder for test environments that the sandbox does not hide (it hides `/tmp`): Cargo's target tmp dir,
/// or, when the project itself lives under `/tmp`, one in the home folder.
pub fn visible_tmp() -> PathBuf {
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let hidden = ["/tmp", "/var/tmp", "/run", "/dev/shm"];
    let real = std::fs::canonicalize(&target).unwrap_or(target.clone());
    if !hidden.iter().any(|dir| real.starts_with(dir)) {
        return target;
    }
    let home = PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/ccfan-test-tmp");
    std::fs::create_dir_all(&home).unwrap();
    home
}

/// A program or file a test drives that `scripts/test.sh` installs (an agent CLI, the MCP Inspector, the Python
/// SDK, pre-commit, the SARIF schema). Missing under plain `cargo test`: `None`, after a one-line note saying what
/// to run, and the test returns early. With `CCFAN_REQUIRE_TOOLS=1` (set by `scripts/test.sh`, so in CI) a missing
/// tool fails the test instead: nothing is ever skipped there.
pub fn installed(test: &str, what: &str, found: Option<PathBuf>) -> Option<PathBuf> {
    match found.filter(|path| path.exists()) {
        Some(path) => Some(path),
        None if std::env::var_os("CCFAN_REQUIRE_TOOLS").is_some_and(|v| v == "1") => {
            panic!("{test}: {what} is missing; scripts/test.sh installs it (CCFAN_REQUIRE_TOOLS=1)")
        }
        None => {
            // Straight to the stderr handle: libtest captures `eprintln!` of passing tests, and this note must show.
            let note =
                format!("skipped {test}: needs {what}; run scripts/test.sh, which installs it\n");
            let _ = std::io::Write::write_all(&mut std::io::stderr(), note.as_bytes());
            None
        }
    }
}

/// A path from the environment variable `name`, if set.
pub fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name).map(PathBuf::from)
}

/// Points `command` (podman, or a script that runs it) at a `containers.conf` that uses runc with explicit
/// rlimits, when the environment names none and runc is installed: crun cannot set its rlimits on some machines
/// (CI's kind among them), and plain `cargo test` must pass there as `scripts/test.sh` does.
pub fn podman_env(command: &mut Command) -> &mut Command {
    if std::env::var_os("CONTAINERS_CONF").is_some() {
        return command;
    }
    let runc = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("runc").exists()));
    if !runc {
        return command;
    }
    let conf =
        std::env::temp_dir().join(format!("ccfan-test-containers-{}.conf", std::process::id()));
    if !conf.exists() {
        let _ = std::fs::write(
            &conf,
            "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=4096:4096\"]\n[engine]\nruntime = \"runc\"\n",
        );
    }
    command.env("CONTAINERS_CONF", conf)
}

/// The attempt logs (`worker.log`) of task `task` in every run of `env`.
pub fn attempt_logs(env: &TestEnv, task: &str) -> Vec<PathBuf> {
    let Ok(runs) = std::fs::read_dir(env.state_dir().join("runs")) else {
        return Vec::new();
    };
    runs.flatten()
        .flat_map(|run| {
            std::fs::read_dir(run.path().join(task))
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|attempt| attempt.path().join("worker.log"))
        .filter(|log| log.is_file())
        .collect()
}

/// Whether an attempt log of task `task` holds `text` (a worker's output seen while it runs).
pub fn attempt_log_has(env: &TestEnv, task: &str, text: &str) -> bool {
    attempt_logs(env, task)
        .iter()
        .any(|log| std::fs::read_to_string(log).is_ok_and(|log| log.contains(text)))
}
