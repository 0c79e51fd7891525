//! The submission path on the real adapters: DynamoDB Local (conditional writes,
//! transactions) and the SNS emulator, with a manual clock.

use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::Timelike;
use shared::clock::Clock;
use shared::error::ServiceError;
use shared::ports::SubmissionStore;
use shared::records::UserState;
use testkit::submission::Fixture;

async fn query_records(f: &Fixture, user: &shared::model::ids::UserId) -> usize {
    f.env
        .clients
        .dynamodb
        .query()
        .table_name(f.env.table("CardLookupTable"))
        .index_name("gsi1")
        .key_condition_expression("gsi1pk = :pk")
        .expression_attribute_values(":pk", AttributeValue::S(format!("USER#{user}")))
        .send()
        .await
        .unwrap()
        .count() as usize
}

#[tokio::test]
async fn the_sms_code_arrives_in_the_emulator_and_works_once() {
    let f = Fixture::new().await;
    let user = f.user().await;
    let code = f.code(&user).await;
    let sms = testkit::sms::sent_sms_to(&f.env.clients.endpoints.sns_endpoint, &user.phone)
        .await
        .unwrap();
    assert_eq!(sms.len(), 1);
    assert!(sms[0].message.contains(&code.1));

    let (raw, body) = f.body(&code, &f.face(&user));
    let (status, _) = f
        .service
        .submit(&user.id, Some("key-1"), &raw, body, None)
        .await
        .unwrap();
    assert_eq!(status, 202);

    // Release the lock as a finished report would, then reuse the code.
    let state = f.store.user_state(&user.id).await.unwrap();
    let released = UserState {
        active_query_id: None,
        ..state.clone()
    };
    f.store
        .put_user_state(&user.id, &released, state.version)
        .await
        .unwrap();
    let (raw, body) = f.body(&code, &f.face(&user));
    let err = f
        .service
        .submit(&user.id, Some("key-2"), &raw, body, None)
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::VerificationFailed), "{err:?}");
    assert_eq!(query_records(&f, &user.id).await, 1);
    f.env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_submissions_make_exactly_one_query() {
    let f = Arc::new(Fixture::new().await);
    let user = Arc::new(f.user().await);
    let code = f.code(&user).await;
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (f, user) = (f.clone(), user.clone());
            let (raw, body) = f.body(&code, &f.face(&user));
            tokio::spawn(async move {
                f.service
                    .submit(&user.id, Some(&format!("key-{i}")), &raw, body, None)
                    .await
            })
        })
        .collect();
    // One code for all twenty: at most five may compare it (the rest are refused
    // VERIFICATION_FAILED, or QUERY_IN_PROGRESS once the winner has committed, or 429
    // when they read the user's state while one of the five holds the last password
    // slot: `rules::password::check_password_lock`).
    let mut accepted = 0;
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok((202, _)) => accepted += 1,
            Err(
                ServiceError::QueryInProgress
                | ServiceError::VerificationFailed
                | ServiceError::TooManyRequests { .. },
            ) => refused += 1,
            other => panic!("unexpected outcome: {other:?}"),
        }
    }
    assert_eq!((accepted, refused), (1, 19));
    assert_eq!(query_records(&f, &user.id).await, 1);
}

#[tokio::test]
async fn an_idempotent_retry_returns_the_first_response() {
    let f = Fixture::new().await;
    let user = f.user().await;
    let code = f.code(&user).await;
    let face = f.face(&user);
    let (raw, body) = f.body(&code, &face);
    let first = f
        .service
        .submit(&user.id, Some("retry-key"), &raw, body, None)
        .await
        .unwrap();
    f.clock.advance(chrono::TimeDelta::seconds(3));
    let (raw, body) = f.body(&code, &face);
    let again = f
        .service
        .submit(&user.id, Some("retry-key"), &raw, body, None)
        .await
        .unwrap();
    assert_eq!(first, again);
    assert_eq!(query_records(&f, &user.id).await, 1);
    f.env.cleanup().await;
}

#[tokio::test]
async fn a_submission_in_the_cooldown_is_refused_with_next_allowed_at() {
    let f = Fixture::new().await;
    let user = f.user().await;
    let next = f.clock.now().with_nanosecond(0).unwrap() + chrono::TimeDelta::days(3);
    let seeded = f.store.user_state(&user.id).await.unwrap();
    f.store
        .put_user_state(
            &user.id,
            &UserState {
                next_allowed_at: Some(next),
                ..Default::default()
            },
            seeded.version,
        )
        .await
        .unwrap();
    let code = f.code(&user).await;
    let (raw, body) = f.body(&code, &f.face(&user));
    let err = f
        .service
        .submit(&user.id, Some("k"), &raw, body, None)
        .await
        .unwrap_err();
    match err {
        ServiceError::CooldownActive { next_allowed_at } => assert_eq!(next_allowed_at, next),
        other => panic!("expected cooldown, got {other:?}"),
    }
    assert_eq!(query_records(&f, &user.id).await, 0);
    // At next_allowed_at exactly, the same code is still good (refusals consume nothing).
    f.clock.set(next);
    let (raw, body) = f.body(&code, &f.face(&user));
    // The code itself expired 5 minutes after it was sent: ask for a fresh one.
    assert!(matches!(
        f.service
            .submit(&user.id, Some("k"), &raw, body, None)
            .await,
        Err(ServiceError::VerificationFailed)
    ));
    let code = f.code(&user).await;
    let (raw, body) = f.body(&code, &f.face(&user));
    let (status, _) = f
        .service
        .submit(&user.id, Some("k2"), &raw, body, None)
        .await
        .unwrap();
    assert_eq!(status, 202);
    f.env.cleanup().await;
}

#[tokio::test]
async fn one_submission_makes_seven_dynamodb_requests() {
    let f = Fixture::new().await;
    let user = f.user().await;
    let code = f.code(&user).await;
    let (raw, body) = f.body(&code, &f.face(&user));
    f.dynamo_requests.reset();
    f.service
        .submit(&user.id, Some("count"), &raw, body, None)
        .await
        .unwrap();
    // The idempotency claim, profile, user state, face-nonce check, code attempt,
    // password slot (which returns the state), and one transaction.
    assert_eq!(f.dynamo_requests.get(), 7);
    f.env.cleanup().await;
}
