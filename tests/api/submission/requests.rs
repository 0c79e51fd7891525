//! The shape of a request: malformed bodies, the 16 KiB body limit, the Content-Type,
//! other methods.

use super::*;

#[tokio::test]
async fn malformed_bodies_are_refused_with_400_and_change_nothing() {
    let api = Api::get().await;
    let user = held_user(&api).await;
    let agreement = agreement_version(&api, &user).await;
    let token = api.token(&user);

    // POST /v1/verifications first (before the one code of the minute is taken).
    let before = api.snapshot(&user).await;
    for (what, raw) in [
        (
            "malformed JSON",
            Some(r#"{"purpose": "SUBMIT_QUERY""#.to_owned()),
        ),
        (
            "unknown field",
            Some(r#"{"purpose": "SUBMIT_QUERY", "phone": "+8613800000000"}"#.to_owned()),
        ),
        ("missing field", Some("{}".to_owned())),
        (
            "unknown purpose",
            Some(r#"{"purpose": "ANYTHING"}"#.to_owned()),
        ),
        ("wrong type", Some(r#"{"purpose": 1}"#.to_owned())),
        ("JSON that is not an object", Some("[]".to_owned())),
        ("empty body", Some(String::new())),
        ("no body", None),
    ] {
        let reply = api
            .call("POST", VERIFICATIONS, Some(&token), &[], raw)
            .await;
        assert_error(
            &reply,
            400,
            "MALFORMED_REQUEST",
            &format!("verification: {what}"),
        );
    }
    assert_unchanged(
        &before,
        &api.snapshot(&user).await,
        "malformed verification requests",
    );
    assert_eq!(
        sms_count(&api, &user).await,
        0,
        "no SMS for a malformed request"
    );

    let (verification_id, code) = api.verification(&user, "SUBMIT_QUERY").await;
    let f = face(&api, &user);
    let valid = submission(&agreement, &verification_id, &code, &f);
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut v = valid.clone();
        edit(&mut v);
        Some(v.to_string())
    };
    let key = new_key();
    let cases: Vec<(&str, Option<String>)> = vec![
        ("malformed JSON", Some(valid.to_string()[..40].to_owned())),
        ("trailing garbage", Some(format!("{valid} x"))),
        (
            "unknown top-level field",
            with(&|v| v["debug"] = json!(true)),
        ),
        (
            "unknown field in consent",
            with(&|v| v["consent"]["signed_by"] = json!("me")),
        ),
        (
            "unknown field in verification",
            with(&|v| v["verification"]["purpose"] = json!("SUBMIT_QUERY")),
        ),
        (
            "missing payment_password",
            with(&|v| {
                v.as_object_mut().unwrap().remove("payment_password");
            }),
        ),
        (
            "missing consent",
            with(&|v| {
                v.as_object_mut().unwrap().remove("consent");
            }),
        ),
        (
            "missing consent.accepted",
            with(&|v| {
                v["consent"].as_object_mut().unwrap().remove("accepted");
            }),
        ),
        ("banks not a list", with(&|v| v["banks"] = json!("ICBC"))),
        ("bank not a string", with(&|v| v["banks"] = json!([1]))),
        (
            "accepted not a boolean",
            with(&|v| v["consent"]["accepted"] = json!("true")),
        ),
        (
            "sms_code a number",
            with(&|v| v["verification"]["sms_code"] = json!(123456)),
        ),
        ("null face_token", with(&|v| v["face_token"] = Value::Null)),
        ("JSON array", Some("[]".to_owned())),
        ("empty body", Some(String::new())),
        ("whitespace body", Some("  \n ".to_owned())),
        ("no body", None),
    ];
    for (what, raw) in cases {
        assert_refused_submission(
            &api,
            &user,
            Some(&key),
            raw,
            Some(&f.nonce),
            400,
            "MALFORMED_REQUEST",
            &format!("submission: {what}"),
        )
        .await;
    }

    // A valid body without a valid Idempotency-Key.
    let long = "k".repeat(65);
    for (what, k) in [
        ("missing Idempotency-Key", None),
        ("empty Idempotency-Key", Some("")),
        ("Idempotency-Key with a space", Some("my key")),
        ("Idempotency-Key with a dot", Some("key.1")),
        ("Idempotency-Key of 65 characters", Some(long.as_str())),
    ] {
        assert_refused_submission(
            &api,
            &user,
            k,
            Some(valid.to_string()),
            Some(&f.nonce),
            400,
            "IDEMPOTENCY_KEY_REQUIRED",
            what,
        )
        .await;
    }

    // Nothing was consumed: the same code and face token still submit.
    let ok = submit(&api, &user, &"k".repeat(64), &valid).await;
    assert_eq!(ok.status, 202, "{ok:?}");
}

#[tokio::test]
async fn bodies_over_16_kib_get_413_and_16_kib_is_accepted() {
    let api = Api::get().await;
    let user = held_user(&api).await;
    let agreement = agreement_version(&api, &user).await;
    let token = api.token(&user);
    let pad = |json: String, len: usize| {
        assert!(json.len() <= len);
        let n = len - json.len();
        format!("{json}{}", " ".repeat(n))
    };

    let before = api.snapshot(&user).await;
    let big = pad(json!({"purpose": "SUBMIT_QUERY"}).to_string(), 17 * 1024);
    let reply = api
        .call("POST", VERIFICATIONS, Some(&token), &[], Some(big))
        .await;
    assert_error(
        &reply,
        413,
        "PAYLOAD_TOO_LARGE",
        "17 KiB verification request",
    );
    assert_unchanged(
        &before,
        &api.snapshot(&user).await,
        "17 KiB verification request",
    );
    assert_eq!(sms_count(&api, &user).await, 0);

    // Exactly 16 KiB is within the limit.
    let exact = pad(json!({"purpose": "SUBMIT_QUERY"}).to_string(), 16 * 1024);
    let created = api
        .call("POST", VERIFICATIONS, Some(&token), &[], Some(exact))
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    let id = body(&created)["verification_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let code = testkit::api::sms_code(api.sms_to(&user.phone).await.last().unwrap());

    let f = face(&api, &user);
    let valid = submission(&agreement, &id, &code, &f).to_string();
    let key = new_key();
    assert_refused_submission(
        &api,
        &user,
        Some(&key),
        Some(pad(valid.clone(), 17 * 1024)),
        Some(&f.nonce),
        413,
        "PAYLOAD_TOO_LARGE",
        "17 KiB submission",
    )
    .await;
    assert_refused_submission(
        &api,
        &user,
        Some(&key),
        Some(pad(valid.clone(), 16 * 1024 + 1)),
        Some(&f.nonce),
        413,
        "PAYLOAD_TOO_LARGE",
        "16 KiB + 1 byte submission",
    )
    .await;
    let ok = submit_raw(&api, &token, Some(&key), Some(pad(valid, 16 * 1024))).await;
    assert_eq!(ok.status, 202, "a 16 KiB submission is accepted: {ok:?}");
}

/// Issue 15: a body that is not UTF-8 is the function's answer through the local stack
/// too: 400 declared as JSON, 415 declared as text (cargo lambda watch alone answers 500
/// to both before any function runs; the gate delivers such a body base64-encoded, as
/// API Gateway does: decision 60).
#[tokio::test]
async fn a_body_that_is_not_utf8_is_the_functions_answer() {
    let api = Api::get().await;
    let user = held_user(&api).await;
    let token = api.token(&user);
    let before = api.snapshot(&user).await;
    let latin1 = b"{\"purpose\": \"SUBMIT_QUERY\xe9\"}".to_vec();
    for path in [VERIFICATIONS, CARD_QUERIES] {
        for (ct, status, code) in [
            ("application/json", 400, "MALFORMED_REQUEST"),
            ("text/plain", 415, "UNSUPPORTED_MEDIA_TYPE"),
        ] {
            let headers = [("content-type", ct), ("idempotency-key", "not-utf8")];
            let reply = api
                .call_bytes("POST", path, Some(&token), &headers, Some(latin1.clone()))
                .await;
            assert_error(&reply, status, code, &format!("{path} ({ct})"));
        }
    }
    assert_unchanged(
        &before,
        &api.snapshot(&user).await,
        "bodies that are not UTF-8",
    );
    assert_eq!(sms_count(&api, &user).await, 0);
}

/// The path `/v1/card-queries` is served by two functions (POST, GET): any other method
/// reaches neither, and the local API answers the contract's 405 with both (decision 61).
#[tokio::test]
async fn other_methods_on_a_path_split_between_functions_get_405() {
    let api = Api::get().await;
    let user = held_user(&api).await;
    let token = api.token(&user);
    for method in ["TRACE", "PUT", "DELETE", "PATCH"] {
        let reply = api
            .call(method, CARD_QUERIES, Some(&token), &[], None)
            .await;
        assert_error(&reply, 405, "METHOD_NOT_ALLOWED", method);
        let allow = reply.headers.get("allow").and_then(|v| v.to_str().ok());
        let mut allowed: Vec<&str> = allow.unwrap_or_default().split(", ").collect();
        allowed.sort_unstable();
        assert_eq!(allowed, ["GET", "POST"], "{method}: Allow {allow:?}");
    }
}

#[tokio::test]
async fn other_methods_on_the_functions_paths_get_405() {
    let api = Api::get().await;
    let user = held_user(&api).await;
    let token = api.token(&user);
    let before = api.snapshot(&user).await;
    for (method, path, allow) in [
        ("DELETE", BANKS, "GET"),
        ("POST", BANKS, "GET"),
        ("PATCH", ELIGIBILITY, "GET"),
        ("PUT", VERIFICATIONS, "POST"),
        ("GET", VERIFICATIONS, "POST"),
    ] {
        let body = (method != "GET" && method != "DELETE")
            .then(|| json!({"purpose": "SUBMIT_QUERY"}).to_string());
        let reply = api.call(method, path, Some(&token), &[], body).await;
        assert_error(
            &reply,
            405,
            "METHOD_NOT_ALLOWED",
            &format!("{method} {path}"),
        );
        let allowed = reply
            .headers
            .get("allow")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("{method} {path}: 405 without an Allow header"));
        assert!(
            allowed.split(',').any(|m| m.trim() == allow),
            "{method} {path}: Allow is {allowed:?}, expected it to list {allow}"
        );
    }
    assert_unchanged(&before, &api.snapshot(&user).await, "405s");
    assert_eq!(sms_count(&api, &user).await, 0);
}

#[tokio::test]
async fn a_body_declared_as_anything_but_json_gets_415() {
    let api = Api::get().await;
    let user = held_user(&api).await;
    let token = api.token(&user);
    let before = api.snapshot(&user).await;
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/xml",
    ] {
        let reply = api
            .call(
                "POST",
                VERIFICATIONS,
                Some(&token),
                &[("content-type", ct)],
                Some(json!({"purpose": "SUBMIT_QUERY"}).to_string()),
            )
            .await;
        assert_error(&reply, 415, "UNSUPPORTED_MEDIA_TYPE", ct);
    }
    assert_unchanged(&before, &api.snapshot(&user).await, "non-JSON bodies");
    assert_eq!(sms_count(&api, &user).await, 0);
    // A charset parameter is fine.
    let reply = api
        .call(
            "POST",
            VERIFICATIONS,
            Some(&token),
            &[("content-type", "application/json; charset=utf-8")],
            Some(json!({"purpose": "SUBMIT_QUERY"}).to_string()),
        )
        .await;
    assert_eq!(reply.status, 201, "{reply:?}");
}
