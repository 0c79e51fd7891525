//! Sending disputes to banks (decision 157), in the bank-inquiry function, the only one
//! holding bank secrets: each queued send (`queue::DisputeSend`) passes the bank's gate
//! like an inquiry (`sender`), then `POST {endpoint}/card-disputes`, signed; the
//! bank's 200 must be signed over our method and path and its body, and name our
//! dispute and a case. Acknowledged → ACKNOWLEDGED with the case id; refused (4xx) →
//! FAILED; anything else is sent again with backoff (the sweeper queues it when due)
//! until 72 hours after the dispute (`rules::dispute`), then FAILED.
//!
//! Idempotent: a send is claimed in the store before the call (of concurrent senders one
//! calls), and the bank takes a repeated `dispute_id` as the same dispute.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::client::{BankClient, BankReply};
use super::queue::DisputeSend;
use super::secrets::BankSecrets;
use crate::bank::{card_number, signing};
use crate::clock::Clock;
use crate::config::ServiceConfig;
use crate::model::ids::QueryId;
use crate::model::timestamp;
use crate::ports::{DisputeStore, StoreError};
use crate::records::{DisputeEnd, DisputeRecord, DisputeStatus};
use crate::rules::admission::{self, Health};
use crate::rules::dispute::{self as rule, Reply};

pub struct DisputeSenderDeps {
    pub config: Arc<ServiceConfig>,
    pub store: Arc<dyn DisputeStore>,
    pub client: Arc<dyn BankClient>,
    pub secrets: BankSecrets,
    pub clock: Arc<dyn Clock>,
    pub bank_timeout: Duration,
}

/// What one send did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisputeOutcome {
    /// Not due, final, or claimed by another sender.
    Skipped,
    Acknowledged(String),
    Failed(&'static str),
    RetryAt(chrono::DateTime<chrono::Utc>),
}

/// The body of `POST {endpoint}/card-disputes` (bank protocol `CardDispute`).
#[derive(Serialize)]
struct CardDispute<'a> {
    query_id: &'a QueryId,
    inquiry_id: &'a str,
    card_ref: &'a str,
    dispute_id: &'a str,
}

/// The bank's answer (bank protocol `DisputeAnswer`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisputeAnswer {
    dispute_id: String,
    case_id: String,
    status: String,
}

fn case_id_ok(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !card_number::contains_card_number(s)
}

pub struct DisputeSender {
    d: DisputeSenderDeps,
}

impl DisputeSender {
    pub fn new(deps: DisputeSenderDeps) -> Self {
        Self { d: deps }
    }

    /// The dispute a queued send is for, if that send is still to be made now: the
    /// same dispute, still SENT, due, and at the send before this one. A redelivered or
    /// superseded message gets `None`.
    pub async fn pending(&self, m: &DisputeSend) -> Result<Option<DisputeRecord>, StoreError> {
        let Some(r) = self.d.store.dispute(&m.query_id, &m.card_id).await? else {
            return Ok(None);
        };
        let now = self.d.clock.now();
        let current = r.dispute_id == m.dispute_id
            && r.status == DisputeStatus::Sent
            && r.attempts.checked_add(1) == Some(m.attempt)
            && r.next_attempt_at.is_some_and(|t| t <= now);
        Ok(current.then_some(r))
    }

    /// Writes how send `attempt` ended; `Skipped` when the dispute moved on meanwhile.
    async fn end(
        &self,
        r: &DisputeRecord,
        attempt: u32,
        end: DisputeEnd,
    ) -> Result<DisputeOutcome, StoreError> {
        let outcome = match &end {
            DisputeEnd::Acknowledged { case_id, .. } => {
                DisputeOutcome::Acknowledged(case_id.clone())
            }
            DisputeEnd::Failed { .. } => DisputeOutcome::Failed(""),
            DisputeEnd::Retry { at } => DisputeOutcome::RetryAt(*at),
        };
        let written = self
            .d
            .store
            .end_dispute_send(&r.query_id, &r.card_id, attempt, &end)
            .await?;
        Ok(if written {
            outcome
        } else {
            DisputeOutcome::Skipped
        })
    }

    /// Ends the dispute FAILED for `why` (a stable code).
    async fn fail(
        &self,
        r: &DisputeRecord,
        attempt: u32,
        why: &'static str,
    ) -> Result<DisputeOutcome, StoreError> {
        let end = DisputeEnd::Failed {
            failure: why.to_owned(),
            at: self.d.clock.now(),
        };
        Ok(match self.end(r, attempt, end).await? {
            DisputeOutcome::Failed(_) => DisputeOutcome::Failed(why),
            other => other,
        })
    }

