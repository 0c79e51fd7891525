//! Reports end to end on the in-memory store: building, aggregating (once, sealed, one
//! SMS), viewing (step-up every time, 404 for others, 410 after 7 days) and sweeping.

use std::ops::Deref;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{json, Value};

use super::aggregate::{
    AggregateOutcome, Aggregator, AggregatorDeps, NOTICE_LEASE, REPORT_READY_SMS,
};
use super::body::{self, BankStatus, Report, ReportedBank, NOTICES, PARTIAL_NOTICE};
use super::crypto::ReportOpener;
use super::view::{CodeInput, StepUp, ViewDeps, ViewService};
use crate::dispatch::fanout::LegOutcome;
use crate::error::ServiceError;
use crate::memory::{MemorySms, RecordingMetrics};
use crate::model::bank::BankCode;
use crate::model::card::{AnsweredCard, CardKind, CardRef, FourDigits};
use crate::model::ids::{QueryId, UserId, VerificationId};
use crate::model::phone::PhoneNumber;
use crate::model::purpose::Purpose;
use crate::ports::{
    Metric, NotifyError, QueryStore, ReportStore, Settlement, SmsSender, SubmissionStore,
};
use crate::records::*;
use crate::security::dev;
use crate::security::face::FaceVerifier;
use crate::security::sms_code::CodeHasher;
use crate::sweep::{SweepStats, Sweeper};
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
        sealer: base.sealer.clone(),
        clock: clock.clone(),
        metrics: metrics.clone(),
    }));
    let view = ViewService::new(ViewDeps {
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
        queries: store.clone(),
        reports: store.clone(),
        fanout: base.fanout.clone(),
        aggregator: aggregator.clone(),
        clock: clock.clone(),
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

// ---------------------------------------------------------------------------------------
// body::build
// ---------------------------------------------------------------------------------------

/// A leg of `q` holding `cards` sealed as fan-out would seal them.
fn leg_record(
    w: &World,
    q: &QueryRecord,
    bank: &BankCode,
    state: LegState,
    cards: Vec<AnsweredCard>,
) -> LegRecord {
    let inquiry_id = format!("inq-{bank}");
    LegRecord {
        query_id: q.query_id,
        bank: bank.clone(),
        cards: vec![body::seal_answer(&w.sealer, q, bank, &inquiry_id, &cards).unwrap()],
        inquiry_id,
        state,
        attempts: 1,
        next_attempt_at: None,
        failure: None,
        answer_digest: None,
        settled_at: None,
    }
}

/// The aggregator's half (content, sealed with nothing in clear) and view-report's
/// half (opened and rendered) of building a report, without the stores.
fn build(
    w: &World,
    q: &QueryRecord,
    legs: &[LegRecord],
    generated_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Report {
    let content = body::content(q, legs);
    let opener = w.opener();
    body::render(
        &q.query_id.to_string(),
        generated_at,
        expires_at,
        &content,
        &w.config.banks,
        |bank, sealed| body::open_answer(&opener, q, bank, sealed),
    )
    .unwrap()
}

fn query_record(w: &World, banks: &[&str]) -> QueryRecord {
    QueryRecord {
        query_id: QueryId::generate(),
        user_id: user("u1"),
        phase: QueryPhase::Aggregating,
        submitted_at: T0,
        report_due_by: T0 + TimeDelta::hours(24),
        collect_until: T0 + TimeDelta::hours(24),
        banks: banks.iter().map(|b| w.code(b)).collect(),
        report_generated_at: None,
        report_expires_at: None,
        last_viewed_at: None,
        report_deleted_at: None,
        views: Vec::new(),
        views_total: 0,
        notified_at: None,
    }
}

#[tokio::test]
async fn build_summarises_each_bank_in_the_users_order() {
    let w = world();
    // Not the configuration's order (ICBC, ABC, BOC, CCB, ..., CMB).
    let q = query_record(&w, &["CMB", "ICBC", "ABC", "CCB", "BOC"]);
    let id = q.query_id;
    let legs = vec![
        // Legs come from the store in bank-code order, not the user's.
        leg_record(&w, &q, &w.code("ABC"), LegState::NoResponse, vec![]),
        leg_record(
            &w,
            &q,
            &w.code("BOC"),
            LegState::Accepted,
            vec![card(CardKind::Debit, "62160001")],
        ),
        leg_record(
            &w,
            &q,
            &w.code("CCB"),
            LegState::Failed,
            vec![card(CardKind::Debit, "43670002")],
        ),
        leg_record(&w, &q, &w.code("CMB"), LegState::Answered, vec![]),
        leg_record(
            &w,
            &q,
            &w.code("ICBC"),
            LegState::Answered,
            vec![
                card(CardKind::Credit, "62583456"),
                card(CardKind::Debit, "62221234"),
                card(CardKind::Debit, "62225678"),
            ],
        ),
    ];
    let gen = T0 + TimeDelta::hours(1);
    let r = build(&w, &q, &legs, gen, gen + TimeDelta::days(7));

    assert_eq!(r.query_id, id.to_string());
    assert_eq!(
        (r.generated_at, r.expires_at),
        (gen, gen + TimeDelta::days(7))
    );
    let rows: Vec<(&str, &str, BankStatus, u32, u32)> = r
        .summary
        .banks
        .iter()
        .map(|b| {
            (
                b.bank_code.as_str(),
                b.bank_name.as_str(),
                b.status,
                b.debit_cards,
                b.credit_cards,
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("CMB", "招商银行", BankStatus::Responded, 0, 0),
            ("ICBC", "工商银行", BankStatus::Responded, 2, 1),
            ("ABC", "农业银行", BankStatus::NoResponse, 0, 0),
            ("CCB", "建设银行", BankStatus::Failed, 0, 0),
            // Still waiting for a callback when the report is built: no answer.
            ("BOC", "中国银行", BankStatus::NoResponse, 0, 0),
        ]
    );
    assert_eq!(
        (
            r.summary.total_cards,
            r.summary.debit_cards,
            r.summary.credit_cards
        ),
        (3, 2, 1)
    );

    // Cards only from answered legs, masked 4 + 4.
    assert_eq!(r.cards.len(), 3);
    assert!(r
        .cards
        .iter()
        .all(|c| c.bank_code == "ICBC" && c.bank_name == "工商银行"));
    let mut masked: Vec<(CardKind, &str)> = r
        .cards
        .iter()
        .map(|c| (c.kind, c.masked_number.as_str()))
        .collect();
    masked.sort();
    assert_eq!(
        masked,
        vec![
            (CardKind::Debit, "6222 **** **** 1234"),
            (CardKind::Debit, "6222 **** **** 5678"),
            (CardKind::Credit, "6258 **** **** 3456"),
        ]
    );
    for c in &r.cards {
        let b = c.masked_number.as_bytes();
        assert_eq!(c.masked_number.len(), 19, "{}", c.masked_number);
        assert!(b[..4].iter().all(u8::is_ascii_digit) && b[15..].iter().all(u8::is_ascii_digit));
        assert_eq!(&c.masked_number[4..15], " **** **** ");
    }

    // The five notices, plus the partial one: some banks did not answer.
    assert_eq!(r.notices.len(), 6);
    assert_eq!(&r.notices[..5], NOTICES.map(str::to_owned).as_slice());
    assert_eq!(r.notices[5], PARTIAL_NOTICE);
}

#[tokio::test]
async fn card_refs_stay_in_the_sealed_answer_and_out_of_the_report() {
    let w = world();
    let q = query_record(&w, &["ICBC"]);
    let with_ref = |kind, digits, r: &str| AnsweredCard {
        card_ref: Some(CardRef::parse(r).unwrap()),
        ..card(kind, digits)
    };
    let cards = vec![
        with_ref(CardKind::Debit, "62221234", "cr_qzkdmwbtaeyhrnxfcgps"),
        with_ref(CardKind::Credit, "62583456", "cr_other"),
    ];
    let legs = [leg_record(
        &w,
        &q,
        &w.code("ICBC"),
        LegState::Answered,
        cards.clone(),
    )];
    // Sealed with the cards: the envelope opens to the refs as they came.
    let reported = ReportedBank {
        bank_code: w.code("ICBC"),
        status: BankStatus::Responded,
        inquiry_id: legs[0].inquiry_id.clone(),
        answer: None,
    };
    assert_eq!(
        body::open_answer(&w.opener(), &q, &reported, &legs[0].cards[0]).unwrap(),
        cards
    );
    let r = build(&w, &q, &legs, T0, T0 + TimeDelta::days(7));
    assert_eq!(r.cards.len(), 2);
    let json = serde_json::to_string(&r).unwrap();
    assert!(
        !json.contains("card_ref") && !json.contains("cr_"),
        "the app contract has no card_ref: {json}"
    );
}

#[tokio::test]
async fn build_adds_the_partial_notice_only_when_a_bank_did_not_respond() {
    let w = world();
    let q = query_record(&w, &["ICBC", "CMB"]);
    let all = vec![
        leg_record(&w, &q, &w.code("CMB"), LegState::Answered, vec![]),
        leg_record(
            &w,
            &q,
            &w.code("ICBC"),
            LegState::Answered,
            vec![card(CardKind::Debit, "62221234")],
        ),
    ];
    let r = build(&w, &q, &all, T0, T0 + TimeDelta::days(7));
    assert_eq!(r.notices, NOTICES.map(str::to_owned).to_vec());
    assert!(r
        .summary
        .banks
        .iter()
        .all(|b| b.status == BankStatus::Responded));
    // The notices say what the brief asks, in Chinese.
    let text = r.notices.join("");
    for phrase in [
        "以银行记录为准",
        "预留手机号",
        "无卡支付",
        "联系发卡银行",
        "验证码",
        "不影响",
        "征信",
    ] {
        assert!(text.contains(phrase), "{phrase}");
    }

    for state in [LegState::Failed, LegState::NoResponse, LegState::Pending] {
        let mut legs = all.clone();
        legs[0].state = state;
        let r = build(&w, &q, &legs, T0, T0 + TimeDelta::days(7));
        assert_eq!(r.notices.len(), 6, "{state:?}");
        assert_eq!(r.notices[5], PARTIAL_NOTICE);
    }
    // A bank without any leg record did not respond either.
    let r = build(&w, &q, &all[1..], T0, T0 + TimeDelta::days(7));
    assert_eq!(r.summary.banks[1].status, BankStatus::NoResponse);
    assert_eq!(r.notices.last().unwrap(), PARTIAL_NOTICE);
}

#[tokio::test]
async fn the_report_json_follows_the_contract_and_holds_no_card_number() {
    let w = world();
    let q = query_record(&w, &["ICBC", "CCB", "ABC"]);
    let legs = vec![
        leg_record(
            &w,
            &q,
            &w.code("ICBC"),
            LegState::Answered,
            vec![
                card(CardKind::Debit, "62221234"),
                card(CardKind::Credit, "62583456"),
            ],
        ),
        leg_record(&w, &q, &w.code("CCB"), LegState::Failed, vec![]),
    ];
    let r = build(&w, &q, &legs, T0, T0 + TimeDelta::days(7));
    let v = serde_json::to_value(&r).unwrap();
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "cards",
            "expires_at",
            "generated_at",
            "notices",
            "query_id",
            "summary"
        ]
    );
    assert_eq!(v["generated_at"], "2026-11-28T10:00:00Z");
    assert_eq!(v["expires_at"], "2026-12-05T10:00:00Z");
    assert_eq!(v["summary"]["total_cards"], 2);
    assert_eq!(v["summary"]["debit_cards"], 1);
    assert_eq!(v["summary"]["credit_cards"], 1);
    assert_eq!(
        v["summary"]["banks"],
        json!([
            {"bank_code": "ICBC", "bank_name": "工商银行", "status": "RESPONDED", "debit_cards": 1, "credit_cards": 1},
            {"bank_code": "CCB", "bank_name": "建设银行", "status": "FAILED", "debit_cards": 0, "credit_cards": 0},
            {"bank_code": "ABC", "bank_name": "农业银行", "status": "NO_RESPONSE", "debit_cards": 0, "credit_cards": 0},
        ])
    );
    let cards = v["cards"].as_array().unwrap();
    assert_eq!(cards.len(), 2);
    for c in cards {
        let mut k: Vec<&str> = c.as_object().unwrap().keys().map(String::as_str).collect();
        k.sort();
        assert_eq!(k, ["bank_code", "bank_name", "kind", "masked_number"]);
        assert!(c["kind"] == "DEBIT" || c["kind"] == "CREDIT");
    }
    assert!(cards
        .iter()
        .any(|c| c["kind"] == "DEBIT" && c["masked_number"] == "6222 **** **** 1234"));
    assert!(cards
        .iter()
        .any(|c| c["kind"] == "CREDIT" && c["masked_number"] == "6258 **** **** 3456"));
    // Nothing in the card list is longer than four digits in a row, spaces ignored.
    assert!(
        longest_digit_run(&v["cards"].to_string()) <= 4,
        "{}",
        v["cards"]
    );
    // It reads back as the same report (the viewing path parses it).
    assert_eq!(serde_json::from_value::<Report>(v).unwrap(), r);
}

// ---------------------------------------------------------------------------------------
// Aggregator
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn settled_legs_publish_one_sealed_report_close_the_query_and_send_one_sms() {
    let w = world();
    let cards = vec![
        card(CardKind::Debit, "62221234"),
        card(CardKind::Credit, "62583456"),
    ];
    let q = w.icbc_answered("u1", cards).await;
    w.answer(&q, "CMB", vec![]).await;
    let before = w.store.state_of(&user("u1"));
    assert_eq!(before.active_query_id, Some(q));
    w.clock.advance(TimeDelta::seconds(3));
    let now = w.now();

    assert_eq!(
        w.aggregator.aggregate(&q).await.unwrap(),
        AggregateOutcome::Published
    );

    // Stored sealed: no card digits, bank names or field names in the clear.
    let stored = w.stored(&q).await.expect("a report is stored");
    assert_eq!(stored.user_id, user("u1"));
    let ct = base64::engine::general_purpose::STANDARD
        .decode(&stored.sealed.ciphertext)
        .unwrap();
    for needle in [
        &b"6222"[..],
        b"1234",
        b"3456",
        b"masked_number",
        "工商银行".as_bytes(),
        b"RESPONDED",
    ] {
        assert!(
            !ct.windows(needle.len()).any(|win| win == needle),
            "{}",
            String::from_utf8_lossy(needle)
        );
    }
    let item = serde_json::to_string(&stored).unwrap();
    for needle in [
        "6222 ****",
        "masked_number",
        "工商银行",
        "summary",
        "notices",
    ] {
        assert!(
            !item.contains(needle),
            "{needle} readable in the stored item"
        );
    }
    // ... and it opens with the private key to the report of these legs.
    let report = w.open(&stored).await;
    assert_eq!(report.query_id, q.to_string());
    assert_eq!(report.generated_at, now);
    assert_eq!(stored.generated_at, now);
    assert_eq!(stored.expires_at, now + TimeDelta::days(7));
    assert_eq!(report.expires_at, now + TimeDelta::days(7));
    assert_eq!(
        (
            report.summary.total_cards,
            report.summary.debit_cards,
            report.summary.credit_cards
        ),
        (2, 1, 1)
    );
    assert!(report
        .summary
        .banks
        .iter()
        .all(|b| b.status == BankStatus::Responded));
    let mut masked: Vec<&str> = report
        .cards
        .iter()
        .map(|c| c.masked_number.as_str())
        .collect();
    masked.sort();
    assert_eq!(masked, ["6222 **** **** 1234", "6258 **** **** 3456"]);
    assert_eq!(report.notices, NOTICES.map(str::to_owned).to_vec());

    // The query record.
    let rec = w.query(&q).await;
    assert_eq!(rec.phase, QueryPhase::Reported);
    assert_eq!(rec.report_generated_at, Some(now));
    assert_eq!(rec.report_expires_at, Some(now + TimeDelta::days(7)));
    assert!(rec.notified_at.is_some());
    // The user: lock released, next query 7 days after generation.
    let state = w.store.state_of(&user("u1"));
    assert_eq!(state.active_query_id, None);
    assert_eq!(state.next_allowed_at, Some(now + TimeDelta::days(7)));
    assert_eq!(state.version, before.version + 1);
    // The operators' latency metric, once, from submission to generation.
    assert_eq!(
        w.metrics.emitted(),
        [(Metric::SubmitToReportLatency(now - rec.submitted_at), now)]
    );
    // The raw bank answers are gone.
    for bank in ["ICBC", "CMB"] {
        let leg = w.leg(&q, bank).await;
        assert!(leg.cards.is_empty(), "{bank}");
        assert!(leg.answer_digest.is_none(), "{bank}");
        assert_eq!(leg.state, LegState::Answered);
    }
    // One SMS to the registered phone: Chinese, no link.
    let sent = w.sms.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0.e164(), PHONE);
    assert_eq!(sent[0].1, REPORT_READY_SMS);
    let text = &sent[0].1;
    assert!(text.contains("一键查卡") && text.contains("报告"), "{text}");
    for link in ["http", "://", "www.", ".com", ".cn"] {
        assert!(!text.to_lowercase().contains(link), "{text}");
    }
}

#[tokio::test]
async fn a_redelivered_ready_record_publishes_nothing_and_sends_nothing() {
    let w = world();
    let q = w.reported("u1").await;
    let stored = w.stored(&q).await.unwrap();
    let record = w.query(&q).await;
    let state = w.store.state_of(&user("u1"));
    assert_eq!(w.sms.sent().len(), 1);

    w.clock.advance(TimeDelta::minutes(10));
    assert_eq!(
        w.aggregator.aggregate(&q).await.unwrap(),
        AggregateOutcome::AlreadyReported
    );
    assert_eq!(
        w.aggregator.aggregate(&q).await.unwrap(),
        AggregateOutcome::AlreadyReported
    );

    assert_eq!(
        w.stored(&q).await.unwrap(),
        stored,
        "the report is not rebuilt"
    );
    assert_eq!(w.query(&q).await, record);
    assert_eq!(w.store.state_of(&user("u1")), state);
    assert_eq!(w.sms.sent().len(), 1);
    assert_eq!(w.sms.attempts.load(Ordering::SeqCst), 1);
    assert_eq!(
        w.metrics.emitted().len(),
        1,
        "measured once, when published"
    );

    // An unknown query.
    assert_eq!(
        w.aggregator.aggregate(&QueryId::generate()).await.unwrap(),
        AggregateOutcome::UnknownQuery
    );
}

#[tokio::test]
async fn an_open_leg_waits_until_the_deadline_then_reports_it_as_no_response() {
    let w = world();
    let q = w.submit("u1", &["ICBC", "CMB"]).await;
    w.answer(&q, "ICBC", vec![card(CardKind::Debit, "62221234")])
        .await;
    w.accept(&q, "CMB").await;
    let record = w.query(&q).await;
    let state = w.store.state_of(&user("u1"));
    let icbc = w.leg(&q, "ICBC").await;

    for at in [
        T0 + TimeDelta::seconds(1),
        T0 + TimeDelta::hours(23),
        record.report_due_by - TimeDelta::seconds(1),
    ] {
        w.clock.set(at);
        assert_eq!(
            w.aggregator.aggregate(&q).await.unwrap(),
            AggregateOutcome::NotReady,
            "{at}"
        );
    }
    // Nothing written.
    assert!(w.stored(&q).await.is_none());
    assert_eq!(w.query(&q).await, record);
    assert_eq!(w.store.state_of(&user("u1")), state);
    assert_eq!(
        w.leg(&q, "ICBC").await,
        icbc,
        "the answer is kept until the report holds it"
    );
    assert!(w.sms.sent().is_empty());

    w.clock.set(record.report_due_by);
    assert_eq!(
        w.aggregator.aggregate(&q).await.unwrap(),
        AggregateOutcome::Published
    );
    let report = w.open(&w.stored(&q).await.unwrap()).await;
    let status = bank_statuses(&report);
    assert_eq!(
        status,
        [
            ("ICBC", BankStatus::Responded),
            ("CMB", BankStatus::NoResponse)
        ]
    );
    assert_eq!(report.summary.total_cards, 1);
    assert_eq!(report.notices.last().unwrap(), PARTIAL_NOTICE);
    assert_eq!(report.generated_at, record.report_due_by);
    assert_eq!(
        w.store.state_of(&user("u1")).next_allowed_at,
        Some(record.report_due_by + TimeDelta::days(7))
    );
    assert_eq!(w.sms.sent().len(), 1);
}

/// The report says CMB did not respond; the query's per-bank progress should say the
/// same once the query is reported, not "PENDING" forever.
#[tokio::test]
async fn a_report_published_at_the_deadline_leaves_no_bank_pending() {
    let w = world();
    let q = w.submit("u1", &["ICBC", "CMB"]).await;
    w.answer(&q, "ICBC", vec![]).await;
    w.accept(&q, "CMB").await;
    w.clock.set(T0 + TimeDelta::hours(24));
    assert_eq!(
        w.aggregator.aggregate(&q).await.unwrap(),
        AggregateOutcome::Published
    );
    let report = w.open(&w.stored(&q).await.unwrap()).await;
    assert_eq!(report.summary.banks[1].status, BankStatus::NoResponse);

    let detail = w.view.detail(&user("u1"), &q.to_string()).await.unwrap();
    assert_eq!(detail.record.report_status, "READY");
    let progress: Vec<(&str, &str)> = detail
        .progress
        .iter()
        .map(|p| (p.bank_code.as_str(), p.status))
        .collect();
    assert_eq!(
        progress,
        [("ICBC", "RESPONDED"), ("CMB", "NO_RESPONSE")],
        "a reported query shows a bank as still pending (its leg was left {:?})",
        w.leg(&q, "CMB").await.state
    );
}

#[tokio::test]
async fn a_failed_sms_leaves_the_report_published_and_is_sent_once_after_the_lease() {
    let w = world();
    w.sms.fail(1);
    let q = w.submit("u1", &["ICBC"]).await;
    w.answer(&q, "ICBC", vec![card(CardKind::Debit, "62221234")])
        .await;
    let claimed_at = w.now();

    // Publishing stands; the error only tells the stream to deliver again.
    let result = w.aggregator.aggregate(&q).await;
    assert!(
        result.is_err(),
        "an unsent notice is reported as a failure: {result:?}"
    );
    assert!(w.stored(&q).await.is_some());
    let rec = w.query(&q).await;
    assert_eq!(rec.phase, QueryPhase::Reported);
    assert_eq!(rec.notified_at, None);
    assert_eq!(w.store.state_of(&user("u1")).active_query_id, None);
    assert!(w.sms.sent().is_empty());
    assert_eq!(w.sms.attempts.load(Ordering::SeqCst), 1);

    // Within the lease nothing is sent, not by notify nor by a redelivery.
    w.clock
        .set(claimed_at + NOTICE_LEASE - TimeDelta::seconds(1));
    assert!(!w.aggregator.notify(&q).await.unwrap());
    assert_eq!(
        w.aggregator.aggregate(&q).await.unwrap(),
        AggregateOutcome::AlreadyReported
    );
    assert_eq!(w.sms.attempts.load(Ordering::SeqCst), 1);

    // After the 2-minute lease: sent once.
    w.clock
        .set(claimed_at + TimeDelta::minutes(2) + TimeDelta::seconds(1));
    assert!(w.aggregator.notify(&q).await.unwrap());
    let sent = w.sms.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0.e164(), PHONE);
    assert_eq!(w.query(&q).await.notified_at, Some(w.now()));

    // Confirmed: never again.
    assert!(!w.aggregator.notify(&q).await.unwrap());
    w.clock.advance(TimeDelta::hours(1));
    assert!(!w.aggregator.notify(&q).await.unwrap());
    assert_eq!(
        w.aggregator.aggregate(&q).await.unwrap(),
        AggregateOutcome::AlreadyReported
    );
    assert_eq!(w.sms.sent().len(), 1);
    assert_eq!(w.sms.attempts.load(Ordering::SeqCst), 2);
}

