//! Unit tests of the submission path on the in-memory store, the in-memory SMS sender
//! and a manual clock: every rule of DESIGN.md sections 1–3 for `submit-query`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::test_support::at;
use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{json, Value};

use super::api::{SubmitAccepted, SubmitRequest, VerificationRequest};
use super::{SubmissionDeps, SubmissionService};
use crate::clock::{Clock, ManualClock};
use crate::config::{ServiceConfig, DEFAULT_CONFIG};
use crate::error::ServiceError;
use crate::memory::{MemorySms, MemoryStore};
use crate::model::bank::BankCode;
use crate::model::ids::{QueryId, UserId, VerificationId};
use crate::model::phone::PhoneNumber;
use crate::model::profile::{IdNumber, UserProfile};
use crate::model::purpose::Purpose;
use crate::model::region::RegionCode;
use crate::model::timestamp;
use crate::ports::{StoreError, SubmissionStore, SubmitError};
use crate::records::{
    ConsentRecord, IdempotencyClaim, IdempotencyRecord, PasswordSlot, QueryPhase, QueryRecord,
    Submission, UserState, VerificationRecord,
};
use crate::rules::password::PasswordPolicy;
use crate::security::face::FaceVerifier;
use crate::security::sms_code::CodeHasher;
use crate::security::{dev, password};

const PASSWORD: &str = "135790";
const AGREEMENT: &str = "2026-11";
const FACE_ISSUER: &str = "face-provider";
const FACE_AUDIENCE: &str = "card-lookup";
const SOURCE_IP: &str = "203.0.113.7";
/// 10:00 in China (UTC+8), so a whole China day of SMS fits after it.
const START: DateTime<Utc> = at(2026, 11, 28, 2, 0, 0);

/// A real-name user in Shanghai (31), a pilot region.
const ALICE: &str = "alice";
/// Not real-name verified.
const BOB: &str = "bob";
/// Real-name, in Guangdong (44), not a pilot region.
const CAROL: &str = "carol";
/// A second real-name user in a pilot region (Beijing, 11).
const DAVE: &str = "dave";
/// No profile at all.
const NOBODY: &str = "nobody";

const ALICE_PHONE: &str = "+8613800138000";

/// argon2 is slow in a debug build: hash once per test process.
fn password_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| password::hash(PASSWORD))
}

/// A valid PRC ID number from its first 17 digits (ISO 7064 MOD 11-2 check character).
fn id_number(first17: &str) -> IdNumber {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    const CHECK: &[u8; 11] = b"10X98765432";
    let sum: u32 = first17
        .bytes()
        .zip(WEIGHTS)
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    let full = format!("{first17}{}", CHECK[(sum % 11) as usize] as char);
    IdNumber::parse(&full).unwrap()
}

fn uid(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

fn profile(user: &str, real_name: bool, region: &str, phone: &str, id17: &str) -> UserProfile {
    UserProfile {
        user_id: uid(user),
        real_name_verified: real_name,
        name: format!("测试{user}"),
        id_number: id_number(id17),
        phone: PhoneNumber::parse(phone).unwrap(),
        region: RegionCode::parse(region).unwrap(),
        payment_password_hash: password_hash().to_owned(),
    }
}

/// The 6-digit code in an SMS text.
fn code_in(text: &str) -> String {
    let mut runs = Vec::new();
    let mut run = String::new();
    for c in text.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_digit() {
            run.push(c);
        } else if !run.is_empty() {
            runs.push(std::mem::take(&mut run));
        }
    }
    let six: Vec<_> = runs.into_iter().filter(|r| r.len() == 6).collect();
    assert_eq!(six.len(), 1, "exactly one 6-digit code in {text:?}");
    six[0].clone()
}

/// A 6-digit code that is not `code`.
fn wrong_code(code: &str, delta: u32) -> String {
    let n: u32 = code.parse().unwrap();
    format!("{:06}", (n + delta) % 1_000_000)
}

fn body(banks: &[&str], verification_id: &str, code: &str, face: &str, pwd: &str) -> Value {
    json!({
        "banks": banks,
        "consent": { "agreement_version": AGREEMENT, "accepted": true },
        "verification": { "verification_id": verification_id, "sms_code": code },
        "face_token": face,
        "payment_password": pwd,
    })
}

/// Asserts that `$e` is `Err($pat)`, printing what it was otherwise.
macro_rules! assert_err {
    ($e:expr, $pat:pat) => {
        match $e {
            Err($pat) => {}
            other => panic!("expected Err({}), got {:?}", stringify!($pat), other),
        }
    };
    ($e:expr, $pat:pat => $body:expr) => {
        match $e {
            Err($pat) => $body,
            other => panic!("expected Err({}), got {:?}", stringify!($pat), other),
        }
    };
}

struct Fx {
    svc: Arc<SubmissionService>,
    store: Arc<MemoryStore>,
    sms: Arc<MemorySms>,
    clock: Arc<ManualClock>,
    face_private: String,
    face_public: String,
    nonces: AtomicU64,
}

/// A verification code as the user holds it.
struct Code {
    id: String,
    code: String,
}

impl Fx {
    fn new() -> Self {
        Self::with_store(|s| s)
    }

    /// `wrap` may put a decorator around the memory store the service uses; the fixture
    /// keeps the bare memory store for inspection.
    fn with_store(wrap: impl FnOnce(Arc<MemoryStore>) -> Arc<dyn SubmissionStore>) -> Self {
        let (face_private, face_public) = dev::generate_ed25519();
        let store = Arc::new(MemoryStore::default());
        store.insert_profile(profile(ALICE, true, "31", ALICE_PHONE, "11010519491231002"));
        store.insert_profile(profile(
            BOB,
            false,
            "31",
            "+8613800138001",
            "31010119900101123",
        ));
        store.insert_profile(profile(
            CAROL,
            true,
            "44",
            "+8613800138002",
            "44030119850505432",
        ));
        store.insert_profile(profile(
            DAVE,
            true,
            "11",
            "+8613900139000",
            "11010119700707777",
        ));
        let mut fx = Self {
            svc: Arc::new(SubmissionService::new(SubmissionDeps {
                config: Arc::new(ServiceConfig::parse(DEFAULT_CONFIG).unwrap()),
                profiles: store.clone(),
                store: store.clone(),
                sms: Arc::new(MemorySms::default()),
                clock: Arc::new(ManualClock::new(START)),
                codes: CodeHasher::new(&[9; 32]).unwrap(),
                face: Arc::new(
                    FaceVerifier::new(
                        &face_public,
                        FACE_ISSUER,
                        FACE_AUDIENCE,
                        TimeDelta::minutes(5),
                    )
                    .unwrap(),
                ),
            })),
            store: store.clone(),
            sms: Arc::new(MemorySms::default()),
            clock: Arc::new(ManualClock::new(START)),
            face_private,
            face_public,
            nonces: AtomicU64::new(0),
        };
        fx.svc = Arc::new(SubmissionService::new(fx.deps_on(wrap(store))));
        fx
    }

