//! Sends a query's inquiries to its banks, concurrently, and records each leg: an answer
//! that comes back at once is settled directly, a 202 waits for the callback, transient
//! failures are retried with backoff until the deadline (the sweeper re-sends due legs).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::client::{BankClient, BankReply};
use super::planner;
use super::secrets::BankSecrets;
use crate::bank::answer::{Answer, AnswerError, AnswerStatus, Inquiry, Subject};
use crate::bank::{retry, signing};
use crate::clock::Clock;
use crate::config::ServiceConfig;
use crate::model::bank::BankCode;
use crate::model::ids::{QueryId, UserId};
use crate::model::profile::UserProfile;
use crate::model::timestamp;
use crate::ports::{ProfileStore, QueryStore, SettleOutcome, Settlement, StoreError};
use crate::records::{LegRecord, LegState, QueryRecord};
use crate::report::body::seal_answer;
use crate::report::crypto::ReportSealer;
use crate::rules::admission::{self, Health};

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

/// A queued attempt still to be made, with what its send needs.
#[derive(Clone)]
pub struct PendingLeg {
    pub query: QueryRecord,
    pub leg: LegRecord,
    /// The subject's profile as read with the leg (`None`: the person left).
    pub profile: Arc<Result<Option<UserProfile>, StoreError>>,
}

impl Fanout {
    pub fn new(deps: FanoutDeps) -> Self {
        Self { d: deps }
    }

    /// Sends every due leg of the query at once, ungated. The functions never call it:
    /// they plan into the inquiry queue (`dispatch::planner`) and send through the gate
    /// (`dispatch::sender`). It is the send path of one query on its own, for the tests
    /// of the bank protocol and the fan-out latency bench. Safe to call any number of
    /// times: each attempt is claimed in the store first.
    pub async fn dispatch(&self, id: &QueryId) -> Result<Vec<(BankCode, LegOutcome)>, StoreError> {
        let now = self.d.clock.now();
        let Some((query, due)) = planner::due_legs(self.d.store.as_ref(), id, now).await? else {
            return Ok(Vec::new());
        };
        let attempts = due.iter().map(|leg| {
            let query = &query;
            async move {
                let outcome = self.send_leg(query, leg).await.map(|(o, _)| o);
                (leg.bank.clone(), outcome)
            }
        });
        let mut out = Vec::new();
        for (bank, outcome) in futures::future::join_all(attempts).await {
            out.push((bank, outcome?));
        }
        Ok(out)
    }

    /// For each queued attempt `(query, bank, attempt)`, in order: the query, the leg and
    /// the subject's profile if that attempt is still to be made now (the query
    /// collecting, the leg pending, due, and at the attempt before this one), `None` for
    /// a redelivered or superseded message. The queries and legs of all of them are read
    /// in one round trip, their profiles in another (decision 148); a stale read is safe,
    /// as the claim before the call decides.
    pub async fn pending_attempts(
        &self,
        wanted: &[(QueryId, BankCode, u32)],
    ) -> Vec<Result<Option<PendingLeg>, StoreError>> {
        let keys: Vec<(QueryId, BankCode)> =
            wanted.iter().map(|(q, b, _)| (*q, b.clone())).collect();
        let read = self.d.store.query_legs(&keys).await;
        let now = self.d.clock.now();
        let current: Vec<Result<Option<(QueryRecord, LegRecord)>, StoreError>> = read
            .into_iter()
            .zip(wanted)
            .map(|(r, (_, _, attempt))| {
                let (Some(query), Some(leg)) = r? else {
                    return Ok(None);
                };
                let current = planner::collecting(&query, now)
                    && planner::due(&leg, now)
                    && leg.attempts.checked_add(1) == Some(*attempt);
                Ok(current.then_some((query, leg)))
            })
            .collect();
        let mut users: Vec<UserId> = current
            .iter()
            .filter_map(|c| c.as_ref().ok()?.as_ref().map(|(q, _)| q.user_id.clone()))
            .collect();
        users.sort();
        users.dedup();
        let profiles: HashMap<UserId, Result<Option<UserProfile>, StoreError>> = if users.is_empty()
        {
            HashMap::new()
        } else {
            let read = self.d.profiles.profiles(&users).await;
            users.into_iter().zip(read).collect()
        };
        current
            .into_iter()
            .map(|c| {
                Ok(c?.map(|(query, leg)| {
                    // An entry the store did not give back is no "no profile": the
                    // message comes back instead of the leg settling unasked.
                    let profile = profiles.get(&query.user_id).cloned().unwrap_or_else(|| {
                        Err(StoreError::Unavailable("a profile was not read".into()))
                    });
                    PendingLeg {
                        query,
                        leg,
                        profile: Arc::new(profile),
                    }
                }))
            })
            .collect()
    }

    /// Makes the leg's next attempt (claimed first: of any number of concurrent callers
    /// one sends it) and says what the bank's reply tells about its health.
    pub async fn send_leg(
        &self,
        q: &QueryRecord,
        leg: &LegRecord,
    ) -> Result<(LegOutcome, Health), StoreError> {
        let profile = self.d.profiles.profile(&q.user_id).await?;
        self.send_with(q, leg, profile.as_ref()).await
    }

    /// [`Fanout::send_leg`] with the profile read by [`Fanout::pending_attempts`].
    pub async fn send_pending(&self, p: &PendingLeg) -> Result<(LegOutcome, Health), StoreError> {
        let profile = p.profile.as_ref().as_ref().map_err(Clone::clone)?;
        self.send_with(&p.query, &p.leg, profile.as_ref()).await
    }

    async fn send_with(
        &self,
        q: &QueryRecord,
        leg: &LegRecord,
        profile: Option<&UserProfile>,
    ) -> Result<(LegOutcome, Health), StoreError> {
        let Some(profile) = profile else {
            // The person left the app's user system: nobody to ask about.
            let out = self.settle_failed(q, leg, "SUBJECT_UNAVAILABLE").await?;
            return Ok((out, Health::Neutral));
        };
        let subject = Subject {
            name: profile.name.clone(),
            id_number: profile.id_number.expose().to_owned(),
        };
        self.attempt(q, leg, subject).await
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
    ) -> Result<(LegOutcome, Health), StoreError> {
        let now = self.d.clock.now();
        if !self
            .d
            .store
            .claim_attempt(&q.query_id, &leg.bank, leg.attempts, now)
            .await?
        {
            return Ok((LegOutcome::Skipped, Health::Neutral));
        }
        let attempt = leg.attempts + 1;
        let (Some(bank), Some(secret)) = (
            self.d.config.banks.get(&leg.bank),
            self.d.secrets.get(&leg.bank),
        ) else {
            let out = self.settle_failed(q, leg, "BANK_NOT_CONFIGURED").await?;
            return Ok((out, Health::Neutral));
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
        let health = admission::health_of(reply.as_ref().ok().map(|r| r.status));
        let outcome = match reply {
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
            Ok(r) if health == Health::Unhealthy => {
                self.retry_later(q, leg, attempt, &format!("HTTP {}", r.status), ms)
                    .await
            }
            Ok(r) => {
                warn!(query_id = %q.query_id, bank = %leg.bank, status = r.status, "inquiry refused by the bank");
                self.settle_failed(q, leg, "INQUIRY_REFUSED").await
            }
            Err(e) => self.retry_later(q, leg, attempt, &e.to_string(), ms).await,
        }?;
        Ok((outcome, health))
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
