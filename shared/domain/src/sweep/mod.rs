//! The scheduled safety net (every 5 minutes in AWS, every few seconds locally), driven
//! by the sparse `due` index, never a scan. It drives fan-out (`dispatch`) and
//! aggregation (`report`), so it sits beside them rather than inside either:
//! - queries past their 24-hour deadline: the report is built from whoever answered
//!   (silent banks NO_RESPONSE);
//! - legs due for a retry are queued again (the bank-inquiry function sends them
//!   through the bank's gate);
//! - reports past their 7 days are deleted (the record stays, EXPIRED);
//! - reports whose SMS notice is not confirmed are notified;
//! - disputes due to be sent (new, or again after a failed send) are queued for the
//!   bank-inquiry function (decision 157).
//!
//! Within one run the work goes most pressing first: expiry (a local delete, and the
//! privacy promise), then notices and deadlines, and retries last. The run stops taking
//! items once the invocation's deadline is near; what is left stays due. Each run also
//! counts the banks whose circuit is open (the operator metric `OpenCircuits`).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tracing::{error, info};

use crate::clock::Clock;
use crate::config::ServiceConfig;
use crate::dispatch::gate::{Gate, Lane};
use crate::dispatch::planner::Planner;
use crate::dispatch::queue::DisputeSend;
use crate::model::ids::QueryId;
use crate::ports::{DisputeStore, Metric, Metrics, QueryStore, ReportStore, StoreError};
use crate::records::{DisputeStatus, DueWork};
use crate::report::aggregate::Aggregator;

/// Entries of each kind taken per run (the next run takes the rest).
pub const BATCH: usize = 200;
/// Time kept back before the deadline: one item's writes (a report publication, an SMS)
/// with room to spare.
pub const MARGIN: chrono::TimeDelta = chrono::TimeDelta::seconds(20);

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepStats {
    pub deadlines: usize,
    pub retries: usize,
    pub expired: usize,
    pub notified: usize,
    /// Dispute sends queued.
    pub disputes: usize,
    pub errors: usize,
    /// Left for the next run: the time budget ran out.
    pub deferred: usize,
}

pub struct Sweeper {
    pub queries: Arc<dyn QueryStore>,
    pub reports: Arc<dyn ReportStore>,
    pub planner: Arc<Planner>,
    pub aggregator: Arc<Aggregator>,
    pub clock: Arc<dyn Clock>,
    pub config: Arc<ServiceConfig>,
    pub gate: Arc<dyn Gate>,
    pub metrics: Arc<dyn Metrics>,
    pub disputes: Arc<dyn DisputeStore>,
}

impl Sweeper {
    /// One run without a deadline (tests, tools).
    pub async fn run_once(&self) -> Result<SweepStats, StoreError> {
        self.run_until(None).await
    }

    /// One run that takes no new item from [`MARGIN`] before `deadline` on (the Lambda
    /// invocation's deadline), measured on the injected clock: what is left stays due
    /// for the next run.
    pub async fn run_until(
        &self,
        deadline: Option<DateTime<Utc>>,
    ) -> Result<SweepStats, StoreError> {
        let stop_at = deadline.and_then(|d| d.checked_sub_signed(MARGIN));
        let now = self.clock.now();
        let mut work = self.reports.due(now, BATCH).await?;
        work.sort_by_key(order);
        let mut stats = SweepStats::default();
        // Retries of one query are queued together.
        let mut dispatched: Vec<QueryId> = Vec::new();
        for item in work {
            if stop_at.is_some_and(|t| self.clock.now() >= t) {
                stats.deferred += 1;
                continue;
            }
            let result = match &item {
                DueWork::Deadline(q) => self.deadline(q).await.map(|_| stats.deadlines += 1),
                DueWork::Retry(q, _) if dispatched.contains(q) => Ok(()),
                DueWork::Retry(q, _) => {
                    dispatched.push(*q);
                    self.planner
                        .plan(q)
                        .await
                        .map(|queued| stats.retries += queued.len())
                }
                DueWork::Expiry(q) => self.reports.expire(q).await.map(|_| stats.expired += 1),
                DueWork::Notify(q) => self
                    .aggregator
                    .notify(q)
                    .await
                    .map(|sent| stats.notified += usize::from(sent)),
                DueWork::Dispute(q, card_id) => self
                    .queue_dispute(q, card_id)
                    .await
                    .map(|queued| stats.disputes += usize::from(queued)),
            };
            if let Err(e) = result {
                stats.errors += 1;
                error!(work = ?item, error = %e, "sweep item failed; it stays due");
            }
        }
        self.count_open_circuits().await;
        if stats != SweepStats::default() {
            info!(?stats, "sweep done");
        }
        Ok(stats)
    }

