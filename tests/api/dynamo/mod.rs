//! The DynamoDB adapter's own guarantees (items, streams, request counts), on DynamoDB
//! Local.
mod legs;
mod metering;
mod service;
