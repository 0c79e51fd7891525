//! HTTP glue shared by the API functions: JSON bodies with a size limit and unknown
//! fields refused, the caller's identity, and responses in the contract's shape.

use std::future::Future;

use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::Instrument;

use crate::error::ServiceError;
use crate::security::app_jwt::AuthorizerClaims;

/// Bodies over this many bytes get 413.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

pub fn body_bytes(req: &Request) -> &[u8] {
    match req.body() {
        Body::Empty => &[],
        Body::Text(t) => t.as_bytes(),
        Body::Binary(b) => b,
        _ => &[],
    }
}

/// A declared body type must be JSON; no declared type is read as JSON.
pub fn check_json_content_type(req: &Request) -> Result<(), ServiceError> {
    if let Some(ct) = header(req, "content-type") {
        let essence = ct.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            return Err(ServiceError::UnsupportedMediaType);
        }
    }
    Ok(())
}

/// The request's JSON body: the raw value (for fingerprints) and the typed one.
pub fn json_body<T: DeserializeOwned>(
    req: &Request,
) -> Result<(serde_json::Value, T), ServiceError> {
    let bytes = body_bytes(req);
    if bytes.len() > MAX_BODY_BYTES {
        return Err(ServiceError::PayloadTooLarge {
            limit: MAX_BODY_BYTES,
        });
    }
    check_json_content_type(req)?;
    let value = json_object(bytes)?;
    let typed = typed_body(value.clone())?;
    Ok((value, typed))
}

/// `bytes` as a JSON object (the contract's only body shape), or 400.
pub fn json_object(bytes: &[u8]) -> Result<serde_json::Value, ServiceError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ServiceError::Malformed("a JSON body is required".into()));
    }
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        ServiceError::Malformed(format!(
            "the body is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    // serde reads a JSON array into a struct field by field; the contract is objects.
    if !value.is_object() {
        return Err(ServiceError::Malformed(
            "the body must be a JSON object".into(),
        ));
    }
    Ok(value)
}

/// A body object as the request type, with a refusal that names no client input (see
/// [`describe`]).
pub fn typed_body<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ServiceError> {
    serde_json::from_value(value).map_err(|e| describe(&e))
}

/// serde would read a JSON array into a struct; these fields of `value` must be objects.
pub fn require_objects(value: &serde_json::Value, fields: &[&str]) -> Result<(), ServiceError> {
    for f in fields {
        if value.get(f).is_some_and(|v| !v.is_object()) {
            return Err(ServiceError::Malformed(format!(
                "`{f}` must be a JSON object"
            )));
        }
    }
    Ok(())
}

/// A schema error that repeats nothing the client sent: bodies carry passwords and
/// codes, serde's messages quote the values they could not accept, and an unknown
/// field's name is client input too (a password pasted as a key is still a password).
/// Only names from our own schema (a missing field) appear in the message.
fn describe(e: &serde_json::Error) -> ServiceError {
    let msg = e.to_string();
    if msg.starts_with("unknown field") {
        return ServiceError::Malformed("the body has a field the request does not define".into());
    }
    let missing = msg
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
        .filter(|f| {
            !f.is_empty() && f.len() <= 40 && f.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        });
    if let Some(f) = missing {
        return ServiceError::Malformed(format!("missing field `{f}`"));
    }
    if msg.starts_with("unknown variant") {
        return ServiceError::Malformed("a field has a value outside its allowed set".into());
    }
    ServiceError::Malformed("the body does not match the expected fields and types".into())
}

/// The claims of API Gateway's JWT authorizer, when the request context carries any.
/// Only a cross-check of the bearer token (see [`crate::security::app_jwt`]).
pub fn authorizer_claims(req: &Request) -> Option<AuthorizerClaims> {
    match req.request_context_ref()? {
        RequestContext::ApiGatewayV2(ctx) => {
            let claims = &ctx.authorizer.as_ref()?.jwt.as_ref()?.claims;
            Some(AuthorizerClaims {
                sub: claims.get("sub").cloned(),
                iss: claims.get("iss").cloned(),
                aud: claims.get("aud").cloned(),
            })
        }
        _ => None,
    }
}

pub fn header<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

pub fn source_ip(req: &Request) -> Option<String> {
    match req.request_context_ref()? {
        RequestContext::ApiGatewayV2(ctx) => ctx.http.source_ip.clone(),
        _ => None,
    }
}

/// API Gateway's request id, else the Lambda invocation id.
pub fn request_id(req: &Request) -> String {
    let from_ctx = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.request_id.clone(),
        _ => None,
    };
    from_ctx
        .or_else(|| req.lambda_context_ref().map(|c| c.request_id.clone()))
        .unwrap_or_default()
}

