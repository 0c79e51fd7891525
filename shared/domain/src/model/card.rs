//! Cards as this service may hold them: kind and first 4 + last 4 digits, nothing more.
//! A [`MaskedCard`] has no room for a full card number. A bank may add its own opaque
//! reference of the card ([`CardRef`], [`AnsweredCard`]), which has no room for a card
//! number either.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum CardKind {
    Debit,
    Credit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FourDigits([u8; 4]);

impl FourDigits {
    pub fn parse(s: &str) -> Result<Self, String> {
        let b = s.as_bytes();
        if b.len() == 4 && b.iter().all(u8::is_ascii_digit) {
            Ok(Self([b[0], b[1], b[2], b[3]]))
        } else {
            Err("expected exactly 4 digits".into())
        }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("ASCII digits")
    }
}

impl Serialize for FourDigits {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for FourDigits {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskedCard {
    pub kind: CardKind,
    pub first4: FourDigits,
    pub last4: FourDigits,
}

impl MaskedCard {
    /// `6222 **** **** 1234`
    pub fn masked_number(&self) -> String {
        format!("{} **** **** {}", self.first4.as_str(), self.last4.as_str())
    }
}

impl fmt::Display for MaskedCard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked_number())
    }
}

/// Why a `card_ref` is refused. The messages never quote the ref: it is bank data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CardRefError {
    #[error("a card_ref is 1 to {max} characters", max = CardRef::MAX_LEN)]
    Length,
    #[error("a card_ref holds only letters, digits, `_` and `-`")]
    Character,
    #[error("a card_ref holds no run of more than {max} digits", max = CardRef::MAX_DIGIT_RUN)]
    DigitRun,
}

/// A bank's opaque reference of one card (bank protocol `CardRef`): 1 to 64 of
/// `[A-Za-z0-9_-]` with no run of 6 or more digits, so no BIN, card number or long digit
/// block fits in it. The same rule as the protocol's pattern
/// `^[A-Za-z_-]*(?:[0-9]{1,5}[A-Za-z_-]+)*[0-9]{0,5}$`, checked by a scan because the
/// domain has no regex engine (and needs none for this). A ref grouped like a card
/// number (`6222-0212-…`) fits the rule; the answer's card-number check refuses it.
///
/// Debug never shows the ref: it is the bank's data and stays out of logs.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CardRef(String);

impl CardRef {
    pub const MAX_LEN: usize = 64;
    /// Digits in a row a ref may hold (a BIN is 6).
    pub const MAX_DIGIT_RUN: usize = 5;

    pub fn parse(s: &str) -> Result<Self, CardRefError> {
        if s.is_empty() || s.len() > Self::MAX_LEN {
            return Err(CardRefError::Length);
        }
        let mut run = 0;
        for b in s.bytes() {
            if b.is_ascii_digit() {
                run += 1;
                if run > Self::MAX_DIGIT_RUN {
                    return Err(CardRefError::DigitRun);
                }
            } else if b.is_ascii_alphabetic() || b == b'_' || b == b'-' {
                run = 0;
            } else {
                return Err(CardRefError::Character);
            }
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CardRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CardRef(..)")
    }
}

impl Serialize for CardRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for CardRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A card as a bank answered it: the masked card and, if the bank gave one, its
/// `card_ref`. This is what the sealed answer holds (disputes will name the card by its
/// ref); the report the app receives shows only [`AnsweredCard::masked`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnsweredCard {
    pub kind: CardKind,
    pub first4: FourDigits,
    pub last4: FourDigits,
    /// Optional in the protocol, but never `null`: a present ref is a valid one.
    #[serde(
        default,
        deserialize_with = "present_ref",
        skip_serializing_if = "Option::is_none"
    )]
    pub card_ref: Option<CardRef>,
}

fn present_ref<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<CardRef>, D::Error> {
    CardRef::deserialize(d).map(Some)
}

impl AnsweredCard {
    pub fn masked(&self) -> MaskedCard {
        MaskedCard {
            kind: self.kind,
            first4: self.first4,
            last4: self.last4,
        }
    }
}

