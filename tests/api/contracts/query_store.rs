//! `QueryStore`: a leg is sent once per attempt and settles once, whatever the
//! concurrency, counting down its query once; a bank nonce works once, and only a
//! settle that happens consumes it.

use chrono::TimeDelta;
use shared::model::ids::QueryId;
use shared::ports::{BankNonce, SettleOutcome, Settlement};
use shared::records::{DueWork, LegState};

use super::{at_once, bank, contract, many_banks, prepared_for, submitted, Store, World, BANKS};

contract!(
    legs_are_made_once_whatever_the_concurrency_and_a_made_leg_is_never_touched,
    two_hundred_legs_settling_at_once_count_their_query_down_exactly,
    a_leg_settles_once_whatever_the_concurrency_and_a_bank_nonce_works_once,
    one_sender_gets_each_attempt_and_an_accepted_leg_still_settles,
    a_settle_of_no_leg_writes_nothing_and_keeps_its_nonce,
    queries_and_legs_read_together_are_what_reading_them_one_by_one_gives,
);

/// Settled, already settled, nonce reused: how many of each.
fn tally<E>(outcomes: &[Result<SettleOutcome, E>]) -> (usize, usize, usize) {
    let count =
        |f: fn(&SettleOutcome) -> bool| outcomes.iter().filter(|o| o.as_ref().is_ok_and(f)).count();
    (
        count(|o| matches!(o, SettleOutcome::Settled)),
        count(|o| matches!(o, SettleOutcome::AlreadySettled(_))),
        count(|o| matches!(o, SettleOutcome::NonceReused)),
    )
}

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
    let (settled, already, reused) = tally(&outcomes);
    assert_eq!((settled, already + reused), (1, 19), "{outcomes:?}");
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
    assert_eq!(tally(&outcomes).0, 1, "{outcomes:?}");
    // 20 settles without a nonce (fan-out's answer, the deadline) for a third leg.
    let third = &legs[2].bank;
    let outcomes = at_once(20, |_| store.settle(&q, third, &settlement, None)).await;
    assert_eq!(tally(&outcomes), (1, 19, 0), "{outcomes:?}");
    let after = store.legs(&q).await.unwrap();
    assert_eq!(after.iter().filter(|l| l.state.is_settled()).count(), 3);
    assert_eq!(
        w.unsettled(q).await,
        Some((legs.len() - 3) as u64),
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

/// A query to 500 banks: the submission wrote no leg; 20 makers at once, after one that
/// stopped part way, create each missing leg once and leave the made ones as they were.
async fn legs_are_made_once_whatever_the_concurrency_and_a_made_leg_is_never_touched<S: Store>(
    w: &World<S>,
) {
    let store = &*w.store;
    let banks = many_banks(500);
    let sub = prepared_for(store, &w.user, w.now, &banks).await;
    store.submit(&sub).await.unwrap();
    let q = sub.query.query_id;
    assert!(store.legs(&q).await.unwrap().is_empty());
    assert_eq!(w.unsettled(q).await, Some(500));

    // A maker that stopped after 30 legs; two of them moved on since.
    let mut first = sub.query.clone();
    first.banks.truncate(30);
    assert_eq!(store.ensure_legs(&first).await.unwrap(), 30);
    let made = store.legs(&q).await.unwrap();
    let answered = Settlement {
        state: LegState::Answered,
        failure: None,
        sealed: None,
        answer_digest: Some("d".into()),
        at: w.now,
    };
    assert_eq!(
        store.settle(&q, &banks[0], &answered, None).await.unwrap(),
        SettleOutcome::Settled
    );
    assert!(store.claim_attempt(&q, &banks[1], 0, w.now).await.unwrap());

    let created = at_once(20, |_| store.ensure_legs(&sub.query)).await;
    let created: usize = created.into_iter().map(Result::unwrap).sum();
    assert_eq!(created, 470, "each missing leg made once");
    let legs = store.legs(&q).await.unwrap();
    assert_eq!(legs.len(), 500);
    for bank in &banks {
        assert_eq!(legs.iter().filter(|l| &l.bank == bank).count(), 1, "{bank}");
    }
    for leg in &made {
        let now = legs.iter().find(|l| l.bank == leg.bank).unwrap();
        assert_eq!(now.inquiry_id, leg.inquiry_id, "{}", leg.bank);
    }
    let of = |b| legs.iter().find(|l| &l.bank == b).unwrap();
    assert_eq!(
        of(&banks[0]).state,
        LegState::Answered,
        "a settled leg stays settled"
    );
    assert_eq!(of(&banks[1]).attempts, 1, "a sent leg keeps its attempt");
    assert!(legs[2..].iter().all(|l| l.bank == banks[0]
        || l.bank == banks[1]
        || (l.state == LegState::Pending && l.attempts == 0)));
    assert_eq!(
        w.unsettled(q).await,
        Some(499),
        "making legs counts nothing"
    );
    assert_eq!(store.ensure_legs(&sub.query).await.unwrap(), 0);
}

/// 200 banks answering at once (fan-out's replies and callbacks arrive together): every
/// settle succeeds, the query is counted down to zero exactly, and a second wave of the
/// same settles changes nothing.
async fn two_hundred_legs_settling_at_once_count_their_query_down_exactly<S: Store>(w: &World<S>) {
    let store = &*w.store;
    let banks = many_banks(200);
    let sub = prepared_for(store, &w.user, w.now, &banks).await;
    store.submit(&sub).await.unwrap();
    store.ensure_legs(&sub.query).await.unwrap();
    let q = sub.query.query_id;
    let settlement = |i: usize| Settlement {
        state: if i.is_multiple_of(3) {
            LegState::Failed
        } else {
            LegState::Answered
        },
        failure: i.is_multiple_of(3).then(|| "BANK_ERROR".to_owned()),
        sealed: None,
        answer_digest: Some(format!("d-{i}")),
        at: w.now,
    };
    let outcomes = at_once(200, |i| {
        let st = settlement(i);
        let bank = &banks[i];
        async move { store.settle(&q, bank, &st, None).await }
    })
    .await;
    for (i, o) in outcomes.iter().enumerate() {
        assert!(
            matches!(o, Ok(SettleOutcome::Settled)),
            "{}: {o:?}",
            banks[i]
        );
    }
    assert_eq!(w.unsettled(q).await, Some(0));
    let legs = store.legs(&q).await.unwrap();
    assert_eq!(legs.len(), 200);
    assert!(legs.iter().all(|l| l.state.is_settled()));

    let again = at_once(200, |i| {
        let st = settlement(i);
        let bank = &banks[i];
        async move { store.settle(&q, bank, &st, None).await }
    })
    .await;
    assert!(
        again
            .iter()
            .all(|o| matches!(o, Ok(SettleOutcome::AlreadySettled(_)))),
        "{again:?}"
    );
    assert_eq!(w.unsettled(q).await, Some(0), "counted once each");
}

/// `query_legs` (the sender's one read for a batch, decision 148): past one
/// `BatchGetItem`'s 100 keys, with a repeated key, a leg that does not exist and a query
/// that does not, each entry is what `query` and `leg` read one by one, in order.
async fn queries_and_legs_read_together_are_what_reading_them_one_by_one_gives<S: Store>(
    w: &World<S>,
) {
    let store = &*w.store;
    let banks = many_banks(120);
    let sub = prepared_for(store, &w.user, w.now, &banks).await;
    store.submit(&sub).await.unwrap();
    store.ensure_legs(&sub.query).await.unwrap();
    let q = sub.query.query_id;
    let settled = Settlement {
        state: LegState::Answered,
        failure: None,
        sealed: None,
        answer_digest: Some("d".into()),
        at: w.now,
    };
    store.settle(&q, &banks[7], &settled, None).await.unwrap();
    let mut keys: Vec<(QueryId, shared::model::bank::BankCode)> =
        banks.iter().map(|b| (q, b.clone())).collect();
    keys.push((q, banks[7].clone()));
    keys.push((q, bank("NOLEG")));
    keys.push((QueryId::generate(), banks[0].clone()));
    let together = store.query_legs(&keys).await;
    assert_eq!(together.len(), keys.len());
    for ((id, b), read) in keys.iter().zip(&together) {
        let alone = (
            store.query(id).await.unwrap(),
            store.leg(id, b).await.unwrap(),
        );
        assert_eq!(read.as_ref().unwrap(), &alone, "{id} {b}");
    }
    let state = |i: usize| together[i].as_ref().unwrap().1.as_ref().map(|l| l.state);
    assert_eq!(state(7), Some(LegState::Answered));
    assert_eq!(state(120), Some(LegState::Answered), "the repeated key");
    assert_eq!(state(0), Some(LegState::Pending));
    let no_leg = together[121].as_ref().unwrap();
    assert!(no_leg.0.is_some() && no_leg.1.is_none());
    assert_eq!(together[122].as_ref().unwrap(), &(None, None));
    assert!(store.query_legs(&[]).await.is_empty());
}
