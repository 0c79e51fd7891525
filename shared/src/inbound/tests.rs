//! Requests as the Lambda runtime hands them over (API Gateway HTTP API events, or
//! lambda_http requests), through each function's router, on the in-memory store.

use std::sync::Arc;

use axum::Router;
use base64::Engine;
use lambda_http::tower::ServiceExt;
use lambda_http::{Body, Request};
use serde_json::{json, Value};

use super::extract::{json_object, typed, MAX_BODY_BYTES};
use super::report::ViewApi;
use super::submission::SubmissionApi;
use super::{callback, error::ApiError, report, submission};
use crate::adapters::memory::{sms_lane, MemorySms};
use crate::dispatch::callback::CallbackService;
use crate::report::crypto::ReportOpener;
use crate::report::view::{ViewDeps, ViewService};
use crate::security::app_jwt::AppAuthenticator;
use crate::security::dev;
use crate::security::face::FaceVerifier;
use crate::security::sms_code::CodeHasher;
use crate::submission::{SubmissionDeps, SubmissionService};
use domain::test_support::{BankWorld, PHONE};

const ISS: &str = "https://app.example";
const AUD: &str = "card-lookup";

/// The three routers on one world, and a token of user "u1".
struct Routers {
    submission: Router,
    view: Router,
    callback: Router,
    token: String,
    world: BankWorld,
}

fn routers() -> Routers {
    let w = BankWorld::new(&[]);
    w.profile("u1", PHONE);
    let (app_private, app_public) = dev::generate_rsa();
    let (_, face_public) = dev::generate_ed25519();
    let face = || {
        Arc::new(
            FaceVerifier::new(
                &face_public,
                "face",
                "face",
                w.config.rules.face_token_max_age,
            )
            .unwrap(),
        )
    };
    let auth = || AppAuthenticator::new(&app_public, ISS, AUD).unwrap();
    let codes = CodeHasher::new(&[5; 32]).unwrap();
    let submission = submission::router(Arc::new(SubmissionApi {
        service: Arc::new(SubmissionService::new(SubmissionDeps {
            config: w.config.clone(),
            profiles: w.store.clone(),
            store: w.store.clone(),
            sms: Arc::new(MemorySms::default()),
            sms_admission: Arc::new(sms_lane(1_000)),
            clock: w.clock.clone(),
            codes: codes.clone(),
            face: face(),
        })),
        auth: auth(),
    }));
    let view = report::router(Arc::new(ViewApi {
        service: ViewService::new(ViewDeps {
            disputes: w.store.clone(),
            config: w.config.clone(),
            queries: w.store.clone(),
            reports: w.store.clone(),
            verifications: w.store.clone(),
            codes,
            face: face(),
            opener: ReportOpener::new("k1", &w.report_private).unwrap(),
            clock: w.clock.clone(),
        }),
        auth: auth(),
    }));
    let callback = callback::router(Arc::new(CallbackService {
        config: w.config.clone(),
        store: w.store.clone(),
        secrets: w.secrets.clone(),
        clock: w.clock.clone(),
        sealer: w.sealer.clone(),
    }));
    let token = dev::app_token(&app_private, ISS, AUD, "u1", w.now(), 3600).unwrap();
    Routers {
        submission,
        view,
        callback,
        token,
        world: w,
    }
}

struct Reply {
    status: u16,
    headers: axum::http::HeaderMap,
    body: Value,
}

impl Reply {
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }

    fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or_default()
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

async fn send(router: &Router, req: Request) -> Reply {
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("not JSON: {bytes:?}"))
    };
    Reply {
        status,
        headers,
        body,
    }
}

fn request(
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Body,
) -> Request {
    let mut b = lambda_http::http::Request::builder()
        .method(method)
        .uri(path);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(body).unwrap()
}

