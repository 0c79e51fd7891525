//! What the service stores, in domain terms. Adapters map these to items.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::bank::BankCode;
use crate::model::ids::{QueryId, UserId, VerificationId};
use crate::model::purpose::Purpose;
use crate::model::sealed::Sealed;
use crate::model::step_up::StepUpMethod;
use crate::model::timestamp::rfc3339;

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
    pub next_allowed_at: Option<DateTime<Utc>>,
    /// Payment-password comparisons reserved since the last success or lock (each
    /// counted before it is made: see `rules::password::reserve_password_slot`).
    #[serde(default)]
    pub password_failures: u32,
    #[serde(default, with = "rfc3339::option")]
    pub password_locked_until: Option<DateTime<Utc>>,
    /// The reservation holding the last comparison slot: the lock is set when that slot
    /// is taken and stays unless this very comparison succeeds.
    #[serde(default)]
    pub password_lock_holder: Option<String>,
    #[serde(default, with = "rfc3339::option")]
    pub last_sms_at: Option<DateTime<Utc>>,
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
    pub expires_at: DateTime<Utc>,
    pub attempts: u32,
    pub used: bool,
}

/// Where a query is in its life. The API's `status`/`report_status` derive from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum QueryPhase {
    /// Legs out at the banks; answers coming in.
    Collecting,
    /// Every leg settled or the deadline passed: the report is being built.
    Aggregating,
    /// The report exists (until `report_expires_at`).
    Reported,
    /// The report was deleted after its 7 days; only this record remains.
    Expired,
    /// The user deleted the report (and every leg) before its 7 days; only this record
    /// remains. Final: expiry never turns it into `Expired`.
    Deleted,
    /// No report could be built.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryRecord {
    pub query_id: QueryId,
    pub user_id: UserId,
    pub phase: QueryPhase,
    #[serde(with = "rfc3339")]
    pub submitted_at: DateTime<Utc>,
    #[serde(with = "rfc3339")]
    pub report_due_by: DateTime<Utc>,
    /// Banks are waited for until then; the report follows by `report_due_by`.
    #[serde(with = "rfc3339")]
    pub collect_until: DateTime<Utc>,
    pub banks: Vec<BankCode>,
    #[serde(default, with = "rfc3339::option")]
    pub report_generated_at: Option<DateTime<Utc>>,
    #[serde(default, with = "rfc3339::option")]
    pub report_expires_at: Option<DateTime<Utc>>,
    #[serde(default, with = "rfc3339::option")]
    pub last_viewed_at: Option<DateTime<Utc>>,
    /// When the user deleted the report (phase `Deleted`).
    #[serde(default, with = "rfc3339::option")]
    pub report_deleted_at: Option<DateTime<Utc>>,
    /// The latest views of the report, oldest first (`rules::view_log`: at most 50).
    #[serde(default)]
    pub views: Vec<ReportView>,
    /// Every view ever recorded, also those the log no longer holds; the version the
    /// log is written against.
    #[serde(default)]
    pub views_total: u64,
    /// When the "report ready" SMS went out.
    #[serde(default, with = "rfc3339::option")]
    pub notified_at: Option<DateTime<Utc>>,
}

/// One time the report was shown: when, and how the person proved it was them. No
/// card data, nothing of the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportView {
    #[serde(with = "rfc3339")]
    pub at: DateTime<Utc>,
    pub method: StepUpMethod,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentRecord {
    pub query_id: QueryId,
    pub user_id: UserId,
    pub agreement_version: String,
    #[serde(with = "rfc3339")]
    pub accepted_at: DateTime<Utc>,
    pub source_ip: Option<String>,
}