    /// The service's dependencies (this fixture's clock, SMS and keys) on `store`.
    fn deps_on(&self, store: Arc<dyn SubmissionStore>) -> SubmissionDeps {
        SubmissionDeps {
            config: Arc::new(ServiceConfig::parse(DEFAULT_CONFIG).unwrap()),
            profiles: self.store.clone(),
            store,
            sms: self.sms.clone(),
            clock: self.clock.clone(),
            codes: CodeHasher::new(&[9; 32]).unwrap(),
            face: Arc::new(
                FaceVerifier::new(
                    &self.face_public,
                    FACE_ISSUER,
                    FACE_AUDIENCE,
                    TimeDelta::minutes(5),
                )
                .unwrap(),
            ),
        }
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Requests a code and reads it back from the SMS that was sent.
    async fn try_code(&self, user: &str, purpose: Purpose) -> Result<Code, ServiceError> {
        let before = self.sms.sent().len();
        let created = self
            .svc
            .create_verification(&uid(user), VerificationRequest { purpose })
            .await?;
        let sent = self.sms.sent();
        assert_eq!(sent.len(), before + 1, "one SMS per code");
        Ok(Code {
            id: created.verification_id,
            code: code_in(&sent.last().unwrap().1),
        })
    }

    async fn code(&self, user: &str) -> Code {
        self.try_code(user, Purpose::SubmitQuery).await.unwrap()
    }

    fn nonce(&self) -> String {
        format!("nonce-{}", self.nonces.fetch_add(1, Ordering::Relaxed))
    }

    fn face_with(&self, sub: &str, result: &str, issued_at: DateTime<Utc>, nonce: &str) -> String {
        self.face_as(&self.face_private, FACE_AUDIENCE)
            .token(sub, "SUBMIT_QUERY", result, issued_at, nonce)
            .unwrap()
    }

    /// The face provider (or a forger) signing with `pem`, issuing for `audience`.
    fn face_as<'a>(&self, pem: &'a str, audience: &'a str) -> dev::FaceProvider<'a> {
        dev::FaceProvider {
            private_pem: pem,
            issuer: FACE_ISSUER,
            audience,
        }
    }

    /// A fresh passing face token for `user`, issued now.
    fn face(&self, user: &str) -> String {
        self.face_with(user, "pass", self.now(), &self.nonce())
    }

    /// A complete, valid submission body for `user` (fresh code and face token).
    async fn good_body(&self, user: &str) -> Value {
        let c = self.code(user).await;
        body(&["ICBC", "CMB"], &c.id, &c.code, &self.face(user), PASSWORD)
    }

    async fn submit(
        &self,
        user: &str,
        key: Option<&str>,
        raw: &Value,
    ) -> Result<(u16, Value), ServiceError> {
        submit_on(&self.svc, user, key, raw).await
    }

    fn state(&self, user: &str) -> UserState {
        self.store.state_of(&uid(user))
    }

    /// Puts the user's state back to "no active query" (keeps the version).
    fn release_active_query(&self, user: &str) {
        let state = self.state(user);
        self.store.set_state(
            &uid(user),
            UserState {
                active_query_id: None,
                ..state
            },
        );
    }

    fn assert_nothing_recorded(&self, user: &str) {
        assert!(self.store.queries().is_empty(), "no query record");
        assert!(self.store.consents().is_empty(), "no consent record");
        assert_eq!(self.state(user).active_query_id, None, "no active query");
    }
}

/// What the HTTP layer does: the raw JSON value, and the typed request parsed from it.
async fn submit_on(
    svc: &SubmissionService,
    user: &str,
    key: Option<&str>,
    raw: &Value,
) -> Result<(u16, Value), ServiceError> {
    let req: SubmitRequest = serde_json::from_value(raw.clone()).expect("a well-formed body");
    svc.submit(&uid(user), key, raw, req, Some(SOURCE_IP.to_owned()))
        .await
}

fn accepted(body: &Value) -> SubmitAccepted {
    serde_json::from_value(body.clone()).unwrap()
}

// 1. Happy path ------------------------------------------------------------------------

#[tokio::test]
async fn happy_path_records_query_consent_and_lock_and_answers_202() {
    let fx = Fx::new();
    let alice = uid(ALICE);

    let created = fx
        .svc
        .create_verification(
            &alice,
            VerificationRequest {
                purpose: Purpose::SubmitQuery,
            },
        )
        .await
        .unwrap();
    assert_eq!(created.masked_phone, "138****8000");
    assert_eq!(created.expires_at, START + TimeDelta::minutes(5));
    assert!(VerificationId::parse(&created.verification_id).is_ok());

    let sent = fx.sms.sent();
    assert_eq!(sent.len(), 1);
    let (to, text) = &sent[0];
    assert_eq!(
        to,
        &PhoneNumber::parse(ALICE_PHONE).unwrap(),
        "to the profile's phone"
    );
    let code = code_in(text);
    assert!(text.contains(&code));
    assert!(!text.to_lowercase().contains("http"), "no link in {text:?}");
    assert!(
        text.contains('骗') || text.contains("切勿"),
        "anti-fraud line in {text:?}"
    );

    let banks = ["CMB", "ICBC", "BOC"];
    let raw = body(
        &banks,
        &created.verification_id,
        &code,
        &fx.face(ALICE),
        PASSWORD,
    );
    let (status, resp) = fx.submit(ALICE, Some("key-1"), &raw).await.unwrap();
    assert_eq!(status, 202);

    let a = accepted(&resp);
    assert_eq!(a.status, "PENDING");
    assert_eq!(a.submitted_at, START);
    assert_eq!(a.report_due_by, START + TimeDelta::hours(24));
    assert_eq!(resp["submitted_at"], json!(timestamp::format(START)));
    assert_eq!(
        resp["report_due_by"],
        json!(timestamp::format(START + TimeDelta::hours(24)))
    );
    assert_eq!(
        a.banks,
        vec!["CMB", "ICBC", "BOC"],
        "banks in request order"
    );
    let query_id = QueryId::parse(&a.query_id).expect("a query id");

    let queries = fx.store.queries();
    assert_eq!(queries.len(), 1);
    let q = &queries[0];
    assert_eq!(q.query_id, query_id);
    assert_eq!(q.user_id, alice);
    assert_eq!(q.phase, QueryPhase::Collecting);
    assert_eq!(q.submitted_at, START);
    assert_eq!(q.report_due_by, START + TimeDelta::hours(24));
    let q_banks: Vec<&str> = q.banks.iter().map(BankCode::as_str).collect();
    assert_eq!(q_banks, banks);
    assert_eq!(q.report_generated_at, None);
    assert_eq!(q.report_expires_at, None);

    let consents = fx.store.consents();
    assert_eq!(consents.len(), 1);
    let c = &consents[0];
    assert_eq!(c.query_id, query_id);
    assert_eq!(c.user_id, alice);
    assert_eq!(c.agreement_version, AGREEMENT);
    assert_eq!(c.accepted_at, START);
    assert_eq!(c.source_ip.as_deref(), Some(SOURCE_IP));

    let state = fx.state(ALICE);
    assert_eq!(state.active_query_id, Some(query_id));
    assert_eq!(state.password_failures, 0);
    assert_eq!(fx.sms.sent().len(), 1, "submission itself sends no SMS");
}

// 2. Idempotency -----------------------------------------------------------------------

#[tokio::test]
async fn same_key_and_body_replays_the_first_response() {
    let fx = Fx::new();
    let raw = fx.good_body(ALICE).await;
    let first = fx.submit(ALICE, Some("retry-me"), &raw).await.unwrap();
    assert_eq!(first.0, 202);
    fx.clock.advance(TimeDelta::seconds(30));
    let second = fx.submit(ALICE, Some("retry-me"), &raw).await.unwrap();
    assert_eq!(second, first, "identical status and body");
    assert_eq!(fx.store.queries().len(), 1);
    assert_eq!(fx.store.consents().len(), 1);

    // Same key, a different body.
    let mut other = raw.clone();
    other["banks"] = json!(["ICBC"]);
    assert_err!(
        fx.submit(ALICE, Some("retry-me"), &other).await,
        ServiceError::IdempotencyKeyReused
    );
    assert_eq!(fx.store.queries().len(), 1);
}

#[tokio::test]
async fn a_missing_or_malformed_idempotency_key_is_refused() {
    let fx = Fx::new();
    let raw = fx.good_body(ALICE).await;
    let long = "k".repeat(65);
    for key in [
        None,
        Some(""),
        Some("has space"),
        Some(long.as_str()),
        Some("ключ"),
    ] {
        assert_err!(
            fx.submit(ALICE, key, &raw).await,
            ServiceError::IdempotencyKeyRequired
        );
        fx.assert_nothing_recorded(ALICE);
    }
    // 64 characters is the longest allowed; the body's code is untouched by the refusals.
    let (status, _) = fx.submit(ALICE, Some(&"k".repeat(64)), &raw).await.unwrap();
    assert_eq!(status, 202);
}

// 3. Eligibility -----------------------------------------------------------------------

#[tokio::test]
async fn ineligible_users_are_refused_submission_and_codes() {
    let fx = Fx::new();
    let cases = [
        (BOB, "not real-name"),
        (CAROL, "outside the pilot"),
        (NOBODY, "no profile"),
    ];
    for (user, why) in cases {
        let raw = body(
            &["ICBC"],
            &VerificationId::generate().to_string(),
            "123456",
            &fx.face(user),
            PASSWORD,
        );
        let got = fx.submit(user, Some("k1"), &raw).await;
        match user {
            CAROL => assert_err!(got, ServiceError::RegionNotInPilot),
            _ => assert_err!(got, ServiceError::NotRealNameVerified),
        }
        let code = fx.try_code(user, Purpose::SubmitQuery).await.map(|_| ());
        match user {
            CAROL => assert_err!(code, ServiceError::RegionNotInPilot),
            _ => assert_err!(code, ServiceError::NotRealNameVerified),
        }
        fx.assert_nothing_recorded(user);
        assert_eq!(fx.state(user).sms_count, 0, "{why}: no SMS slot taken");
    }
    assert!(fx.sms.sent().is_empty(), "no SMS sent to ineligible users");
}

#[tokio::test]
async fn eligibility_reports_flags_and_the_active_query() {
    let fx = Fx::new();
    let e = fx.svc.eligibility(&uid(ALICE)).await.unwrap();
    assert!(e.real_name_verified && e.in_pilot_region && e.eligible);
    assert_eq!(e.active_query_id, None);
    assert_eq!(e.next_allowed_at, None);
    assert_eq!(e.agreement_version, AGREEMENT);

    let e = fx.svc.eligibility(&uid(BOB)).await.unwrap();
    assert!(!e.real_name_verified && !e.eligible);
    let e = fx.svc.eligibility(&uid(CAROL)).await.unwrap();
    assert!(e.real_name_verified && !e.in_pilot_region && !e.eligible);
    let e = fx.svc.eligibility(&uid(NOBODY)).await.unwrap();
    assert!(!e.real_name_verified && !e.in_pilot_region && !e.eligible);

    let raw = fx.good_body(ALICE).await;
    let (_, resp) = fx.submit(ALICE, Some("k1"), &raw).await.unwrap();
    let e = fx.svc.eligibility(&uid(ALICE)).await.unwrap();
    assert!(e.real_name_verified && e.in_pilot_region);
    assert_eq!(e.active_query_id.as_deref(), resp["query_id"].as_str());
    assert!(!e.eligible, "a query is in progress");

    // The report was generated: the lock is gone, the cooldown runs for 7 days.
    let next = fx.now() + TimeDelta::days(7);
    fx.store.set_state(
        &uid(ALICE),
        UserState {
            active_query_id: None,
            next_allowed_at: Some(next),
            ..fx.state(ALICE)
        },
    );
    let e = fx.svc.eligibility(&uid(ALICE)).await.unwrap();
    assert_eq!(e.active_query_id, None);
    assert_eq!(e.next_allowed_at, Some(next));
    assert!(!e.eligible, "cooling down");
    fx.clock.set(next);
    let e = fx.svc.eligibility(&uid(ALICE)).await.unwrap();
    assert_eq!(
        e.next_allowed_at, None,
        "a past next_allowed_at is not reported"
    );
    assert!(e.eligible);
}

// 4. Banks -----------------------------------------------------------------------------

#[tokio::test]
async fn empty_duplicate_unknown_or_lower_case_banks_are_refused() {
    let fx = Fx::new();
    let c = fx.code(ALICE).await;
    let face = fx.face(ALICE);
    let cases: [&[&str]; 5] = [
        &[],
        &["ICBC", "ICBC"],
        &["ICBC", "HSBC"],
        &["icbc"],
        &["CMB", "BOC", "CMB"],
    ];
    for (i, banks) in cases.into_iter().enumerate() {
        let raw = body(banks, &c.id, &c.code, &face, PASSWORD);
        assert_err!(
            fx.submit(ALICE, Some(&format!("banks-{i}")), &raw).await,
            ServiceError::InvalidBanks(_)
        );
        fx.assert_nothing_recorded(ALICE);
    }
    // The refusals consumed neither the code nor the face token.
    let raw = body(&["ICBC"], &c.id, &c.code, &face, PASSWORD);
    assert_eq!(fx.submit(ALICE, Some("ok"), &raw).await.unwrap().0, 202);
}

// 5. Consent ---------------------------------------------------------------------------

#[tokio::test]
async fn consent_must_be_given_to_the_current_agreement() {
    let fx = Fx::new();
    let raw = fx.good_body(ALICE).await;

    let mut refused = raw.clone();
    refused["consent"]["accepted"] = json!(false);
    assert_err!(
        fx.submit(ALICE, Some("c1"), &refused).await,
        ServiceError::ConsentRequired
    );
    fx.assert_nothing_recorded(ALICE);

    for old in ["2025-01", "", "2026-11 "] {
        let mut outdated = raw.clone();
        outdated["consent"]["agreement_version"] = json!(old);
        assert_err!(
            fx.submit(ALICE, Some("c2"), &outdated).await,
            ServiceError::ConsentRequired
        );
        fx.assert_nothing_recorded(ALICE);
    }
    assert_eq!(fx.submit(ALICE, Some("c3"), &raw).await.unwrap().0, 202);
}

// 6. SMS code --------------------------------------------------------------------------

#[tokio::test]
async fn a_wrong_code_fails_and_the_right_one_still_works() {
    let fx = Fx::new();
    let c = fx.code(ALICE).await;
    let face = fx.face(ALICE);
    // Four wrong tries: one short of burning the code.
    for i in 1..=4 {
        let raw = body(&["ICBC"], &c.id, &wrong_code(&c.code, i), &face, PASSWORD);
        assert_err!(
            fx.submit(ALICE, Some("w"), &raw).await,
            ServiceError::VerificationFailed
        );
        fx.assert_nothing_recorded(ALICE);
    }
    let raw = body(&["ICBC"], &c.id, &c.code, &face, PASSWORD);
    assert_eq!(fx.submit(ALICE, Some("w"), &raw).await.unwrap().0, 202);
}

#[tokio::test]
async fn five_wrong_codes_burn_the_code() {
    let fx = Fx::new();
    let c = fx.code(ALICE).await;
    let face = fx.face(ALICE);
    for i in 1..=5 {
        let raw = body(&["ICBC"], &c.id, &wrong_code(&c.code, i), &face, PASSWORD);
        assert_err!(
            fx.submit(ALICE, Some("w"), &raw).await,
            ServiceError::VerificationFailed
        );
    }
    let raw = body(&["ICBC"], &c.id, &c.code, &face, PASSWORD);
    assert_err!(
        fx.submit(ALICE, Some("w"), &raw).await,
        ServiceError::VerificationFailed
    );
    fx.assert_nothing_recorded(ALICE);
}

#[tokio::test]
async fn a_code_expires_five_minutes_after_it_was_sent() {
    let fx = Fx::new();
    let c = fx.code(ALICE).await;
    let expires_at = START + TimeDelta::minutes(5);

    fx.clock.set(expires_at);
    let raw = body(&["ICBC"], &c.id, &c.code, &fx.face(ALICE), PASSWORD);
    assert_err!(
        fx.submit(ALICE, Some("e1"), &raw).await,
        ServiceError::VerificationFailed
    );
    fx.assert_nothing_recorded(ALICE);

    fx.clock.set(expires_at + TimeDelta::hours(1));
    let raw = body(&["ICBC"], &c.id, &c.code, &fx.face(ALICE), PASSWORD);
    assert_err!(
        fx.submit(ALICE, Some("e2"), &raw).await,
        ServiceError::VerificationFailed
    );
    fx.assert_nothing_recorded(ALICE);

    fx.clock.set(expires_at - TimeDelta::seconds(1));
    let raw = body(&["ICBC"], &c.id, &c.code, &fx.face(ALICE), PASSWORD);
    assert_eq!(fx.submit(ALICE, Some("e3"), &raw).await.unwrap().0, 202);
}

#[tokio::test]
async fn a_code_for_viewing_a_report_cannot_submit() {
    let fx = Fx::new();
    let c = fx.try_code(ALICE, Purpose::ViewReport).await.unwrap();
    let raw = body(&["ICBC"], &c.id, &c.code, &fx.face(ALICE), PASSWORD);
    assert_err!(
        fx.submit(ALICE, Some("v"), &raw).await,
        ServiceError::VerificationFailed
    );
    fx.assert_nothing_recorded(ALICE);
}

#[tokio::test]
async fn another_users_code_cannot_submit() {
    let fx = Fx::new();
    let dave = fx.code(DAVE).await;
    let raw = body(&["ICBC"], &dave.id, &dave.code, &fx.face(ALICE), PASSWORD);
    assert_err!(
        fx.submit(ALICE, Some("o"), &raw).await,
        ServiceError::VerificationFailed
    );
    fx.assert_nothing_recorded(ALICE);
    assert_eq!(fx.state(DAVE).active_query_id, None);
    // Dave's code is still his.
    let raw = body(&["ICBC"], &dave.id, &dave.code, &fx.face(DAVE), PASSWORD);
    assert_eq!(fx.submit(DAVE, Some("o"), &raw).await.unwrap().0, 202);
}

#[tokio::test]
async fn malformed_verification_ids_and_codes_fail() {
    let fx = Fx::new();
    let c = fx.code(ALICE).await;
    let face = fx.face(ALICE);
    let lower = c.id.to_lowercase();
    let unknown = VerificationId::generate().to_string();
    let too_long = format!("{}0", c.code);
    let fullwidth: String = c
        .code
        .chars()
        .map(|d| char::from_u32(d as u32 - '0' as u32 + '０' as u32).unwrap())
        .collect();
    let cases: Vec<(&str, &str)> = vec![
        ("not-a-ulid", &c.code),
        ("", &c.code),
        (&lower, &c.code),
        (&unknown, &c.code),
        (&c.id, &c.code[..5]),
        (&c.id, &too_long),
        (&c.id, "12345a"),
        (&c.id, ""),
        (&c.id, &fullwidth),
    ];
    for (id, code) in cases {
        let raw = body(&["ICBC"], id, code, &face, PASSWORD);
        assert_err!(
            fx.submit(ALICE, Some("m"), &raw).await,
            ServiceError::VerificationFailed
        );
        fx.assert_nothing_recorded(ALICE);
    }
}

#[tokio::test]
async fn a_used_code_cannot_be_used_again() {
    let fx = Fx::new();
    let c = fx.code(ALICE).await;
    let raw = body(&["ICBC"], &c.id, &c.code, &fx.face(ALICE), PASSWORD);
    assert_eq!(fx.submit(ALICE, Some("first"), &raw).await.unwrap().0, 202);

    fx.release_active_query(ALICE);
    fx.clock.advance(TimeDelta::seconds(10));
    let again = body(&["ICBC"], &c.id, &c.code, &fx.face(ALICE), PASSWORD);
    assert_err!(
        fx.submit(ALICE, Some("second"), &again).await,
        ServiceError::VerificationFailed
    );
    assert_eq!(fx.store.queries().len(), 1);
    assert_eq!(fx.store.consents().len(), 1);
    assert_eq!(fx.state(ALICE).active_query_id, None);
}

// 7. Face token ------------------------------------------------------------------------

#[tokio::test]
async fn bad_face_tokens_are_refused() {
    let fx = Fx::new();
    let c = fx.code(ALICE).await;
    let now = fx.now();
    let (other_private, _) = dev::generate_ed25519();
    let forged = fx
        .face_as(&other_private, FACE_AUDIENCE)
        .token(ALICE, "SUBMIT_QUERY", "pass", now, "forged")
        .unwrap();
    let other_issuer = dev::FaceProvider {
        issuer: "someone-else",
        ..fx.face_as(&fx.face_private, FACE_AUDIENCE)
    }
    .token(ALICE, "SUBMIT_QUERY", "pass", now, "iss")
    .unwrap();
    let other_audience = fx
        .face_as(&fx.face_private, "another-service")
        .token(ALICE, "SUBMIT_QUERY", "pass", now, "aud")
        .unwrap();
    let view_pass = fx
        .face_as(&fx.face_private, FACE_AUDIENCE)
        .token(ALICE, "VIEW_REPORT", "pass", now, "view")
        .unwrap();
    let stale = fx.face_with(
        ALICE,
        "pass",
        now - TimeDelta::minutes(5) - TimeDelta::seconds(1),
        "stale",
    );
    let other_user = fx.face_with(DAVE, "pass", now, "dave");
    let failed = fx.face_with(ALICE, "fail", now, "failed");
    let future = fx.face_with(ALICE, "pass", now + TimeDelta::minutes(5), "future");
    let empty_nonce = fx.face_with(ALICE, "pass", now, "");
    for (why, token) in [
        ("signed by another key", forged.as_str()),
        ("another issuer", &other_issuer),
        ("issued for another service", &other_audience),
        ("a pass taken to view a report", &view_pass),
        ("older than 5 minutes", &stale),
        ("another user", &other_user),
        ("result fail", &failed),
        ("issued in the future", &future),
        ("empty nonce", &empty_nonce),
        ("not a token", "garbage"),
        ("empty", ""),
    ] {
        let raw = body(&["ICBC"], &c.id, &c.code, token, PASSWORD);
        let got = fx.submit(ALICE, Some("f"), &raw).await;
        assert!(
            matches!(got, Err(ServiceError::FaceVerificationFailed)),
            "{why}: {got:?}"
        );
        fx.assert_nothing_recorded(ALICE);
    }
    // Exactly 5 minutes old is still fine, and the code survived the refusals.
    let edge = fx.face_with(ALICE, "pass", now - TimeDelta::minutes(5), "edge");
    let raw = body(&["ICBC"], &c.id, &c.code, &edge, PASSWORD);
    assert_eq!(fx.submit(ALICE, Some("f"), &raw).await.unwrap().0, 202);
}

#[tokio::test]
async fn a_face_token_nonce_is_single_use() {
    let fx = Fx::new();
    let face = fx.face(ALICE);
    let c1 = fx.code(ALICE).await;
    let raw = body(&["ICBC"], &c1.id, &c1.code, &face, PASSWORD);
    assert_eq!(fx.submit(ALICE, Some("first"), &raw).await.unwrap().0, 202);

    fx.release_active_query(ALICE);
    fx.clock.advance(TimeDelta::seconds(60));
    let c2 = fx.code(ALICE).await;
    let again = body(&["ICBC"], &c2.id, &c2.code, &face, PASSWORD);
    assert_err!(
        fx.submit(ALICE, Some("second"), &again).await,
        ServiceError::FaceVerificationFailed
    );
    assert_eq!(fx.store.queries().len(), 1);
    assert_eq!(fx.store.consents().len(), 1);
    assert_eq!(fx.state(ALICE).active_query_id, None);

    // The fresh code was not consumed by the refusal.
    let ok = body(&["ICBC"], &c2.id, &c2.code, &fx.face(ALICE), PASSWORD);
    assert_eq!(fx.submit(ALICE, Some("third"), &ok).await.unwrap().0, 202);
}

// 8. Payment password ------------------------------------------------------------------

#[tokio::test]
async fn five_wrong_passwords_lock_for_24_hours() {
    let fx = Fx::new();
    let attempt = |pwd: &'static str| {
        let fx = &fx;
        async move {
            let c = fx.code(ALICE).await;
            let raw = body(&["ICBC"], &c.id, &c.code, &fx.face(ALICE), pwd);
            fx.submit(ALICE, Some(&format!("p{}", fx.now().timestamp())), &raw)
                .await
        }
    };

