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
//! --test api submission::`. The helpers below are the use cases' shared fixture.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{json, Value};
use shared::model::timestamp;
use shared::security::dev;
use testkit::api::{Api, Reply, TestUser, UserKind};
use testkit::localkeys::{APP_JWT_AUDIENCE, APP_JWT_ISSUER, FACE_AUDIENCE, FACE_ISSUER};
use testkit::openapi::OpenApi;
use testkit::seed::PAYMENT_PASSWORD;

mod eligibility;
mod face;
mod password;
mod requests;
mod submit;
mod tokens;
mod verifications;

const BANKS: &str = "/v1/banks";
const ELIGIBILITY: &str = "/v1/eligibility";
const VERIFICATIONS: &str = "/v1/verifications";
const CARD_QUERIES: &str = "/v1/card-queries";

const WRONG_PASSWORD: &str = "246801";
const CHOSEN_BANKS: [&str; 3] = ["CMB", "ICBC", "CZB"];

type Snapshot = Vec<BTreeMap<String, String>>;

// ---- helpers ------------------------------------------------------------------------

fn now() -> DateTime<Utc> {
    Utc::now()
}

fn new_key() -> String {
    format!("key-{}", ulid::Ulid::generate())
}

/// A face token the provider would issue, with its nonce.
struct Face {
    token: String,
    nonce: String,
}

fn face_with(private_pem: &str, sub: &str, result: &str, issued_at: DateTime<Utc>) -> Face {
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
    issued_at: DateTime<Utc>,
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
    let body = json!({
        "banks": CHOSEN_BANKS,
        "consent": { "agreement_version": agreement, "accepted": true },
        "verification": { "verification_id": verification_id, "sms_code": code },
        "face_token": face.token,
        "payment_password": PAYMENT_PASSWORD,
    });
    if let Err(e) = OpenApi::shared().check_request_body("POST", CARD_QUERIES, &body) {
        panic!("the valid submission does not conform to the OpenAPI document: {e}");
    }
    body
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

fn ts(v: &Value) -> DateTime<Utc> {
    timestamp::parse(v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}")))
        .unwrap_or_else(|e| panic!("not RFC 3339: {v}: {e}"))
}

fn assert_near(t: DateTime<Utc>, expected: DateTime<Utc>, what: &str) {
    assert!(
        (t - expected).abs() <= TimeDelta::seconds(60),
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
            AttributeValue::S(timestamp::format(now() - TimeDelta::minutes(2))),
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

// ---- authentication -----------------------------------------------------------------

// ---- malformed requests -------------------------------------------------------------

// ---- eligibility --------------------------------------------------------------------

// ---- banks and consent --------------------------------------------------------------

// ---- SMS verification ---------------------------------------------------------------

// ---- face verification --------------------------------------------------------------

// ---- payment password ---------------------------------------------------------------

// ---- cooldown -----------------------------------------------------------------------
