//! Integrity of the sealed report against someone able to write the table.

use super::*;

#[tokio::test]
async fn a_report_whose_stored_life_owner_or_key_was_rewritten_is_never_shown() {
    type Edit = fn(&mut StoredReport, &mut QueryRecord);
    let cases: [(&str, &str, Edit); 7] = [
        ("untouched", "u1", |_, _| {}),
        ("a longer life", "u1", |r, q| {
            r.expires_at += TimeDelta::days(30);
            q.report_expires_at = Some(r.expires_at);
        }),
        ("an earlier generation", "u1", |r, q| {
            r.generated_at -= TimeDelta::days(1);
            q.report_generated_at = Some(r.generated_at);
        }),
        ("another user", "u2", |r, q| {
            r.user_id = user("u2");
            q.user_id = user("u2");
        }),
        ("another key id", "u1", |r, _| r.sealed.key_id = "k0".into()),
        ("a later deadline", "u1", |_, q| {
            q.report_due_by += TimeDelta::days(1);
        }),
        ("the record's expiry only", "u1", |_, q| {
            q.report_expires_at = q.report_expires_at.map(|e| e + TimeDelta::days(1));
        }),
    ];
    for (why, viewer, edit) in cases {
        let w = world();
        let q = w.reported("u1").await;
        w.store.tamper_report(&q, edit);
        let viewer = user(viewer);
        let shown = w
            .view_report(
                &viewer,
                &q,
                &face_step(&w.face_token(viewer.as_str(), "n-1")),
            )
            .await;
        if why == "untouched" {
            assert_eq!(shown.unwrap()["summary"]["total_cards"], 3);
            continue;
        }
        let Err(e) = shown else {
            panic!("{why}: shown");
        };
        assert!(matches!(e, ServiceError::Internal(_)), "{why}: {e:?}");
        assert!(
            w.query(&q).await.last_viewed_at.is_none(),
            "{why}: no view recorded"
        );
    }
}

#[tokio::test]
async fn a_report_moved_into_another_query_does_not_open() {
    let w = world();
    let q1 = w.reported("u1").await;
    w.clock.advance(TimeDelta::days(8));
    let q2 = w.reported("u1").await;
    let moved = w.stored(&q1).await.unwrap();
    w.store.tamper_report(&q2, |r, q| {
        r.sealed = moved.sealed.clone();
        r.generated_at = moved.generated_at;
        r.expires_at = moved.expires_at;
        q.report_generated_at = Some(moved.generated_at);
        q.report_expires_at = Some(moved.expires_at);
    });
    // q1's times are past by now: put q2's clock back inside q1's life to be sure the
    // refusal is the binding, not the expiry.
    w.clock.set(moved.generated_at + TimeDelta::minutes(1));
    let e = w
        .view_report(&user("u1"), &q2, &face_step(&w.face_token("u1", "n-2")))
        .await
        .unwrap_err();
    assert!(matches!(e, ServiceError::Internal(_)), "{e:?}");
}
