//! What the service stores, in domain terms. Adapters map these to items.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::model::bank::BankCode;
use crate::model::ids::{QueryId, UserId, VerificationId};
use crate::model::timestamp::rfc3339;
use crate::security::sms_code::Purpose;

/// Per-user mutable state, written with optimistic concurrency (`version`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserState {
    /// 0 when never written.
    #[serde(default)]
    pub version: u64,
    /// The query holding the one-active-query lock.
    #[serde(default)]
    pub active_query_id: Option<QueryId>,
    /// 7 days after the most recent report was generated.
    #[serde(default, with = "rfc3339::option")]
    pub next_allowed_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub password_failures: u32,
    #[serde(default, with = "rfc3339::option")]
    pub password_locked_until: Option<OffsetDateTime>,
    #[serde(default, with = "rfc3339::option")]
    pub last_sms_at: Option<OffsetDateTime>,
    /// China Standard Time calendar day (`2026-11-28`) that `sms_count` counts.
    #[serde(default)]
    pub sms_day: Option<String>,
    #[serde(default)]
    pub sms_count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerificationRecord {
    pub verification_id: VerificationId,
    pub user_id: UserId,
    pub purpose: Purpose,
    /// Keyed hash of the code; the code itself is never stored.
    pub code_hash: String,
    #[serde(with = "rfc3339")]
    pub expires_at: OffsetDateTime,
    pub attempts: u32,
    pub used: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum QueryStatus {
    Pending,
    Ready,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryRecord {
    pub query_id: QueryId,
    pub user_id: UserId,
    pub status: QueryStatus,
    #[serde(with = "rfc3339")]
    pub submitted_at: OffsetDateTime,
    #[serde(with = "rfc3339")]
    pub report_due_by: OffsetDateTime,
    pub banks: Vec<BankCode>,
    #[serde(default, with = "rfc3339::option")]
    pub report_generated_at: Option<OffsetDateTime>,
    #[serde(default, with = "rfc3339::option")]
    pub report_expires_at: Option<OffsetDateTime>,
    #[serde(default, with = "rfc3339::option")]
    pub last_viewed_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentRecord {
    pub query_id: QueryId,
    pub user_id: UserId,
    pub agreement_version: String,
    #[serde(with = "rfc3339")]
    pub accepted_at: OffsetDateTime,
    pub source_ip: Option<String>,
}

/// The first response to a submission, replayed for a retry with the same key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    pub user_id: UserId,
    pub key: String,
    /// Keyed fingerprint of the request body (it holds secrets: never a plain hash).
    pub request_fingerprint: String,
    pub status: u16,
    pub response_body: String,
    #[serde(with = "rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// Everything one accepted submission writes, all or nothing.
#[derive(Debug, Clone)]
pub struct Submission {
    pub query: QueryRecord,
    pub consent: ConsentRecord,
    pub idempotency: IdempotencyRecord,
    /// The new user state (active query lock taken); written only if the stored state
    /// still has `expected_state_version`.
    pub state: UserState,
    pub expected_state_version: u64,
    /// Consumed: must be unused and not burnt.
    pub verification_id: VerificationId,
    pub max_code_attempts: u32,
    /// Recorded: must never have been seen.
    pub face_nonce: String,
    pub face_nonce_expires_at: OffsetDateTime,
}

/// Why a submission's all-or-nothing write was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitConflict {
    #[error("the user state changed since it was read")]
    StateChanged,
    #[error("the idempotency key is taken")]
    IdempotencyKeyTaken,
    #[error("the verification code is used or burnt")]
    VerificationUsed,
    #[error("the face token nonce was seen before")]
    FaceNonceUsed,
}
