//! `ccfan doctor`: what this machine offers ccfan — which sandbox backend works and why the others do not, which
//! one the policy picks, which limits the cgroups enforce. Exit 1 when the policy's backend cannot run here.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::args::DoctorArgs;
use super::{CliError, Exit, render};
use crate::sandbox::doctor::{self, SandboxReport};
use crate::{git, pipeline, policy};

#[derive(Debug, Serialize)]
struct Report {
    version: &'static str,
    /// Where the policy came from.
    policy: Vec<String>,
    sandbox: SandboxReport,
}

/// Runs `ccfan doctor`.
pub fn doctor(start: &Path, args: DoctorArgs) -> Result<Exit, CliError> {
    let policy = match git::discover(start) {
        Ok(repo) => pipeline::load_policy(&repo, args.policy.as_deref())?,
        Err(_) => policy::load(args.policy.as_deref()).map_err(pipeline::PipelineError::from)?,
    };
    let report = Report {
        version: env!("CARGO_PKG_VERSION"),
        policy: policy.sources.clone(),
        sandbox: doctor::report(policy.sandbox.backend),
    };
    render::out(&if args.json {
        render::json(&report)
    } else {
        human(&report)
    })?;
    Ok(if report.sandbox.selected.is_some() {
        Exit::Success
    } else {
        Exit::NotAllSucceeded
    })
}

fn human(report: &Report) -> String {
    let mut text = format!(
        "ccfan {} (policy: {})\n\nsandbox backends\n",
        report.version,
        report.policy.join(" + ")
    );
    let sandbox = &report.sandbox;
    for status in sandbox.backends.iter().chain([&sandbox.seccomp]) {
        let mark = if status.works { "ok " } else { "no " };
        let _ = writeln!(text, "  {mark} {:<11} {}", status.name, status.detail);
    }
    let _ = writeln!(
        text,
        "\npolicy asks for `{}`: {}",
        sandbox.configured,
        match sandbox.selected {
            Some(name) => format!("workers run under {name}"),
            None => "no worker can run (ccfan fails closed)".to_string(),
        }
    );
    if let Some(problem) = &sandbox.problem {
        let _ = writeln!(text, "  {problem}");
    }
    text.push_str("\nlimits\n");
    for line in &sandbox.cgroups {
        let _ = writeln!(text, "  {line}");
    }
    text
}
