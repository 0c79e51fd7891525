//! The submission path: banks, eligibility, SMS verification codes and query submission.

pub mod api;
pub mod service;

pub use service::{SubmissionDeps, SubmissionService};

#[cfg(test)]
mod tests;