// ---------------------------------------------------------------------------------------
// ViewService
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn the_list_is_newest_first_and_moves_from_pending_to_ready_to_expired() {
    let w = world();
    let u1 = user("u1");
    let q1 = w.submit("u1", &["ICBC"]).await;
    let list = w.view.list(&u1).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0].status, list[0].report_status),
        ("PENDING", "PENDING")
    );
    assert_eq!(list[0].report_generated_at, None);

    w.clock.advance(TimeDelta::seconds(5));
    w.answer(&q1, "ICBC", vec![]).await;
    w.aggregator.aggregate(&q1).await.unwrap();
    let generated = w.now();
    let list = w.view.list(&u1).await.unwrap();
    assert_eq!((list[0].status, list[0].report_status), ("READY", "READY"));
    assert_eq!(list[0].report_generated_at, Some(generated));
    assert_eq!(
        list[0].report_expires_at,
        Some(generated + TimeDelta::days(7))
    );

    // A week later, a second query.
    w.clock
        .set(generated + TimeDelta::days(7) - TimeDelta::minutes(1));
    let q2 = w.submit("u1", &["CMB", "ABC"]).await;
    let list = w.view.list(&u1).await.unwrap();
    let ids: Vec<&str> = list.iter().map(|v| v.query_id.as_str()).collect();
    assert_eq!(ids, [q2.to_string(), q1.to_string()], "newest first");
    assert_eq!(World::report_status(&list, &q2), "PENDING");
    assert_eq!(World::report_status(&list, &q1), "READY");
    assert_eq!(list[0].banks, ["CMB", "ABC"]);

    // Expired the moment its 7 days are over, though the item is still there.
    w.clock.set(generated + TimeDelta::days(7));
    assert!(w.stored(&q1).await.is_some());
    let list = w.view.list(&u1).await.unwrap();
    assert_eq!(World::report_status(&list, &q1), "EXPIRED");
    assert_eq!(World::report_status(&list, &q2), "PENDING");
    let v = serde_json::to_value(&list[1]).unwrap();
    assert_eq!(v["report_status"], "EXPIRED");
    assert_eq!(v["query_id"], q1.to_string());

    // Nobody else sees them.
    assert!(w.view.list(&user("u2")).await.unwrap().is_empty());
}

