//! Fan-out and callbacks on the in-memory store, with a scripted bank client that signs
//! its replies as a bank would.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use super::callback::CallbackService;
use super::client::{BankClient, BankReply, TransportError};
use super::fanout::{Fanout, FanoutDeps, LegOutcome};
use super::secrets::BankSecrets;
use crate::adapters::memory::MemoryStore;
use crate::bank::signing::{self, SignatureHeaders};
use crate::clock::{Clock, ManualClock};
use crate::config::{ServiceConfig, DEFAULT_CONFIG};
use crate::error::ServiceError;
use crate::model::bank::BankCode;
use crate::model::ids::{QueryId, UserId, VerificationId};
use crate::model::phone::PhoneNumber;
use crate::model::profile::{IdNumber, UserProfile};
use crate::model::region::RegionCode;
use crate::ports::{QueryStore, SubmissionStore};
use crate::records::*;
use crate::security::sms_code::Purpose;

const T0: OffsetDateTime = datetime!(2026-11-28 10:00 UTC);

#[derive(Clone)]
enum Script {
    Cards(&'static [(&'static str, &'static str)]),
    Accept,
    Status(u16),
    Timeout,
    BadSignature,
    Malformed,
    Leak,
}

/// Plays the banks: each call pops the bank's next scripted reply (the last one repeats).
struct ScriptedBanks {
    secrets: HashMap<String, signing::BankSecret>,
    scripts: Mutex<HashMap<String, Vec<Script>>>,
    calls: Mutex<Vec<(String, serde_json::Value)>>,
    clock: Arc<ManualClock>,
}

impl ScriptedBanks {
    fn calls_to(&self, bank: &str) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(b, _)| b == bank)
            .count()
    }
    fn total_calls(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
}

#[async_trait]
impl BankClient for ScriptedBanks {
    async fn post(
        &self,
        url: &str,
        headers: &SignatureHeaders,
        body: Vec<u8>,
        _timeout: StdDuration,
    ) -> Result<BankReply, TransportError> {
        let bank = headers.bank_code.clone();
        let path = reqwest::Url::parse(url).unwrap().path().to_owned();
        let secret = &self.secrets[&bank];
        let now = self.clock.now();
        signing::verify(secret, headers, now, "POST", &path, &body)
            .expect("we sign inquiries correctly");
        let inquiry: serde_json::Value = serde_json::from_slice(&body).unwrap();
        self.calls
            .lock()
            .unwrap()
            .push((bank.clone(), inquiry.clone()));
        let script = {
            let mut scripts = self.scripts.lock().unwrap();
            let list = scripts.get_mut(&bank).expect("a script for every bank");
            if list.len() > 1 {
                list.remove(0)
            } else {
                list[0].clone()
            }
        };
        let answer = |status: &str, cards: &[(&str, &str)]| {
            serde_json::json!({
                "query_id": inquiry["query_id"], "inquiry_id": inquiry["inquiry_id"], "status": status,
                "cards": cards.iter().map(|(kind, digits)| serde_json::json!({"kind": kind, "first4": &digits[..4], "last4": &digits[4..]})).collect::<Vec<_>>(),
            })
            .to_string()
            .into_bytes()
        };
        let signed = |body: Vec<u8>, key: &signing::BankSecret| BankReply {
            status: 200,
            signature: Some(signing::sign(key, &bank, now, "POST", &path, &body)),
            body,
        };
        match script {
            Script::Cards([]) => Ok(signed(answer("NONE", &[]), secret)),
            Script::Cards(cards) => Ok(signed(answer("FOUND", cards), secret)),
            Script::Accept => Ok(BankReply {
                status: 202,
                signature: None,
                body: b"{}".to_vec(),
            }),
            Script::Status(s) => Ok(BankReply {
                status: s,
                signature: None,
                body: Vec::new(),
            }),
            Script::Timeout => Err(TransportError::Timeout),
            Script::BadSignature => Ok(signed(
                answer("NONE", &[]),
                &signing::BankSecret::new(vec![0xEE; 32]).unwrap(),
            )),
            Script::Malformed => Ok(signed(b"{not json".to_vec(), secret)),
            Script::Leak => {
                let mut v: serde_json::Value =
                    serde_json::from_slice(&answer("FOUND", &[("DEBIT", "62221234")])).unwrap();
                v["cards"][0]["pan"] = "6222021234567891".into();
                Ok(signed(v.to_string().into_bytes(), secret))
            }
        }
    }
}

