//! `SubmissionStore`: the atomic primitives every limit rests on, each hit by a burst of
//! parallel callers, the user state's version check, and the submission's
//! all-or-nothing write.

use chrono::TimeDelta;
use shared::model::ids::QueryId;
use shared::model::purpose::Purpose;
use shared::ports::{PasswordPolicy, StoreError, SubmitError};
use shared::records::{
    IdempotencyClaim, IdempotencyRecord, PasswordSlot, SubmitConflict, UserState,
};

use super::{at_once, contract, prepared, verification, Store, World};

const BURST: usize = 50;

contract!(
    the_limit_primitives_hold,
    user_state_writes_are_conditional_on_the_version,
    a_submission_writes_everything_or_nothing,
);

/// The atomic primitives every limit rests on, each hit by a burst of parallel callers.
async fn the_limit_primitives_hold<S: Store>(w: &World<S>) {
    let (store, user, now) = (&*w.store, &w.user, w.now);
    // Code attempts: of 50 parallel reservations, exactly 5 get one.
    let v = verification(user, now);
    store.put_verification(&v).await.unwrap();
    let got = at_once(BURST, |_| {
        store.reserve_code_attempt(user, &v.verification_id, Purpose::SubmitQuery, now, 5)
    })
    .await;
    let granted: Vec<u32> = got
        .into_iter()
        .filter_map(|r| r.unwrap().map(|rec| rec.attempts))
        .collect();
    assert_eq!(
        granted.len(),
        5,
        "code attempts granted to {BURST} parallel callers"
    );
    let mut counts = granted.clone();
    counts.sort();
    assert_eq!(counts, vec![1, 2, 3, 4, 5], "each grant saw its own count");
    let stored = store
        .verification(user, &v.verification_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.attempts, 5,
        "attempts after {BURST} parallel reservations"
    );
    // A matched fifth comparison may still use the code, once.
    let used = at_once(20, |_| {
        store.consume_verification(user, &v.verification_id, 5)
    })
    .await;
    assert_eq!(used.into_iter().filter(|r| *r.as_ref().unwrap()).count(), 1);
    // Wrong purpose or expired: nothing counted.
    let w = verification(user, now);
    store.put_verification(&w).await.unwrap();
    let none = store
        .reserve_code_attempt(user, &w.verification_id, Purpose::ViewReport, now, 5)
        .await
        .unwrap();
    assert!(none.is_none());
    let late = store
        .reserve_code_attempt(
            user,
            &w.verification_id,
            Purpose::SubmitQuery,
            w.expires_at,
            5,
        )
        .await
        .unwrap();
    assert!(late.is_none());
    let w_now = store
        .verification(user, &w.verification_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(w_now.attempts, 0, "refused reservations count nothing");

    // Password slots: 4 ordinary, 1 last (which locks), everyone else locked.
    let policy = PasswordPolicy {
        max_failures: 5,
        lock: TimeDelta::hours(24),
    };
    let holders: Vec<String> = (0..BURST).map(|i| format!("holder-{i}")).collect();
    let slots = at_once(BURST, |i| {
        store.reserve_password_slot(user, &holders[i], now, &policy)
    })
    .await;
    let slots: Vec<PasswordSlot> = slots.into_iter().map(|r| r.unwrap().0).collect();
    let ordinary = slots
        .iter()
        .filter(|s| **s == PasswordSlot::Ordinary)
        .count();
    assert!(
        slots.iter().all(|s| matches!(
            s,
            PasswordSlot::Ordinary | PasswordSlot::Last | PasswordSlot::Busy
        )),
        "{slots:?}"
    );
    let last: Vec<usize> = (0..BURST)
        .filter(|i| slots[*i] == PasswordSlot::Last)
        .collect();
    assert_eq!((ordinary, last.len()), (4, 1), "password slots: {slots:?}");
    let state = store.user_state(user).await.unwrap();
    let until = state.password_locked_until.expect("the last slot locks");
    assert_eq!(until, now + TimeDelta::hours(24));
    // While the last comparison runs, a newcomer is told to come back, not "locked".
    let busy = store
        .reserve_password_slot(user, "newcomer", now, &policy)
        .await
        .unwrap()
        .0;
    assert_eq!(busy, PasswordSlot::Busy);
    // Another request's success does not lift the lock; every failure keeps it. (Not
    // `holders[0]`: which request wins the last slot is the race's.)
    let other = (0..BURST)
        .find(|i| slots[*i] == PasswordSlot::Ordinary)
        .expect("an ordinary slot");
    store
        .password_matched(user, &holders[other], now)
        .await
        .unwrap();
    assert_eq!(
        store.user_state(user).await.unwrap().password_locked_until,
        Some(until)
    );
    let later = now + TimeDelta::seconds(3);
    let relocked = store
        .password_failed_last(user, &holders[last[0]], later, &policy)
        .await
        .unwrap();
    assert_eq!(
        relocked,
        later + TimeDelta::hours(24),
        "the lock runs from the 5th failure"
    );
    let after = at_once(20, |i| {
        store.reserve_password_slot(user, &holders[i], later, &policy)
    })
    .await;
    assert!(after
        .iter()
        .all(|s| matches!(s, Ok((PasswordSlot::Locked { until }, _)) if *until == relocked)));

    // Idempotency: of 20 parallel claims of one key, one; the others see it.
    let claims: Vec<IdempotencyRecord> = (0..20)
        .map(|i| IdempotencyRecord {
            user_id: user.clone(),
            key: "same-key".into(),
            request_fingerprint: "f".into(),
            status: 0,
            response_body: String::new(),
            expires_at: now + TimeDelta::hours(24),
            in_progress: true,
            owner: Some(format!("owner-{i}")),
            lease_until: Some(now + TimeDelta::seconds(30)),
        })
        .collect();
    let outcomes = at_once(20, |i| store.claim_idempotency(&claims[i], now)).await;
    let won: Vec<usize> = (0..20)
        .filter(|i| matches!(outcomes[*i], Ok(IdempotencyClaim::Claimed)))
        .collect();
    assert_eq!(won.len(), 1, "{outcomes:?}");
    for (i, o) in outcomes.iter().enumerate() {
        if let Ok(IdempotencyClaim::Taken(r)) = o {
            assert_eq!(r.owner, claims[won[0]].owner, "claim {i} saw the winner");
        }
    }
    // Only the owner releases it.
    let loser = (won[0] + 1) % 20;
    store
        .release_idempotency(user, "same-key", claims[loser].owner.as_deref().unwrap())
        .await
        .unwrap();
    assert!(store
        .idempotency(user, "same-key", now)
        .await
        .unwrap()
        .is_some());
    store
        .release_idempotency(user, "same-key", claims[won[0]].owner.as_deref().unwrap())
        .await
        .unwrap();
    assert!(store
        .idempotency(user, "same-key", now)
        .await
        .unwrap()
        .is_none());

    // Face-token nonces: 20 parallel uses, one.
    let nonce = format!("nonce-{}", ulid::Ulid::generate());
    let fresh = at_once(20, |_| {
        store.consume_face_nonce(&nonce, now + TimeDelta::minutes(5))
    })
    .await;
    assert_eq!(
        fresh.into_iter().filter(|r| *r.as_ref().unwrap()).count(),
        1
    );
    assert!(store.face_nonce_used(&nonce).await.unwrap());
}

async fn user_state_writes_are_conditional_on_the_version<S: Store>(w: &World<S>) {
    let (store, user) = (&*w.store, &w.user);
    let seen = store.user_state(user).await.unwrap();
    let next = UserState {
        next_allowed_at: Some(w.now + TimeDelta::days(7)),
        ..seen.clone()
    };
    // Of 20 writers that read the same version, one wins.
    let wrote = at_once(20, |_| store.put_user_state(user, &next, seen.version)).await;
    let won = wrote.iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 1, "{wrote:?}");
    assert!(wrote
        .iter()
        .all(|r| r.is_ok() || matches!(r, Err(StoreError::Conflict))));
    let stored = store.user_state(user).await.unwrap();
    assert_eq!(stored.version, seen.version + 1);
    assert_eq!(stored.next_allowed_at, next.next_allowed_at);
}