    for n in 1..=4 {
        assert_err!(
            attempt("000000").await,
            ServiceError::PaymentPasswordInvalid
        );
        assert_eq!(fx.state(ALICE).password_failures, n, "failures counted");
        assert_eq!(fx.state(ALICE).password_locked_until, None);
        fx.assert_nothing_recorded(ALICE);
        fx.clock.advance(TimeDelta::seconds(60));
    }
    let locked_at = fx.now();
    let until = locked_at + TimeDelta::hours(24);
    assert_err!(attempt("000000").await, ServiceError::PaymentPasswordLocked { until: u } => {
        assert_eq!(u, until)
    });
    assert_eq!(fx.state(ALICE).password_locked_until, Some(until));
    fx.assert_nothing_recorded(ALICE);

    fx.clock.advance(TimeDelta::seconds(60));
    assert_err!(attempt(PASSWORD).await, ServiceError::PaymentPasswordLocked { until: u } => {
        assert_eq!(u, until)
    });
    fx.assert_nothing_recorded(ALICE);

    // One second before the lock ends: still locked (and the code is left unused).
    fx.clock.set(until - TimeDelta::seconds(1));
    let c = fx.code(ALICE).await;
    let raw = body(&["ICBC"], &c.id, &c.code, &fx.face(ALICE), PASSWORD);
    assert_err!(
        fx.submit(ALICE, Some("almost"), &raw).await,
        ServiceError::PaymentPasswordLocked { .. }
    );
    fx.assert_nothing_recorded(ALICE);

