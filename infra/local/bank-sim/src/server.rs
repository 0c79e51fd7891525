//! The HTTP side: `POST /banks/{code}/card-inquiries` for each bank, and the admin API
//! under `/_admin`. Logs name banks and query ids, never ID numbers, names or card
//! numbers.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use shared::bank::answer::{Answer, AnswerStatus, Inquiry};
use shared::bank::signing::{self, BankSecret, SignatureHeaders};
use shared::model::card::{AnsweredCard, MaskedCard};
use shared::model::ids::QueryId;
use tokio::task::JoinHandle;

use crate::behaviour::{Behaviour, BehaviourConfig, Behaviours, CallbackAnswer, Mode};
use crate::customers;
use crate::disputes::{self, DisputeRecord};
use crate::load::{BankFigures, Load};
use crate::traffic::{header_pairs, protocol_headers, Exchange, Traffic};

/// Callback deliveries: attempts in all, and the first pause (doubling after each).
pub const CALLBACK_ATTEMPTS: u32 = 5;
pub const CALLBACK_FIRST_BACKOFF: Duration = Duration::from_millis(250);
const CALLBACK_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Callbacks a bank has in flight at once, as a bank's outgoing connection pool would
/// allow. Unbounded, a burst of queries fired hundreds at once: each waited past its
/// 10 s timeout behind the others, was retried, and the abandoned attempts were still
/// served, until every attempt of many gave up (docs/decisions.md, entry 37).
pub const CALLBACK_CONCURRENCY_PER_BANK: usize = 4;

pub struct SimConfig {
    /// Bank codes, in configuration order.
    pub banks: Vec<String>,
    pub secrets: HashMap<String, BankSecret>,
    pub behaviour: BehaviourConfig,
}

/// One inquiry as received, for `GET /_admin/inquiries/{id_number}`.
#[derive(Debug, Clone, Serialize)]
pub struct InquiryRecord {
    pub bank_code: String,
    pub query_id: String,
    pub inquiry_id: String,
    pub status_returned: u16,
    /// RFC 3339, when the inquiry arrived.
    pub at: String,
    /// Callback mode only: how its delivery went.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback: Option<CallbackRecord>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CallbackRecord {
    /// `pending`, `delivered` (2xx), `refused` (4xx, final) or `gave_up`.
    pub outcome: &'static str,
    pub attempts: u32,
    /// The last HTTP status received, if any.
    pub last_status: Option<u16>,
}

pub(crate) struct State_ {
    pub(crate) behaviours: Behaviours,
    /// (bank, nonce) → Unix seconds when seen.
    nonces: HashMap<(String, String), i64>,
    last_prune: i64,
    /// (id_number, bank) → inquiries seen in `fail_then_answer` mode.
    failures: HashMap<(String, String), u32>,
    log: HashMap<String, Vec<InquiryRecord>>,
    /// (bank, inquiry_id) → answers given, in `not_idempotent` mode.
    repeats: HashMap<(String, String), u32>,
    /// (bank, query_id, inquiry_id) → the person and the `card_ref`s answered, so that
    /// a dispute names a card this bank reported in that inquiry.
    pub(crate) issued: HashMap<(String, String, String), (String, Vec<String>)>,
    /// (bank, dispute_id) → the dispute as first received.
    pub(crate) disputes: HashMap<(String, String), DisputeRecord>,
    pub(crate) cases_opened: u64,
    pub(crate) traffic: Traffic,
}

pub struct Sim {
    banks: Vec<String>,
    /// Arrivals and completions of inquiries per bank (`GET /_admin/traffic`).
    load: Load,
    pub(crate) secrets: HashMap<String, BankSecret>,
    state: Mutex<State_>,
    client: reqwest::Client,
    callback_slots: HashMap<String, Arc<tokio::sync::Semaphore>>,
}

