//! The limits of the submission path under bursts, over HTTP through the local stack
//! (`cargo lambda watch` serving `submit-query`, DynamoDB Local, the SNS emulator): many
//! requests of one user released together by a barrier, as an attacker with a valid
//! account and a script would send them. Each limit must hold whatever the concurrency:
//! at most five comparisons per SMS code, at most five payment-password comparisons per
//! lock window (and a lock no later failure clears), one answer per idempotency key,
//! one code SMS a minute, one active query.
//!
//! Run with `python3 infra/local/stack.py exec --with-api -- cargo test -p system-tests
//! --test api concurrency::`.

use std::collections::BTreeSet;
use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{json, Value};
use shared::model::ids::{UserId, VerificationId};
use shared::model::purpose::Purpose;
use shared::model::timestamp;
use shared::security::sms_code::CodeHasher;
use testkit::api::{Api, Reply, TestUser, UserKind};
use testkit::seed::PAYMENT_PASSWORD;
use tokio::sync::Barrier;

const CARD_QUERIES: &str = "/v1/card-queries";
const WRONG_PASSWORD: &str = "246801";
const BANKS: [&str; 2] = ["CMB", "ICBC"];

fn now() -> DateTime<Utc> {
    Utc::now()
}

/// An eligible user whose chosen banks never answer, so no report changes the user's
/// state under the test.
async fn held_user(api: &Api) -> TestUser {
    let user = api.new_user(UserKind::Eligible).await;
    for bank in BANKS {
        api.sim_behave(&user, bank, json!({"mode": "never"})).await;
    }
    user
}

