//! Identifiers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use ulid::Ulid;

macro_rules! ulid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(Ulid);

        impl $name {
            pub fn generate() -> Self {
                Self(Ulid::generate())
            }

            /// A canonical (upper-case Crockford base32) 26-character ULID.
            pub fn parse(s: &str) -> Result<Self, String> {
                match Ulid::from_str(s) {
                    Ok(u) if u.to_string() == s => Ok(Self(u)),
                    _ => Err(concat!("not a valid ", stringify!($name)).into()),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                Self::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0.to_string()
            }
        }
    };
}

ulid_id!(
    /// One card query; sorts by submission time.
    QueryId
);
ulid_id!(
    /// One SMS verification code sent.
    VerificationId
);

fn token_chars(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The app's user id (the JWT `sub`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserId(String);

impl UserId {
    pub fn parse(s: &str) -> Result<Self, String> {
        if token_chars(s, 128) {
            Ok(Self(s.to_owned()))
        } else {
            Err("a user id is 1 to 128 characters of A-Z a-z 0-9 - _".into())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for UserId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<UserId> for String {
    fn from(u: UserId) -> String {
        u.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The client's `Idempotency-Key` header.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(s: &str) -> Result<Self, String> {
        if token_chars(s, 64) {
            Ok(Self(s.to_owned()))
        } else {
            Err("Idempotency-Key is 1 to 64 characters of A-Z a-z 0-9 - _".into())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_only_canonical_forms() {
        let q = QueryId::generate();
        assert_eq!(QueryId::parse(&q.to_string()).unwrap(), q);
        assert!(QueryId::parse(&q.to_string().to_lowercase()).is_err());
        assert!(QueryId::parse("not-a-ulid").is_err());
        assert!(UserId::parse("u-123_A").is_ok());
        assert!(UserId::parse("").is_err());
        assert!(UserId::parse("a b").is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(65)).is_err());
    }
}