/// An API Gateway HTTP API (payload 2.0) event for `POST path`, read as the runtime reads it.
fn event(path: &str, token: &str, body: &str, base64: bool) -> Request {
    let event = json!({
        "version": "2.0",
        "routeKey": format!("POST {path}"),
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"authorization": format!("Bearer {token}"), "content-type": "application/json"},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "api",
            "domainName": "api.example",
            "domainPrefix": "api",
            "http": {"method": "POST", "path": path, "protocol": "HTTP/1.1", "sourceIp": "192.0.2.1", "userAgent": "test"},
            "requestId": "req-1",
            "routeKey": format!("POST {path}"),
            "stage": "$default",
            "time": "28/Nov/2026:10:00:00 +0000",
            "timeEpoch": 1_795_860_000_000_u64
        },
        "body": body,
        "isBase64Encoded": base64
    });
    lambda_http::request::from_str(&event.to_string()).unwrap()
}

#[tokio::test]
async fn other_methods_get_405_with_allow_and_other_paths_404() {
    let r = routers();
    for (router, method, path, allow) in [
        (&r.submission, "DELETE", "/v1/banks", "GET"),
        (&r.submission, "HEAD", "/v1/banks", "GET"),
        (&r.submission, "POST", "/v1/eligibility", "GET"),
        (&r.submission, "GET", "/v1/verifications", "POST"),
        (&r.submission, "PUT", "/v1/card-queries", "POST"),
        (
            &r.view,
            "POST",
            "/v1/card-queries/01ARZ3NDEKTSV4RRFFQ69G5FAV",
            "GET",
        ),
        (&r.view, "DELETE", "/v1/card-queries", "GET, POST"),
        (
            &r.view,
            "GET",
            "/v1/card-queries/01ARZ3NDEKTSV4RRFFQ69G5FAV/report",
            "POST, DELETE",
        ),
        (
            &r.view,
            "PUT",
            "/v1/card-queries/01ARZ3NDEKTSV4RRFFQ69G5FAV/report",
            "POST, DELETE",
        ),
        (&r.callback, "GET", "/v1/bank-callbacks/ICBC", "POST"),
        (&r.callback, "TRACE", "/v1/bank-callbacks/ICBC", "POST"),
    ] {
        // No token: the method is refused before the caller is asked for.
        let reply = send(router, request(method, path, None, &[], Body::Empty)).await;
        // axum drops the body of any answer to HEAD, as HTTP has it.
        let code = if method == "HEAD" {
            ""
        } else {
            "METHOD_NOT_ALLOWED"
        };
        assert_eq!((reply.status, reply.code()), (405, code), "{method} {path}");
        assert_eq!(reply.header("allow"), allow, "{method} {path}");
    }
    for (router, path) in [
        (&r.submission, "/v1/nothing"),
        (&r.view, "/v1/card-queries/x/y/z"),
        (&r.callback, "/v1/bank-callbacks"),
    ] {
        let reply = send(
            router,
            request("GET", path, Some(&r.token), &[], Body::Empty),
        )
        .await;
        assert_eq!((reply.status, reply.code()), (404, "NOT_FOUND"), "{path}");
    }
}

