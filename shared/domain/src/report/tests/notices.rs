//! "Report ready" notices when the SMS channel cannot take them: throttled by SNS or over
//! the channel's shared rate, a notice stays due and goes out exactly once later.

use super::*;
use crate::report::aggregate::REPORT_READY_SMS;
use crate::rules::admission;
use crate::sweep::SweepStats;

const USERS: usize = 20;

fn phone_of(i: usize) -> String {
    format!("+8613700137{i:03}")
}

/// `USERS` users, each with a query whose one bank has answered (ready to report).
async fn ready_queries(w: &World) -> Vec<QueryId> {
    let mut out = Vec::new();
    for i in 0..USERS {
        let uid = format!("n{i}");
        w.profile(&uid, &phone_of(i));
        let q = w.submit(&uid, &["ICBC"]).await;
        w.answer(&q, "ICBC", vec![]).await;
        out.push(q);
    }
    out
}

/// How many "report ready" SMS reached each of the users' phones.
fn notices_per_phone(w: &World) -> Vec<usize> {
    let sent = w.sms.sent();
    (0..USERS)
        .map(|i| {
            sent.iter()
                .filter(|(to, text)| to.e164() == phone_of(i) && text == REPORT_READY_SMS)
                .count()
        })
        .collect()
}

/// Every query's aggregation, and two more notice attempts each (the sweeper's path),
/// all at once.
async fn notify_all_at_once(w: &World, queries: &[QueryId]) {
    let barrier = Arc::new(tokio::sync::Barrier::new(queries.len() * 3));
    let mut tasks = Vec::new();
    for q in queries {
        for kind in 0..3 {
            let (agg, barrier, q) = (w.aggregator.clone(), barrier.clone(), *q);
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                if kind == 0 {
                    agg.aggregate(&q).await.map(drop)
                } else {
                    agg.notify(&q).await.map(drop)
                }
            }));
        }
    }
    for t in tasks {
        t.await
            .unwrap()
            .expect("a notice the channel refuses is not an error");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn notices_throttled_at_once_all_go_out_once_when_it_clears() {
    let w = world();
    let queries = ready_queries(&w).await;
    w.sms.throttle(true);
    notify_all_at_once(&w, &queries).await;

    assert!(w.sms.sent().is_empty());
    assert!(
        w.sms.inner.throttled_sends() >= USERS,
        "every notice was tried"
    );
    let due = w.store.due(w.now(), 100).await.unwrap();
    for q in &queries {
        let query = w.query(q).await;
        assert_eq!(
            query.phase,
            QueryPhase::Reported,
            "the report is out regardless"
        );
        assert_eq!(query.notified_at, None);
        assert!(due.contains(&DueWork::Notify(*q)), "the notice stays due");
    }

    // Still throttled: the sweeper tries, sends nothing, keeps them due.
    assert_eq!(w.sweeper.run_once().await.unwrap(), SweepStats::default());
    assert!(w.sms.sent().is_empty());

    // Cleared: the very next sweeps (no lease to wait out) send each one once, even two
    // at a time.
    w.sms.throttle(false);
    let (a, b) = tokio::join!(w.sweeper.run_once(), w.sweeper.run_once());
    assert_eq!(a.unwrap().notified + b.unwrap().notified, USERS);
    assert_eq!(notices_per_phone(&w), vec![1; USERS]);
    for q in &queries {
        assert!(w.query(q).await.notified_at.is_some());
    }
    w.clock.advance(TimeDelta::minutes(10));
    assert_eq!(w.sweeper.run_once().await.unwrap(), SweepStats::default());
    for q in &queries {
        assert_eq!(
            w.aggregator.aggregate(q).await.unwrap(),
            AggregateOutcome::AlreadyReported
        );
    }
    assert_eq!(notices_per_phone(&w), vec![1; USERS]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn notices_over_the_channel_rate_wait_their_turn_and_go_out_once() {
    let w = world_on_channel(&[], 5);
    let queries = ready_queries(&w).await;
    notify_all_at_once(&w, &queries).await;
    // One permit period of the channel (the gate's, `rules::admission`): five.
    assert_eq!(w.sms.sent().len(), 5);

    // The same period: the sweeper gets nothing through.
    assert_eq!(w.sweeper.run_once().await.unwrap().notified, 0);
    assert_eq!(w.sms.sent().len(), 5);

    // Each further period five more, until all are out.
    for period in 1..=3 {
        w.clock.advance(admission::RATE_PERMIT_HOLD);
        let stats = w.sweeper.run_once().await.unwrap();
        assert_eq!(stats.notified, 5, "period {period}");
    }
    assert_eq!(notices_per_phone(&w), vec![1; USERS]);
    w.clock.advance(admission::RATE_PERMIT_HOLD);
    assert_eq!(w.sweeper.run_once().await.unwrap(), SweepStats::default());
    assert_eq!(w.sms.sent().len(), USERS);
}
