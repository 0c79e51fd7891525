//! Bodies `cargo lambda watch` cannot carry, delivered the way API Gateway does.
//!
//! cargo-lambda-watch 1.9.2 (`trigger_router.rs`, `furls_handler`) turns an HTTP request
//! into an API Gateway v2 event itself: a body declared as text (no `Content-Type`,
//! `text/*` or `application/json…`, compared case-sensitively) must be UTF-8, else the
//! watch answers 500 (an RFC 7807 problem, `StringBody`) and no function runs; any other
//! declared type is base64-encoded with `isBase64Encoded: true`. API Gateway's HTTP API
//! delivers a body that is not UTF-8 base64-encoded whatever it is declared as, and the
//! function answers it (400 `MALFORMED_REQUEST` for a JSON route). The watch's binary
//! cannot be patched (it is the pinned PyPI package), so for exactly the requests it
//! would refuse the gate builds that event itself and invokes the function through the
//! watch's invoke API, then turns the function's answer back into HTTP as the watch does.

use std::collections::BTreeMap;

use aws_lambda_events::apigw::ApiGatewayV2httpResponse;
use aws_lambda_events::encodings::Body as LambdaBody;
use axum::body::Bytes;
use axum::http::header::{CONTENT_TYPE, COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

/// Whether the watch would refuse `body` with a 500 before any function runs (its own
/// test, reproduced: a non-ASCII `Content-Type` reads as empty there, i.e. binary).
pub fn watch_refuses(headers: &HeaderMap, body: &[u8]) -> bool {
    if body.is_empty() {
        return false;
    }
    let text = match headers.get(CONTENT_TYPE) {
        None => true,
        Some(c) => {
            let c = c.to_str().unwrap_or_default();
            c.starts_with("text/") || c.starts_with("application/json")
        }
    };
    text && std::str::from_utf8(body).is_err()
}

/// The API Gateway HTTP API (payload 2.0) event for this request, body base64-encoded.
/// Written as JSON rather than with `aws_lambda_events`' request type: that type also
/// serialises the v1 authorizer fields (`httpMethod`, `methodArn`, ...), which the watch's
/// events do not carry. No `requestContext.requestId`: the function then takes the
/// invocation's id, the one the watch gives it, as it does for the watch's own events.
pub fn event(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    path_parameters: BTreeMap<String, String>,
    now: chrono::DateTime<chrono::Utc>,
) -> Value {
    // API Gateway joins repeated headers with commas (payload 2.0) and lists cookies apart.
    let mut joined: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        joined
            .entry(name.as_str().to_owned())
            .and_modify(|v| {
                v.push(',');
                v.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    let cookies: Vec<String> = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|c| c.to_str().ok())
        .flat_map(|c| c.split("; ").map(|s| s.trim().to_owned()))
        .collect();
    let path = uri.path();
    let time = now.format("%d/%b/%Y:%H:%M:%S +0000").to_string();
    let mut event = json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": uri.query().unwrap_or_default(),
        "headers": joined,
        "requestContext": {
            "stage": "$default",
            "routeKey": "$default",
            "domainName": "localhost",
            "http": {
                "method": method.as_str(),
                "path": path,
                "protocol": "http",
                "sourceIp": "127.0.0.1",
                "userAgent": "cargo-lambda",
            },
            "time": time,
            // API Gateway gives the epoch in milliseconds.
            "timeEpoch": now.timestamp_millis(),
        },
        "pathParameters": path_parameters,
        "body": B64.encode(body),
        "isBase64Encoded": true,
    });
    if !cookies.is_empty() {
        event["cookies"] = json!(cookies);
    }
    event
}

