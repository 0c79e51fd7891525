//! Responses in the contract's shape: JSON in UTF-8, never cached.

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

const JSON: HeaderValue = HeaderValue::from_static("application/json; charset=utf-8");
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    // Our response types always serialize; "{}" only keeps a bug from becoming a panic.
    json_text(
        status,
        serde_json::to_string(body).unwrap_or_else(|_| "{}".into()),
    )
}

/// A body already rendered as JSON.
pub fn json_text(status: StatusCode, text: String) -> Response {
    let mut resp = (status, text).into_response();
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, JSON);
    headers.insert(header::CACHE_CONTROL, NO_STORE);
    resp
}

pub fn empty(status: StatusCode) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CACHE_CONTROL, NO_STORE);
    resp
}

/// A JSON answer with its status.
pub struct Json<T>(pub StatusCode, pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        json(self.0, &self.1)
    }
}
