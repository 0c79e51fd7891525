//! Concurrency: parallel submissions, codes, passwords and twins under one key, and the
//! interleavings in which a read-compare-write limit would break; every limit holds.

use super::*;
use crate::records::{ConsentRecord, QueryPhase, QueryRecord};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_submissions_make_exactly_one_query() {
    let fx = Fx::new();
    let raw = Arc::new(fx.good_body(ALICE).await);
    let barrier = Arc::new(tokio::sync::Barrier::new(20));
    let mut tasks = Vec::new();
    for i in 0..20 {
        let svc = fx.svc.clone();
        let raw = raw.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            submit_on(&svc, ALICE, Some(&format!("concurrent-{i}")), &raw).await
        }));
    }
    let mut accepted = 0;
    let mut in_progress = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok((202, _)) => accepted += 1,
            Err(ServiceError::QueryInProgress) => in_progress += 1,
            other => panic!("expected 202 or QueryInProgress, got {other:?}"),
        }
    }
    assert_eq!((accepted, in_progress), (1, 19));
    assert_eq!(fx.store.queries().len(), 1);
    assert_eq!(fx.store.consents().len(), 1);
    let q = &fx.store.queries()[0];
    assert_eq!(fx.state(ALICE).active_query_id, Some(q.query_id));
}

/// What a concurrent request with the same code commits when it wins.
fn winning_submission(
    user: &UserId,
    state: &UserState,
    verification_id: VerificationId,
    now: DateTime<Utc>,
) -> Submission {
    let query_id = QueryId::generate();
    Submission {
        query: QueryRecord {
            query_id,
            user_id: user.clone(),
            phase: QueryPhase::Collecting,
            submitted_at: now,
            report_due_by: now + TimeDelta::hours(24),
            collect_until: now + TimeDelta::hours(24),
            banks: vec![],
            report_generated_at: None,
            report_expires_at: None,
            last_viewed_at: None,
            report_deleted_at: None,
            views: Vec::new(),
            views_total: 0,
            notified_at: None,
        },
        consent: ConsentRecord {
            query_id,
            user_id: user.clone(),
            agreement_version: AGREEMENT.into(),
            accepted_at: now,
            source_ip: None,
        },
        idempotency: IdempotencyRecord {
            user_id: user.clone(),
            key: "the-winner".into(),
            request_fingerprint: "x".into(),
            status: 202,
            response_body: "{}".into(),
            expires_at: now + TimeDelta::hours(24),
            in_progress: false,
            owner: Some("the-winners-claim".into()),
            lease_until: None,
        },
        state: UserState {
            version: state.version + 1,
            active_query_id: Some(query_id),
            ..state.clone()
        },
        expected_state_version: state.version,
        verification_id,
        max_code_attempts: 5,
        face_nonce: "the-winners-nonce".into(),
        face_nonce_expires_at: now + TimeDelta::minutes(5),
    }
}

/// The contract (issue 3): of concurrent submissions by one user, exactly one gets 202
/// and the rest 409 QUERY_IN_PROGRESS. A loser whose state read came before the
/// winner's commit but whose code check came after it must still get 409, not
/// 422 VERIFICATION_FAILED.
#[tokio::test]
async fn a_submission_overtaken_between_state_read_and_code_check_gets_query_in_progress() {
    let slot: Arc<Mutex<Option<Arc<Interleaved>>>> = Arc::default();
    let slot2 = slot.clone();
    let fx = Fx::with_store(move |inner| {
        let race = Arc::new(Interleaved::new(inner, 0));
        *slot2.lock().unwrap() = Some(race.clone());
        race
    });
    let race = slot.lock().unwrap().clone().unwrap();

    let c = fx.code(ALICE).await;
    let winner = winning_submission(
        &uid(ALICE),
        &fx.state(ALICE),
        VerificationId::parse(&c.id).unwrap(),
        fx.now(),
    );
    *race.hook.lock().unwrap() = Some(winner);

    let raw = body(&["ICBC"], &c.id, &c.code, &fx.face(ALICE), PASSWORD);
    let got = fx.submit(ALICE, Some("the-loser"), &raw).await;
    assert_eq!(fx.store.queries().len(), 1, "only the winner's query");
    assert!(
        matches!(got, Err(ServiceError::QueryInProgress)),
        "expected QueryInProgress (409), got {got:?}"
    );
}

fn slow_fx() -> Fx {
    Fx::with_store(|inner| Arc::new(Interleaved::new(inner, 30)))
}

