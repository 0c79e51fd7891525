//! The submission endpoints over HTTP, through `cargo lambda watch` serving the
//! `submit-query` function on the local stack (DynamoDB Local, the SNS emulator):
//! `GET /v1/banks`, `GET /v1/eligibility`, `POST /v1/verifications`,
//! `POST /v1/card-queries`, the happy path and every refusal of the contract.
//!
//! Every response is checked against `functions/openapi.yaml` by `testkit::api`. Each
//! refused request is checked for its status and error code, and for leaving the
//! table as it was: a snapshot of everything stored for the user is taken before and
//! after, and only the intended counters may differ (a wrong SMS code counts on the
//! verification, a wrong payment password on the user's state). A refused submission
//! must not consume the face token's nonce.
//!
//! Tests run in parallel against one shared stack: every test has users of its own.
//! Run with `python3 infra/local/stack.py exec --with-api -- cargo test -p system-tests
//! --test submission_api`.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{json, Value};
use shared::model::timestamp;
use shared::security::dev;
use testkit::api::{Api, Reply, TestUser, UserKind};
use testkit::localkeys::{APP_JWT_AUDIENCE, APP_JWT_ISSUER, FACE_AUDIENCE, FACE_ISSUER};
use testkit::seed::PAYMENT_PASSWORD;
use time::{Duration, OffsetDateTime};

const BANKS: &str = "/v1/banks";
const ELIGIBILITY: &str = "/v1/eligibility";
const VERIFICATIONS: &str = "/v1/verifications";
const CARD_QUERIES: &str = "/v1/card-queries";

const WRONG_PASSWORD: &str = "246801";
const CHOSEN_BANKS: [&str; 3] = ["CMB", "ICBC", "CZB"];

type Snapshot = Vec<BTreeMap<String, String>>;

// ---- helpers ------------------------------------------------------------------------

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn new_key() -> String {
    format!("key-{}", ulid::Ulid::generate())
}

/// A face token the provider would issue, with its nonce.
struct Face {
    token: String,
    nonce: String,
}

fn face_with(private_pem: &str, sub: &str, result: &str, issued_at: OffsetDateTime) -> Face {
    face_issued(
        private_pem,
        FACE_AUDIENCE,
        "SUBMIT_QUERY",
        sub,
        result,
        issued_at,
    )
}

/// A face token for `audience` and `purpose` (this service's are FACE_AUDIENCE and
/// SUBMIT_QUERY for a submission).
fn face_issued(
    private_pem: &str,
    audience: &str,
    purpose: &str,
    sub: &str,
    result: &str,
    issued_at: OffsetDateTime,
) -> Face {
    let nonce = ulid::Ulid::generate().to_string();
    let provider = dev::FaceProvider {
        private_pem,
        issuer: FACE_ISSUER,
        audience,
    };
    let token = provider
        .token(sub, purpose, result, issued_at, &nonce)
        .expect("face token");
    Face { token, nonce }
}

/// A fresh, passing face token for the user.
fn face(api: &Api, user: &TestUser) -> Face {
    face_with(&api.keys.face_private, &user.id, "pass", now())
}

