//! `DisputeStore` (decision 157): one dispute per card whatever the number of parallel
//! requests; a send claimed once per attempt; its end written once; due while still to
//! be sent; kept after the report is deleted or expired.

use chrono::TimeDelta;
use shared::model::card::{CardKind, CardRef, FourDigits, MaskedCard};
use shared::model::ids::QueryId;
use shared::ports::DisputeCreated;
use shared::records::{DisputeEnd, DisputeRecord, DisputeStatus, DueWork};

use super::report_store::publication;
use super::{at_once, bank, contract, submitted, Store, World};

contract!(
    twenty_parallel_disputes_of_one_card_write_one,
    a_send_is_claimed_once_per_attempt_and_ends_once,
    disputes_outlive_the_deleted_or_expired_report,
);

fn record<S>(w: &World<S>, q: QueryId, card_id: &str, n: usize) -> DisputeRecord {
    DisputeRecord {
        dispute_id: ulid::Ulid::generate().to_string(),
        query_id: q,
        user_id: w.user.clone(),
        card_id: card_id.to_owned(),
        bank: bank("ICBC"),
        inquiry_id: format!("inq-{n}"),
        card: MaskedCard {
            kind: CardKind::Debit,
            first4: FourDigits::parse("6222").unwrap(),
            last4: FourDigits::parse("1234").unwrap(),
        },
        card_ref: Some(CardRef::parse("icbc-ref-a1").unwrap()),
        status: DisputeStatus::Sent,
        created_at: w.now,
        attempts: 0,
        next_attempt_at: Some(w.now),
        case_id: None,
        acknowledged_at: None,
        failure: None,
        failed_at: None,
    }
}

async fn twenty_parallel_disputes_of_one_card_write_one<S: Store>(w: &World<S>) {
    let store = &*w.store;
    let q = submitted(store, &w.user, w.now).await;
    assert!(store.disputes(&q).await.unwrap().is_empty());
    let records: Vec<DisputeRecord> = (0..20).map(|i| record(w, q, "ICBC-1", i)).collect();
    let outcomes = at_once(20, |i| store.create_dispute(&records[i])).await;
    let created: Vec<usize> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| matches!(o, Ok(DisputeCreated::Created)))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(created.len(), 1, "{outcomes:?}");
    let winner = &records[created[0]];
    for o in outcomes {
        match o.unwrap() {
            DisputeCreated::Created => {}
            DisputeCreated::Exists(r) => assert_eq!(&*r, winner),
        }
    }
    assert_eq!(store.disputes(&q).await.unwrap(), vec![winner.clone()]);
    assert_eq!(
        store.dispute(&q, "ICBC-1").await.unwrap().as_ref(),
        Some(winner)
    );
    // Another card of the same report has a dispute of its own.
    let other = record(w, q, "ICBC-2", 99);
    assert_eq!(
        store.create_dispute(&other).await.unwrap(),
        DisputeCreated::Created
    );
    let ids: Vec<String> = store
        .disputes(&q)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.card_id)
        .collect();
    assert_eq!(ids, ["ICBC-1", "ICBC-2"]);
    let due = store.due(w.now, 100).await.unwrap();
    assert!(
        due.contains(&DueWork::Dispute(q, "ICBC-1".into())),
        "{due:?}"
    );
    assert!(!store
        .due(w.now - TimeDelta::seconds(1), 100)
        .await
        .unwrap()
        .contains(&DueWork::Dispute(q, "ICBC-1".into())));
}