impl From<MaskedCard> for AnsweredCard {
    fn from(c: MaskedCard) -> Self {
        Self {
            kind: c.kind,
            first4: c.first4,
            last4: c.last4,
            card_ref: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_masked_card_holds_four_and_four_digits() {
        let c: MaskedCard =
            serde_json::from_str(r#"{"kind":"DEBIT","first4":"6222","last4":"1234"}"#).unwrap();
        assert_eq!(c.masked_number(), "6222 **** **** 1234");
        for bad in [
            r#"{"kind":"DEBIT","first4":"62220","last4":"1234"}"#,
            r#"{"kind":"DEBIT","first4":"622a","last4":"1234"}"#,
            r#"{"kind":"DEBIT","first4":"6222","last4":"1234","number":"6222021234567891234"}"#,
            r#"{"kind":"PREPAID","first4":"6222","last4":"1234"}"#,
        ] {
            assert!(serde_json::from_str::<MaskedCard>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn card_refs_are_opaque_without_six_digits_in_a_row() {
        let max = "a".repeat(64);
        for good in [
            "cr_qzkdmwbtaeyhrnxfcgps",
            "x",
            "7",
            "12345",
            "ab12345cd12345",
            "-_-",
            "cr-6222-0212-3456-7891-234",
            max.as_str(),
        ] {
            assert_eq!(CardRef::parse(good).unwrap().as_str(), good);
        }
        let long = "a".repeat(65);
        for (bad, why) in [
            ("", CardRefError::Length),
            (long.as_str(), CardRefError::Length),
            ("123456", CardRefError::DigitRun),
            ("cr_622202", CardRefError::DigitRun),
            ("cr_6222021234567891234", CardRefError::DigitRun),
            ("cr 1", CardRefError::Character),
            ("cr.1", CardRefError::Character),
            ("cr/1", CardRefError::Character),
            ("\u{0661}", CardRefError::Character),
            ("cr_\u{0663}", CardRefError::Character),
            ("ｃｒ", CardRefError::Character),
        ] {
            assert_eq!(CardRef::parse(bad), Err(why), "{bad:?}");
        }
        // Length counts bytes, and a non-ASCII byte is refused anyway.
        assert_eq!(CardRef::parse(&"é".repeat(40)), Err(CardRefError::Length));
    }

    #[test]
    fn a_card_ref_never_shows_in_debug_or_in_its_error() {
        let r = CardRef::parse("cr_secretref").unwrap();
        assert_eq!(format!("{r:?}"), "CardRef(..)");
        let e = serde_json::from_str::<CardRef>(r#""cr_1234567""#).unwrap_err();
        assert!(!e.to_string().contains("1234567"), "{e}");
    }

    #[test]
    fn an_answered_card_may_carry_a_ref_and_nothing_else() {
        let plain: AnsweredCard =
            serde_json::from_str(r#"{"kind":"DEBIT","first4":"6222","last4":"1234"}"#).unwrap();
        assert_eq!(plain.card_ref, None);
        assert_eq!(plain.masked().masked_number(), "6222 **** **** 1234");
        assert_eq!(
            serde_json::to_string(&plain).unwrap(),
            r#"{"kind":"DEBIT","first4":"6222","last4":"1234"}"#,
            "no ref, no field"
        );
        let text = r#"{"kind":"CREDIT","first4":"6222","last4":"1234","card_ref":"cr_ab"}"#;
        let with: AnsweredCard = serde_json::from_str(text).unwrap();
        assert_eq!(with.card_ref.as_ref().map(CardRef::as_str), Some("cr_ab"));
        assert_eq!(serde_json::to_string(&with).unwrap(), text);
        for bad in [
            r#"{"kind":"DEBIT","first4":"6222","last4":"1234","card_ref":null}"#,
            r#"{"kind":"DEBIT","first4":"6222","last4":"1234","card_ref":""}"#,
            r#"{"kind":"DEBIT","first4":"6222","last4":"1234","card_ref":42}"#,
            r#"{"kind":"DEBIT","first4":"6222","last4":"1234","card_ref":"cr_123456"}"#,
            r#"{"kind":"DEBIT","first4":"6222","last4":"1234","card_ref":"a","ref":"b"}"#,
        ] {
            assert!(serde_json::from_str::<AnsweredCard>(bad).is_err(), "{bad}");
        }
    }
}