/// A user's idempotency key: claimed (in progress) before the request is worked on, then
/// completed with the first response, which a retry with the same key gets again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    pub user_id: UserId,
    pub key: String,
    /// Keyed fingerprint of the request body (it holds secrets: never a plain hash).
    pub request_fingerprint: String,
    /// 0 while in progress.
    #[serde(default)]
    pub status: u16,
    #[serde(default)]
    pub response_body: String,
    #[serde(with = "rfc3339")]
    pub expires_at: DateTime<Utc>,
    /// True from the claim until the submission completes (or the claim is released).
    #[serde(default)]
    pub in_progress: bool,
    /// The claim's random token: only its holder may complete or release it.
    #[serde(default)]
    pub owner: Option<String>,
    /// An in-progress claim older than this is taken to have crashed and may be taken
    /// over.
    #[serde(default, with = "rfc3339::option")]
    pub lease_until: Option<DateTime<Utc>>,
}

/// What claiming an idempotency key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyClaim {
    /// The key is this request's now (fresh, or a crashed claim taken over).
    Claimed,
    /// Another request holds it (in progress) or completed it: here is its record.
    Taken(IdempotencyRecord),
}

/// A payment-password comparison slot, reserved before the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordSlot {
    /// One of the first `max - 1` slots.
    Ordinary,
    /// The last slot: the lock is already set, held by this reservation.
    Last,
    /// No slot: the password is locked.
    Locked { until: DateTime<Utc> },
    /// No slot now: the last one is taken and its comparison still running (it either
    /// locks the password or frees the slots).
    Busy,
}

/// One bank's part of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LegState {
    /// Not yet sent, or to be sent again at `next_attempt_at`.
    Pending,
    /// The bank accepted the inquiry (202) and will call back.
    Accepted,
    /// The bank answered (FOUND or NONE).
    Answered,
    /// The bank answered ERROR, refused the inquiry, or sent an answer we must refuse.
    Failed,
    /// No answer by the deadline.
    NoResponse,
}

impl LegState {
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            LegState::Answered | LegState::Failed | LegState::NoResponse
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegRecord {
    pub query_id: QueryId,
    pub bank: BankCode,
    /// Sent with every attempt: the bank's key for de-duplicating retries.
    pub inquiry_id: String,
    pub state: LegState,
    pub attempts: u32,
    #[serde(default, with = "rfc3339::option")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Why the leg failed (stable code, for operators), if it did.
    #[serde(default)]
    pub failure: Option<String>,
    /// The bank's cards, sealed to the report key when the leg settled (see
    /// `report::crypto`): one envelope for the whole answer, so neither this item nor
    /// its stream records or backups hold a card in clear. Empty until the leg is
    /// answered, and again once the report holds the envelope.
    #[serde(default, rename = "sealed_cards")]
    pub cards: Vec<Sealed>,
    /// SHA-256 of the accepted answer body: a byte-identical repeat is a success.
    #[serde(default)]
    pub answer_digest: Option<String>,
    #[serde(default, with = "rfc3339::option")]
    pub settled_at: Option<DateTime<Utc>>,
}

impl LegRecord {
    /// A leg not yet sent, with a fresh inquiry id (the bank's de-duplication key, fixed
    /// once the leg is stored: a second creation of the same leg never replaces it).
    pub fn pending(query_id: QueryId, bank: BankCode) -> Self {
        Self {
            query_id,
            bank,
            inquiry_id: ulid::Ulid::generate().to_string(),
            state: LegState::Pending,
            attempts: 0,
            next_attempt_at: None,
            failure: None,
            cards: Vec::new(),
            answer_digest: None,
            settled_at: None,
        }
    }
}

/// Everything one accepted submission writes, all or nothing. The legs are not part of
/// it: the query record lists its banks, and fan-out creates their legs
/// (`QueryStore::ensure_legs`), so the transaction's size does not grow with the number
/// of banks chosen.
#[derive(Debug, Clone)]
pub struct Submission {
    pub query: QueryRecord,
    pub consent: ConsentRecord,
    /// The completed record; written only while `idempotency.owner` still holds the claim.
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
    pub face_nonce_expires_at: DateTime<Utc>,
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

/// A report as stored: sealed (see `report::crypto`), with its lifetime. The envelope is
/// bound to `query_id`, `user_id`, `generated_at`, `expires_at` and its key id; it holds
/// each bank's outcome and sealed answer (`report::body::ReportContent`), opened only
/// by view-report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredReport {
    pub query_id: QueryId,
    pub user_id: UserId,
    pub sealed: Sealed,
    #[serde(with = "rfc3339")]
    pub generated_at: DateTime<Utc>,
    #[serde(with = "rfc3339")]
    pub expires_at: DateTime<Utc>,
}

/// Everything that publishing a report writes, all or nothing. (The legs' raw answers
/// are cleared by the notice step, `ReportStore::clear_answers`.)
#[derive(Debug, Clone)]
pub struct Publication {
    pub report: StoredReport,
    /// The user's state with the active-query lock released and the cooldown set;
    /// written only if the stored version is still `expected_state_version`.
    pub state: UserState,
    pub expected_state_version: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishOutcome {
    Published,
    /// The query already has its report (or was closed otherwise): nothing written.
    AlreadyClosed,
    /// The user's state changed since it was read: read again and retry.
    StateChanged,
}

/// One entry of the sweeper's due index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DueWork {
    /// A query's 24-hour deadline.
    Deadline(QueryId),
    /// A leg due to be sent again.
    Retry(QueryId, BankCode),
    /// A report past its 7 days.
    Expiry(QueryId),
    /// A report whose SMS notice is not confirmed sent.
    Notify(QueryId),
    /// A dispute still to be sent to its bank (the query and the card's `card_id`).
    Dispute(QueryId, String),
}

/// Where a dispute is (decision 157).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DisputeStatus {
    /// Recorded; being sent to the bank (again, after a transient failure) until it
    /// acknowledges or the give-up time passes.
    Sent,
    /// The bank opened a case (`case_id`).
    Acknowledged,
    /// The bank refused it for good, or it was not acknowledged in time.
    Failed,
}