/// The current agreement version, as the API announces it.
async fn agreement_version(api: &Api, user: &TestUser) -> String {
    let r = api.get_json(ELIGIBILITY, &api.token(user)).await;
    assert_eq!(r.status, 200, "{r:?}");
    r.body.unwrap()["agreement_version"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A submission that is valid in every respect.
fn submission(agreement: &str, verification_id: &str, code: &str, face: &Face) -> Value {
    json!({
        "banks": CHOSEN_BANKS,
        "consent": { "agreement_version": agreement, "accepted": true },
        "verification": { "verification_id": verification_id, "sms_code": code },
        "face_token": face.token,
        "payment_password": PAYMENT_PASSWORD,
    })
}

/// What a submission carries besides the face token: the agreement version consented to
/// and an SMS code.
struct Proofs {
    agreement: String,
    verification_id: String,
    code: String,
}

impl Proofs {
    /// The current agreement version, then a new SMS code for `purpose`.
    async fn new(api: &Api, user: &TestUser, purpose: &str) -> Self {
        let agreement = agreement_version(api, user).await;
        Self::with_code(agreement, api.verification(user, purpose).await)
    }

    /// The agreement version and a code as [`Api::verification`] returns it.
    fn with_code(agreement: String, (verification_id, code): (String, String)) -> Self {
        Self {
            agreement,
            verification_id,
            code,
        }
    }

    /// A submission of these proofs that is valid in every respect.
    fn submission(&self, face: &Face) -> Value {
        submission(&self.agreement, &self.verification_id, &self.code, face)
    }
}

async fn submit_raw(api: &Api, token: &str, key: Option<&str>, body: Option<String>) -> Reply {
    let headers: Vec<(&str, &str)> = key
        .map(|k| vec![("Idempotency-Key", k)])
        .unwrap_or_default();
    api.call("POST", CARD_QUERIES, Some(token), &headers, body)
        .await
}

async fn submit(api: &Api, user: &TestUser, key: &str, body: &Value) -> Reply {
    submit_raw(api, &api.token(user), Some(key), Some(body.to_string())).await
}

fn assert_error(reply: &Reply, status: u16, code: &str, what: &str) {
    assert_eq!(
        (reply.status, reply.code()),
        (status, Some(code)),
        "{what}: expected {status} {code}, got {reply:?}"
    );
}

fn body(reply: &Reply) -> &Value {
    reply.body.as_ref().expect("a JSON body")
}

fn ts(v: &Value) -> OffsetDateTime {
    timestamp::parse(v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}")))
        .unwrap_or_else(|e| panic!("not RFC 3339: {v}: {e}"))
}

fn assert_near(t: OffsetDateTime, expected: OffsetDateTime, what: &str) {
    assert!(
        (t - expected).abs() <= Duration::seconds(60),
        "{what}: {t} is not within a minute of {expected}"
    );
}

/// Submits a refused request and checks that the user's stored items are exactly as
/// before and that the face token (if any) was not consumed.
#[allow(clippy::too_many_arguments)]
async fn assert_refused_submission(
    api: &Api,
    user: &TestUser,
    key: Option<&str>,
    body: Option<String>,
    nonce: Option<&str>,
    status: u16,
    code: &str,
    what: &str,
) -> Reply {
    let before = api.snapshot(user).await;
    let reply = submit_raw(api, &api.token(user), key, body).await;
    assert_error(&reply, status, code, what);
    let after = api.snapshot(user).await;
    assert_unchanged(&before, &after, what);
    if let Some(n) = nonce {
        assert!(
            !api.nonce_used(n).await,
            "{what}: the face token's nonce was consumed"
        );
    }
    reply
}

/// [`assert_refused_submission`] for the proofs with a fresh face token, under a new key.
async fn assert_refused_with_fresh_face(
    api: &Api,
    user: &TestUser,
    proofs: &Proofs,
    status: u16,
    code: &str,
    what: &str,
) -> Reply {
    let f = face(api, user);
    let body = proofs.submission(&f).to_string();
    assert_refused_submission(
        api,
        user,
        Some(&new_key()),
        Some(body),
        Some(&f.nonce),
        status,
        code,
        what,
    )
    .await
}

/// `(sk, attribute) → (before, after)` for every stored value that differs; whole items
/// added or removed show as `(sk, "*")`.
type Changes = BTreeMap<(String, String), (Option<String>, Option<String>)>;

fn item_key(item: &BTreeMap<String, String>) -> (String, String) {
    (
        item.get("pk").cloned().unwrap_or_default(),
        item.get("sk").cloned().unwrap_or_default(),
    )
}

fn changes(before: &Snapshot, after: &Snapshot) -> Changes {
    let index = |s: &Snapshot| -> BTreeMap<(String, String), BTreeMap<String, String>> {
        s.iter().map(|i| (item_key(i), i.clone())).collect()
    };
    let (b, a) = (index(before), index(after));
    let keys: BTreeSet<_> = b.keys().chain(a.keys()).cloned().collect();
    let mut out = Changes::new();
    for k in keys {
        let sk = unquote(&k.1);
        match (b.get(&k), a.get(&k)) {
            (Some(x), Some(y)) => {
                let attrs: BTreeSet<_> = x.keys().chain(y.keys()).cloned().collect();
                for attr in attrs {
                    let (vx, vy) = (x.get(&attr).cloned(), y.get(&attr).cloned());
                    if vx != vy {
                        out.insert((sk.clone(), attr), (vx, vy));
                    }
                }
            }
            (x, y) => {
                out.insert(
                    (format!("{}/{}", unquote(&k.0), sk), "*".into()),
                    (x.map(|i| format!("{i:?}")), y.map(|i| format!("{i:?}"))),
                );
            }
        }
    }
    out
}

fn assert_unchanged(before: &Snapshot, after: &Snapshot, what: &str) {
    let diff = changes(before, after);
    assert!(
        diff.is_empty(),
        "{what}: the refused request changed the table: {diff:#?}"
    );
}

/// `S("x")` → `x` (the snapshot holds the debug form of attribute values).
fn unquote(v: &str) -> String {
    v.strip_prefix("S(\"")
        .or_else(|| v.strip_prefix("N(\""))
        .and_then(|r| r.strip_suffix("\")"))
        .unwrap_or(v)
        .to_owned()
}

fn n(v: u64) -> Option<String> {
    Some(format!("{:?}", AttributeValue::N(v.to_string())))
}

fn state_attr(snapshot: &Snapshot, attr: &str) -> Option<String> {
    snapshot
        .iter()
        .find(|i| i.get("sk").map(|s| unquote(s)).as_deref() == Some("STATE"))
        .and_then(|i| i.get(attr).cloned())
}

fn state_version(snapshot: &Snapshot) -> u64 {
    unquote(&state_attr(snapshot, "version").expect("a state item with a version"))
        .parse()
        .unwrap()
}

fn has_query_records(snapshot: &Snapshot) -> bool {
    snapshot.iter().any(|i| {
        i.get("pk")
            .is_some_and(|p| unquote(p).starts_with("QUERY#"))
    })
}

fn user_pk(user: &TestUser) -> AttributeValue {
    AttributeValue::S(format!("USER#{}", user.id))
}

/// An eligible user whose chosen banks accept inquiries and never answer: the pipeline
/// runs on its own, and a report (which releases the lock and starts the cooldown) must
/// not change the user's state under a test of the submission API.
async fn held_user(api: &Api) -> TestUser {
    let user = api.new_user(UserKind::Eligible).await;
    for bank in CHOSEN_BANKS {
        api.sim_behave(&user, bank, json!({"mode": "never"})).await;
    }
    user
}

/// Frees the user's one-active-query slot as the report pipeline would, and (so a new
/// SMS code can be had at once) moves the last SMS two minutes into the past.
async fn clear_active_query(api: &Api, user: &TestUser) {
    api.clients
        .dynamodb
        .update_item()
        .table_name(&api.tables.main)
        .key("pk", user_pk(user))
        .key("sk", AttributeValue::S("STATE".into()))
        .update_expression("REMOVE active_query_id SET last_sms_at = :t")
        .condition_expression("attribute_exists(active_query_id)")
        .expression_attribute_values(
            ":t",
            AttributeValue::S(timestamp::format(now() - Duration::minutes(2))),
        )
        .send()
        .await
        .expect("the active query is cleared");
}

async fn sms_count(api: &Api, user: &TestUser) -> usize {
    // Code SMS only: the "report ready" notice of a submitted query may arrive too.
    api.sms_to(&user.phone)
        .await
        .iter()
        .filter(|t| testkit::api::find_code(t).is_some())
        .count()
}

async fn request_code(api: &Api, user: &TestUser, purpose: &str) -> Reply {
    api.post_json(
        VERIFICATIONS,
        &api.token(user),
        &json!({ "purpose": purpose }),
    )
    .await
}

fn other_key_app_token(user: &TestUser) -> String {
    let (other_private, _) = dev::generate_rsa();
    dev::app_token(
        &other_private,
        APP_JWT_ISSUER,
        APP_JWT_AUDIENCE,
        &user.id,
        now(),
        3600,
    )
    .unwrap()
}

// ---- happy path ---------------------------------------------------------------------

#[tokio::test]
async fn happy_path_then_idempotent_retry_key_reuse_and_query_in_progress() {
    let api = Api::get().await;
    let user = held_user(&api).await;
    let token = api.token(&user);

    let banks = api.get_json(BANKS, &token).await;
    assert_eq!(banks.status, 200, "{banks:?}");
    let codes: BTreeSet<&str> = body(&banks)["banks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["code"].as_str().unwrap())
        .collect();
    let expected: BTreeSet<&str> = [
        "ICBC", "ABC", "BOC", "CCB", "BOCOM", "PSBC", "CMB", "SPDB", "CITIC", "CEB", "HXB", "CMBC",
        "CGB", "PAB", "CIB", "CZB",
    ]
    .into_iter()
    .collect();
    assert_eq!(body(&banks)["banks"].as_array().unwrap().len(), 16);
    assert_eq!(codes, expected);
    let icbc = body(&banks)["banks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["code"] == "ICBC")
        .unwrap();
    assert_eq!(icbc["name"], "工商银行");

    let before = api.get_json(ELIGIBILITY, &token).await;
    assert_eq!(before.status, 200, "{before:?}");
    let e = body(&before);
    assert_eq!(e["real_name_verified"], true);
    assert_eq!(e["in_pilot_region"], true);
    assert_eq!(e["active_query_id"], Value::Null);
    assert_eq!(e["next_allowed_at"], Value::Null);
    assert_eq!(e["eligible"], true);
    let agreement = e["agreement_version"].as_str().unwrap().to_owned();

    let sent_before = sms_count(&api, &user).await;
    let created = request_code(&api, &user, "SUBMIT_QUERY").await;
    assert_eq!(created.status, 201, "{created:?}");
    let digits = user.phone.strip_prefix("+86").unwrap();
    assert_eq!(
        body(&created)["masked_phone"],
        format!("{}****{}", &digits[..3], &digits[7..])
    );
    assert_near(
        ts(&body(&created)["expires_at"]),
        now() + Duration::minutes(5),
        "expires_at",
    );
    let verification_id = body(&created)["verification_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let sms = api.sms_to(&user.phone).await;
    assert_eq!(sms.len(), sent_before + 1, "exactly one SMS");
    let text = sms.last().unwrap();
    assert!(
        !text.contains("http") && !text.contains("://"),
        "no link in the SMS: {text}"
    );
    let code = testkit::api::sms_code(text);

    let f = face(&api, &user);
    let req = submission(&agreement, &verification_id, &code, &f);
    let key = new_key();
    let accepted = submit(&api, &user, &key, &req).await;
    assert_eq!(accepted.status, 202, "{accepted:?}");
    let a = body(&accepted).clone();
    assert_eq!(a["status"], "PENDING");
    assert_eq!(
        a["banks"],
        json!(CHOSEN_BANKS),
        "the banks, in the order given"
    );
    let submitted_at = ts(&a["submitted_at"]);
    assert_near(submitted_at, now(), "submitted_at");
    assert_eq!(ts(&a["report_due_by"]), submitted_at + Duration::hours(24));
    let query_id = a["query_id"].as_str().unwrap().to_owned();
    assert!(
        api.nonce_used(&f.nonce).await,
        "the face token's nonce is consumed"
    );

    // Stored together: the query, its consent, the idempotency record, the lock, the
    // used code.
    let stored = api.snapshot(&user).await;
    let find = |pk: &str, sk: &str| {
        stored
            .iter()
            .find(|i| {
                i.get("pk").map(|p| unquote(p)).as_deref() == Some(pk)
                    && i.get("sk").map(|s| unquote(s)).as_deref() == Some(sk)
            })
            .unwrap_or_else(|| panic!("no item {pk} / {sk} in {stored:#?}"))
    };
    let q = find(&format!("QUERY#{query_id}"), "QUERY");
    assert_eq!(
        q.get("user_id").map(|s| unquote(s)).as_deref(),
        Some(user.id.as_str())
    );
    let consent = find(&format!("QUERY#{query_id}"), "CONSENT");
    assert_eq!(
        consent.get("agreement_version").map(|s| unquote(s)),
        Some(agreement.clone())
    );
    find(&format!("USER#{}", user.id), &format!("IDEM#{key}"));
    let verif = find(
        &format!("USER#{}", user.id),
        &format!("VERIF#{verification_id}"),
    );
    assert_eq!(verif.get("used").map(String::as_str), Some("Bool(true)"));
    assert_eq!(
        state_attr(&stored, "active_query_id").map(|s| unquote(&s)),
        Some(query_id.clone())
    );

    let after = api.get_json(ELIGIBILITY, &token).await;
    assert_eq!(after.status, 200, "{after:?}");
    assert_eq!(body(&after)["active_query_id"], query_id.as_str());
    assert_eq!(body(&after)["eligible"], false);

    // The same key and body: the first response, nothing new stored.
    let retry = submit(&api, &user, &key, &req).await;
    assert_eq!(retry.status, 202, "{retry:?}");
    assert_eq!(body(&retry), &a, "a retry returns the original response");
    assert_unchanged(&stored, &api.snapshot(&user).await, "idempotent retry");

    // The same key with another body.
    let mut other = req.clone();
    other["banks"] = json!(["ICBC"]);
    assert_refused_submission(
        &api,
        &user,
        Some(&key),
        Some(other.to_string()),
        None,
        422,
        "IDEMPOTENCY_KEY_REUSED",
        "same key, different body",
    )
    .await;

    // A new submission while the first is active.
    let f2 = face(&api, &user);
    let again = submission(&agreement, &verification_id, &code, &f2);
    assert_refused_submission(
        &api,
        &user,
        Some(&new_key()),
        Some(again.to_string()),
        Some(&f2.nonce),
        409,
        "QUERY_IN_PROGRESS",
        "second submission with a new key",
    )
    .await;
}

// ---- authentication -----------------------------------------------------------------

#[tokio::test]
async fn every_route_refuses_missing_expired_and_forged_tokens() {
    let api = Api::get().await;
    let user = held_user(&api).await;
    let agreement = agreement_version(&api, &user).await;
    let t = now();
    let token = |iss: &str, aud: &str, at: OffsetDateTime, ttl: i64| {
        dev::app_token(&api.keys.app_private, iss, aud, &user.id, at, ttl).unwrap()
    };
    let valid = api.token(&user);
    let bad: Vec<(&str, Option<String>)> = vec![
        ("no Authorization header", None),
        ("garbage bearer token", Some("Bearer not-a-jwt".into())),
        ("empty bearer token", Some("Bearer ".into())),
        ("token without the Bearer scheme", Some(valid.clone())),
        ("Basic credentials", Some("Basic dXNlcjpwYXNz".into())),
        (
            "expired JWT",
            Some(format!(
                "Bearer {}",
                token(
                    APP_JWT_ISSUER,
                    APP_JWT_AUDIENCE,
                    t - Duration::hours(2),
                    3600
                )
            )),
        ),
        (
            "JWT not valid yet",
            Some(format!(
                "Bearer {}",
                token(
                    APP_JWT_ISSUER,
                    APP_JWT_AUDIENCE,
                    t + Duration::hours(1),
                    3600
                )
            )),
        ),
        (
            "JWT signed by another key",
            Some(format!("Bearer {}", other_key_app_token(&user))),
        ),
        (
            "JWT for another audience",
            Some(format!(
                "Bearer {}",
                token(APP_JWT_ISSUER, "another-app", t, 3600)
            )),
        ),
        (
            "JWT from another issuer",
            Some(format!(
                "Bearer {}",
                token("https://evil.example", APP_JWT_AUDIENCE, t, 3600)
            )),
        ),
    ];
    let f = face(&api, &user);
    let submit_body = submission(
        &agreement,
        &ulid::Ulid::generate().to_string(),
        "123456",
        &f,
    )
    .to_string();
    let key = new_key();
    let routes: Vec<(&str, &str, Option<String>)> = vec![
        ("GET", BANKS, None),
        ("GET", ELIGIBILITY, None),
        (
            "POST",
            VERIFICATIONS,
            Some(json!({"purpose": "SUBMIT_QUERY"}).to_string()),
        ),
        ("POST", CARD_QUERIES, Some(submit_body)),
    ];
    let before = api.snapshot(&user).await;
    for (method, path, body) in &routes {
        for (what, auth) in &bad {
            let mut headers: Vec<(&str, &str)> = vec![("Idempotency-Key", key.as_str())];
            if let Some(a) = auth {
                headers.push(("Authorization", a.as_str()));
            }
            let reply = api.call(method, path, None, &headers, body.clone()).await;
            assert_error(
                &reply,
                401,
                "UNAUTHENTICATED",
                &format!("{method} {path}: {what}"),
            );
        }
    }
    assert_unchanged(&before, &api.snapshot(&user).await, "401s");
    assert_eq!(
        sms_count(&api, &user).await,
        0,
        "no SMS was sent for a refused request"
    );
    assert!(!api.nonce_used(&f.nonce).await);
    // The valid token works.
    assert_eq!(api.get_json(BANKS, &valid).await.status, 200);
}

// ---- malformed requests -------------------------------------------------------------

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

// ---- eligibility --------------------------------------------------------------------

#[tokio::test]
async fn users_not_real_name_or_outside_the_pilot_get_403_on_both_posts() {
    let api = Api::get().await;
    for (kind, code, real_name, in_pilot) in [
        (UserKind::NotRealName, "NOT_REAL_NAME_VERIFIED", false, true),
        (UserKind::OutsidePilot, "REGION_NOT_IN_PILOT", true, false),
    ] {
        let user = api.new_user(kind).await;
        let token = api.token(&user);
        let e = api.get_json(ELIGIBILITY, &token).await;
        assert_eq!(e.status, 200, "{e:?}");
        assert_eq!(body(&e)["real_name_verified"], real_name);
        assert_eq!(body(&e)["in_pilot_region"], in_pilot);
        assert_eq!(body(&e)["eligible"], false);
        let agreement = body(&e)["agreement_version"].as_str().unwrap().to_owned();

        let before = api.snapshot(&user).await;
        let reply = request_code(&api, &user, "SUBMIT_QUERY").await;
        assert_error(&reply, 403, code, &format!("{kind:?}: verification"));
        assert_unchanged(&before, &api.snapshot(&user).await, "403 verification");
        assert_eq!(sms_count(&api, &user).await, 0, "{kind:?}: no SMS");

        let f = face(&api, &user);
        let req = submission(
            &agreement,
            &ulid::Ulid::generate().to_string(),
            "123456",
            &f,
        );
        assert_refused_submission(
            &api,
            &user,
            Some(&new_key()),
            Some(req.to_string()),
            Some(&f.nonce),
            403,
            code,
            &format!("{kind:?}: submission"),
        )
        .await;
    }
}

// ---- banks and consent --------------------------------------------------------------

#[tokio::test]
async fn invalid_banks_and_missing_consent_get_422() {
    let api = Api::get().await;
    let user = held_user(&api).await;
    let p = Proofs::new(&api, &user, "SUBMIT_QUERY").await;
    let f = face(&api, &user);
    let valid = p.submission(&f);
    let key = new_key();
    let with = |field: &str, value: Value| {
        let mut req = valid.clone();
        req[field] = value;
        req
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        ("no bank", with("banks", json!([])), "INVALID_BANKS"),
        (
            "a bank twice",
            with("banks", json!(["ICBC", "CMB", "ICBC"])),
            "INVALID_BANKS",
        ),
        (
            "an unknown bank",
            with("banks", json!(["ICBC", "HSBC"])),
            "INVALID_BANKS",
        ),
        (
            "a lower-case code",
            with("banks", json!(["icbc"])),
            "INVALID_BANKS",
        ),
        ("an empty code", with("banks", json!([""])), "INVALID_BANKS"),
        (
            "consent not accepted",
            with(
                "consent",
                json!({"agreement_version": p.agreement, "accepted": false}),
            ),
            "CONSENT_REQUIRED",
        ),
        (
            "an outdated agreement",
            with(
                "consent",
                json!({"agreement_version": "2020-01", "accepted": true}),
            ),
            "CONSENT_REQUIRED",
        ),
        (
            "an empty agreement version",
            with(
                "consent",
                json!({"agreement_version": "", "accepted": true}),
            ),
            "CONSENT_REQUIRED",
        ),
    ];
    for (what, req, code) in cases {
        assert_refused_submission(
            &api,
            &user,
            Some(&key),
            Some(req.to_string()),
            Some(&f.nonce),
            422,
            code,
            what,
        )
        .await;
    }
    // Refusals are not recorded under the key: the same key then submits.
    let ok = submit(&api, &user, &key, &valid).await;
    assert_eq!(ok.status, 202, "{ok:?}");
}

// ---- SMS verification ---------------------------------------------------------------

#[tokio::test]
async fn a_wrong_code_counts_one_attempt_and_the_right_code_then_works() {
    let api = Api::get().await;
    let user = held_user(&api).await;
    let p = Proofs::new(&api, &user, "SUBMIT_QUERY").await;
    let wrong: String = p
        .code
        .chars()
        .map(|c| char::from(b'0' + (c.to_digit(10).unwrap() as u8 + 1) % 10))
        .collect();
    let key = new_key();

    let f = face(&api, &user);
    let before = api.snapshot(&user).await;
    let reply = submit(
        &api,
        &user,
        &key,
        &submission(&p.agreement, &p.verification_id, &wrong, &f),
    )
    .await;
    assert_error(&reply, 422, "VERIFICATION_FAILED", "wrong code");
    let after = api.snapshot(&user).await;
    let expected: Changes = [(
        (
            format!("VERIF#{}", p.verification_id),
            "attempts".to_owned(),
        ),
        (n(0), n(1)),
    )]
    .into_iter()
    .collect();
    assert_eq!(
        changes(&before, &after),
        expected,
        "only the code's attempts changed"
    );
    assert!(!has_query_records(&after), "no query record");
    assert!(
        !api.nonce_used(&f.nonce).await,
        "the face token was not consumed"
    );

    // A code that is not six digits is refused without counting.
    for malformed in ["12345", "1234567", "abcdef"] {
        assert_refused_submission(
            &api,
            &user,
            Some(&key),
            Some(submission(&p.agreement, &p.verification_id, malformed, &f).to_string()),
            Some(&f.nonce),
            422,
            "VERIFICATION_FAILED",
            &format!("code {malformed:?}"),
        )
        .await;
    }

    let ok = submit(&api, &user, &key, &p.submission(&f)).await;
    assert_eq!(ok.status, 202, "the right code still works: {ok:?}");
}

#[tokio::test]
async fn an_expired_code_is_refused() {
    let api = Api::get().await;
    let user = held_user(&api).await;
    let p = Proofs::new(&api, &user, "SUBMIT_QUERY").await;

    let key = [
        ("pk", user_pk(&user)),
        (
            "sk",
            AttributeValue::S(format!("VERIF#{}", p.verification_id)),
        ),
    ];
    let db = &api.clients.dynamodb;
    let item = db
        .get_item()
        .table_name(&api.tables.main)
        .key(key[0].0, key[0].1.clone())
        .key(key[1].0, key[1].1.clone())
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .expect("the verification is stored");
    let expires_at = timestamp::parse(item["expires_at"].as_s().unwrap()).unwrap();
    db.update_item()
        .table_name(&api.tables.main)
        .key(key[0].0, key[0].1.clone())
        .key(key[1].0, key[1].1.clone())
        .update_expression("SET expires_at = :t")
        .expression_attribute_values(
            ":t",
            AttributeValue::S(timestamp::format(expires_at - Duration::minutes(6))),
        )
        .send()
        .await
        .unwrap();

    assert_refused_with_fresh_face(&api, &user, &p, 422, "VERIFICATION_FAILED", "expired code")
        .await;
}

#[tokio::test]
async fn a_used_code_is_refused() {
    let api = Api::get().await;
    let user = held_user(&api).await;
    let p = Proofs::new(&api, &user, "SUBMIT_QUERY").await;
    let ok = submit(&api, &user, &new_key(), &p.submission(&face(&api, &user))).await;
    assert_eq!(ok.status, 202, "{ok:?}");
    clear_active_query(&api, &user).await;

    assert_refused_with_fresh_face(&api, &user, &p, 422, "VERIFICATION_FAILED", "reused code")
        .await;
}

#[tokio::test]
async fn a_view_report_code_does_not_submit() {
    let api = Api::get().await;
    let user = held_user(&api).await;
    let p = Proofs::new(&api, &user, "VIEW_REPORT").await;
    assert_refused_with_fresh_face(
        &api,
        &user,
        &p,
        422,
        "VERIFICATION_FAILED",
        "VIEW_REPORT code",
    )
    .await;
}

#[tokio::test]
async fn another_users_verification_is_refused() {
    let api = Api::get().await;
    let owner = held_user(&api).await;
    let intruder = held_user(&api).await;
    let agreement = agreement_version(&api, &intruder).await;
    let p = Proofs::with_code(agreement, api.verification(&owner, "SUBMIT_QUERY").await);

    let owner_before = api.snapshot(&owner).await;
    assert_refused_with_fresh_face(
        &api,
        &intruder,
        &p,
        422,
        "VERIFICATION_FAILED",
        "another user's verification",
    )
    .await;
    assert_unchanged(
        &owner_before,
        &api.snapshot(&owner).await,
        "the owner's items",
    );

    // The owner's code is intact.
    let ok = submit(&api, &owner, &new_key(), &p.submission(&face(&api, &owner))).await;
    assert_eq!(ok.status, 202, "{ok:?}");
}

#[tokio::test]
async fn a_second_code_within_a_minute_gets_429_with_retry_after() {
    let api = Api::get().await;
    let user = held_user(&api).await;
    api.verification(&user, "SUBMIT_QUERY").await;
    let sent = sms_count(&api, &user).await;
    for purpose in ["SUBMIT_QUERY", "VIEW_REPORT"] {
        let before = api.snapshot(&user).await;
        let reply = request_code(&api, &user, purpose).await;
        assert_error(&reply, 429, "TOO_MANY_REQUESTS", purpose);
        let retry_after: u64 = reply
            .headers
            .get("retry-after")
            .expect("a Retry-After header")
            .to_str()
            .unwrap()
            .parse()
            .expect("Retry-After in seconds");
        assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
        assert_eq!(body(&reply)["error"]["retry_after_seconds"], retry_after);
        assert_unchanged(&before, &api.snapshot(&user).await, "429");
        assert_eq!(sms_count(&api, &user).await, sent, "no second SMS");
    }
}

// ---- face verification --------------------------------------------------------------

#[tokio::test]
async fn forged_stale_failed_and_other_users_face_tokens_are_refused() {
    let api = Api::get().await;
    let user = held_user(&api).await;
    let other = held_user(&api).await;
    let p = Proofs::new(&api, &user, "SUBMIT_QUERY").await;
    let (other_private, _) = dev::generate_ed25519();
    let key = new_key();
    let cases = [
        (
            "forged (another key)",
            face_with(&other_private, &user.id, "pass", now()),
        ),
        (
            "stale (issued 301 s ago)",
            face_with(
                &api.keys.face_private,
                &user.id,
                "pass",
                now() - Duration::seconds(301),
            ),
        ),
        ("another user's token", face(&api, &other)),
        (
            "issued for another service",
            face_issued(
                &api.keys.face_private,
                "another-service",
                "SUBMIT_QUERY",
                &user.id,
                "pass",
                now(),
            ),
        ),
        (
            "a pass taken to view a report",
            face_issued(
                &api.keys.face_private,
                FACE_AUDIENCE,
                "VIEW_REPORT",
                &user.id,
                "pass",
                now(),
            ),
        ),
        (
            "a failed check",
            face_with(&api.keys.face_private, &user.id, "fail", now()),
        ),
        (
            "issued in the future",
            face_with(
                &api.keys.face_private,
                &user.id,
                "pass",
                now() + Duration::minutes(5),
            ),
        ),
        (
            "not a token",
            Face {
                token: "not-a-token".into(),
                nonce: ulid::Ulid::generate().to_string(),
            },
        ),
    ];
    for (what, f) in &cases {
        assert_refused_submission(
            &api,
            &user,
            Some(&key),
            Some(p.submission(f).to_string()),
            Some(&f.nonce),
            422,
            "FACE_VERIFICATION_FAILED",
            what,
        )
        .await;
    }
    // Nothing was consumed: the code still submits with a good token.
    let ok = submit(&api, &user, &key, &p.submission(&face(&api, &user))).await;
    assert_eq!(ok.status, 202, "{ok:?}");
}

#[tokio::test]
async fn a_used_face_token_is_refused() {
    let api = Api::get().await;
    let user = held_user(&api).await;
    let p = Proofs::new(&api, &user, "SUBMIT_QUERY").await;
    let f = face(&api, &user);
    let ok = submit(&api, &user, &new_key(), &p.submission(&f)).await;
    assert_eq!(ok.status, 202, "{ok:?}");
    assert!(api.nonce_used(&f.nonce).await);
    clear_active_query(&api, &user).await;

    let p = Proofs::with_code(p.agreement, api.verification(&user, "SUBMIT_QUERY").await);
    let key = new_key();
    assert_refused_submission(
        &api,
        &user,
        Some(&key),
        Some(p.submission(&f).to_string()),
        None,
        422,
        "FACE_VERIFICATION_FAILED",
        "reused face token",
    )
    .await;
    // The fresh code was not consumed by the refusal.
    let ok = submit(&api, &user, &key, &p.submission(&face(&api, &user))).await;
    assert_eq!(ok.status, 202, "{ok:?}");
}

// ---- payment password ---------------------------------------------------------------

#[tokio::test]
async fn five_wrong_passwords_lock_the_payment_password() {
    let api = Api::get().await;
    let user = held_user(&api).await;
    let p = Proofs::new(&api, &user, "SUBMIT_QUERY").await;
    let key = new_key();
    let state_key = |attr: &str| ("STATE".to_owned(), attr.to_owned());

    for attempt in 1..=5u64 {
        let f = face(&api, &user);
        let mut req = p.submission(&f);
        req["payment_password"] = json!(WRONG_PASSWORD);
        let before = api.snapshot(&user).await;
        let version = state_version(&before);
        let reply = submit(&api, &user, &key, &req).await;
        let after = api.snapshot(&user).await;
        // Each comparison took one of the code's attempts first, and a password slot.
        let code_attempt = (
            (
                format!("VERIF#{}", p.verification_id),
                "attempts".to_owned(),
            ),
            (n(attempt - 1), n(attempt)),
        );
        // The fifth reservation sets the lock; its failure restarts it from the failure.
        let versions = if attempt < 5 { 1 } else { 2 };
        let mut expected: Changes = [
            (state_key("version"), (n(version), n(version + versions))),
            code_attempt,
        ]
        .into_iter()
        .collect();
        if attempt < 5 {
            assert_error(
                &reply,
                422,
                "PAYMENT_PASSWORD_INVALID",
                &format!("wrong password #{attempt}"),
            );
            expected.insert(state_key("password_failures"), (n(attempt - 1), n(attempt)));
        } else {
            assert_error(&reply, 423, "PAYMENT_PASSWORD_LOCKED", "wrong password #5");
            let until = ts(&body(&reply)["error"]["locked_until"]);
            assert_near(until, now() + Duration::hours(24), "locked_until");
            expected.insert(state_key("password_failures"), (n(4), n(0)));
            expected.insert(
                state_key("password_locked_until"),
                (
                    None,
                    Some(format!("{:?}", AttributeValue::S(timestamp::format(until)))),
                ),
            );
        }
        assert_eq!(
            changes(&before, &after),
            expected,
            "wrong password #{attempt}"
        );
        assert!(!has_query_records(&after));
        assert!(
            !api.nonce_used(&f.nonce).await,
            "wrong password #{attempt}: nonce consumed"
        );
    }

    // Locked: even the right password is refused, and nothing changes.
    let f = face(&api, &user);
    let reply = assert_refused_submission(
        &api,
        &user,
        Some(&key),
        Some(p.submission(&f).to_string()),
        Some(&f.nonce),
        423,
        "PAYMENT_PASSWORD_LOCKED",
        "right password while locked",
    )
    .await;
    assert_near(
        ts(&body(&reply)["error"]["locked_until"]),
        now() + Duration::hours(24),
        "locked_until",
    );
}

#[tokio::test]
async fn a_locked_user_gets_423_even_with_the_right_password() {
    let api = Api::get().await;
    let user = api.new_user(UserKind::Locked).await;
    let p = Proofs::new(&api, &user, "SUBMIT_QUERY").await;
    let stored_until = state_attr(&api.snapshot(&user).await, "password_locked_until")
        .map(|s| timestamp::parse(&unquote(&s)).unwrap())
        .expect("the seeded lock");
    for (what, password) in [
        ("right password", PAYMENT_PASSWORD),
        ("wrong password", WRONG_PASSWORD),
    ] {
        let f = face(&api, &user);
        let mut req = p.submission(&f);
        req["payment_password"] = json!(password);
        let reply = assert_refused_submission(
            &api,
            &user,
            Some(&new_key()),
            Some(req.to_string()),
            Some(&f.nonce),
            423,
            "PAYMENT_PASSWORD_LOCKED",
            what,
        )
        .await;
        assert_eq!(
            ts(&body(&reply)["error"]["locked_until"]),
            stored_until,
            "{what}"
        );
    }
}

// ---- cooldown -----------------------------------------------------------------------

#[tokio::test]
async fn cooldown_refuses_with_next_allowed_at() {
    let api = Api::get().await;
    let user = held_user(&api).await;
    let agreement = agreement_version(&api, &user).await;
    let next = timestamp::parse(&timestamp::format(now() + Duration::days(1))).unwrap();
    api.clients
        .dynamodb
        .put_item()
        .table_name(&api.tables.main)
        .item("pk", user_pk(&user))
        .item("sk", AttributeValue::S("STATE".into()))
        .item("entity", AttributeValue::S("USER_STATE".into()))
        .item("version", AttributeValue::N("1".into()))
        .item(
            "next_allowed_at",
            AttributeValue::S(timestamp::format(next)),
        )
        .item("password_failures", AttributeValue::N("0".into()))
        .item("sms_count", AttributeValue::N("0".into()))
        .send()
        .await
        .expect("the cooldown is stored");

    let e = api.get_json(ELIGIBILITY, &api.token(&user)).await;
    assert_eq!(e.status, 200, "{e:?}");
    assert_eq!(body(&e)["eligible"], false);
    assert_eq!(body(&e)["active_query_id"], Value::Null);
    assert_eq!(ts(&body(&e)["next_allowed_at"]), next);

    let p = Proofs::with_code(agreement, api.verification(&user, "SUBMIT_QUERY").await);
    let reply =
        assert_refused_with_fresh_face(&api, &user, &p, 429, "COOLDOWN_ACTIVE", "cooldown").await;
    assert_eq!(ts(&body(&reply)["error"]["next_allowed_at"]), next);
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