impl Sim {
    pub fn new(config: SimConfig) -> Result<Self, String> {
        for b in &config.banks {
            if !config.secrets.contains_key(b) {
                return Err(format!("no secret for bank {b}"));
            }
        }
        let client = reqwest::Client::builder()
            .timeout(CALLBACK_ATTEMPT_TIMEOUT)
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        let callback_slots = config
            .banks
            .iter()
            .map(|b| {
                (
                    b.clone(),
                    Arc::new(tokio::sync::Semaphore::new(CALLBACK_CONCURRENCY_PER_BANK)),
                )
            })
            .collect();
        Ok(Self {
            load: Load::default(),
            callback_slots,
            banks: config.banks,
            secrets: config.secrets,
            state: Mutex::new(State_ {
                behaviours: Behaviours::new(config.behaviour),
                nonces: HashMap::new(),
                last_prune: 0,
                failures: HashMap::new(),
                log: HashMap::new(),
                repeats: HashMap::new(),
                issued: HashMap::new(),
                disputes: HashMap::new(),
                cases_opened: 0,
                traffic: Traffic::default(),
            }),
            client,
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State_> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The bank codes served, in configuration order.
    pub fn banks(&self) -> &[String] {
        &self.banks
    }

    /// What each bank saw: inquiries, their most per second and most at once.
    pub fn load(&self) -> &Load {
        &self.load
    }

    /// The cards each bank would report for this person.
    pub fn truth(&self, id_number: &str) -> BTreeMap<String, Vec<MaskedCard>> {
        self.banks
            .iter()
            .map(|b| (b.clone(), customers::masked_cards(id_number, b)))
            .collect()
    }

    pub fn inquiries(&self, id_number: &str) -> Vec<InquiryRecord> {
        self.lock().log.get(id_number).cloned().unwrap_or_default()
    }

    /// What was exchanged with this person (behaviours with `record_traffic` only).
    pub fn traffic(&self, id_number: &str) -> Vec<Exchange> {
        self.lock().traffic.of(id_number)
    }

    /// The disputes received about this person's cards, in arrival order.
    pub fn disputes(&self, id_number: &str) -> Vec<DisputeRecord> {
        let mut v: Vec<DisputeRecord> = self
            .lock()
            .disputes
            .values()
            .filter(|d| d.id_number == id_number)
            .cloned()
            .collect();
        v.sort_by_key(|d| d.seq);
        v
    }

    pub(crate) fn record_exchange(&self, id_number: &str, e: Exchange) {
        self.lock().traffic.push(id_number, e);
    }

    pub(crate) fn behaviour_of(&self, id_number: &str, bank: &str) -> Behaviour {
        self.lock().behaviours.resolve(id_number, bank)
    }

    /// True when the nonce is fresh (and now used).
    pub(crate) fn use_nonce(&self, bank: &str, nonce: &str, now: i64) -> bool {
        let mut st = self.lock();
        if now - st.last_prune > 60 {
            let horizon = now - 2 * signing::MAX_SKEW_SECS - 60;
            st.nonces.retain(|_, seen| *seen >= horizon);
            st.last_prune = now;
        }
        st.nonces
            .insert((bank.to_owned(), nonce.to_owned()), now)
            .is_none()
    }

    fn record(&self, id_number: &str, rec: InquiryRecord) -> usize {
        let mut st = self.lock();
        let v = st.log.entry(id_number.to_owned()).or_default();
        v.push(rec);
        v.len() - 1
    }

    fn set_callback(&self, id_number: &str, idx: usize, cb: CallbackRecord) {
        if let Some(r) = self
            .lock()
            .log
            .get_mut(id_number)
            .and_then(|v| v.get_mut(idx))
        {
            r.callback = Some(cb);
        }
    }

    /// A key that is not the bank's: for `bad_signature`.
    fn wrong_key(bank: &str) -> BankSecret {
        let k = Sha256::digest(format!("bank-sim: not the key of {bank}").as_bytes());
        BankSecret::new(k.to_vec()).expect("32 bytes")
    }
}

pub(crate) fn now() -> DateTime<Utc> {
    Utc::now()
}

pub(crate) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn json_error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// A response as built, kept as parts so that it can be recorded before it is sent.
pub(crate) struct Reply {
    pub status: StatusCode,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn error(status: StatusCode, message: &str) -> Self {
        Self {
            status,
            headers: vec![("content-type", "application/json".into())],
            body: json!({ "error": message }).to_string().into_bytes(),
        }
    }

    /// Signed over (POST, `path`, body) with the four signature headers.
    pub fn signed(
        status: StatusCode,
        key: &BankSecret,
        bank: &str,
        path: &str,
        body: Vec<u8>,
    ) -> Self {
        let h = signing::sign(key, bank, now(), "POST", path, &body);
        let mut headers = vec![("content-type", "application/json".to_owned())];
        headers.extend(h.pairs().map(|(k, v)| (k, v.to_owned())));
        Self {
            status,
            headers,
            body,
        }
    }

    pub fn unsigned(status: StatusCode, body: Vec<u8>) -> Self {
        Self {
            status,
            headers: vec![("content-type", "application/json".into())],
            body,
        }
    }

    /// The exchange this reply ends, for the traffic log.
    pub fn exchange(
        &self,
        kind: &'static str,
        bank: &str,
        path: &str,
        request: &HeaderMap,
        body: &[u8],
        at: DateTime<Utc>,
    ) -> Exchange {
        Exchange {
            kind,
            bank_code: bank.to_owned(),
            method: "POST".into(),
            path: path.to_owned(),
            request_headers: protocol_headers(header_pairs(request)),
            request_body: String::from_utf8_lossy(body).into_owned(),
            status: Some(self.status.as_u16()),
            response_headers: protocol_headers(self.headers.iter().map(|(k, v)| (*k, v.as_str()))),
            response_body: String::from_utf8_lossy(&self.body).into_owned(),
            at: rfc3339(at),
        }
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut r = Response::builder().status(self.status);
        for (name, value) in &self.headers {
            r = r.header(*name, value);
        }
        r.body(Body::from(self.body)).expect("valid response")
    }
}

pub(crate) fn signature_headers(headers: &HeaderMap) -> Option<SignatureHeaders> {
    SignatureHeaders::read(|name| headers.get(name)?.to_str().ok().map(str::to_owned))
}

/// What an answer body holds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Content {
    Correct,
    Malformed,
    BadSignature,
    Leak,
    ErrorAnswer,
    /// Each card with a `first6` field.
    ExtraDigits,
}

impl From<CallbackAnswer> for Content {
    fn from(c: CallbackAnswer) -> Self {
        match c {
            CallbackAnswer::Correct => Content::Correct,
            CallbackAnswer::Malformed => Content::Malformed,
            CallbackAnswer::BadSignature => Content::BadSignature,
            CallbackAnswer::LeakCardNumber => Content::Leak,
            CallbackAnswer::ErrorAnswer => Content::ErrorAnswer,
            // Signed or not is up to the delivery, not the body.
            CallbackAnswer::Unsigned => Content::Correct,
        }
    }
}

/// How the answer departs from the truth, beyond its `Content`.
#[derive(Clone, Copy, Default)]
struct Tamper {
    /// Other ids than the inquiry's.
    wrong_ids: bool,
    /// A card fewer (or `ERROR`): a repeat answered differently.
    altered: bool,
}

/// The answer body for this inquiry, and the key to sign it with.
fn answer_body(
    sim: &Sim,
    bank: &str,
    inq: &Inquiry,
    content: Content,
    behaviour: &Behaviour,
    tamper: Tamper,
) -> (Vec<u8>, BankSecret) {
    let mut cards = if content == Content::ErrorAnswer {
        Vec::new()
    } else {
        customers::cards(&inq.subject.id_number, bank)
    };
    let mut error = content == Content::ErrorAnswer;
    if tamper.altered && cards.pop().is_none() {
        error = true;
    }
    let status = match (error, cards.is_empty()) {
        (true, _) => AnswerStatus::Error,
        (_, true) => AnswerStatus::None,
        (_, false) => AnswerStatus::Found,
    };
    let (query_id, inquiry_id) = if tamper.wrong_ids {
        (QueryId::generate(), QueryId::generate().to_string())
    } else {
        (inq.query_id, inq.inquiry_id.clone())
    };
    let answer = Answer {
        query_id,
        inquiry_id,
        status,
        cards: cards
            .iter()
            .map(|c| AnsweredCard::from(c.masked()))
            .collect(),
    };
    let key = if content == Content::BadSignature {
        Sim::wrong_key(bank)
    } else {
        sim.secrets[bank].clone()
    };
    // Refs and leaks are added to the JSON form: a misbehaving mode must be able to send
    // what `CardRef` would not hold.
    let mut value = serde_json::to_value(&answer).expect("serialisable");
    let with_refs = behaviour.with_card_refs() && !cards.is_empty();
    if with_refs {
        let refs: Vec<String> = cards
            .iter()
            .map(|c| match behaviour.mode {
                Mode::CardRefWithDigits => customers::card_ref_with_digits(c),
                _ => customers::card_ref(bank, c),
            })
            .collect();
        for (card, r) in value["cards"]
            .as_array_mut()
            .expect("cards is an array")
            .iter_mut()
            .zip(&refs)
        {
            card["card_ref"] = r.as_str().into();
        }
        sim.lock().issued.insert(
            (
                bank.to_owned(),
                inq.query_id.to_string(),
                inq.inquiry_id.clone(),
            ),
            (inq.subject.id_number.clone(), refs),
        );
    }
    if content == Content::ExtraDigits {
        for (card, c) in value["cards"]
            .as_array_mut()
            .expect("cards is an array")
            .iter_mut()
            .zip(&cards)
        {
            card["first6"] = c.full_number()[..6].into();
        }
    }
    if content == Content::Leak {
        value["card_number"] = customers::leakable_number(&inq.subject.id_number, bank).into();
    }
    let body = match content {
        Content::Malformed => format!(
            r#"{{"query_id":"{}","inquiry_id":{:?},"status":"{:?}","cards":[{{"kind":"#,
            answer.query_id, answer.inquiry_id, answer.status
        )
        .into_bytes(),
        Content::Leak | Content::ExtraDigits => serde_json::to_vec(&value).expect("serialisable"),
        _ if with_refs => serde_json::to_vec(&value).expect("serialisable"),
        // The struct's own field order, as before card refs existed.
        _ => serde_json::to_vec(&answer).expect("serialisable"),
    };
    (body, key)
}

/// Best-effort ids of a body that failed verification or parsing, to log the attempt.
fn loose_ids(body: &[u8]) -> Option<(String, String, String)> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let s = |x: &serde_json::Value| x.as_str().unwrap_or_default().to_owned();
    let id = v.get("subject")?.get("id_number")?.as_str()?.to_owned();
    Some((id, s(&v["query_id"]), s(&v["inquiry_id"])))
}

/// Checks the signature of a request to the bank as `behaviour` has it: strictly,
/// unless a misbehaving mode relaxes one of the checks.
pub(crate) fn check_signature(
    sim: &Sim,
    bank: &str,
    headers: &HeaderMap,
    arrived: DateTime<Utc>,
    path: &str,
    body: &[u8],
    behaviour: &Behaviour,
) -> Result<(), String> {
    let (check_signature, check_nonce, check_window) = behaviour.checks();
    if !check_signature {
        return Ok(());
    }
    let Some(secret) = sim.secrets.get(bank) else {
        return Err("unknown bank".into());
    };
    let Some(sig) = signature_headers(headers) else {
        return Err("signature headers missing".into());
    };
    if sig.bank_code != bank {
        return Err("X-Bank-Code does not match the bank".into());
    }
    // A bank that ignores the window checks the signature as if it were sent now.
    let at = if check_window {
        arrived
    } else {
        signing::parse_timestamp(&sig.timestamp)
            .ok()
            .and_then(|t| DateTime::from_timestamp(t, 0))
            .unwrap_or(arrived)
    };
    signing::verify(secret, &sig, at, "POST", path, body).map_err(|e| e.to_string())?;
    if check_nonce && !sim.use_nonce(bank, &sig.nonce, arrived.timestamp()) {
        return Err("nonce already used".into());
    }
    Ok(())
}

async fn card_inquiry(
    State(sim): State<Arc<Sim>>,
    Path(bank): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let arrived = now();
    // Every inquiry a served bank receives counts, refused ones too: the bank's
    // capacity is spent either way.
    let _in_flight = sim
        .secrets
        .contains_key(&bank)
        .then(|| sim.load.arrive(&bank, Instant::now()));
    let (reply, record_as) = inquiry_reply(&sim, &bank, uri.path(), &headers, &body, arrived).await;
    if let Some(id) = record_as {
        let e = reply.exchange("inquiry", &bank, uri.path(), &headers, &body, arrived);
        sim.record_exchange(&id, e);
    }
    reply.into_response()
}

/// The reply to one inquiry, and the person to record the exchange under when their
/// behaviour keeps traffic.
async fn inquiry_reply(
    sim: &Arc<Sim>,
    bank: &str,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
    arrived: DateTime<Utc>,
) -> (Reply, Option<String>) {
    let Some(secret) = sim.secrets.get(bank) else {
        return (Reply::error(StatusCode::NOT_FOUND, "unknown bank"), None);
    };
    let loose = loose_ids(body);
    // Before the signature is checked: a misbehaving mode may relax that check.
    let first = sim.behaviour_of(loose.as_ref().map_or("", |l| l.0.as_str()), bank);
    let recorded = |b: &Behaviour| {
        b.record_traffic
            .then(|| loose.as_ref().map(|l| l.0.clone()))
            .flatten()
    };
    let refuse = |status: StatusCode, reason: &str| {
        tracing::warn!(bank = %bank, status = status.as_u16(), reason, "inquiry refused");
        if let Some((id, query_id, inquiry_id)) = &loose {
            sim.record(
                id,
                InquiryRecord {
                    bank_code: bank.to_owned(),
                    query_id: query_id.clone(),
                    inquiry_id: inquiry_id.clone(),
                    status_returned: status.as_u16(),
                    at: rfc3339(arrived),
                    callback: None,
                },
            );
        }
        (Reply::error(status, reason), recorded(&first))
    };

    // Our signature, exactly as the service's own verifier checks it.
    if let Err(reason) = check_signature(sim, bank, headers, arrived, path, body, &first) {
        return refuse(StatusCode::UNAUTHORIZED, &reason);
    }
    let inq: Inquiry = match serde_json::from_slice(body) {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(bank = %bank, line = e.line(), column = e.column(), "inquiry body refused");
            return refuse(StatusCode::BAD_REQUEST, &format!("invalid inquiry: {e}"));
        }
    };
    let callback_url = match reqwest::Url::parse(&inq.callback_url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => u,
        _ => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "callback_url must be an absolute http(s) URL",
            )
        }
    };

    let id = inq.subject.id_number.clone();
    let (behaviour, failing, repeat) = {
        let mut st = sim.lock();
        let b = st.behaviours.resolve(&id, bank);
        let failing = if b.mode == Mode::FailThenAnswer {
            let n = st
                .failures
                .entry((id.clone(), bank.to_owned()))
                .or_insert(0);
            *n += 1;
            *n <= b.failures_before_success
        } else {
            false
        };
        let repeat = if b.mode == Mode::NotIdempotent {
            let n = st
                .repeats
                .entry((bank.to_owned(), inq.inquiry_id.clone()))
                .or_insert(0);
            *n += 1;
            *n > 1
        } else {
            false
        };
        (b, failing, repeat)
    };
    let record_as = behaviour.record_traffic.then(|| id.clone());
    let status = match behaviour.mode {
        Mode::Error => StatusCode::INTERNAL_SERVER_ERROR,
        Mode::FailThenAnswer if failing => StatusCode::INTERNAL_SERVER_ERROR,
        Mode::Callback | Mode::Never => StatusCode::ACCEPTED,
        Mode::Redirect => StatusCode::TEMPORARY_REDIRECT,
        _ => StatusCode::OK,
    };
    let idx = sim.record(
        &id,
        InquiryRecord {
            bank_code: bank.to_owned(),
            query_id: inq.query_id.to_string(),
            inquiry_id: inq.inquiry_id.clone(),
            status_returned: status.as_u16(),
            at: rfc3339(arrived),
            callback: (behaviour.mode == Mode::Callback).then_some(CallbackRecord {
                outcome: "pending",
                attempts: 0,
                last_status: None,
            }),
        },
    );
    tracing::info!(
        bank = %bank,
        query_id = %inq.query_id,
        mode = ?behaviour.mode,
        status = status.as_u16(),
        "inquiry"
    );

    let delay = if behaviour.mode == Mode::Timeout {
        behaviour.timeout_ms
    } else {
        behaviour.latency_ms
    };
    tokio::time::sleep(Duration::from_millis(delay)).await;

    let reply = match behaviour.mode {
        Mode::Error => Reply::error(status, "simulated bank failure"),
        Mode::FailThenAnswer if failing => Reply::error(status, "simulated bank failure"),
        Mode::Never => Reply::signed(status, secret, bank, path, b"{}".to_vec()),
        Mode::Redirect => Reply {
            status,
            headers: vec![(header::LOCATION.as_str(), path.to_owned())],
            body: Vec::new(),
        },
        Mode::Callback => {
            let (answer, key) = answer_body(
                sim,
                bank,
                &inq,
                behaviour.callback_answer.into(),
                &behaviour,
                Tamper::default(),
            );
            tokio::spawn(deliver_callback(
                sim.clone(),
                bank.to_owned(),
                callback_url,
                answer,
                key,
                behaviour,
                id,
                idx,
            ));
            Reply::signed(status, secret, bank, path, b"{}".to_vec())
        }
        mode => {
            let content = match mode {
                Mode::Malformed => Content::Malformed,
                Mode::BadSignature => Content::BadSignature,
                Mode::LeakCardNumber => Content::Leak,
                Mode::ExtraDigits => Content::ExtraDigits,
                Mode::ErrorAnswer => Content::ErrorAnswer,
                _ => Content::Correct,
            };
            let tamper = Tamper {
                wrong_ids: mode == Mode::WrongIds,
                altered: repeat,
            };
            let (answer, key) = answer_body(sim, bank, &inq, content, &behaviour, tamper);
            if mode == Mode::Unsigned {
                Reply::unsigned(status, answer)
            } else {
                Reply::signed(status, &key, bank, path, answer)
            }
        }
    };
    (reply, record_as)
}

