//! Which leg it answers: only the owning bank's leg of a known query.

use super::*;

#[tokio::test]
async fn another_banks_leg_is_not_found_and_nothing_is_stored() {
    let b = Banks::get().await;
    let not_found = (404, "NOT_FOUND");
    let path = path_of("ICBC");
    // The query has no ICBC leg at all: nothing changes.
    let q = b.pending_query(&["CMB"]).await;
    let body = answer(&q.query_id, q.inquiry("CMB"), &some_cards());
    let h = b.sign("ICBC", &path, &body);
    let items_before = b.query_items(&q.query_id).await.len();
    b.refused(
        "ICBC answering a query without an ICBC leg",
        &q,
        &["CMB"],
        &path,
        &h,
        &body,
        not_found,
        false,
    )
    .await;
    assert_eq!(
        b.query_items(&q.query_id).await.len(),
        items_before,
        "no ICBC leg was created"
    );
    // CMB's leg answered under CMB's name with ICBC's key: not CMB's signature.
    let body = answer(&q.query_id, q.inquiry("CMB"), &some_cards());
    let mut h = b.sign("ICBC", &path_of("CMB"), &body);
    h.bank_code = "CMB".into();
    b.refused(
        "CMB's leg signed with ICBC's key",
        &q,
        &["CMB"],
        &path_of("CMB"),
        &h,
        &body,
        (401, "UNAUTHENTICATED"),
        false,
    )
    .await;
}

/// ICBC, signing correctly, names its own leg of the query with an inquiry id that is
/// not that leg's (CMB's, or one we never issued): the ids do not match, so ICBC's leg
/// fails at once; CMB's leg is untouched.
#[tokio::test]
async fn mismatched_ids_from_the_owning_bank_fail_its_leg_at_once() {
    let b = Banks::get().await;
    let path = path_of("ICBC");
    for (what, inquiry) in [
        ("CMB's inquiry called back by ICBC", None),
        (
            "an unknown inquiry id",
            Some(ulid::Ulid::generate().to_string()),
        ),
    ] {
        let p = b.pending_query(&["ICBC", "CMB"]).await;
        let inquiry = inquiry.unwrap_or_else(|| p.inquiry("CMB").to_owned());
        let cmb_before = b.leg_item(&p.query_id, "CMB").await;
        let body = answer(&p.query_id, &inquiry, &some_cards());
        let h = b.sign("ICBC", &path, &body);
        b.refused_failing(
            what,
            &p,
            "ICBC",
            &h,
            &body,
            (404, "NOT_FOUND"),
            "MISMATCHED_ANSWER",
        )
        .await;
        assert_eq!(b.leg_item(&p.query_id, "CMB").await, cmb_before, "{what}");
    }
}

#[tokio::test]
async fn an_unknown_query_is_not_found_and_nothing_is_stored() {
    let b = Banks::get().await;
    let p = b.pending_query(&["PSBC"]).await;
    let unknown = ulid::Ulid::generate().to_string();
    let body = answer(&unknown, &ulid::Ulid::generate().to_string(), &some_cards());
    let path = path_of("PSBC");
    let h = b.sign("PSBC", &path, &body);
    let reply = b.post(&path, &h, &body).await;
    assert_eq!((reply.status, reply.code()), (404, Some("NOT_FOUND")));
    assert!(
        b.query_items(&unknown).await.is_empty(),
        "nothing stored under the unknown query"
    );
    assert!(!b.nonce_stored("PSBC", &h.nonce).await);
    // An unknown query id with a real leg's inquiry id: still 404, that leg untouched.
    let body = answer(&unknown, p.inquiry("PSBC"), &some_cards());
    let h = b.sign("PSBC", &path, &body);
    b.refused(
        "unknown query, real inquiry id",
        &p,
        &["PSBC"],
        &path,
        &h,
        &body,
        (404, "NOT_FOUND"),
        false,
    )
    .await;
    assert!(b.query_items(&unknown).await.is_empty());
}
