//! Reports end to end on the in-memory store: building, aggregating (once, sealed, one
//! SMS), viewing (step-up every time, 404 for others, 410 after 7 days) and sweeping.
//! This module holds the world the use cases below share; each submodule is one of them.

use std::ops::Deref;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{json, Value};

use super::aggregate::{AggregateOutcome, Aggregator, AggregatorDeps};
use super::body::{self, BankStatus, Report};
use super::crypto::ReportOpener;
use super::view::{CodeInput, StepUp, ViewDeps, ViewService};
use crate::error::ServiceError;
use crate::memory::{sms_lane, MemorySms, RecordingMetrics};
use crate::model::card::{AnsweredCard, CardKind, FourDigits};
use crate::model::ids::{QueryId, UserId, VerificationId};
use crate::model::phone::PhoneNumber;
use crate::model::purpose::Purpose;
use crate::ports::{NotifyError, QueryStore, ReportStore, Settlement, SmsSender, SubmissionStore};
use crate::records::*;
use crate::security::dev;
use crate::security::face::FaceVerifier;
use crate::security::sms_code::CodeHasher;
use crate::sweep::Sweeper;
use crate::test_support::{user, BankWorld, Script, PHONE, T0};

const FACE_ISSUER: &str = "face-issuer";
const FACE_AUDIENCE: &str = "card-lookup";

// ---------------------------------------------------------------------------------------
// Fakes
// ---------------------------------------------------------------------------------------

/// Records sent SMS (through `MemorySms`); fails the next `fail_next` sends.
#[derive(Default)]
struct TestSms {
    inner: MemorySms,
    fail_next: AtomicUsize,
    attempts: AtomicUsize,
}

impl TestSms {
    fn sent(&self) -> Vec<(PhoneNumber, String)> {
        self.inner.sent()
    }
    fn fail(&self, n: usize) {
        self.fail_next.store(n, Ordering::SeqCst);
    }
    /// SNS answering `Throttling` (after the adapter's retries) until turned off.
    fn throttle(&self, on: bool) {
        self.inner.throttle(on);
    }
}

#[async_trait]
impl SmsSender for TestSms {
    async fn send_sms(&self, to: &PhoneNumber, text: &str) -> Result<(), NotifyError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        if self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(NotifyError::Failed("SNS is down".into()));
        }
        self.inner.send_sms(to, text).await
    }
}

// ---------------------------------------------------------------------------------------
// World
// ---------------------------------------------------------------------------------------

/// The shared bank world with the report services on it.
struct World {
    base: BankWorld,
    sms: Arc<TestSms>,
    metrics: Arc<RecordingMetrics>,
    aggregator: Arc<Aggregator>,
    view: ViewService,
    sweeper: Sweeper,
    codes: CodeHasher,
    face_private: String,
}

impl Deref for World {
    type Target = BankWorld;

    fn deref(&self) -> &BankWorld {
        &self.base
    }
}

fn world() -> World {
    world_with(&[])
}

fn world_with(scripts: &[(&str, Vec<Script>)]) -> World {
    world_on_channel(scripts, 1_000)
}

/// A world whose SMS channel admits `rate` messages a second (of the manual clock).
fn world_on_channel(scripts: &[(&str, Vec<Script>)], rate: u32) -> World {
    let base = BankWorld::new(scripts);
    let (config, clock, store) = (&base.config, &base.clock, &base.store);
    let sms = Arc::new(TestSms::default());
    let (face_private, face_public) = dev::generate_ed25519();
    let codes = CodeHasher::new(&[7; 32]).unwrap();
    let metrics = Arc::new(RecordingMetrics::default());

    let aggregator = Arc::new(Aggregator::new(AggregatorDeps {
        config: config.clone(),
        queries: store.clone(),
        reports: store.clone(),
        users: store.clone(),
        profiles: store.clone(),
        sms: sms.clone(),
        sms_admission: Arc::new(sms_lane(rate)),
        sealer: base.sealer.clone(),
        clock: clock.clone(),
        metrics: metrics.clone(),
    }));
    let view = ViewService::new(ViewDeps {
        disputes: store.clone(),
        config: config.clone(),
        queries: store.clone(),
        reports: store.clone(),
        verifications: store.clone(),
        codes: codes.clone(),
        face: Arc::new(
            FaceVerifier::new(
                &face_public,
                FACE_ISSUER,
                FACE_AUDIENCE,
                config.rules.face_token_max_age,
            )
            .unwrap(),
        ),
        opener: ReportOpener::new("k1", &base.report_private).unwrap(),
        clock: clock.clone(),
    });
    let sweeper = Sweeper {
        disputes: store.clone(),
        queries: store.clone(),
        reports: store.clone(),
        planner: base.planner.clone(),
        aggregator: aggregator.clone(),
        clock: clock.clone(),
        config: config.clone(),
        gate: base.gate.clone(),
        // Its own: the aggregation tests assert every metric the aggregator emits.
        metrics: Arc::new(RecordingMetrics::default()),
    };
    let w = World {
        base,
        sms,
        metrics,
        aggregator,
        view,
        sweeper,
        codes,
        face_private,
    };
    w.profile("u1", PHONE);
    w.profile("u2", "+8613900139000");
    w
}

