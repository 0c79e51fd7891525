//! The sweeper against its invocation deadline: slow banks must not starve expiry.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use chrono::TimeDelta;

use super::*;
use crate::bank::signing::SignatureHeaders;
use crate::clock::ManualClock;
use crate::dispatch::client::{BankClient, BankReply, TransportError};
use crate::dispatch::fanout::FanoutDeps;
use crate::memory::RecordingMetrics;
use crate::memory::{MemorySms, MemorySmsAdmission};
use crate::model::ids::QueryId;
use crate::ports::{QueryStore, Settlement};
use crate::records::{LegState, QueryPhase};
use crate::report::aggregate::{AggregateOutcome, AggregatorDeps};
use crate::report::crypto::{generate_keypair, ReportSealer};
use crate::test_support::{user, BankWorld, Script, PHONE};

/// Each inquiry takes `per_call` of the (manual) clock and then times out.
struct SlowBank {
    clock: Arc<ManualClock>,
    per_call: TimeDelta,
}

#[async_trait]
impl BankClient for SlowBank {
    async fn post(
        &self,
        _url: &str,
        _headers: &SignatureHeaders,
        _body: Vec<u8>,
        _timeout: StdDuration,
    ) -> Result<BankReply, TransportError> {
        self.clock.advance(self.per_call);
        Err(TransportError::Timeout)
    }
}

fn new_query_id() -> QueryId {
    QueryId::parse(&ulid::Ulid::generate().to_string()).unwrap()
}

#[tokio::test]
async fn expiry_is_done_first_and_slow_retries_stop_before_the_deadline() {
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
        sms_admission: Arc::new(MemorySmsAdmission::new(u32::MAX)),
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

    // The sweep, with a bank that now takes 10 s a call, and 60 s left to the deadline.
    w.clock.set(expires + TimeDelta::seconds(1));
    let slow = Arc::new(Fanout::new(FanoutDeps {
        config: w.config.clone(),
        store: w.store.clone(),
        profiles: w.store.clone(),
        client: Arc::new(SlowBank {
            clock: w.clock.clone(),
            per_call: TimeDelta::seconds(10),
        }),
        secrets: w.secrets.clone(),
        clock: w.clock.clone(),
        callback_base: "https://api.example".into(),
        bank_timeout: StdDuration::from_secs(10),
        sealer: w.sealer.clone(),
    }));
    let sweeper = Sweeper {
        queries: w.store.clone(),
        reports: w.store.clone(),
        fanout: slow,
        aggregator,
        clock: w.clock.clone(),
    };
    let deadline = w.now() + TimeDelta::seconds(60);
    let stats = sweeper.run_until(Some(deadline)).await.unwrap();

    // The expired report is gone in this run; the retries filled the time up to the
    // margin (40 s of 10 s calls) and the rest waits for the next run.
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
    assert!(
        w.now() <= deadline - MARGIN,
        "the last call ended at {}",
        w.now()
    );
    let mut still_due = 0;
    for q in &retried {
        let leg = w.leg(q, "ICBC").await;
        if leg.attempts == 1 {
            still_due += 1;
            assert!(leg.next_attempt_at.is_some_and(|t| t <= w.now()));
        }
    }
    assert_eq!(still_due, 16);
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
