//! "This card is not mine" (decision 157): one dispute per card after a fresh
//! DISPUTE_CARD step-up while the report is readable; refusals before any proof is
//! used up; sent to the bank through the queue and the gate, retried, acknowledged,
//! refused or given up; kept after the report is gone.

use futures::future::join_all;

use crate::ports::DisputeStore;
use crate::report::dispute::Disputed;
use crate::rules::dispute::{GIVE_UP_AFTER, SEND_LEASE};

use super::*;

const ICBC_REF: &str = "icbc-ref-a1";

impl World {
    /// u1's query to ICBC (two cards, both with the bank's refs) and CMB (one card
    /// without a ref), reported now. ICBC's cards in the report's order: ICBC-1 is the
    /// debit 6222…1234, ICBC-2 the credit 6258…3456.
    async fn reported_with_refs(&self, uid: &str) -> QueryId {
        let q = self.submit(uid, &["ICBC", "CMB"]).await;
        let with_ref = |kind, digits: &str, r: &str| AnsweredCard {
            card_ref: Some(crate::model::card::CardRef::parse(r).unwrap()),
            ..card(kind, digits)
        };
        self.answer(
            &q,
            "ICBC",
            vec![
                with_ref(CardKind::Credit, "62583456", "icbc-ref-b2"),
                with_ref(CardKind::Debit, "62221234", ICBC_REF),
            ],
        )
        .await;
        self.answer(&q, "CMB", vec![card(CardKind::Debit, "62251111")])
            .await;
        assert_eq!(
            self.aggregator.aggregate(&q).await.unwrap(),
            AggregateOutcome::Published
        );
        q
    }

    /// A passing DISPUTE_CARD face token for `uid`, issued now.
    fn dispute_face(&self, uid: &str, nonce: &str) -> StepUp {
        face_step(
            &self
                .face_provider(&self.face_private, FACE_AUDIENCE)
                .token(uid, "DISPUTE_CARD", "pass", self.now(), nonce)
                .unwrap(),
        )
    }

    async fn dispute(
        &self,
        uid: &str,
        q: &QueryId,
        card_id: &str,
        step: &StepUp,
    ) -> Result<Disputed, ServiceError> {
        self.view
            .dispute(&user(uid), &q.to_string(), card_id, same_proof(step))
            .await
    }

    async fn record(&self, q: &QueryId, card_id: &str) -> DisputeRecord {
        DisputeStore::dispute(self.store.as_ref(), q, card_id)
            .await
            .unwrap()
            .unwrap()
    }

    /// One sweep (queues the due disputes) and the queue pumped through the sender.
    async fn sweep_and_send(&self) {
        self.sweeper.run_once().await.unwrap();
        self.pump().await;
    }

    /// The dispute bodies the bank received.
    fn disputes_received(&self, bank: &str) -> Vec<Value> {
        self.banks
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(b, body)| b == bank && body.get("dispute_id").is_some())
            .map(|(_, body)| body.clone())
            .collect()
    }
}

