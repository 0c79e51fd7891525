//! The sweeper: deadlines, retries, expiry and failed notices, each done once.

use super::*;
use crate::dispatch::fanout::LegOutcome;
use crate::report::aggregate::REPORT_READY_SMS;
use crate::sweep::SweepStats;

#[tokio::test]
async fn the_sweeper_closes_a_query_at_its_deadline_from_whatever_answered() {
    let w = world_with(&[
        ("ICBC", vec![Script::Cards(&[("DEBIT", "62221234")])]),
        ("CMB", vec![Script::Accept]),
    ]);
    let q = w.submit("u1", &["ICBC", "CMB"]).await;
    let out = w.fanout.dispatch(&q).await.unwrap();
    assert!(
        out.contains(&(w.code("CMB"), LegOutcome::Accepted)),
        "{out:?}"
    );
    assert_eq!(w.leg(&q, "CMB").await.state, LegState::Accepted);

    // Before the deadline: nothing due.
    w.clock.set(T0 + TimeDelta::hours(23));
    assert_eq!(w.sweeper.run_once().await.unwrap(), SweepStats::default());
    assert!(w.stored(&q).await.is_none());

    w.clock
        .set(T0 + TimeDelta::hours(24) + TimeDelta::minutes(3));
    let stats = w.sweeper.run_once().await.unwrap();
    assert_eq!(
        stats,
        SweepStats {
            deadlines: 1,
            ..SweepStats::default()
        }
    );
    let cmb = w.leg(&q, "CMB").await;
    assert_eq!(cmb.state, LegState::NoResponse);
    assert_eq!(cmb.settled_at, Some(w.now()));
    assert_eq!(w.leg(&q, "ICBC").await.state, LegState::Answered);
    let rec = w.query(&q).await;
    assert_eq!(rec.phase, QueryPhase::Reported);
    let report = w.open(&w.stored(&q).await.unwrap()).await;
    let status = bank_statuses(&report);
    assert_eq!(
        status,
        [
            ("ICBC", BankStatus::Responded),
            ("CMB", BankStatus::NoResponse)
        ]
    );
    assert_eq!(report.cards.len(), 1);
    assert_eq!(w.sms.sent().len(), 1);
    let d = w.view.detail(&user("u1"), &q.to_string()).await.unwrap();
    assert_eq!(d.progress[1].status, "NO_RESPONSE");

    // Again: nothing new.
    w.clock.advance(TimeDelta::minutes(5));
    assert_eq!(w.sweeper.run_once().await.unwrap(), SweepStats::default());
    assert_eq!(w.sms.sent().len(), 1);
}

#[tokio::test]
async fn the_sweeper_resends_a_leg_due_for_retry() {
    let w = world_with(&[
        (
            "ICBC",
            vec![Script::Status(503), Script::Cards(&[("DEBIT", "62221234")])],
        ),
        ("CMB", vec![Script::Cards(&[])]),
    ]);
    let q = w.submit("u1", &["ICBC", "CMB"]).await;
    let out = w.fanout.dispatch(&q).await.unwrap();
    let retry_at = out
        .iter()
        .find_map(|(b, o)| match o {
            LegOutcome::RetryAt(at) if b.as_str() == "ICBC" => Some(*at),
            _ => None,
        })
        .expect("ICBC is to be retried");
    assert_eq!(w.leg(&q, "CMB").await.state, LegState::Answered);
    assert_eq!(w.banks.total_calls(), 2);

    // Not yet due.
    w.clock.set(retry_at - TimeDelta::milliseconds(1));
    assert_eq!(w.sweeper.run_once().await.unwrap(), SweepStats::default());
    assert_eq!(w.banks.calls_to("ICBC"), 1);

    w.clock.set(retry_at);
    let stats = w.sweeper.run_once().await.unwrap();
    assert_eq!(
        stats,
        SweepStats {
            retries: 1,
            ..SweepStats::default()
        }
    );
    // The sweep queued the retry; the bank-inquiry function sends it.
    assert_eq!(w.banks.calls_to("ICBC"), 1);
    assert_eq!(w.queue.queued().len(), 1);
    w.pump().await;
    assert_eq!(w.banks.calls_to("ICBC"), 2);
    let icbc = w.leg(&q, "ICBC").await;
    assert_eq!((icbc.state, icbc.attempts), (LegState::Answered, 2));
    assert_eq!(
        w.leg_cards(&q, "ICBC").await,
        [card(CardKind::Debit, "62221234")]
    );

    // Again: nothing is sent.
    assert_eq!(w.sweeper.run_once().await.unwrap(), SweepStats::default());
    assert_eq!(w.banks.total_calls(), 3);

    // The "ready" record then brings the report.
    assert_eq!(
        w.aggregator.aggregate(&q).await.unwrap(),
        AggregateOutcome::Published
    );
    let report = w.open(&w.stored(&q).await.unwrap()).await;
    assert_eq!(report.cards[0].masked_number, "6222 **** **** 1234");
    assert!(report
        .summary
        .banks
        .iter()
        .all(|b| b.status == BankStatus::Responded));
}

