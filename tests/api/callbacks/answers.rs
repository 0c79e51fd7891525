//! A signed answer is recorded with its cards; a second answer for a settled leg is
//! refused unless it is byte-identical.

use super::*;

#[tokio::test]
async fn a_signed_callback_is_recorded_with_its_cards() {
    let b = Banks::get().await;
    let p = b.pending_query(&["ICBC", "ABC"]).await;
    let body = answer(&p.query_id, p.inquiry("ICBC"), &some_cards());
    let (reply, h) = b.callback("ICBC", &body).await;
    assert_eq!(reply.status, 204, "{reply:?}");
    assert!(reply.body.is_none());

    let raw = b.leg_item(&p.query_id, "ICBC").await;
    assert_eq!(
        raw.get("state"),
        Some(&AttributeValue::S("ANSWERED".into()))
    );
    assert_eq!(
        raw.get("answer_digest"),
        Some(&AttributeValue::S(hex_sha256(body.as_bytes()))),
        "the digest of the raw body, for idempotent repeats"
    );
    let leg = b
        .store()
        .leg(
            &QueryId::parse(&p.query_id).unwrap(),
            &shared::config::ServiceConfig::parse(shared::config::DEFAULT_CONFIG)
                .unwrap()
                .banks
                .parse("ICBC")
                .unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    // Sealed: the item holds no card in clear; the report key opens the bank's cards.
    let text = format!("{raw:?}");
    for c in some_cards().as_array().unwrap() {
        let (f, l) = (c["first4"].as_str().unwrap(), c["last4"].as_str().unwrap());
        assert!(
            !(text.contains(f) && text.contains(l)),
            "{f}…{l} in clear: {text}"
        );
    }
    assert!(
        !text.contains("first4") && !text.contains("last4"),
        "{text}"
    );
    assert_eq!(leg.cards.len(), 1);
    assert_eq!(
        serde_json::to_value(b.opened_cards(&p.query_id, "ICBC").await).unwrap(),
        some_cards()
    );
    assert!(b.nonce_stored("ICBC", &h.nonce).await, "the nonce is spent");
    // The other leg still waits, and the app sees ICBC as responded.
    let abc = b.leg_item(&p.query_id, "ABC").await;
    assert_eq!(
        abc.get("state"),
        Some(&AttributeValue::S("ACCEPTED".into()))
    );
    let detail = b
        .api
        .get_json(
            &format!("/v1/card-queries/{}", p.query_id),
            &b.api.token(&p.user),
        )
        .await
        .body
        .unwrap();
    assert_eq!(detail["report_status"], "PENDING");
    let progress: BTreeMap<String, String> = detail["progress"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["bank_code"].as_str().unwrap().to_owned(),
                x["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(progress["ICBC"], "RESPONDED", "{detail}");
    assert_ne!(progress["ABC"], "RESPONDED", "{detail}");
}

#[tokio::test]
async fn a_different_second_answer_is_refused_and_a_byte_identical_repeat_succeeds() {
    let b = Banks::get().await;
    let p = b.pending_query(&["CITIC", "CEB"]).await;
    let path = path_of("CITIC");
    let body = answer(&p.query_id, p.inquiry("CITIC"), &some_cards());
    let (reply, first) = b.callback("CITIC", &body).await;
    assert_eq!(reply.status, 204, "{reply:?}");
    let answered = b.leg_item(&p.query_id, "CITIC").await;

    // A different second answer: fewer cards, no cards, an ERROR, the same cards
    // serialised differently.
    let fewer = answer(
        &p.query_id,
        p.inquiry("CITIC"),
        &json!([{"kind": "DEBIT", "first4": "6222", "last4": "1234"}]),
    );
    let none = answer(&p.query_id, p.inquiry("CITIC"), &json!([]));
    let error = json!({"query_id": p.query_id, "inquiry_id": p.inquiry("CITIC"),
                       "status": "ERROR", "cards": []})
    .to_string();
    let reformatted =
        serde_json::to_string_pretty(&serde_json::from_str::<Value>(&body).unwrap()).unwrap();
    for (what, other) in [
        ("fewer cards", fewer),
        ("no cards", none),
        ("ERROR", error),
        ("same content, other bytes", reformatted),
    ] {
        let h = b.sign("CITIC", &path, &other);
        b.refused(
            what,
            &p,
            &["CITIC", "CEB"],
            &path,
            &h,
            &other,
            (409, "ALREADY_ANSWERED"),
            false,
        )
        .await;
    }
    // The bank repeats its answer byte for byte (fresh timestamp and nonce, as a bank
    // retrying does): an idempotent success that changes nothing.
    let query_before = b.query_item(&p.query_id).await;
    for _ in 0..2 {
        let (reply, _) = b.callback("CITIC", &body).await;
        assert_eq!(reply.status, 204, "an identical repeat: {reply:?}");
        assert_eq!(b.leg_item(&p.query_id, "CITIC").await, answered);
        assert_eq!(b.query_item(&p.query_id).await, query_before);
    }
    // The accepted message replayed as is (same nonce and timestamp): it would change
    // nothing, so it is the same idempotent success (openapi: "a message that would
    // change state must carry a nonce never used before").
    let reply = b.post(&path, &first, &body).await;
    assert_eq!(
        reply.status, 204,
        "an exact replay of the accepted message: {reply:?}"
    );
    assert_eq!(b.leg_item(&p.query_id, "CITIC").await, answered);
    assert_eq!(b.query_item(&p.query_id).await, query_before);
}