    fx.clock.set(until);
    let raw = body(&["ICBC"], &c.id, &c.code, &fx.face(ALICE), PASSWORD);
    assert_eq!(
        fx.submit(ALICE, Some("unlocked"), &raw).await.unwrap().0,
        202
    );
    let state = fx.state(ALICE);
    assert_eq!(state.password_failures, 0);
    assert_eq!(state.password_locked_until, None);
}

// 9. Cooldown and active query ---------------------------------------------------------

#[tokio::test]
async fn cooldown_ends_exactly_at_next_allowed_at() {
    let fx = Fx::new();
    let t = START + TimeDelta::days(7);
    fx.store.set_state(
        &uid(ALICE),
        UserState {
            next_allowed_at: Some(t),
            ..UserState::default()
        },
    );
    fx.clock.set(t - TimeDelta::seconds(61));
    let c = fx.code(ALICE).await;

    fx.clock.set(t - TimeDelta::seconds(1));
    let raw = body(&["ICBC"], &c.id, &c.code, &fx.face(ALICE), PASSWORD);
    assert_err!(
        fx.submit(ALICE, Some("early"), &raw).await,
        ServiceError::CooldownActive { next_allowed_at } => assert_eq!(next_allowed_at, t)
    );
    fx.assert_nothing_recorded(ALICE);

    fx.clock.set(t);
    let raw = body(&["ICBC"], &c.id, &c.code, &fx.face(ALICE), PASSWORD);
    assert_eq!(
        fx.submit(ALICE, Some("on-time"), &raw).await.unwrap().0,
        202
    );
}

