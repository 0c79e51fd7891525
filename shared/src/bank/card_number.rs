//! Finds what could be a full card number in a payload, so that nothing of such a
//! payload is stored or logged: a run of 13 or more digits, possibly grouped by single
//! spaces or dashes (`6222 0212 3456 7891`, `6222-0212-3456-7891`). Dates, amounts,
//! phone numbers and ids stay below the threshold or are broken by other characters; a
//! run right after `+` is an E.164 phone number (`+8613800138000`, 13 digits) and is not
//! counted.

/// Digits in a run before it could be a card number (PANs are 13 to 19 digits; longer
/// runs may hold one).
pub const MIN_PAN_DIGITS: usize = 13;
const MAX_E164_DIGITS: usize = 15;

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

fn digit(c: char) -> bool {
    c.is_ascii_digit() || ('\u{FF10}'..='\u{FF19}').contains(&c)
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
        } else if (c == ' ' || c == '-') && run > 0 && chars.get(i + 1).copied().is_some_and(digit)
        {
            // A single separator inside a run keeps it going.
        } else {
            run = 0;
        }
        i += 1;
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
        assert!(!found("6222  0212 3456 7891")); // two spaces break the run: 4 + 12
        assert!(!found("1764336000")); // a Unix timestamp
    }
}
