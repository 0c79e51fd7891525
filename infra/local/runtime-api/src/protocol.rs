//! The Runtime API's fixed parts: paths, header names, limits and the shapes of ids.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Every path of the Runtime API starts with its version.
pub const RUNTIME_PREFIX: &str = "/2018-06-01/runtime";

/// Lambda's limit on a synchronous response (6 MB); larger ones fail the invocation.
pub const MAX_RESPONSE_BYTES: usize = 6 * 1024 * 1024;

pub const REQUEST_ID: &str = "lambda-runtime-aws-request-id";
pub const DEADLINE_MS: &str = "lambda-runtime-deadline-ms";
pub const FUNCTION_ARN: &str = "lambda-runtime-invoked-function-arn";
pub const TRACE_ID: &str = "lambda-runtime-trace-id";
pub const ERROR_TYPE: &str = "lambda-runtime-function-error-type";

/// A request id in the UUID form Lambda uses, unique within one emulator.
pub fn request_id(n: u64) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

pub fn epoch_millis(at: SystemTime) -> u128 {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
}

/// `Lambda-Runtime-Deadline-Ms`: the wall-clock deadline in Unix milliseconds.
pub fn deadline_ms(now: SystemTime, timeout: Duration) -> String {
    epoch_millis(now + timeout).to_string()
}

/// An X-Ray trace header, unsampled: `Root=1-<epoch hex>-<24 hex>;Parent=<16 hex>;Sampled=0`.
pub fn trace_id(now: SystemTime, n: u64) -> String {
    let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    format!("Root=1-{secs:08x}-{n:024x};Parent={n:016x};Sampled=0")
}

/// The Runtime API's error body: `{"errorMessage": ..., "errorType": ...}`.
pub fn error_body(error_type: &str, message: &str) -> String {
    serde_json::json!({"errorMessage": message, "errorType": error_type}).to_string()
}
