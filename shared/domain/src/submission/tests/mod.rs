//! Unit tests of the submission path on the in-memory store, the in-memory SMS sender
//! and a manual clock: every rule of DESIGN.md sections 1–3 for `submit-query`.
//! This module holds the fixture and the store wrapper the use cases below share; each
//! submodule is one of them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::test_support::at;
use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{json, Value};

use super::api::{SubmitRequest, VerificationRequest};
use super::{SubmissionDeps, SubmissionService};
use crate::clock::{Clock, ManualClock};
use crate::config::{ServiceConfig, DEFAULT_CONFIG};
use crate::error::ServiceError;
use crate::memory::{sms_lane, MemorySms, MemoryStore};
use crate::model::ids::{QueryId, UserId, VerificationId};
use crate::model::phone::PhoneNumber;
use crate::model::profile::{IdNumber, UserProfile};
use crate::model::purpose::Purpose;
use crate::model::region::RegionCode;
use crate::ports::{SmsAdmission, StoreError, SubmissionStore, SubmitError};
use crate::records::{
    IdempotencyClaim, IdempotencyRecord, PasswordSlot, Submission, UserState, VerificationRecord,
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
    /// The SMS channel's rate the service asks (unlimited unless a test sets one).
    admission: Arc<dyn SmsAdmission>,
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
        Self::with_channel(1_000, wrap)
    }

    /// As [`Self::with_store`], the SMS channel admitting `rate` messages a second.
    fn with_channel(
        rate: u32,
        wrap: impl FnOnce(Arc<MemoryStore>) -> Arc<dyn SubmissionStore>,
    ) -> Self {
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
                sms_admission: Arc::new(sms_lane(rate)),
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
            admission: Arc::new(sms_lane(rate)),
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
            sms_admission: self.admission.clone(),
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

mod banks;
mod concurrency;
mod consent;
mod cooldown;
mod eligibility;
mod face_token;
mod happy_path;
mod idempotency;
mod payment_password;
mod sms_channel;
mod sms_code;
mod sms_limits;