impl Fx {
    /// A code for `user` written straight to the store (as if sent), bypassing the SMS
    /// send limits so a test can hold many at once.
    async fn planted_code(&self, user: &str, n: u32) -> Code {
        let id = VerificationId::generate();
        let code = format!("{:06}", 100_000 + n);
        let record = VerificationRecord {
            verification_id: id,
            user_id: uid(user),
            purpose: Purpose::SubmitQuery,
            code_hash: CodeHasher::new(&[9; 32]).unwrap().hash(
                &uid(user),
                &id,
                Purpose::SubmitQuery,
                &code,
            ),
            expires_at: self.now() + TimeDelta::minutes(5),
            attempts: 0,
            used: false,
        };
        self.store.put_verification(&record).await.unwrap();
        Code {
            id: id.to_string(),
            code,
        }
    }

    async fn attempts_of(&self, user: &str, code: &Code) -> u32 {
        self.store
            .verification(&uid(user), &VerificationId::parse(&code.id).unwrap())
            .await
            .unwrap()
            .unwrap()
            .attempts
    }
}

/// Releases `bodies` at once (a barrier), each under its own key unless `key` is given.
async fn burst(
    fx: &Fx,
    user: &'static str,
    key: Option<&str>,
    bodies: Vec<Value>,
) -> Vec<Result<(u16, Value), ServiceError>> {
    let barrier = Arc::new(tokio::sync::Barrier::new(bodies.len()));
    let tasks: Vec<_> = bodies
        .into_iter()
        .enumerate()
        .map(|(i, raw)| {
            let svc = fx.svc.clone();
            let barrier = barrier.clone();
            let key = key.map_or_else(|| format!("burst-{i}"), str::to_owned);
            tokio::spawn(async move {
                barrier.wait().await;
                submit_on(&svc, user, Some(&key), &raw).await
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_parallel_wrong_codes_are_compared_at_most_five_times() {
    let fx = slow_fx();
    let c = fx.code(ALICE).await;
    let bodies = (1..=50)
        .map(|i| {
            body(
                &["ICBC"],
                &c.id,
                &wrong_code(&c.code, i),
                &fx.face(ALICE),
                PASSWORD,
            )
        })
        .collect();
    for r in burst(&fx, ALICE, None, bodies).await {
        assert_err!(r, ServiceError::VerificationFailed);
    }
    assert_eq!(
        fx.attempts_of(ALICE, &c).await,
        5,
        "attempts after 50 parallel wrong codes"
    );
    // Five were compared: the right code is burnt now.
    let raw = body(&["ICBC"], &c.id, &c.code, &fx.face(ALICE), PASSWORD);
    assert_err!(
        fx.submit(ALICE, Some("after"), &raw).await,
        ServiceError::VerificationFailed
    );
    fx.assert_nothing_recorded(ALICE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_wrong_passwords_locks_the_account() {
    let fx = slow_fx();
    let mut bodies = Vec::new();
    // 22, not a multiple of five: a lock that a later failure clears shows.
    for i in 0..22 {
        let c = fx.planted_code(ALICE, i).await;
        bodies.push(body(&["ICBC"], &c.id, &c.code, &fx.face(ALICE), "000000"));
    }
    let results = burst(&fx, ALICE, None, bodies).await;
    let invalid = results
        .iter()
        .filter(|r| matches!(r, Err(ServiceError::PaymentPasswordInvalid)))
        .count();
    for r in &results {
        assert!(
            matches!(
                r,
                Err(ServiceError::PaymentPasswordInvalid)
                    | Err(ServiceError::PaymentPasswordLocked { .. })
                    | Err(ServiceError::TooManyRequests { .. })
            ),
            "{r:?}"
        );
    }
    assert!(
        invalid <= 4,
        "{invalid} wrong passwords were compared before the lock"
    );
    // Locked afterwards: the right password is refused.
    let c = fx.planted_code(ALICE, 99).await;
    let raw = body(&["ICBC"], &c.id, &c.code, &fx.face(ALICE), PASSWORD);
    assert_err!(
        fx.submit(ALICE, Some("right"), &raw).await,
        ServiceError::PaymentPasswordLocked { .. }
    );
    fx.assert_nothing_recorded(ALICE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_twin_submissions_under_one_key_get_the_original_answer() {
    let fx = slow_fx();
    let raw = fx.good_body(ALICE).await;
    let results = burst(&fx, ALICE, Some("twin"), vec![raw.clone(); 20]).await;
    let mut ids = std::collections::BTreeSet::new();
    for r in &results {
        match r {
            Ok((202, b)) => {
                ids.insert(b["query_id"].as_str().unwrap().to_owned());
            }
            Err(ServiceError::IdempotencyInProgress { .. }) => {}
            other => panic!("expected 202 or IDEMPOTENCY_IN_PROGRESS, got {other:?}"),
        }
    }
    // Retried after the first finished: the original answer.
    let (status, again) = fx.submit(ALICE, Some("twin"), &raw).await.unwrap();
    assert_eq!(status, 202);
    ids.insert(again["query_id"].as_str().unwrap().to_owned());
    assert_eq!(ids.len(), 1, "one query id for one key: {ids:?}");
    assert_eq!(fx.store.queries().len(), 1);
}

/// The audit of the other limits of the path, under the same held-back writes: one code
/// SMS a minute, and one active query, whatever the number of parallel requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_parallel_code_requests_send_one_sms() {
    let fx = slow_fx();
    let barrier = Arc::new(tokio::sync::Barrier::new(20));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (svc, barrier) = (fx.svc.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                svc.create_verification(
                    &uid(ALICE),
                    VerificationRequest {
                        purpose: Purpose::SubmitQuery,
                    },
                )
                .await
            })
        })
        .collect();
    let mut sent = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => sent += 1,
            Err(ServiceError::TooManyRequests { .. }) => {}
            other => panic!("expected a code or 429, got {other:?}"),
        }
    }
    assert_eq!(sent, 1);
    assert_eq!(
        fx.sms.sent().len(),
        1,
        "one SMS for twenty parallel requests"
    );
    assert_eq!(fx.state(ALICE).sms_count, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_parallel_submissions_with_held_back_writes_make_one_query() {
    let fx = slow_fx();
    let mut bodies = Vec::new();
    for i in 0..20 {
        let c = fx.planted_code(ALICE, i).await;
        bodies.push(body(&["ICBC"], &c.id, &c.code, &fx.face(ALICE), PASSWORD));
    }
    let results = burst(&fx, ALICE, None, bodies).await;
    let accepted = results.iter().filter(|r| matches!(r, Ok((202, _)))).count();
    // The rest: 409, or (more than five comparisons at once) 429 while the fifth runs.
    let refused = results
        .iter()
        .filter(|r| {
            matches!(
                r,
                Err(ServiceError::QueryInProgress) | Err(ServiceError::TooManyRequests { .. })
            )
        })
        .count();
    assert_eq!((accepted, refused), (1, 19), "{results:?}");
    assert_eq!(
        fx.state(ALICE).password_locked_until,
        None,
        "the right password locks nothing"
    );
    assert_eq!(fx.store.queries().len(), 1);
}

/// The right password in the last slot (four failures before it), then the submission is
/// refused at its commit (another query got in first): the slot is given back, the lock
/// that slot set is lifted, and the count starts again.
#[tokio::test]
async fn a_matched_password_refused_at_commit_leaves_no_lock() {
    let slot: Arc<Mutex<Option<Arc<Interleaved>>>> = Arc::default();
    let slot2 = slot.clone();
    let fx = Fx::with_store(move |inner| {
        let race = Arc::new(Interleaved::new(inner, 0));
        *slot2.lock().unwrap() = Some(race.clone());
        race
    });
    let race = slot.lock().unwrap().clone().unwrap();
    fx.store.set_state(
        &uid(ALICE),
        UserState {
            version: 3,
            password_failures: 4,
            ..Default::default()
        },
    );
    let theirs = fx.planted_code(ALICE, 1).await;
    let winner = winning_submission(
        &uid(ALICE),
        &fx.state(ALICE),
        VerificationId::parse(&theirs.id).unwrap(),
        fx.now(),
    );
    *race.hook.lock().unwrap() = Some(winner);

    let mine = fx.planted_code(ALICE, 2).await;
    let raw = body(&["ICBC"], &mine.id, &mine.code, &fx.face(ALICE), PASSWORD);
    assert_err!(
        fx.submit(ALICE, Some("mine"), &raw).await,
        ServiceError::QueryInProgress
    );
    let state = fx.state(ALICE);
    assert_eq!(
        state.password_locked_until, None,
        "no lock after a right password"
    );
    assert_eq!(state.password_lock_holder, None);
    assert_eq!(state.password_failures, 0);
    assert_eq!(fx.store.queries().len(), 1, "only the winner's query");
}
