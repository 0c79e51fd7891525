//! A full card number anywhere in an answer, plain or disguised, is never stored.

use super::*;

/// Answers to `q`/`inq` that each hide a full card number somewhere.
fn card_number_cases(q: &str, inq: &str) -> Vec<(&'static str, String)> {
    let card =
        |first4: &str, last4: &str| json!({"kind": "DEBIT", "first4": first4, "last4": last4});
    vec![
        (
            "plain, in an extra field",
            json!({"query_id": q, "inquiry_id": inq, "status": "FOUND",
                   "cards": [card("6222", "1234")], "card_number": "6222021234567894"})
            .to_string(),
        ),
        (
            "plain 19 digits, in a card's extra field",
            json!({"query_id": q, "inquiry_id": inq, "status": "FOUND",
                   "cards": [{"kind": "DEBIT", "first4": "6222", "last4": "1234",
                              "pan": "6222021234567891234"}]})
            .to_string(),
        ),
        (
            "spaced, in first4",
            json!({"query_id": q, "inquiry_id": inq, "status": "FOUND",
                   "cards": [card("6222 0212 3456 7894", "7894")]})
            .to_string(),
        ),
        (
            "dashed, in last4",
            json!({"query_id": q, "inquiry_id": inq, "status": "FOUND",
                   "cards": [card("6222", "6222-0212-3456-7894")]})
            .to_string(),
        ),
        (
            "spaced, in inquiry_id",
            json!({"query_id": q, "inquiry_id": "4111 1111 1111 1111", "status": "FOUND",
                   "cards": [card("4111", "1111")]})
            .to_string(),
        ),
        (
            "plain, in status",
            json!({"query_id": q, "inquiry_id": inq, "status": "6222021234567894",
                   "cards": [card("6222", "1234")]})
            .to_string(),
        ),
        (
            "plain, as a key",
            json!({"query_id": q, "inquiry_id": inq, "status": "FOUND",
                   "cards": [card("6222", "1234")], "6222021234567894": true})
            .to_string(),
        ),
        (
            "as a number, not a string",
            format!(
                r#"{{"query_id":"{q}","inquiry_id":"{inq}","status":"FOUND","cards":[{{"kind":"DEBIT","first4":"6222","last4":"1234"}}],"n":6222021234567894}}"#
            ),
        ),
        (
            "13 digits, spaced",
            json!({"query_id": q, "inquiry_id": inq, "status": "FOUND",
                   "cards": [card("6222", "1234")], "note": "4222 2222 2222 2"})
            .to_string(),
        ),
    ]
}

#[tokio::test]
async fn a_full_card_number_in_any_field_fails_the_leg_and_nothing_of_it_is_stored() {
    let b = Banks::get().await;
    let path = path_of("SPDB");
    let count = card_number_cases("q", "i").len();
    // Signed by the bank that owns the leg: the leg fails at once (one query per case).
    for i in 0..count {
        let p = b.pending_query(&["SPDB", "CZB"]).await;
        let (what, body) = card_number_cases(&p.query_id, p.inquiry("SPDB")).swap_remove(i);
        let h = b.sign("SPDB", &path, &body);
        b.refused_failing(
            what,
            &p,
            "SPDB",
            &h,
            &body,
            (422, "CARD_NUMBER_REJECTED"),
            "CARD_NUMBER_IN_ANSWER",
        )
        .await;
    }
}

/// Card numbers the raw-text scan can miss: after a `+` (16 or more digits cannot be an
/// E.164 phone number, which has at most 15) and written with JSON escapes (the decoded
/// payload holds the number). Each must be 422 like any other; nothing is stored either
/// way. All cases are tried before asserting, so a failure lists every one that slipped.
#[tokio::test]
async fn a_disguised_full_card_number_is_refused_with_422() {
    let b = Banks::get().await;
    let path = path_of("PAB");
    let cases = |q: &str, inq: &str| -> Vec<(&'static str, String)> {
        let with = |extra: &str| {
            format!(
                r#"{{"query_id":"{q}","inquiry_id":"{inq}","status":"FOUND","cards":[{{"kind":"DEBIT","first4":"6222","last4":"1234"}}],{extra}}}"#
            )
        };
        vec![
            ("'+' then 16 digits", with(r#""note":"+6222021234567894""#)),
            (
                "'+' then 19 digits",
                with(r#""note":"+6222021234567891234""#),
            ),
            (
                "spaced with JSON-escaped spaces",
                with(r#""note":"6222\u00200212\u00203456\u00207894""#),
            ),
            (
                "JSON-escaped digits",
                with(
                    r#""note":"\u0036\u0032\u0032\u0032\u0030\u0032\u0031\u0032\u0033\u0034\u0035\u0036\u0037\u0038\u0039\u0034""#,
                ),
            ),
            (
                "grouped by no-break spaces",
                with(r#""note":"6222\u00a00212\u00a03456\u00a07894""#),
            ),
            (
                "grouped by ideographic spaces",
                with("\"note\":\"6222\u{3000}0212\u{3000}3456\u{3000}7894\""),
            ),
            ("grouped by dots", with(r#""note":"6222.0212.3456.7894""#)),
            (
                "grouped by en dashes",
                with("\"note\":\"6222\u{2013}0212\u{2013}3456\u{2013}7894\""),
            ),
            (
                "grouped by runs of spaces",
                with(r#""note":"6222   0212  3456    7894""#),
            ),
        ]
    };
    let count = cases("q", "i").len();
    for i in 0..count {
        let p = b.pending_query(&["PAB", "CZB"]).await;
        let (what, body) = cases(&p.query_id, p.inquiry("PAB")).swap_remove(i);
        let h = b.sign("PAB", &path, &body);
        b.refused_failing(
            what,
            &p,
            "PAB",
            &h,
            &body,
            (422, "CARD_NUMBER_REJECTED"),
            "CARD_NUMBER_IN_ANSWER",
        )
        .await;
    }
}