struct World {
    store: Arc<MemoryStore>,
    banks: Arc<ScriptedBanks>,
    clock: Arc<ManualClock>,
    fanout: Fanout,
    callbacks: CallbackService,
    config: Arc<ServiceConfig>,
    secrets_json: HashMap<String, String>,
}

fn world(scripts: &[(&str, Vec<Script>)]) -> World {
    let config = Arc::new(ServiceConfig::parse(DEFAULT_CONFIG).unwrap());
    let clock = Arc::new(ManualClock::new(T0));
    let secrets_json: HashMap<String, String> = config
        .banks
        .all()
        .iter()
        .enumerate()
        .map(|(i, b)| (b.code.to_string(), hex::encode([i as u8 + 1; 32])))
        .collect();
    let secrets = BankSecrets::parse(
        &serde_json::to_string(&secrets_json).unwrap(),
        &config.banks,
    )
    .unwrap();
    let banks = Arc::new(ScriptedBanks {
        secrets: secrets_json
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    signing::BankSecret::new(hex::decode(v).unwrap()).unwrap(),
                )
            })
            .collect(),
        scripts: Mutex::new(
            scripts
                .iter()
                .map(|(b, s)| (b.to_string(), s.clone()))
                .collect(),
        ),
        calls: Mutex::new(Vec::new()),
        clock: clock.clone(),
    });
    let store = Arc::new(MemoryStore::default());
    let fanout = Fanout::new(FanoutDeps {
        config: config.clone(),
        store: store.clone(),
        profiles: store.clone(),
        client: banks.clone(),
        secrets: secrets.clone(),
        clock: clock.clone(),
        callback_base: "https://api.example".into(),
        bank_timeout: StdDuration::from_secs(5),
    });
    let callbacks = CallbackService {
        config: config.clone(),
        store: store.clone(),
        secrets,
        clock: clock.clone(),
    };
    World {
        store,
        banks,
        clock,
        fanout,
        callbacks,
        config,
        secrets_json,
    }
}

impl World {
    fn code(&self, c: &str) -> BankCode {
        self.config.banks.parse(c).unwrap()
    }

    /// A submitted query for the given banks.
    async fn query(&self, banks: &[&str]) -> QueryId {
        let user = UserId::parse("u1").unwrap();
        self.store.insert_profile(UserProfile {
            user_id: user.clone(),
            real_name_verified: true,
            name: "张三".into(),
            id_number: IdNumber::parse("11010519491231002X").unwrap(),
            phone: PhoneNumber::parse("+8613800138000").unwrap(),
            region: RegionCode::parse("31").unwrap(),
            payment_password_hash: String::new(),
        });
        let vid = VerificationId::generate();
        self.store
            .put_verification(&VerificationRecord {
                verification_id: vid,
                user_id: user.clone(),
                purpose: Purpose::SubmitQuery,
                code_hash: String::new(),
                expires_at: T0 + Duration::minutes(5),
                attempts: 0,
                used: false,
            })
            .await
            .unwrap();
        let q = QueryId::generate();
        let legs = banks
            .iter()
            .map(|b| LegRecord {
                query_id: q,
                bank: self.code(b),
                inquiry_id: format!("inq-{b}-0000000000"),
                state: LegState::Pending,
                attempts: 0,
                next_attempt_at: None,
                failure: None,
                cards: vec![],
                answer_digest: None,
                settled_at: None,
            })
            .collect();
        let now = self.clock.now();
        self.store
            .submit(&Submission {
                query: QueryRecord {
                    query_id: q,
                    user_id: user.clone(),
                    phase: QueryPhase::Collecting,
                    submitted_at: now,
                    report_due_by: now + Duration::hours(24),
                    banks: banks.iter().map(|b| self.code(b)).collect(),
                    report_generated_at: None,
                    report_expires_at: None,
                    last_viewed_at: None,
                    notified_at: None,
                },
                legs,
                consent: ConsentRecord {
                    query_id: q,
                    user_id: user.clone(),
                    agreement_version: "v".into(),
                    accepted_at: now,
                    source_ip: None,
                },
                idempotency: IdempotencyRecord {
                    user_id: user.clone(),
                    key: format!("k-{q}"),
                    request_fingerprint: String::new(),
                    status: 202,
                    response_body: "{}".into(),
                    expires_at: now + Duration::days(1),
                },
                state: UserState::default(),
                expected_state_version: self.store.state_of(&user).version,
                verification_id: vid,
                max_code_attempts: 5,
                face_nonce: format!("n-{q}"),
                face_nonce_expires_at: now,
            })
            .await
            .unwrap();
        q
    }

