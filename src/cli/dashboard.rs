//! `ccfan dashboard`: serves the live fleet page for the repository it starts in, prints its link (with this
//! start's token) and stops on Ctrl-C. Actions taken on the page run in their own ccfan processes and go on.

use std::path::Path;

use super::args::DashboardArgs;
use super::{CliError, Exit, repo_at};
use crate::dashboard::{self, DashboardError, Options};
use crate::pipeline::{self, PipelineError};

/// Runs `ccfan dashboard`.
pub fn serve(start: &Path, args: DashboardArgs) -> Result<Exit, CliError> {
    let repo = repo_at(start)?;
    let rules = pipeline::display_rules(&repo).map_err(PipelineError::from)?;
    let options = Options {
        port: args.port,
        exe: std::env::current_exe()?,
        child_env: Vec::new(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let served = runtime.block_on(dashboard::serve(
        repo,
        rules,
        options,
        |url| {
            super::render::err(&format!(
                "ccfan dashboard on {url}\n(the link holds this start's access token; Ctrl-C stops the page, never the runs)\n"
            ));
            if args.open
                && let Err(error) = crate::sandbox::detach::open_browser(url)
            {
                super::render::err(&format!("ccfan: warning: cannot open a browser: {error}\n"));
            }
        },
        async {
            let _ = tokio::signal::ctrl_c().await;
        },
    ));
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    served.map_err(|error| CliError {
        exit: match error {
            DashboardError::Bind { .. } => Exit::BadInput,
            DashboardError::Random(_) | DashboardError::Serve(_) => Exit::Internal,
        },
        error: error.into(),
    })?;
    Ok(Exit::Success)
}