async fn a_send_is_claimed_once_per_attempt_and_ends_once<S: Store>(w: &World<S>) {
    let store = &*w.store;
    let q = submitted(store, &w.user, w.now).await;
    let r = record(w, q, "ICBC-1", 0);
    store.create_dispute(&r).await.unwrap();
    let lease = w.now + TimeDelta::minutes(2);
    let claims = at_once(20, |_| store.claim_dispute_send(&q, "ICBC-1", 0, lease)).await;
    assert_eq!(claims.iter().filter(|c| *c.as_ref().unwrap()).count(), 1);
    let stored = store.dispute(&q, "ICBC-1").await.unwrap().unwrap();
    assert_eq!((stored.attempts, stored.next_attempt_at), (1, Some(lease)));
    // Not due while the send's lease runs; due again after it.
    let key = DueWork::Dispute(q, "ICBC-1".into());
    assert!(!store.due(w.now, 100).await.unwrap().contains(&key));
    assert!(store.due(lease, 100).await.unwrap().contains(&key));
    // Only the current attempt can end.
    let retry_at = w.now + TimeDelta::seconds(4);
    let retry = DisputeEnd::Retry { at: retry_at };
    assert!(!store
        .end_dispute_send(&q, "ICBC-1", 2, &retry)
        .await
        .unwrap());
    assert!(store
        .end_dispute_send(&q, "ICBC-1", 1, &retry)
        .await
        .unwrap());
    assert!(store.due(retry_at, 100).await.unwrap().contains(&key));
    assert!(store
        .claim_dispute_send(&q, "ICBC-1", 1, lease)
        .await
        .unwrap());
    let ack = DisputeEnd::Acknowledged {
        case_id: "ICBC-CASE-000017".into(),
        at: w.now + TimeDelta::seconds(5),
    };
    let ends = at_once(10, |_| store.end_dispute_send(&q, "ICBC-1", 2, &ack)).await;
    assert_eq!(ends.iter().filter(|e| *e.as_ref().unwrap()).count(), 1);
    let done = store.dispute(&q, "ICBC-1").await.unwrap().unwrap();
    assert_eq!(
        done,
        r.ended(&DisputeEnd::Retry { at: retry_at })
            .ended(&ack)
            .with_attempts(2)
    );
    assert_eq!(
        done.card_ref, None,
        "the ref goes once the dispute is final"
    );
    assert_eq!(done.next_attempt_at, None);
    assert!(!store
        .due(lease + TimeDelta::days(1), 100)
        .await
        .unwrap()
        .contains(&key));
    // Final: no claim, no other end.
    assert!(!store
        .claim_dispute_send(&q, "ICBC-1", 2, lease)
        .await
        .unwrap());
    let fail = DisputeEnd::Failed {
        failure: "GAVE_UP".into(),
        at: w.now,
    };
    assert!(!store
        .end_dispute_send(&q, "ICBC-1", 2, &fail)
        .await
        .unwrap());
    // A refused one fails for good, also without its ref.
    let r2 = record(w, q, "ICBC-2", 1);
    store.create_dispute(&r2).await.unwrap();
    assert!(store
        .claim_dispute_send(&q, "ICBC-2", 0, lease)
        .await
        .unwrap());
    assert!(store
        .end_dispute_send(&q, "ICBC-2", 1, &fail)
        .await
        .unwrap());
    let failed = store.dispute(&q, "ICBC-2").await.unwrap().unwrap();
    assert_eq!(
        (
            failed.status,
            failed.failure.as_deref(),
            failed.card_ref.as_ref()
        ),
        (DisputeStatus::Failed, Some("GAVE_UP"), None)
    );
}

async fn disputes_outlive_the_deleted_or_expired_report<S: Store>(w: &World<S>) {
    let store = &*w.store;
    let deleted = submitted(store, &w.user, w.now).await;
    store
        .publish(&publication(w, deleted, w.now).await)
        .await
        .unwrap();
    let r = record(w, deleted, "ICBC-1", 0);
    store.create_dispute(&r).await.unwrap();
    assert!(store.delete_report(&deleted, w.now).await.unwrap());
    assert_eq!(store.disputes(&deleted).await.unwrap(), vec![r]);

    let expired = submitted(store, &w.user, w.now).await;
    store
        .publish(&publication(w, expired, w.now).await)
        .await
        .unwrap();
    let r = record(w, expired, "CMB-2", 0);
    store.create_dispute(&r).await.unwrap();
    store.expire(&expired).await.unwrap();
    assert_eq!(store.disputes(&expired).await.unwrap(), vec![r]);
}

trait WithAttempts {
    fn with_attempts(self, n: u32) -> Self;
}

impl WithAttempts for DisputeRecord {
    fn with_attempts(mut self, n: u32) -> Self {
        self.attempts = n;
        self
    }
}