#[tokio::test]
async fn routes_answer_through_the_services() {
    let r = routers();
    let banks = send(
        &r.submission,
        request("GET", "/v1/banks", Some(&r.token), &[], Body::Empty),
    )
    .await;
    assert_eq!(banks.status, 200, "{:?}", banks.body);
    assert!(!banks.body["banks"].as_array().unwrap().is_empty());
    assert_eq!(banks.header("cache-control"), "no-store");
    assert_eq!(
        banks.header("content-type"),
        "application/json; charset=utf-8"
    );

    let anon = send(
        &r.submission,
        request("GET", "/v1/banks", None, &[], Body::Empty),
    )
    .await;
    assert_eq!((anon.status, anon.code()), (401, "UNAUTHENTICATED"));

    let body = Body::Text(json!({"purpose": "SUBMIT_QUERY"}).to_string());
    let created = send(
        &r.submission,
        request("POST", "/v1/verifications", Some(&r.token), &[], body),
    )
    .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert!(created.body["verification_id"].is_string());

    let list = send(
        &r.view,
        request("GET", "/v1/card-queries", Some(&r.token), &[], Body::Empty),
    )
    .await;
    assert_eq!((list.status, &list.body), (200, &json!({"queries": []})));
    let other = send(
        &r.view,
        request(
            "GET",
            "/v1/card-queries/01ARZ3NDEKTSV4RRFFQ69G5FAV",
            Some(&r.token),
            &[],
            Body::Empty,
        ),
    )
    .await;
    assert_eq!((other.status, other.code()), (404, "NOT_FOUND"));

    // An unsigned callback is refused once it is past the size and type checks.
    let unsigned = send(
        &r.callback,
        request(
            "POST",
            "/v1/bank-callbacks/ICBC",
            None,
            &[],
            Body::Text("{}".into()),
        ),
    )
    .await;
    assert_eq!((unsigned.status, unsigned.code()), (401, "UNAUTHENTICATED"));
}

#[tokio::test]
async fn bodies_over_the_limit_get_the_contracts_413_declared_or_not() {
    let r = routers();
    let padded = |len: usize| {
        let json = json!({"purpose": "SUBMIT_QUERY"}).to_string();
        format!("{json}{}", " ".repeat(len - json.len()))
    };
    let big = padded(MAX_BODY_BYTES + 1);
    let length = big.len().to_string();
    for (router, method, path, token) in [
        (
            &r.submission,
            "POST",
            "/v1/verifications",
            Some(r.token.as_str()),
        ),
        (
            &r.view,
            "POST",
            "/v1/card-queries/01ARZ3NDEKTSV4RRFFQ69G5FAV/report",
            Some(&r.token),
        ),
        (
            &r.view,
            "DELETE",
            "/v1/card-queries/01ARZ3NDEKTSV4RRFFQ69G5FAV/report",
            Some(&r.token),
        ),
        (&r.callback, "POST", "/v1/bank-callbacks/ICBC", None),
    ] {
        for declared in [true, false] {
            let headers: &[(&str, &str)] = if declared {
                &[("content-length", &length)]
            } else {
                &[]
            };
            let reply = send(
                router,
                request(method, path, token, headers, Body::Text(big.clone())),
            )
            .await;
            assert_eq!(
                (reply.status, reply.code()),
                (413, "PAYLOAD_TOO_LARGE"),
                "{method} {path} declared {declared}"
            );
            assert_eq!(
                reply.header("content-type"),
                "application/json; charset=utf-8"
            );
        }
    }
    // Exactly at the limit is read.
    let exact = padded(MAX_BODY_BYTES);
    let reply = send(
        &r.submission,
        request(
            "POST",
            "/v1/verifications",
            Some(&r.token),
            &[],
            Body::Text(exact),
        ),
    )
    .await;
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    // The caller is known before the size matters.
    let headers = [("content-length", length.as_str())];
    let anon = send(
        &r.submission,
        request("POST", "/v1/verifications", None, &headers, Body::Text(big)),
    )
    .await;
    assert_eq!((anon.status, anon.code()), (401, "UNAUTHENTICATED"));
}

