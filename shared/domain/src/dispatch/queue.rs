//! Port `InquiryQueue`: the SQS FIFO queue between planning a leg's attempt and sending
//! it. One message per leg attempt, grouped by bank (each bank's legs are served in the
//! order they were queued, one batch per bank at a time), de-duplicated by
//! `<query_id>.<bank>.<attempt>` so a planner that runs twice queues an attempt once.
//! Implementations: `shared::adapters::sqs` and `memory::MemoryQueue` (tests).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::model::bank::BankCode;
use crate::model::ids::QueryId;
use crate::ports::StoreError;

/// SQS takes at most this many messages per `SendMessageBatch`.
pub const ENQUEUE_BATCH: usize = 10;

/// One message: make attempt `attempt` (1 = the first send) of the query's leg at `bank`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegAttempt {
    pub query_id: QueryId,
    pub bank: BankCode,
    pub attempt: u32,
}

impl LegAttempt {
    /// The message group: the bank.
    pub fn group(&self) -> &str {
        self.bank.as_str()
    }

    pub fn dedup_id(&self) -> String {
        format!("{}.{}.{}", self.query_id, self.bank, self.attempt)
    }

    pub fn body(&self) -> String {
        serde_json::to_string(self).expect("a leg attempt serializes")
    }

    /// A message body as queued; `None` for anything else (the body is never echoed:
    /// it is not ours to trust).
    pub fn parse(body: &str) -> Option<Self> {
        serde_json::from_str(body).ok()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("inquiry queue unavailable: {0}")]
    Unavailable(String),
}

impl From<QueueError> for StoreError {
    fn from(e: QueueError) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

#[async_trait]
pub trait InquiryQueue: Send + Sync {
    /// Queues `attempts` in their order (batches of [`ENQUEUE_BATCH`]); all or an error
    /// (queuing again is harmless: the de-duplication id absorbs a repeat).
    async fn enqueue(&self, attempts: &[LegAttempt]) -> Result<(), QueueError>;

    /// Hides a received message (by its receipt handle) for `secs` seconds: it comes
    /// back then, and until then its group's later messages wait behind it.
    async fn pause(&self, receipt: &str, secs: i32) -> Result<(), QueueError>;
}
