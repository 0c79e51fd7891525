//! Messages of the bank protocol.

use serde::{Deserialize, Serialize};

use crate::model::card::AnsweredCard;
use crate::model::ids::QueryId;

/// Who is asked about: name and ID number (only in the outbound inquiry).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subject {
    pub name: String,
    pub id_number: String,
}

/// `POST {bank endpoint}/card-inquiries`
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inquiry {
    pub query_id: QueryId,
    pub inquiry_id: String,
    pub subject: Subject,
    pub callback_url: String,
    /// RFC 3339
    pub respond_by: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum AnswerStatus {
    Found,
    None,
    Error,
}

/// A bank's answer, at once (200) or by callback. Cards can hold no more than first 4 +
/// last 4 digits and the bank's opaque `card_ref`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    pub query_id: QueryId,
    pub inquiry_id: String,
    pub status: AnswerStatus,
    pub cards: Vec<AnsweredCard>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    #[error("the payload holds what looks like a full card number")]
    CardNumber,
    #[error("the answer is malformed: {0}")]
    Malformed(String),
}

/// At most this many cards per bank answer (a person with more is an anomaly to refuse,
/// not to store).
pub const MAX_CARDS: usize = 200;

impl Answer {
    /// Parses a raw answer body: a card-number-like run anywhere (our own ids in their
    /// own fields excepted) refuses the whole body before anything of it is looked at
    /// further.
    pub fn parse(body: &[u8]) -> Result<Self, AnswerError> {
        use super::card_number::{contains_card_number, json_contains_card_number_except_ids};
        let text =
            std::str::from_utf8(body).map_err(|_| AnswerError::Malformed("not UTF-8".into()))?;
        let malformed = |e: serde_json::Error| {
            AnswerError::Malformed(format!("line {} column {}", e.line(), e.column()))
        };
        let value: serde_json::Value = match serde_json::from_str(text) {
            Ok(v) => v,
            // Not JSON: nothing can be exempt, the raw text decides the reason.
            Err(_) if contains_card_number(text) => return Err(AnswerError::CardNumber),
            Err(e) => return Err(malformed(e)),
        };
        if json_contains_card_number_except_ids(&value) {
            return Err(AnswerError::CardNumber);
        }
        if !value.is_object() {
            return Err(AnswerError::Malformed("not a JSON object".into()));
        }
        // From the text, not the value: a JSON object keeps only the last of duplicate
        // keys, which would let a first `"query_id": "<card number>"` go unchecked;
        // deserializing the struct from the text refuses duplicates instead.
        let answer: Answer = serde_json::from_str(text).map_err(malformed)?;
        match answer.status {
            AnswerStatus::Found if answer.cards.is_empty() => {
                Err(AnswerError::Malformed("FOUND without cards".into()))
            }
            AnswerStatus::None | AnswerStatus::Error if !answer.cards.is_empty() => Err(
                AnswerError::Malformed("cards with a NONE or ERROR status".into()),
            ),
            _ if answer.cards.len() > MAX_CARDS => {
                Err(AnswerError::Malformed("too many cards".into()))
            }
            // A dispute names its card by the ref: two cards under one ref could not be
            // told apart.
            _ if repeats_a_card_ref(&answer.cards) => {
                Err(AnswerError::Malformed("a card_ref repeated".into()))
            }
            _ => Ok(answer),
        }
    }
}