#[tokio::test]
async fn detail_shows_per_bank_progress_in_the_chosen_order() {
    let w = world();
    let q = w.submit("u1", &["CCB", "ICBC", "ABC", "BOC", "CMB"]).await;
    w.answer(&q, "ICBC", vec![card(CardKind::Debit, "62221234")])
        .await;
    w.settle(&q, "ABC", LegState::NoResponse, vec![]).await;
    w.settle(&q, "BOC", LegState::Failed, vec![]).await;
    w.accept(&q, "CMB").await;

    let d = w.view.detail(&user("u1"), &q.to_string()).await.unwrap();
    assert_eq!(d.record.query_id, q.to_string());
    assert_eq!(
        (d.record.status, d.record.report_status),
        ("PENDING", "PENDING")
    );
    let progress: Vec<(&str, &str, &str)> = d
        .progress
        .iter()
        .map(|p| (p.bank_code.as_str(), p.bank_name.as_str(), p.status))
        .collect();
    assert_eq!(
        progress,
        [
            ("CCB", "建设银行", "PENDING"),
            ("ICBC", "工商银行", "RESPONDED"),
            ("ABC", "农业银行", "NO_RESPONSE"),
            ("BOC", "中国银行", "FAILED"),
            ("CMB", "招商银行", "PENDING"),
        ]
    );
    let v = serde_json::to_value(&d).unwrap();
    assert_eq!(v["query_id"], q.to_string());
    assert_eq!(v["report_status"], "PENDING");
    assert_eq!(
        v["progress"][3],
        json!({"bank_code": "BOC", "bank_name": "中国银行", "status": "FAILED"})
    );
    // No card of the answered leg shows here.
    assert!(!v.to_string().contains("6222"));
}

