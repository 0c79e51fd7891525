//! `bank-check`: the conformance checker a bank runs against its own endpoint before it
//! joins (bank protocol: `functions/bank-protocol.yaml`). It sends signed inquiries for
//! test subjects, listens for the callbacks, probes the refusals (bad signatures,
//! replays, stale timestamps), repeats inquiries and disputes, and reports pass or fail
//! per rule ([`rules::Rule`]).
//!
//! Nothing it prints quotes a body, a name, an ID number or card data: failures name
//! the rule, the subject's position and what was wrong.

pub mod callbacks;
pub mod card_data;
pub mod checks;
pub mod client;
pub mod report;
pub mod rules;
pub mod spec;
pub mod subjects;

pub use checks::{run, CheckConfig, CheckError};
pub use report::Report;
pub use rules::Rule;
