//! The view-report function: `GET /v1/card-queries`, `GET /v1/card-queries/{query_id}`,
//! `POST /v1/card-queries/{query_id}/report` and `DELETE` of it (step-up every time),
//! `POST /v1/card-queries/{query_id}/disputes` (dispute a card, step-up) and `GET` of
//! it (the query's disputes: decision 157).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::error::ApiError;
use super::extract::{Caller, JsonBody, Param};
use super::response::Json;
use super::{authenticated, finish, limited, refuse_other_methods, Authenticates};
use crate::report::dispute::Disputed;
use crate::report::view::{CodeInput, ReportAccess, StepUp, ViewService};
use crate::rules::dispute::is_card_id;
use crate::security::app_jwt::AppAuthenticator;

pub struct ViewApi {
    pub service: ViewService,
    pub auth: AppAuthenticator,
}

impl Authenticates for ViewApi {
    fn authenticator(&self) -> &AppAuthenticator {
        &self.auth
    }

    fn now(&self) -> DateTime<Utc> {
        self.service.now()
    }
}

type Api = State<Arc<ViewApi>>;

const QUERIES: &str = "/v1/card-queries";
const QUERY: &str = "/v1/card-queries/{query_id}";
const REPORT: &str = "/v1/card-queries/{query_id}/report";
const DISPUTES: &str = "/v1/card-queries/{query_id}/disputes";

pub fn router(api: Arc<ViewApi>) -> Router {
    let routes = Router::new()
        .route(QUERIES, get(list))
        .route(QUERY, get(detail))
        .route(REPORT, limited(post(report).delete(delete_report)))
        .route(DISPUTES, limited(post(dispute).get(disputes)));
    let routes = authenticated(routes, api.clone());
    // POST /v1/card-queries is the submit-query function's.
    let routes = refuse_other_methods(routes, QUERIES, "GET, POST");
    let routes = refuse_other_methods(routes, QUERY, "GET");
    let routes = refuse_other_methods(routes, REPORT, "POST, DELETE");
    let routes = refuse_other_methods(routes, DISPUTES, "GET, POST");
    finish(routes, api)
}

async fn list(State(api): Api, Caller(user): Caller) -> Result<Response, ApiError> {
    let queries = api.service.list(&user).await?;
    Ok(Json(StatusCode::OK, serde_json::json!({ "queries": queries })).into_response())
}

async fn detail(
    State(api): Api,
    Caller(user): Caller,
    Param(id): Param,
) -> Result<Response, ApiError> {
    let detail = api.service.detail(&user, &id).await?;
    Ok(Json(StatusCode::OK, detail).into_response())
}

async fn report(
    State(api): Api,
    Caller(user): Caller,
    Param(id): Param,
    JsonBody { body, .. }: JsonBody<ReportRequest>,
) -> Result<Response, ApiError> {
    let page_size = body.page_size;
    let page = api
        .service
        .report_page(&user, &id, access(body)?, page_size)
        .await?;
    Ok(Json(StatusCode::OK, page).into_response())
}

/// Deletes the report now (204); the step-up is the same body as viewing's, for the
/// DELETE_REPORT purpose.
async fn delete_report(
    State(api): Api,
    Caller(user): Caller,
    Param(id): Param,
    JsonBody { body, .. }: JsonBody<ReportRequest>,
) -> Result<Response, ApiError> {
    api.service.delete(&user, &id, step_up(body)?).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// "This card is not mine": 201 with the new dispute, 200 with the one the card
/// already had (a repeat, or the loser of a race).
async fn dispute(
    State(api): Api,
    Caller(user): Caller,
    Param(id): Param,
    JsonBody { body, .. }: JsonBody<DisputeRequest>,
) -> Result<Response, ApiError> {
    if !is_card_id(&body.card_id) {
        return Err(ApiError::Malformed(
            "card_id is a card_id of the report (e.g. ICBC-1)".into(),
        ));
    }
    let proof = match (body.verification, body.face_token) {
        (Some(verification), None) => StepUp::Code { verification },
        (None, Some(face_token)) => StepUp::Face { face_token },
        _ => {
            return Err(ApiError::Malformed(
                "give exactly one of verification and face_token".into(),
            ))
        }
    };
    let disputed = api
        .service
        .dispute(&user, &id, &body.card_id, proof)
        .await?;
    let status = match disputed {
        Disputed::Created(_) => StatusCode::CREATED,
        Disputed::Existing(_) => StatusCode::OK,
    };
    Ok(Json(status, disputed.view()).into_response())
}

/// The query's disputes, also after its report is gone.
async fn disputes(
    State(api): Api,
    Caller(user): Caller,
    Param(id): Param,
) -> Result<Response, ApiError> {
    let disputes = api.service.disputes(&user, &id).await?;
    Ok(Json(StatusCode::OK, serde_json::json!({ "disputes": disputes })).into_response())
}

/// The body of a dispute: the card and exactly one DISPUTE_CARD step-up proof.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisputeRequest {
    card_id: String,
    #[serde(default)]
    verification: Option<CodeInput>,
    #[serde(default)]
    face_token: Option<String>,
}