#[tokio::test]
async fn a_declared_type_other_than_json_gets_415() {
    let r = routers();
    let body = || Body::Text(json!({"purpose": "SUBMIT_QUERY"}).to_string());
    for ct in [
        "text/plain",
        "application/xml",
        "application/x-www-form-urlencoded",
    ] {
        let reply = send(
            &r.submission,
            request(
                "POST",
                "/v1/verifications",
                Some(&r.token),
                &[("content-type", ct)],
                body(),
            ),
        )
        .await;
        assert_eq!(
            (reply.status, reply.code()),
            (415, "UNSUPPORTED_MEDIA_TYPE"),
            "{ct}"
        );
        let reply = send(
            &r.callback,
            request(
                "POST",
                "/v1/bank-callbacks/ICBC",
                None,
                &[("content-type", ct)],
                body(),
            ),
        )
        .await;
        assert_eq!(
            (reply.status, reply.code()),
            (415, "UNSUPPORTED_MEDIA_TYPE"),
            "{ct}"
        );
    }
    // A charset parameter is fine, and no declared type is read as JSON (decision 12).
    for headers in [
        &[("content-type", "application/json; charset=utf-8")][..],
        &[],
    ] {
        // One code a minute.
        r.world.clock.advance(chrono::TimeDelta::minutes(2));
        let reply = send(
            &r.submission,
            request("POST", "/v1/verifications", Some(&r.token), headers, body()),
        )
        .await;
        assert_eq!(reply.status, 201, "{headers:?}: {:?}", reply.body);
    }
}

#[tokio::test]
async fn a_body_that_is_not_utf8_or_not_json_is_400_in_every_form() {
    let r = routers();
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let cases = [
        ("base64, not UTF-8", b64(&[0xff, 0xfe, 0x7b]), true),
        ("base64, not JSON", b64(b"purpose=SUBMIT_QUERY"), true),
        ("raw, not JSON", "purpose=SUBMIT_QUERY".to_owned(), false),
    ];
    for (what, body, base64) in cases {
        for (router, path) in [
            (&r.submission, "/v1/verifications"),
            (&r.submission, "/v1/card-queries"),
            (
                &r.view,
                "/v1/card-queries/01ARZ3NDEKTSV4RRFFQ69G5FAV/report",
            ),
        ] {
            let reply = send(router, event(path, &r.token, &body, base64)).await;
            assert_eq!(
                (reply.status, reply.code()),
                (400, "MALFORMED_REQUEST"),
                "{what}: {path}"
            );
        }
    }
    // Bytes that are not UTF-8 handed over as they are.
    let raw = request(
        "POST",
        "/v1/verifications",
        Some(&r.token),
        &[],
        Body::Binary(vec![0xff, 0xfe]),
    );
    let reply = send(&r.submission, raw).await;
    assert_eq!((reply.status, reply.code()), (400, "MALFORMED_REQUEST"));
}

#[tokio::test]
async fn refusals_name_only_the_fields_of_the_request() {
    let r = routers();
    let refusal = |reply: &Reply| {
        assert_eq!(
            (reply.status, reply.code()),
            (400, "MALFORMED_REQUEST"),
            "{:?}",
            reply.body
        );
        reply.message().to_owned()
    };
    let post = |body: Value| {
        request(
            "POST",
            "/v1/verifications",
            Some(&r.token),
            &[],
            Body::Text(body.to_string()),
        )
    };
    let m = refusal(
        &send(
            &r.submission,
            post(json!({"purpose": "SUBMIT_QUERY", "s3cr3t_pw": 1})),
        )
        .await,
    );
    assert_eq!(m, "the body has a field the request does not define");
    let m = refusal(&send(&r.submission, post(json!({}))).await);
    assert_eq!(m, "missing field `purpose`");
    let m = refusal(&send(&r.submission, post(json!({"purpose": "135790"}))).await);
    assert_eq!(m, "`purpose` does not have the expected type or value");

    // Nested: an unknown field names the object it is in, never its own name.
    let submit = |body: Value| {
        let h = [("idempotency-key", "k-1")];
        request(
            "POST",
            "/v1/card-queries",
            Some(&r.token),
            &h,
            Body::Text(body.to_string()),
        )
    };
    let valid = json!({
        "banks": ["ICBC"],
        "consent": {"agreement_version": "v1", "accepted": true},
        "verification": {"verification_id": "v", "sms_code": "123456"},
        "face_token": "f",
        "payment_password": "135790"
    });
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut v = valid.clone();
        edit(&mut v);
        v
    };
    for (body, expected) in [
        (
            with(&|v| v["consent"]["extra"] = json!(1)),
            "`consent` has a field the request does not define",
        ),
        (
            with(&|v| v["consent"]["accepted"] = json!("135790")),
            "`consent.accepted` does not have the expected type or value",
        ),
        (
            with(&|v| {
                v["verification"]
                    .as_object_mut()
                    .unwrap()
                    .remove("sms_code");
            }),
            "missing field `verification.sms_code`",
        ),
        (
            with(&|v| v["banks"] = json!([135790])),
            "`banks[0]` does not have the expected type or value",
        ),
        (
            with(&|v| v["consent"] = json!(["v1", true])),
            "`consent` must be a JSON object",
        ),
    ] {
        let m = refusal(&send(&r.submission, submit(body)).await);
        assert_eq!(m, expected);
        assert!(!m.contains("135790") && !m.contains("extra"), "{m}");
    }
}

