//! Everything read from a request: its body (one way for every function), the caller's
//! identity, path parameters and API Gateway's request context.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap, StatusCode};
use lambda_http::request::RequestContext;
use lambda_http::RequestExt;
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_path_to_error::Segment;

use super::error::ApiError;
use super::schema::{join, Schema};
use crate::model::ids::UserId;
use crate::security::app_jwt::AuthorizerClaims;

/// Bodies over this many bytes get 413.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// A body within the size limit whose declared type, if any, is JSON (decision 12: no
/// declared type is read as JSON). Not parsed: the callback checks its signature over
/// the bytes first.
pub struct JsonBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let declared_json = declares_json(req.headers());
        // Size before type, as the limit layer does when the length is declared.
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge {
                    limit: MAX_BODY_BYTES,
                }
            } else {
                ApiError::Malformed("the body could not be read".into())
            }
        })?;
        if !declared_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        Ok(Self(bytes))
    }
}

fn declares_json(headers: &HeaderMap) -> bool {
    match headers.get(CONTENT_TYPE) {
        None => true,
        Some(ct) => ct.to_str().is_ok_and(|ct| {
            let essence = ct.split(';').next().unwrap_or("").trim();
            essence.eq_ignore_ascii_case("application/json")
        }),
    }
}

/// A JSON object body as `T` (which refuses unknown fields), with the raw object kept
/// for fingerprints. Refusals name only fields `T` declares (see [`describe`]).
pub struct JsonBody<T> {
    pub raw: Value,
    pub body: T,
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let JsonBytes(bytes) = JsonBytes::from_request(req, state).await?;
        let raw = json_object(&bytes)?;
        let body = typed(&raw)?;
        Ok(Self { raw, body })
    }
}

/// `bytes` as a JSON object (the contract's only body shape), or 400. Bytes that are not
/// UTF-8 are not JSON.
pub fn json_object(bytes: &[u8]) -> Result<Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::Malformed("a JSON body is required".into()));
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::Malformed(format!(
            "the body is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    // serde reads a JSON array into a struct field by field; the contract is objects.
    if !value.is_object() {
        return Err(ApiError::Malformed("the body must be a JSON object".into()));
    }
    Ok(value)
}

/// A body object as the request type.
pub fn typed<T: DeserializeOwned>(raw: &Value) -> Result<T, ApiError> {
    let schema = Schema::of::<T>();
    for path in schema.objects() {
        if at(raw, path).is_some_and(|v| !v.is_object()) {
            return Err(ApiError::Malformed(format!(
                "`{path}` must be a JSON object"
            )));
        }
    }
    serde_path_to_error::deserialize(raw.clone())
        .map_err(|e| ApiError::Malformed(describe(e.path(), raw, &schema)))
}

/// The value at a dotted path of objects.
fn at<'a>(raw: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(raw, |v, key| v.get(key))
}

/// Where a body failed to match, naming only what the schema declares: serde's message
/// is never used (it quotes the rejected value), nor a key the client sent that the
/// schema does not know (the key is client input too).
fn describe(path: &serde_path_to_error::Path, raw: &Value, schema: &Schema) -> String {
    let mut declared = String::new();
    let mut shown = String::new();
    let mut value = Some(raw);
    for segment in path.iter() {
        match segment {
            Segment::Map { key } => {
                let candidate = join(&declared, key);
                if !schema.declares(&candidate) {
                    return match shown.as_str() {
                        "" => "the body has a field the request does not define".into(),
                        _ => format!("`{shown}` has a field the request does not define"),
                    };
                }
                shown = join(&shown, key);
                declared = candidate;
                value = value.and_then(|v| v.get(key));
            }
            Segment::Seq { index } => {
                shown = format!("{shown}[{index}]");
                value = value.and_then(|v| v.get(index));
            }
            Segment::Enum { .. } | Segment::Unknown => break,
        }
    }
    if let Some(Value::Object(present)) = value {
        let missing = schema
            .required_under(&declared)
            .find(|name| !present.contains_key(*name));
        if let Some(name) = missing {
            return format!("missing field `{}`", join(&shown, name));
        }
    }
    match shown.as_str() {
        "" => "the body does not match the expected fields and types".into(),
        _ => format!("`{shown}` does not have the expected type or value"),
    }
}

/// A path parameter. One that does not decode names nothing we have: "not found".
pub struct Param(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Param {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(p) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::NotFound)?;
        Ok(Self(p))
    }
}

/// The authenticated caller, put there by the router's authentication layer. Without it
/// the request is refused, so a route that misses the layer fails closed.
pub struct Caller(pub UserId);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<UserId>()
            .cloned()
            .map(Self)
            .ok_or(crate::error::ServiceError::Unauthenticated.into())
    }
}

/// The claims of API Gateway's JWT authorizer, when the request context carries any.
/// Only a cross-check of the bearer token (see [`crate::security::app_jwt`]).
pub fn authorizer_claims(ext: &Extensions) -> Option<AuthorizerClaims> {
    match ext.request_context_ref()? {
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

pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub fn source_ip(ext: &Extensions) -> Option<String> {
    match ext.request_context_ref()? {
        RequestContext::ApiGatewayV2(ctx) => ctx.http.source_ip.clone(),
        _ => None,
    }
}

/// API Gateway's request id, else the Lambda invocation id.
pub fn request_id(ext: &Extensions) -> String {
    let from_ctx = match ext.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.request_id.clone(),
        _ => None,
    };
    from_ctx
        .or_else(|| ext.lambda_context_ref().map(|c| c.request_id.clone()))
        .unwrap_or_default()
}
