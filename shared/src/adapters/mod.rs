//! Implementations of the ports for the running system: DynamoDB (stores and the gate),
//! SNS, SQS (the inquiry queue), CloudWatch EMF and the banks' HTTP APIs; the in-memory ones for tests are the domain's (`memory`).

pub mod bank_http;
pub mod dynamo;
pub mod emf;
#[cfg(any(test, feature = "test-util"))]
pub use domain::memory;
pub mod metering;
pub mod redact;
pub mod sns;
pub mod sqs;
