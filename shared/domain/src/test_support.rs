//! What the dispatch and report tests share: banks played by a script (each reply signed
//! as a bank would sign it) and a world of the default configuration on the in-memory
//! store, with a fan-out to those banks, in which queries are submitted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use crate::bank::signing::{self, SignatureHeaders};
use crate::clock::{Clock, ManualClock};
use crate::config::{ServiceConfig, DEFAULT_CONFIG};
use crate::dispatch::client::{BankClient, BankReply, TransportError};
use crate::dispatch::dispute::{DisputeSender, DisputeSenderDeps};
use crate::dispatch::fanout::{Fanout, FanoutDeps};
use crate::dispatch::planner::Planner;
use crate::dispatch::secrets::BankSecrets;
use crate::dispatch::sender::{Sender, SenderDeps, Sleep};
use crate::memory::{MemoryGate, MemoryQueue, MemoryStore};
use crate::model::bank::BankCode;
use crate::model::card::AnsweredCard;
use crate::model::ids::{QueryId, UserId, VerificationId};
use crate::model::phone::PhoneNumber;
use crate::model::profile::{IdNumber, UserProfile};
use crate::model::purpose::Purpose;
use crate::model::region::RegionCode;
use crate::ports::{QueryStore, SubmissionStore};
use crate::records::*;
use crate::report::body::{open_answer, BankStatus, ReportedBank};
use crate::report::crypto::{generate_keypair, ReportOpener, ReportSealer};

/// An instant in UTC, as tests write it: `at(2026, 11, 28, 10, 0, 0)`.
pub const fn at(year: i32, month: u32, day: u32, hour: u32, min: u32, sec: u32) -> DateTime<Utc> {
    let date = NaiveDate::from_ymd_opt(year, month, day).expect("a valid date");
    let time = NaiveTime::from_hms_opt(hour, min, sec).expect("a valid time of day");
    NaiveDateTime::new(date, time).and_utc()
}

/// Where the manual clock starts.
pub const T0: DateTime<Utc> = at(2026, 11, 28, 10, 0, 0);
/// The registered phone of user "u1".
pub const PHONE: &str = "+8613800138000";

pub fn user(id: &str) -> UserId {
    UserId::parse(id).unwrap()
}

/// A bank's answer to an inquiry, as JSON bytes: `cards` are (kind, first four and last
/// four digits).
pub fn answer_body(
    query_id: impl Serialize,
    inquiry_id: impl Serialize,
    status: &str,
    cards: &[(&str, &str)],
) -> Vec<u8> {
    json!({
        "query_id": query_id, "inquiry_id": inquiry_id, "status": status,
        "cards": cards.iter().map(|(kind, digits)| json!({"kind": kind, "first4": &digits[..4], "last4": &digits[4..]})).collect::<Vec<_>>(),
    })
    .to_string()
    .into_bytes()
}

/// A FOUND answer whose cards carry the bank's `card_ref`: (kind, digits, ref).
pub fn answer_body_with_refs(
    query_id: impl Serialize,
    inquiry_id: impl Serialize,
    cards: &[(&str, &str, &str)],
) -> Vec<u8> {
    json!({
        "query_id": query_id, "inquiry_id": inquiry_id, "status": "FOUND",
        "cards": cards.iter().map(|(kind, digits, card_ref)| json!({"kind": kind, "first4": &digits[..4], "last4": &digits[4..], "card_ref": card_ref})).collect::<Vec<_>>(),
    })
    .to_string()
    .into_bytes()
}

/// What a scripted bank does with one inquiry.
#[derive(Clone)]
pub enum Script {
    /// Answers at once, signed: FOUND with these cards, or NONE without any.
    Cards(&'static [(&'static str, &'static str)]),
    /// Answers at once, signed: FOUND with these cards and their refs (kind, digits, ref).
    CardsWithRefs(&'static [(&'static str, &'static str, &'static str)]),
    /// 202: the answer is to come by callback.
    Accept,
    Status(u16),
    Timeout,
    /// Answers NONE, signed with a key that is not the bank's.
    BadSignature,
    /// Signed, but not JSON.
    Malformed,
    /// Answers FOUND with a full card number in the card.
    Leak,
    /// A dispute's answer, signed: ACKNOWLEDGED with this case id.
    DisputeAck(&'static str),
}

