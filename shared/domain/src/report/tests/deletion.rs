//! The user's deletion of a report: a fresh DELETE_REPORT step-up; report and legs gone
//! at once; the record stays, DELETED; the cooldown untouched; 410 afterwards, also for
//! the losers of concurrent deletions.

use futures::future::join_all;

use crate::model::timestamp;

use super::*;

impl World {
    /// A DELETE_REPORT code step-up for `uid`.
    async fn delete_code_step(&self, uid: &str) -> StepUp {
        let vid = self.sms_code(uid, Purpose::DeleteReport, "975310").await;
        code_step(&vid, "975310")
    }

    /// A passing DELETE_REPORT face token for `uid`, issued now.
    fn delete_face_token(&self, uid: &str, nonce: &str) -> String {
        self.face_provider(&self.face_private, FACE_AUDIENCE)
            .token(uid, "DELETE_REPORT", "pass", self.now(), nonce)
            .unwrap()
    }

    async fn delete(&self, user: &UserId, q: &QueryId, step: &StepUp) -> Result<(), ServiceError> {
        self.view
            .delete(user, &q.to_string(), same_proof(step))
            .await
    }
}

/// The 410 of a deleted report, carrying the record as it now is.
fn deleted_record(e: &ServiceError, q: &QueryId) -> Value {
    let ServiceError::ReportDeleted { query } = e else {
        panic!("expected REPORT_DELETED, got {e:?}")
    };
    assert_eq!(query["query_id"], q.to_string());
    assert_eq!(query["report_status"], "DELETED");
    assert!(query.get("summary").is_none() && query.get("cards").is_none());
    query.clone()
}

#[tokio::test]
async fn a_deleted_report_and_its_legs_are_gone_and_the_record_stays_deleted() {
    let w = world();
    let u1 = user("u1");
    let q = w.reported("u1").await;
    let cooldown = w.store.user_state(&u1).await.unwrap().next_allowed_at;
    assert!(cooldown.is_some());
    let generated = w.query(&q).await.report_generated_at.unwrap();

    w.clock.advance(TimeDelta::hours(2));
    let step = w.delete_code_step("u1").await;
    w.delete(&u1, &q, &step).await.unwrap();
    let deleted_at = w.now();

    assert!(w.stored(&q).await.is_none(), "the report is gone");
    assert!(
        QueryStore::legs(w.store.as_ref(), &q)
            .await
            .unwrap()
            .is_empty(),
        "every leg is gone"
    );
    let rec = w.query(&q).await;
    assert_eq!(rec.phase, QueryPhase::Deleted);
    assert_eq!(rec.report_deleted_at, Some(deleted_at));
    assert_eq!(rec.report_generated_at, Some(generated));
    // The cooldown still runs from the report's generation.
    assert_eq!(
        w.store.user_state(&u1).await.unwrap().next_allowed_at,
        cooldown
    );

    // Listed DELETED (not EXPIRED), with the time; progress says the legs went with it.
    let list = w.view.list(&u1).await.unwrap();
    assert_eq!(World::report_status(&list, &q), "DELETED");
    assert_eq!(list[0].report_deleted_at, Some(deleted_at));
    let detail = w.view.detail(&u1, &q.to_string()).await.unwrap();
    assert_eq!(detail.record.status, "READY");
    assert_eq!(detail.record.report_status, "DELETED");
    assert_eq!(detail.progress.len(), 2);
    assert!(detail.progress.iter().all(|p| p.status == "DELETED"));

    // Viewing is 410 with the record, before the step-up is used: the code stays good.
    let view = w.view_code_step("u1").await;
    let rec = deleted_record(&w.view_refused(&u1, &q, &view).await, &q);
    assert_eq!(rec["report_deleted_at"], timestamp::format(deleted_at));

    // A second deletion is 410 too, never an error of ours.
    let again = w.delete_code_step("u1").await;
    deleted_record(&w.delete(&u1, &q, &again).await.unwrap_err(), &q);

    // The sweeper has nothing to expire, and expiry would not turn it into EXPIRED.
    w.clock
        .set(generated + TimeDelta::days(7) + TimeDelta::minutes(1));
    assert_eq!(w.sweeper.run_once().await.unwrap().expired, 0);
    ReportStore::expire(w.store.as_ref(), &q).await.unwrap();
    assert_eq!(w.query(&q).await.phase, QueryPhase::Deleted);
}

