//! `POST /banks/{code}/card-disputes`: a person says a reported card is not theirs. The
//! bank checks our signature like an inquiry's, finds the card by the `card_ref` it gave
//! in that inquiry's answer, opens a case and answers its id, signed. The same
//! `dispute_id` delivered again (we retry until acknowledged) gets the same case.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::behaviour::{Behaviour, Mode};
use crate::server::{check_signature, now, rfc3339, Reply, Sim};

/// The dispute as sent by us (bank protocol `CardDispute`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Dispute {
    query_id: String,
    inquiry_id: String,
    card_ref: String,
    dispute_id: String,
}

/// One dispute as received, for `GET /_admin/disputes/{id_number}`.
#[derive(Debug, Clone, Serialize)]
pub struct DisputeRecord {
    pub bank_code: String,
    pub dispute_id: String,
    pub query_id: String,
    pub inquiry_id: String,
    pub card_ref: String,
    pub case_id: String,
    /// Times this dispute was delivered (1 the first time).
    pub deliveries: u32,
    /// RFC 3339, the first delivery.
    pub at: String,
    #[serde(skip)]
    pub id_number: String,
    #[serde(skip)]
    pub(crate) seq: u64,
    #[serde(skip)]
    body_digest: [u8; 32],
}

fn id_ok(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The person a dispute body names (through the inquiry it cites), when their
/// behaviour keeps traffic.
fn loose_person(sim: &Sim, bank: &str, body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let key = (
        bank.to_owned(),
        v.get("query_id")?.as_str()?.to_owned(),
        v.get("inquiry_id")?.as_str()?.to_owned(),
    );
    let st = sim.lock();
    let id = st.issued.get(&key)?.0.clone();
    st.behaviours
        .resolve(&id, bank)
        .record_traffic
        .then_some(id)
}

pub async fn card_dispute(
    State(sim): State<Arc<Sim>>,
    Path(bank): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let arrived = now();
    let (reply, record_as) = dispute_reply(&sim, &bank, uri.path(), &headers, &body);
    if let Some(id) = record_as {
        let e = reply.exchange("dispute", &bank, uri.path(), &headers, &body, arrived);
        sim.record_exchange(&id, e);
    }
    reply.into_response()
}

fn dispute_reply(
    sim: &Sim,
    bank: &str,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> (Reply, Option<String>) {
    let Some(secret) = sim.secrets.get(bank) else {
        return (Reply::error(StatusCode::NOT_FOUND, "unknown bank"), None);
    };
    let refuse = |status: StatusCode, reason: &str| {
        tracing::warn!(bank = %bank, status = status.as_u16(), reason, "dispute refused");
        Reply::error(status, reason)
    };
    // Whose card it is, from the body as it stands, to record a refusal under them too.
    let loose = loose_person(sim, bank, body);
    // Disputes are always checked strictly: the misbehaving modes are about inquiries.
    let strict = Behaviour::default();
    if let Err(reason) = check_signature(sim, bank, headers, now(), path, body, &strict) {
        return (refuse(StatusCode::UNAUTHORIZED, &reason), loose);
    }
    let d: Dispute = match serde_json::from_slice(body) {
        Ok(d) => d,
        Err(e) => {
            let reason = format!("invalid dispute: line {} column {}", e.line(), e.column());
            return (refuse(StatusCode::BAD_REQUEST, &reason), loose);
        }
    };
    if !id_ok(&d.dispute_id) || !id_ok(&d.card_ref) {
        let reason = "dispute_id and card_ref are 1 to 64 of [A-Za-z0-9_-]";
        return (refuse(StatusCode::BAD_REQUEST, reason), loose);
    }
    let digest: [u8; 32] = Sha256::digest(body).into();
    let mut st = sim.lock();
    let issued = st
        .issued
        .get(&(bank.to_owned(), d.query_id.clone(), d.inquiry_id.clone()))
        .filter(|(_, refs)| refs.contains(&d.card_ref))
        .map(|(id, _)| id.clone());
    let Some(id_number) = issued else {
        drop(st);
        let reason = "no such card_ref in an answer to this inquiry";
        return (refuse(StatusCode::NOT_FOUND, reason), None);
    };
    let behaviour = st.behaviours.resolve(&id_number, bank);
    let record_as = behaviour.record_traffic.then(|| id_number.clone());
    let key = (bank.to_owned(), d.dispute_id.clone());
    let fresh_case = behaviour.mode == Mode::DisputeNotIdempotent;
    st.cases_opened += 1;
    let seq = st.cases_opened;
    let case_id = match st.disputes.get_mut(&key) {
        Some(known) if known.body_digest != digest => {
            drop(st);
            let reason = "dispute_id already used for another dispute";
            return (refuse(StatusCode::CONFLICT, reason), record_as);
        }
        Some(known) => {
            known.deliveries += 1;
            if fresh_case {
                known.case_id = format!("{bank}-CASE-{seq:06}");
            }
            known.case_id.clone()
        }
        None => {
            let case_id = format!("{bank}-CASE-{seq:06}");
            st.disputes.insert(
                key,
                DisputeRecord {
                    bank_code: bank.to_owned(),
                    dispute_id: d.dispute_id.clone(),
                    query_id: d.query_id.clone(),
                    inquiry_id: d.inquiry_id.clone(),
                    card_ref: d.card_ref.clone(),
                    case_id: case_id.clone(),
                    deliveries: 1,
                    at: rfc3339(now()),
                    id_number,
                    seq,
                    body_digest: digest,
                },
            );
            case_id
        }
    };
    drop(st);
    tracing::info!(bank = %bank, query_id = %d.query_id, "dispute acknowledged");
    let answer = json!({
        "dispute_id": d.dispute_id,
        "case_id": case_id,
        "status": "ACKNOWLEDGED",
    });
    let body = serde_json::to_vec(&answer).expect("serialisable");
    (
        Reply::signed(StatusCode::OK, secret, bank, path, body),
        record_as,
    )
}