/// Plays the banks: each call pops the bank's next scripted reply (the last one repeats).
pub struct ScriptedBanks {
    secrets: HashMap<String, signing::BankSecret>,
    scripts: Mutex<HashMap<String, Vec<Script>>>,
    /// Every inquiry received: (bank, inquiry).
    pub calls: Mutex<Vec<(String, Value)>>,
    clock: Arc<ManualClock>,
}

impl ScriptedBanks {
    pub fn calls_to(&self, bank: &str) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(b, _)| b == bank)
            .count()
    }

    pub fn total_calls(&self) -> usize {
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
        let path = url::Url::parse(url).unwrap().path().to_owned();
        let secret = &self.secrets[&bank];
        let now = self.clock.now();
        signing::verify(secret, headers, now, "POST", &path, &body)
            .expect("we sign inquiries correctly");
        let inquiry: Value = serde_json::from_slice(&body).unwrap();
        self.calls
            .lock()
            .unwrap()
            .push((bank.clone(), inquiry.clone()));
        let script = {
            let mut scripts = self.scripts.lock().unwrap();
            let list = scripts
                .get_mut(&bank)
                .expect("a script for every bank called");
            if list.len() > 1 {
                list.remove(0)
            } else {
                list[0].clone()
            }
        };
        let answer = |status: &str, cards: &[(&str, &str)]| {
            answer_body(&inquiry["query_id"], &inquiry["inquiry_id"], status, cards)
        };
        let signed = |body: Vec<u8>, key: &signing::BankSecret| BankReply {
            status: 200,
            signature: Some(signing::sign(key, &bank, now, "POST", &path, &body)),
            body,
        };
        match script {
            Script::Cards([]) => Ok(signed(answer("NONE", &[]), secret)),
            Script::Cards(cards) => Ok(signed(answer("FOUND", cards), secret)),
            Script::CardsWithRefs(cards) => Ok(signed(
                answer_body_with_refs(&inquiry["query_id"], &inquiry["inquiry_id"], cards),
                secret,
            )),
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
            Script::DisputeAck(case_id) => Ok(signed(
                json!({"dispute_id": inquiry["dispute_id"], "case_id": case_id, "status": "ACKNOWLEDGED"})
                    .to_string()
                    .into_bytes(),
                secret,
            )),
            Script::Leak => {
                let mut v: Value =
                    serde_json::from_slice(&answer("FOUND", &[("DEBIT", "62221234")])).unwrap();
                v["cards"][0]["pan"] = "6222021234567891".into();
                Ok(signed(v.to_string().into_bytes(), secret))
            }
        }
    }
}

/// Waiting in place on the manual clock: lets the other tasks run first (the sends
/// already admitted reach their bank at the instant they were admitted), then moves
/// the clock on.
pub struct ClockSleep(pub Arc<ManualClock>);

#[async_trait]
impl Sleep for ClockSleep {
    async fn sleep(&self, d: TimeDelta) {
        tokio::task::yield_now().await;
        self.0.advance(d);
    }
}

/// The default configuration, a manual clock at [`T0`], the in-memory store, and every
/// configured bank played by [`ScriptedBanks`] behind a fan-out. The dispatch and report
/// tests' worlds are built on it (and dereference to it).
pub struct BankWorld {
    pub config: Arc<ServiceConfig>,
    pub clock: Arc<ManualClock>,
    pub store: Arc<MemoryStore>,
    pub banks: Arc<ScriptedBanks>,
    pub fanout: Arc<Fanout>,
    pub gate: Arc<MemoryGate>,
    pub queue: Arc<MemoryQueue>,
    /// Queues a query's due legs (bank-fanout's and the sweeper's part).
    pub planner: Arc<Planner>,
    /// Sends queued legs through the gate (the bank-inquiry function's part).
    pub sender: Arc<Sender>,
    /// The banks' secrets as the services load them.
    pub secrets: BankSecrets,
    /// The same secrets as hex, by bank code (to sign as the bank would).
    pub secrets_json: HashMap<String, String>,
    /// The report key pair (key id "k1"): answers are sealed to it as legs settle.
    pub report_private: String,
    pub sealer: Arc<ReportSealer>,
}