#[tokio::test]
async fn deleting_needs_a_fresh_delete_report_step_up_and_a_readable_own_report() {
    let w = world();
    let u1 = user("u1");

    // Not ready: refused before the code is looked at.
    let q = w.icbc_answered("u1", vec![]).await;
    let step = w.delete_code_step("u1").await;
    let e = w.delete(&u1, &q, &step).await.unwrap_err();
    assert!(matches!(e, ServiceError::ReportNotReady), "{e:?}");
    w.answer(&q, "CMB", vec![]).await;
    w.aggregator.aggregate(&q).await.unwrap();

    // Another user's query, or no query: 404, and u2's code is not used up.
    let u2_step = w.delete_code_step("u2").await;
    let e = w.delete(&user("u2"), &q, &u2_step).await.unwrap_err();
    assert!(matches!(e, ServiceError::NotFound), "{e:?}");
    for bad in ["nope", "", "../x", &QueryId::generate().to_string()] {
        let e = w
            .view
            .delete(&u1, bad, same_proof(&step))
            .await
            .unwrap_err();
        assert!(matches!(e, ServiceError::NotFound), "{bad}: {e:?}");
    }

    // Proofs for viewing (or submitting) do not delete.
    let view_code = w.view_code_step("u1").await;
    let e = w.delete(&u1, &q, &view_code).await.unwrap_err();
    assert!(matches!(e, ServiceError::VerificationFailed), "{e:?}");
    let sub = w.sms_code("u1", Purpose::SubmitQuery, "445566").await;
    let e = w
        .delete(&u1, &q, &code_step(&sub, "445566"))
        .await
        .unwrap_err();
    assert!(matches!(e, ServiceError::VerificationFailed), "{e:?}");
    let view_face = w.face_token("u1", "view-face");
    let e = w.delete(&u1, &q, &face_step(&view_face)).await.unwrap_err();
    assert!(matches!(e, ServiceError::FaceVerificationFailed), "{e:?}");
    let wrong = w.delete_code_step("u1").await;
    let StepUp::Code { verification } = &wrong else {
        unreachable!()
    };
    let e = w
        .delete(&u1, &q, &code_step(&verification.verification_id, "000000"))
        .await
        .unwrap_err();
    assert!(matches!(e, ServiceError::VerificationFailed), "{e:?}");
    assert!(w.stored(&q).await.is_some(), "nothing was deleted");
    assert_eq!(w.query(&q).await.phase, QueryPhase::Reported);

    // The view code still opens it (the refusals above did not use it).
    assert!(w.view_report(&u1, &q, &view_code).await.is_ok());

    // A DELETE_REPORT face pass deletes, once.
    let token = w.delete_face_token("u1", "delete-face-1");
    w.delete(&u1, &q, &face_step(&token)).await.unwrap();
    assert_eq!(w.query(&q).await.phase, QueryPhase::Deleted);
}

#[tokio::test]
async fn an_expired_report_cannot_be_deleted_and_stays_expired() {
    let w = world();
    let u1 = user("u1");
    let (q, expires) = w.reported_expiring("u1").await;
    w.clock.set(expires);
    let step = w.delete_code_step("u1").await;
    let e = w.delete(&u1, &q, &step).await.unwrap_err();
    let ServiceError::ReportExpired { query } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(query["report_status"], "EXPIRED");
    assert_eq!(w.query(&q).await.report_deleted_at, None);
}

#[tokio::test]
async fn twenty_concurrent_deletions_delete_once_and_the_rest_are_410() {
    let w = world();
    let u1 = user("u1");
    let q = w.reported("u1").await;
    let tokens: Vec<String> = (0..20)
        .map(|i| w.delete_face_token("u1", &format!("delete-race-{i}")))
        .collect();
    let steps: Vec<StepUp> = tokens.iter().map(|t| face_step(t)).collect();
    let results = join_all(steps.iter().map(|s| w.delete(&u1, &q, s))).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 1, "{results:?}");
    for e in results.iter().filter_map(|r| r.as_ref().err()) {
        deleted_record(e, &q);
    }
    assert_eq!(w.query(&q).await.phase, QueryPhase::Deleted);
}