async fn a_submission_writes_everything_or_nothing<S: Store>(w: &World<S>) {
    let (store, user, now) = (&*w.store, &w.user, w.now);
    // Each conflict on its own refuses the whole write.
    let refused = |s: &shared::records::Submission| (s.query.query_id, s.face_nonce.clone());
    let mut nothing_of: Vec<(QueryId, String)> = Vec::new();

    let mut stale = prepared(store, user, now).await;
    stale.expected_state_version += 1;
    let err = store.submit(&stale).await.unwrap_err();
    assert!(
        matches!(err, SubmitError::Conflict(SubmitConflict::StateChanged)),
        "{err:?}"
    );
    nothing_of.push(refused(&stale));

    let mut unclaimed = prepared(store, user, now).await;
    unclaimed.idempotency.owner = Some("not-the-claimant".into());
    let err = store.submit(&unclaimed).await.unwrap_err();
    assert!(
        matches!(
            err,
            SubmitError::Conflict(SubmitConflict::IdempotencyKeyTaken)
        ),
        "{err:?}"
    );
    nothing_of.push(refused(&unclaimed));

    let used = prepared(store, user, now).await;
    assert!(store
        .consume_verification(user, &used.verification_id, 5)
        .await
        .unwrap());
    let err = store.submit(&used).await.unwrap_err();
    assert!(
        matches!(err, SubmitError::Conflict(SubmitConflict::VerificationUsed)),
        "{err:?}"
    );
    nothing_of.push(refused(&used));

    let burnt = prepared(store, user, now).await;
    for _ in 0..6 {
        store
            .reserve_code_attempt(user, &burnt.verification_id, Purpose::SubmitQuery, now, 6)
            .await
            .unwrap();
    }
    let err = store.submit(&burnt).await.unwrap_err();
    assert!(
        matches!(err, SubmitError::Conflict(SubmitConflict::VerificationUsed)),
        "a code compared more than max_code_attempts times is burnt: {err:?}"
    );
    nothing_of.push(refused(&burnt));

    let seen_face = prepared(store, user, now).await;
    assert!(store
        .consume_face_nonce(&seen_face.face_nonce, now + TimeDelta::minutes(5))
        .await
        .unwrap());
    let err = store.submit(&seen_face).await.unwrap_err();
    assert!(
        matches!(err, SubmitError::Conflict(SubmitConflict::FaceNonceUsed)),
        "{err:?}"
    );

    for (q, face_nonce) in &nothing_of {
        assert!(store.query(q).await.unwrap().is_none(), "no query {q}");
        assert!(store.legs(q).await.unwrap().is_empty(), "no legs of {q}");
        assert!(
            !store.face_nonce_used(face_nonce).await.unwrap(),
            "the refused submission's face nonce stays unused"
        );
    }
    let state = store.user_state(user).await.unwrap();
    assert_eq!(
        state.active_query_id, None,
        "no refused write took the lock"
    );

    // The write that holds every condition writes all of it.
    let ok = prepared(store, user, now).await;
    let q = ok.query.query_id;
    let before = store.user_state(user).await.unwrap();
    store.submit(&ok).await.unwrap();
    assert_eq!(store.query(&q).await.unwrap(), Some(ok.query.clone()));
    // The legs are not part of it (fan-out makes them from the banks it lists).
    assert!(store.legs(&q).await.unwrap().is_empty());
    assert_eq!(w.unsettled(q).await, Some(ok.query.banks.len() as u64));
    let after = store.user_state(user).await.unwrap();
    assert_eq!(after.active_query_id, Some(q));
    assert_eq!(after.version, before.version + 1);
    let v = store
        .verification(user, &ok.verification_id)
        .await
        .unwrap()
        .unwrap();
    assert!(v.used, "the code is used up");
    assert!(store.face_nonce_used(&ok.face_nonce).await.unwrap());
    let record: IdempotencyRecord = store
        .idempotency(user, &ok.idempotency.key, now)
        .await
        .unwrap()
        .expect("the key's record");
    assert_eq!((record.status, record.in_progress), (202, false));
    // The same write again is refused as a whole (the state moved on).
    assert!(store.submit(&ok).await.is_err());
}