#[tokio::test]
async fn another_users_or_a_malformed_query_id_is_not_found() {
    let w = world();
    let q = w.reported("u1").await;
    let u2 = user("u2");
    assert!(matches!(
        w.view.detail(&u2, &q.to_string()).await,
        Err(ServiceError::NotFound)
    ));
    let body = w.view_code_step("u2").await;
    let e = w.view_refused(&u2, &q, &body).await;
    assert!(matches!(e, ServiceError::NotFound), "{e:?}");
    // u2's code was not used up by it.
    let q2 = w.reported("u2").await;
    assert!(w.view_report(&u2, &q2, &body).await.is_ok());

    for bad in [
        "nope",
        "",
        &q.to_string().to_lowercase(),
        "01ARZ3NDEKTSV4RRFFQ69G5FAVX",
        "../x",
    ] {
        assert!(
            matches!(
                w.view.detail(&user("u1"), bad).await,
                Err(ServiceError::NotFound)
            ),
            "{bad}"
        );
        let body = w.view_code_step("u1").await;
        assert!(
            matches!(
                w.view.report(&user("u1"), bad, same_proof(&body)).await,
                Err(ServiceError::NotFound)
            ),
            "{bad}"
        );
    }
    // A well-formed id that does not exist.
    assert!(matches!(
        w.view
            .detail(&user("u1"), &QueryId::generate().to_string())
            .await,
        Err(ServiceError::NotFound)
    ));
    assert!(w.query(&q).await.last_viewed_at.is_none());
}

