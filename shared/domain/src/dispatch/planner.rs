//! Planning: a query's legs due for a send become messages on the inquiry queue, one per
//! leg attempt, in the order of the query's banks. bank-fanout plans a new query (stream
//! INSERT); the sweeper plans the legs whose retry is due. Nothing is sent here: the
//! sender (`dispatch::sender`) takes each message through the bank's gate.
//!
//! Idempotent: planning again queues the same attempts, which the queue's
//! de-duplication id absorbs (and, past its window, the sender drops as no longer
//! current: `Fanout::pending_attempt`).

use std::sync::Arc;

use tracing::info;

use super::fanout::Fanout;
use super::queue::{InquiryQueue, LegAttempt};
use crate::model::ids::QueryId;
use crate::ports::StoreError;

pub struct Planner {
    pub fanout: Arc<Fanout>,
    pub queue: Arc<dyn InquiryQueue>,
}

impl Planner {
    /// Queues the query's due legs; returns what was queued.
    pub async fn plan(&self, id: &QueryId) -> Result<Vec<LegAttempt>, StoreError> {
        let Some((_, due)) = self.fanout.due_legs(id).await? else {
            return Ok(Vec::new());
        };
        let attempts: Vec<LegAttempt> = due
            .iter()
            .map(|l| LegAttempt {
                query_id: *id,
                bank: l.bank.clone(),
                attempt: l.attempts + 1,
            })
            .collect();
        if !attempts.is_empty() {
            self.queue.enqueue(&attempts).await?;
            info!(query_id = %id, legs = attempts.len(), "inquiries queued");
        }
        Ok(attempts)
    }
}
