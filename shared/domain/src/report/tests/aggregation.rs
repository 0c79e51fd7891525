//! The aggregator: once every leg is settled (or the deadline passed), one sealed report,
//! the query closed and one SMS, however often the "ready" record is delivered.

use base64::Engine;

use super::*;
use crate::ports::{Metric, StoreError};
use crate::report::aggregate::{NOTICE_LEASE, REPORT_READY_SMS};
use crate::report::body::{NOTICES, PARTIAL_NOTICE};

#[tokio::test]
async fn settled_legs_publish_one_sealed_report_close_the_query_and_send_one_sms() {
    let w = world();
    let cards = vec![
        card(CardKind::Debit, "62221234"),
        card(CardKind::Credit, "62583456"),
    ];
    let q = w.icbc_answered("u1", cards).await;
    w.answer(&q, "CMB", vec![]).await;
    let before = w.store.state_of(&user("u1"));
    assert_eq!(before.active_query_id, Some(q));
    w.clock.advance(TimeDelta::seconds(3));
    let now = w.now();

    assert_eq!(
        w.aggregator.aggregate(&q).await.unwrap(),
        AggregateOutcome::Published
    );

    // Stored sealed: no card digits, bank names or field names in the clear.
    let stored = w.stored(&q).await.expect("a report is stored");
    assert_eq!(stored.user_id, user("u1"));
    let ct = base64::engine::general_purpose::STANDARD
        .decode(&stored.sealed.ciphertext)
        .unwrap();
    for needle in [
        &b"6222"[..],
        b"1234",
        b"3456",
        b"masked_number",
        "工商银行".as_bytes(),
        b"RESPONDED",
    ] {
        assert!(
            !ct.windows(needle.len()).any(|win| win == needle),
            "{}",
            String::from_utf8_lossy(needle)
        );
    }
    let item = serde_json::to_string(&stored).unwrap();
    for needle in [
        "6222 ****",
        "masked_number",
        "工商银行",
        "summary",
        "notices",
    ] {
        assert!(
            !item.contains(needle),
            "{needle} readable in the stored item"
        );
    }
    // ... and it opens with the private key to the report of these legs.
    let report = w.open(&stored).await;
    assert_eq!(report.query_id, q.to_string());
    assert_eq!(report.generated_at, now);
    assert_eq!(stored.generated_at, now);
    assert_eq!(stored.expires_at, now + TimeDelta::days(7));
    assert_eq!(report.expires_at, now + TimeDelta::days(7));
    assert_eq!(
        (
            report.summary.total_cards,
            report.summary.debit_cards,
            report.summary.credit_cards
        ),
        (2, 1, 1)
    );
    assert!(report
        .summary
        .banks
        .iter()
        .all(|b| b.status == BankStatus::Responded));
    let mut masked: Vec<&str> = report
        .cards
        .iter()
        .map(|c| c.masked_number.as_str())
        .collect();
    masked.sort();
    assert_eq!(masked, ["6222 **** **** 1234", "6258 **** **** 3456"]);
    assert_eq!(report.notices, NOTICES.map(str::to_owned).to_vec());

    // The query record.
    let rec = w.query(&q).await;
    assert_eq!(rec.phase, QueryPhase::Reported);
    assert_eq!(rec.report_generated_at, Some(now));
    assert_eq!(rec.report_expires_at, Some(now + TimeDelta::days(7)));
    assert!(rec.notified_at.is_some());
    // The user: lock released, next query 7 days after generation.
    let state = w.store.state_of(&user("u1"));
    assert_eq!(state.active_query_id, None);
    assert_eq!(state.next_allowed_at, Some(now + TimeDelta::days(7)));
    assert_eq!(state.version, before.version + 1);
    // The operators' latency metric, once, from submission to generation.
    assert_eq!(
        w.metrics.emitted(),
        [(Metric::SubmitToReportLatency(now - rec.submitted_at), now)]
    );
    // The raw bank answers are gone.
    for bank in ["ICBC", "CMB"] {
        let leg = w.leg(&q, bank).await;
        assert!(leg.cards.is_empty(), "{bank}");
        assert!(leg.answer_digest.is_none(), "{bank}");
        assert_eq!(leg.state, LegState::Answered);
    }
    // One SMS to the registered phone: Chinese, no link.
    let sent = w.sms.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0.e164(), PHONE);
    assert_eq!(sent[0].1, REPORT_READY_SMS);
    let text = &sent[0].1;
    assert!(text.contains("一键查卡") && text.contains("报告"), "{text}");
    for link in ["http", "://", "www.", ".com", ".cn"] {
        assert!(!text.to_lowercase().contains(link), "{text}");
    }
}