fn card(kind: CardKind, digits: &str) -> AnsweredCard {
    AnsweredCard {
        kind,
        first4: FourDigits::parse(&digits[..4]).unwrap(),
        last4: FourDigits::parse(&digits[4..]).unwrap(),
        card_ref: None,
    }
}

/// Query ids sort by the (manual) clock, as real ones sort by submission time.
fn query_id_at(t: DateTime<Utc>) -> QueryId {
    static SEQ: AtomicU64 = AtomicU64::new(1);
    let ms = t.timestamp_millis() as u64;
    // A random part like a real one (a long run of zeros would look like a card number).
    let u = ulid::Ulid::from_parts(
        ms,
        ulid::Ulid::generate().random() ^ u128::from(SEQ.fetch_add(1, Ordering::SeqCst)),
    );
    QueryId::parse(&u.to_string()).unwrap()
}

/// An SMS-code step-up. (How a request body becomes one, and which bodies are refused,
/// is the inbound layer's; its tests hold those bodies.)
fn code_step(vid: &str, code: &str) -> StepUp {
    StepUp::Code {
        verification: CodeInput {
            verification_id: vid.into(),
            sms_code: code.into(),
        },
    }
}

fn face_step(token: &str) -> StepUp {
    StepUp::Face {
        face_token: token.into(),
    }
}

/// The same proof again (a `StepUp` is used up by the view it is given to).
fn same_proof(step: &StepUp) -> StepUp {
    match step {
        StepUp::Code { verification } => {
            code_step(&verification.verification_id, &verification.sms_code)
        }
        StepUp::Face { face_token } => face_step(face_token),
    }
}

/// Each bank of the report with its status, in the report's order.
fn bank_statuses(report: &Report) -> Vec<(&str, BankStatus)> {
    report
        .summary
        .banks
        .iter()
        .map(|b| (b.bank_code.as_str(), b.status))
        .collect()
}

/// The longest run of ASCII digits in `s`, spaces ignored.
fn longest_digit_run(s: &str) -> usize {
    let mut best = 0;
    let mut run = 0;
    for c in s.chars().filter(|c| *c != ' ') {
        if c.is_ascii_digit() {
            run += 1;
            best = best.max(run);
        } else {
            run = 0;
        }
    }
    best
}

impl World {
    /// A submitted query (holding the user's active-query lock) for the given banks.
    async fn submit(&self, uid: &str, banks: &[&str]) -> QueryId {
        let q = query_id_at(self.now());
        self.submit_query(&user(uid), q, banks, |b| format!("inq-{b}-{q}"))
            .await;
        q
    }

    /// Settles a leg as fan-out or a callback would: an answer's cards sealed.
    async fn settle(&self, q: &QueryId, bank: &str, state: LegState, cards: Vec<AnsweredCard>) {
        let query = self.query(q).await;
        let leg = self.leg(q, bank).await;
        let st = Settlement {
            state,
            failure: (state == LegState::Failed).then(|| "BANK_ERROR".to_owned()),
            answer_digest: (state != LegState::NoResponse).then(|| format!("digest-{bank}")),
            sealed: (state == LegState::Answered).then(|| {
                body::seal_answer(&self.sealer, &query, &leg.bank, &leg.inquiry_id, &cards).unwrap()
            }),
            at: self.now(),
        };
        self.store
            .settle(q, &self.code(bank), &st, None)
            .await
            .unwrap();
    }

    async fn answer(&self, q: &QueryId, bank: &str, cards: Vec<AnsweredCard>) {
        self.settle(q, bank, LegState::Answered, cards).await;
    }

    /// The leg was sent and the bank accepted it (a callback is awaited).
    async fn accept(&self, q: &QueryId, bank: &str) {
        assert!(self
            .store
            .claim_attempt(q, &self.code(bank), 0, self.now())
            .await
            .unwrap());
        self.store
            .mark_accepted(q, &self.code(bank), 1)
            .await
            .unwrap();
    }