impl BankWorld {
    /// Each bank plays its script; a bank called without one panics.
    pub fn new(scripts: &[(&str, Vec<Script>)]) -> Self {
        let config = Arc::new(ServiceConfig::parse(DEFAULT_CONFIG).unwrap());
        let clock = Arc::new(ManualClock::new(T0));
        let store = Arc::new(MemoryStore::default());
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
                .map(|(k, v)| (k.clone(), Self::secret_of(v)))
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
        let (report_private, report_public) = generate_keypair();
        let sealer = Arc::new(ReportSealer::new("k1", &report_public).unwrap());
        let fanout = Arc::new(Fanout::new(FanoutDeps {
            config: config.clone(),
            store: store.clone(),
            profiles: store.clone(),
            client: banks.clone(),
            secrets: secrets.clone(),
            clock: clock.clone(),
            callback_base: "https://api.example".into(),
            bank_timeout: StdDuration::from_secs(5),
            sealer: sealer.clone(),
        }));
        let gate = Arc::new(MemoryGate::default());
        let queue = Arc::new(MemoryQueue::new(clock.clone()));
        let planner = Arc::new(Planner {
            store: store.clone(),
            queue: queue.clone(),
            clock: clock.clone(),
        });
        let sender = Arc::new(Sender::new(SenderDeps {
            config: config.clone(),
            fanout: fanout.clone(),
            gate: gate.clone(),
            queue: queue.clone(),
            clock: clock.clone(),
            sleep: Arc::new(ClockSleep(clock.clone())),
            bank_timeout: TimeDelta::seconds(5),
            disputes: Some(Arc::new(DisputeSender::new(DisputeSenderDeps {
                config: config.clone(),
                store: store.clone(),
                client: banks.clone(),
                secrets: secrets.clone(),
                clock: clock.clone(),
                bank_timeout: StdDuration::from_secs(5),
            }))),
        }));
        Self {
            config,
            clock,
            store,
            banks,
            fanout,
            gate,
            queue,
            planner,
            sender,
            secrets,
            secrets_json,
            report_private,
            sealer,
        }
    }

    fn secret_of(hex_key: &str) -> signing::BankSecret {
        signing::BankSecret::new(hex::decode(hex_key).unwrap()).unwrap()
    }

    /// The bank's own key, to sign as it would.
    pub fn bank_secret(&self, bank: &str) -> signing::BankSecret {
        Self::secret_of(&self.secrets_json[bank])
    }

