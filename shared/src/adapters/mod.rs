//! Implementations of the ports: DynamoDB and SNS for the running system, in-memory
//! ones for unit tests.

pub mod dynamo;
pub mod memory;
pub mod sns;
