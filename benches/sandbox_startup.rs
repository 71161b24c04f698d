//! Sandbox start-up overhead: a `true` process run through the sandbox door many times with each backend.
//! `cargo bench --bench sandbox_startup -- [RUNS]`; results go in docs/benchmarks.md. Under `cargo test` it is a
//! smoke run of every backend.
#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    reason = "a benchmark binary reports on stdout"
)]

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use ccfan::policy::{SandboxBackend, SandboxLimits};
use ccfan::sandbox::{self, Launch, SandboxPolicy};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test --all-targets` this is a quick smoke run.
    let benching = std::env::args().any(|arg| arg == "--bench");
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|arg| arg.parse().ok())
        .unwrap_or(if benching { 200 } else { 5 });
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let worktree = dir.path().join("worktree");
    let common = dir.path().join("common");
    std::fs::create_dir_all(&worktree).unwrap();
    std::fs::create_dir_all(&common).unwrap();
    std::fs::write(worktree.join(".git"), "gitdir: ../common\n").unwrap();
    let cancel = AtomicBool::new(false);
    let argv = vec!["true".to_string()];
    let env = vec![("PATH".into(), std::env::var_os("PATH").unwrap())];
    println!("runs={runs} program=true");
    println!("| backend | median ms | p90 ms | overhead vs none (median) |");
    println!("|---|---:|---:|---:|");
    let mut baseline = None;
    for backend in [
        SandboxBackend::None,
        SandboxBackend::Bubblewrap,
        SandboxBackend::Landlock,
    ] {
        let policy = SandboxPolicy {
            backend,
            writable: vec![worktree.clone()],
            read_only: vec![worktree.join(".git"), common.clone()],
            network: false,
            limits: SandboxLimits {
                memory: Some(1 << 30),
                pids: Some(1024),
                tmp_size: 64 << 20,
                max_output: 1 << 20,
            },
            timeout: Duration::from_secs(10),
            log_limit: 1 << 20,
        };
        let mut times = Vec::with_capacity(runs);
        for i in 0..runs + 5 {
            let token = format!("bench-{}-{i}", backend.as_str());
            let log = dir.path().join("log");
            let started = Instant::now();
            let outcome = sandbox::run(
                Launch {
                    argv: &argv,
                    cwd: Path::new(&worktree),
                    env: env.clone(),
                    log_path: &log,
                    token: &token,
                    cancel: &cancel,
                    sandbox: &policy,
                    stream: None,
                },
                |_| {},
            )
            .unwrap();
            assert_eq!(
                outcome.exit,
                ccfan::model::ExitStatus::Code { code: 0 },
                "{outcome:?}"
            );
            if i >= 5 {
                times.push(started.elapsed().as_secs_f64() * 1000.0);
            }
        }
        times.sort_by(f64::total_cmp);
        let median = percentile(&times, 0.5);
        let base = *baseline.get_or_insert(median);
        println!(
            "| {} | {median:.1} | {:.1} | {:+.1} ms |",
            backend.as_str(),
            percentile(&times, 0.9),
            median - base
        );
    }
}
