//! Ports: what the domain needs from the outside world. Each has an AWS adapter in
//! `shared` (metrics: `shared::adapters::emf`) and an in-memory one (`crate::memory`) for
//! tests.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::model::bank::BankCode;
use crate::model::ids::{QueryId, UserId, VerificationId};
use crate::model::phone::PhoneNumber;
use crate::model::profile::UserProfile;
use crate::model::purpose::Purpose;
use crate::model::sealed::Sealed;
use crate::records::{
    DisputeEnd, DisputeRecord, DueWork, IdempotencyClaim, IdempotencyRecord, LegRecord, LegState,
    PasswordSlot, Publication, PublishOutcome, QueryRecord, ReportView, StoredReport, Submission,
    SubmitConflict, UserState, VerificationRecord,
};
pub use crate::rules::password::PasswordPolicy;

// Clone: one failed round trip of a batch read is every entry's error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("the item changed concurrently")]
    Conflict,
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Conflict(#[from] SubmitConflict),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// User profiles (the app's user system's table; read only).
#[async_trait]
pub trait ProfileStore: Send + Sync {
    async fn profile(&self, user: &UserId) -> Result<Option<UserProfile>, StoreError>;

    /// What [`ProfileStore::profile`] reads for each of `users`, in order; a store that
    /// can reads them in one round trip (the sender's batch, decision 148). A profile
    /// that does not parse is its own entry's error; a failed round trip, every entry's.
    async fn profiles(&self, users: &[UserId]) -> Vec<Result<Option<UserProfile>, StoreError>> {
        let mut out = Vec::with_capacity(users.len());
        for u in users {
            out.push(self.profile(u).await);
        }
        out
    }
}

/// State of the submission path.
#[async_trait]
pub trait SubmissionStore: Send + Sync {
    /// The user's state; the default (version 0) if never written.
    async fn user_state(&self, user: &UserId) -> Result<UserState, StoreError>;

    /// Writes `state` (with `version` = `expected_version + 1`) if the stored version is
    /// still `expected_version`; [`StoreError::Conflict`] otherwise.
    async fn put_user_state(
        &self,
        user: &UserId,
        state: &UserState,
        expected_version: u64,
    ) -> Result<(), StoreError>;

    async fn put_verification(&self, record: &VerificationRecord) -> Result<(), StoreError>;

    async fn verification(
        &self,
        user: &UserId,
        id: &VerificationId,
    ) -> Result<Option<VerificationRecord>, StoreError>;

    /// Reserves one comparison of the code before it is made: counts an attempt on an
    /// unused, unexpired verification for `purpose` that has fewer than `max_attempts`,
    /// atomically, and returns the record as counted; `None` (and nothing counted) when
    /// there is no such verification. Whatever the number of parallel callers, at most
    /// `max_attempts` get one.
    async fn reserve_code_attempt(
        &self,
        user: &UserId,
        id: &VerificationId,
        purpose: Purpose,
        now: DateTime<Utc>,
        max_attempts: u32,
    ) -> Result<Option<VerificationRecord>, StoreError>;

    /// Uses up a code whose comparison matched (step-up for viewing): only if still
    /// unused and not over `max_attempts`; `false` if it was not.
    async fn consume_verification(
        &self,
        user: &UserId,
        id: &VerificationId,
        max_attempts: u32,
    ) -> Result<bool, StoreError>;

    /// Reserves one payment-password comparison (see
    /// `rules::password::reserve_password_slot`), atomically. `holder` identifies
    /// this request's reservation. Returns the slot and the user's state as the
    /// reservation left it (or found it, when no slot was given).
    async fn reserve_password_slot(
        &self,
        user: &UserId,
        holder: &str,
        now: DateTime<Utc>,
        policy: &PasswordPolicy,
    ) -> Result<(PasswordSlot, UserState), StoreError>;

    /// The comparison matched but no submission was written (the submission's own
    /// transaction clears the count otherwise): clears the count unless a lock not held
    /// by `holder` is active.
    async fn password_matched(
        &self,
        user: &UserId,
        holder: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// The comparison in the last slot failed: the lock (held by `holder`) now runs from
    /// `now`. Returns when it ends.
    async fn password_failed_last(
        &self,
        user: &UserId,
        holder: &str,
        now: DateTime<Utc>,
        policy: &PasswordPolicy,
    ) -> Result<DateTime<Utc>, StoreError>;

    /// Whether a face-token nonce was used before (a pre-check: the nonce is recorded,
    /// atomically, only by [`Self::consume_face_nonce`] or the submission).
    async fn face_nonce_used(&self, nonce: &str) -> Result<bool, StoreError>;

    /// Records a face-token nonce; `false` if it was seen before.
    async fn consume_face_nonce(
        &self,
        nonce: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// The key's record, unless expired at `now`.
    async fn idempotency(
        &self,
        user: &UserId,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<IdempotencyRecord>, StoreError>;

    /// Claims a key (`claim` is in progress, with its owner and lease): succeeds if the
    /// key is free, expired, or held by a claim whose lease ended before `now`.
    async fn claim_idempotency(
        &self,
        claim: &IdempotencyRecord,
        now: DateTime<Utc>,
    ) -> Result<IdempotencyClaim, StoreError>;

    /// Gives up an in-progress claim (the request was refused): only its owner can.
    async fn release_idempotency(
        &self,
        user: &UserId,
        key: &str,
        owner: &str,
    ) -> Result<(), StoreError>;

    /// The all-or-nothing write of an accepted submission.
    async fn submit(&self, submission: &Submission) -> Result<(), SubmitError>;
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The channel refused for rate (SNS `Throttling`, after the adapter's own retries):
    /// nothing was sent, and the same text may be sent again later.
    #[error("SMS not sent: the SMS channel is throttled")]
    Throttled,
    #[error("SMS not sent: {0}")]
    Failed(String),
}

/// Sends SMS to the user's registered phone.
#[async_trait]
pub trait SmsSender: Send + Sync {
    async fn send_sms(&self, to: &PhoneNumber, text: &str) -> Result<(), NotifyError>;
}

/// The answer of [`SmsAdmission`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// One message may be published now (its permit is taken).
    Go,
    /// The channel's rate is used up; ask again at this instant.
    RetryAt(DateTime<Utc>),
}

/// The SMS channel's rate (`sms_channel.rate_per_second`), shared by every instance of
/// every function that sends SMS: asked once per message, before publishing.
#[async_trait]
pub trait SmsAdmission: Send + Sync {
    async fn admit(&self, now: DateTime<Utc>) -> Result<Admit, StoreError>;
}

/// How a leg ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    pub state: LegState,
    pub failure: Option<String>,
    /// The answer's cards, sealed to the report key (answered legs only).
    pub sealed: Option<Sealed>,
    pub answer_digest: Option<String>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettleOutcome {
    /// This call settled the leg (and counted it on the query).
    Settled,
    /// The leg was settled before; here it is.
    AlreadySettled(LegRecord),
    NoSuchLeg,
    /// The message's nonce was used before: nothing was written.
    NonceReused,
}

/// One entry of [`QueryStore::query_legs`]: the query record and the leg, each if stored.
pub type QueryLegRead = Result<(Option<QueryRecord>, Option<LegRecord>), StoreError>;

/// Queries and their per-bank legs (fan-out, callbacks, sweeper).
#[async_trait]
pub trait QueryStore: Send + Sync {
    async fn query(&self, id: &QueryId) -> Result<Option<QueryRecord>, StoreError>;

    async fn legs(&self, id: &QueryId) -> Result<Vec<LegRecord>, StoreError>;

    async fn leg(&self, id: &QueryId, bank: &BankCode) -> Result<Option<LegRecord>, StoreError>;

    /// For each `(query, bank)` of `keys`, in order, what [`QueryStore::query`] and
    /// [`QueryStore::leg`] read (consistently); a store that can reads them all in one
    /// round trip (the sender's batch, decision 148). A record that does not parse is
    /// its own entry's error; a failed round trip, every entry's.
    async fn query_legs(&self, keys: &[(QueryId, BankCode)]) -> Vec<QueryLegRead> {
        let mut out = Vec::with_capacity(keys.len());
        for (id, bank) in keys {
            out.push(match self.query(id).await {
                Ok(q) => self.leg(id, bank).await.map(|l| (q, l)),
                Err(e) => Err(e),
            });
        }
        out
    }

    /// Creates, `Pending`, each leg of `query.banks` that does not exist yet, in bounded
    /// batches; an existing leg is never touched. Safe to repeat and to run
    /// concurrently: every leg is created once. Returns how many this call created.
    async fn ensure_legs(&self, query: &QueryRecord) -> Result<usize, StoreError>;

    /// Takes attempt `seen_attempts + 1` of a pending leg; `false` when another sender
    /// got there first (or the leg is no longer pending).
    async fn claim_attempt(
        &self,
        id: &QueryId,
        bank: &BankCode,
        seen_attempts: u32,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// After attempt `attempt` failed transiently: try again at `at` (the sweeper finds it
    /// through the due index).
    async fn schedule_retry(
        &self,
        id: &QueryId,
        bank: &BankCode,
        attempt: u32,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// The bank accepted attempt `attempt` and will call back.
    async fn mark_accepted(
        &self,
        id: &QueryId,
        bank: &BankCode,
        attempt: u32,
    ) -> Result<(), StoreError>;

    /// Ends a pending or accepted leg and counts it on the query, atomically. With a
    /// bank nonce, records it in the same write: refused ([`SettleOutcome::NonceReused`])
    /// if seen before, and not consumed if the settle fails.
    async fn settle(
        &self,
        id: &QueryId,
        bank: &BankCode,
        settlement: &Settlement,
        nonce: Option<&BankNonce>,
    ) -> Result<SettleOutcome, StoreError>;
}

/// A bank message's nonce, kept until it could no longer pass the timestamp check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BankNonce {
    pub nonce: String,
    pub expires_at: DateTime<Utc>,
}

/// Reports and their query records (aggregation, viewing, sweeping).
#[async_trait]
pub trait ReportStore: Send + Sync {
    async fn publish(&self, publication: &Publication) -> Result<PublishOutcome, StoreError>;

    async fn report(&self, id: &QueryId) -> Result<Option<StoredReport>, StoreError>;

    /// Takes the right to send the "report ready" SMS: only while none was confirmed sent
    /// and no other claim is younger than `lease`.
    async fn claim_notice(
        &self,
        id: &QueryId,
        now: DateTime<Utc>,
        lease: chrono::TimeDelta,
    ) -> Result<bool, StoreError>;

    async fn notice_sent(&self, id: &QueryId, at: DateTime<Utc>) -> Result<(), StoreError>;

    /// Gives back a notice claim taken at `claimed_at` whose SMS was not sent (the channel
    /// said "later"), so the next sweep may send it without waiting out the lease. Only
    /// that claim, and only while the notice is unsent: a later claim is left alone.
    async fn release_notice(
        &self,
        id: &QueryId,
        claimed_at: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Removes the banks' raw answers (sealed cards, answer digests) from the legs of
    /// `banks`, now that the published report holds them. Idempotent; a leg that is
    /// gone (a deleted report) is skipped.
    async fn clear_answers(&self, id: &QueryId, banks: &[BankCode]) -> Result<(), StoreError>;

    /// Adds `view` to the query's view log (`rules::view_log::with_view`), counts it in
    /// `views_total` and sets `last_viewed_at`; concurrent views are all recorded.
    async fn record_view(&self, id: &QueryId, view: &ReportView) -> Result<(), StoreError>;

    /// The user's query records, newest first.
    async fn user_queries(&self, user: &UserId) -> Result<Vec<QueryRecord>, StoreError>;

    /// Deletes the report and marks its query expired; a query the user deleted stays
    /// `Deleted` (nothing written).
    async fn expire(&self, id: &QueryId) -> Result<(), StoreError>;

    /// The user's deletion: removes the report and every leg of the query and marks it
    /// `Deleted` at `at`, all at once, only while it is `Reported`. `false` (nothing
    /// written) when it was not, e.g. a concurrent deletion or the sweeper's expiry came
    /// first. The user's state (cooldown) is not touched.
    async fn delete_report(&self, id: &QueryId, at: DateTime<Utc>) -> Result<bool, StoreError>;

    /// Timed work due at `now`, at most `limit` entries of each kind.
    async fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<DueWork>, StoreError>;
}

/// What creating a dispute found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisputeCreated {
    /// This call wrote it.
    Created,
    /// The card already has its dispute: here it is (unchanged).
    Exists(Box<DisputeRecord>),
}

/// Disputes of reported cards (decision 157): one per (query, card), kept after the
/// report is gone (neither `ReportStore::delete_report` nor `expire` touches them).
#[async_trait]
pub trait DisputeStore: Send + Sync {
    /// Writes `record` only if its card has no dispute yet; of any number of concurrent
    /// callers for one card exactly one gets `Created`, the others the stored one.
    async fn create_dispute(&self, record: &DisputeRecord) -> Result<DisputeCreated, StoreError>;

    async fn dispute(
        &self,
        query: &QueryId,
        card_id: &str,
    ) -> Result<Option<DisputeRecord>, StoreError>;

    /// The query's disputes, by `card_id`.
    async fn disputes(&self, query: &QueryId) -> Result<Vec<DisputeRecord>, StoreError>;

    /// Takes send `seen_attempts + 1` of a dispute still `Sent`: counts it and moves the
    /// due time to `lease_until` (a crashed send is sent again then); `false` when
    /// another sender got there first or the dispute is final.
    async fn claim_dispute_send(
        &self,
        query: &QueryId,
        card_id: &str,
        seen_attempts: u32,
        lease_until: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Records how send `attempt` ended, only while the dispute is `Sent` at that
    /// attempt; `false` (nothing written) otherwise.
    async fn end_dispute_send(
        &self,
        query: &QueryId,
        card_id: &str,
        attempt: u32,
        end: &DisputeEnd,
    ) -> Result<bool, StoreError>;
}

/// An operator metric: what the alarms watch (`infra/template.yaml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// From a query's submission to its published report (the late-report alarm).
    SubmitToReportLatency(chrono::TimeDelta),
    /// Banks whose circuit is open or half-open (their legs wait), as the sweeper
    /// found them.
    OpenCircuits(u32),
}

/// Where operator metrics go (CloudWatch in AWS). Infallible on purpose: a metric that
/// cannot be written must not fail the work it measures.
pub trait Metrics: Send + Sync {
    /// `metric` as observed at `at` (the injected clock's time).
    fn emit(&self, metric: Metric, at: DateTime<Utc>);
}