pub fn json_response<T: Serialize>(status: u16, body: &T) -> Response<Body> {
    let text = serde_json::to_string(body).unwrap_or_else(|_| "{}".into());
    Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=utf-8")
        .header("cache-control", "no-store")
        .body(Body::Text(text))
        .expect("status and headers are valid")
}

pub fn empty_response(status: u16) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("cache-control", "no-store")
        .body(Body::Empty)
        .expect("status is valid")
}

/// The contract's error response; server-side detail goes to the log, not the client.
pub fn error_response(e: &ServiceError) -> Response<Body> {
    match e {
        ServiceError::Internal(detail) => tracing::error!(error = %detail, "internal error"),
        ServiceError::Unavailable(detail) => {
            tracing::warn!(error = %detail, "dependency unavailable")
        }
        other => tracing::info!(
            status = other.status(),
            code = other.code(),
            "request refused"
        ),
    }
    let mut resp = json_response(e.status(), &e.body());
    let headers = resp.headers_mut();
    match e {
        ServiceError::TooManyRequests { retry_after_secs }
        | ServiceError::IdempotencyInProgress { retry_after_secs } => {
            headers.insert(
                "retry-after",
                retry_after_secs.to_string().parse().expect("digits"),
            );
        }
        ServiceError::MethodNotAllowed { allow } => {
            headers.insert(
                "allow",
                allow.parse().expect("a method list is a valid header"),
            );
        }
        _ => {}
    }
    resp
}

/// Splits a path into its segments (`/v1/card-queries/X` → `["v1", "card-queries", "X"]`).
pub fn segments(path: &str) -> Vec<&str> {
    path.trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect()
}

/// Runs a route inside a span carrying the request id (every log line of the request has
/// it), turns a refusal into the contract's error response, and logs the status.
pub async fn serve<'a, F, Fut>(req: &'a Request, route: F) -> Response<Body>
where
    F: FnOnce(&'a Request) -> Fut,
    Fut: Future<Output = Result<Response<Body>, ServiceError>> + 'a,
{
    let span = tracing::info_span!(
        "request",
        request_id = %request_id(req),
        method = %req.method(),
        path = %req.uri().path(),
        user_id = tracing::field::Empty,
    );
    async move {
        let resp = match route(req).await {
            Ok(resp) => resp,
            Err(e) => error_response(&e),
        };
        tracing::info!(status = resp.status().as_u16(), "request done");
        resp
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        purpose: String,
        code: Option<u32>,
    }

    fn refusal(raw: &str) -> String {
        let value = json_object(raw.as_bytes()).unwrap();
        match typed_body::<Body>(value) {
            Err(ServiceError::Malformed(m)) => m,
            other => panic!("{raw}: {other:?}"),
        }
    }

    #[test]
    fn refusals_repeat_nothing_the_client_sent() {
        for (raw, secret) in [
            (r#"{"purpose": "x", "s3cr3t_pw": 1}"#, "s3cr3t_pw"),
            (r#"{"purpose": "x", "extra": 1}"#, "extra"),
            (r#"{"purpose": "x", "135790": 1}"#, "135790"),
            (r#"{"purpose": "x", "code": "135790"}"#, "135790"),
            (r#"{"purpose": "x", "code": 13579024680}"#, "13579024680"),
            (r#"{"purpose": ["135790"]}"#, "135790"),
        ] {
            let m = refusal(raw);
            assert!(!m.contains(secret), "{raw}: {m}");
        }
        // Our own schema's names may be named.
        assert_eq!(refusal(r#"{"code": 1}"#), "missing field `purpose`");
    }
}