/// The body of a report request or deletion: exactly one step-up proof; for viewing, a
/// later page's cursor instead, and the page size.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportRequest {
    #[serde(default)]
    verification: Option<CodeInput>,
    #[serde(default)]
    face_token: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default, deserialize_with = "whole_number")]
    page_size: Option<u32>,
}

/// JSON Schema's `integer` is any number without a fractional part, so the contract's
/// `page_size` of `27.0` is 27; a fraction, a sign or a size past `u32` is refused (400).
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    n.as_u64()
        .or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(f))
                .map(|f| f as u64)
        })
        .and_then(|v| u32::try_from(v).ok())
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom("not a whole number"))
}

/// What opens the page asked for: a step-up, or (for a later page) a cursor.
pub fn access(mut req: ReportRequest) -> Result<ReportAccess, ApiError> {
    // The page size is the handler's; the proof is what is left.
    req.page_size = None;
    match req.cursor.take() {
        Some(cursor) if req.verification.is_none() && req.face_token.is_none() => {
            Ok(ReportAccess::Cursor(cursor))
        }
        Some(_) => Err(ApiError::Malformed(
            "give exactly one of verification, face_token and cursor".into(),
        )),
        None => step_up(req).map(ReportAccess::StepUp),
    }
}

/// A deletion's proof (a cursor views pages; it never deletes).
pub fn step_up(req: ReportRequest) -> Result<StepUp, ApiError> {
    if req.cursor.is_some() || req.page_size.is_some() {
        return Err(ApiError::Malformed(
            "a deletion takes a verification or a face_token only".into(),
        ));
    }
    match (req.verification, req.face_token) {
        (Some(verification), None) => Ok(StepUp::Code { verification }),
        (None, Some(face_token)) => Ok(StepUp::Face { face_token }),
        _ => Err(ApiError::Malformed(
            "give exactly one of verification and face_token".into(),
        )),
    }
}

#[cfg(test)]
mod page_size_tests {
    use super::ReportRequest;

    fn page_size(body: &str) -> Result<Option<u32>, serde_json::Error> {
        serde_json::from_str::<ReportRequest>(body).map(|r| r.page_size)
    }

    #[test]
    fn a_whole_number_is_a_page_size_however_it_is_written() {
        assert_eq!(page_size(r#"{"page_size": 27}"#).unwrap(), Some(27));
        assert_eq!(page_size(r#"{"page_size": 27.0}"#).unwrap(), Some(27));
        assert_eq!(page_size(r#"{"page_size": 1e3}"#).unwrap(), Some(1000));
        assert_eq!(page_size(r#"{}"#).unwrap(), None);
    }

    #[test]
    fn fractions_signs_and_sizes_past_u32_are_refused() {
        for body in [
            r#"{"page_size": 27.5}"#,
            r#"{"page_size": -1}"#,
            r#"{"page_size": -1.0}"#,
            r#"{"page_size": 4294967296}"#,
            r#"{"page_size": 1e300}"#,
            r#"{"page_size": "27"}"#,
        ] {
            assert!(page_size(body).is_err(), "{body}");
        }
    }
}
