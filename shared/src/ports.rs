//! Ports: what the domain needs from the outside world. Each has an AWS adapter and an
//! in-memory one (`adapters::memory`) for unit tests.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::model::ids::{UserId, VerificationId};
use crate::model::phone::PhoneNumber;
use crate::model::profile::UserProfile;
use crate::records::{
    IdempotencyRecord, Submission, SubmitConflict, UserState, VerificationRecord,
};

#[derive(Debug, thiserror::Error)]
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

    /// Counts one wrong code against an unused verification.
    async fn record_code_failure(
        &self,
        user: &UserId,
        id: &VerificationId,
    ) -> Result<(), StoreError>;

    async fn idempotency(
        &self,
        user: &UserId,
        key: &str,
        now: OffsetDateTime,
    ) -> Result<Option<IdempotencyRecord>, StoreError>;

    /// The all-or-nothing write of an accepted submission.
    async fn submit(&self, submission: &Submission) -> Result<(), SubmitError>;
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("SMS not sent: {0}")]
    Failed(String),
}

/// Sends SMS to the user's registered phone.
#[async_trait]
pub trait SmsSender: Send + Sync {
    async fn send_sms(&self, to: &PhoneNumber, text: &str) -> Result<(), NotifyError>;
}