#[tokio::test]
async fn an_active_query_blocks_a_new_one() {
    let fx = Fx::new();
    fx.store.set_state(
        &uid(ALICE),
        UserState {
            active_query_id: Some(QueryId::generate()),
            ..UserState::default()
        },
    );
    let raw = fx.good_body(ALICE).await;
    assert_err!(
        fx.submit(ALICE, Some("busy"), &raw).await,
        ServiceError::QueryInProgress
    );
    assert!(fx.store.queries().is_empty());
    assert!(fx.store.consents().is_empty());

    // And after a successful submission, a second one with a new key and fresh proofs.
    let fx = Fx::new();
    let raw = fx.good_body(ALICE).await;
    assert_eq!(fx.submit(ALICE, Some("one"), &raw).await.unwrap().0, 202);
    fx.clock.advance(TimeDelta::seconds(60));
    let raw = fx.good_body(ALICE).await;
    assert_err!(
        fx.submit(ALICE, Some("two"), &raw).await,
        ServiceError::QueryInProgress
    );
    assert_eq!(fx.store.queries().len(), 1);
}

// 10. SMS rate limits ------------------------------------------------------------------

#[tokio::test]
async fn at_most_one_code_a_minute_and_ten_a_china_day() {
    let fx = Fx::new();
    fx.code(ALICE).await;

    for (after, retry) in [(1, 59), (30, 30), (59, 1)] {
        fx.clock.set(START + TimeDelta::seconds(after));
        assert_err!(
            fx.try_code(ALICE, Purpose::SubmitQuery).await.map(|_| ()),
            ServiceError::TooManyRequests { retry_after_secs } => assert_eq!(retry_after_secs, retry)
        );
    }
    // The view-report purpose shares the limit.
    assert_err!(
        fx.try_code(ALICE, Purpose::ViewReport).await.map(|_| ()),
        ServiceError::TooManyRequests {
            retry_after_secs: 1
        }
    );
    assert_eq!(fx.sms.sent().len(), 1, "refused codes are not sent");

    fx.clock.set(START + TimeDelta::seconds(60));
    fx.code(ALICE).await;
    for _ in 3..=10 {
        fx.clock.advance(TimeDelta::seconds(60));
        fx.code(ALICE).await;
    }
    assert_eq!(fx.sms.sent().len(), 10);
    assert_eq!(fx.state(ALICE).sms_count, 10);

    // The 11th the same China day (still 10:10 there): wait until China midnight.
    fx.clock.advance(TimeDelta::seconds(60));
    let china_midnight = at(2026, 11, 28, 16, 0, 0);
    let wait = (china_midnight - fx.now()).num_seconds() as u64;
    assert_err!(
        fx.try_code(ALICE, Purpose::SubmitQuery).await.map(|_| ()),
        ServiceError::TooManyRequests { retry_after_secs } => assert_eq!(retry_after_secs, wait)
    );
    fx.clock.set(china_midnight - TimeDelta::seconds(1));
    assert_err!(
        fx.try_code(ALICE, Purpose::SubmitQuery).await.map(|_| ()),
        ServiceError::TooManyRequests {
            retry_after_secs: 1
        }
    );
    assert_eq!(fx.sms.sent().len(), 10);

    fx.clock.set(china_midnight);
    fx.code(ALICE).await;
    assert_eq!(fx.state(ALICE).sms_count, 1);
    assert_eq!(fx.state(ALICE).sms_day.as_deref(), Some("2026-11-29"));
}

