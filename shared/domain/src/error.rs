//! Every refusal the domain gives, as plain data. Which HTTP status, code and body each
//! one gets is the inbound layer's business (`shared::inbound::error::ApiError`).

use chrono::{DateTime, Utc};

use crate::ports::StoreError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    Malformed(String),
    #[error("a valid Idempotency-Key header (1 to 64 characters of A-Z a-z 0-9 - _) is required")]
    IdempotencyKeyRequired,
    #[error("authentication required")]
    Unauthenticated,
    #[error("the user's real-name verification is not complete")]
    NotRealNameVerified,
    #[error("the service is not yet available in the user's region")]
    RegionNotInPilot,
    #[error("not found")]
    NotFound,
    /// A dispute names a card the report does not have.
    #[error("the report has no card with this card_id")]
    CardNotFound,
    /// A dispute of a card whose bank gave no reference for it (decision 157).
    #[error("this card's bank does not take disputes through the service; call the bank")]
    DisputeNotSupported,
    #[error("a card query is already in progress")]
    QueryInProgress,
    #[error("the report is not ready yet")]
    ReportNotReady,
    #[error("this inquiry has already been answered")]
    AlreadyAnswered,
    #[error("the report has expired and was deleted")]
    ReportExpired { query: serde_json::Value },
    #[error("the report was deleted at the user's request")]
    ReportDeleted { query: serde_json::Value },
    #[error("{0}")]
    InvalidBanks(String),
    #[error("the current user agreement must be accepted")]
    ConsentRequired,
    /// A report page's cursor that is not this service's for this user's report.
    #[error("the cursor is not valid for this report")]
    InvalidCursor,
    /// A report page's cursor whose view authorization has ended.
    #[error("the cursor has expired; verify again to view the report")]
    CursorExpired,
    #[error("the SMS verification failed")]
    VerificationFailed,
    #[error("the face verification failed")]
    FaceVerificationFailed,
    #[error("the payment password is wrong")]
    PaymentPasswordInvalid,
    #[error("this Idempotency-Key was used for a different request")]
    IdempotencyKeyReused,
    #[error("a request with this Idempotency-Key is still in progress; retry after a moment")]
    IdempotencyInProgress { retry_after_secs: u64 },
    #[error("the payload holds what looks like a full card number")]
    CardNumberRejected,
    #[error("the payment password is locked")]
    PaymentPasswordLocked { until: DateTime<Utc> },
    #[error("a new query is allowed from next_allowed_at")]
    CooldownActive { next_allowed_at: DateTime<Utc> },
    #[error("too many requests")]
    TooManyRequests { retry_after_secs: u64 },
    /// The SMS channel cannot take the message now (its rate is used up, or SNS
    /// throttled it); nothing was sent and the user's SMS limits are as they were.
    #[error("SMS cannot be sent right now; try again after retry_after_seconds")]
    SmsUnavailable { retry_after_secs: u64 },
    #[error("a dependency is unavailable, try again later")]
    Unavailable(String),
    /// Detail is for logs only; the client sees a generic message.
    #[error("internal error")]
    Internal(String),
}

impl ServiceError {
    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::Internal(e.to_string())
    }
}

/// A store that cannot be reached is worth a retry (503); anything else it says is ours
/// to fix (500), with the detail kept for the log.
impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => Self::Unavailable(m),
            other => Self::internal(other),
        }
    }
}