fn repeats_a_card_ref(cards: &[AnsweredCard]) -> bool {
    let mut seen = std::collections::HashSet::new();
    cards
        .iter()
        .filter_map(|c| c.card_ref.as_ref())
        .any(|r| !seen.insert(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: &str = "01KBZ8Y4B6Z0Q9V7T3J2M1N0PX";

    fn body(status: &str, cards: &str) -> String {
        format!(r#"{{"query_id":"{Q}","inquiry_id":"inq-1","status":"{status}","cards":{cards}}}"#)
    }

    #[test]
    fn parses_answers() {
        let a = Answer::parse(
            body(
                "FOUND",
                r#"[{"kind":"DEBIT","first4":"6222","last4":"1234"}]"#,
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(a.cards[0].masked().masked_number(), "6222 **** **** 1234");
        assert!(Answer::parse(body("NONE", "[]").as_bytes()).is_ok());
        assert!(Answer::parse(body("ERROR", "[]").as_bytes()).is_ok());
        // Our ULIDs may hold 13+ digits in a row: in their own fields they are no card.
        let digits = "01KBZ8Y4B66222021234567891";
        let own = format!(
            r#"{{"query_id":"{digits}","inquiry_id":"{digits}","status":"NONE","cards":[]}}"#
        );
        assert_eq!(Answer::parse(own.as_bytes()).unwrap().inquiry_id, digits);
    }

    #[test]
    fn refuses_full_numbers_and_inconsistent_answers() {
        let leak = body(
            "FOUND",
            r#"[{"kind":"DEBIT","first4":"6222","last4":"1234","pan":"6222021234567891234"}]"#,
        );
        assert_eq!(Answer::parse(leak.as_bytes()), Err(AnswerError::CardNumber));
        let spaced = body(
            "FOUND",
            r#"[{"kind":"DEBIT","first4":"6222 0212 3456 7","last4":"7891"}]"#,
        );
        assert_eq!(
            Answer::parse(spaced.as_bytes()),
            Err(AnswerError::CardNumber)
        );
        assert!(matches!(
            Answer::parse(body("FOUND", "[]").as_bytes()),
            Err(AnswerError::Malformed(_))
        ));
        assert!(matches!(
            Answer::parse(
                body(
                    "NONE",
                    r#"[{"kind":"DEBIT","first4":"6222","last4":"1234"}]"#
                )
                .as_bytes()
            ),
            Err(AnswerError::Malformed(_))
        ));
        assert!(matches!(
            Answer::parse(b"{}"),
            Err(AnswerError::Malformed(_))
        ));
        let dup = format!(
            r#"{{"query_id":"6222021234567891","query_id":"{Q}","inquiry_id":"inq-1","status":"NONE","cards":[]}}"#
        );
        assert!(Answer::parse(dup.as_bytes()).is_err());
        assert!(matches!(
            Answer::parse(b"\xff"),
            Err(AnswerError::Malformed(_))
        ));
    }

    #[test]
    fn keeps_each_card_ref_with_its_card() {
        let a = Answer::parse(
            body(
                "FOUND",
                r#"[{"kind":"DEBIT","first4":"6222","last4":"1234","card_ref":"cr_ab"},
                    {"kind":"CREDIT","first4":"6258","last4":"0001","card_ref":"cr-12-x"},
                    {"kind":"DEBIT","first4":"6222","last4":"9999"}]"#,
            )
            .as_bytes(),
        )
        .unwrap();
        let refs: Vec<_> = a
            .cards
            .iter()
            .map(|c| (c.last4.as_str(), c.card_ref.as_ref().map(|r| r.as_str())))
            .collect();
        assert_eq!(
            refs,
            [
                ("1234", Some("cr_ab")),
                ("0001", Some("cr-12-x")),
                ("9999", None)
            ]
        );
    }

    #[test]
    fn refuses_bad_card_refs_without_quoting_them() {
        let card = |r: &str| {
            body(
                "FOUND",
                &format!(r#"[{{"kind":"DEBIT","first4":"6222","last4":"1234","card_ref":{r}}}]"#),
            )
        };
        let long = format!("\"{}\"", "q".repeat(65));
        for bad in [
            r#""cr_622202""#,
            r#""""#,
            long.as_str(),
            r#""cr ab""#,
            r#""cr_\u0036\u0032\u0032\u0032\u0030\u0032""#,
            "null",
            "7",
        ] {
            match Answer::parse(card(bad).as_bytes()) {
                Err(AnswerError::Malformed(why)) => {
                    assert!(!why.contains("cr_") && !why.contains("qqq"), "{why}")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
        // A ref that spells a card number is a card number.
        assert_eq!(
            Answer::parse(card(r#""cr-6222-0212-3456-7891-234""#).as_bytes()),
            Err(AnswerError::CardNumber)
        );
        let twice = body(
            "FOUND",
            r#"[{"kind":"DEBIT","first4":"6222","last4":"1234","card_ref":"cr_ab"},
                {"kind":"CREDIT","first4":"6258","last4":"0001","card_ref":"cr_ab"}]"#,
        );
        assert_eq!(
            Answer::parse(twice.as_bytes()),
            Err(AnswerError::Malformed("a card_ref repeated".into()))
        );
    }
}