#[tokio::test]
async fn a_report_is_shown_only_after_a_fresh_sms_code_each_time() {
    let w = world();
    let u1 = user("u1");
    let cards = vec![
        card(CardKind::Debit, "62221234"),
        card(CardKind::Credit, "62583456"),
    ];
    let q = w.icbc_answered("u1", cards).await;

    // Not ready yet: refused before the code is looked at, which stays usable.
    let vid = w.sms_code("u1", Purpose::ViewReport, "135790").await;
    let e = w.view_refused(&u1, &q, &code_step(&vid, "135790")).await;
    assert!(matches!(e, ServiceError::ReportNotReady), "{e:?}");

    w.answer(&q, "CMB", vec![]).await;
    w.clock.advance(TimeDelta::seconds(30));
    assert_eq!(
        w.aggregator.aggregate(&q).await.unwrap(),
        AggregateOutcome::Published
    );
    let generated = w.now();

    w.clock.advance(TimeDelta::minutes(1));
    let shown = w
        .view_report(&u1, &q, &code_step(&vid, "135790"))
        .await
        .unwrap();
    assert_eq!(shown["query_id"], q.to_string());
    assert_eq!(shown["summary"]["total_cards"], 2);
    assert_eq!(shown["summary"]["banks"][0]["bank_code"], "ICBC");
    assert_eq!(shown["summary"]["banks"][0]["status"], "RESPONDED");
    assert_eq!(shown["cards"].as_array().unwrap().len(), 2);
    assert!(shown["cards"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["masked_number"] == "6222 **** **** 1234"));
    assert_eq!(shown["notices"].as_array().unwrap().len(), 5);
    let expected = w.open(&w.stored(&q).await.unwrap()).await;
    assert_eq!(serde_json::from_value::<Report>(shown).unwrap(), expected);
    assert_eq!(expected.generated_at, generated);
    let viewed = w.now();
    assert_eq!(w.query(&q).await.last_viewed_at, Some(viewed));

    // The same code again: every view needs a fresh step-up.
    w.clock.advance(TimeDelta::seconds(10));
    let e = w.view_refused(&u1, &q, &code_step(&vid, "135790")).await;
    assert!(matches!(e, ServiceError::VerificationFailed), "{e:?}");
    assert_eq!(
        w.query(&q).await.last_viewed_at,
        Some(viewed),
        "a refused view is not recorded"
    );

    // A wrong code: refused, nothing shown, nothing recorded.
    let vid2 = w.sms_code("u1", Purpose::ViewReport, "112233").await;
    let e = w.view_refused(&u1, &q, &code_step(&vid2, "332211")).await;
    assert!(matches!(e, ServiceError::VerificationFailed), "{e:?}");
    assert_eq!(w.query(&q).await.last_viewed_at, Some(viewed));

    // A code for submitting a query does not open a report.
    let sub = w.sms_code("u1", Purpose::SubmitQuery, "445566").await;
    let e = w.view_refused(&u1, &q, &code_step(&sub, "445566")).await;
    assert!(matches!(e, ServiceError::VerificationFailed), "{e:?}");
    // Nor does another user's code, a malformed code or an unknown verification id.
    let other = w.sms_code("u2", Purpose::ViewReport, "778899").await;
    for body in [
        code_step(&other, "778899"),
        code_step(&vid2, "11223"),
        code_step(&VerificationId::generate().to_string(), "112233"),
        code_step("not-an-id", "112233"),
    ] {
        let e = w.view_refused(&u1, &q, &body).await;
        assert!(matches!(e, ServiceError::VerificationFailed), "{e:?}");
    }
    // An expired code.
    let late = w.sms_code("u1", Purpose::ViewReport, "990011").await;
    w.clock.advance(TimeDelta::minutes(5));
    let e = w.view_refused(&u1, &q, &code_step(&late, "990011")).await;
    assert!(matches!(e, ServiceError::VerificationFailed), "{e:?}");
    assert_eq!(w.query(&q).await.last_viewed_at, Some(viewed));

    // A fresh right code works again and records the new view.
    let fresh = w.view_code_step("u1").await;
    assert!(w.view_report(&u1, &q, &fresh).await.is_ok());
    assert_eq!(w.query(&q).await.last_viewed_at, Some(w.now()));
}

