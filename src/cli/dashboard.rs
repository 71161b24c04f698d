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
    let state = crate::paths::StateLayout::of(&repo);
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
        |link| {
            super::render::err(&format!(
                "ccfan dashboard on {}\n(the link works once: the page trades its token for this start's session; Ctrl-C stops the page, never the runs)\n",
                link.url
            ));
            if args.open
                && let Err(error) = open(&state, link)
            {
                super::render::err(&format!("ccfan: warning: cannot open a browser: {error}\n"));
            }
        },
        async {
            let _ = tokio::signal::ctrl_c().await;
            // Open pages are let go at once; a second Ctrl-C, or a drain that hangs, ends the process.
            tokio::spawn(async {
                let second = tokio::signal::ctrl_c();
                let _ = tokio::time::timeout(std::time::Duration::from_secs(5), second).await;
                std::process::exit(130);
            });
        },
    ));
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    if let Ok(entries) =
        std::fs::read_dir(state.dashboard_link(0).parent().unwrap_or(Path::new(".")))
    {
        // The redirect files of this repository's dashboards: their tokens are dead once a page or the server is.
        for entry in entries.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    served.map_err(|error| CliError {
        exit: match error {
            DashboardError::Bind { .. } => Exit::BadInput,
            DashboardError::Random(_) | DashboardError::Serve(_) => Exit::Internal,
        },
        error: error.into(),
    })?;
    Ok(Exit::Success)
}

/// Opens the link through a file only the person can read (a redirect to it), so its token never appears on a
/// command line other users can list.
fn open(state: &crate::paths::StateLayout, link: &dashboard::Link) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = state.dashboard_link(link.port);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let _ = std::fs::remove_file(&path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    write!(
        file,
        "<!doctype html><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"0;url={}\"><title>ccfan dashboard</title>",
        link.url
    )?;
    crate::sandbox::detach::open_browser(&format!("file://{}", path.display()))
}