#[tokio::test]
async fn a_redelivered_ready_record_publishes_nothing_and_sends_nothing() {
    let w = world();
    let q = w.reported("u1").await;
    let stored = w.stored(&q).await.unwrap();
    let record = w.query(&q).await;
    let state = w.store.state_of(&user("u1"));
    assert_eq!(w.sms.sent().len(), 1);

    w.clock.advance(TimeDelta::minutes(10));
    assert_eq!(
        w.aggregator.aggregate(&q).await.unwrap(),
        AggregateOutcome::AlreadyReported
    );
    assert_eq!(
        w.aggregator.aggregate(&q).await.unwrap(),
        AggregateOutcome::AlreadyReported
    );

    assert_eq!(
        w.stored(&q).await.unwrap(),
        stored,
        "the report is not rebuilt"
    );
    assert_eq!(w.query(&q).await, record);
    assert_eq!(w.store.state_of(&user("u1")), state);
    assert_eq!(w.sms.sent().len(), 1);
    assert_eq!(w.sms.attempts.load(Ordering::SeqCst), 1);
    assert_eq!(
        w.metrics.emitted().len(),
        1,
        "measured once, when published"
    );

    // An unknown query.
    assert_eq!(
        w.aggregator.aggregate(&QueryId::generate()).await.unwrap(),
        AggregateOutcome::UnknownQuery
    );
}

#[tokio::test]
async fn an_open_leg_waits_until_the_deadline_then_reports_it_as_no_response() {
    let w = world();
    let q = w.submit("u1", &["ICBC", "CMB"]).await;
    w.answer(&q, "ICBC", vec![card(CardKind::Debit, "62221234")])
        .await;
    w.accept(&q, "CMB").await;
    let record = w.query(&q).await;
    let state = w.store.state_of(&user("u1"));
    let icbc = w.leg(&q, "ICBC").await;

    for at in [
        T0 + TimeDelta::seconds(1),
        T0 + TimeDelta::hours(23),
        record.report_due_by - TimeDelta::seconds(1),
    ] {
        w.clock.set(at);
        assert_eq!(
            w.aggregator.aggregate(&q).await.unwrap(),
            AggregateOutcome::NotReady,
            "{at}"
        );
    }
    // Nothing written.
    assert!(w.stored(&q).await.is_none());
    assert_eq!(w.query(&q).await, record);
    assert_eq!(w.store.state_of(&user("u1")), state);
    assert_eq!(
        w.leg(&q, "ICBC").await,
        icbc,
        "the answer is kept until the report holds it"
    );
    assert!(w.sms.sent().is_empty());

    w.clock.set(record.report_due_by);
    assert_eq!(
        w.aggregator.aggregate(&q).await.unwrap(),
        AggregateOutcome::Published
    );
    let report = w.open(&w.stored(&q).await.unwrap()).await;
    let status = bank_statuses(&report);
    assert_eq!(
        status,
        [
            ("ICBC", BankStatus::Responded),
            ("CMB", BankStatus::NoResponse)
        ]
    );
    assert_eq!(report.summary.total_cards, 1);
    assert_eq!(report.notices.last().unwrap(), PARTIAL_NOTICE);
    assert_eq!(report.generated_at, record.report_due_by);
    assert_eq!(
        w.store.state_of(&user("u1")).next_allowed_at,
        Some(record.report_due_by + TimeDelta::days(7))
    );
    assert_eq!(w.sms.sent().len(), 1);
}