    /// A failed send: again later, or FAILED when that would be past the give-up time.
    async fn again(
        &self,
        r: &DisputeRecord,
        attempt: u32,
        why: &str,
    ) -> Result<DisputeOutcome, StoreError> {
        let now = self.d.clock.now();
        match rule::next_send_at(r.created_at, now, attempt, rand::random::<f64>()) {
            Some(at) => {
                warn!(query_id = %r.query_id, dispute_id = %r.dispute_id, bank = %r.bank, attempt, error = why, retry_at = %timestamp::format(at), "dispute not acknowledged; will send again");
                self.end(r, attempt, DisputeEnd::Retry { at }).await
            }
            None => {
                warn!(query_id = %r.query_id, dispute_id = %r.dispute_id, bank = %r.bank, attempt, error = why, "dispute not acknowledged in time; failed");
                self.fail(r, attempt, "GAVE_UP").await
            }
        }
    }

    /// Makes the dispute's next send (claimed first) and says what the bank's reply
    /// tells about its health.
    pub async fn send(&self, r: &DisputeRecord) -> Result<(DisputeOutcome, Health), StoreError> {
        let now = self.d.clock.now();
        if rule::given_up(r.created_at, now) {
            warn!(query_id = %r.query_id, dispute_id = %r.dispute_id, bank = %r.bank, "dispute not acknowledged in time; failed");
            return Ok((self.fail(r, r.attempts, "GAVE_UP").await?, Health::Neutral));
        }
        let lease = now + rule::SEND_LEASE;
        if !self
            .d
            .store
            .claim_dispute_send(&r.query_id, &r.card_id, r.attempts, lease)
            .await?
        {
            return Ok((DisputeOutcome::Skipped, Health::Neutral));
        }
        let attempt = r.attempts + 1;
        let (Some(bank), Some(secret), Some(card_ref)) = (
            self.d.config.banks.get(&r.bank),
            self.d.secrets.get(&r.bank),
            r.card_ref.as_ref(),
        ) else {
            warn!(query_id = %r.query_id, dispute_id = %r.dispute_id, bank = %r.bank, "dispute cannot be sent: bank not configured");
            let out = self.fail(r, attempt, "BANK_NOT_CONFIGURED").await?;
            return Ok((out, Health::Neutral));
        };
        let url = bank.endpoint.disputes();
        let path = url.path().to_owned();
        let body = serde_json::to_vec(&CardDispute {
            query_id: &r.query_id,
            inquiry_id: &r.inquiry_id,
            card_ref: card_ref.as_str(),
            dispute_id: &r.dispute_id,
        })
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let headers = signing::sign(secret, bank.code.as_str(), now, "POST", &path, &body);
        let reply = self
            .d
            .client
            .post(url.as_str(), &headers, body, self.d.bank_timeout)
            .await;
        let health = admission::health_of(reply.as_ref().ok().map(|r| r.status));
        let outcome = match reply {
            Ok(reply) => match rule::reply_of(reply.status) {
                Reply::Acknowledged => match self.case_of(r, secret, &path, &reply) {
                    Ok(case_id) => {
                        info!(query_id = %r.query_id, dispute_id = %r.dispute_id, bank = %r.bank, attempt, "dispute acknowledged");
                        let at = self.d.clock.now();
                        self.end(r, attempt, DisputeEnd::Acknowledged { case_id, at })
                            .await?
                    }
                    Err(why) => self.again(r, attempt, why).await?,
                },
                Reply::Refused => {
                    warn!(query_id = %r.query_id, dispute_id = %r.dispute_id, bank = %r.bank, status = reply.status, "dispute refused by the bank");
                    self.fail(r, attempt, "DISPUTE_REFUSED").await?
                }
                Reply::Transient => {
                    self.again(r, attempt, &format!("HTTP {}", reply.status))
                        .await?
                }
            },
            Err(e) => self.again(r, attempt, &e.to_string()).await?,
        };
        Ok((outcome, health))
    }

    /// The case id of a 200 that is the bank's, signed, and about this dispute.
    fn case_of(
        &self,
        r: &DisputeRecord,
        secret: &signing::BankSecret,
        path: &str,
        reply: &BankReply,
    ) -> Result<String, &'static str> {
        let now = self.d.clock.now();
        let signed = reply.signature.as_ref().is_some_and(|h| {
            h.bank_code == r.bank.as_str()
                && signing::verify(secret, h, now, "POST", path, &reply.body).is_ok()
        });
        if !signed {
            return Err("BAD_SIGNATURE");
        }
        let answer: DisputeAnswer =
            serde_json::from_slice(&reply.body).map_err(|_| "MALFORMED_ANSWER")?;
        if answer.dispute_id != r.dispute_id
            || answer.status != "ACKNOWLEDGED"
            || !case_id_ok(&answer.case_id)
        {
            return Err("MISMATCHED_ANSWER");
        }
        Ok(answer.case_id)
    }
}
