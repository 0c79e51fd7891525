//! Every refusal the service gives, and the one mapping from it to an HTTP status and a
//! stable error code.

use time::OffsetDateTime;

use crate::model::timestamp;

#[derive(Debug, thiserror::Error)]
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
    #[error("method not allowed")]
    MethodNotAllowed { allow: &'static str },
    #[error("a card query is already in progress")]
    QueryInProgress,
    #[error("the report is not ready yet")]
    ReportNotReady,
    #[error("this inquiry has already been answered")]
    AlreadyAnswered,
    #[error("the report has expired and was deleted")]
    ReportExpired { query: serde_json::Value },
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    #[error("{0}")]
    InvalidBanks(String),
    #[error("the current user agreement must be accepted")]
    ConsentRequired,
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
    PaymentPasswordLocked { until: OffsetDateTime },
    #[error("a new query is allowed from next_allowed_at")]
    CooldownActive { next_allowed_at: OffsetDateTime },
    #[error("too many requests")]
    TooManyRequests { retry_after_secs: u64 },
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

    pub fn status(&self) -> u16 {
        use ServiceError::*;
        match self {
            Malformed(_) | IdempotencyKeyRequired => 400,
            Unauthenticated => 401,
            NotRealNameVerified | RegionNotInPilot => 403,
            NotFound => 404,
            MethodNotAllowed { .. } => 405,
            QueryInProgress | ReportNotReady | AlreadyAnswered | IdempotencyInProgress { .. } => {
                409
            }
            ReportExpired { .. } => 410,
            PayloadTooLarge { .. } => 413,
            UnsupportedMediaType => 415,
            InvalidBanks(_)
            | ConsentRequired
            | VerificationFailed
            | FaceVerificationFailed
            | PaymentPasswordInvalid
            | IdempotencyKeyReused
            | CardNumberRejected => 422,
            PaymentPasswordLocked { .. } => 423,
            CooldownActive { .. } | TooManyRequests { .. } => 429,
            Internal(_) => 500,
            Unavailable(_) => 503,
        }
    }

    pub fn code(&self) -> &'static str {
        use ServiceError::*;
        match self {
            Malformed(_) => "MALFORMED_REQUEST",
            IdempotencyKeyRequired => "IDEMPOTENCY_KEY_REQUIRED",
            Unauthenticated => "UNAUTHENTICATED",
            NotRealNameVerified => "NOT_REAL_NAME_VERIFIED",
            RegionNotInPilot => "REGION_NOT_IN_PILOT",
            NotFound => "NOT_FOUND",
            MethodNotAllowed { .. } => "METHOD_NOT_ALLOWED",
            QueryInProgress => "QUERY_IN_PROGRESS",
            ReportNotReady => "REPORT_NOT_READY",
            AlreadyAnswered => "ALREADY_ANSWERED",
            ReportExpired { .. } => "REPORT_EXPIRED",
            PayloadTooLarge { .. } => "PAYLOAD_TOO_LARGE",
            UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            InvalidBanks(_) => "INVALID_BANKS",
            ConsentRequired => "CONSENT_REQUIRED",
            VerificationFailed => "VERIFICATION_FAILED",
            FaceVerificationFailed => "FACE_VERIFICATION_FAILED",
            PaymentPasswordInvalid => "PAYMENT_PASSWORD_INVALID",
            IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            IdempotencyInProgress { .. } => "IDEMPOTENCY_IN_PROGRESS",
            CardNumberRejected => "CARD_NUMBER_REJECTED",
            PaymentPasswordLocked { .. } => "PAYMENT_PASSWORD_LOCKED",
            CooldownActive { .. } => "COOLDOWN_ACTIVE",
            TooManyRequests { .. } => "TOO_MANY_REQUESTS",
            Internal(_) => "INTERNAL",
            Unavailable(_) => "SERVICE_UNAVAILABLE",
        }
    }

    /// The JSON error body of the contract.
    pub fn body(&self) -> serde_json::Value {
        let message = match self {
            // Internal detail stays in the logs.
            ServiceError::Unavailable(_) => "a dependency is unavailable, try again later".into(),
            other => other.to_string(),
        };
        let mut error = serde_json::json!({ "code": self.code(), "message": message });
        match self {
            ServiceError::CooldownActive { next_allowed_at } => {
                error["next_allowed_at"] = timestamp::format(*next_allowed_at).into();
            }
            ServiceError::TooManyRequests { retry_after_secs }
            | ServiceError::IdempotencyInProgress { retry_after_secs } => {
                error["retry_after_seconds"] = (*retry_after_secs).into();
            }
            ServiceError::PaymentPasswordLocked { until } => {
                error["locked_until"] = timestamp::format(*until).into();
            }
            _ => {}
        }
        let mut body = serde_json::json!({ "error": error });
        if let ServiceError::ReportExpired { query } = self {
            body["query"] = query.clone();
        }
        body
    }
}
