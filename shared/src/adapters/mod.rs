//! Implementations of the ports: DynamoDB, SNS and CloudWatch EMF for the running
//! system, in-memory ones for tests.

pub mod dynamo;
pub mod emf;
pub mod memory;
pub mod sns;