#[test]
fn refusals_repeat_nothing_the_client_sent() {
    use crate::submission::api::VerificationRequest;
    for (raw, secret) in [
        (
            r#"{"purpose": "SUBMIT_QUERY", "s3cr3t_pw": 1}"#,
            "s3cr3t_pw",
        ),
        (r#"{"purpose": "SUBMIT_QUERY", "135790": 1}"#, "135790"),
        (r#"{"purpose": "135790"}"#, "135790"),
        (r#"{"purpose": ["135790"]}"#, "135790"),
        (r#"{"purpose": {"135790": 1}}"#, "135790"),
        (r#"{"135790": "SUBMIT_QUERY"}"#, "135790"),
    ] {
        let value = json_object(raw.as_bytes()).unwrap();
        match typed::<VerificationRequest>(&value) {
            Err(ApiError::Malformed(m)) => assert!(!m.contains(secret), "{raw}: {m}"),
            Err(other) => panic!("{raw}: {other:?}"),
            Ok(_) => panic!("{raw}: accepted"),
        }
    }
}

#[test]
fn the_step_up_body_is_read_with_the_same_rules() {
    let read = |raw: &str| {
        json_object(raw.as_bytes())
            .and_then(|v| typed::<report::ReportRequest>(&v))
            .and_then(report::step_up)
    };
    for raw in [
        r#"{"verification": "123456"}"#,
        r#"{"verification": null}"#,
        r#"{"face_token": "f", "verification": {"verification_id": "v", "sms_code": "1"}}"#,
        r#"{}"#,
        r#"{"face_token": "f", "pin": "123456"}"#,
    ] {
        match read(raw) {
            Err(ApiError::Malformed(m)) => {
                assert!(!m.contains("123456") && !m.contains("pin"), "{raw}: {m}")
            }
            Err(other) => panic!("{raw}: {other:?}"),
            Ok(_) => panic!("{raw}: accepted"),
        }
    }
    assert!(read(r#"{"face_token": "f"}"#).is_ok());
}

/// A report request that is not exactly one proof in the contract's object is the
/// client's 400, refused before the service is asked: the query here does not exist,
/// and a well-formed body for it gets the service's 404. So nothing is used up (no SMS
/// code, no face token) and no view is recorded.
#[tokio::test]
async fn report_bodies_that_are_not_one_proof_are_400_before_the_service_is_asked() {
    let r = routers();
    let path = "/v1/card-queries/01ARZ3NDEKTSV4RRFFQ69G5FAV/report";
    // Viewing and deleting read the same step-up body.
    let send_both = |body: Vec<u8>| {
        ["POST", "DELETE"]
            .map(|m| request(m, path, Some(&r.token), &[], Body::Binary(body.clone())))
    };
    let verification =
        json!({"verification_id": "01ARZ3NDEKTSV4RRFFQ69G5FAW", "sms_code": "123456"});
    let token = "a.face.token";
    let bytes = |v: Value| v.to_string().into_bytes();
    let bodies: Vec<Vec<u8>> = vec![
        bytes(json!({"verification": verification, "face_token": token})),
        b"{}".to_vec(),
        bytes(json!({"verification": null, "face_token": null})),
        bytes(json!({"verification": verification, "extra": 1})),
        bytes(json!({"face_token": token, "banks": []})),
        bytes(json!({"verification": {"verification_id": "v", "sms_code": "123456", "note": "x"}})),
        bytes(json!({"verification": {"verification_id": "v"}})),
        bytes(json!({"verification": "123456"})),
        bytes(json!({"face_token": 5})),
        b"{not json".to_vec(),
        b"".to_vec(),
        b"   ".to_vec(),
        b"null".to_vec(),
        vec![0xff, 0xfe],
        // Not the contract's object, though each holds a proof: not read field by field.
        bytes(json!([verification])),
        bytes(json!({"verification": ["v", "123456"]})),
        bytes(json!([null, token])),
    ];
    for (body, req) in bodies
        .into_iter()
        .flat_map(|b| send_both(b.clone()).map(|r| (b.clone(), r)))
    {
        let shown = String::from_utf8_lossy(&body).into_owned();
        let reply = send(&r.view, req).await;
        assert_eq!(
            (reply.status, reply.code()),
            (400, "MALFORMED_REQUEST"),
            "{shown}: {:?}",
            reply.body
        );
        // The unknown field's name is client input: not repeated (one rule for all bodies).
        assert!(
            !reply.message().contains("extra"),
            "{shown}: {}",
            reply.message()
        );
    }
    for body in [
        bytes(json!({ "verification": verification })),
        bytes(json!({ "face_token": token })),
    ]
    .into_iter()
    .flat_map(send_both)
    {
        let reply = send(&r.view, body).await;
        assert_eq!(
            (reply.status, reply.code()),
            (404, "NOT_FOUND"),
            "{:?}",
            reply.body
        );
    }
}

/// Viewing also takes a later page's cursor (alone, not beside a proof) and a page size
/// of 1 to 1000; a deletion takes neither. Bad ones are 400 before the service is asked
/// (the query here does not exist: a good body gets its 404).
#[tokio::test]
async fn report_page_bodies_are_read_by_the_contract() {
    let r = routers();
    let path = "/v1/card-queries/01ARZ3NDEKTSV4RRFFQ69G5FAV/report";
    let verification =
        json!({"verification_id": "01ARZ3NDEKTSV4RRFFQ69G5FAW", "sms_code": "123456"});
    let call = |method: &str, body: Value| {
        request(
            method,
            path,
            Some(&r.token),
            &[],
            Body::Binary(body.to_string().into_bytes()),
        )
    };
    let cases = [
        ("POST", json!({"cursor": "0.1.x", "face_token": "f"}), 400),
        (
            "POST",
            json!({"cursor": "0.1.x", "verification": verification}),
            400,
        ),
        ("POST", json!({"cursor": 5}), 400),
        ("POST", json!({"cursor": null}), 400),
        ("POST", json!({"page_size": 10}), 400),
        ("POST", json!({"face_token": "f", "page_size": 0}), 400),
        ("POST", json!({"face_token": "f", "page_size": 1001}), 400),
        ("POST", json!({"face_token": "f", "page_size": -1}), 400),
        ("POST", json!({"face_token": "f", "page_size": "10"}), 400),
        ("POST", json!({"cursor": "0.1.x", "page_size": 1.5}), 400),
        ("DELETE", json!({"cursor": "0.1.x"}), 400),
        ("DELETE", json!({"face_token": "f", "page_size": 10}), 400),
        ("POST", json!({"cursor": "0.1.x"}), 404),
        ("POST", json!({"cursor": "0.1.x", "page_size": 1000}), 404),
        ("POST", json!({"face_token": "f", "page_size": 1}), 404),
        ("DELETE", json!({"face_token": "f"}), 404),
    ];
    for (method, body, status) in cases {
        let reply = send(&r.view, call(method, body.clone())).await;
        let code = if status == 400 {
            "MALFORMED_REQUEST"
        } else {
            "NOT_FOUND"
        };
        assert_eq!(
            (reply.status, reply.code()),
            (status, code),
            "{method} {body}: {:?}",
            reply.body
        );
    }
}

#[test]
fn cursor_refusals_have_codes_of_their_own() {
    use crate::error::ServiceError;
    let invalid = ApiError::from(ServiceError::InvalidCursor);
    assert_eq!((invalid.status(), invalid.code()), (400, "INVALID_CURSOR"));
    let expired = ApiError::from(ServiceError::CursorExpired);
    assert_eq!((expired.status(), expired.code()), (403, "CURSOR_EXPIRED"));
}

/// The contract's 410: the error and the query's record (without its cards or summary:
/// the domain hands over only the record), nothing else.
#[test]
fn an_expired_report_is_410_with_the_record_in_the_body() {
    use crate::error::ServiceError;
    let query = json!({"query_id": "01ARZ3NDEKTSV4RRFFQ69G5FAV", "report_status": "EXPIRED"});
    let e = ApiError::from(ServiceError::ReportExpired {
        query: query.clone(),
    });
    assert_eq!((e.status(), e.code()), (410, "REPORT_EXPIRED"));
    let body = e.body();
    assert_eq!(body["error"]["code"], "REPORT_EXPIRED");
    assert_eq!(body["query"], query);
    assert!(body.get("summary").is_none() && body["query"].get("cards").is_none());
    let mut keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["error", "query"]);
}

/// A report the user deleted: 410 with its own code (distinct from expiry) and the record.
#[test]
fn a_deleted_report_is_410_report_deleted_with_the_record() {
    use crate::error::ServiceError;
    let query = json!({"query_id": "01ARZ3NDEKTSV4RRFFQ69G5FAV", "report_status": "DELETED"});
    let e = ApiError::from(ServiceError::ReportDeleted {
        query: query.clone(),
    });
    assert_eq!((e.status(), e.code()), (410, "REPORT_DELETED"));
    let body = e.body();
    assert_eq!(body["query"], query);
    let mut keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["error", "query"]);
}

/// The SMS channel's refusal: 503 with its own code and the wait in the header and body.
#[test]
fn an_sms_channel_refusal_is_503_sms_unavailable_with_retry_after() {
    use crate::error::ServiceError;
    let e = ApiError::from(ServiceError::SmsUnavailable {
        retry_after_secs: 2,
    });
    assert_eq!((e.status(), e.code()), (503, "SMS_UNAVAILABLE"));
    assert_eq!(e.body()["error"]["retry_after_seconds"], 2);
    let resp = axum::response::IntoResponse::into_response(e);
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "2");
}

/// The domain is a crate without HTTP dependencies, so Cargo keeps it from this layer.
/// What is left to keep: within `shared`, the adapters, stream decoding and telemetry do
/// not reach into the inbound layer either (only the composition root wires it).
#[test]
fn nothing_but_the_composition_root_uses_the_inbound_layer() {
    fn sources(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    let exempt = |p: &std::path::Path| {
        let rel = p
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        rel.starts_with("inbound/") || ["bootstrap.rs", "lib.rs"].contains(&rel.as_str())
    };
    let mut offenders = Vec::new();
    for file in files.iter().filter(|p| !exempt(p)) {
        let text = std::fs::read_to_string(file).unwrap();
        for needle in ["crate::inbound", "inbound::"] {
            if text
                .lines()
                .any(|l| !l.trim_start().starts_with("//") && l.contains(needle))
            {
                offenders.push(format!("{}: {needle}", file.display()));
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:#?}");
}