    async fn query(&self, q: &QueryId) -> QueryRecord {
        QueryStore::query(self.store.as_ref(), q)
            .await
            .unwrap()
            .unwrap()
    }

    async fn stored(&self, q: &QueryId) -> Option<StoredReport> {
        ReportStore::report(self.store.as_ref(), q).await.unwrap()
    }

    /// Opens a stored report as view-report does (no step-up, no view recorded).
    async fn open(&self, stored: &StoredReport) -> Report {
        let query = self.query(&stored.query_id).await;
        super::view::open_report(&self.opener(), &self.config, &query.user_id, &query, stored)
            .unwrap()
    }

    /// A query to ICBC and CMB in which ICBC has answered with `cards` and CMB not yet.
    async fn icbc_answered(&self, uid: &str, cards: Vec<AnsweredCard>) -> QueryId {
        let q = self.submit(uid, &["ICBC", "CMB"]).await;
        self.answer(&q, "ICBC", cards).await;
        q
    }

    /// u1's query to ICBC (two debit, one credit) and CMB (no cards), reported now.
    async fn reported(&self, uid: &str) -> QueryId {
        let cards = vec![
            card(CardKind::Debit, "62221234"),
            card(CardKind::Credit, "62583456"),
            card(CardKind::Debit, "62225678"),
        ];
        let q = self.icbc_answered(uid, cards).await;
        self.answer(&q, "CMB", vec![]).await;
        assert_eq!(
            self.aggregator.aggregate(&q).await.unwrap(),
            AggregateOutcome::Published
        );
        q
    }

    /// [`World::reported`], and when its report expires.
    async fn reported_expiring(&self, uid: &str) -> (QueryId, DateTime<Utc>) {
        let q = self.reported(uid).await;
        (q, self.query(&q).await.report_expires_at.unwrap())
    }

    /// A VIEW_REPORT (or other purpose) code as the SMS path stores it; its id.
    async fn sms_code(&self, uid: &str, purpose: Purpose, code: &str) -> String {
        let user = user(uid);
        let vid = VerificationId::generate();
        self.store
            .put_verification(&VerificationRecord {
                verification_id: vid,
                user_id: user.clone(),
                purpose,
                code_hash: self.codes.hash(&user, &vid, purpose, code),
                expires_at: self.now() + self.config.rules.sms_code_validity,
                attempts: 0,
                used: false,
            })
            .await
            .unwrap();
        vid.to_string()
    }

    async fn view_code_step(&self, uid: &str) -> StepUp {
        let vid = self.sms_code(uid, Purpose::ViewReport, "246810").await;
        code_step(&vid, "246810")
    }

    /// A passing face token for `uid`, issued now.
    fn face_token(&self, uid: &str, nonce: &str) -> String {
        self.face_token_with(uid, "pass", self.now(), nonce)
    }

    /// A face token from the provider: `result` "pass" or "fail", issued at `at`.
    fn face_token_with(&self, uid: &str, result: &str, at: DateTime<Utc>, nonce: &str) -> String {
        self.face_provider(&self.face_private, FACE_AUDIENCE)
            .token(uid, "VIEW_REPORT", result, at, nonce)
            .unwrap()
    }

    /// The face provider (or a forger) signing with `pem`, issuing for `audience`.
    fn face_provider<'a>(&self, pem: &'a str, audience: &'a str) -> dev::FaceProvider<'a> {
        dev::FaceProvider {
            private_pem: pem,
            issuer: FACE_ISSUER,
            audience,
        }
    }

    /// The report as `user` asks to see it with this step-up.
    async fn view_report(
        &self,
        user: &UserId,
        q: &QueryId,
        step: &StepUp,
    ) -> Result<Value, ServiceError> {
        self.view
            .report(user, &q.to_string(), same_proof(step))
            .await
    }

    /// Why the request to see the report was refused (it must be).
    async fn view_refused(&self, user: &UserId, q: &QueryId, step: &StepUp) -> ServiceError {
        self.view_report(user, q, step).await.unwrap_err()
    }

    fn report_status(views: &[super::view::QueryView], q: &QueryId) -> &'static str {
        views
            .iter()
            .find(|v| v.query_id == q.to_string())
            .unwrap()
            .report_status
    }
}

mod aggregation;
mod building;
mod deletion;
mod disputes;
mod expiry;
mod integrity;
mod listing;
mod notices;
mod pages;
mod step_up;
mod sweeper;
mod view_log;