#[tokio::test]
async fn wrong_codes_burn_a_view_code_after_five_tries() {
    let w = world();
    let u1 = user("u1");
    let q = w.reported("u1").await;
    let vid = w.sms_code("u1", Purpose::ViewReport, "123456").await;
    for _ in 0..5 {
        let e = w.view_refused(&u1, &q, &code_step(&vid, "000000")).await;
        assert!(matches!(e, ServiceError::VerificationFailed));
    }
    let e = w.view_refused(&u1, &q, &code_step(&vid, "123456")).await;
    assert!(
        matches!(e, ServiceError::VerificationFailed),
        "a burnt code stays burnt: {e:?}"
    );
    assert!(w.query(&q).await.last_viewed_at.is_none());
}

#[tokio::test]
async fn a_face_token_opens_the_report_once() {
    let w = world();
    let u1 = user("u1");
    let q = w.reported("u1").await;
    let token = w.face_token("u1", "face-nonce-1");
    let shown = w.view_report(&u1, &q, &face_step(&token)).await.unwrap();
    assert_eq!(shown["query_id"], q.to_string());
    assert_eq!(w.query(&q).await.last_viewed_at, Some(w.now()));

    w.clock.advance(TimeDelta::seconds(5));
    let e = w.view_refused(&u1, &q, &face_step(&token)).await;
    assert!(matches!(e, ServiceError::FaceVerificationFailed), "{e:?}");

    // Another user's token, a failed check, a stale token, garbage: refused.
    let others = w.face_token_with("u2", "pass", w.now(), "face-nonce-2");
    let failed = w.face_token_with("u1", "fail", w.now(), "face-nonce-3");
    let stale = w.face_token_with(
        "u1",
        "pass",
        w.now() - TimeDelta::minutes(6),
        "face-nonce-4",
    );
    let (forger, _) = dev::generate_ed25519();
    let forged = w
        .face_provider(&forger, FACE_AUDIENCE)
        .token("u1", "VIEW_REPORT", "pass", w.now(), "face-nonce-5")
        .unwrap();
    let elsewhere = w
        .face_provider(&w.face_private, "another-service")
        .token("u1", "VIEW_REPORT", "pass", w.now(), "face-nonce-7")
        .unwrap();
    let submit_pass = w
        .face_provider(&w.face_private, FACE_AUDIENCE)
        .token("u1", "SUBMIT_QUERY", "pass", w.now(), "face-nonce-8")
        .unwrap();
    let refused = [others, failed, stale, forged, elsewhere, submit_pass];
    for t in refused.into_iter().chain(["garbage".to_owned()]) {
        let e = w.view_refused(&u1, &q, &face_step(&t)).await;
        assert!(matches!(e, ServiceError::FaceVerificationFailed), "{e:?}");
    }
    // A new token (new nonce) works.
    let again = w.face_token("u1", "face-nonce-6");
    assert!(w.view_report(&u1, &q, &face_step(&again)).await.is_ok());
}

#[tokio::test]
async fn an_expired_report_is_410_with_the_record_before_and_after_deletion() {
    let w = world();
    let u1 = user("u1");
    let (q, expires) = w.reported_expiring("u1").await;

    // One second before: still shown.
    w.clock.set(expires - TimeDelta::seconds(1));
    let body = w.view_code_step("u1").await;
    assert!(w.view_report(&u1, &q, &body).await.is_ok());

    // From expiry on, whether or not the item is gone yet.
    w.clock.set(expires);
    assert!(w.stored(&q).await.is_some(), "not yet deleted");
    // The record goes into the 410 body as it is (the inbound tests check that body).
    let check = |e: ServiceError| {
        let ServiceError::ReportExpired { query } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(query["query_id"], q.to_string());
        assert_eq!(query["report_status"], "EXPIRED");
        assert!(query.get("summary").is_none() && query.get("cards").is_none());
    };
    let body = w.view_code_step("u1").await;
    check(w.view_refused(&u1, &q, &body).await);
    let token = w.face_token("u1", "face-after-expiry");
    check(w.view_refused(&u1, &q, &face_step(&token)).await);
    assert_eq!(
        w.view
            .detail(&u1, &q.to_string())
            .await
            .unwrap()
            .record
            .report_status,
        "EXPIRED"
    );

    // Deleted by the sweeper: the same answer.
    let stats = w.sweeper.run_once().await.unwrap();
    assert_eq!(stats.expired, 1);
    assert!(w.stored(&q).await.is_none());
    check(w.view_refused(&u1, &q, &body).await);
    assert!(w
        .query(&q)
        .await
        .last_viewed_at
        .is_some_and(|t| t < expires));
}