/// POSTs the answer to the callback URL, signed over (POST, the URL's path, body), with
/// a fresh timestamp and nonce per attempt. Connection errors and 5xx are retried with
/// doubling pauses; a 4xx is final.
#[allow(clippy::too_many_arguments)]
async fn deliver_callback(
    sim: Arc<Sim>,
    bank: String,
    url: reqwest::Url,
    body: Vec<u8>,
    key: BankSecret,
    behaviour: Behaviour,
    id_number: String,
    idx: usize,
) {
    tokio::time::sleep(Duration::from_millis(behaviour.callback_delay_ms)).await;
    let path = url.path().to_owned();
    let mut pause = CALLBACK_FIRST_BACKOFF;
    let mut last_status = None;
    for attempt in 1..=CALLBACK_ATTEMPTS {
        // The slot covers the attempt only, not the pause before the next one; signed
        // once it is held, so a wait cannot make the timestamp stale.
        let slot = match sim.callback_slots.get(&bank) {
            Some(s) => s.clone().acquire_owned().await.ok(),
            None => None,
        };
        let h = signing::sign(&key, &bank, now(), "POST", &path, &body);
        let mut req = sim
            .client
            .post(url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.clone());
        let unsigned = behaviour.callback_answer == CallbackAnswer::Unsigned;
        if !unsigned {
            for (name, value) in h.pairs() {
                req = req.header(name, value);
            }
        }
        let at = now();
        let sent = req.send().await;
        let (sent, response_body) = match sent {
            // Read only when kept: a body nobody looks at is not worth the wait.
            Ok(resp) if behaviour.record_traffic => {
                let status = resp.status();
                let headers = resp.headers().clone();
                let text = resp.text().await.unwrap_or_default();
                (Ok((status, headers)), text)
            }
            Ok(resp) => (Ok((resp.status(), resp.headers().clone())), String::new()),
            Err(e) => (Err(e), String::new()),
        };
        drop(slot);
        if behaviour.record_traffic {
            let (status, response_headers) = match &sent {
                Ok((s, h)) => (Some(s.as_u16()), protocol_headers(header_pairs(h))),
                Err(_) => (None, Default::default()),
            };
            let mut request_headers = if unsigned {
                Default::default()
            } else {
                protocol_headers(h.pairs())
            };
            request_headers.insert("content-type".into(), "application/json".into());
            sim.record_exchange(
                &id_number,
                Exchange {
                    kind: "callback",
                    bank_code: bank.clone(),
                    method: "POST".into(),
                    path: path.clone(),
                    request_headers,
                    request_body: String::from_utf8_lossy(&body).into_owned(),
                    status,
                    response_headers,
                    response_body,
                    at: rfc3339(at),
                },
            );
        }
        let (outcome, retry) = match sent {
            Ok((s, _)) => {
                last_status = Some(s.as_u16());
                if s.is_success() {
                    tracing::info!(bank = %bank, status = s.as_u16(), attempt, "callback delivered");
                    ("delivered", false)
                } else if s.is_client_error() {
                    tracing::warn!(bank = %bank, status = s.as_u16(), attempt, "callback refused (final)");
                    ("refused", false)
                } else {
                    tracing::warn!(bank = %bank, status = s.as_u16(), attempt, "callback failed");
                    ("gave_up", true)
                }
            }
            Err(e) => {
                let kind = if e.is_timeout() {
                    "timeout"
                } else if e.is_connect() {
                    "connection"
                } else {
                    "request"
                };
                tracing::warn!(bank = %bank, error = kind, attempt, "callback failed");
                ("gave_up", true)
            }
        };
        let done = !retry || attempt == CALLBACK_ATTEMPTS;
        sim.set_callback(
            &id_number,
            idx,
            CallbackRecord {
                outcome: if done { outcome } else { "pending" },
                attempts: attempt,
                last_status,
            },
        );
        if done {
            if retry {
                tracing::warn!(bank = %bank, attempts = attempt, "callback given up");
            }
            return;
        }
        tokio::time::sleep(pause).await;
        pause *= 2;
    }
}

