//! A report past its 7 days: 410 with the record, before and after the sweeper deletes it.

use super::*;

#[tokio::test]
async fn an_expired_report_is_410_with_the_record_before_and_after_deletion() {
    let w = world();
    let u1 = user("u1");
    let (q, expires) = w.reported_expiring("u1").await;

    // One second before: still shown.
    w.clock.set(expires - TimeDelta::seconds(1));
    let body = w.view_code_step("u1").await;
    assert!(w.view_report(&u1, &q, &body).await.is_ok());

    // From expiry on, whether or not the item is gone yet.
    w.clock.set(expires);
    assert!(w.stored(&q).await.is_some(), "not yet deleted");
    // The record goes into the 410 body as it is (the inbound tests check that body).
    let check = |e: ServiceError| {
        let ServiceError::ReportExpired { query } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(query["query_id"], q.to_string());
        assert_eq!(query["report_status"], "EXPIRED");
        assert!(query.get("summary").is_none() && query.get("cards").is_none());
    };
    let body = w.view_code_step("u1").await;
    check(w.view_refused(&u1, &q, &body).await);
    let token = w.face_token("u1", "face-after-expiry");
    check(w.view_refused(&u1, &q, &face_step(&token)).await);
    assert_eq!(
        w.view
            .detail(&u1, &q.to_string())
            .await
            .unwrap()
            .record
            .report_status,
        "EXPIRED"
    );

    // Deleted by the sweeper: the same answer.
    let stats = w.sweeper.run_once().await.unwrap();
    assert_eq!(stats.expired, 1);
    assert!(w.stored(&q).await.is_none());
    check(w.view_refused(&u1, &q, &body).await);
    assert!(w
        .query(&q)
        .await
        .last_viewed_at
        .is_some_and(|t| t < expires));
}
