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

/// One message: send the dispute of the query's card `card_id` to `bank`, as its send
/// `attempt` (decision 157). Grouped by bank with the bank's inquiries, so a dispute
/// goes through the bank's gate and counts toward its limits. De-duplicated by
/// `dispute.<dispute_id>.<attempt>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisputeSend {
    pub dispute_id: String,
    pub query_id: QueryId,
    pub card_id: String,
    pub bank: BankCode,
    pub attempt: u32,
}

impl DisputeSend {
    pub fn dedup_id(&self) -> String {
        format!("dispute.{}.{}", self.dispute_id, self.attempt)
    }

    pub fn body(&self) -> String {
        serde_json::to_string(self).expect("a dispute send serializes")
    }
}

/// A message of the inquiry queue: a leg's attempt (the bodies queued before disputes
/// existed parse as before) or a dispute's send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueMessage {
    Leg(LegAttempt),
    Dispute(DisputeSend),
}

impl QueueMessage {
    pub fn bank(&self) -> &BankCode {
        match self {
            QueueMessage::Leg(a) => &a.bank,
            QueueMessage::Dispute(d) => &d.bank,
        }
    }

    pub fn group(&self) -> &str {
        self.bank().as_str()
    }

    pub fn dedup_id(&self) -> String {
        match self {
            QueueMessage::Leg(a) => a.dedup_id(),
            QueueMessage::Dispute(d) => d.dedup_id(),
        }
    }

    pub fn body(&self) -> String {
        match self {
            QueueMessage::Leg(a) => a.body(),
            QueueMessage::Dispute(d) => d.body(),
        }
    }

    /// Either kind of body; `None` for anything else (never echoed).
    pub fn parse(body: &str) -> Option<Self> {
        LegAttempt::parse(body).map(QueueMessage::Leg).or_else(|| {
            serde_json::from_str::<DisputeSend>(body)
                .ok()
                .map(QueueMessage::Dispute)
        })
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

    /// Queues dispute sends (as [`Self::enqueue`] does attempts). Queues that carry no
    /// disputes (test doubles) refuse.
    async fn enqueue_disputes(&self, sends: &[DisputeSend]) -> Result<(), QueueError> {
        let _ = sends;
        Err(QueueError::Unavailable(
            "this queue takes no disputes".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_kinds_parse_and_a_leg_attempt_parses_as_before() {
        let leg = r#"{"query_id":"01JDQ6Z7X8Y9ABCDEFGHJKMNPQ","bank":"ICBC","attempt":2}"#;
        assert!(matches!(QueueMessage::parse(leg), Some(QueueMessage::Leg(a)) if a.attempt == 2));
        let d = DisputeSend {
            dispute_id: "01JDQ6Z7X8Y9ABCDEFGHJKMNPR".into(),
            query_id: QueryId::parse("01JDQ6Z7X8Y9ABCDEFGHJKMNPQ").unwrap(),
            card_id: "ICBC-1".into(),
            bank: serde_json::from_value("ICBC".into()).unwrap(),
            attempt: 1,
        };
        let m = QueueMessage::parse(&d.body()).unwrap();
        assert_eq!(m, QueueMessage::Dispute(d.clone()));
        assert_eq!(m.group(), "ICBC");
        assert_eq!(m.dedup_id(), "dispute.01JDQ6Z7X8Y9ABCDEFGHJKMNPR.1");
        assert_eq!(QueueMessage::parse(r#"{"attempt":1}"#), None);
    }
}