/// Parses a behaviour for a configured bank and applies it.
fn set_behaviour(
    sim: &Sim,
    bank: &str,
    who: &str,
    body: &[u8],
    apply: impl FnOnce(&mut Behaviours, Behaviour),
) -> Response {
    if !sim.banks.iter().any(|b| b == bank) {
        return json_error(StatusCode::NOT_FOUND, "unknown bank");
    }
    match Behaviour::parse(body) {
        Ok(b) => {
            tracing::info!(bank, mode = ?b.mode, who, "behaviour set");
            apply(&mut sim.lock().behaviours, b.clone());
            Json(b).into_response()
        }
        Err(e) => json_error(StatusCode::BAD_REQUEST, &format!("invalid behaviour: {e}")),
    }
}

async fn put_bank(State(sim): State<Arc<Sim>>, Path(bank): Path<String>, body: Bytes) -> Response {
    set_behaviour(&sim, &bank, "bank", &body, |all, b| all.set_bank(&bank, b))
}

async fn put_subject(
    State(sim): State<Arc<Sim>>,
    Path((id, bank)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    set_behaviour(&sim, &bank, "one person", &body, |all, b| {
        all.set_subject(&id, &bank, b)
    })
}

async fn delete_subject(State(sim): State<Arc<Sim>>, Path(id): Path<String>) -> StatusCode {
    let mut st = sim.lock();
    st.behaviours.clear_subject(&id);
    st.failures.retain(|(p, _), _| *p != id);
    tracing::info!("overrides of one person removed");
    StatusCode::NO_CONTENT
}

async fn reset(State(sim): State<Arc<Sim>>) -> StatusCode {
    let mut st = sim.lock();
    st.behaviours.reset();
    st.failures.clear();
    st.log.clear();
    st.repeats.clear();
    st.issued.clear();
    st.disputes.clear();
    st.traffic.clear();
    sim.load.reset();
    tracing::info!("reset to the start-up behaviour");
    StatusCode::NO_CONTENT
}

#[derive(Serialize)]
struct Truth {
    banks: BTreeMap<String, Vec<MaskedCard>>,
}

async fn truth(State(sim): State<Arc<Sim>>, Path(id): Path<String>) -> Response {
    Json(Truth {
        banks: sim.truth(&id),
    })
    .into_response()
}

async fn inquiries(State(sim): State<Arc<Sim>>, Path(id): Path<String>) -> Response {
    Json(sim.inquiries(&id)).into_response()
}

async fn traffic(State(sim): State<Arc<Sim>>, Path(id): Path<String>) -> Response {
    Json(sim.traffic(&id)).into_response()
}

async fn disputes_of(State(sim): State<Arc<Sim>>, Path(id): Path<String>) -> Response {
    Json(sim.disputes(&id)).into_response()
}

async fn behaviour(State(sim): State<Arc<Sim>>) -> Response {
    Json(sim.lock().behaviours.current().clone()).into_response()
}

#[derive(Serialize)]
struct BankTraffic {
    banks: BTreeMap<String, BankFigures>,
}

async fn bank_traffic(State(sim): State<Arc<Sim>>) -> Response {
    Json(BankTraffic {
        banks: sim.load.figures(),
    })
    .into_response()
}

async fn reset_bank_traffic(State(sim): State<Arc<Sim>>) -> StatusCode {
    sim.load.reset();
    StatusCode::NO_CONTENT
}

async fn health(State(sim): State<Arc<Sim>>) -> Response {
    Json(json!({ "ok": true, "banks": sim.banks })).into_response()
}

pub fn router(sim: Arc<Sim>) -> Router {
    Router::new()
        .route("/banks/{code}/card-inquiries", post(card_inquiry))
        .route("/banks/{code}/card-disputes", post(disputes::card_dispute))
        .route("/_admin/health", get(health))
        .route("/_admin/behaviour", get(behaviour))
        .route("/_admin/banks/{code}", put(put_bank))
        .route(
            "/_admin/subjects/{id_number}/banks/{code}",
            put(put_subject),
        )
        .route("/_admin/subjects/{id_number}", delete(delete_subject))
        .route("/_admin/reset", post(reset))
        .route("/_admin/truth/{id_number}", get(truth))
        .route("/_admin/inquiries/{id_number}", get(inquiries))
        .route("/_admin/disputes/{id_number}", get(disputes_of))
        .route("/_admin/traffic", get(bank_traffic))
        .route("/_admin/traffic/reset", post(reset_bank_traffic))
        .route("/_admin/traffic/{id_number}", get(traffic))
        .with_state(sim)
}

/// A simulator serving in this process until dropped.
pub struct Running {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    pub sim: Arc<Sim>,
    task: JoinHandle<()>,
}

impl Running {
    /// A bank's base URL, as configured for the service: `{endpoint}/banks/{code}`.
    pub fn bank_endpoint(&self, code: &str) -> String {
        format!("{}/banks/{code}", self.endpoint)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `addr` (port 0: any free port) and serves in a background task.
pub async fn start(config: SimConfig, addr: SocketAddr) -> Result<Running, String> {
    let sim = Arc::new(Sim::new(config)?);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let app = router(sim.clone());
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "server stopped");
        }
    });
    Ok(Running {
        addr,
        endpoint: format!("http://{addr}"),
        sim,
        task,
    })
}