async fn agreement(api: &Api, user: &TestUser) -> String {
    let r = api.get_json("/v1/eligibility", &api.token(user)).await;
    assert_eq!(r.status, 200, "{r:?}");
    r.body.unwrap()["agreement_version"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A SUBMIT_QUERY code written straight to the table (as the service stores one, a
/// keyed hash), so a test can hold more codes than the SMS limits would send it.
async fn planted_code(api: &Api, user: &TestUser, n: u32) -> (String, String) {
    let key = std::fs::read_to_string(api.keys.path("sms_code_key.hex")).unwrap();
    let hasher = CodeHasher::new(&hex::decode(key.trim()).unwrap()).unwrap();
    let id = VerificationId::generate();
    let code = format!("{:06}", 300_000 + n);
    let user_id = UserId::parse(&user.id).unwrap();
    let hash = hasher.hash(&user_id, &id, Purpose::SubmitQuery, &code);
    api.clients
        .dynamodb
        .put_item()
        .table_name(&api.tables.main)
        .item("pk", AttributeValue::S(format!("USER#{}", user.id)))
        .item("sk", AttributeValue::S(format!("VERIF#{id}")))
        .item("entity", AttributeValue::S("VERIFICATION".into()))
        .item("verification_id", AttributeValue::S(id.to_string()))
        .item("user_id", AttributeValue::S(user.id.clone()))
        .item("purpose", AttributeValue::S("SUBMIT_QUERY".into()))
        .item("code_hash", AttributeValue::S(hash))
        .item(
            "expires_at",
            AttributeValue::S(timestamp::format(now() + TimeDelta::minutes(5))),
        )
        .item("attempts", AttributeValue::N("0".into()))
        .item("used", AttributeValue::Bool(false))
        .send()
        .await
        .expect("the code is stored");
    (id.to_string(), code)
}

fn submission(agreement: &str, code: &(String, String), face: &str, password: &str) -> Value {
    json!({
        "banks": BANKS,
        "consent": { "agreement_version": agreement, "accepted": true },
        "verification": { "verification_id": code.0, "sms_code": code.1 },
        "face_token": face,
        "payment_password": password,
    })
}

/// Sends every `(key, body)` submission at once (released by a barrier).
async fn burst(api: &Arc<Api>, user: &TestUser, requests: Vec<(String, Value)>) -> Vec<Reply> {
    let barrier = Arc::new(Barrier::new(requests.len()));
    let token = api.token(user);
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|(key, body)| {
            let (api, barrier, token) = (api.clone(), barrier.clone(), token.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                submit(&api, &token, &key, &body).await
            })
        })
        .collect();
    let mut replies = Vec::new();
    for t in tasks {
        replies.push(t.await.unwrap());
    }
    replies
}

async fn submit(api: &Api, token: &str, key: &str, body: &Value) -> Reply {
    api.call(
        "POST",
        CARD_QUERIES,
        Some(token),
        &[("Idempotency-Key", key)],
        Some(body.to_string()),
    )
    .await
}

async fn state_attr(api: &Api, user: &TestUser, attr: &str) -> Option<AttributeValue> {
    api.clients
        .dynamodb
        .get_item()
        .table_name(&api.tables.main)
        .key("pk", AttributeValue::S(format!("USER#{}", user.id)))
        .key("sk", AttributeValue::S("STATE".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .and_then(|mut i| i.remove(attr))
}

async fn code_attempts(api: &Api, user: &TestUser, verification_id: &str) -> u32 {
    let item = api
        .clients
        .dynamodb
        .get_item()
        .table_name(&api.tables.main)
        .key("pk", AttributeValue::S(format!("USER#{}", user.id)))
        .key("sk", AttributeValue::S(format!("VERIF#{verification_id}")))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .expect("the verification");
    match &item["attempts"] {
        AttributeValue::N(n) => n.parse().unwrap(),
        other => panic!("attempts: {other:?}"),
    }
}

async fn query_records(api: &Api, user: &TestUser) -> usize {
    api.clients
        .dynamodb
        .query()
        .table_name(&api.tables.main)
        .index_name("gsi1")
        .key_condition_expression("gsi1pk = :pk")
        .expression_attribute_values(":pk", AttributeValue::S(format!("USER#{}", user.id)))
        .send()
        .await
        .unwrap()
        .count() as usize
}

fn count(replies: &[Reply], status: u16, code: Option<&str>) -> usize {
    replies
        .iter()
        .filter(|r| r.status == status && r.code() == code)
        .count()
}

#[tokio::test]
async fn fifty_one_wrong_passwords_at_once_lock_the_account_for_good() {
    let api = Arc::new(Api::get().await);
    let user = held_user(&api).await;
    let agreement = agreement(&api, &user).await;
    let mut requests = Vec::new();
    // 51, not a multiple of five: a lock that a later failure clears would show.
    for i in 0..51 {
        let code = planted_code(&api, &user, i).await;
        let body = submission(
            &agreement,
            &code,
            &api.face_token(&user, Purpose::SubmitQuery),
            WRONG_PASSWORD,
        );
        requests.push((format!("pw-{i}"), body));
    }
    let replies = burst(&api, &user, requests).await;
    let invalid = count(&replies, 422, Some("PAYMENT_PASSWORD_INVALID"));
    let locked = count(&replies, 423, Some("PAYMENT_PASSWORD_LOCKED"));
    // Sent while the fifth comparison still ran: "too many at once, retry".
    let busy = count(&replies, 429, Some("TOO_MANY_REQUESTS"));
    assert_eq!(invalid + locked + busy, replies.len(), "{replies:#?}");
    println!("51 parallel wrong passwords: {invalid} × 422, {locked} × 423, {busy} × 429");
    assert!(
        invalid <= 4,
        "{invalid} wrong passwords were compared before the lock (at most 4, the 5th locks)"
    );

    // Locked afterwards: the right password with a fresh code and face token is refused.
    let until = state_attr(&api, &user, "password_locked_until")
        .await
        .expect("the account is locked");
    let AttributeValue::S(until) = until else {
        panic!("{until:?}")
    };
    let until = timestamp::parse(&until).unwrap();
    assert!(
        until > now() + TimeDelta::hours(23),
        "locked for 24 hours: {until}"
    );
    let code = planted_code(&api, &user, 99).await;
    let right = submission(
        &agreement,
        &code,
        &api.face_token(&user, Purpose::SubmitQuery),
        PAYMENT_PASSWORD,
    );
    let reply = submit(&api, &api.token(&user), "pw-right", &right).await;
    assert_eq!(
        (reply.status, reply.code()),
        (423, Some("PAYMENT_PASSWORD_LOCKED")),
        "{reply:?}"
    );
    assert_eq!(query_records(&api, &user).await, 0);
}

#[tokio::test]
async fn fifty_wrong_codes_at_once_compare_five_and_burn_the_code() {
    let api = Arc::new(Api::get().await);
    let user = held_user(&api).await;
    let agreement = agreement(&api, &user).await;
    let (id, right) = api.verification(&user, "SUBMIT_QUERY").await;
    let right_n: u32 = right.parse().unwrap();
    let requests = (1..=50)
        .map(|i| {
            let wrong = format!("{:06}", (right_n + i) % 1_000_000);
            let body = submission(
                &agreement,
                &(id.clone(), wrong),
                &api.face_token(&user, Purpose::SubmitQuery),
                PAYMENT_PASSWORD,
            );
            (format!("code-{i}"), body)
        })
        .collect();
    let replies = burst(&api, &user, requests).await;
    assert_eq!(
        count(&replies, 422, Some("VERIFICATION_FAILED")),
        50,
        "{replies:#?}"
    );
    let attempts = code_attempts(&api, &user, &id).await;
    println!("attempts after 50 parallel wrong codes: {attempts}");
    assert_eq!(attempts, 5, "attempts after 50 parallel wrong codes");
    // Five were compared: the right code is refused now.
    let body = submission(
        &agreement,
        &(id.clone(), right),
        &api.face_token(&user, Purpose::SubmitQuery),
        PAYMENT_PASSWORD,
    );
    let reply = submit(&api, &api.token(&user), "code-right", &body).await;
    assert_eq!(
        (reply.status, reply.code()),
        (422, Some("VERIFICATION_FAILED")),
        "{reply:?}"
    );
    assert_eq!(code_attempts(&api, &user, &id).await, 5);
    assert_eq!(query_records(&api, &user).await, 0);
}

#[tokio::test]
async fn fifty_twin_submissions_get_one_query_and_the_original_answer() {
    let api = Arc::new(Api::get().await);
    let user = held_user(&api).await;
    let agreement = agreement(&api, &user).await;
    let code = api.verification(&user, "SUBMIT_QUERY").await;
    let body = submission(
        &agreement,
        &code,
        &api.face_token(&user, Purpose::SubmitQuery),
        PAYMENT_PASSWORD,
    );
    let replies = burst(&api, &user, vec![("twin".to_owned(), body.clone()); 50]).await;

    let mut ids = BTreeSet::new();
    let mut waiting = 0;
    for r in &replies {
        match (r.status, r.code()) {
            (202, None) => {
                ids.insert(r.body.as_ref().unwrap()["query_id"].to_string());
            }
            (409, Some("IDEMPOTENCY_IN_PROGRESS")) => {
                let after = r.headers["retry-after"].to_str().unwrap();
                assert!(after.parse::<u64>().unwrap() >= 1, "Retry-After: {after}");
                waiting += 1;
            }
            _ => panic!("expected 202 or 409 IDEMPOTENCY_IN_PROGRESS, got {r:?}"),
        }
    }
    // The ones told to wait get the original 202 when they retry.
    for _ in 0..waiting {
        let again = submit(&api, &api.token(&user), "twin", &body).await;
        assert_eq!(again.status, 202, "{again:?}");
        ids.insert(again.body.as_ref().unwrap()["query_id"].to_string());
    }
    println!(
        "50 parallel twins: {} × 202, {waiting} × 409 then 202",
        50 - waiting
    );
    assert_eq!(ids.len(), 1, "one query id for one key: {ids:?}");
    assert_eq!(query_records(&api, &user).await, 1);
}

#[tokio::test]
async fn fifty_submissions_under_different_keys_make_one_active_query() {
    let api = Arc::new(Api::get().await);
    let user = held_user(&api).await;
    let agreement = agreement(&api, &user).await;
    let mut requests = Vec::new();
    for i in 0..50 {
        let code = planted_code(&api, &user, i).await;
        let body = submission(
            &agreement,
            &code,
            &api.face_token(&user, Purpose::SubmitQuery),
            PAYMENT_PASSWORD,
        );
        requests.push((format!("one-{i}"), body));
    }
    let replies = burst(&api, &user, requests).await;
    assert_eq!(count(&replies, 202, None), 1, "{replies:#?}");
    let busy = count(&replies, 429, Some("TOO_MANY_REQUESTS"));
    assert_eq!(
        count(&replies, 409, Some("QUERY_IN_PROGRESS")) + busy,
        49,
        "{replies:#?}"
    );
    assert_eq!(
        state_attr(&api, &user, "password_locked_until").await,
        None,
        "the right password locks nothing"
    );
    assert_eq!(query_records(&api, &user).await, 1);
}

#[tokio::test]
async fn fifty_code_requests_at_once_send_one_sms() {
    let api = Arc::new(Api::get().await);
    let user = held_user(&api).await;
    let barrier = Arc::new(Barrier::new(50));
    let token = api.token(&user);
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (api, barrier, token) = (api.clone(), barrier.clone(), token.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                api.post_json(
                    "/v1/verifications",
                    &token,
                    &json!({"purpose": "SUBMIT_QUERY"}),
                )
                .await
            })
        })
        .collect();
    let mut replies = Vec::new();
    for t in tasks {
        replies.push(t.await.unwrap());
    }
    assert_eq!(count(&replies, 201, None), 1, "{replies:#?}");
    assert_eq!(
        count(&replies, 429, Some("TOO_MANY_REQUESTS")),
        49,
        "{replies:#?}"
    );
    let codes = api
        .sms_to(&user.phone)
        .await
        .into_iter()
        .filter(|t| testkit::api::find_code(t).is_some())
        .count();
    assert_eq!(codes, 1, "one code SMS for fifty requests");
}
