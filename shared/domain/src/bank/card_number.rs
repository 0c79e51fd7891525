//! Finds what could be a full card number in a payload, so that nothing of such a
//! payload is stored or logged: a run of 13 or more digits, possibly grouped by
//! separators (`6222 0212 3456 7891`, `6222-0212-3456-7891`, `6222.0212.3456.7891`, tabs,
//! no-break or ideographic spaces, en or em dashes, and runs of them). Dates, amounts,
//! phone numbers and ids stay below the threshold or are broken by other characters; a
//! run right after `+` is an E.164 phone number (`+8613800138000`, 13 digits) and is not
//! counted.
//!
//! Our own ids are ULIDs (26 Crockford base-32 characters) and may, by chance, hold 13
//! digits in a row; in a bank answer the `query_id` and `inquiry_id` fields carry them,
//! so a JSON answer is checked with those two fields exempt when (and only when) they
//! hold a well-formed ULID ([`json_contains_card_number_except_ids`]).

/// Digits in a run before it could be a card number (PANs are 13 to 19 digits; longer
/// runs may hold one).
pub const MIN_PAN_DIGITS: usize = 13;
const MAX_E164_DIGITS: usize = 15;

/// The top-level fields of a bank answer that hold our own ids.
pub const OWN_ID_FIELDS: [&str; 2] = ["query_id", "inquiry_id"];

/// The same check on a parsed JSON document: every key and string *after* unescaping
/// (`\u0036...` spells digits too) and every number.
pub fn json_contains_card_number(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::String(s) => contains_card_number(s),
        Value::Number(n) => contains_card_number(&n.to_string()),
        Value::Array(items) => items.iter().any(json_contains_card_number),
        Value::Object(map) => map
            .iter()
            .any(|(k, v)| contains_card_number(k) || json_contains_card_number(v)),
        Value::Bool(_) | Value::Null => false,
    }
}

/// [`json_contains_card_number`] on a bank answer, except for our own ids: a top-level
/// `query_id` or `inquiry_id` whose value is exactly a ULID is not a card number (any
/// other value in those fields, e.g. `"6222021234567891"`, is checked as usual).
pub fn json_contains_card_number_except_ids(value: &serde_json::Value) -> bool {
    match value.as_object() {
        Some(map) => map.iter().any(|(k, v)| {
            let own_id = OWN_ID_FIELDS.contains(&k.as_str())
                && v.as_str()
                    .is_some_and(|s| ulid::Ulid::from_string(s).is_ok() && s.len() == 26);
            !own_id && (contains_card_number(k) || json_contains_card_number(v))
        }),
        None => json_contains_card_number(value),
    }
}

fn digit(c: char) -> bool {
    c.is_ascii_digit() || ('\u{FF10}'..='\u{FF19}').contains(&c)
}

/// Characters people and systems put between digit groups of a card number.
fn separator(c: char) -> bool {
    matches!(
        c,
        ' ' | '-' | '.' | '\t' | '\u{00A0}' | '\u{3000}' | '\u{2013}' | '\u{2014}'
    )
}

