//! Mainland China mobile numbers in E.164 form.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PhoneNumber(String);

impl PhoneNumber {
    /// Accepts `+86` followed by an 11-digit mobile number starting with 1.
    pub fn parse(s: &str) -> Result<Self, String> {
        let digits = s.strip_prefix("+86").unwrap_or("");
        if digits.len() == 11
            && digits.starts_with('1')
            && digits.bytes().all(|b| b.is_ascii_digit())
        {
            Ok(Self(s.to_owned()))
        } else {
            Err("a phone number is +86 and an 11-digit mobile number".into())
        }
    }

    pub fn e164(&self) -> &str {
        &self.0
    }

    /// `138****8000`: what the app may show.
    pub fn masked(&self) -> String {
        let d = &self.0[3..];
        format!("{}****{}", &d[..3], &d[7..])
    }
}

impl TryFrom<String> for PhoneNumber {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<PhoneNumber> for String {
    fn from(p: PhoneNumber) -> String {
        p.0
    }
}

/// Masked, so a phone number never lands whole in a log line.
impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhoneNumber({})", self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_masks() {
        let p = PhoneNumber::parse("+8613800138000").unwrap();
        assert_eq!(p.masked(), "138****8000");
        assert_eq!(format!("{p:?}"), "PhoneNumber(138****8000)");
        for bad in [
            "13800138000",
            "+861380013800",
            "+8623800138000",
            "+86138001380a0",
            "",
        ] {
            assert!(PhoneNumber::parse(bad).is_err(), "{bad}");
        }
    }
}
