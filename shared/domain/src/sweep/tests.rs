//! The sweeper against its invocation deadline: slow banks must not starve expiry.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::TimeDelta;

use super::*;
use crate::clock::ManualClock;
use crate::dispatch::planner::Planner;
use crate::dispatch::queue::{InquiryQueue, LegAttempt, QueueError};
use crate::memory::RecordingMetrics;
use crate::memory::{sms_lane, MemoryQueue, MemorySms};
use crate::model::ids::QueryId;
use crate::ports::{QueryStore, Settlement};
use crate::records::{LegState, QueryPhase};
use crate::report::aggregate::{AggregateOutcome, AggregatorDeps};
use crate::report::crypto::{generate_keypair, ReportSealer};
use crate::test_support::{user, BankWorld, Script, PHONE};

/// Each enqueue takes `per_call` of the (manual) clock (a queue slow to answer) and
/// then queues.
struct SlowQueue {
    clock: Arc<ManualClock>,
    per_call: TimeDelta,
    inner: Arc<MemoryQueue>,
}

#[async_trait]
impl InquiryQueue for SlowQueue {
    async fn enqueue(&self, attempts: &[LegAttempt]) -> Result<(), QueueError> {
        self.clock.advance(self.per_call);
        self.inner.enqueue(attempts).await
    }

    async fn pause(&self, receipt: &str, secs: i32) -> Result<(), QueueError> {
        self.inner.pause(receipt, secs).await
    }
}

fn new_query_id() -> QueryId {
    QueryId::parse(&ulid::Ulid::generate().to_string()).unwrap()
}

#[tokio::test]
async fn expiry_is_done_first_retries_are_queued_not_sent_and_stop_before_the_deadline() {
    // Every retry answers 503 at first, so each query's leg is due for a retry.
    let w = BankWorld::new(&[
        ("ICBC", vec![Script::Status(503)]),
        ("CMB", vec![Script::Cards(&[])]),
    ]);
    let (_, report_public) = generate_keypair();
    let aggregator = Arc::new(Aggregator::new(AggregatorDeps {
        config: w.config.clone(),
        queries: w.store.clone(),
        reports: w.store.clone(),
        users: w.store.clone(),
        profiles: w.store.clone(),
        sms: Arc::new(MemorySms::default()),
        sms_admission: Arc::new(sms_lane(1_000)),
        sealer: Arc::new(ReportSealer::new("k1", &report_public).unwrap()),
        clock: w.clock.clone(),
        metrics: Arc::new(RecordingMetrics::default()),
    }));

    // u1's report, published now: it expires in 7 days.
    w.profile("u1", PHONE);
    let reported = new_query_id();
    w.submit_query(&user("u1"), reported, &["CMB"], |b| format!("inq-{b}"))
        .await;
    let answered = Settlement {
        state: LegState::Answered,
        failure: None,
        sealed: None,
        answer_digest: Some("d".into()),
        at: w.now(),
    };
    w.store
        .settle(&reported, &w.code("CMB"), &answered, None)
        .await
        .unwrap();
    assert_eq!(
        aggregator.aggregate(&reported).await.unwrap(),
        AggregateOutcome::Published
    );
    let expires = QueryStore::query(w.store.as_ref(), &reported)
        .await
        .unwrap()
        .unwrap()
        .report_expires_at
        .unwrap();

    // Shortly before, 20 queries whose bank failed once: their retries are due before
    // the expiry in the due index.
    w.clock.set(expires - TimeDelta::minutes(1));
    let mut retried = Vec::new();
    for i in 0..20 {
        let uid = format!("r{i}");
        w.profile(&uid, "+8613900139000");
        let q = new_query_id();
        w.submit_query(&user(&uid), q, &["ICBC"], |b| format!("inq-{b}-{i}"))
            .await;
        w.fanout.dispatch(&q).await.unwrap();
        assert!(w.leg(&q, "ICBC").await.next_attempt_at.is_some());
        retried.push(q);
    }

    // The sweep, with a queue that now takes 10 s a call, and 60 s left to the deadline.
    w.clock.set(expires + TimeDelta::seconds(1));
    let queue = Arc::new(MemoryQueue::new(w.clock.clone()));
    let sweeper = Sweeper {
        disputes: w.store.clone(),
        queries: w.store.clone(),
        reports: w.store.clone(),
        planner: Arc::new(Planner {
            store: w.store.clone(),
            clock: w.clock.clone(),
            queue: Arc::new(SlowQueue {
                clock: w.clock.clone(),
                per_call: TimeDelta::seconds(10),
                inner: queue.clone(),
            }),
        }),
        aggregator,
        clock: w.clock.clone(),
        config: w.config.clone(),
        gate: w.gate.clone(),
        metrics: Arc::new(RecordingMetrics::default()),
    };
    let calls = w.banks.total_calls();
    let deadline = w.now() + TimeDelta::seconds(60);
    let stats = sweeper.run_until(Some(deadline)).await.unwrap();

    // The expired report is gone in this run; the retries filled the time up to the
    // margin (40 s of 10 s calls) and the rest waits for the next run. No bank was
    // called: the retries are queued for the bank-inquiry function.
    assert_eq!(stats.expired, 1, "{stats:?}");
    assert!(ReportStore::report(w.store.as_ref(), &reported)
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        QueryStore::query(w.store.as_ref(), &reported)
            .await
            .unwrap()
            .unwrap()
            .phase,
        QueryPhase::Expired
    );
    assert_eq!((stats.retries, stats.deferred), (4, 16), "{stats:?}");
    assert_eq!(queue.queued().len(), 4);
    assert_eq!(w.banks.total_calls(), calls);
    assert!(
        w.now() <= deadline - MARGIN,
        "the last call ended at {}",
        w.now()
    );
    // Queuing takes nothing off the due index (the sender's claim does), so a queue
    // message lost would be queued again by the next run.
    for q in &retried {
        let leg = w.leg(q, "ICBC").await;
        assert_eq!(leg.attempts, 1);
        assert!(leg.next_attempt_at.is_some_and(|t| t <= w.now()));
    }
    let queued: std::collections::HashSet<QueryId> =
        queue.queued().iter().map(|a| a.query_id).collect();
    assert_eq!(queued.len(), 4);
    assert!(queued.iter().all(|q| retried.contains(q)));
}

#[test]
fn the_lambda_deadline_is_read_from_milliseconds_since_the_epoch() {
    let now = DateTime::from_timestamp_secs(1_795_000_000).unwrap();
    let at = now + TimeDelta::seconds(280) + TimeDelta::milliseconds(123);
    assert_eq!(lambda_deadline(1_795_000_280_123, now), Some(at));
    assert_eq!(lambda_deadline(0, now), None);
    assert_eq!(lambda_deadline(u64::MAX, now), None);
    // cargo lambda watch: the timeout, where Lambda gives an instant.
    assert_eq!(
        lambda_deadline(600_000, now),
        Some(now + TimeDelta::minutes(10))
    );
}
