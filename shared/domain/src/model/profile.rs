//! User profiles, owned by the app's user system; this service reads them.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::ids::UserId;
use super::phone::PhoneNumber;
use super::region::RegionCode;

/// A PRC resident identity number (18 characters, ISO 7064 MOD 11-2 check character).
/// Never printed: `Debug` shows only that one is there.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IdNumber(String);

impl IdNumber {
    pub fn parse(s: &str) -> Result<Self, String> {
        const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
        const CHECK: &[u8; 11] = b"10X98765432";
        let b = s.as_bytes();
        if b.len() != 18 || !b[..17].iter().all(u8::is_ascii_digit) {
            return Err("an ID number is 17 digits and a check character".into());
        }
        let sum: u32 = b[..17]
            .iter()
            .zip(WEIGHTS)
            .map(|(d, w)| u32::from(d - b'0') * w)
            .sum();
        if CHECK[(sum % 11) as usize] != b[17] {
            return Err("the ID number's check character is wrong".into());
        }
        Ok(Self(s.to_owned()))
    }

    /// For the bank inquiry only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for IdNumber {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<IdNumber> for String {
    fn from(i: IdNumber) -> String {
        i.0
    }
}

impl fmt::Debug for IdNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdNumber(<redacted>)")
    }
}

/// One item of the users table. The app's user system owns that table and adds
/// attributes as it likes; refusing unknown ones would make every profile read fail the
/// day it adds one, so (unlike request bodies and our own records) they are ignored.
#[derive(Clone, Serialize, Deserialize)]
pub struct UserProfile {
    pub user_id: UserId,
    pub real_name_verified: bool,
    pub name: String,
    pub id_number: IdNumber,
    pub phone: PhoneNumber,
    pub region: RegionCode,
    /// argon2id PHC string.
    pub payment_password_hash: String,
}

impl fmt::Debug for UserProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserProfile")
            .field("user_id", &self.user_id)
            .field("real_name_verified", &self.real_name_verified)
            .field("phone", &self.phone)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_numbers_need_the_right_check_character() {
        assert!(IdNumber::parse("11010519491231002X").is_ok());
        assert!(IdNumber::parse("110105194912310021").is_err());
        assert!(IdNumber::parse("11010519491231002").is_err());
        let id = IdNumber::parse("11010519491231002X").unwrap();
        assert!(!format!("{id:?}").contains("1101"));
    }
}
