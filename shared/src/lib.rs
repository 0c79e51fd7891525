//! Domain library of the one-click card lookup (一键查卡): model, rules, ports and their
//! DynamoDB/SNS adapters, and the inbound HTTP layer (`inbound`, which nothing else
//! here imports). Lambda functions are thin shells around it.

pub mod adapters;
pub mod bank;
pub mod bootstrap;
pub mod clock;
pub mod config;
pub mod dispatch;
pub mod error;
pub mod inbound;
pub mod model;
pub mod ports;
pub mod records;
pub mod report;
pub mod rules;
pub mod security;
pub mod settings;
pub mod stream;
pub mod submission;
pub mod sweep;
pub mod telemetry;
#[cfg(test)]
pub(crate) mod test_support;
pub mod verification;
