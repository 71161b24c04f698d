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
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    match cli::run(cli) {
        Ok(exit) => ExitCode::from(exit as u8),
        Err(failure) => {
            #[expect(clippy::print_stderr, reason = "the binary reports the final error")]
            {
                eprintln!("error: {:#}", failure.error);
            }
            ExitCode::from(failure.exit as u8)
        }
    }
}
