//! The one mapping from a refusal to the contract's answer: status, stable code, the
//! error body and its headers (Retry-After, Allow).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::response::json;
use crate::error::ServiceError;
use crate::model::timestamp;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A refusal of the domain.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// The request is not one the contract describes (its body, mostly).
    #[error("{0}")]
    Malformed(String),
    /// No route of this function has the path.
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed { allow: &'static str },
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
}

impl ApiError {
    pub fn status(&self) -> u16 {
        use ServiceError::*;
        let e = match self {
            ApiError::Malformed(_) => return 400,
            ApiError::NotFound => return 404,
            ApiError::MethodNotAllowed { .. } => return 405,
            ApiError::PayloadTooLarge { .. } => return 413,
            ApiError::UnsupportedMediaType => return 415,
            ApiError::Service(e) => e,
        };
        match e {
            Malformed(_) | IdempotencyKeyRequired | InvalidCursor => 400,
            Unauthenticated => 401,
            NotRealNameVerified | RegionNotInPilot | CursorExpired => 403,
            NotFound | CardNotFound => 404,
            QueryInProgress
            | ReportNotReady
            | AlreadyAnswered
            | DisputeNotSupported
            | IdempotencyInProgress { .. } => 409,
            ReportExpired { .. } | ReportDeleted { .. } => 410,
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
            Unavailable(_) | SmsUnavailable { .. } => 503,
        }
    }

    pub fn code(&self) -> &'static str {
        use ServiceError::*;
        let e = match self {
            ApiError::Malformed(_) => return "MALFORMED_REQUEST",
            ApiError::NotFound => return "NOT_FOUND",
            ApiError::MethodNotAllowed { .. } => return "METHOD_NOT_ALLOWED",
            ApiError::PayloadTooLarge { .. } => return "PAYLOAD_TOO_LARGE",
            ApiError::UnsupportedMediaType => return "UNSUPPORTED_MEDIA_TYPE",
            ApiError::Service(e) => e,
        };
        match e {
            Malformed(_) => "MALFORMED_REQUEST",
            IdempotencyKeyRequired => "IDEMPOTENCY_KEY_REQUIRED",
            Unauthenticated => "UNAUTHENTICATED",
            NotRealNameVerified => "NOT_REAL_NAME_VERIFIED",
            RegionNotInPilot => "REGION_NOT_IN_PILOT",
            NotFound => "NOT_FOUND",
            CardNotFound => "CARD_NOT_FOUND",
            DisputeNotSupported => "DISPUTE_NOT_SUPPORTED",
            QueryInProgress => "QUERY_IN_PROGRESS",
            ReportNotReady => "REPORT_NOT_READY",
            AlreadyAnswered => "ALREADY_ANSWERED",
            ReportExpired { .. } => "REPORT_EXPIRED",
            ReportDeleted { .. } => "REPORT_DELETED",
            InvalidBanks(_) => "INVALID_BANKS",
            ConsentRequired => "CONSENT_REQUIRED",
            InvalidCursor => "INVALID_CURSOR",
            CursorExpired => "CURSOR_EXPIRED",
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
            SmsUnavailable { .. } => "SMS_UNAVAILABLE",
        }
    }

    /// The JSON error body of the contract.
    pub fn body(&self) -> serde_json::Value {
        let message = match self {
            // Internal detail stays in the logs.
            ApiError::Service(ServiceError::Unavailable(_)) => {
                "a dependency is unavailable, try again later".into()
            }
            other => other.to_string(),
        };
        let mut error = serde_json::json!({ "code": self.code(), "message": message });
        match self {
            ApiError::Service(ServiceError::CooldownActive { next_allowed_at }) => {
                error["next_allowed_at"] = timestamp::format(*next_allowed_at).into();
            }
            ApiError::Service(
                ServiceError::TooManyRequests { retry_after_secs }
                | ServiceError::IdempotencyInProgress { retry_after_secs }
                | ServiceError::SmsUnavailable { retry_after_secs },
            ) => {
                error["retry_after_seconds"] = (*retry_after_secs).into();
            }
            ApiError::Service(ServiceError::PaymentPasswordLocked { until }) => {
                error["locked_until"] = timestamp::format(*until).into();
            }
            _ => {}
        }
        let mut body = serde_json::json!({ "error": error });
        if let ApiError::Service(
            ServiceError::ReportExpired { query } | ServiceError::ReportDeleted { query },
        ) = self
        {
            body["query"] = query.clone();
        }
        body
    }

    fn log(&self) {
        match self {
            ApiError::Service(ServiceError::Internal(detail)) => {
                tracing::error!(error = %detail, "internal error")
            }
            ApiError::Service(ServiceError::Unavailable(detail)) => {
                tracing::warn!(error = %detail, "dependency unavailable")
            }
            other => tracing::info!(
                status = other.status(),
                code = other.code(),
                "request refused"
            ),
        }
    }
}

/// Server-side detail goes to the log, not the client.
impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.log();
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = json(status, &self.body());
        let headers = resp.headers_mut();
        match self {
            ApiError::Service(
                ServiceError::TooManyRequests { retry_after_secs }
                | ServiceError::IdempotencyInProgress { retry_after_secs }
                | ServiceError::SmsUnavailable { retry_after_secs },
            ) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            ApiError::MethodNotAllowed { allow } => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            _ => {}
        }
        resp
    }
}
