//! Answers that do not parse, or are too large.

use super::*;

#[tokio::test]
async fn a_malformed_answer_is_refused_and_nothing_is_stored() {
    let b = Banks::get().await;
    let p = b.pending_query(&["HXB"]).await;
    let path = path_of("HXB");
    // Bodies that name no leg of ours (not JSON, no query id): nothing changes.
    let q = &p.query_id;
    let inq = p.inquiry("HXB");
    let cases: Vec<(&str, String)> = malformed_cases(q, inq)
        .into_iter()
        .filter(|(what, _)| NAMES_NO_LEG.contains(what))
        .collect();
    assert_eq!(cases.len(), NAMES_NO_LEG.len());
    for (what, body) in &cases {
        let h = b.sign("HXB", &path, body);
        b.refused(
            what,
            &p,
            &["HXB"],
            &path,
            &h,
            body,
            (400, "MALFORMED_REQUEST"),
            false,
        )
        .await;
    }
}

const NAMES_NO_LEG: [&str; 4] = ["not JSON", "empty", "an array", "query_id not a ULID"];

fn malformed_cases(q: &str, inq: &str) -> Vec<(&'static str, String)> {
    vec![
        ("not JSON", "{\"query_id\": ".to_owned()),
        ("empty", String::new()),
        ("an array", "[]".to_owned()),
        (
            "cards missing",
            json!({"query_id": q, "inquiry_id": inq, "status": "NONE"}).to_string(),
        ),
        (
            "an unknown field",
            json!({"query_id": q, "inquiry_id": inq, "status": "NONE", "cards": [], "note": "x"})
                .to_string(),
        ),
        (
            "FOUND without cards",
            json!({"query_id": q, "inquiry_id": inq, "status": "FOUND", "cards": []}).to_string(),
        ),
        (
            "NONE with cards",
            json!({"query_id": q, "inquiry_id": inq, "status": "NONE", "cards": some_cards()})
                .to_string(),
        ),
        (
            "an unknown status",
            json!({"query_id": q, "inquiry_id": inq, "status": "MAYBE", "cards": []}).to_string(),
        ),
        (
            "first4 of five digits",
            json!({"query_id": q, "inquiry_id": inq, "status": "FOUND",
                   "cards": [{"kind": "DEBIT", "first4": "62220", "last4": "1234"}]})
            .to_string(),
        ),
        (
            "an unknown card kind",
            json!({"query_id": q, "inquiry_id": inq, "status": "FOUND",
                   "cards": [{"kind": "PREPAID", "first4": "6222", "last4": "1234"}]})
            .to_string(),
        ),
        (
            "query_id not a ULID",
            json!({"query_id": "query-1", "inquiry_id": inq, "status": "NONE", "cards": []})
                .to_string(),
        ),
    ]
}

/// A malformed answer that names its leg, signed by the bank that owns it: the leg fails
/// at once (one query per case).
#[tokio::test]
async fn a_malformed_answer_naming_its_leg_fails_the_leg_at_once() {
    let b = Banks::get().await;
    let path = path_of("HXB");
    let named: Vec<usize> = malformed_cases("q", "i")
        .iter()
        .enumerate()
        .filter(|(_, (what, _))| !NAMES_NO_LEG.contains(what))
        .map(|(i, _)| i)
        .collect();
    assert!(named.len() >= 7);
    for i in named {
        let p = b.pending_query(&["HXB", "CZB"]).await;
        let (what, body) = malformed_cases(&p.query_id, p.inquiry("HXB")).swap_remove(i);
        let h = b.sign("HXB", &path, &body);
        b.refused_failing(
            what,
            &p,
            "HXB",
            &h,
            &body,
            (400, "MALFORMED_REQUEST"),
            "MALFORMED_ANSWER",
        )
        .await;
    }
}

#[tokio::test]
async fn an_oversized_body_is_refused_and_nothing_is_stored() {
    let b = Banks::get().await;
    let p = b.pending_query(&["CMBC"]).await;
    let path = path_of("CMBC");
    let q = &p.query_id;
    let inq = p.inquiry("CMBC");
    // Valid JSON padded with whitespace: the size alone is the problem.
    let base = answer(q, inq, &json!([]));
    let pad = |total: usize| {
        let mut s = base.clone();
        s.insert_str(1, &" ".repeat(total - base.len()));
        s
    };
    for size in [16 * 1024 + 1, 64 * 1024] {
        let body = pad(size);
        assert_eq!(body.len(), size);
        let h = b.sign("CMBC", &path, &body);
        b.refused(
            &format!("{size} bytes"),
            &p,
            &["CMBC"],
            &path,
            &h,
            &body,
            (413, "PAYLOAD_TOO_LARGE"),
            false,
        )
        .await;
    }
    // Exactly 16 KiB is within the limit.
    let body = pad(16 * 1024);
    let h = b.sign("CMBC", &path, &body);
    let reply = b.post(&path, &h, &body).await;
    assert_eq!(reply.status, 204, "16 KiB is allowed: {reply:?}");
}

/// Issue 15: a signed body that is not UTF-8 is the function's 400 through the local
/// stack too (cargo lambda watch alone answers 500 before any function runs; the gate
/// delivers such a body base64-encoded, as API Gateway does: decision 60).
#[tokio::test]
async fn a_signed_body_that_is_not_utf8_is_refused_with_400() {
    let b = Banks::get().await;
    let p = b.pending_query(&["HXB"]).await;
    let path = path_of("HXB");
    let before = b.leg_item(&p.query_id, "HXB").await;
    let mut body = answer(&p.query_id, p.inquiry("HXB"), &json!([])).into_bytes();
    // Latin-1 é inside a string: JSON in every respect but the encoding.
    let at = body
        .windows(6)
        .position(|w| w == b"\"NONE\"")
        .expect("the NONE status")
        + 1;
    body[at] = 0xe9;
    assert!(std::str::from_utf8(&body).is_err());
    let h = signing::sign(
        b.secret("HXB"),
        "HXB",
        chrono::Utc::now(),
        "POST",
        &path,
        &body,
    );
    let reply = b
        .api
        .call_bytes("POST", &path, None, &h.pairs(), Some(body))
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (400, Some("MALFORMED_REQUEST")),
        "{reply:?}"
    );
    assert_eq!(b.leg_item(&p.query_id, "HXB").await, before);
}