#[tokio::test]
async fn sms_limits_are_per_user() {
    let fx = Fx::new();
    fx.code(ALICE).await;
    fx.code(DAVE).await;
    assert_eq!(fx.sms.sent().len(), 2);
    assert_eq!(
        fx.sms.sent()[1].0,
        PhoneNumber::parse("+8613900139000").unwrap()
    );
}

// 11. Concurrency ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_submissions_make_exactly_one_query() {
    let fx = Fx::new();
    let raw = Arc::new(fx.good_body(ALICE).await);
    let barrier = Arc::new(tokio::sync::Barrier::new(20));
    let mut tasks = Vec::new();
    for i in 0..20 {
        let svc = fx.svc.clone();
        let raw = raw.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            submit_on(&svc, ALICE, Some(&format!("concurrent-{i}")), &raw).await
        }));
    }
    let mut accepted = 0;
    let mut in_progress = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok((202, _)) => accepted += 1,
            Err(ServiceError::QueryInProgress) => in_progress += 1,
            other => panic!("expected 202 or QueryInProgress, got {other:?}"),
        }
    }
    assert_eq!((accepted, in_progress), (1, 19));
    assert_eq!(fx.store.queries().len(), 1);
    assert_eq!(fx.store.consents().len(), 1);
    let q = &fx.store.queries()[0];
    assert_eq!(fx.state(ALICE).active_query_id, Some(q.query_id));
}

// 12. The one interleaving of that race that matters ------------------------------------

/// What a concurrent request with the same code commits when it wins.
fn winning_submission(
    user: &UserId,
    state: &UserState,
    verification_id: VerificationId,
    now: DateTime<Utc>,
) -> Submission {
    let query_id = QueryId::generate();
    Submission {
        legs: vec![],
        query: QueryRecord {
            query_id,
            user_id: user.clone(),
            phase: QueryPhase::Collecting,
            submitted_at: now,
            report_due_by: now + TimeDelta::hours(24),
            collect_until: now + TimeDelta::hours(24),
            banks: vec![],
            report_generated_at: None,
            report_expires_at: None,
            last_viewed_at: None,
            report_deleted_at: None,
            views: Vec::new(),
            views_total: 0,
            notified_at: None,
        },
        consent: ConsentRecord {
            query_id,
            user_id: user.clone(),
            agreement_version: AGREEMENT.into(),
            accepted_at: now,
            source_ip: None,
        },
        idempotency: IdempotencyRecord {
            user_id: user.clone(),
            key: "the-winner".into(),
            request_fingerprint: "x".into(),
            status: 202,
            response_body: "{}".into(),
            expires_at: now + TimeDelta::hours(24),
            in_progress: false,
            owner: Some("the-winners-claim".into()),
            lease_until: None,
        },
        state: UserState {
            version: state.version + 1,
            active_query_id: Some(query_id),
            ..state.clone()
        },
        expected_state_version: state.version,
        verification_id,
        max_code_attempts: 5,
        face_nonce: "the-winners-nonce".into(),
        face_nonce_expires_at: now + TimeDelta::minutes(5),
    }
}

/// The contract (issue 3): of concurrent submissions by one user, exactly one gets 202
/// and the rest 409 QUERY_IN_PROGRESS. A loser whose state read came before the
/// winner's commit but whose code check came after it must still get 409, not
/// 422 VERIFICATION_FAILED.
#[tokio::test]
async fn a_submission_overtaken_between_state_read_and_code_check_gets_query_in_progress() {
    let slot: Arc<Mutex<Option<Arc<Interleaved>>>> = Arc::default();
    let slot2 = slot.clone();
    let fx = Fx::with_store(move |inner| {
        let race = Arc::new(Interleaved::new(inner, 0));
        *slot2.lock().unwrap() = Some(race.clone());
        race
    });
    let race = slot.lock().unwrap().clone().unwrap();

    let c = fx.code(ALICE).await;
    let winner = winning_submission(
        &uid(ALICE),
        &fx.state(ALICE),
        VerificationId::parse(&c.id).unwrap(),
        fx.now(),
    );
    *race.hook.lock().unwrap() = Some(winner);

    let raw = body(&["ICBC"], &c.id, &c.code, &fx.face(ALICE), PASSWORD);
    let got = fx.submit(ALICE, Some("the-loser"), &raw).await;
    assert_eq!(fx.store.queries().len(), 1, "only the winner's query");
    assert!(
        matches!(got, Err(ServiceError::QueryInProgress)),
        "expected QueryInProgress (409), got {got:?}"
    );
}

// 13. Limits under concurrency (issue 9) -------------------------------------------------
//
// A store wrapper that holds every write back for a few milliseconds: each request in a
// burst then reads before any other request's write lands, the interleaving in which a
// read-compare-write limit breaks. The limits must hold anyway.

/// The memory store with ways to force an interleaving: every write held back for
/// `delay` (each request in a burst then reads before any other's write lands), and a
/// `hook` committed once just before the first code reservation (another request
/// winning between this one's state read and its code check).
struct Interleaved {
    inner: Arc<MemoryStore>,
    delay: std::time::Duration,
    hook: Mutex<Option<Submission>>,
    /// The submission commits, then its answer is lost (reported as a failure).
    lose_answer: std::sync::atomic::AtomicBool,
}

impl Interleaved {
    fn new(inner: Arc<MemoryStore>, delay_ms: u64) -> Self {
        Self {
            inner,
            delay: std::time::Duration::from_millis(delay_ms),
            hook: Mutex::new(None),
            lose_answer: Default::default(),
        }
    }

    async fn pause(&self) {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
    }
}