/// The report says CMB did not respond; the query's per-bank progress should say the
/// same once the query is reported, not "PENDING" forever.
#[tokio::test]
async fn a_report_published_at_the_deadline_leaves_no_bank_pending() {
    let w = world();
    let q = w.submit("u1", &["ICBC", "CMB"]).await;
    w.answer(&q, "ICBC", vec![]).await;
    w.accept(&q, "CMB").await;
    w.clock.set(T0 + TimeDelta::hours(24));
    assert_eq!(
        w.aggregator.aggregate(&q).await.unwrap(),
        AggregateOutcome::Published
    );
    let report = w.open(&w.stored(&q).await.unwrap()).await;
    assert_eq!(report.summary.banks[1].status, BankStatus::NoResponse);

    let detail = w.view.detail(&user("u1"), &q.to_string()).await.unwrap();
    assert_eq!(detail.record.report_status, "READY");
    let progress: Vec<(&str, &str)> = detail
        .progress
        .iter()
        .map(|p| (p.bank_code.as_str(), p.status))
        .collect();
    assert_eq!(
        progress,
        [("ICBC", "RESPONDED"), ("CMB", "NO_RESPONSE")],
        "a reported query shows a bank as still pending (its leg was left {:?})",
        w.leg(&q, "CMB").await.state
    );
}

#[tokio::test]
async fn a_failed_sms_leaves_the_report_published_and_is_sent_once_after_the_lease() {
    let w = world();
    w.sms.fail(1);
    let q = w.submit("u1", &["ICBC"]).await;
    w.answer(&q, "ICBC", vec![card(CardKind::Debit, "62221234")])
        .await;
    let claimed_at = w.now();

    // Publishing stands; the error only tells the stream to deliver again.
    let result = w.aggregator.aggregate(&q).await;
    assert!(
        result.is_err(),
        "an unsent notice is reported as a failure: {result:?}"
    );
    assert!(w.stored(&q).await.is_some());
    let rec = w.query(&q).await;
    assert_eq!(rec.phase, QueryPhase::Reported);
    assert_eq!(rec.notified_at, None);
    assert_eq!(w.store.state_of(&user("u1")).active_query_id, None);
    assert!(w.sms.sent().is_empty());
    assert_eq!(w.sms.attempts.load(Ordering::SeqCst), 1);

    // Within the lease nothing is sent, not by notify nor by a redelivery.
    w.clock
        .set(claimed_at + NOTICE_LEASE - TimeDelta::seconds(1));
    assert!(!w.aggregator.notify(&q).await.unwrap());
    assert_eq!(
        w.aggregator.aggregate(&q).await.unwrap(),
        AggregateOutcome::AlreadyReported
    );
    assert_eq!(w.sms.attempts.load(Ordering::SeqCst), 1);

    // After the 2-minute lease: sent once.
    w.clock
        .set(claimed_at + TimeDelta::minutes(2) + TimeDelta::seconds(1));
    assert!(w.aggregator.notify(&q).await.unwrap());
    let sent = w.sms.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0.e164(), PHONE);
    assert_eq!(w.query(&q).await.notified_at, Some(w.now()));

    // Confirmed: never again.
    assert!(!w.aggregator.notify(&q).await.unwrap());
    w.clock.advance(TimeDelta::hours(1));
    assert!(!w.aggregator.notify(&q).await.unwrap());
    assert_eq!(
        w.aggregator.aggregate(&q).await.unwrap(),
        AggregateOutcome::AlreadyReported
    );
    assert_eq!(w.sms.sent().len(), 1);
    assert_eq!(w.sms.attempts.load(Ordering::SeqCst), 2);
}

/// Before fan-out has created a query's legs, the query is not ready and its banks show
/// as never sent; at the deadline every chosen bank is reported NO_RESPONSE.
#[tokio::test]
async fn a_query_whose_legs_were_never_made_waits_then_reports_every_bank_no_response() {
    let w = world();
    w.profile("u1", PHONE);
    let q = query_id_at(w.now());
    w.submit_record(&user("u1"), q, &["ICBC", "CMB"]).await;
    let detail = w.view.detail(&user("u1"), &q.to_string()).await.unwrap();
    let progress: Vec<(&str, &str)> = detail
        .progress
        .iter()
        .map(|p| (p.bank_code.as_str(), p.status))
        .collect();
    assert_eq!(progress, [("ICBC", "QUEUED"), ("CMB", "QUEUED")]);
    assert_eq!(
        w.aggregator.aggregate(&q).await.unwrap(),
        AggregateOutcome::NotReady
    );
    assert!(w.stored(&q).await.is_none());

    w.clock.set(T0 + TimeDelta::hours(24));
    assert_eq!(
        w.aggregator.aggregate(&q).await.unwrap(),
        AggregateOutcome::Published
    );
    let report = w.open(&w.stored(&q).await.unwrap()).await;
    assert_eq!(
        bank_statuses(&report),
        [
            ("ICBC", BankStatus::NoResponse),
            ("CMB", BankStatus::NoResponse)
        ]
    );
    assert_eq!(w.store.unsettled(&q), Some(0), "every bank counted once");
}