    async fn leg(&self, q: &QueryId, bank: &str) -> LegRecord {
        self.store.leg(q, &self.code(bank)).await.unwrap().unwrap()
    }

    /// A callback as the bank would send it: (path, headers, body).
    fn callback(
        &self,
        bank: &str,
        q: &QueryId,
        inquiry: &str,
        status: &str,
        cards: &[(&str, &str)],
    ) -> (String, SignatureHeaders, Vec<u8>) {
        let body = serde_json::json!({
            "query_id": q.to_string(), "inquiry_id": inquiry, "status": status,
            "cards": cards.iter().map(|(k, d)| serde_json::json!({"kind": k, "first4": &d[..4], "last4": &d[4..]})).collect::<Vec<_>>(),
        })
        .to_string()
        .into_bytes();
        self.signed(bank, body)
    }

    fn signed(&self, bank: &str, body: Vec<u8>) -> (String, SignatureHeaders, Vec<u8>) {
        let path = format!("/v1/bank-callbacks/{bank}");
        let secret =
            signing::BankSecret::new(hex::decode(&self.secrets_json[bank]).unwrap()).unwrap();
        let h = signing::sign(&secret, bank, self.clock.now(), "POST", &path, &body);
        (path, h, body)
    }

    async fn receive(
        &self,
        bank: &str,
        msg: &(String, SignatureHeaders, Vec<u8>),
    ) -> Result<(), ServiceError> {
        self.callbacks
            .receive(bank, &msg.0, Some(msg.1.clone()), &msg.2)
            .await
    }
}

#[tokio::test]
async fn answers_at_once_settle_every_leg() {
    let w = world(&[
        (
            "ICBC",
            vec![Script::Cards(&[
                ("DEBIT", "62221234"),
                ("CREDIT", "62583456"),
            ])],
        ),
        ("CMB", vec![Script::Cards(&[])]),
    ]);
    let q = w.query(&["ICBC", "CMB"]).await;
    let out = w.fanout.dispatch(&q).await.unwrap();
    assert!(
        out.iter().all(|(_, o)| *o == LegOutcome::Answered),
        "{out:?}"
    );
    let icbc = w.leg(&q, "ICBC").await;
    assert_eq!(icbc.state, LegState::Answered);
    assert_eq!(icbc.cards.len(), 2);
    assert_eq!(icbc.cards[0].masked_number(), "6222 **** **** 1234");
    assert_eq!(w.leg(&q, "CMB").await.state, LegState::Answered);
    assert_eq!(w.store.unsettled(&q), Some(0));
    // The inquiry carried the subject, our callback URL and the deadline.
    let calls = w.banks.calls.lock().unwrap().clone();
    let (_, inquiry) = calls.iter().find(|(b, _)| b == "ICBC").unwrap();
    assert_eq!(inquiry["subject"]["id_number"], "11010519491231002X");
    assert_eq!(
        inquiry["callback_url"],
        "https://api.example/v1/bank-callbacks/ICBC"
    );
    assert_eq!(inquiry["inquiry_id"], icbc.inquiry_id);
}