    /// The operator metric; a failed read skips this run's value (the next run has one).
    async fn count_open_circuits(&self) {
        let lanes: Vec<Lane> = self
            .config
            .banks
            .all()
            .iter()
            .map(|b| Lane::Bank(b.code.clone()))
            .collect();
        match self.gate.open_circuits(&lanes).await {
            Ok(open) => {
                if !open.is_empty() {
                    let names: Vec<String> = open.iter().map(Lane::key).collect();
                    info!(lanes = %names.join(","), "circuits open");
                }
                let n = u32::try_from(open.len()).unwrap_or(u32::MAX);
                self.metrics.emit(Metric::OpenCircuits(n), self.clock.now());
            }
            Err(e) => error!(error = %e, "open circuits not counted"),
        }
    }

    /// Queues the dispute's next send if it is still due (the record is the outbox: a
    /// dispute written and never queued is queued here).
    async fn queue_dispute(&self, q: &QueryId, card_id: &str) -> Result<bool, StoreError> {
        let Some(r) = self.disputes.dispute(q, card_id).await? else {
            return Ok(false);
        };
        let now = self.clock.now();
        if r.status != DisputeStatus::Sent || r.next_attempt_at.is_none_or(|t| t > now) {
            return Ok(false);
        }
        let send = DisputeSend {
            dispute_id: r.dispute_id,
            query_id: r.query_id,
            card_id: r.card_id,
            bank: r.bank,
            attempt: r.attempts + 1,
        };
        self.planner.queue.enqueue_disputes(&[send]).await?;
        Ok(true)
    }

    /// Closes a query at its deadline from whatever answered: the aggregator settles the
    /// silent banks NO_RESPONSE and publishes.
    async fn deadline(&self, id: &QueryId) -> Result<(), StoreError> {
        self.aggregator.aggregate(id).await.map(drop)
    }
}

/// Position of a kind of work in a run (stable sort: due order within a kind).
fn order(item: &DueWork) -> u8 {
    match item {
        DueWork::Expiry(_) => 0,
        DueWork::Notify(_) => 1,
        DueWork::Deadline(_) => 2,
        DueWork::Retry(..) => 3,
        DueWork::Dispute(..) => 4,
    }
}

/// The invocation's deadline from the Lambda context's `deadline` (milliseconds since the
/// epoch), read at `now`, the start of the invocation. 0: none given. A value that is not
/// after `now` cannot be Lambda's (it would have ended the invocation): the local
/// emulator, `cargo lambda watch` 1.9, passes the function's timeout there (600000), so
/// such a value is read as the time left.
pub fn lambda_deadline(deadline_ms: u64, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let ms = chrono::TimeDelta::try_milliseconds(i64::try_from(deadline_ms).ok()?)?;
    if ms.is_zero() {
        return None;
    }
    match DateTime::UNIX_EPOCH.checked_add_signed(ms) {
        Some(at) if at > now => Some(at),
        _ => now.checked_add_signed(ms),
    }
}

#[cfg(test)]
mod tests;
