//! `QueryStore`: a leg is sent once per attempt and settles once, whatever the
//! concurrency, counting down its query once; a bank nonce works once, and only a
//! settle that happens consumes it.

use chrono::TimeDelta;
use shared::model::ids::QueryId;
use shared::ports::{BankNonce, SettleOutcome, Settlement};
use shared::records::{DueWork, LegState};

use super::{at_once, bank, contract, submitted, Store, World, BANKS};

contract!(
    a_leg_settles_once_whatever_the_concurrency_and_a_bank_nonce_works_once,
    one_sender_gets_each_attempt_and_an_accepted_leg_still_settles,
    a_settle_of_no_leg_writes_nothing_and_keeps_its_nonce,
);

async fn a_leg_settles_once_whatever_the_concurrency_and_a_bank_nonce_works_once<S: Store>(
    w: &World<S>,
) {
    let store = &*w.store;
    let q = submitted(store, &w.user, w.now).await;
    let legs = store.legs(&q).await.unwrap();
    let now = w.now;
    let nonce = BankNonce {
        nonce: format!("bank-nonce-{}", ulid::Ulid::generate()),
        expires_at: now + TimeDelta::minutes(10),
    };
    let settlement = Settlement {
        state: LegState::Answered,
        failure: None,
        sealed: None,
        answer_digest: Some("digest".into()),
        at: now,
    };
    // The same signed message replayed 20 times at once: it settles the leg once.
    let bank = &legs[0].bank;
    let outcomes = at_once(20, |_| store.settle(&q, bank, &settlement, Some(&nonce))).await;
    let settled = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(SettleOutcome::Settled)))
        .count();
    let refused = outcomes
        .iter()
        .filter(|o| {
            matches!(
                o,
                Ok(SettleOutcome::NonceReused) | Ok(SettleOutcome::AlreadySettled(_))
            )
        })
        .count();
    assert_eq!((settled, refused), (1, 19), "{outcomes:?}");
    // 20 different messages (fresh nonces) for one other leg: one settles it.
    let other = &legs[1].bank;
    let nonces: Vec<BankNonce> = (0..20)
        .map(|i| BankNonce {
            nonce: format!("fresh-{i}-{}", ulid::Ulid::generate()),
            expires_at: now + TimeDelta::minutes(10),
        })
        .collect();
    let outcomes = at_once(20, |i| {
        store.settle(&q, other, &settlement, Some(&nonces[i]))
    })
    .await;
    let settled = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(SettleOutcome::Settled)))
        .count();
    assert_eq!(settled, 1, "{outcomes:?}");
    let after = store.legs(&q).await.unwrap();
    assert_eq!(after.iter().filter(|l| l.state.is_settled()).count(), 2);
    assert_eq!(
        w.unsettled(q).await,
        Some((legs.len() - 2) as u64),
        "each leg counted down once"
    );
    // A settled leg stays as it was settled.
    let again = Settlement {
        state: LegState::Failed,
        failure: Some("X".into()),
        sealed: None,
        answer_digest: None,
        at: now,
    };
    match store.settle(&q, bank, &again, None).await.unwrap() {
        SettleOutcome::AlreadySettled(leg) => {
            assert_eq!(leg.state, LegState::Answered);
            assert_eq!(leg.answer_digest.as_deref(), Some("digest"));
        }
        other => panic!("expected AlreadySettled, got {other:?}"),
    }
}

async fn one_sender_gets_each_attempt_and_an_accepted_leg_still_settles<S: Store>(w: &World<S>) {
    let store = &*w.store;
    let q = submitted(store, &w.user, w.now).await;
    let icbc = bank(BANKS[0]);
    let claims = at_once(20, |_| store.claim_attempt(&q, &icbc, 0, w.now)).await;
    assert_eq!(claims.iter().filter(|c| *c.as_ref().unwrap()).count(), 1);
    assert_eq!(store.leg(&q, &icbc).await.unwrap().unwrap().attempts, 1);
    // The attempt failed transiently: the retry falls due at its time, not before.
    let at = w.now + TimeDelta::seconds(30);
    store.schedule_retry(&q, &icbc, 1, at).await.unwrap();
    let retry = DueWork::Retry(q, icbc.clone());
    let due_before = store.due(at - TimeDelta::seconds(1), 100).await.unwrap();
    assert!(!due_before.contains(&retry), "{due_before:?}");
    let due = store.due(at, 100).await.unwrap();
    assert!(due.contains(&retry), "{due:?}");
    // The second attempt is accepted: no third one can be claimed, and the callback
    // settles it.
    assert!(store.claim_attempt(&q, &icbc, 1, at).await.unwrap());
    store.mark_accepted(&q, &icbc, 2).await.unwrap();
    let leg = store.leg(&q, &icbc).await.unwrap().unwrap();
    assert_eq!((leg.state, leg.attempts), (LegState::Accepted, 2));
    assert!(!store.claim_attempt(&q, &icbc, 2, at).await.unwrap());
    let settled = Settlement {
        state: LegState::Answered,
        failure: None,
        sealed: None,
        answer_digest: Some("d".into()),
        at,
    };
    assert_eq!(
        store.settle(&q, &icbc, &settled, None).await.unwrap(),
        SettleOutcome::Settled
    );
    let due = store.due(at, 100).await.unwrap();
    assert!(!due.contains(&retry), "a settled leg is no retry: {due:?}");
}

async fn a_settle_of_no_leg_writes_nothing_and_keeps_its_nonce<S: Store>(w: &World<S>) {
    let store = &*w.store;
    let q = submitted(store, &w.user, w.now).await;
    let nonce = BankNonce {
        nonce: format!("n-{}", ulid::Ulid::generate()),
        expires_at: w.now + TimeDelta::minutes(10),
    };
    let settlement = Settlement {
        state: LegState::Answered,
        failure: None,
        sealed: None,
        answer_digest: None,
        at: w.now,
    };
    // No such query: nothing written, nothing counted.
    let elsewhere = QueryId::generate();
    let icbc = bank(BANKS[0]);
    assert_eq!(
        store
            .settle(&elsewhere, &icbc, &settlement, Some(&nonce))
            .await
            .unwrap(),
        SettleOutcome::NoSuchLeg
    );
    // No such leg (a bank the query did not ask).
    assert_eq!(
        store
            .settle(&q, &bank("CCB"), &settlement, None)
            .await
            .unwrap(),
        SettleOutcome::NoSuchLeg
    );
    assert_eq!(w.unsettled(q).await, Some(BANKS.len() as u64));
    // The nonce was not consumed: the bank's real leg takes it.
    assert_eq!(
        store
            .settle(&q, &icbc, &settlement, Some(&nonce))
            .await
            .unwrap(),
        SettleOutcome::Settled
    );
}
