//! Seeing the report: a fresh SMS code or face token every time.

use super::*;

#[tokio::test]
async fn a_report_is_shown_only_after_a_fresh_sms_code_each_time() {
    let w = world();
    let u1 = user("u1");
    let cards = vec![
        card(CardKind::Debit, "62221234"),
        card(CardKind::Credit, "62583456"),
    ];
    let q = w.icbc_answered("u1", cards).await;

    // Not ready yet: refused before the code is looked at, which stays usable.
    let vid = w.sms_code("u1", Purpose::ViewReport, "135790").await;
    let e = w.view_refused(&u1, &q, &code_step(&vid, "135790")).await;
    assert!(matches!(e, ServiceError::ReportNotReady), "{e:?}");

    w.answer(&q, "CMB", vec![]).await;
    w.clock.advance(TimeDelta::seconds(30));
    assert_eq!(
        w.aggregator.aggregate(&q).await.unwrap(),
        AggregateOutcome::Published
    );
    let generated = w.now();

    w.clock.advance(TimeDelta::minutes(1));
    let shown = w
        .view_report(&u1, &q, &code_step(&vid, "135790"))
        .await
        .unwrap();
    assert_eq!(shown["query_id"], q.to_string());
    assert_eq!(shown["summary"]["total_cards"], 2);
    assert_eq!(shown["summary"]["banks"][0]["bank_code"], "ICBC");
    assert_eq!(shown["summary"]["banks"][0]["status"], "RESPONDED");
    assert_eq!(shown["cards"].as_array().unwrap().len(), 2);
    assert!(shown["cards"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["masked_number"] == "6222 **** **** 1234"));
    assert_eq!(shown["notices"].as_array().unwrap().len(), 5);
    // One page holds it all: no cursor to a next one.
    let mut shown = shown;
    let page = shown.as_object_mut().unwrap();
    assert_eq!(page.remove("next_cursor"), Some(Value::Null));
    assert_eq!(page.remove("cursor_expires_at"), Some(Value::Null));
    let expected = w.open(&w.stored(&q).await.unwrap()).await;
    assert_eq!(serde_json::from_value::<Report>(shown).unwrap(), expected);
    assert_eq!(expected.generated_at, generated);
    let viewed = w.now();
    assert_eq!(w.query(&q).await.last_viewed_at, Some(viewed));

    // The same code again: every view needs a fresh step-up.
    w.clock.advance(TimeDelta::seconds(10));
    let e = w.view_refused(&u1, &q, &code_step(&vid, "135790")).await;
    assert!(matches!(e, ServiceError::VerificationFailed), "{e:?}");
    assert_eq!(
        w.query(&q).await.last_viewed_at,
        Some(viewed),
        "a refused view is not recorded"
    );

    // A wrong code: refused, nothing shown, nothing recorded.
    let vid2 = w.sms_code("u1", Purpose::ViewReport, "112233").await;
    let e = w.view_refused(&u1, &q, &code_step(&vid2, "332211")).await;
    assert!(matches!(e, ServiceError::VerificationFailed), "{e:?}");
    assert_eq!(w.query(&q).await.last_viewed_at, Some(viewed));

    // A code for submitting a query does not open a report.
    let sub = w.sms_code("u1", Purpose::SubmitQuery, "445566").await;
    let e = w.view_refused(&u1, &q, &code_step(&sub, "445566")).await;
    assert!(matches!(e, ServiceError::VerificationFailed), "{e:?}");
    // Nor does another user's code, a malformed code or an unknown verification id.
    let other = w.sms_code("u2", Purpose::ViewReport, "778899").await;
    for body in [
        code_step(&other, "778899"),
        code_step(&vid2, "11223"),
        code_step(&VerificationId::generate().to_string(), "112233"),
        code_step("not-an-id", "112233"),
    ] {
        let e = w.view_refused(&u1, &q, &body).await;
        assert!(matches!(e, ServiceError::VerificationFailed), "{e:?}");
    }
    // An expired code.
    let late = w.sms_code("u1", Purpose::ViewReport, "990011").await;
    w.clock.advance(TimeDelta::minutes(5));
    let e = w.view_refused(&u1, &q, &code_step(&late, "990011")).await;
    assert!(matches!(e, ServiceError::VerificationFailed), "{e:?}");
    assert_eq!(w.query(&q).await.last_viewed_at, Some(viewed));

    // A fresh right code works again and records the new view.
    let fresh = w.view_code_step("u1").await;
    assert!(w.view_report(&u1, &q, &fresh).await.is_ok());
    assert_eq!(w.query(&q).await.last_viewed_at, Some(w.now()));
}

#[tokio::test]
async fn wrong_codes_burn_a_view_code_after_five_tries() {
    let w = world();
    let u1 = user("u1");
    let q = w.reported("u1").await;
    let vid = w.sms_code("u1", Purpose::ViewReport, "123456").await;
    for _ in 0..5 {
        let e = w.view_refused(&u1, &q, &code_step(&vid, "000000")).await;
        assert!(matches!(e, ServiceError::VerificationFailed));
    }
    let e = w.view_refused(&u1, &q, &code_step(&vid, "123456")).await;
    assert!(
        matches!(e, ServiceError::VerificationFailed),
        "a burnt code stays burnt: {e:?}"
    );
    assert!(w.query(&q).await.last_viewed_at.is_none());
}

#[tokio::test]
async fn a_face_token_opens_the_report_once() {
    let w = world();
    let u1 = user("u1");
    let q = w.reported("u1").await;
    let token = w.face_token("u1", "face-nonce-1");
    let shown = w.view_report(&u1, &q, &face_step(&token)).await.unwrap();
    assert_eq!(shown["query_id"], q.to_string());
    assert_eq!(w.query(&q).await.last_viewed_at, Some(w.now()));

    w.clock.advance(TimeDelta::seconds(5));
    let e = w.view_refused(&u1, &q, &face_step(&token)).await;
    assert!(matches!(e, ServiceError::FaceVerificationFailed), "{e:?}");

    // Another user's token, a failed check, a stale token, garbage: refused.
    let others = w.face_token_with("u2", "pass", w.now(), "face-nonce-2");
    let failed = w.face_token_with("u1", "fail", w.now(), "face-nonce-3");
    let stale = w.face_token_with(
        "u1",
        "pass",
        w.now() - TimeDelta::minutes(6),
        "face-nonce-4",
    );
    let (forger, _) = dev::generate_ed25519();
    let forged = w
        .face_provider(&forger, FACE_AUDIENCE)
        .token("u1", "VIEW_REPORT", "pass", w.now(), "face-nonce-5")
        .unwrap();
    let elsewhere = w
        .face_provider(&w.face_private, "another-service")
        .token("u1", "VIEW_REPORT", "pass", w.now(), "face-nonce-7")
        .unwrap();
    let submit_pass = w
        .face_provider(&w.face_private, FACE_AUDIENCE)
        .token("u1", "SUBMIT_QUERY", "pass", w.now(), "face-nonce-8")
        .unwrap();
    let refused = [others, failed, stale, forged, elsewhere, submit_pass];
    for t in refused.into_iter().chain(["garbage".to_owned()]) {
        let e = w.view_refused(&u1, &q, &face_step(&t)).await;
        assert!(matches!(e, ServiceError::FaceVerificationFailed), "{e:?}");
    }
    // A new token (new nonce) works.
    let again = w.face_token("u1", "face-nonce-6");
    assert!(w.view_report(&u1, &q, &face_step(&again)).await.is_ok());
}