#[tokio::test]
async fn a_redelivered_record_sends_nothing_twice() {
    let w = world(&[
        ("ICBC", vec![Script::Cards(&[])]),
        ("CMB", vec![Script::Accept]),
    ]);
    let q = w.query(&["ICBC", "CMB"]).await;
    w.fanout.dispatch(&q).await.unwrap();
    assert_eq!(w.banks.total_calls(), 2);
    assert!(w.fanout.dispatch(&q).await.unwrap().is_empty());
    assert_eq!(w.banks.total_calls(), 2);
    assert_eq!(w.leg(&q, "CMB").await.state, LegState::Accepted);
}

#[tokio::test]
async fn an_accepted_inquiry_is_settled_by_its_callback() {
    let w = world(&[("CCB", vec![Script::Accept])]);
    let q = w.query(&["CCB"]).await;
    assert_eq!(
        w.fanout.dispatch(&q).await.unwrap()[0].1,
        LegOutcome::Accepted
    );
    assert_eq!(w.store.unsettled(&q), Some(1));
    let leg = w.leg(&q, "CCB").await;
    let msg = w.callback(
        "CCB",
        &q,
        &leg.inquiry_id,
        "FOUND",
        &[("CREDIT", "43671111")],
    );
    w.receive("CCB", &msg).await.unwrap();
    let leg = w.leg(&q, "CCB").await;
    assert_eq!(leg.state, LegState::Answered);
    assert_eq!(leg.cards[0].masked_number(), "4367 **** **** 1111");
    assert_eq!(w.store.unsettled(&q), Some(0));
    // The bank retries the very same request: success, nothing changes.
    w.receive("CCB", &msg).await.unwrap();
    assert_eq!(w.store.unsettled(&q), Some(0));
}

#[tokio::test]
async fn a_bank_failing_twice_is_retried_with_backoff_then_answers() {
    let w = world(&[(
        "BOC",
        vec![
            Script::Status(503),
            Script::Timeout,
            Script::Cards(&[("DEBIT", "62161234")]),
        ],
    )]);
    let q = w.query(&["BOC"]).await;
    let LegOutcome::RetryAt(at1) = w.fanout.dispatch(&q).await.unwrap()[0].1.clone() else {
        panic!("retry")
    };
    assert!(at1 > T0 && at1 <= T0 + Duration::seconds(2));
    // Not due yet: nothing is sent.
    assert!(w.fanout.dispatch(&q).await.unwrap().is_empty());
    w.clock.set(at1);
    let LegOutcome::RetryAt(at2) = w.fanout.dispatch(&q).await.unwrap()[0].1.clone() else {
        panic!("retry")
    };
    assert!(at2 > at1 && at2 <= at1 + Duration::seconds(4));
    w.clock.set(at2);
    assert_eq!(
        w.fanout.dispatch(&q).await.unwrap()[0].1,
        LegOutcome::Answered
    );
    let leg = w.leg(&q, "BOC").await;
    assert_eq!((leg.state, leg.attempts), (LegState::Answered, 3));
    assert_eq!(w.banks.calls_to("BOC"), 3);
}

#[tokio::test]
async fn no_retry_is_scheduled_past_the_deadline() {
    let w = world(&[("ABC", vec![Script::Timeout])]);
    let q = w.query(&["ABC"]).await;
    w.clock
        .set(T0 + Duration::hours(24) - Duration::milliseconds(500));
    assert_eq!(
        w.fanout.dispatch(&q).await.unwrap()[0].1,
        LegOutcome::GaveUp
    );
    assert_eq!(w.leg(&q, "ABC").await.state, LegState::Pending);
    w.clock.set(T0 + Duration::hours(24));
    assert!(
        w.fanout.dispatch(&q).await.unwrap().is_empty(),
        "nothing is sent after the deadline"
    );
}