#[tokio::test]
async fn a_card_is_disputed_sent_with_its_ref_and_acknowledged_with_the_banks_case() {
    let w = world_with(&[("ICBC", vec![Script::DisputeAck("ICBC-CASE-000017")])]);
    let q = w.reported_with_refs("u1").await;
    let report = w
        .view_report(&user("u1"), &q, &w.view_code_step("u1").await)
        .await
        .unwrap();
    let cards = report["cards"].as_array().unwrap();
    let ids: Vec<(&str, bool)> = cards
        .iter()
        .map(|c| {
            (
                c["card_id"].as_str().unwrap(),
                c["disputable"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(ids, [("ICBC-1", true), ("ICBC-2", true), ("CMB-1", false)]);
    assert_eq!(cards[0]["masked_number"], "6222 **** **** 1234");

    let created = w
        .dispute("u1", &q, "ICBC-1", &w.dispute_face("u1", "d-1"))
        .await
        .unwrap();
    let Disputed::Created(view) = created else {
        panic!("a first dispute is created: {created:?}")
    };
    assert_eq!(view.status, DisputeStatus::Sent);
    assert_eq!(
        (view.bank_code.as_str(), view.card.masked_number()),
        ("ICBC", "6222 **** **** 1234".into())
    );
    assert_eq!(
        (view.case_id.as_ref(), view.service_phone.as_ref()),
        (None, None)
    );
    // Nothing is sent before the sweeper queues it (the record is the outbox).
    assert!(w.queue.queued_disputes().is_empty());

    w.sweep_and_send().await;
    let sent = w.disputes_received("ICBC");
    assert_eq!(sent.len(), 1);
    let leg = w.leg(&q, "ICBC").await;
    assert_eq!(
        sent[0],
        json!({"query_id": q.to_string(), "inquiry_id": leg.inquiry_id, "card_ref": ICBC_REF, "dispute_id": view.dispute_id})
    );
    let listed = w.view.disputes(&user("u1"), &q.to_string()).await.unwrap();
    assert_eq!(listed.len(), 1);
    let d = &listed[0];
    assert_eq!(d.dispute_id, view.dispute_id);
    assert_eq!(d.status, DisputeStatus::Acknowledged);
    assert_eq!(d.case_id.as_deref(), Some("ICBC-CASE-000017"));
    let phone = &w.config.banks.get(&w.code("ICBC")).unwrap().service_phone;
    assert_eq!(d.service_phone.as_ref(), Some(phone));
    assert_eq!(d.acknowledged_at, Some(w.now()));
    // The bank's ref is not kept once the dispute is final; nor is it ever shown.
    assert_eq!(w.record(&q, "ICBC-1").await.card_ref, None);
    assert!(!serde_json::to_string(&listed).unwrap().contains("ref"));
    // Nothing more is due: a later sweep sends nothing.
    w.clock.advance(TimeDelta::hours(1));
    w.sweep_and_send().await;
    assert_eq!(w.disputes_received("ICBC").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_disputes_of_one_card_make_one_dispute_and_all_name_it() {
    let w = Arc::new(world());
    let q = w.reported_with_refs("u1").await;
    let tasks = (0..20).map(|i| {
        let w = w.clone();
        tokio::spawn(async move {
            let step = w.dispute_face("u1", &format!("race-{i}"));
            w.dispute("u1", &q, "ICBC-2", &step).await.unwrap()
        })
    });
    let answers: Vec<Disputed> = join_all(tasks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let created = answers
        .iter()
        .filter(|a| matches!(a, Disputed::Created(_)))
        .count();
    assert_eq!(created, 1, "{answers:?}");
    let id = &answers[0].view().dispute_id;
    assert!(answers.iter().all(|a| &a.view().dispute_id == id));
    let stored = DisputeStore::disputes(w.store.as_ref(), &q).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(&stored[0].dispute_id, id);
    // A later repeat gets the same one, not a new one.
    let again = w
        .dispute("u1", &q, "ICBC-2", &w.dispute_face("u1", "later"))
        .await
        .unwrap();
    assert_eq!(again, Disputed::Existing(answers[0].view().clone()));
}

/// The refusals, each before the proof is used up: the same proof then disputes.
#[tokio::test]
async fn refusals_come_before_the_step_up_and_change_nothing() {
    let w = world();
    let q = w.reported_with_refs("u1").await;
    let step = w.dispute_face("u1", "kept");
    let refused = |e: Result<Disputed, ServiceError>| e.unwrap_err();
    // Another user's query is not found; so is a query id that is not one.
    let theirs = w
        .view
        .dispute(
            &user("u2"),
            &q.to_string(),
            "ICBC-1",
            face_step(
                &w.face_provider(&w.face_private, FACE_AUDIENCE)
                    .token("u2", "DISPUTE_CARD", "pass", w.now(), "u2-n")
                    .unwrap(),
            ),
        )
        .await;
    assert!(matches!(refused(theirs), ServiceError::NotFound));
    assert!(matches!(
        refused(
            w.view
                .dispute(&user("u1"), "not-a-query", "ICBC-1", same_proof(&step))
                .await
        ),
        ServiceError::NotFound
    ));
    for missing in ["ICBC-3", "CCB-1", "ICBC-0", "nonsense"] {
        let e = refused(w.dispute("u1", &q, missing, &step).await);
        assert!(matches!(e, ServiceError::CardNotFound), "{missing}: {e:?}");
    }
    let e = refused(w.dispute("u1", &q, "CMB-1", &step).await);
    assert!(matches!(e, ServiceError::DisputeNotSupported), "{e:?}");
    // A proof for another purpose is no proof.
    let view_face = face_step(&w.face_token("u1", "view-purpose"));
    let e = refused(w.dispute("u1", &q, "ICBC-1", &view_face).await);
    assert!(matches!(e, ServiceError::FaceVerificationFailed), "{e:?}");
    let vid = w.sms_code("u1", Purpose::ViewReport, "135246").await;
    let e = refused(
        w.dispute("u1", &q, "ICBC-1", &code_step(&vid, "135246"))
            .await,
    );
    assert!(matches!(e, ServiceError::VerificationFailed), "{e:?}");
    assert!(DisputeStore::disputes(w.store.as_ref(), &q)
        .await
        .unwrap()
        .is_empty());
    // A DISPUTE_CARD code works like a face token.
    let vid = w.sms_code("u1", Purpose::DisputeCard, "864200").await;
    assert!(matches!(
        w.dispute("u1", &q, "ICBC-2", &code_step(&vid, "864200"))
            .await
            .unwrap(),
        Disputed::Created(_)
    ));
    // The proof given to every refusal above was never used up.
    assert!(matches!(
        w.dispute("u1", &q, "ICBC-1", &step).await.unwrap(),
        Disputed::Created(_)
    ));
    // And once used, it is no proof.
    let e = refused(w.dispute("u1", &q, "ICBC-1", &step).await);
    assert!(matches!(e, ServiceError::FaceVerificationFailed), "{e:?}");
}

#[tokio::test]
async fn a_report_not_ready_deleted_or_expired_cannot_be_disputed_but_its_disputes_stay() {
    let w = world();
    let pending = w.submit("u2", &["ICBC"]).await;
    let e = w
        .dispute("u2", &pending, "ICBC-1", &w.dispute_face("u2", "p"))
        .await
        .unwrap_err();
    assert!(matches!(e, ServiceError::ReportNotReady), "{e:?}");

    let q = w.reported_with_refs("u1").await;
    w.dispute("u1", &q, "ICBC-1", &w.dispute_face("u1", "first"))
        .await
        .unwrap();
    let vid = w.sms_code("u1", Purpose::DeleteReport, "975310").await;
    w.view
        .delete(&user("u1"), &q.to_string(), code_step(&vid, "975310"))
        .await
        .unwrap();
    let e = w
        .dispute("u1", &q, "ICBC-2", &w.dispute_face("u1", "after"))
        .await
        .unwrap_err();
    assert!(matches!(e, ServiceError::ReportDeleted { .. }), "{e:?}");
    let listed = w.view.disputes(&user("u1"), &q.to_string()).await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|d| d.card_id.as_str())
            .collect::<Vec<_>>(),
        ["ICBC-1"]
    );
    assert!(matches!(
        w.view
            .disputes(&user("u2"), &q.to_string())
            .await
            .unwrap_err(),
        ServiceError::NotFound
    ));

    // Expiry: a second report of u2's, disputed, then past its 7 days and swept.
    let (q2, expires) = w.reported_expiring("u2").await;
    let refs = w.reported_with_refs("u2").await;
    let _ = q2;
    w.dispute("u2", &refs, "ICBC-2", &w.dispute_face("u2", "e1"))
        .await
        .unwrap();
    w.clock.set(expires + TimeDelta::days(1));
    w.sweeper.run_once().await.unwrap();
    assert!(w.stored(&refs).await.is_none(), "expired and deleted");
    let e = w
        .dispute("u2", &refs, "ICBC-1", &w.dispute_face("u2", "e2"))
        .await
        .unwrap_err();
    assert!(matches!(e, ServiceError::ReportExpired { .. }), "{e:?}");
    let listed = w
        .view
        .disputes(&user("u2"), &refs.to_string())
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
}

/// The record is written first and nothing else: a view-report that stops right after
/// it loses nothing (the sweeper queues it); a sender that crashes after claiming a
/// send has it queued again once the send's lease ends.
#[tokio::test]
async fn a_crash_after_the_record_or_during_a_send_loses_nothing() {
    let w = world_with(&[("ICBC", vec![Script::DisputeAck("ICBC-CASE-1")])]);
    let q = w.reported_with_refs("u1").await;
    w.dispute("u1", &q, "ICBC-1", &w.dispute_face("u1", "c"))
        .await
        .unwrap();
    let stats = w.sweeper.run_once().await.unwrap();
    assert_eq!(stats.disputes, 1);
    let queued = w.queue.queued_disputes();
    assert_eq!((queued.len(), queued[0].attempt), (1, 1));
    // The sender claims the send and dies before the bank is called.
    assert!(w
        .store
        .claim_dispute_send(&q, "ICBC-1", 0, w.now() + SEND_LEASE)
        .await
        .unwrap());
    w.pump().await; // the queued message is now stale: dropped
    assert!(w.disputes_received("ICBC").is_empty());
    w.sweeper.run_once().await.unwrap();
    assert!(
        w.queue.queued_disputes().is_empty(),
        "not due while the lease runs"
    );
    w.clock.advance(SEND_LEASE);
    w.sweep_and_send().await;
    assert_eq!(w.disputes_received("ICBC").len(), 1);
    let r = w.record(&q, "ICBC-1").await;
    assert_eq!((r.status, r.attempts), (DisputeStatus::Acknowledged, 2));
}

#[tokio::test]
async fn a_bank_failing_with_5xx_is_sent_the_dispute_again_until_it_acknowledges() {
    let w = world_with(&[(
        "ICBC",
        vec![
            Script::Status(503),
            Script::Timeout,
            Script::DisputeAck("ICBC-CASE-9"),
        ],
    )]);
    let q = w.reported_with_refs("u1").await;
    w.dispute("u1", &q, "ICBC-2", &w.dispute_face("u1", "r"))
        .await
        .unwrap();
    w.sweep_and_send().await;
    let r = w.record(&q, "ICBC-2").await;
    assert_eq!((r.status, r.attempts), (DisputeStatus::Sent, 1));
    let retry_at = r.next_attempt_at.unwrap();
    assert!(retry_at > w.now() && retry_at <= w.now() + TimeDelta::seconds(2));
    // Not before it is due.
    w.sweep_and_send().await;
    assert_eq!(w.disputes_received("ICBC").len(), 1);
    for _ in 0..2 {
        w.clock.advance(TimeDelta::minutes(1));
        w.sweep_and_send().await;
    }
    let sent = w.disputes_received("ICBC");
    assert_eq!(sent.len(), 3);
    assert!(
        sent.iter().all(|d| d == &sent[0]),
        "the same dispute every time"
    );
    let r = w.record(&q, "ICBC-2").await;
    assert_eq!(r.status, DisputeStatus::Acknowledged);
    assert_eq!(r.case_id.as_deref(), Some("ICBC-CASE-9"));
}

#[tokio::test]
async fn a_bank_refusing_the_dispute_fails_it_for_good() {
    for status in [404, 400, 409] {
        let w = world_with(&[("ICBC", vec![Script::Status(status)])]);
        let q = w.reported_with_refs("u1").await;
        w.dispute("u1", &q, "ICBC-1", &w.dispute_face("u1", "f"))
            .await
            .unwrap();
        w.sweep_and_send().await;
        let r = w.record(&q, "ICBC-1").await;
        assert_eq!(r.status, DisputeStatus::Failed, "{status}");
        assert_eq!(r.failure.as_deref(), Some("DISPUTE_REFUSED"));
        assert_eq!((r.card_ref.as_ref(), r.next_attempt_at), (None, None));
        w.clock.advance(TimeDelta::hours(1));
        w.sweep_and_send().await;
        assert_eq!(
            w.disputes_received("ICBC").len(),
            1,
            "{status}: never again"
        );
        let listed = w.view.disputes(&user("u1"), &q.to_string()).await.unwrap();
        assert_eq!(
            (listed[0].status, listed[0].case_id.as_ref()),
            (DisputeStatus::Failed, None)
        );
    }
}

#[tokio::test]
async fn an_unacknowledged_dispute_fails_72_hours_after_it_was_made() {
    let w = world_with(&[("ICBC", vec![Script::Status(500)])]);
    let q = w.reported_with_refs("u1").await;
    w.dispute("u1", &q, "ICBC-1", &w.dispute_face("u1", "g"))
        .await
        .unwrap();
    let made = w.now();
    w.sweep_and_send().await;
    assert_eq!(w.record(&q, "ICBC-1").await.status, DisputeStatus::Sent);
    // Still sent again just before the give-up time...
    w.clock.set(made + GIVE_UP_AFTER - TimeDelta::minutes(20));
    w.sweep_and_send().await;
    assert_eq!(w.disputes_received("ICBC").len(), 2);
    let r = w.record(&q, "ICBC-1").await;
    assert_eq!(r.status, DisputeStatus::Sent);
    // ...and failed at it, without another call.
    w.clock.set(made + GIVE_UP_AFTER);
    w.sweep_and_send().await;
    let r = w.record(&q, "ICBC-1").await;
    assert_eq!(r.status, DisputeStatus::Failed);
    assert_eq!(r.failure.as_deref(), Some("GAVE_UP"));
    assert_eq!(w.disputes_received("ICBC").len(), 2);
}

#[tokio::test]
async fn a_badly_signed_acknowledgement_is_not_taken() {
    let w = world_with(&[(
        "ICBC",
        vec![Script::BadSignature, Script::DisputeAck("ICBC-CASE-2")],
    )]);
    let q = w.reported_with_refs("u1").await;
    w.dispute("u1", &q, "ICBC-1", &w.dispute_face("u1", "s"))
        .await
        .unwrap();
    w.sweep_and_send().await;
    let r = w.record(&q, "ICBC-1").await;
    assert_eq!((r.status, r.case_id.as_ref()), (DisputeStatus::Sent, None));
    w.clock.advance(TimeDelta::minutes(1));
    w.sweep_and_send().await;
    assert_eq!(
        w.record(&q, "ICBC-1").await.status,
        DisputeStatus::Acknowledged
    );
}
