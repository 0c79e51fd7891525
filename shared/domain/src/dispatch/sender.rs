//! Sending: the bank-inquiry function's batch of queued leg attempts (SQS FIFO, grouped
//! by bank). Per bank, in message order: admit through the bank's gate, send, finish.
//! Admitted sends of one bank run concurrently, as many as the gate lets through (the
//! bank's in-flight limit). A short wait for admission (the rate's next permit, one of
//! our own sends ending) is waited; a long one (circuit open, every slot held
//! elsewhere) pauses this message and the bank's later ones in the batch
//! (`ChangeMessageVisibility`) and reports them as failures, so the queue brings them
//! back, in order, when the bank may be called again.
//!
//! Idempotent: a message whose attempt is no longer current (sent before, the leg
//! settled, the query closed) is dropped; the attempt is claimed in the store before
//! the call, so a redelivered message can never send it twice.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::TimeDelta;
use tokio::task::{Id, JoinSet};
use tracing::{error, info, warn};

use super::dispute::DisputeSender;
use super::fanout::{Fanout, PendingLeg};
use super::gate::{Admission, Gate, Health, Hold, Lane, LanePolicy};
use super::queue::{InquiryQueue, QueueMessage};
use crate::clock::Clock;
use crate::config::ServiceConfig;
use crate::model::bank::BankCode;
use crate::ports::StoreError;
use crate::rules::admission;

/// A message as the queue delivered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub message_id: String,
    pub receipt: String,
    pub body: String,
}

/// Waiting in place (tests advance their manual clock instead).
#[async_trait]
pub trait Sleep: Send + Sync {
    async fn sleep(&self, d: TimeDelta);
}

pub struct TokioSleep;

#[async_trait]
impl Sleep for TokioSleep {
    async fn sleep(&self, d: TimeDelta) {
        tokio::time::sleep(d.to_std().unwrap_or_default()).await;
    }
}

/// How long a message that met a store error (and the rest of its bank's batch, behind
/// it) stays hidden before it is tried again. Short, because while any of a bank's
/// messages is hidden, FIFO delivers none of that bank's others: left to the queue's
/// 6-minute visibility timeout, one transient error would stall the bank's whole lane
/// that long. A message that keeps failing costs a receive every 2 s until the
/// RedrivePolicy dead-letters it; the sweeper settles its leg at the deadline.
const AFTER_ERROR_PAUSE_SECS: i32 = 2;

pub struct SenderDeps {
    pub config: Arc<ServiceConfig>,
    pub fanout: Arc<Fanout>,
    pub gate: Arc<dyn Gate>,
    pub queue: Arc<dyn InquiryQueue>,
    pub clock: Arc<dyn Clock>,
    pub sleep: Arc<dyn Sleep>,
    /// The bank call's timeout (as the fan-out's client uses it).
    pub bank_timeout: TimeDelta,
    /// Sends the disputes queued with the inquiries (decision 157); without it a
    /// dispute message is dropped.
    pub disputes: Option<Arc<DisputeSender>>,
}

pub struct Sender {
    d: Arc<SenderDeps>,
}

/// One bank's sends under way: each a task of its own, so it reaches the bank as soon
/// as it is admitted (its rate permit counts from then), with the message it serves.
#[derive(Default)]
struct Running {
    tasks: JoinSet<Result<(), StoreError>>,
    messages: HashMap<Id, Received>,
}

impl Running {
    fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Waits for one send to end; the message to retry, if it failed.
    async fn next_failed(&mut self) -> Option<Option<Received>> {
        let ended = self.tasks.join_next_with_id().await?;
        let (id, result) = match ended {
            Ok((id, r)) => (id, r.map_err(|e| e.to_string())),
            // A send that panicked: its message comes back (claim_attempt keeps it
            // from being sent twice).
            Err(e) => (e.id(), Err(e.to_string())),
        };
        // Every task is spawned with its message: none is missing.
        let Some(message) = self.messages.remove(&id) else {
            return Some(None);
        };
        Some(result.err().map(|e| {
            error!(message_id = %message.message_id, error = %e, "inquiry not recorded; will retry");
            message
        }))
    }
}

/// What a message asks to send, once found still due.
#[derive(Clone)]
enum Work {
    Leg(PendingLeg),
    Dispute(Arc<DisputeSender>, crate::records::DisputeRecord),
}

/// Why a bank's remaining messages stop for this batch.
enum Stop {
    Pause(chrono::DateTime<chrono::Utc>, Hold),
    Error,
}

impl Sender {
    pub fn new(deps: SenderDeps) -> Self {
        Self { d: Arc::new(deps) }
    }

    pub fn policy(&self, bank: &BankCode) -> LanePolicy {
        LanePolicy {
            limits: self.d.config.bank_limits.of(bank),
            breaker: self.d.config.circuit_breaker,
            call_timeout: self.d.bank_timeout,
        }
    }

