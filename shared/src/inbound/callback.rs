//! The bank-callback function: `POST /v1/bank-callbacks/{bank_code}`. No user here: the
//! bank's signature over the raw body is the authentication, so the body is handed on
//! unparsed (see [`crate::dispatch::callback`] for the order of checks after that).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use axum::routing::post;
use axum::Router;

use super::error::ApiError;
use super::extract::{header, JsonBytes, Param};
use super::response::empty;
use super::{finish, limited, refuse_other_methods};
use crate::bank::signing::SignatureHeaders;
use crate::dispatch::callback::CallbackService;

const CALLBACK: &str = "/v1/bank-callbacks/{bank_code}";

pub fn router(service: Arc<CallbackService>) -> Router {
    let routes = Router::new().route(CALLBACK, limited(post(receive)));
    finish(refuse_other_methods(routes, CALLBACK, "POST"), service)
}

async fn receive(
    State(service): State<Arc<CallbackService>>,
    Param(code): Param,
    uri: Uri,
    headers: HeaderMap,
    JsonBytes(body): JsonBytes,
) -> Result<Response, ApiError> {
    // The path as received: it is what the bank signed.
    service
        .receive(&code, uri.path(), signature_headers(&headers), &body)
        .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

fn signature_headers(headers: &HeaderMap) -> Option<SignatureHeaders> {
    SignatureHeaders::read(|name| header(headers, name).map(str::to_owned))
}