// ---------------------------------------------------------------------------------------
// Sweeper
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn the_sweeper_closes_a_query_at_its_deadline_from_whatever_answered() {
    let w = world_with(&[
        ("ICBC", vec![Script::Cards(&[("DEBIT", "62221234")])]),
        ("CMB", vec![Script::Accept]),
    ]);
    let q = w.submit("u1", &["ICBC", "CMB"]).await;
    let out = w.fanout.dispatch(&q).await.unwrap();
    assert!(
        out.contains(&(w.code("CMB"), LegOutcome::Accepted)),
        "{out:?}"
    );
    assert_eq!(w.leg(&q, "CMB").await.state, LegState::Accepted);

    // Before the deadline: nothing due.
    w.clock.set(T0 + TimeDelta::hours(23));
    assert_eq!(w.sweeper.run_once().await.unwrap(), SweepStats::default());
    assert!(w.stored(&q).await.is_none());

    w.clock
        .set(T0 + TimeDelta::hours(24) + TimeDelta::minutes(3));
    let stats = w.sweeper.run_once().await.unwrap();
    assert_eq!(
        stats,
        SweepStats {
            deadlines: 1,
            ..SweepStats::default()
        }
    );
    let cmb = w.leg(&q, "CMB").await;
    assert_eq!(cmb.state, LegState::NoResponse);
    assert_eq!(cmb.settled_at, Some(w.now()));
    assert_eq!(w.leg(&q, "ICBC").await.state, LegState::Answered);
    let rec = w.query(&q).await;
    assert_eq!(rec.phase, QueryPhase::Reported);
    let report = w.open(&w.stored(&q).await.unwrap()).await;
    let status = bank_statuses(&report);
    assert_eq!(
        status,
        [
            ("ICBC", BankStatus::Responded),
            ("CMB", BankStatus::NoResponse)
        ]
    );
    assert_eq!(report.cards.len(), 1);
    assert_eq!(w.sms.sent().len(), 1);
    let d = w.view.detail(&user("u1"), &q.to_string()).await.unwrap();
    assert_eq!(d.progress[1].status, "NO_RESPONSE");

    // Again: nothing new.
    w.clock.advance(TimeDelta::minutes(5));
    assert_eq!(w.sweeper.run_once().await.unwrap(), SweepStats::default());
    assert_eq!(w.sms.sent().len(), 1);
}

#[tokio::test]
async fn the_sweeper_resends_a_leg_due_for_retry() {
    let w = world_with(&[
        (
            "ICBC",
            vec![Script::Status(503), Script::Cards(&[("DEBIT", "62221234")])],
        ),
        ("CMB", vec![Script::Cards(&[])]),
    ]);
    let q = w.submit("u1", &["ICBC", "CMB"]).await;
    let out = w.fanout.dispatch(&q).await.unwrap();
    let retry_at = out
        .iter()
        .find_map(|(b, o)| match o {
            LegOutcome::RetryAt(at) if b.as_str() == "ICBC" => Some(*at),
            _ => None,
        })
        .expect("ICBC is to be retried");
    assert_eq!(w.leg(&q, "CMB").await.state, LegState::Answered);
    assert_eq!(w.banks.total_calls(), 2);

    // Not yet due.
    w.clock.set(retry_at - TimeDelta::milliseconds(1));
    assert_eq!(w.sweeper.run_once().await.unwrap(), SweepStats::default());
    assert_eq!(w.banks.calls_to("ICBC"), 1);

    w.clock.set(retry_at);
    let stats = w.sweeper.run_once().await.unwrap();
    assert_eq!(
        stats,
        SweepStats {
            retries: 1,
            ..SweepStats::default()
        }
    );
    assert_eq!(w.banks.calls_to("ICBC"), 2);
    let icbc = w.leg(&q, "ICBC").await;
    assert_eq!((icbc.state, icbc.attempts), (LegState::Answered, 2));
    assert_eq!(
        w.leg_cards(&q, "ICBC").await,
        [card(CardKind::Debit, "62221234")]
    );

    // Again: nothing is sent.
    assert_eq!(w.sweeper.run_once().await.unwrap(), SweepStats::default());
    assert_eq!(w.banks.total_calls(), 3);

    // The "ready" record then brings the report.
    assert_eq!(
        w.aggregator.aggregate(&q).await.unwrap(),
        AggregateOutcome::Published
    );
    let report = w.open(&w.stored(&q).await.unwrap()).await;
    assert_eq!(report.cards[0].masked_number, "6222 **** **** 1234");
    assert!(report
        .summary
        .banks
        .iter()
        .all(|b| b.status == BankStatus::Responded));
}

#[tokio::test]
async fn the_sweeper_deletes_expired_reports_and_keeps_the_record() {
    let w = world();
    let u1 = user("u1");
    let (q, expires) = w.reported_expiring("u1").await;

    w.clock.set(expires - TimeDelta::seconds(1));
    assert_eq!(w.sweeper.run_once().await.unwrap(), SweepStats::default());
    assert!(w.stored(&q).await.is_some());

    w.clock.set(expires + TimeDelta::minutes(2));
    let stats = w.sweeper.run_once().await.unwrap();
    assert_eq!(
        stats,
        SweepStats {
            expired: 1,
            ..SweepStats::default()
        }
    );
    assert!(w.stored(&q).await.is_none(), "the report is gone");
    let rec = w.query(&q).await;
    assert_eq!(rec.phase, QueryPhase::Expired);
    assert_eq!(rec.report_expires_at, Some(expires));
    let list = w.view.list(&u1).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0].status, list[0].report_status),
        ("READY", "EXPIRED")
    );
    assert_eq!(
        w.view
            .detail(&u1, &q.to_string())
            .await
            .unwrap()
            .record
            .report_status,
        "EXPIRED"
    );

    // Again: nothing; a redelivered "ready" record brings nothing back.
    assert_eq!(w.sweeper.run_once().await.unwrap(), SweepStats::default());
    assert_eq!(
        w.aggregator.aggregate(&q).await.unwrap(),
        AggregateOutcome::AlreadyReported
    );
    assert!(w.stored(&q).await.is_none());
    assert_eq!(w.sms.sent().len(), 1);
}

#[tokio::test]
async fn the_sweeper_sends_a_notice_that_failed() {
    let w = world();
    w.sms.fail(1);
    let q = w.submit("u1", &["ICBC"]).await;
    w.answer(&q, "ICBC", vec![]).await;
    assert!(w.aggregator.aggregate(&q).await.is_err());
    assert!(w.query(&q).await.notified_at.is_none());

    // Within the lease of the failed attempt: the entry is due but nothing is sent.
    w.clock.advance(TimeDelta::minutes(1));
    let stats = w.sweeper.run_once().await.unwrap();
    assert_eq!(stats, SweepStats::default());
    assert!(w.sms.sent().is_empty());

    w.clock.advance(TimeDelta::minutes(2));
    let stats = w.sweeper.run_once().await.unwrap();
    assert_eq!(
        stats,
        SweepStats {
            notified: 1,
            ..SweepStats::default()
        }
    );
    let sent = w.sms.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (sent[0].0.e164(), sent[0].1.as_str()),
        (PHONE, REPORT_READY_SMS)
    );
    assert_eq!(w.query(&q).await.notified_at, Some(w.now()));

    w.clock.advance(TimeDelta::minutes(5));
    assert_eq!(w.sweeper.run_once().await.unwrap(), SweepStats::default());
    assert_eq!(w.sms.sent().len(), 1);
}

