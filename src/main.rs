//! The `ccfan` binary: parse arguments, send logs to stderr, run, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use ccfan::cli::{self, Exit, args::Cli};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let code = if error.use_stderr() {
                Exit::BadInput as u8
            } else {
                Exit::Success as u8
            };
            let _ = error.print();
            return ExitCode::from(code);
        }
    };
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    // The container engine's client logs its requests' bodies (a worker's variables, API keys among them) at debug
    // and trace: never shown, whatever the level asked for.
    let quiet = |filter: EnvFilter| {
        filter.add_directive(
            "bollard=info"
                .parse()
                .unwrap_or_else(|_| level.parse().unwrap_or_default()),
        )
    };
    let filter = quiet(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level)));
    // Colour only for a person at a terminal, and never when NO_COLOR is set (https://no-color.org).
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    match cli::run(cli) {
        Ok(exit) => ExitCode::from(exit as u8),
        Err(failure) => {
            #[expect(clippy::print_stderr, reason = "the binary reports the final error")]
            {
                let error: &(dyn std::error::Error + 'static) = failure.error.as_ref();
                let stopped_by_full_disk = failure.error.chain().any(|cause| {
                    cause
                        .downcast_ref::<ccfan::pipeline::PipelineError>()
                        .is_some_and(ccfan::pipeline::PipelineError::is_disk_full)
                });
                if stopped_by_full_disk || ccfan::util::disk_full(error) {
                    eprintln!("error: the disk is full: {:#}", failure.error);
                } else {
                    eprintln!("error: {:#}", failure.error);
                }
            }
            ExitCode::from(failure.exit as u8)
        }
    }
}
