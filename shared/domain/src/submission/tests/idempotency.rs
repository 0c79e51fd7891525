//! Idempotency keys: a replay gets the first answer, a reused key with another body is
//! refused, a key is required; an answer lost after the commit and a claim left by a
//! crashed request are recovered.

use super::*;

#[tokio::test]
async fn same_key_and_body_replays_the_first_response() {
    let fx = Fx::new();
    let raw = fx.good_body(ALICE).await;
    let first = fx.submit(ALICE, Some("retry-me"), &raw).await.unwrap();
    assert_eq!(first.0, 202);
    fx.clock.advance(TimeDelta::seconds(30));
    let second = fx.submit(ALICE, Some("retry-me"), &raw).await.unwrap();
    assert_eq!(second, first, "identical status and body");
    assert_eq!(fx.store.queries().len(), 1);
    assert_eq!(fx.store.consents().len(), 1);

    // Same key, a different body.
    let mut other = raw.clone();
    other["banks"] = json!(["ICBC"]);
    assert_err!(
        fx.submit(ALICE, Some("retry-me"), &other).await,
        ServiceError::IdempotencyKeyReused
    );
    assert_eq!(fx.store.queries().len(), 1);
}

#[tokio::test]
async fn a_missing_or_malformed_idempotency_key_is_refused() {
    let fx = Fx::new();
    let raw = fx.good_body(ALICE).await;
    let long = "k".repeat(65);
    for key in [
        None,
        Some(""),
        Some("has space"),
        Some(long.as_str()),
        Some("ключ"),
    ] {
        assert_err!(
            fx.submit(ALICE, key, &raw).await,
            ServiceError::IdempotencyKeyRequired
        );
        fx.assert_nothing_recorded(ALICE);
    }
    // 64 characters is the longest allowed; the body's code is untouched by the refusals.
    let (status, _) = fx.submit(ALICE, Some(&"k".repeat(64)), &raw).await.unwrap();
    assert_eq!(status, 202);
}

/// The submission commits, then the answer is lost (the instance dies, the connection
/// drops): the client's retry under the same key gets the original 202.
#[tokio::test]
async fn an_answer_lost_after_the_commit_is_given_again_on_retry() {
    let fx = Fx::with_store(|inner| {
        let store = Interleaved::new(inner, 0);
        store.lose_answer.store(true, Ordering::Relaxed);
        Arc::new(store)
    });
    let raw = fx.good_body(ALICE).await;
    assert_err!(
        fx.submit(ALICE, Some("lost"), &raw).await,
        ServiceError::Unavailable(_)
    );
    assert_eq!(fx.store.queries().len(), 1, "the submission was committed");
    let first = fx.store.queries()[0].query_id.to_string();

    // The retry goes to a healthy instance: the original answer, nothing new.
    let healthy = SubmissionService::new(fx.deps_on(fx.store.clone()));
    let (status, again) = submit_on(&healthy, ALICE, Some("lost"), &raw)
        .await
        .unwrap();
    assert_eq!(
        (status, again["query_id"].as_str()),
        (202, Some(first.as_str()))
    );
    assert_eq!(fx.store.queries().len(), 1);
}

/// The first request claimed its key and died before it could finish: within the lease
/// its twin is told to wait; after the lease the key is taken over and the submission
/// made (once).
#[tokio::test]
async fn a_claim_left_by_a_crashed_request_is_taken_over_after_its_lease() {
    let fx = Fx::new();
    let raw = fx.good_body(ALICE).await;
    let fingerprint = CodeHasher::new(&[9; 32])
        .unwrap()
        .fingerprint(&serde_json::to_vec(&raw).unwrap());
    let crashed = IdempotencyRecord {
        user_id: uid(ALICE),
        key: "crashed".into(),
        request_fingerprint: fingerprint,
        status: 0,
        response_body: String::new(),
        expires_at: fx.now() + TimeDelta::hours(24),
        in_progress: true,
        owner: Some("a-dead-instance".into()),
        lease_until: Some(fx.now() + TimeDelta::seconds(30)),
    };
    assert_eq!(
        fx.store
            .claim_idempotency(&crashed, fx.now())
            .await
            .unwrap(),
        IdempotencyClaim::Claimed
    );
    assert_err!(
        fx.submit(ALICE, Some("crashed"), &raw).await,
        ServiceError::IdempotencyInProgress { retry_after_secs } => assert_eq!(retry_after_secs, 2)
    );
    // A different body under the key is refused even while it is in progress.
    let mut other = raw.clone();
    other["banks"] = json!(["CMB"]);
    assert_err!(
        fx.submit(ALICE, Some("crashed"), &other).await,
        ServiceError::IdempotencyKeyReused
    );
    fx.assert_nothing_recorded(ALICE);

    fx.clock.advance(TimeDelta::seconds(30));
    let (status, first) = fx.submit(ALICE, Some("crashed"), &raw).await.unwrap();
    assert_eq!(status, 202);
    let (_, again) = fx.submit(ALICE, Some("crashed"), &raw).await.unwrap();
    assert_eq!(first, again);
    assert_eq!(fx.store.queries().len(), 1);
}
