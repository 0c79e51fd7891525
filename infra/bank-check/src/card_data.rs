//! What a bank may say about a card: kind, first 4 and last 4 digits, an opaque
//! `card_ref`; nothing that could be (or rebuild) the card number.

use domain::bank::card_number::{contains_card_number, json_contains_card_number_except_ids};
use serde_json::Value;

use crate::spec::Spec;

/// The fields a card object may hold.
const CARD_FIELDS: [&str; 4] = ["kind", "first4", "last4", "card_ref"];

fn four_digits(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.len() == 4 && s.bytes().all(|b| b.is_ascii_digit()))
}

/// Card-data problems of an answer (raw body and its JSON, if any), each as a line
/// without the data itself.
pub fn card_data_problems(body: &[u8], value: Option<&Value>) -> Vec<String> {
    let mut out = Vec::new();
    let looks_like_pan = match value {
        // Our own ids (ULIDs) in their own fields may hold 13 digits by chance.
        Some(v) => json_contains_card_number_except_ids(v),
        None => contains_card_number(&String::from_utf8_lossy(body)),
    };
    if looks_like_pan {
        out.push("the answer holds what looks like a full card number".to_owned());
    }
    let cards = value
        .and_then(|v| v.get("cards"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for (i, card) in cards.iter().enumerate() {
        let Some(obj) = card.as_object() else {
            continue;
        };
        if let Some(extra) = obj.keys().find(|k| !CARD_FIELDS.contains(&k.as_str())) {
            out.push(format!(
                "card {}: field `{extra}` beyond kind, first4, last4, card_ref",
                i + 1
            ));
        }
        for f in ["first4", "last4"] {
            if !obj.get(f).is_some_and(four_digits) {
                out.push(format!("card {}: `{f}` is not exactly 4 digits", i + 1));
            }
        }
    }
    out
}

/// `card_ref` problems of an answer's cards: the protocol's pattern, no card number in
/// any grouping, and one reference per card.
pub fn card_ref_problems(spec: &Spec, value: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    let cards = value
        .get("cards")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for (i, card) in cards.iter().enumerate() {
        let Some(r) = card.get("card_ref") else {
            continue;
        };
        let Some(r) = r.as_str() else {
            out.push(format!("card {}: card_ref is not a string", i + 1));
            continue;
        };
        if contains_card_number(r) {
            out.push(format!("card {}: card_ref holds a card number", i + 1));
        } else if !spec.card_ref_ok(r) {
            out.push(format!(
                "card {}: card_ref is not 1-64 of [A-Za-z0-9_-] without a run of 6 digits",
                i + 1
            ));
        }
        if seen.contains(&r) {
            out.push(format!("card {}: card_ref repeats another card's", i + 1));
        }
        seen.push(r);
    }
    out
}

/// The cards with their refs, as compared between repeats of an inquiry.
pub fn card_ref_count(value: &Value) -> usize {
    value
        .get("cards")
        .and_then(Value::as_array)
        .map(|c| c.iter().filter(|c| c.get("card_ref").is_some()).count())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const Q: &str = "01JDQ8Z6X3M4N5P6Q7R8S9T0VW";

    #[test]
    fn finds_leaks_and_extra_digits_without_quoting_them() {
        let clean = json!({"query_id": Q, "inquiry_id": Q, "status": "FOUND",
            "cards": [{"kind": "DEBIT", "first4": "6222", "last4": "1234"}]});
        let body = clean.to_string();
        assert!(card_data_problems(body.as_bytes(), Some(&clean)).is_empty());
        let leak = json!({"query_id": Q, "inquiry_id": Q, "status": "FOUND",
            "cards": [{"kind": "DEBIT", "first4": "622202", "last4": "1234", "pan": "6222021234567891234"}]});
        let p = card_data_problems(leak.to_string().as_bytes(), Some(&leak));
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p.iter().all(|l| !l.contains("6222")), "{p:?}");
        assert!(!card_data_problems(b"{\"x\":\"6222 0212 3456 7891\"", None).is_empty());
    }

    #[test]
    fn card_refs_are_opaque_and_distinct() {
        let spec = Spec::load().unwrap();
        let answer = |refs: &[&str]| {
            json!({"cards": refs.iter().map(|r| json!({"kind": "DEBIT", "first4": "6222",
                "last4": "1234", "card_ref": r})).collect::<Vec<_>>()})
        };
        assert!(card_ref_problems(&spec, &answer(&["cr_a", "cr_b"])).is_empty());
        assert_eq!(
            card_ref_problems(&spec, &answer(&["cr_a", "cr_a"])).len(),
            1
        );
        assert_eq!(
            card_ref_problems(&spec, &answer(&["cr-6222-0212-3456-7891-234"])).len(),
            1,
            "grouped digits are still a card number"
        );
        assert_eq!(card_ref_problems(&spec, &answer(&["cr622202x"])).len(), 1);
        assert_eq!(card_ref_count(&answer(&["a", "b"])), 2);
    }
}