#[async_trait]
impl SubmissionStore for Interleaved {
    async fn user_state(&self, user: &UserId) -> Result<UserState, StoreError> {
        self.inner.user_state(user).await
    }
    async fn put_user_state(
        &self,
        user: &UserId,
        state: &UserState,
        expected_version: u64,
    ) -> Result<(), StoreError> {
        self.pause().await;
        self.inner
            .put_user_state(user, state, expected_version)
            .await
    }
    async fn put_verification(&self, record: &VerificationRecord) -> Result<(), StoreError> {
        self.inner.put_verification(record).await
    }
    async fn verification(
        &self,
        user: &UserId,
        id: &VerificationId,
    ) -> Result<Option<VerificationRecord>, StoreError> {
        self.inner.verification(user, id).await
    }
    async fn reserve_code_attempt(
        &self,
        user: &UserId,
        id: &VerificationId,
        purpose: Purpose,
        now: DateTime<Utc>,
        max_attempts: u32,
    ) -> Result<Option<VerificationRecord>, StoreError> {
        let winner = self.hook.lock().unwrap().take();
        if let Some(winner) = winner {
            let claim = IdempotencyRecord {
                in_progress: true,
                lease_until: Some(winner.query.submitted_at + TimeDelta::seconds(30)),
                ..winner.idempotency.clone()
            };
            self.inner
                .claim_idempotency(&claim, winner.query.submitted_at)
                .await
                .expect("the winner claims its key");
            self.inner
                .submit(&winner)
                .await
                .expect("the winner commits");
        }
        self.pause().await;
        self.inner
            .reserve_code_attempt(user, id, purpose, now, max_attempts)
            .await
    }
    async fn consume_verification(
        &self,
        user: &UserId,
        id: &VerificationId,
        max_attempts: u32,
    ) -> Result<bool, StoreError> {
        self.pause().await;
        self.inner
            .consume_verification(user, id, max_attempts)
            .await
    }
    async fn reserve_password_slot(
        &self,
        user: &UserId,
        holder: &str,
        now: DateTime<Utc>,
        policy: &PasswordPolicy,
    ) -> Result<(PasswordSlot, UserState), StoreError> {
        self.pause().await;
        self.inner
            .reserve_password_slot(user, holder, now, policy)
            .await
    }
    async fn password_matched(
        &self,
        user: &UserId,
        holder: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.pause().await;
        self.inner.password_matched(user, holder, now).await
    }
    async fn password_failed_last(
        &self,
        user: &UserId,
        holder: &str,
        now: DateTime<Utc>,
        policy: &PasswordPolicy,
    ) -> Result<DateTime<Utc>, StoreError> {
        self.pause().await;
        self.inner
            .password_failed_last(user, holder, now, policy)
            .await
    }
    async fn face_nonce_used(&self, nonce: &str) -> Result<bool, StoreError> {
        self.inner.face_nonce_used(nonce).await
    }
    async fn consume_face_nonce(
        &self,
        nonce: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.pause().await;
        self.inner.consume_face_nonce(nonce, expires_at).await
    }
    async fn idempotency(
        &self,
        user: &UserId,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.inner.idempotency(user, key, now).await
    }
    async fn claim_idempotency(
        &self,
        claim: &IdempotencyRecord,
        now: DateTime<Utc>,
    ) -> Result<IdempotencyClaim, StoreError> {
        self.pause().await;
        self.inner.claim_idempotency(claim, now).await
    }
    async fn release_idempotency(
        &self,
        user: &UserId,
        key: &str,
        owner: &str,
    ) -> Result<(), StoreError> {
        self.pause().await;
        self.inner.release_idempotency(user, key, owner).await
    }
    async fn submit(&self, submission: &Submission) -> Result<(), SubmitError> {
        self.pause().await;
        self.inner.submit(submission).await?;
        if self.lose_answer.load(Ordering::Relaxed) {
            return Err(StoreError::Unavailable("connection reset after the commit".into()).into());
        }
        Ok(())
    }
}

fn slow_fx() -> Fx {
    Fx::with_store(|inner| Arc::new(Interleaved::new(inner, 30)))
}

impl Fx {
    /// A code for `user` written straight to the store (as if sent), bypassing the SMS
    /// send limits so a test can hold many at once.
    async fn planted_code(&self, user: &str, n: u32) -> Code {
        let id = VerificationId::generate();
        let code = format!("{:06}", 100_000 + n);
        let record = VerificationRecord {
            verification_id: id,
            user_id: uid(user),
            purpose: Purpose::SubmitQuery,
            code_hash: CodeHasher::new(&[9; 32]).unwrap().hash(
                &uid(user),
                &id,
                Purpose::SubmitQuery,
                &code,
            ),
            expires_at: self.now() + TimeDelta::minutes(5),
            attempts: 0,
            used: false,
        };
        self.store.put_verification(&record).await.unwrap();
        Code {
            id: id.to_string(),
            code,
        }
    }

    async fn attempts_of(&self, user: &str, code: &Code) -> u32 {
        self.store
            .verification(&uid(user), &VerificationId::parse(&code.id).unwrap())
            .await
            .unwrap()
            .unwrap()
            .attempts
    }
}

