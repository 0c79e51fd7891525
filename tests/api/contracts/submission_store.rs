//! The atomic primitives every limit rests on, each hit by a burst of parallel callers,
//! as one contract run against both implementations of the port: DynamoDB Local
//! (conditional writes) and the in-memory store the unit tests use, so the fake cannot
//! drift from the real semantics. Then the single-use values of the other paths on
//! DynamoDB: bank-message nonces and the "report ready" notice lease.

use aws_sdk_dynamodb::types::AttributeValue;
use futures::future::join_all;
use shared::adapters::memory::MemoryStore;
use shared::clock::Clock;
use shared::model::ids::{UserId, VerificationId};
use shared::model::timestamp;
use shared::ports::{
    BankNonce, PasswordPolicy, QueryStore, ReportStore, SettleOutcome, Settlement, SubmissionStore,
};
use shared::records::{
    IdempotencyClaim, IdempotencyRecord, LegState, PasswordSlot, VerificationRecord,
};
use shared::security::sms_code::Purpose;
use testkit::submission::Fixture;
use time::{Duration, OffsetDateTime};
use tokio::sync::Barrier;

const BURST: usize = 50;

/// Runs `f(i)` for `0..n` at once (released by a barrier) and collects the results.
async fn at_once<T, F, Fut>(n: usize, f: F) -> Vec<T>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let barrier = Barrier::new(n);
    join_all((0..n).map(|i| {
        let fut = f(i);
        let barrier = &barrier;
        async move {
            barrier.wait().await;
            fut.await
        }
    }))
    .await
}

fn verification(user: &UserId, now: OffsetDateTime) -> VerificationRecord {
    VerificationRecord {
        verification_id: VerificationId::generate(),
        user_id: user.clone(),
        purpose: Purpose::SubmitQuery,
        code_hash: "not-compared-here".into(),
        expires_at: now + Duration::minutes(5),
        attempts: 0,
        used: false,
    }
}

/// The contract, on any store: `user` must exist for the store (DynamoDB needs no profile
/// for these items; the memory store none either).
async fn contract(store: &dyn SubmissionStore, user: &UserId, now: OffsetDateTime) {
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
        lock: Duration::hours(24),
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
    assert_eq!(until, now + Duration::hours(24));
    // While the last comparison runs, a newcomer is told to come back, not "locked".
    let busy = store
        .reserve_password_slot(user, "newcomer", now, &policy)
        .await
        .unwrap()
        .0;
    assert_eq!(busy, PasswordSlot::Busy);
    // Another request's success does not lift the lock; every failure keeps it.
    store
        .password_matched(user, &holders[0], now)
        .await
        .unwrap();
    assert_eq!(
        store.user_state(user).await.unwrap().password_locked_until,
        Some(until)
    );
    let later = now + Duration::seconds(3);
    let relocked = store
        .password_failed_last(user, &holders[last[0]], later, &policy)
        .await
        .unwrap();
    assert_eq!(
        relocked,
        later + Duration::hours(24),
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
            expires_at: now + Duration::hours(24),
            in_progress: true,
            owner: Some(format!("owner-{i}")),
            lease_until: Some(now + Duration::seconds(30)),
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
        store.consume_face_nonce(&nonce, now + Duration::minutes(5))
    })
    .await;
    assert_eq!(
        fresh.into_iter().filter(|r| *r.as_ref().unwrap()).count(),
        1
    );
    assert!(store.face_nonce_used(&nonce).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_limit_primitives_hold_on_dynamodb() {
    let f = Fixture::new().await;
    let user = f.user().await;
    // Whole seconds, as the table stores instants.
    let now = timestamp::parse(&timestamp::format(f.clock.now())).unwrap();
    contract(f.store.as_ref(), &user.id, now).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_limit_primitives_hold_on_the_memory_store() {
    let store = MemoryStore::default();
    let now = timestamp::parse("2026-11-28T02:00:00Z").unwrap();
    contract(&store, &UserId::parse("memory-user").unwrap(), now).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leg_settles_once_whatever_the_concurrency_and_a_bank_nonce_works_once() {
    let f = Fixture::new().await;
    let q = f.submitted_query().await;
    let legs = f.store.legs(&q).await.unwrap();
    let now = f.clock.now();
    let nonce = BankNonce {
        nonce: format!("bank-nonce-{}", ulid::Ulid::generate()),
        expires_at: now + Duration::minutes(10),
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
    let outcomes = at_once(20, |_| f.store.settle(&q, bank, &settlement, Some(&nonce))).await;
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
            expires_at: now + Duration::minutes(10),
        })
        .collect();
    let outcomes = at_once(20, |i| {
        f.store.settle(&q, other, &settlement, Some(&nonces[i]))
    })
    .await;
    let settled = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(SettleOutcome::Settled)))
        .count();
    assert_eq!(settled, 1, "{outcomes:?}");
    let after = f.store.legs(&q).await.unwrap();
    assert_eq!(after.iter().filter(|l| l.state.is_settled()).count(), 2);
    let unsettled = f
        .env
        .clients
        .dynamodb
        .get_item()
        .table_name(f.env.table("CardLookupTable"))
        .key("pk", AttributeValue::S(format!("QUERY#{q}")))
        .key("sk", AttributeValue::S("QUERY".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .unwrap()["unsettled"]
        .clone();
    assert_eq!(
        unsettled,
        AttributeValue::N((legs.len() - 2).to_string()),
        "each leg counted down once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_parallel_notice_claims_let_one_sender_through() {
    let f = Fixture::new().await;
    let q = f.submitted_query().await;
    // Mark the query reported, as publishing does.
    f.env
        .clients
        .dynamodb
        .update_item()
        .table_name(f.env.table("CardLookupTable"))
        .key("pk", AttributeValue::S(format!("QUERY#{q}")))
        .key("sk", AttributeValue::S("QUERY".into()))
        .update_expression("SET phase = :p")
        .expression_attribute_values(":p", AttributeValue::S("REPORTED".into()))
        .send()
        .await
        .unwrap();
    let now = f.clock.now();
    let lease = Duration::minutes(2);
    let claims = at_once(20, |_| f.store.claim_notice(&q, now, lease)).await;
    assert_eq!(claims.iter().filter(|c| *c.as_ref().unwrap()).count(), 1);
    // Within the lease nobody else; after it, one again (the first sender died).
    assert!(!f.store.claim_notice(&q, now + lease, lease).await.unwrap());
    let later = at_once(20, |_| {
        f.store
            .claim_notice(&q, now + lease + Duration::seconds(1), lease)
    })
    .await;
    assert_eq!(later.iter().filter(|c| *c.as_ref().unwrap()).count(), 1);
}
