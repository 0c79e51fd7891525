//! The HTTP side: the four Runtime API endpoints a function's runtime client calls.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::protocol::{self, MAX_RESPONSE_BYTES, RUNTIME_PREFIX};
use crate::{FunctionError, InFlight, Outcome, Shared};

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(&format!("{RUNTIME_PREFIX}/invocation/next"), get(next))
        .route(
            &format!("{RUNTIME_PREFIX}/invocation/{{id}}/response"),
            post(response),
        )
        .route(
            &format!("{RUNTIME_PREFIX}/invocation/{{id}}/error"),
            post(invocation_error),
        )
        .route(&format!("{RUNTIME_PREFIX}/init/error"), post(init_error))
        // Above Lambda's 6 MB so that an oversized response reaches `response` and
        // gets Lambda's own 413 and failed invocation, not a bare refusal.
        .layer(DefaultBodyLimit::max(2 * MAX_RESPONSE_BYTES))
        .with_state(shared)
}

fn json(status: StatusCode, body: String) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

fn accepted() -> Response {
    json(StatusCode::ACCEPTED, r#"{"status":"OK"}"#.to_owned())
}

fn unknown_request(id: &str) -> Response {
    json(
        StatusCode::BAD_REQUEST,
        protocol::error_body("InvalidRequestID", &format!("Invalid request ID: {id}")),
    )
}

/// Blocks until an event is queued, then hands it over with Lambda's headers.
async fn next(State(shared): State<Arc<Shared>>) -> Response {
    shared.record_poll(Instant::now());
    let pending = {
        let mut queue = shared.queue_rx.lock().await;
        match queue.recv().await {
            Some(p) => p,
            None => {
                return json(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    protocol::error_body("ServiceException", "the emulator is stopping"),
                )
            }
        }
    };
    let now = SystemTime::now();
    let mut headers = HeaderMap::new();
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    put(protocol::REQUEST_ID, pending.id.clone());
    put(
        protocol::DEADLINE_MS,
        protocol::deadline_ms(now, shared.timeout),
    );
    put(protocol::FUNCTION_ARN, shared.function_arn.clone());
    put(protocol::TRACE_ID, protocol::trace_id(now, pending.n));
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    shared
        .in_flight
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(
            pending.id,
            InFlight {
                delivered_at: Instant::now(),
                done: pending.done,
            },
        );
    (StatusCode::OK, headers, pending.payload).into_response()
}

async fn response(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if body.len() > MAX_RESPONSE_BYTES {
        // Lambda fails the invocation too, so whoever waits for it learns why.
        let known = shared.complete(
            &id,
            Outcome::Error(FunctionError {
                error_type: Some("Function.ResponseSizeTooLarge".into()),
                body: Vec::new(),
            }),
        );
        if !known {
            return unknown_request(&id);
        }
        return json(
            StatusCode::PAYLOAD_TOO_LARGE,
            protocol::error_body(
                "RequestEntityTooLarge",
                &format!("Exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes)."),
            ),
        );
    }
    if shared.complete(&id, Outcome::Response(body.to_vec())) {
        accepted()
    } else {
        unknown_request(&id)
    }
}

fn reported(headers: &HeaderMap, body: Bytes) -> FunctionError {
    FunctionError {
        error_type: headers
            .get(protocol::ERROR_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: body.to_vec(),
    }
}

async fn invocation_error(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if shared.complete(&id, Outcome::Error(reported(&headers, body))) {
        accepted()
    } else {
        unknown_request(&id)
    }
}

async fn init_error(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.record_init_error(reported(&headers, body));
    accepted()
}