#[tokio::test]
async fn answers_we_must_refuse_fail_the_leg_and_store_no_cards() {
    let w = world(&[
        ("ICBC", vec![Script::BadSignature]),
        ("CMB", vec![Script::Malformed]),
        ("CCB", vec![Script::Leak]),
        ("BOC", vec![Script::Status(400)]),
    ]);
    let q = w.query(&["ICBC", "CMB", "CCB", "BOC"]).await;
    w.fanout.dispatch(&q).await.unwrap();
    for (bank, why) in [
        ("ICBC", "BAD_SIGNATURE"),
        ("CMB", "MALFORMED_ANSWER"),
        ("CCB", "CARD_NUMBER_IN_ANSWER"),
        ("BOC", "INQUIRY_REFUSED"),
    ] {
        let leg = w.leg(&q, bank).await;
        assert_eq!(leg.state, LegState::Failed, "{bank}");
        assert_eq!(leg.failure.as_deref(), Some(why), "{bank}");
        assert!(
            leg.cards.is_empty() && leg.answer_digest.is_none(),
            "{bank}"
        );
    }
    assert_eq!(w.store.unsettled(&q), Some(0));
}

#[tokio::test]
async fn refused_callbacks_change_nothing() {
    let w = world(&[
        ("ICBC", vec![Script::Accept]),
        ("CMB", vec![Script::Accept]),
    ]);
    let q = w.query(&["ICBC", "CMB"]).await;
    w.fanout.dispatch(&q).await.unwrap();
    let icbc = w.leg(&q, "ICBC").await;
    let cmb = w.leg(&q, "CMB").await;
    let good = w.callback("ICBC", &q, &icbc.inquiry_id, "NONE", &[]);

    // Bad signature: another bank's key.
    let (path, mut h, body) = good.clone();
    h.signature = w.signed("CMB", body.clone()).1.signature;
    assert!(matches!(
        w.callbacks.receive("ICBC", &path, Some(h), &body).await,
        Err(ServiceError::Unauthenticated)
    ));
    // Missing headers; header bank not the path's bank; unknown bank.
    assert!(matches!(
        w.callbacks.receive("ICBC", &path, None, &body).await,
        Err(ServiceError::Unauthenticated)
    ));
    let as_cmb = w.signed("CMB", body.clone());
    assert!(matches!(
        w.callbacks
            .receive("ICBC", &path, Some(as_cmb.1), &body)
            .await,
        Err(ServiceError::Unauthenticated)
    ));
    assert!(matches!(
        w.callbacks
            .receive(
                "NOPE",
                "/v1/bank-callbacks/NOPE",
                Some(good.1.clone()),
                &body
            )
            .await,
        Err(ServiceError::Unauthenticated)
    ));
    // Stale timestamp.
    w.clock.advance(Duration::seconds(301));
    assert!(matches!(
        w.receive("ICBC", &good).await,
        Err(ServiceError::Unauthenticated)
    ));
    w.clock.set(T0);
    // Another bank's leg: CMB's inquiry id answered by ICBC.
    let wrong_leg = w.callback("ICBC", &q, &cmb.inquiry_id, "NONE", &[]);
    assert!(matches!(
        w.receive("ICBC", &wrong_leg).await,
        Err(ServiceError::NotFound)
    ));
    // Unknown query.
    let unknown = w.callback("ICBC", &QueryId::generate(), &icbc.inquiry_id, "NONE", &[]);
    assert!(matches!(
        w.receive("ICBC", &unknown).await,
        Err(ServiceError::NotFound)
    ));
    // A full card number anywhere.
    let mut v: serde_json::Value = serde_json::from_slice(&good.2).unwrap();
    v["note"] = "6222 0212 3456 7891".into();
    let leak = w.signed("ICBC", v.to_string().into_bytes());
    assert!(matches!(
        w.receive("ICBC", &leak).await,
        Err(ServiceError::CardNumberRejected)
    ));
    // Malformed.
    let junk = w.signed("ICBC", b"{\"query_id\": 1}".to_vec());
    assert!(matches!(
        w.receive("ICBC", &junk).await,
        Err(ServiceError::Malformed(_))
    ));

    assert_eq!(
        w.leg(&q, "ICBC").await,
        icbc,
        "nothing of a refused callback is stored"
    );
    assert_eq!(w.store.unsettled(&q), Some(2));

    // The good one goes through; a different second answer is refused; the same is fine.
    w.receive("ICBC", &good).await.unwrap();
    let other = w.callback(
        "ICBC",
        &q,
        &icbc.inquiry_id,
        "FOUND",
        &[("DEBIT", "62221234")],
    );
    assert!(matches!(
        w.receive("ICBC", &other).await,
        Err(ServiceError::AlreadyAnswered)
    ));
    w.receive("ICBC", &good).await.unwrap();
    assert!(w.leg(&q, "ICBC").await.cards.is_empty());
    assert_eq!(w.store.unsettled(&q), Some(1));

    // A replayed nonce on a message that would change something is refused.
    let cmb_answer = w.callback("CMB", &q, &cmb.inquiry_id, "NONE", &[]);
    let (path, mut h, body) = cmb_answer.clone();
    h.nonce = good.1.nonce.clone();
    let secret = signing::BankSecret::new(hex::decode(&w.secrets_json["CMB"]).unwrap()).unwrap();
    h.signature = signing::signature(&secret, &h.timestamp, &h.nonce, "POST", &path, &body);
    // Nonces are per bank: ICBC's nonce is new for CMB.
    w.callbacks
        .receive("CMB", &path, Some(h.clone()), &body)
        .await
        .unwrap();
    let again = w.callback(
        "CMB",
        &q,
        &cmb.inquiry_id,
        "FOUND",
        &[("DEBIT", "62221234")],
    );
    let (path2, mut h2, body2) = again;
    h2.nonce = h.nonce.clone();
    h2.signature = signing::signature(&secret, &h2.timestamp, &h2.nonce, "POST", &path2, &body2);
    assert!(matches!(
        w.callbacks.receive("CMB", &path2, Some(h2), &body2).await,
        Err(ServiceError::AlreadyAnswered)
    ));
}