/// The HTTP answer for the invoke API's answer to such an event, as the watch builds it
/// for its own events: a successful invocation's payload is the function's API Gateway
/// response; anything else (a function error) passes as it came.
pub fn response(
    invoke_status: StatusCode,
    invoke_headers: HeaderMap,
    payload: Bytes,
) -> Result<(StatusCode, HeaderMap, Bytes), String> {
    if invoke_status != StatusCode::OK {
        return Ok((invoke_status, invoke_headers, payload));
    }
    let resp: ApiGatewayV2httpResponse = serde_json::from_slice(&payload)
        .map_err(|e| format!("the function's answer is not an API Gateway response: {e}"))?;
    let status = u16::try_from(resp.status_code)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or_else(|| format!("the function answered status {}", resp.status_code))?;
    let body = match resp.body {
        None | Some(LambdaBody::Empty) => Bytes::new(),
        Some(b) if resp.is_base64_encoded => Bytes::from(
            B64.decode(b.as_ref())
                .map_err(|e| format!("the function's body is not base64: {e}"))?,
        ),
        Some(LambdaBody::Text(s)) => Bytes::from(s),
        Some(LambdaBody::Binary(b)) => Bytes::from(b),
        Some(other) => Bytes::copy_from_slice(other.as_ref()),
    };
    let mut headers = resp.headers;
    headers.extend(resp.multi_value_headers);
    for cookie in &resp.cookies {
        let value = HeaderValue::try_from(cookie.as_str()).map_err(|e| e.to_string())?;
        headers.append(SET_COOKIE, value);
    }
    Ok((status, headers, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn refuses_what_the_watch_refuses_and_nothing_else() {
        let latin1 = b"{\"purpose\": \"\xe9\"}";
        for ct in [
            None,
            Some("application/json"),
            Some("application/json; charset=utf-8"),
            Some("text/plain"),
        ] {
            let h = headers(&ct.map(|c| vec![("content-type", c)]).unwrap_or_default());
            assert!(watch_refuses(&h, latin1), "{ct:?}");
            assert!(!watch_refuses(&h, b"{}"), "{ct:?}: UTF-8 passes");
            assert!(!watch_refuses(&h, b""), "{ct:?}: no body passes");
        }
        // The watch base64-encodes these itself.
        for ct in ["application/octet-stream", "Application/JSON", "image/png"] {
            assert!(!watch_refuses(&headers(&[("content-type", ct)]), latin1));
        }
    }

    #[test]
    fn the_event_carries_the_bytes_base64_encoded() {
        let uri: Uri = "/v1/bank-callbacks/ICBC?x=1".parse().unwrap();
        let h = headers(&[
            ("content-type", "application/json"),
            ("x-a", "1"),
            ("x-a", "2"),
            ("cookie", "a=1; b=2"),
        ]);
        let params = BTreeMap::from([("bank_code".to_owned(), "ICBC".to_owned())]);
        let now = chrono::DateTime::from_timestamp(1_796_138_436, 0).unwrap();
        let e = event(&Method::POST, &uri, &h, b"\xff\xfe", params, now);
        assert_eq!(e["isBase64Encoded"], true);
        assert_eq!(e["body"], "//4=");
        assert_eq!(e["rawPath"], "/v1/bank-callbacks/ICBC");
        assert_eq!(e["rawQueryString"], "x=1");
        assert_eq!(e["requestContext"]["http"]["method"], "POST");
        assert_eq!(e["requestContext"]["time"], "01/Dec/2026:15:20:36 +0000");
        assert_eq!(e["headers"]["x-a"], "1,2");
        assert_eq!(e["cookies"], json!(["a=1", "b=2"]));
        assert_eq!(e["pathParameters"]["bank_code"], "ICBC");
        // lambda_http reads it as an API Gateway v2 request with the raw bytes as body.
        let req = lambda_http::request::from_str(&e.to_string()).unwrap();
        assert_eq!(req.uri().path(), "/v1/bank-callbacks/ICBC");
        assert_eq!(req.body().as_ref(), b"\xff\xfe");
    }

    #[test]
    fn the_functions_answer_becomes_http() {
        let payload = json!({
            "statusCode": 400,
            "headers": {"content-type": "application/json"},
            "multiValueHeaders": {},
            "body": "{\"error\":{}}",
            "isBase64Encoded": false,
            "cookies": [],
        });
        let (status, headers, body) = response(
            StatusCode::OK,
            HeaderMap::new(),
            Bytes::from(payload.to_string()),
        )
        .unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(headers[CONTENT_TYPE], "application/json");
        assert_eq!(body, Bytes::from_static(b"{\"error\":{}}"));

        // lambda_http writes every field of its response type, `cookies` included.
        let encoded = json!({
            "statusCode": 200,
            "headers": {},
            "multiValueHeaders": {},
            "body": "aGk=",
            "isBase64Encoded": true,
            "cookies": ["a=1"],
        });
        let (_, headers, body) = response(
            StatusCode::OK,
            HeaderMap::new(),
            Bytes::from(encoded.to_string()),
        )
        .unwrap();
        assert_eq!(body, Bytes::from_static(b"hi"));
        assert_eq!(headers[SET_COOKIE], "a=1");

        let failed = response(
            StatusCode::INTERNAL_SERVER_ERROR,
            HeaderMap::new(),
            Bytes::from_static(b"boom"),
        )
        .unwrap();
        assert_eq!(failed.0, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(response(StatusCode::OK, HeaderMap::new(), Bytes::from_static(b"[]")).is_err());
    }
}
