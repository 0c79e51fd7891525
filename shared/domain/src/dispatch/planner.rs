//! Planning: a query's legs due for a send become messages on the inquiry queue, one per
//! leg attempt, in the order of the query's banks. bank-fanout plans a new query (stream
//! INSERT); the sweeper plans the legs whose retry is due. Nothing is sent here: the
//! sender (`dispatch::sender`) takes each message through the bank's gate.
//!
//! Idempotent: planning again queues the same attempts, which the queue's
//! de-duplication id absorbs (and, past its window, the sender drops as no longer
//! current: `Fanout::pending_attempts`). Nothing here needs a bank's secret: the
//! functions that plan never hold one.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use super::queue::{InquiryQueue, LegAttempt};
use crate::clock::Clock;
use crate::model::bank::BankCode;
use crate::model::ids::QueryId;
use crate::ports::{QueryStore, StoreError};
use crate::records::{LegRecord, LegState, QueryPhase, QueryRecord};
use crate::rules::deadline;

pub struct Planner {
    pub store: Arc<dyn QueryStore>,
    pub queue: Arc<dyn InquiryQueue>,
    pub clock: Arc<dyn Clock>,
}

/// Whether legs of `q` may be sent at `now`.
pub fn collecting(q: &QueryRecord, now: DateTime<Utc>) -> bool {
    q.phase == QueryPhase::Collecting && deadline::collecting(q.collect_until, now)
}

/// Whether `l` is to be sent at `now` (never sent, or its retry is due).
pub fn due(l: &LegRecord, now: DateTime<Utc>) -> bool {
    l.state == LegState::Pending && l.next_attempt_at.is_none_or(|t| t <= now)
}

/// The query and its legs due for a send at `now`, in the order of the query's banks;
/// `None` when the query is unknown or no longer collecting.
pub async fn due_legs(
    store: &dyn QueryStore,
    id: &QueryId,
    now: DateTime<Utc>,
) -> Result<Option<(QueryRecord, Vec<LegRecord>)>, StoreError> {
    let Some(query) = store.query(id).await? else {
        warn!(query_id = %id, "dispatch of an unknown query");
        return Ok(None);
    };
    if !collecting(&query, now) {
        return Ok(None);
    }
    // The submission writes only the query; its legs are made here, before anything is
    // queued, so a failure part way leaves the stream's retry to finish them. A retry
    // (every leg made) pays no more than the read it needs anyway.
    let mut legs = store.legs(id).await?;
    if legs.len() < query.banks.len() {
        store.ensure_legs(&query).await?;
        legs = store.legs(id).await?;
    }
    legs.retain(|l| due(l, now));
    let position = |b: &BankCode| query.banks.iter().position(|q| q == b);
    legs.sort_by_key(|l| position(&l.bank));
    Ok(Some((query, legs)))
}

impl Planner {
    /// Queues the query's due legs; returns what was queued.
    pub async fn plan(&self, id: &QueryId) -> Result<Vec<LegAttempt>, StoreError> {
        let now = self.clock.now();
        let Some((_, due)) = due_legs(self.store.as_ref(), id, now).await? else {
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