    /// Handles one batch; returns the ids of the messages to report as failures (the
    /// queue delivers them again).
    pub async fn handle(&self, batch: Vec<Received>) -> Vec<String> {
        let mut groups: BTreeMap<BankCode, Vec<(Received, QueueMessage)>> = BTreeMap::new();
        for m in batch {
            match QueueMessage::parse(&m.body) {
                Some(a) => groups.entry(a.bank().clone()).or_default().push((m, a)),
                // Not ours to retry: a malformed message would come back forever.
                None => {
                    warn!(message_id = %m.message_id, "inquiry message not understood; dropped")
                }
            }
        }
        let runs = groups.into_values().map(|g| self.bank_group(g));
        futures::future::join_all(runs)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// One bank's messages, in order.
    async fn bank_group(&self, messages: Vec<(Received, QueueMessage)>) -> Vec<String> {
        let mut failed = Vec::new();
        let mut running = Running::default();
        // Every leg message's records in two round trips for the group, not three reads
        // a message (decision 148).
        let wanted: Vec<_> = messages
            .iter()
            .filter_map(|(_, a)| match a {
                QueueMessage::Leg(a) => Some((a.query_id, a.bank.clone(), a.attempt)),
                QueueMessage::Dispute(_) => None,
            })
            .collect();
        let mut legs = self.d.fanout.pending_attempts(&wanted).await.into_iter();
        let mut rest = messages.into_iter();
        let mut stop = None;
        'messages: for (m, a) in rest.by_ref() {
            let current = match &a {
                // A message whose records were not read comes back; it is not dropped.
                QueueMessage::Leg(_) => legs
                    .next()
                    .unwrap_or_else(|| Err(StoreError::Unavailable("a leg was not read".into())))
                    .map(|c| c.map(Work::Leg)),
                // A dispute (decision 157): the same gate, its own send.
                QueueMessage::Dispute(d) => match &self.d.disputes {
                    Some(disputes) => disputes
                        .pending(d)
                        .await
                        .map(|c| c.map(|r| Work::Dispute(disputes.clone(), r))),
                    None => Ok(None),
                },
            };
            let current = match current {
                Ok(c) => c,
                Err(e) => {
                    error!(message_id = %m.message_id, error = %e, "inquiry not sent; will retry");
                    stop = Some((m, Stop::Error));
                    break;
                }
            };
            let Some(work) = current else {
                info!(message_id = %m.message_id, bank = %a.bank(), "inquiry no longer due; dropped");
                continue;
            };
            let lane = Lane::Bank(a.bank().clone());
            let policy = self.policy(a.bank());
            loop {
                let now = self.d.clock.now();
                let admission = match self.d.gate.admit(&lane, &policy, now).await {
                    Ok(x) => x,
                    Err(e) => {
                        error!(message_id = %m.message_id, error = %e, "admission failed; will retry");
                        stop = Some((m, Stop::Error));
                        break 'messages;
                    }
                };
                match admission {
                    Admission::Go(permit) => {
                        let d = self.d.clone();
                        let work = work.clone();
                        let task = running.tasks.spawn(async move {
                            let sent = match &work {
                                Work::Leg(p) => d.fanout.send_pending(p).await.map(|(_, h)| h),
                                Work::Dispute(disputes, r) => {
                                    disputes.send(r).await.map(|(_, h)| h)
                                }
                            };
                            let health = sent.as_ref().map_or(Health::Neutral, |h| *h);
                            let now = d.clock.now();
                            if let Err(e) = d.gate.finish(&permit, health, &policy, now).await {
                                // The slot's lease frees it; the send itself happened.
                                warn!(lane = %permit.lane, error = %e, "permit not returned");
                            }
                            sent.map(drop)
                        });
                        running.messages.insert(task.id(), m);
                        continue 'messages;
                    }
                    // One of our own sends ending frees a slot (or settles the probe):
                    // wait for that rather than for the lease.
                    Admission::Wait {
                        hold: Hold::InFlight | Hold::ProbeRunning,
                        ..
                    } if !running.is_empty() => {
                        if let Some(Some(m)) = running.next_failed().await {
                            failed.push(self.retry_soon(m).await);
                        }
                    }
                    Admission::Wait { until, hold }
                        if admission::wait_in_place(
                            admission::ask_again_at(until, hold, now),
                            now,
                        ) =>
                    {
                        let again = admission::ask_again_at(until, hold, now);
                        self.d.sleep.sleep(again - now).await;
                    }
                    Admission::Wait { until, hold } => {
                        stop = Some((m, Stop::Pause(until, hold)));
                        break 'messages;
                    }
                }
            }
        }
        if let Some((first, why)) = stop {
            let (secs, hold) = match why {
                Stop::Pause(until, hold) => {
                    (admission::pause_secs(until, self.d.clock.now()), Some(hold))
                }
                Stop::Error => (AFTER_ERROR_PAUSE_SECS, None),
            };
            let held: Vec<Received> = std::iter::once(first).chain(rest.map(|(m, _)| m)).collect();
            if let Some(hold) = hold {
                info!(
                    messages = held.len(),
                    hold = hold.code(),
                    pause_secs = secs,
                    "bank busy; inquiries paused"
                );
            }
            for m in held {
                failed.push(self.pause(m, secs).await);
            }
        }
        while let Some(ended) = running.next_failed().await {
            if let Some(m) = ended {
                failed.push(self.retry_soon(m).await);
            }
        }
        failed
    }

    /// Hides `m` for `secs`; its id, to report as failed (the queue brings it back then).
    async fn pause(&self, m: Received, secs: i32) -> String {
        if let Err(e) = self.d.queue.pause(&m.receipt, secs).await {
            // It comes back after the queue's visibility timeout instead.
            warn!(message_id = %m.message_id, error = %e, "pause not set");
        }
        m.message_id
    }

    /// A message whose send failed: back after [`AFTER_ERROR_PAUSE_SECS`].
    async fn retry_soon(&self, m: Received) -> String {
        self.pause(m, AFTER_ERROR_PAUSE_SECS).await
    }
}