/// Does `text` hold a run of at least 13 digits, separators allowed between digits?
pub fn contains_card_number(text: &str) -> bool {
    let chars: Vec<char> = text.chars().collect();
    let mut run = 0usize;
    let mut phone = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if digit(c) {
            if run == 0 {
                phone = i > 0 && chars[i - 1] == '+';
            }
            run += 1;
            // E.164 numbers have at most 15 digits: a longer run after `+` still counts.
            if run >= MIN_PAN_DIGITS && (!phone || run > MAX_E164_DIGITS) {
                return true;
            }
            i += 1;
        } else if run > 0 && separator(c) {
            // Separators (any number of them) inside a run keep it going, if a digit
            // follows them.
            let mut j = i;
            while j < chars.len() && separator(chars[j]) {
                j += 1;
            }
            if chars.get(j).copied().is_some_and(digit) {
                i = j;
            } else {
                run = 0;
                i = j;
            }
        } else {
            run = 0;
            i += 1;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::contains_card_number as found;
    use super::json_contains_card_number as found_in_json;

    #[test]
    fn escaped_digits_and_numbers_in_json_count_too() {
        let v: serde_json::Value =
            serde_json::from_str(r#"{"a":"6222\u00200212\u00203456\u00207894"}"#).unwrap();
        assert!(found_in_json(&v));
        let v: serde_json::Value =
            serde_json::from_str(r#"{"a":"\u0036\u0032\u0032\u0032\u0030\u0032\u0031\u0032\u0033\u0034\u0035\u0036\u0037"}"#).unwrap();
        assert!(found_in_json(&v));
        let v: serde_json::Value = serde_json::from_str(r#"{"n": 6222021234567894}"#).unwrap();
        assert!(found_in_json(&v));
        let v: serde_json::Value = serde_json::from_str(r#"{"6222021234567894": 1}"#).unwrap();
        assert!(found_in_json(&v));
        let v: serde_json::Value = serde_json::from_str(
            r#"{"cards":[{"first4":"6222","last4":"1234"}],"t":"2026-11-28"}"#,
        )
        .unwrap();
        assert!(!found_in_json(&v));
    }

    #[test]
    fn finds_card_numbers_plain_and_grouped() {
        assert!(found("6222021234567891"));
        assert!(found("4111111111111")); // 13 digits
        assert!(found("6222021234567891234")); // 19 digits
        assert!(found(r#"{"last4":"6222 0212 3456 7891"}"#));
        assert!(found("6222-0212-3456-7891"));
        assert!(found("card 6222 0212 3456 789 end"));
        assert!(found("６２２２０２１２３４５６７８９１")); // full-width digits
        assert!(found(r#"{"note":"x62220212345678912345"}"#)); // longer runs too
    }

    #[test]
    fn every_separator_and_runs_of_them_keep_a_number_together() {
        // (text, holds a card number)
        let cases = [
            ("6222.0212.3456.7891", true),
            ("6222\t0212\t3456\t7891", true),
            ("6222\u{00A0}0212\u{00A0}3456\u{00A0}7891", true),
            ("6222\u{3000}0212\u{3000}3456\u{3000}7891", true),
            ("6222\u{2013}0212\u{2013}3456\u{2013}7891", true),
            ("6222\u{2014}0212\u{2014}3456\u{2014}7891", true),
            ("6222  0212   3456    7891", true),
            ("6222 - 0212 - 3456 - 7891", true),
            ("6222\t \u{00A0}0212.3456-7891", true),
            (
                "６２２２\u{3000}０２１２\u{3000}３４５６\u{3000}７８９１",
                true,
            ),
            // Still apart: other characters break a run, trailing separators do not join.
            ("6222/0212/3456/7891", false),
            ("6222,0212,3456,7891", false),
            ("6222_0212_3456_7891", false),
            ("6222\n0212\n3456\n7891", false),
            ("2026.11.28", false),
            ("1234567.89", false),
            ("12 345 678.90", false),
            ("+86 138 0013 8000", false), // a grouped E.164 phone number
            ("+8613800138000", false),
            ("1234 5678 9012 ", false),
            ("1234 5678 9012 x 3", false),
        ];
        for (text, expected) in cases {
            assert_eq!(found(text), expected, "{text:?}");
        }
    }

    #[test]
    fn our_own_ids_in_their_own_fields_are_not_card_numbers() {
        use super::json_contains_card_number_except_ids as found_in_answer;
        // A ULID whose random part happens to hold 16 digits in a row.
        let digit_ulid = "01KBZ8Y4B66222021234567891";
        assert_eq!(digit_ulid.len(), 26);
        assert!(found(digit_ulid), "as plain text it looks like one");
        // (answer, holds a card number)
        let cases = [
            (
                serde_json::json!({"query_id": digit_ulid, "inquiry_id": "01KBZ8Y4B6Z0Q9V7T3J2M1N0PX"}),
                false,
            ),
            (
                serde_json::json!({"query_id": "01KBZ8Y4B6Z0Q9V7T3J2M1N0PX", "inquiry_id": digit_ulid}),
                false,
            ),
            // Not a ULID (too long, or no ULID at all): checked like anything else.
            (
                serde_json::json!({"query_id": format!("{digit_ulid}0")}),
                true,
            ),
            (serde_json::json!({"inquiry_id": "6222021234567891"}), true),
            (serde_json::json!({"inquiry_id": 6222021234567891u64}), true),
            // Our id anywhere else is not exempt.
            (serde_json::json!({"note": digit_ulid}), true),
            (
                serde_json::json!({"cards": [{"query_id": digit_ulid}]}),
                true,
            ),
            (
                serde_json::json!({"query_id": digit_ulid, "cards": [{"pan": "6222 0212 3456 7891"}]}),
                true,
            ),
            (serde_json::json!({(digit_ulid): "query_id"}), true),
        ];
        for (answer, expected) in cases {
            assert_eq!(found_in_answer(&answer), expected, "{answer}");
        }
    }

    #[test]
    fn leaves_dates_amounts_phones_and_ids_alone() {
        assert!(!found("2026-11-28"));
        assert!(!found("2026-11-28T13:20:21Z"));
        assert!(!found("2026-11-28 13:20:21"));
        assert!(!found("12,345,678.90"));
        assert!(!found("1234567.89"));
        assert!(!found("+8613800138000"));
        assert!(found("+6222021234567894"), "16 digits are no phone number");
        assert!(found("8613800138000"), "without the + it is just 13 digits");
        assert!(!found("138 0013 8000"));
        assert!(!found("01M8H5M0GYG9ZND1R1ZZ2Z60V9"));
        assert!(!found(r#"{"first4":"6222","last4":"1234"}"#));
        assert!(!found(
            r#"[{"first4":"6222","last4":"1234"},{"first4":"4367","last4":"8812"}]"#
        ));
        assert!(!found("1234 5678 9012")); // 12 digits
        assert!(!found("123456789012"));
        assert!(!found("1764336000")); // a Unix timestamp
    }
}
