//! Code SMS the channel cannot take (SNS throttling, or the channel's shared rate used
//! up): a 503 with a wait, nothing sent, and the user's limits (one a minute, ten a China
//! day) as they were, however many requests arrive at once.

use super::*;
use crate::rules::admission;

/// The SMS fields of the user's state: what the limits count.
fn sms_fields(s: &UserState) -> (Option<DateTime<Utc>>, Option<String>, u32) {
    (s.last_sms_at, s.sms_day.clone(), s.sms_count)
}

/// A real-name user in a pilot region (Shanghai), one of many.
fn crowd_user(fx: &Fx, i: usize) -> String {
    let uid = format!("crowd-{i}");
    fx.store.insert_profile(profile(
        &uid,
        true,
        "31",
        &format!("+8613600136{i:03}"),
        &format!("31010119900101{i:03}"),
    ));
    uid
}

/// `n` code requests at once, one per entry of `users`.
async fn codes_at_once(fx: &Fx, users: &[String]) -> Vec<Result<(), ServiceError>> {
    let barrier = Arc::new(tokio::sync::Barrier::new(users.len()));
    let tasks: Vec<_> = users
        .iter()
        .map(|u| {
            let (svc, barrier, user) = (fx.svc.clone(), barrier.clone(), uid(u));
            tokio::spawn(async move {
                barrier.wait().await;
                svc.create_verification(
                    &user,
                    VerificationRequest {
                        purpose: Purpose::SubmitQuery,
                    },
                )
                .await
                .map(drop)
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}
#[tokio::test]
async fn a_throttled_code_is_refused_with_a_wait_and_costs_no_sms_slot() {
    let fx = Fx::new();
    fx.sms.throttle(true);
    assert_err!(
        fx.try_code(ALICE, Purpose::SubmitQuery).await.map(|_| ()),
        ServiceError::SmsUnavailable { retry_after_secs } => assert_eq!(retry_after_secs, 2)
    );
    assert!(fx.sms.sent().is_empty());
    assert_eq!(sms_fields(&fx.state(ALICE)), (None, None, 0));

    // Cleared, the same instant: no minute to wait, this is the first SMS of the day.
    fx.sms.throttle(false);
    fx.code(ALICE).await;
    assert_eq!(fx.state(ALICE).sms_count, 1);
    assert_eq!(fx.state(ALICE).last_sms_at, Some(fx.now()));
}

#[tokio::test]
async fn a_code_over_the_channel_rate_waits_for_the_channels_next_permit() {
    let fx = Fx::with_channel(1, |s| s);
    fx.clock.set(START + TimeDelta::milliseconds(300));
    fx.code(ALICE).await;
    // ALICE's permit is held for the gate's 1 s + margin: DAVE is told the whole seconds.
    assert_err!(
        fx.try_code(DAVE, Purpose::SubmitQuery).await.map(|_| ()),
        ServiceError::SmsUnavailable { retry_after_secs } => assert_eq!(retry_after_secs, 2)
    );
    assert_eq!(fx.state(DAVE).sms_count, 0);
    assert_eq!(fx.state(DAVE).last_sms_at, None);
    // A user refused by their own limit does not use up the channel: ALICE's 429 leaves
    // the next permit's one message to DAVE.
    fx.clock
        .set(START + TimeDelta::milliseconds(300) + admission::RATE_PERMIT_HOLD);
    assert_err!(
        fx.try_code(ALICE, Purpose::SubmitQuery).await.map(|_| ()),
        ServiceError::TooManyRequests { .. }
    );
    fx.code(DAVE).await;
    assert_eq!(fx.sms.sent().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_users_at_once_over_the_channel_rate_keep_their_limits() {
    // Writes held back: every request reads before any other's write lands.
    let fx = Fx::with_channel(5, |inner| Arc::new(Interleaved::new(inner, 5)));
    let users: Vec<String> = (0..20).map(|i| crowd_user(&fx, i)).collect();

    let results = codes_at_once(&fx, &users).await;
    let sent: Vec<&String> = users
        .iter()
        .zip(&results)
        .filter(|(_, r)| r.is_ok())
        .map(|(u, _)| u)
        .collect();
    assert_eq!(sent.len(), 5, "the channel's five a second: {results:?}");
    for (u, r) in users.iter().zip(&results) {
        match r {
            Ok(()) => assert_eq!(fx.state(u).sms_count, 1),
            Err(ServiceError::SmsUnavailable {
                retry_after_secs: 2,
            }) => {
                assert_eq!(sms_fields(&fx.state(u)), (None, None, 0), "{u}")
            }
            other => panic!("{u}: {other:?}"),
        }
    }
    assert_eq!(fx.sms.sent().len(), 5);

    // Permit period by period the rest get through, each once, none told to wait a minute.
    let mut waiting: Vec<String> = users
        .iter()
        .filter(|u| !sent.contains(u))
        .cloned()
        .collect();
    for _ in 0..3 {
        fx.clock.advance(admission::RATE_PERMIT_HOLD);
        let results = codes_at_once(&fx, &waiting).await;
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            5,
            "{results:?}"
        );
        waiting = waiting
            .into_iter()
            .zip(results)
            .filter(|(_, r)| r.is_err())
            .map(|(u, _)| u)
            .collect();
    }
    assert!(waiting.is_empty());
    for u in &users {
        assert_eq!(fx.state(u).sms_count, 1, "{u}");
    }
    assert_eq!(fx.sms.sent().len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_requests_of_one_user_while_throttled_leave_the_day_and_the_minute_as_they_were() {
    let fx = Fx::with_store(|inner| Arc::new(Interleaved::new(inner, 5)));
    // Nine codes today already, the last two minutes ago.
    let last = START - TimeDelta::minutes(2);
    fx.store.set_state(
        &uid(ALICE),
        UserState {
            last_sms_at: Some(last),
            sms_day: Some("2026-11-28".into()),
            sms_count: 9,
            ..UserState::default()
        },
    );
    let before = sms_fields(&fx.state(ALICE));
    fx.sms.throttle(true);

    let results = codes_at_once(&fx, &vec![ALICE.to_owned(); 20]).await;
    let refused_for_the_channel = results
        .iter()
        .filter(|r| matches!(r, Err(ServiceError::SmsUnavailable { .. })))
        .count();
    assert!(refused_for_the_channel >= 1, "{results:?}");
    for r in &results {
        // The others met the slot the first was holding while it tried.
        assert!(
            matches!(
                r,
                Err(ServiceError::SmsUnavailable { .. } | ServiceError::TooManyRequests { .. })
            ),
            "{r:?}"
        );
    }
    assert!(fx.sms.sent().is_empty());
    assert_eq!(sms_fields(&fx.state(ALICE)), before);

    // Cleared: the tenth code of the day goes at once, and then the day is full.
    fx.sms.throttle(false);
    fx.code(ALICE).await;
    assert_eq!(fx.state(ALICE).sms_count, 10);
    fx.clock.advance(TimeDelta::minutes(2));
    assert_err!(
        fx.try_code(ALICE, Purpose::SubmitQuery).await.map(|_| ()),
        ServiceError::TooManyRequests { retry_after_secs } => assert!(retry_after_secs > 60)
    );
}