#[tokio::test]
async fn a_replayed_nonce_on_an_unsettled_leg_is_refused() {
    let w = world(&[
        ("ICBC", vec![Script::Accept]),
        ("CMB", vec![Script::Accept]),
    ]);
    let q1 = w.query(&["ICBC"]).await;
    let q2 = w.query(&["ICBC"]).await;
    w.fanout.dispatch(&q1).await.unwrap();
    w.fanout.dispatch(&q2).await.unwrap();
    let l1 = w.leg(&q1, "ICBC").await;
    let l2 = w.leg(&q2, "ICBC").await;
    let first = w.callback("ICBC", &q1, &l1.inquiry_id, "NONE", &[]);
    w.receive("ICBC", &first).await.unwrap();
    let (path, mut h, body) = w.callback("ICBC", &q2, &l2.inquiry_id, "NONE", &[]);
    h.nonce = first.1.nonce.clone();
    let secret = signing::BankSecret::new(hex::decode(&w.secrets_json["ICBC"]).unwrap()).unwrap();
    h.signature = signing::signature(&secret, &h.timestamp, &h.nonce, "POST", &path, &body);
    assert!(matches!(
        w.callbacks.receive("ICBC", &path, Some(h), &body).await,
        Err(ServiceError::Unauthenticated)
    ));
    assert_eq!(w.leg(&q2, "ICBC").await, l2);
}
