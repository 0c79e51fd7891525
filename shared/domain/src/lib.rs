//! The domain of the one-click card lookup (一键查卡): model, rules, ports and the
//! services behind each function. It depends on no AWS SDK, Lambda runtime or HTTP crate
//! (Cargo enforces that: they are not in its manifest); the adapters and the inbound HTTP
//! layer live in `shared`, which re-exports these modules.

pub mod bank;
pub mod clock;
pub mod config;
pub mod dispatch;
pub mod error;
/// The in-memory adapters: tests and local tools only, never in a function.
#[cfg(any(test, feature = "test-util"))]
pub mod memory;
pub mod model;
pub mod ports;
pub mod records;
pub mod report;
pub mod rules;
pub mod security;
pub mod submission;
pub mod sweep;
/// Scripted banks and a world on the in-memory store, for the domain's tests and
/// `shared`'s inbound tests.
#[cfg(any(test, feature = "test-util"))]
pub mod test_support;
pub mod verification;
