//! GB/T 2260 province-level region codes (two digits).

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RegionCode(String);

impl RegionCode {
    pub fn parse(code: &str) -> Result<Self, String> {
        if code.len() == 2 && code.bytes().all(|b| b.is_ascii_digit()) && &code[..1] != "0" {
            Ok(Self(code.to_owned()))
        } else {
            Err("a region code is a two-digit GB/T 2260 province code".into())
        }
    }
}

impl TryFrom<String> for RegionCode {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<RegionCode> for String {
    fn from(r: RegionCode) -> String {
        r.0
    }
}

impl fmt::Display for RegionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
