//! Who sent it: the signature, the timestamp window, single-use nonces, the bank in the
//! path.

use super::*;

#[tokio::test]
async fn a_bad_signature_is_refused_and_nothing_is_stored() {
    let b = Banks::get().await;
    let p = b.pending_query(&["ICBC"]).await;
    let path = path_of("ICBC");
    let body = answer(&p.query_id, p.inquiry("ICBC"), &some_cards());
    let unauth = (401, "UNAUTHENTICATED");

    // Signed with another bank's key.
    let mut h = b.sign("ABC", &path, &body);
    h.bank_code = "ICBC".into();
    b.refused(
        "another bank's key",
        &p,
        &["ICBC"],
        &path,
        &h,
        &body,
        unauth,
        false,
    )
    .await;
    // Signed correctly, then the body changed (one more card).
    let h = b.sign("ICBC", &path, &body);
    let tampered = answer(
        &p.query_id,
        p.inquiry("ICBC"),
        &json!([{"kind": "DEBIT", "first4": "6222", "last4": "9999"}]),
    );
    b.refused(
        "tampered body",
        &p,
        &["ICBC"],
        &path,
        &h,
        &tampered,
        unauth,
        false,
    )
    .await;
    // Signed over another path.
    let h = b.sign("ICBC", "/v1/bank-callbacks/ABC", &body);
    b.refused(
        "another path",
        &p,
        &["ICBC"],
        &path,
        &h,
        &body,
        unauth,
        false,
    )
    .await;
    // One flipped hex digit.
    let mut h = b.sign("ICBC", &path, &body);
    let flipped = if h.signature.starts_with('0') {
        "1"
    } else {
        "0"
    };
    h.signature.replace_range(0..1, flipped);
    b.refused(
        "flipped signature",
        &p,
        &["ICBC"],
        &path,
        &h,
        &body,
        unauth,
        false,
    )
    .await;
    // X-Bank-Code differing from the path (signed correctly by that other bank).
    let h = b.sign("ABC", &path, &body);
    b.refused(
        "X-Bank-Code ABC on ICBC's path",
        &p,
        &["ICBC"],
        &path,
        &h,
        &body,
        unauth,
        false,
    )
    .await;
    // Headers missing: no signature at all.
    let before = b.leg_item(&p.query_id, "ICBC").await;
    let reply = b
        .api
        .call("POST", &path, None, &[], Some(body.clone()))
        .await;
    assert_eq!((reply.status, reply.code()), (401, Some("UNAUTHENTICATED")));
    assert_eq!(b.leg_item(&p.query_id, "ICBC").await, before);
    // After all that, the bank's own correct message is still accepted.
    let (reply, _) = b.callback("ICBC", &body).await;
    assert_eq!(reply.status, 204, "{reply:?}");
}

#[tokio::test]
async fn a_stale_timestamp_is_refused_and_nothing_is_stored() {
    let b = Banks::get().await;
    let p = b.pending_query(&["BOC"]).await;
    let path = path_of("BOC");
    let body = answer(&p.query_id, p.inquiry("BOC"), &some_cards());
    let unauth = (401, "UNAUTHENTICATED");
    for (what, offset) in [
        ("six minutes old", -360),
        ("an hour old", -3600),
        ("six minutes ahead", 360),
    ] {
        let nonce = signing::new_nonce();
        let h = b.sign_with("BOC", &path, &body, now_ts() + offset, &nonce);
        b.refused(what, &p, &["BOC"], &path, &h, &body, unauth, false)
            .await;
    }
    // Within the window it is accepted.
    let h = b.sign_with("BOC", &path, &body, now_ts() - 60, &signing::new_nonce());
    let reply = b.post(&path, &h, &body).await;
    assert_eq!(reply.status, 204, "{reply:?}");
}

#[tokio::test]
async fn a_replayed_nonce_is_refused_even_on_a_message_for_another_leg() {
    let b = Banks::get().await;
    let first = b.pending_query(&["CCB"]).await;
    let second = b.pending_query(&["CCB"]).await;
    let path = path_of("CCB");
    let nonce = signing::new_nonce();
    let body1 = answer(&first.query_id, first.inquiry("CCB"), &some_cards());
    let h1 = b.sign_with("CCB", &path, &body1, now_ts(), &nonce);
    let reply = b.post(&path, &h1, &body1).await;
    assert_eq!(reply.status, 204, "{reply:?}");
    assert!(b.nonce_stored("CCB", &nonce).await);

    // The same nonce, freshly signed over another leg's answer: a replay.
    let body2 = answer(&second.query_id, second.inquiry("CCB"), &some_cards());
    let h2 = b.sign_with("CCB", &path, &body2, now_ts(), &nonce);
    b.refused(
        "replayed nonce",
        &second,
        &["CCB"],
        &path,
        &h2,
        &body2,
        (401, "UNAUTHENTICATED"),
        true,
    )
    .await;
    let leg = b.leg_item(&second.query_id, "CCB").await;
    assert_eq!(
        leg.get("state"),
        Some(&AttributeValue::S("ACCEPTED".into()))
    );
    // With a fresh nonce the second leg's answer goes through.
    let (reply, _) = b.callback("CCB", &body2).await;
    assert_eq!(reply.status, 204, "{reply:?}");
}

#[tokio::test]
async fn an_unknown_bank_in_the_path_is_unauthenticated() {
    let b = Banks::get().await;
    let p = b.pending_query(&["CGB"]).await;
    let body = answer(&p.query_id, p.inquiry("CGB"), &some_cards());
    for bank in ["XYZB", "NOBANK"] {
        let path = path_of(bank);
        // Signed with a real bank's key under the unknown code.
        let mut h = b.sign("CGB", &path, &body);
        h.bank_code = bank.into();
        h.signature = signing::signature(
            b.secret("CGB"),
            &h.timestamp,
            &h.nonce,
            "POST",
            &path,
            body.as_bytes(),
        );
        b.refused(
            &format!("unknown bank {bank}"),
            &p,
            &["CGB"],
            &path,
            &h,
            &body,
            (401, "UNAUTHENTICATED"),
            false,
        )
        .await;
    }
}
