//! Sends a query's inquiries to its banks, concurrently, and records each leg: an answer
//! that comes back at once is settled directly, a 202 waits for the callback, transient
//! failures are retried with backoff until the deadline (the sweeper re-sends due legs).

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::client::{BankClient, BankReply};
use super::secrets::BankSecrets;
use crate::bank::answer::{Answer, AnswerError, AnswerStatus, Inquiry, Subject};
use crate::bank::{retry, signing};
use crate::clock::Clock;
use crate::config::ServiceConfig;
use crate::model::bank::BankCode;
use crate::model::ids::QueryId;
use crate::model::timestamp;
use crate::ports::{ProfileStore, QueryStore, SettleOutcome, Settlement, StoreError};
use crate::records::{LegRecord, LegState, QueryPhase, QueryRecord};
use crate::report::body::seal_answer;
use crate::report::crypto::ReportSealer;
use crate::rules::deadline;

pub struct FanoutDeps {
    pub config: Arc<ServiceConfig>,
    pub store: Arc<dyn QueryStore>,
    pub profiles: Arc<dyn ProfileStore>,
    pub client: Arc<dyn BankClient>,
    pub secrets: BankSecrets,
    pub clock: Arc<dyn Clock>,
    /// Public base URL of our API, for `callback_url` (no trailing slash).
    pub callback_base: String,
    /// Per-bank request timeout.
    pub bank_timeout: Duration,
    /// Seals each answer to the report key as its leg settles (public key only).
    pub sealer: Arc<ReportSealer>,
}

/// What one dispatch did with one leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegOutcome {
    /// Not due, already settled, waiting for a callback, or claimed by another sender.
    Skipped,
    Answered,
    Accepted,
    RetryAt(chrono::DateTime<chrono::Utc>),
    /// No retry fits before the deadline; the deadline settles it as NO_RESPONSE.
    GaveUp,
    Failed(&'static str),
}

pub struct Fanout {
    d: FanoutDeps,
}

impl Fanout {
    pub fn new(deps: FanoutDeps) -> Self {
        Self { d: deps }
    }

    /// Sends every due leg of the query. Safe to call any number of times: each attempt
    /// is claimed in the store first, so concurrent callers never send the same attempt.
    pub async fn dispatch(&self, id: &QueryId) -> Result<Vec<(BankCode, LegOutcome)>, StoreError> {
        let Some(query) = self.d.store.query(id).await? else {
            warn!(query_id = %id, "dispatch of an unknown query");
            return Ok(Vec::new());
        };
        let now = self.d.clock.now();
        let collecting =
            query.phase == QueryPhase::Collecting && deadline::collecting(query.collect_until, now);
        if !collecting {
            return Ok(Vec::new());
        }
        // The submission wrote only the query; its legs are made here, before anything
        // is sent, so a failure part way leaves the stream's retry to finish them.
        self.d.store.ensure_legs(&query).await?;
        let legs = self.d.store.legs(id).await?;
        let due: Vec<&LegRecord> = legs
            .iter()
            .filter(|l| l.state == LegState::Pending && l.next_attempt_at.is_none_or(|t| t <= now))
            .collect();
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let Some(profile) = self.d.profiles.profile(&query.user_id).await? else {
            // The person left the app's user system: nobody to ask about.
            let mut out = Vec::new();
            for leg in due {
                self.settle_failed(&query, leg, "SUBJECT_UNAVAILABLE")
                    .await?;
                out.push((leg.bank.clone(), LegOutcome::Failed("SUBJECT_UNAVAILABLE")));
            }
            return Ok(out);
        };
        let subject = || Subject {
            name: profile.name.clone(),
            id_number: profile.id_number.expose().to_owned(),
        };
        let attempts = due.iter().map(|leg| {
            let subject = subject();
            let query = &query;
            async move {
                let outcome = self.attempt(query, leg, subject).await;
                (leg.bank.clone(), outcome)
            }
        });
        let mut out = Vec::new();
        for (bank, outcome) in futures::future::join_all(attempts).await {
            out.push((bank, outcome?));
        }
        Ok(out)
    }

    async fn settle_failed(
        &self,
        q: &QueryRecord,
        leg: &LegRecord,
        why: &'static str,
    ) -> Result<LegOutcome, StoreError> {
        warn!(query_id = %q.query_id, bank = %leg.bank, failure = why, "bank leg failed");
        let st = Settlement {
            state: LegState::Failed,
            failure: Some(why.to_owned()),
            sealed: None,
            answer_digest: None,
            at: self.d.clock.now(),
        };
        self.d
            .store
            .settle(&q.query_id, &leg.bank, &st, None)
            .await?;
        Ok(LegOutcome::Failed(why))
    }

