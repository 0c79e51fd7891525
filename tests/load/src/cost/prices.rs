//! The AWS list prices `cost-bench` multiplies by: us-east-1 (the template names no
//! region, so the cheapest common one), on demand, free tiers left out. Each says the
//! price list it comes from; change them here only.

/// When these were last compared with the pricing pages.
pub const CHECKED: &str = "2026-12-01";

/// Lambda, arm64, first 7.5 billion GB-s a month (price list since 2021-09-29, the
/// Graviton2 launch; x86_64 is $0.0000166667).
pub const LAMBDA_ARM64_PER_GB_SECOND: f64 = 0.000_013_333_4;
/// Lambda requests: $0.20 per million, either architecture.
pub const LAMBDA_PER_REQUEST: f64 = 0.20 / 1e6;
/// The memory the issue prices at (the template gives most functions more; both are shown).
pub const LAMBDA_BASE_MEMORY_MB: f64 = 128.0;

/// DynamoDB on demand, Standard table class: $0.625 per million write request units and
/// $0.125 per million read request units (since the 2024-11-01 halving).
pub const DYNAMODB_PER_WRU: f64 = 0.625 / 1e6;
pub const DYNAMODB_PER_RRU: f64 = 0.125 / 1e6;

/// SQS: $0.50 per million FIFO requests, $0.40 per million standard (each 64 KiB chunk
/// of a payload is one request).
pub const SQS_FIFO_PER_REQUEST: f64 = 0.50 / 1e6;

/// SMS through SNS is priced per destination country and per message part (the AWS End
/// User Messaging SMS pricing page, "China" row; +86 also needs a registered sender ID).
/// That row could not be read from where this was written: the figure is an estimate
/// of its order (a few US cents) and is printed as such; `--sms-price` takes the
/// current quote. The benchmark counts parts from the texts the emulator received.
pub const SMS_CHINA_PER_MESSAGE_ESTIMATE: f64 = 0.03;