    pub fn code(&self, c: &str) -> BankCode {
        self.config.banks.parse(c).unwrap()
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// A real-name verified profile in region 31.
    pub fn profile(&self, id: &str, phone: &str) {
        self.store.insert_profile(UserProfile {
            user_id: user(id),
            real_name_verified: true,
            name: "张三".into(),
            id_number: IdNumber::parse("11010519491231002X").unwrap(),
            phone: PhoneNumber::parse(phone).unwrap(),
            region: RegionCode::parse("31").unwrap(),
            payment_password_hash: String::new(),
        });
    }

    /// Stores query `q` of `user` to `banks` as the submission path does, now: its
    /// SUBMIT_QUERY code used up, the query collecting until the report deadline, a
    /// pending leg per bank (inquiry id `inquiry_id(bank)`), the consent, the
    /// idempotency record and the user's active-query lock.
    pub async fn submit_query(
        &self,
        user: &UserId,
        q: QueryId,
        banks: &[&str],
        inquiry_id: impl Fn(&str) -> String,
    ) {
        self.submit_record(user, q, banks).await;
        let legs = banks
            .iter()
            .map(|b| LegRecord {
                inquiry_id: inquiry_id(b),
                ..LegRecord::pending(q, self.code(b))
            })
            .collect();
        // As fan-out's `ensure_legs` would, with inquiry ids the scripts know.
        self.store.insert_legs(legs);
    }

    /// [`Self::submit_query`] exactly as the submission path leaves it: the query record
    /// and no leg yet (fan-out creates them).
    pub async fn submit_record(&self, user: &UserId, q: QueryId, banks: &[&str]) {
        let now = self.now();
        let vid = VerificationId::generate();
        self.store
            .put_verification(&VerificationRecord {
                verification_id: vid,
                user_id: user.clone(),
                purpose: Purpose::SubmitQuery,
                code_hash: String::new(),
                expires_at: now + TimeDelta::minutes(5),
                attempts: 0,
                used: false,
            })
            .await
            .unwrap();
        let claim = IdempotencyRecord {
            user_id: user.clone(),
            key: format!("k-{q}"),
            request_fingerprint: String::new(),
            status: 0,
            response_body: String::new(),
            expires_at: now + TimeDelta::days(1),
            in_progress: true,
            owner: Some(format!("owner-{q}")),
            lease_until: Some(now + TimeDelta::seconds(30)),
        };
        self.store.claim_idempotency(&claim, now).await.unwrap();
        let state = self.store.state_of(user);
        self.store
            .submit(&Submission {
                query: QueryRecord {
                    query_id: q,
                    user_id: user.clone(),
                    phase: QueryPhase::Collecting,
                    submitted_at: now,
                    report_due_by: now + self.config.rules.report_deadline,
                    collect_until: now + self.config.rules.report_deadline,
                    banks: banks.iter().map(|b| self.code(b)).collect(),
                    report_generated_at: None,
                    report_expires_at: None,
                    last_viewed_at: None,
                    report_deleted_at: None,
                    views: Vec::new(),
                    views_total: 0,
                    notified_at: None,
                },
                consent: ConsentRecord {
                    query_id: q,
                    user_id: user.clone(),
                    agreement_version: self.config.agreement_version.clone(),
                    accepted_at: now,
                    source_ip: None,
                },
                idempotency: IdempotencyRecord {
                    status: 202,
                    response_body: "{}".into(),
                    in_progress: false,
                    lease_until: None,
                    ..claim
                },
                state: UserState {
                    active_query_id: Some(q),
                    ..state.clone()
                },
                expected_state_version: state.version,
                verification_id: vid,
                max_code_attempts: 5,
                face_nonce: format!("n-{q}"),
                face_nonce_expires_at: now + TimeDelta::minutes(5),
            })
            .await
            .unwrap();
    }

    /// Plays the SQS event source mapping until nothing visible is left: batches of 10
    /// to the sender, the messages it did not report as failed deleted. Returns the
    /// number of batches.
    pub async fn pump(&self) -> usize {
        let mut batches = 0;
        loop {
            let batch = self.queue.receive(10);
            if batch.is_empty() {
                return batches;
            }
            batches += 1;
            let failed = self.sender.handle(batch.clone()).await;
            self.queue.complete(&batch, &failed);
        }
    }

    pub async fn leg(&self, q: &QueryId, bank: &str) -> LegRecord {
        self.store.leg(q, &self.code(bank)).await.unwrap().unwrap()
    }

    pub fn opener(&self) -> ReportOpener {
        ReportOpener::new("k1", &self.report_private).unwrap()
    }

    /// The cards a leg holds, opened as view-report would (none if it holds no answer).
    pub async fn leg_cards(&self, q: &QueryId, bank: &str) -> Vec<AnsweredCard> {
        let leg = self.leg(q, bank).await;
        let query = self.store.query(q).await.unwrap().unwrap();
        assert!(leg.cards.len() <= 1, "one envelope per answer");
        let Some(sealed) = leg.cards.first() else {
            return Vec::new();
        };
        let bank = ReportedBank {
            bank_code: leg.bank.clone(),
            status: BankStatus::Responded,
            inquiry_id: leg.inquiry_id.clone(),
            answer: None,
        };
        open_answer(&self.opener(), &query, &bank, sealed).unwrap()
    }
}
