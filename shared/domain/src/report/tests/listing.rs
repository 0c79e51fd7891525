//! The user's list of queries and a query's detail, and 404 for anyone else's.

use super::*;

#[tokio::test]
async fn the_list_is_newest_first_and_moves_from_pending_to_ready_to_expired() {
    let w = world();
    let u1 = user("u1");
    let q1 = w.submit("u1", &["ICBC"]).await;
    let list = w.view.list(&u1).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0].status, list[0].report_status),
        ("PENDING", "PENDING")
    );
    assert_eq!(list[0].report_generated_at, None);

    w.clock.advance(TimeDelta::seconds(5));
    w.answer(&q1, "ICBC", vec![]).await;
    w.aggregator.aggregate(&q1).await.unwrap();
    let generated = w.now();
    let list = w.view.list(&u1).await.unwrap();
    assert_eq!((list[0].status, list[0].report_status), ("READY", "READY"));
    assert_eq!(list[0].report_generated_at, Some(generated));
    assert_eq!(
        list[0].report_expires_at,
        Some(generated + TimeDelta::days(7))
    );

    // A week later, a second query.
    w.clock
        .set(generated + TimeDelta::days(7) - TimeDelta::minutes(1));
    let q2 = w.submit("u1", &["CMB", "ABC"]).await;
    let list = w.view.list(&u1).await.unwrap();
    let ids: Vec<&str> = list.iter().map(|v| v.query_id.as_str()).collect();
    assert_eq!(ids, [q2.to_string(), q1.to_string()], "newest first");
    assert_eq!(World::report_status(&list, &q2), "PENDING");
    assert_eq!(World::report_status(&list, &q1), "READY");
    assert_eq!(list[0].banks, ["CMB", "ABC"]);

    // Expired the moment its 7 days are over, though the item is still there.
    w.clock.set(generated + TimeDelta::days(7));
    assert!(w.stored(&q1).await.is_some());
    let list = w.view.list(&u1).await.unwrap();
    assert_eq!(World::report_status(&list, &q1), "EXPIRED");
    assert_eq!(World::report_status(&list, &q2), "PENDING");
    let v = serde_json::to_value(&list[1]).unwrap();
    assert_eq!(v["report_status"], "EXPIRED");
    assert_eq!(v["query_id"], q1.to_string());

    // Nobody else sees them.
    assert!(w.view.list(&user("u2")).await.unwrap().is_empty());
}

#[tokio::test]
async fn detail_shows_per_bank_progress_in_the_chosen_order() {
    let w = world();
    let q = w.submit("u1", &["CCB", "ICBC", "ABC", "BOC", "CMB"]).await;
    w.answer(&q, "ICBC", vec![card(CardKind::Debit, "62221234")])
        .await;
    w.settle(&q, "ABC", LegState::NoResponse, vec![]).await;
    w.settle(&q, "BOC", LegState::Failed, vec![]).await;
    w.accept(&q, "CMB").await;

    let d = w.view.detail(&user("u1"), &q.to_string()).await.unwrap();
    assert_eq!(d.record.query_id, q.to_string());
    assert_eq!(
        (d.record.status, d.record.report_status),
        ("PENDING", "PENDING")
    );
    let progress: Vec<(&str, &str, &str)> = d
        .progress
        .iter()
        .map(|p| (p.bank_code.as_str(), p.bank_name.as_str(), p.status))
        .collect();
    assert_eq!(
        progress,
        [
            // Never sent yet.
            ("CCB", "建设银行", "QUEUED"),
            ("ICBC", "工商银行", "RESPONDED"),
            ("ABC", "农业银行", "NO_RESPONSE"),
            ("BOC", "中国银行", "FAILED"),
            ("CMB", "招商银行", "PENDING"),
        ]
    );
    let v = serde_json::to_value(&d).unwrap();
    assert_eq!(v["query_id"], q.to_string());
    assert_eq!(v["report_status"], "PENDING");
    assert_eq!(
        v["progress"][3],
        json!({"bank_code": "BOC", "bank_name": "中国银行", "status": "FAILED"})
    );
    // No card of the answered leg shows here.
    assert!(!v.to_string().contains("6222"));
}

#[tokio::test]
async fn a_leg_waiting_to_be_sent_again_shows_retrying_and_one_out_pending() {
    let w = world();
    let q = w.submit("u1", &["ICBC", "CMB"]).await;
    let icbc = w.code("ICBC");
    // ICBC's first attempt failed and waits for its retry; CMB's is out.
    assert!(w.store.claim_attempt(&q, &icbc, 0, w.now()).await.unwrap());
    w.store
        .schedule_retry(&q, &icbc, 1, w.now() + TimeDelta::seconds(2))
        .await
        .unwrap();
    assert!(w
        .store
        .claim_attempt(&q, &w.code("CMB"), 0, w.now())
        .await
        .unwrap());
    let d = w.view.detail(&user("u1"), &q.to_string()).await.unwrap();
    let status: Vec<&str> = d.progress.iter().map(|p| p.status).collect();
    assert_eq!(status, ["RETRYING", "PENDING"]);
}

#[tokio::test]
async fn another_users_or_a_malformed_query_id_is_not_found() {
    let w = world();
    let q = w.reported("u1").await;
    let u2 = user("u2");
    assert!(matches!(
        w.view.detail(&u2, &q.to_string()).await,
        Err(ServiceError::NotFound)
    ));
    let body = w.view_code_step("u2").await;
    let e = w.view_refused(&u2, &q, &body).await;
    assert!(matches!(e, ServiceError::NotFound), "{e:?}");
    // u2's code was not used up by it.
    let q2 = w.reported("u2").await;
    assert!(w.view_report(&u2, &q2, &body).await.is_ok());

    for bad in [
        "nope",
        "",
        &q.to_string().to_lowercase(),
        "01ARZ3NDEKTSV4RRFFQ69G5FAVX",
        "../x",
    ] {
        assert!(
            matches!(
                w.view.detail(&user("u1"), bad).await,
                Err(ServiceError::NotFound)
            ),
            "{bad}"
        );
        let body = w.view_code_step("u1").await;
        assert!(
            matches!(
                w.view.report(&user("u1"), bad, same_proof(&body)).await,
                Err(ServiceError::NotFound)
            ),
            "{bad}"
        );
    }
    // A well-formed id that does not exist.
    assert!(matches!(
        w.view
            .detail(&user("u1"), &QueryId::generate().to_string())
            .await,
        Err(ServiceError::NotFound)
    ));
    assert!(w.query(&q).await.last_viewed_at.is_none());
}
