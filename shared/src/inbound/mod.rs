//! The inbound layer: one axum `Router` per HTTP function, the request extractors, and
//! the one mapping from refusals to the contract's answers ([`error::ApiError`]).
//!
//! The domain modules never import this one; it depends on them, not the other way.
//!
//! Order of checks, the same on every route: path (404), method (405 with Allow), the
//! caller (401, app routes only), body size (413), declared type (415), body (400).

pub mod callback;
pub mod error;
pub mod extract;
pub mod report;
pub mod response;
mod schema;
pub mod submission;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{head, MethodRouter};
use axum::Router;
use chrono::{DateTime, Utc};
use tower_http::limit::RequestBodyLimitLayer;
use tracing::Instrument;

use error::ApiError;
use extract::MAX_BODY_BYTES;

use crate::model::ids::UserId;
use crate::security::app_jwt::AppAuthenticator;

/// What the authentication layer needs of a router's state.
pub trait Authenticates: Send + Sync + 'static {
    fn authenticator(&self) -> &AppAuthenticator;
    fn now(&self) -> DateTime<Utc>;
}

/// `route` with the body limit. The limit layer refuses a declared length over the limit
/// at once, in its own words; those are reshaped into the contract's 413. A body without
/// a declared length is cut at the limit, which the body extractors answer with 413.
pub(crate) fn limited<S: Clone + Send + Sync + 'static>(route: MethodRouter<S>) -> MethodRouter<S> {
    route
        .route_layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .route_layer(middleware::map_response(contract_413))
}

async fn contract_413(resp: Response) -> Response {
    let ours = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if resp.status() == StatusCode::PAYLOAD_TOO_LARGE && !ours {
        return ApiError::PayloadTooLarge {
            limit: MAX_BODY_BYTES,
        }
        .into_response();
    }
    resp
}

/// The contract's 405 for every method `path` does not route, naming `allow`. HEAD is
/// refused explicitly: axum would otherwise answer it with the GET route.
pub(crate) fn refuse_other_methods<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    path: &str,
    allow: &'static str,
) -> Router<S> {
    let refuse = move || async move { ApiError::MethodNotAllowed { allow } };
    router.route(path, head(refuse).fallback(refuse))
}

/// Authenticates the caller of every route added so far (after the method check, before
/// the body is read) and hands the user id to the [`extract::Caller`] extractor.
pub(crate) fn authenticated<A: Authenticates>(
    router: Router<Arc<A>>,
    state: Arc<A>,
) -> Router<Arc<A>> {
    router.route_layer(middleware::from_fn_with_state(state, authenticate::<A>))
}

async fn authenticate<A: Authenticates>(
    State(state): State<Arc<A>>,
    mut req: Request,
    next: Next,
) -> Response {
    let claims = extract::authorizer_claims(req.extensions());
    let user: Result<UserId, _> = state.authenticator().authenticate(
        claims.as_ref(),
        extract::header(req.headers(), "authorization"),
        state.now(),
    );
    match user {
        Ok(user) => {
            tracing::Span::current().record("user_id", user.as_str());
            req.extensions_mut().insert(user);
            next.run(req).await
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// The parts every function's router shares: 404 for paths it does not route, and a
/// span per request carrying the request id (every log line of the request has it),
/// closed with the status.
pub(crate) fn finish<S: Clone + Send + Sync + 'static>(router: Router<S>, state: S) -> Router {
    router
        .fallback(|| async { ApiError::NotFound })
        .with_state(state)
        .layer(middleware::from_fn(traced))
}

async fn traced(req: Request, next: Next) -> Response {
    let span = tracing::info_span!(
        "request",
        request_id = %extract::request_id(req.extensions()),
        method = %req.method(),
        path = %req.uri().path(),
        user_id = tracing::field::Empty,
    );
    async move {
        let resp = next.run(req).await;
        tracing::info!(status = resp.status().as_u16(), "request done");
        resp
    }
    .instrument(span)
    .await
}