/// The report store of an instance that dies right after publishing: its notice step
/// never gets to claim the notice.
struct DiesAfterPublishing(Arc<crate::memory::MemoryStore>);

#[async_trait]
impl ReportStore for DiesAfterPublishing {
    async fn publish(&self, p: &Publication) -> Result<PublishOutcome, StoreError> {
        self.0.publish(p).await
    }
    async fn report(&self, id: &QueryId) -> Result<Option<StoredReport>, StoreError> {
        self.0.report(id).await
    }
    async fn claim_notice(
        &self,
        _id: &QueryId,
        _now: DateTime<Utc>,
        _lease: TimeDelta,
    ) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable("the instance is gone".into()))
    }
    async fn notice_sent(&self, id: &QueryId, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.0.notice_sent(id, at).await
    }
    async fn release_notice(
        &self,
        id: &QueryId,
        claimed_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.0.release_notice(id, claimed_at).await
    }
    async fn clear_answers(
        &self,
        id: &QueryId,
        banks: &[crate::model::bank::BankCode],
    ) -> Result<(), StoreError> {
        self.0.clear_answers(id, banks).await
    }
    async fn record_view(&self, id: &QueryId, view: &ReportView) -> Result<(), StoreError> {
        self.0.record_view(id, view).await
    }
    async fn user_queries(&self, user: &UserId) -> Result<Vec<QueryRecord>, StoreError> {
        self.0.user_queries(user).await
    }
    async fn expire(&self, id: &QueryId) -> Result<(), StoreError> {
        self.0.expire(id).await
    }
    async fn delete_report(&self, id: &QueryId, at: DateTime<Utc>) -> Result<bool, StoreError> {
        self.0.delete_report(id, at).await
    }
    async fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<DueWork>, StoreError> {
        self.0.due(now, limit).await
    }
}

#[tokio::test]
async fn raw_answers_outlive_a_death_after_publishing_only_until_the_notice_is_retried() {
    let w = world();
    let q = w
        .icbc_answered("u1", vec![card(CardKind::Debit, "62221234")])
        .await;
    w.answer(&q, "CMB", vec![]).await;
    let dying = Aggregator::new(AggregatorDeps {
        config: w.config.clone(),
        queries: w.store.clone(),
        reports: Arc::new(DiesAfterPublishing(w.store.clone())),
        users: w.store.clone(),
        profiles: w.store.clone(),
        sms: w.sms.clone(),
        sms_admission: Arc::new(sms_lane(1_000)),
        sealer: w.sealer.clone(),
        clock: w.clock.clone(),
        metrics: w.metrics.clone(),
    });
    assert!(dying.aggregate(&q).await.is_err());
    // Published, not announced: the banks' sealed answers are still on the legs.
    assert_eq!(w.query(&q).await.phase, QueryPhase::Reported);
    assert!(!w.leg(&q, "ICBC").await.cards.is_empty());
    assert!(w.leg(&q, "ICBC").await.answer_digest.is_some());
    assert!(w.sms.sent().is_empty());

    // The retry (a redelivered record, or the sweeper's NOTIFY entry) clears them first.
    assert_eq!(
        w.aggregator.aggregate(&q).await.unwrap(),
        AggregateOutcome::AlreadyReported
    );
    for bank in ["ICBC", "CMB"] {
        let leg = w.leg(&q, bank).await;
        assert!(leg.cards.is_empty(), "{bank}");
        assert!(leg.answer_digest.is_none(), "{bank}");
    }
    assert!(w.query(&q).await.notified_at.is_some());
    assert_eq!(w.sms.sent().len(), 1);
}