#[tokio::test]
async fn the_sweeper_deletes_expired_reports_and_keeps_the_record() {
    let w = world();
    let u1 = user("u1");
    let (q, expires) = w.reported_expiring("u1").await;

    w.clock.set(expires - TimeDelta::seconds(1));
    assert_eq!(w.sweeper.run_once().await.unwrap(), SweepStats::default());
    assert!(w.stored(&q).await.is_some());

    w.clock.set(expires + TimeDelta::minutes(2));
    let stats = w.sweeper.run_once().await.unwrap();
    assert_eq!(
        stats,
        SweepStats {
            expired: 1,
            ..SweepStats::default()
        }
    );
    assert!(w.stored(&q).await.is_none(), "the report is gone");
    let rec = w.query(&q).await;
    assert_eq!(rec.phase, QueryPhase::Expired);
    assert_eq!(rec.report_expires_at, Some(expires));
    let list = w.view.list(&u1).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0].status, list[0].report_status),
        ("READY", "EXPIRED")
    );
    assert_eq!(
        w.view
            .detail(&u1, &q.to_string())
            .await
            .unwrap()
            .record
            .report_status,
        "EXPIRED"
    );

    // Again: nothing; a redelivered "ready" record brings nothing back.
    assert_eq!(w.sweeper.run_once().await.unwrap(), SweepStats::default());
    assert_eq!(
        w.aggregator.aggregate(&q).await.unwrap(),
        AggregateOutcome::AlreadyReported
    );
    assert!(w.stored(&q).await.is_none());
    assert_eq!(w.sms.sent().len(), 1);
}

#[tokio::test]
async fn the_sweeper_sends_a_notice_that_failed() {
    let w = world();
    w.sms.fail(1);
    let q = w.submit("u1", &["ICBC"]).await;
    w.answer(&q, "ICBC", vec![]).await;
    assert!(w.aggregator.aggregate(&q).await.is_err());
    assert!(w.query(&q).await.notified_at.is_none());

    // Within the lease of the failed attempt: the entry is due but nothing is sent.
    w.clock.advance(TimeDelta::minutes(1));
    let stats = w.sweeper.run_once().await.unwrap();
    assert_eq!(stats, SweepStats::default());
    assert!(w.sms.sent().is_empty());

    w.clock.advance(TimeDelta::minutes(2));
    let stats = w.sweeper.run_once().await.unwrap();
    assert_eq!(
        stats,
        SweepStats {
            notified: 1,
            ..SweepStats::default()
        }
    );
    let sent = w.sms.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (sent[0].0.e164(), sent[0].1.as_str()),
        (PHONE, REPORT_READY_SMS)
    );
    assert_eq!(w.query(&q).await.notified_at, Some(w.now()));

    w.clock.advance(TimeDelta::minutes(5));
    assert_eq!(w.sweeper.run_once().await.unwrap(), SweepStats::default());
    assert_eq!(w.sms.sent().len(), 1);
}

#[tokio::test]
async fn one_sweep_does_all_kinds_of_work_and_a_second_does_nothing() {
    let w = world_with(&[(
        "BOC",
        vec![
            Script::Status(503),
            Script::Cards(&[("CREDIT", "43671111")]),
        ],
    )]);
    // A report that expires first.
    let old = w.reported("u2").await;
    // A query whose notice failed.
    w.clock.advance(TimeDelta::days(6) + TimeDelta::hours(23));
    w.sms.fail(1);
    let failed_notice = w.submit("u1", &["ICBC"]).await;
    w.answer(&failed_notice, "ICBC", vec![]).await;
    assert!(w.aggregator.aggregate(&failed_notice).await.is_err());
    assert!(w.stored(&failed_notice).await.is_some());
    assert!(w.query(&failed_notice).await.notified_at.is_none());
    // A query whose deadline passes with a bank silent (not u1's: u1 holds a report).
    w.profile("u3", "+8613700137000");
    let late = w.submit("u3", &["ICBC", "CMB"]).await;
    w.answer(&late, "ICBC", vec![]).await;
    w.accept(&late, "CMB").await;
    // A leg to be retried.
    w.profile("u4", "+8613600136000");
    let w_clock_now = w.now();
    let retried = w.submit("u4", &["BOC"]).await;
    w.fanout.dispatch(&retried).await.unwrap();
    let retry_at = w.leg(&retried, "BOC").await.next_attempt_at.unwrap();
    assert!(retry_at < w_clock_now + TimeDelta::minutes(1));

    // 24 hours later everything is due.
    w.clock
        .set(w_clock_now + TimeDelta::hours(24) - TimeDelta::seconds(30));
    // Deadline of `late` not yet: only expiry, retry and notice.
    let stats = w.sweeper.run_once().await.unwrap();
    assert_eq!(
        stats,
        SweepStats {
            retries: 1,
            expired: 1,
            notified: 1,
            ..SweepStats::default()
        }
    );
    w.pump().await;
    // Its last answer makes `retried` ready: the stream runs the aggregator.
    assert_eq!(
        w.aggregator.aggregate(&retried).await.unwrap(),
        AggregateOutcome::Published
    );
    w.clock.set(w_clock_now + TimeDelta::hours(24));
    let stats = w.sweeper.run_once().await.unwrap();
    assert_eq!(
        stats,
        SweepStats {
            deadlines: 1,
            ..SweepStats::default()
        }
    );

    assert!(w.stored(&old).await.is_none());
    assert_eq!(w.query(&old).await.phase, QueryPhase::Expired);
    assert!(w.query(&failed_notice).await.notified_at.is_some());
    assert_eq!(w.leg(&retried, "BOC").await.state, LegState::Answered);
    assert_eq!(w.query(&late).await.phase, QueryPhase::Reported);
    assert_eq!(w.leg(&late, "CMB").await.state, LegState::NoResponse);
    // u2's, u1's (by the sweep), u4's, u3's: each once.
    let phones: Vec<String> = w
        .sms
        .sent()
        .iter()
        .map(|(p, _)| p.e164().to_owned())
        .collect();
    assert_eq!(
        phones,
        ["+8613900139000", PHONE, "+8613600136000", "+8613700137000"]
    );

    let calls = w.banks.total_calls();
    assert_eq!(w.sweeper.run_once().await.unwrap(), SweepStats::default());
    assert_eq!(w.sms.sent().len(), 4);
    assert_eq!(w.banks.total_calls(), calls);
}
