//! Cards as this service may hold them: kind and first 4 + last 4 digits, nothing more.
//! A [`MaskedCard`] has no room for a full card number.

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
}
