//! Integration tests: real git repositories in temp dirs, the real `ccfan` binary, fixture workers.
#![allow(
    clippy::disallowed_methods,
    reason = "tests spawn git and ccfan directly"
)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a panic is how a test helper fails"
)]

mod agent_containers;
mod agents;
mod awkward;
mod bad_input;
mod best_of_n;
mod containers;
mod cow;
mod crash;
mod dashboard;
mod demo;
mod env;
mod fan_out;
mod fleet;
mod gate;
mod handoff;
mod hardening;
mod hooks;
mod hooks_install;
mod kill;
mod kube_fake;
mod kubernetes;
mod landing;
mod mcp;
mod merge_loop;
mod plan_mode;
mod portable;
mod review;
mod sandbox;
mod sarif;
mod tamper;
mod user_checkout;
mod warm;
