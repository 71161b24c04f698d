//! `ccfan mcp`: runs the MCP server (stdio, or Streamable HTTP with `--http`) on a small tokio runtime, from any
//! folder (each tool call names its repository, or uses the one the server started in). On stdio, stdout is the
//! protocol: nothing else is written there.

use std::path::Path;

use super::args::McpArgs;
use super::{CliError, Exit};
use crate::mcp::{self, Repos};

/// Runs `ccfan mcp`.
pub fn serve(start: &Path, args: McpArgs) -> Result<Exit, CliError> {
    // On stdio the server starts anywhere; each tool call resolves its repository (`repo`, else this folder). Over
    // HTTP, which other processes can reach, it serves the repository it starts in and no other.
    let exe = std::env::current_exe()?;
    let start = std::path::absolute(start)?;
    let shared = match args.http {
        None => Repos::new(start, exe, Vec::new()),
        Some(_) => Repos::only_start(start, exe, Vec::new())
            .map_err(|error| CliError::from(crate::pipeline::PipelineError::from(error)))?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let served = runtime.block_on(async move {
        match args.http {
            None => mcp::serve_stdio(shared).await,
            Some(addr) => {
                let listener = mcp::bind_http(addr, args.allow_remote).await?;
                let bound = listener.local_addr().unwrap_or(addr);
                super::render::err(&format!("ccfan MCP server on http://{bound}/mcp\n"));
                let shutdown = async {
                    let _ = tokio::signal::ctrl_c().await;
                };
                mcp::serve_http(shared, listener, args.allow_remote, shutdown).await
            }
        }
    });
    // Handed-off work goes on in its own processes; nothing here waits for it.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    served.map_err(|error| CliError {
        exit: match error {
            mcp::McpError::NotLoopback(_) => Exit::BadInput,
            mcp::McpError::Bind { .. } | mcp::McpError::Serve(_) => Exit::Internal,
        },
        error: error.into(),
    })?;
    Ok(Exit::Success)
}
