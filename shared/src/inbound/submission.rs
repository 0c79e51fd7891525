//! The submit-query function: `GET /v1/banks`, `GET /v1/eligibility`,
//! `POST /v1/verifications`, `POST /v1/card-queries`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{Extensions, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};

use super::error::ApiError;
use super::extract::{header, source_ip, Caller, JsonBody};
use super::response::Json;
use super::{authenticated, finish, limited, refuse_other_methods, Authenticates};
use crate::security::app_jwt::AppAuthenticator;
use crate::submission::api::{SubmitRequest, VerificationRequest};
use crate::submission::SubmissionService;

pub struct SubmissionApi {
    pub service: Arc<SubmissionService>,
    pub auth: AppAuthenticator,
}

impl Authenticates for SubmissionApi {
    fn authenticator(&self) -> &AppAuthenticator {
        &self.auth
    }

    fn now(&self) -> DateTime<Utc> {
        self.service.now()
    }
}

type Api = State<Arc<SubmissionApi>>;

pub fn router(api: Arc<SubmissionApi>) -> Router {
    let routes = Router::new()
        .route("/v1/banks", get(banks))
        .route("/v1/eligibility", get(eligibility))
        .route("/v1/verifications", limited(post(create_verification)))
        .route("/v1/card-queries", limited(post(submit)));
    let routes = authenticated(routes, api.clone());
    let routes = [
        ("/v1/banks", "GET"),
        ("/v1/eligibility", "GET"),
        ("/v1/verifications", "POST"),
        ("/v1/card-queries", "POST"),
    ]
    .into_iter()
    .fold(routes, |r, (path, allow)| {
        refuse_other_methods(r, path, allow)
    });
    finish(routes, api)
}

async fn banks(State(api): Api, Caller(_): Caller) -> Response {
    super::response::json_text(StatusCode::OK, api.service.banks_json().to_owned())
}

async fn eligibility(State(api): Api, Caller(user): Caller) -> Result<Response, ApiError> {
    let e = api.service.eligibility(&user).await?;
    Ok(Json(StatusCode::OK, e).into_response())
}

async fn create_verification(
    State(api): Api,
    Caller(user): Caller,
    JsonBody { body, .. }: JsonBody<VerificationRequest>,
) -> Result<Response, ApiError> {
    let created = api.service.create_verification(&user, body).await?;
    Ok(Json(StatusCode::CREATED, created).into_response())
}

async fn submit(
    State(api): Api,
    Caller(user): Caller,
    headers: HeaderMap,
    ext: Extensions,
    JsonBody { raw, body }: JsonBody<SubmitRequest>,
) -> Result<Response, ApiError> {
    let (status, resp) = api
        .service
        .submit(
            &user,
            header(&headers, "idempotency-key"),
            &raw,
            body,
            source_ip(&ext),
        )
        .await?;
    let status = StatusCode::from_u16(status).map_err(crate::error::ServiceError::internal)?;
    Ok(Json(status, resp).into_response())
}