/// Releases `bodies` at once (a barrier), each under its own key unless `key` is given.
async fn burst(
    fx: &Fx,
    user: &'static str,
    key: Option<&str>,
    bodies: Vec<Value>,
) -> Vec<Result<(u16, Value), ServiceError>> {
    let barrier = Arc::new(tokio::sync::Barrier::new(bodies.len()));
    let tasks: Vec<_> = bodies
        .into_iter()
        .enumerate()
        .map(|(i, raw)| {
            let svc = fx.svc.clone();
            let barrier = barrier.clone();
            let key = key.map_or_else(|| format!("burst-{i}"), str::to_owned);
            tokio::spawn(async move {
                barrier.wait().await;
                submit_on(&svc, user, Some(&key), &raw).await
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_parallel_wrong_codes_are_compared_at_most_five_times() {
    let fx = slow_fx();
    let c = fx.code(ALICE).await;
    let bodies = (1..=50)
        .map(|i| {
            body(
                &["ICBC"],
                &c.id,
                &wrong_code(&c.code, i),
                &fx.face(ALICE),
                PASSWORD,
            )
        })
        .collect();
    for r in burst(&fx, ALICE, None, bodies).await {
        assert_err!(r, ServiceError::VerificationFailed);
    }
    assert_eq!(
        fx.attempts_of(ALICE, &c).await,
        5,
        "attempts after 50 parallel wrong codes"
    );
    // Five were compared: the right code is burnt now.
    let raw = body(&["ICBC"], &c.id, &c.code, &fx.face(ALICE), PASSWORD);
    assert_err!(
        fx.submit(ALICE, Some("after"), &raw).await,
        ServiceError::VerificationFailed
    );
    fx.assert_nothing_recorded(ALICE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_wrong_passwords_locks_the_account() {
    let fx = slow_fx();
    let mut bodies = Vec::new();
    // 22, not a multiple of five: a lock that a later failure clears shows.
    for i in 0..22 {
        let c = fx.planted_code(ALICE, i).await;
        bodies.push(body(&["ICBC"], &c.id, &c.code, &fx.face(ALICE), "000000"));
    }
    let results = burst(&fx, ALICE, None, bodies).await;
    let invalid = results
        .iter()
        .filter(|r| matches!(r, Err(ServiceError::PaymentPasswordInvalid)))
        .count();
    for r in &results {
        assert!(
            matches!(
                r,
                Err(ServiceError::PaymentPasswordInvalid)
                    | Err(ServiceError::PaymentPasswordLocked { .. })
                    | Err(ServiceError::TooManyRequests { .. })
            ),
            "{r:?}"
        );
    }
    assert!(
        invalid <= 4,
        "{invalid} wrong passwords were compared before the lock"
    );
    // Locked afterwards: the right password is refused.
    let c = fx.planted_code(ALICE, 99).await;
    let raw = body(&["ICBC"], &c.id, &c.code, &fx.face(ALICE), PASSWORD);
    assert_err!(
        fx.submit(ALICE, Some("right"), &raw).await,
        ServiceError::PaymentPasswordLocked { .. }
    );
    fx.assert_nothing_recorded(ALICE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_twin_submissions_under_one_key_get_the_original_answer() {
    let fx = slow_fx();
    let raw = fx.good_body(ALICE).await;
    let results = burst(&fx, ALICE, Some("twin"), vec![raw.clone(); 20]).await;
    let mut ids = std::collections::BTreeSet::new();
    for r in &results {
        match r {
            Ok((202, b)) => {
                ids.insert(b["query_id"].as_str().unwrap().to_owned());
            }
            Err(ServiceError::IdempotencyInProgress { .. }) => {}
            other => panic!("expected 202 or IDEMPOTENCY_IN_PROGRESS, got {other:?}"),
        }
    }
    // Retried after the first finished: the original answer.
    let (status, again) = fx.submit(ALICE, Some("twin"), &raw).await.unwrap();
    assert_eq!(status, 202);
    ids.insert(again["query_id"].as_str().unwrap().to_owned());
    assert_eq!(ids.len(), 1, "one query id for one key: {ids:?}");
    assert_eq!(fx.store.queries().len(), 1);
}

/// The submission commits, then the answer is lost (the instance dies, the connection
/// drops): the client's retry under the same key gets the original 202.
#[tokio::test]
async fn an_answer_lost_after_the_commit_is_given_again_on_retry() {
    let fx = Fx::with_store(|inner| {
        let store = Interleaved::new(inner, 0);
        store.lose_answer.store(true, Ordering::Relaxed);
        Arc::new(store)
    });
    let raw = fx.good_body(ALICE).await;
    assert_err!(
        fx.submit(ALICE, Some("lost"), &raw).await,
        ServiceError::Unavailable(_)
    );
    assert_eq!(fx.store.queries().len(), 1, "the submission was committed");
    let first = fx.store.queries()[0].query_id.to_string();

    // The retry goes to a healthy instance: the original answer, nothing new.
    let healthy = SubmissionService::new(fx.deps_on(fx.store.clone()));
    let (status, again) = submit_on(&healthy, ALICE, Some("lost"), &raw)
        .await
        .unwrap();
    assert_eq!(
        (status, again["query_id"].as_str()),
        (202, Some(first.as_str()))
    );
    assert_eq!(fx.store.queries().len(), 1);
}

/// The first request claimed its key and died before it could finish: within the lease
/// its twin is told to wait; after the lease the key is taken over and the submission
/// made (once).
#[tokio::test]
async fn a_claim_left_by_a_crashed_request_is_taken_over_after_its_lease() {
    let fx = Fx::new();
    let raw = fx.good_body(ALICE).await;
    let fingerprint = CodeHasher::new(&[9; 32])
        .unwrap()
        .fingerprint(&serde_json::to_vec(&raw).unwrap());
    let crashed = IdempotencyRecord {
        user_id: uid(ALICE),
        key: "crashed".into(),
        request_fingerprint: fingerprint,
        status: 0,
        response_body: String::new(),
        expires_at: fx.now() + TimeDelta::hours(24),
        in_progress: true,
        owner: Some("a-dead-instance".into()),
        lease_until: Some(fx.now() + TimeDelta::seconds(30)),
    };
    assert_eq!(
        fx.store
            .claim_idempotency(&crashed, fx.now())
            .await
            .unwrap(),
        IdempotencyClaim::Claimed
    );
    assert_err!(
        fx.submit(ALICE, Some("crashed"), &raw).await,
        ServiceError::IdempotencyInProgress { retry_after_secs } => assert_eq!(retry_after_secs, 2)
    );
    // A different body under the key is refused even while it is in progress.
    let mut other = raw.clone();
    other["banks"] = json!(["CMB"]);
    assert_err!(
        fx.submit(ALICE, Some("crashed"), &other).await,
        ServiceError::IdempotencyKeyReused
    );
    fx.assert_nothing_recorded(ALICE);

    fx.clock.advance(TimeDelta::seconds(30));
    let (status, first) = fx.submit(ALICE, Some("crashed"), &raw).await.unwrap();
    assert_eq!(status, 202);
    let (_, again) = fx.submit(ALICE, Some("crashed"), &raw).await.unwrap();
    assert_eq!(first, again);
    assert_eq!(fx.store.queries().len(), 1);
}

/// The audit of the other limits of the path, under the same held-back writes: one code
/// SMS a minute, and one active query, whatever the number of parallel requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_parallel_code_requests_send_one_sms() {
    let fx = slow_fx();
    let barrier = Arc::new(tokio::sync::Barrier::new(20));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (svc, barrier) = (fx.svc.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                svc.create_verification(
                    &uid(ALICE),
                    VerificationRequest {
                        purpose: Purpose::SubmitQuery,
                    },
                )
                .await
            })
        })
        .collect();
    let mut sent = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => sent += 1,
            Err(ServiceError::TooManyRequests { .. }) => {}
            other => panic!("expected a code or 429, got {other:?}"),
        }
    }
    assert_eq!(sent, 1);
    assert_eq!(
        fx.sms.sent().len(),
        1,
        "one SMS for twenty parallel requests"
    );
    assert_eq!(fx.state(ALICE).sms_count, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_parallel_submissions_with_held_back_writes_make_one_query() {
    let fx = slow_fx();
    let mut bodies = Vec::new();
    for i in 0..20 {
        let c = fx.planted_code(ALICE, i).await;
        bodies.push(body(&["ICBC"], &c.id, &c.code, &fx.face(ALICE), PASSWORD));
    }
    let results = burst(&fx, ALICE, None, bodies).await;
    let accepted = results.iter().filter(|r| matches!(r, Ok((202, _)))).count();
    // The rest: 409, or (more than five comparisons at once) 429 while the fifth runs.
    let refused = results
        .iter()
        .filter(|r| {
            matches!(
                r,
                Err(ServiceError::QueryInProgress) | Err(ServiceError::TooManyRequests { .. })
            )
        })
        .count();
    assert_eq!((accepted, refused), (1, 19), "{results:?}");
    assert_eq!(
        fx.state(ALICE).password_locked_until,
        None,
        "the right password locks nothing"
    );
    assert_eq!(fx.store.queries().len(), 1);
}

/// The right password in the last slot (four failures before it), then the submission is
/// refused at its commit (another query got in first): the slot is given back, the lock
/// that slot set is lifted, and the count starts again.
#[tokio::test]
async fn a_matched_password_refused_at_commit_leaves_no_lock() {
    let slot: Arc<Mutex<Option<Arc<Interleaved>>>> = Arc::default();
    let slot2 = slot.clone();
    let fx = Fx::with_store(move |inner| {
        let race = Arc::new(Interleaved::new(inner, 0));
        *slot2.lock().unwrap() = Some(race.clone());
        race
    });
    let race = slot.lock().unwrap().clone().unwrap();
    fx.store.set_state(
        &uid(ALICE),
        UserState {
            version: 3,
            password_failures: 4,
            ..Default::default()
        },
    );
    let theirs = fx.planted_code(ALICE, 1).await;
    let winner = winning_submission(
        &uid(ALICE),
        &fx.state(ALICE),
        VerificationId::parse(&theirs.id).unwrap(),
        fx.now(),
    );
    *race.hook.lock().unwrap() = Some(winner);

    let mine = fx.planted_code(ALICE, 2).await;
    let raw = body(&["ICBC"], &mine.id, &mine.code, &fx.face(ALICE), PASSWORD);
    assert_err!(
        fx.submit(ALICE, Some("mine"), &raw).await,
        ServiceError::QueryInProgress
    );
    let state = fx.state(ALICE);
    assert_eq!(
        state.password_locked_until, None,
        "no lock after a right password"
    );
    assert_eq!(state.password_lock_holder, None);
    assert_eq!(state.password_failures, 0);
    assert_eq!(fx.store.queries().len(), 1, "only the winner's query");
}
