//! Receives a bank's signed answer: `POST /v1/bank-callbacks/{bank_code}`.
//!
//! Order matters: the signature is checked before the body is looked at; a body holding
//! what looks like a full card number is refused before it is parsed further, and no
//! part of any body is logged or stored unless the answer is accepted.

use std::sync::Arc;

use lambda_http::http::Method;
use lambda_http::{Body, Request, Response};
use sha2::{Digest, Sha256};
use tracing::info;

use super::secrets::BankSecrets;
use crate::bank::answer::{Answer, AnswerError, AnswerStatus};
use crate::bank::signing::{self, SignatureHeaders};
use crate::clock::Clock;
use crate::config::ServiceConfig;
use crate::error::ServiceError;
use crate::http;
use crate::ports::{BankNonce, QueryStore, SettleOutcome, Settlement, StoreError};
use crate::records::LegState;

pub struct CallbackService {
    pub config: Arc<ServiceConfig>,
    pub store: Arc<dyn QueryStore>,
    pub secrets: BankSecrets,
    pub clock: Arc<dyn Clock>,
}

fn store_err(e: StoreError) -> ServiceError {
    match e {
        StoreError::Unavailable(m) => ServiceError::Unavailable(m),
        other => ServiceError::internal(other),
    }
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

        let answer = Answer::parse(body).map_err(|e| match e {
            AnswerError::CardNumber => ServiceError::CardNumberRejected,
            AnswerError::Malformed(m) => ServiceError::Malformed(format!("bank answer: {m}")),
        })?;
        let leg = self
            .store
            .leg(&answer.query_id, &bank)
            .await
            .map_err(store_err)?
            .filter(|l| l.inquiry_id == answer.inquiry_id)
            .ok_or(ServiceError::NotFound)?;
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
        let (state, failure) = match answer.status {
            AnswerStatus::Found | AnswerStatus::None => (LegState::Answered, None),
            AnswerStatus::Error => (LegState::Failed, Some("BANK_ERROR".to_owned())),
        };
        let cards = answer.cards.len();
        let settlement = Settlement {
            state,
            failure,
            cards: answer.cards,
            answer_digest: Some(digest.clone()),
            at: now,
        };
        let ts: i64 = headers.timestamp.parse().unwrap_or_default();
        let nonce = BankNonce {
            nonce: headers.nonce.clone(),
            expires_at: time::OffsetDateTime::from_unix_timestamp(ts + signing::MAX_SKEW_SECS)
                .unwrap_or(now)
                .max(now),
        };
        match self
            .store
            .settle(&answer.query_id, &bank, &settlement, Some(&nonce))
            .await
            .map_err(store_err)?
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
}

fn signature_headers(req: &Request) -> Option<SignatureHeaders> {
    Some(SignatureHeaders {
        bank_code: http::header(req, signing::HEADER_BANK_CODE)?.to_owned(),
        timestamp: http::header(req, signing::HEADER_TIMESTAMP)?.to_owned(),
        nonce: http::header(req, signing::HEADER_NONCE)?.to_owned(),
        signature: http::header(req, signing::HEADER_SIGNATURE)?.to_owned(),
    })
}

/// HTTP entrypoint of the bank-callback function.
pub struct CallbackApi {
    pub service: CallbackService,
}

impl CallbackApi {
    pub async fn handle(&self, req: Request) -> Response<Body> {
        http::serve(&req, |req| async move {
            self.route(req).await.map(|()| http::empty_response(204))
        })
        .await
    }

    async fn route(&self, req: &Request) -> Result<(), ServiceError> {
        let path = req.uri().path().to_owned();
        let code = match http::segments(&path).as_slice() {
            ["v1", "bank-callbacks", code] => (*code).to_owned(),
            _ => return Err(ServiceError::NotFound),
        };
        if req.method() != Method::POST {
            return Err(ServiceError::MethodNotAllowed { allow: "POST" });
        }
        let body = http::body_bytes(req);
        if body.len() > http::MAX_BODY_BYTES {
            return Err(ServiceError::PayloadTooLarge {
                limit: http::MAX_BODY_BYTES,
            });
        }
        http::check_json_content_type(req)?;
        self.service
            .receive(&code, &path, signature_headers(req), body)
            .await
    }
}