    async fn attempt(
        &self,
        q: &QueryRecord,
        leg: &LegRecord,
        subject: Subject,
    ) -> Result<LegOutcome, StoreError> {
        let now = self.d.clock.now();
        if !self
            .d
            .store
            .claim_attempt(&q.query_id, &leg.bank, leg.attempts, now)
            .await?
        {
            return Ok(LegOutcome::Skipped);
        }
        let attempt = leg.attempts + 1;
        let (Some(bank), Some(secret)) = (
            self.d.config.banks.get(&leg.bank),
            self.d.secrets.get(&leg.bank),
        ) else {
            return self.settle_failed(q, leg, "BANK_NOT_CONFIGURED").await;
        };
        let url = bank.endpoint.inquiries();
        let path = url.path().to_owned();
        let url = url.to_string();
        let inquiry = Inquiry {
            query_id: q.query_id,
            inquiry_id: leg.inquiry_id.clone(),
            subject,
            callback_url: format!("{}/v1/bank-callbacks/{}", self.d.callback_base, bank.code),
            respond_by: timestamp::format(q.collect_until),
        };
        let body = serde_json::to_vec(&inquiry).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let headers = signing::sign(secret, bank.code.as_str(), now, "POST", &path, &body);
        let started = std::time::Instant::now();
        let reply = self
            .d
            .client
            .post(&url, &headers, body, self.d.bank_timeout)
            .await;
        let ms = started.elapsed().as_millis() as u64;
        match reply {
            Ok(r) if r.status == 200 => self.take_answer(q, leg, secret, &path, r).await,
            Ok(r) if r.status == 202 => {
                info!(query_id = %q.query_id, bank = %leg.bank, attempt, ms, "inquiry accepted; awaiting callback");
                self.d
                    .store
                    .mark_accepted(&q.query_id, &leg.bank, attempt)
                    .await?;
                Ok(LegOutcome::Accepted)
            }
            // Never followed (see `HttpBankClient`): the inquiry holds the subject's ID
            // number, and a bank that moved its endpoint must be reconfigured, not
            // chased. Retrying would meet the same redirect, so the leg fails at once.
            Ok(r) if (300..400).contains(&r.status) => {
                warn!(query_id = %q.query_id, bank = %leg.bank, status = r.status, "bank answered with a redirect; not followed");
                self.settle_failed(q, leg, "BANK_REDIRECTED").await
            }
            Ok(r) if r.status >= 500 || r.status == 408 || r.status == 429 => {
                self.retry_later(q, leg, attempt, &format!("HTTP {}", r.status), ms)
                    .await
            }
            Ok(r) => {
                warn!(query_id = %q.query_id, bank = %leg.bank, status = r.status, "inquiry refused by the bank");
                self.settle_failed(q, leg, "INQUIRY_REFUSED").await
            }
            Err(e) => self.retry_later(q, leg, attempt, &e.to_string(), ms).await,
        }
    }

    async fn retry_later(
        &self,
        q: &QueryRecord,
        leg: &LegRecord,
        attempt: u32,
        why: &str,
        ms: u64,
    ) -> Result<LegOutcome, StoreError> {
        let now = self.d.clock.now();
        match retry::next_attempt_at(now, attempt, rand::random::<f64>(), q.collect_until) {
            Some(at) => {
                warn!(query_id = %q.query_id, bank = %leg.bank, attempt, ms, error = why, retry_at = %timestamp::format(at), "bank inquiry failed; will retry");
                self.d
                    .store
                    .schedule_retry(&q.query_id, &leg.bank, attempt, at)
                    .await?;
                Ok(LegOutcome::RetryAt(at))
            }
            None => {
                warn!(query_id = %q.query_id, bank = %leg.bank, attempt, error = why, "bank inquiry failed; no retry fits before the deadline");
                Ok(LegOutcome::GaveUp)
            }
        }
    }

    async fn take_answer(
        &self,
        q: &QueryRecord,
        leg: &LegRecord,
        secret: &signing::BankSecret,
        path: &str,
        reply: BankReply,
    ) -> Result<LegOutcome, StoreError> {
        let now = self.d.clock.now();
        let signed = reply.signature.as_ref().is_some_and(|h| {
            h.bank_code == leg.bank.as_str()
                && signing::verify(secret, h, now, "POST", path, &reply.body).is_ok()
        });
        if !signed {
            return self.settle_failed(q, leg, "BAD_SIGNATURE").await;
        }
        let answer = match Answer::parse(&reply.body) {
            Ok(a) => a,
            Err(AnswerError::CardNumber) => {
                return self.settle_failed(q, leg, "CARD_NUMBER_IN_ANSWER").await
            }
            Err(AnswerError::Malformed(_)) => {
                return self.settle_failed(q, leg, "MALFORMED_ANSWER").await
            }
        };
        if answer.query_id != q.query_id || answer.inquiry_id != leg.inquiry_id {
            return self.settle_failed(q, leg, "MISMATCHED_ANSWER").await;
        }
        let (state, failure) = match answer.status {
            AnswerStatus::Found | AnswerStatus::None => (LegState::Answered, None),
            AnswerStatus::Error => (LegState::Failed, Some("BANK_ERROR".to_owned())),
        };
        let sealed = match state {
            LegState::Answered => Some(
                seal_answer(&self.d.sealer, q, &leg.bank, &leg.inquiry_id, &answer.cards)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            ),
            _ => None,
        };
        let cards = answer.cards.len();
        let st = Settlement {
            state,
            failure,
            sealed,
            answer_digest: Some(hex::encode(Sha256::digest(&reply.body))),
            at: now,
        };
        match self
            .d
            .store
            .settle(&q.query_id, &leg.bank, &st, None)
            .await?
        {
            SettleOutcome::Settled => {
                info!(query_id = %q.query_id, bank = %leg.bank, cards, "bank answered");
                Ok(if state == LegState::Answered {
                    LegOutcome::Answered
                } else {
                    LegOutcome::Failed("BANK_ERROR")
                })
            }
            // A callback won the race; nothing more to do.
            _ => Ok(LegOutcome::Skipped),
        }
    }
}
