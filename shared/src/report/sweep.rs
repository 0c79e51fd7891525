//! The scheduled safety net (every 5 minutes in AWS, every few seconds locally), driven
//! by the sparse `due` index, never a scan:
//! - queries past their 24-hour deadline: the report is built from whoever answered
//!   (silent banks NO_RESPONSE);
//! - legs due for a retry are sent again;
//! - reports past their 7 days are deleted (the record stays, EXPIRED);
//! - reports whose SMS notice is not confirmed are notified.

use std::sync::Arc;

use tracing::{error, info};

use super::aggregate::Aggregator;
use crate::clock::Clock;
use crate::dispatch::fanout::Fanout;
use crate::model::ids::QueryId;
use crate::ports::{QueryStore, ReportStore, StoreError};
use crate::records::DueWork;

/// Entries of each kind taken per run (the next run takes the rest).
pub const BATCH: usize = 200;
/// Time kept back from the budget: one bank call (10 s timeout) plus its writes.
const MARGIN: std::time::Duration = std::time::Duration::from_secs(20);

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepStats {
    pub deadlines: usize,
    pub retries: usize,
    pub expired: usize,
    pub notified: usize,
    pub errors: usize,
    /// Left for the next run: the time budget ran out.
    pub deferred: usize,
}

pub struct Sweeper {
    pub queries: Arc<dyn QueryStore>,
    pub reports: Arc<dyn ReportStore>,
    pub fanout: Arc<Fanout>,
    pub aggregator: Arc<Aggregator>,
    pub clock: Arc<dyn Clock>,
}

impl Sweeper {
    pub async fn run_once(&self) -> Result<SweepStats, StoreError> {
        self.run_within(None).await
    }

    /// Stops taking new items once `budget` is nearly spent (the Lambda's remaining time):
    /// what is left stays due for the next run.
    pub async fn run_within(
        &self,
        budget: Option<std::time::Duration>,
    ) -> Result<SweepStats, StoreError> {
        let stop_at = budget.map(|b| std::time::Instant::now() + b.saturating_sub(MARGIN));
        let now = self.clock.now();
        let work = self.reports.due(now, BATCH).await?;
        let mut stats = SweepStats::default();
        // Retries of one query go out in one dispatch.
        let mut dispatched: Vec<QueryId> = Vec::new();
        for item in work {
            if stop_at.is_some_and(|t| std::time::Instant::now() >= t) {
                stats.deferred += 1;
                continue;
            }
            let result = match &item {
                DueWork::Deadline(q) => self.deadline(q).await.map(|_| stats.deadlines += 1),
                DueWork::Retry(q, _) if dispatched.contains(q) => Ok(()),
                DueWork::Retry(q, _) => {
                    dispatched.push(*q);
                    self.fanout.dispatch(q).await.map(|_| stats.retries += 1)
                }
                DueWork::Expiry(q) => self.reports.expire(q).await.map(|_| stats.expired += 1),
                DueWork::Notify(q) => self
                    .aggregator
                    .notify(q)
                    .await
                    .map(|sent| stats.notified += usize::from(sent)),
            };
            if let Err(e) = result {
                stats.errors += 1;
                error!(work = ?item, error = %e, "sweep item failed; it stays due");
            }
        }
        if stats != SweepStats::default() {
            info!(?stats, "sweep done");
        }
        Ok(stats)
    }

    /// Closes a query at its deadline from whatever answered: the aggregator settles the
    /// silent banks NO_RESPONSE and publishes.
    async fn deadline(&self, id: &QueryId) -> Result<(), StoreError> {
        self.aggregator.aggregate(id).await.map(drop)
    }
}