#[tokio::test]
async fn one_sweep_does_all_kinds_of_work_and_a_second_does_nothing() {
    let w = world_with(&[(
        "BOC",
        vec![
            Script::Status(503),
            Script::Cards(&[("CREDIT", "43671111")]),
        ],
    )]);
    // A report that expires first.
    let old = w.reported("u2").await;
    // A query whose notice failed.
    w.clock.advance(TimeDelta::days(6) + TimeDelta::hours(23));
    w.sms.fail(1);
    let failed_notice = w.submit("u1", &["ICBC"]).await;
    w.answer(&failed_notice, "ICBC", vec![]).await;
    assert!(w.aggregator.aggregate(&failed_notice).await.is_err());
    assert!(w.stored(&failed_notice).await.is_some());
    assert!(w.query(&failed_notice).await.notified_at.is_none());
    // A query whose deadline passes with a bank silent (not u1's: u1 holds a report).
    w.profile("u3", "+8613700137000");
    let late = w.submit("u3", &["ICBC", "CMB"]).await;
    w.answer(&late, "ICBC", vec![]).await;
    w.accept(&late, "CMB").await;
    // A leg to be retried.
    w.profile("u4", "+8613600136000");
    let w_clock_now = w.now();
    let retried = w.submit("u4", &["BOC"]).await;
    w.fanout.dispatch(&retried).await.unwrap();
    let retry_at = w.leg(&retried, "BOC").await.next_attempt_at.unwrap();
    assert!(retry_at < w_clock_now + TimeDelta::minutes(1));

    // 24 hours later everything is due.
    w.clock
        .set(w_clock_now + TimeDelta::hours(24) - TimeDelta::seconds(30));
    // Deadline of `late` not yet: only expiry, retry and notice.
    let stats = w.sweeper.run_once().await.unwrap();
    assert_eq!(
        stats,
        SweepStats {
            retries: 1,
            expired: 1,
            notified: 1,
            ..SweepStats::default()
        }
    );
    // Its last answer makes `retried` ready: the stream runs the aggregator.
    assert_eq!(
        w.aggregator.aggregate(&retried).await.unwrap(),
        AggregateOutcome::Published
    );
    w.clock.set(w_clock_now + TimeDelta::hours(24));
    let stats = w.sweeper.run_once().await.unwrap();
    assert_eq!(
        stats,
        SweepStats {
            deadlines: 1,
            ..SweepStats::default()
        }
    );

    assert!(w.stored(&old).await.is_none());
    assert_eq!(w.query(&old).await.phase, QueryPhase::Expired);
    assert!(w.query(&failed_notice).await.notified_at.is_some());
    assert_eq!(w.leg(&retried, "BOC").await.state, LegState::Answered);
    assert_eq!(w.query(&late).await.phase, QueryPhase::Reported);
    assert_eq!(w.leg(&late, "CMB").await.state, LegState::NoResponse);
    // u2's, u1's (by the sweep), u4's, u3's: each once.
    let phones: Vec<String> = w
        .sms
        .sent()
        .iter()
        .map(|(p, _)| p.e164().to_owned())
        .collect();
    assert_eq!(
        phones,
        ["+8613900139000", PHONE, "+8613600136000", "+8613700137000"]
    );

    let calls = w.banks.total_calls();
    assert_eq!(w.sweeper.run_once().await.unwrap(), SweepStats::default());
    assert_eq!(w.sms.sent().len(), 4);
    assert_eq!(w.banks.total_calls(), calls);
}

// ---------------------------------------------------------------------------------------
// Integrity of the sealed report against someone able to write the table
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_report_whose_stored_life_owner_or_key_was_rewritten_is_never_shown() {
    type Edit = fn(&mut StoredReport, &mut QueryRecord);
    let cases: [(&str, &str, Edit); 7] = [
        ("untouched", "u1", |_, _| {}),
        ("a longer life", "u1", |r, q| {
            r.expires_at += TimeDelta::days(30);
            q.report_expires_at = Some(r.expires_at);
        }),
        ("an earlier generation", "u1", |r, q| {
            r.generated_at -= TimeDelta::days(1);
            q.report_generated_at = Some(r.generated_at);
        }),
        ("another user", "u2", |r, q| {
            r.user_id = user("u2");
            q.user_id = user("u2");
        }),
        ("another key id", "u1", |r, _| r.sealed.key_id = "k0".into()),
        ("a later deadline", "u1", |_, q| {
            q.report_due_by += TimeDelta::days(1);
        }),
        ("the record's expiry only", "u1", |_, q| {
            q.report_expires_at = q.report_expires_at.map(|e| e + TimeDelta::days(1));
        }),
    ];
    for (why, viewer, edit) in cases {
        let w = world();
        let q = w.reported("u1").await;
        w.store.tamper_report(&q, edit);
        let viewer = user(viewer);
        let shown = w
            .view_report(
                &viewer,
                &q,
                &face_step(&w.face_token(viewer.as_str(), "n-1")),
            )
            .await;
        if why == "untouched" {
            assert_eq!(shown.unwrap()["summary"]["total_cards"], 3);
            continue;
        }
        let Err(e) = shown else {
            panic!("{why}: shown");
        };
        assert!(matches!(e, ServiceError::Internal(_)), "{why}: {e:?}");
        assert!(
            w.query(&q).await.last_viewed_at.is_none(),
            "{why}: no view recorded"
        );
    }
}

#[tokio::test]
async fn a_report_moved_into_another_query_does_not_open() {
    let w = world();
    let q1 = w.reported("u1").await;
    w.clock.advance(TimeDelta::days(8));
    let q2 = w.reported("u1").await;
    let moved = w.stored(&q1).await.unwrap();
    w.store.tamper_report(&q2, |r, q| {
        r.sealed = moved.sealed.clone();
        r.generated_at = moved.generated_at;
        r.expires_at = moved.expires_at;
        q.report_generated_at = Some(moved.generated_at);
        q.report_expires_at = Some(moved.expires_at);
    });
    // q1's times are past by now: put q2's clock back inside q1's life to be sure the
    // refusal is the binding, not the expiry.
    w.clock.set(moved.generated_at + TimeDelta::minutes(1));
    let e = w
        .view_report(&user("u1"), &q2, &face_step(&w.face_token("u1", "n-2")))
        .await
        .unwrap_err();
    assert!(matches!(e, ServiceError::Internal(_)), "{e:?}");
}

mod deletion;
mod view_log;