/// A person's dispute of one reported card ("this card is not mine"): one per card of a
/// report, kept after the report is gone. Card data is the masked card only; the
/// bank's opaque `card_ref` is kept only while the dispute is still to be sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisputeRecord {
    pub dispute_id: String,
    pub query_id: QueryId,
    pub user_id: UserId,
    /// The card's id in the report (`<BANK>-<n>`), unique within it.
    pub card_id: String,
    pub bank: BankCode,
    /// The inquiry whose answer named the card.
    pub inquiry_id: String,
    pub card: crate::model::card::MaskedCard,
    /// The bank's reference of the card, until the dispute is final.
    #[serde(default)]
    pub card_ref: Option<crate::model::card::CardRef>,
    pub status: DisputeStatus,
    #[serde(with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    /// Sends claimed so far.
    #[serde(default)]
    pub attempts: u32,
    /// When the next send is due (the sweeper's due index); `None` once final.
    #[serde(default, with = "rfc3339::option")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub case_id: Option<String>,
    #[serde(default, with = "rfc3339::option")]
    pub acknowledged_at: Option<DateTime<Utc>>,
    /// Why it failed (stable code, for operators).
    #[serde(default)]
    pub failure: Option<String>,
    #[serde(default, with = "rfc3339::option")]
    pub failed_at: Option<DateTime<Utc>>,
}

/// How a claimed dispute send ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisputeEnd {
    Acknowledged {
        case_id: String,
        at: DateTime<Utc>,
    },
    Failed {
        failure: String,
        at: DateTime<Utc>,
    },
    /// Send again at `at`.
    Retry {
        at: DateTime<Utc>,
    },
}

impl DisputeRecord {
    /// The record after `end` (what the stores write).
    pub fn ended(&self, end: &DisputeEnd) -> Self {
        let mut r = self.clone();
        match end {
            DisputeEnd::Acknowledged { case_id, at } => {
                r.status = DisputeStatus::Acknowledged;
                r.case_id = Some(case_id.clone());
                r.acknowledged_at = Some(*at);
                r.card_ref = None;
                r.next_attempt_at = None;
            }
            DisputeEnd::Failed { failure, at } => {
                r.status = DisputeStatus::Failed;
                r.failure = Some(failure.clone());
                r.failed_at = Some(*at);
                r.card_ref = None;
                r.next_attempt_at = None;
            }
            DisputeEnd::Retry { at } => r.next_attempt_at = Some(*at),
        }
        r
    }
}
