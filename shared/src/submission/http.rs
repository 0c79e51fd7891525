//! HTTP entrypoint of the submit-query function: `GET /v1/banks`, `GET /v1/eligibility`,
//! `POST /v1/verifications`, `POST /v1/card-queries`.

use lambda_http::http::Method;
use lambda_http::{Body, Request, Response};

use super::api::{SubmitRequest, VerificationRequest};
use super::SubmissionService;
use crate::error::ServiceError;
use crate::http;
use crate::model::ids::UserId;
use crate::security::app_jwt::AppAuthenticator;

pub struct SubmissionApi {
    pub service: std::sync::Arc<SubmissionService>,
    pub auth: AppAuthenticator,
}

impl SubmissionApi {
    pub async fn handle(&self, req: Request) -> Response<Body> {
        http::serve(&req, |req| self.route(req)).await
    }

    fn caller(&self, req: &Request) -> Result<UserId, ServiceError> {
        self.auth.authenticate(
            http::authorizer_claims(req).as_ref(),
            http::header(req, "authorization"),
            self.service.now(),
        )
    }

    async fn route(&self, req: &Request) -> Result<Response<Body>, ServiceError> {
        let path = req.uri().path().to_owned();
        let segs = http::segments(&path);
        let method = req.method().clone();
        let allowed = match segs.as_slice() {
            ["v1", "banks"] | ["v1", "eligibility"] => Method::GET,
            ["v1", "verifications"] | ["v1", "card-queries"] => Method::POST,
            _ => return Err(ServiceError::NotFound),
        };
        if method != allowed {
            return Err(ServiceError::MethodNotAllowed {
                allow: if allowed == Method::GET {
                    "GET"
                } else {
                    "POST"
                },
            });
        }
        let user = self.caller(req)?;
        tracing::Span::current().record("user_id", user.as_str());
        match segs.as_slice() {
            ["v1", "banks"] => Ok(http::json_response(200, &self.service.banks())),
            ["v1", "eligibility"] => {
                let e = self.service.eligibility(&user).await?;
                Ok(http::json_response(200, &e))
            }
            ["v1", "verifications"] => {
                let (_, body): (_, VerificationRequest) = http::json_body(req)?;
                let created = self.service.create_verification(&user, body).await?;
                Ok(http::json_response(201, &created))
            }
            _ => {
                let (raw, body): (_, SubmitRequest) = http::json_body(req)?;
                http::require_objects(&raw, &["consent", "verification"])?;
                let (status, resp) = self
                    .service
                    .submit(
                        &user,
                        http::header(req, "idempotency-key"),
                        &raw,
                        body,
                        http::source_ip(req),
                    )
                    .await?;
                Ok(http::json_response(status, &resp))
            }
        }
    }
}
