//! Receives a bank's signed answer: `POST /v1/bank-callbacks/{bank_code}`.
//!
//! Order matters: the signature is checked before the body is looked at; a body holding
//! what looks like a full card number is refused before it is parsed further, and no
//! part of any body is logged or stored unless the answer is accepted (then its cards
//! only sealed to the report key). A correctly signed answer refused for its content
//! (card number, malformed, ids that do not match) fails the leg it names at once.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::secrets::BankSecrets;
use crate::bank::answer::{Answer, AnswerError, AnswerStatus};
use crate::bank::signing::{self, SignatureHeaders};
use crate::clock::Clock;
use crate::config::ServiceConfig;
use crate::error::ServiceError;
use crate::model::bank::BankCode;
use crate::model::ids::QueryId;
use crate::ports::{BankNonce, QueryStore, SettleOutcome, Settlement};
use crate::records::LegState;
use crate::report::body::seal_answer;
use crate::report::crypto::ReportSealer;

pub struct CallbackService {
    pub config: Arc<ServiceConfig>,
    pub store: Arc<dyn QueryStore>,
    pub secrets: BankSecrets,
    pub clock: Arc<dyn Clock>,
    /// Seals each accepted answer to the report key (public key only).
    pub sealer: Arc<ReportSealer>,
}

/// Why a correctly signed callback is refused for its content: the leg it names fails
/// with `failure`, and the bank gets `error`.
struct Refusal {
    failure: &'static str,
    error: ServiceError,
}

impl Refusal {
    fn of(e: AnswerError) -> Self {
        match e {
            AnswerError::CardNumber => Self {
                failure: "CARD_NUMBER_IN_ANSWER",
                error: ServiceError::CardNumberRejected,
            },
            // The parser's message holds only a position, never the body's content.
            AnswerError::Malformed(m) => Self {
                failure: "MALFORMED_ANSWER",
                error: ServiceError::Malformed(format!("bank answer: {m}")),
            },
        }
    }
}

/// The leg a body names, read leniently (only the two id fields, nothing else kept), so
/// that an answer refused for its content can still settle the leg it was meant for.
fn named_leg(body: &[u8]) -> Option<(QueryId, String)> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let query = QueryId::parse(v.get("query_id")?.as_str()?).ok()?;
    let inquiry = v
        .get("inquiry_id")
        .and_then(|i| i.as_str())
        .unwrap_or_default()
        .to_owned();
    Some((query, inquiry))
}

impl CallbackService {
    /// Accepts one answer. `path` is the request path as received (it is signed).
    pub async fn receive(
        &self,
        bank_code: &str,
        path: &str,
        headers: Option<SignatureHeaders>,
        body: &[u8],
    ) -> Result<(), ServiceError> {
        let bank = self
            .config
            .banks
            .parse(bank_code)
            .ok_or(ServiceError::Unauthenticated)?;
        let headers = headers
            .filter(|h| h.bank_code == bank.as_str())
            .ok_or(ServiceError::Unauthenticated)?;
        let secret = self
            .secrets
            .get(&bank)
            .ok_or(ServiceError::Unauthenticated)?;
        let now = self.clock.now();
        signing::verify(secret, &headers, now, "POST", path, body)
            .map_err(|_| ServiceError::Unauthenticated)?;
        // Verified, so the timestamp parses and is within the window of `now`.
        let ts = signing::parse_timestamp(&headers.timestamp).unwrap_or_default();
        let nonce = BankNonce {
            nonce: headers.nonce.clone(),
            expires_at: chrono::DateTime::from_timestamp_secs(
                ts.saturating_add(signing::MAX_SKEW_SECS),
            )
            .unwrap_or(now)
            .max(now),
        };

        let answer = match Answer::parse(body) {
            Ok(a) => a,
            Err(e) => {
                let refusal = Refusal::of(e);
                return match named_leg(body) {
                    Some((query, _)) => self.refuse(&query, &bank, refusal, &nonce).await,
                    None => Err(refusal.error),
                };
            }
        };
        let leg = self
            .store
            .leg(&answer.query_id, &bank)
            .await?
            .ok_or(ServiceError::NotFound)?;
        if leg.inquiry_id != answer.inquiry_id {
            let refusal = Refusal {
                failure: "MISMATCHED_ANSWER",
                error: ServiceError::NotFound,
            };
            return self.refuse(&answer.query_id, &bank, refusal, &nonce).await;
        }
        let digest = hex::encode(Sha256::digest(body));
        let same_as_before = |l: &crate::records::LegRecord| {
            if l.answer_digest.as_deref() == Some(digest.as_str()) {
                Ok(())
            } else {
                Err(ServiceError::AlreadyAnswered)
            }
        };
        if leg.state.is_settled() {
            // A byte-identical repeat (a bank retrying) is a success and changes nothing.
            return same_as_before(&leg);
        }
        let query = self
            .store
            .query(&answer.query_id)
            .await?
            .ok_or(ServiceError::NotFound)?;
        let (state, failure) = match answer.status {
            AnswerStatus::Found | AnswerStatus::None => (LegState::Answered, None),
            AnswerStatus::Error => (LegState::Failed, Some("BANK_ERROR".to_owned())),
        };
        let sealed = match state {
            LegState::Answered => Some(
                seal_answer(&self.sealer, &query, &bank, &leg.inquiry_id, &answer.cards)
                    .map_err(ServiceError::internal)?,
            ),
            _ => None,
        };
        let cards = answer.cards.len();
        let settlement = Settlement {
            state,
            failure,
            sealed,
            answer_digest: Some(digest.clone()),
            at: now,
        };
        match self
            .store
            .settle(&answer.query_id, &bank, &settlement, Some(&nonce))
            .await?
        {
            SettleOutcome::Settled => {
                info!(query_id = %answer.query_id, bank = %bank, cards, "bank callback accepted");
                Ok(())
            }
            SettleOutcome::AlreadySettled(l) => same_as_before(&l),
            SettleOutcome::NoSuchLeg => Err(ServiceError::NotFound),
            SettleOutcome::NonceReused => Err(ServiceError::Unauthenticated),
        }
    }

    /// A correctly signed answer from the bank that owns the leg, refused for its
    /// content: the leg fails at once with the reason (as an answer given inline does)
    /// instead of waiting for the deadline. Nothing of the body is stored. The settle is
    /// the same conditional write as an acceptance, so of any number of concurrent
    /// answers exactly one settles the leg; a replayed nonce changes nothing.
    async fn refuse(
        &self,
        query: &QueryId,
        bank: &BankCode,
        refusal: Refusal,
        nonce: &BankNonce,
    ) -> Result<(), ServiceError> {
        let open = self
            .store
            .leg(query, bank)
            .await?
            .is_some_and(|l| !l.state.is_settled());
        if !open {
            return Err(refusal.error);
        }
        let settlement = Settlement {
            state: LegState::Failed,
            failure: Some(refusal.failure.to_owned()),
            sealed: None,
            answer_digest: None,
            at: self.clock.now(),
        };
        match self
            .store
            .settle(query, bank, &settlement, Some(nonce))
            .await?
        {
            SettleOutcome::Settled => {
                warn!(query_id = %query, bank = %bank, failure = refusal.failure, "bank callback refused; leg failed");
                Err(refusal.error)
            }
            SettleOutcome::NonceReused => Err(ServiceError::Unauthenticated),
            SettleOutcome::AlreadySettled(_) | SettleOutcome::NoSuchLeg => Err(refusal.error),
        }
    }
}
