//! ccfan: fan delegated coding tasks out to parallel workers, each in its own git worktree, and keep every
//! attempt safe until a gate decides what lands.
//!
//! ```text
//!  tasks.toml + ccfan.toml
//!        │ plan        (pure: parse, validate, resolve profiles)          pipeline::plan
//!        ▼
//!  one worktree + branch per task, from one recorded base commit         pipeline::fan_out
//!        │ run_worker  (bounded parallelism, timeouts, whole-tree kill)  pipeline::run_worker
//!        ▼
//!  one commit per attempt on the task branch + a salvage ref             pipeline::record
//!        │ verify → decide → integrate   (the gate and merge-loop issues)
//!        ▼
//!  durable state in <git-common-dir>/ccfan/state.db                      store
//! ```
//!
//! The library never prints: progress flows as [`events::Event`] values that the CLI renders. Git is reached only
//! through [`git`], processes are spawned only through [`sandbox`].
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod agents;
pub mod cli;
pub mod cost;
pub mod dashboard;
pub mod demo;
pub mod events;
pub mod git;
pub mod hooks;
pub mod ids;
pub mod input;
pub mod mcp;
pub mod model;
pub mod paths;
pub mod pipeline;
pub mod policy;
pub mod report;
pub mod run_report;
pub mod sandbox;
pub mod scorecard;
pub mod secrets;
pub mod status;
pub mod store;
pub mod tasks_file;
pub mod util;
