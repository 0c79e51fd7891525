//! The system tests that share one local stack, as one binary with a module per use
//! case: the HTTP API (submission, callbacks, auth, limits under bursts), the pipeline
//! end to end, the DynamoDB adapter, the port contracts (each run on the in-memory and
//! the DynamoDB implementation), the emulators themselves and the SAM template.
//!
//! One binary links the SDK once instead of once per suite (minutes on 2 cores). Its
//! tests run in parallel (cargo's default, one thread per core): each has users, queries
//! or tables of its own, so none depends on what another does to the shared stack. The
//! suites that do disturb it (private stacks, killed processes, a saturating burst, a
//! browser, release-like builds) are separate binaries: see `tests/Cargo.toml`.
//!
//! ```text
//! python3 infra/local/stack.py exec --with-api -- cargo test -p system-tests --test api
//! ```

mod auth;
mod bank_protocol;
mod callbacks;
mod concurrency;
mod contracts;
mod controls;
mod dynamo;
mod foundation;
mod infra;
mod pipeline;
mod property;
mod sms_channel;
mod submission;
