//! The one-click card lookup (一键查卡) as the Lambda functions run it: the domain
//! (re-exported from the `domain` crate, so `shared::model::…` paths hold), its
//! DynamoDB/SNS/EMF/bank-HTTP adapters, the stream decoding, telemetry, the wiring of
//! each function (`bootstrap`) and the inbound HTTP layer (`inbound`, which nothing else
//! here imports). Lambda functions are thin shells around it.

pub use domain::{
    bank, clock, config, dispatch, error, model, ports, records, report, rules, security,
    submission, sweep, verification,
};

pub mod adapters;
pub mod bootstrap;
pub mod inbound;
pub mod settings;
pub mod stream;
pub mod telemetry;
