//! SMS verification codes: 6 random digits, stored only as a keyed hash bound to the
//! user, the verification id and the purpose.

use hmac::{Hmac, KeyInit, Mac};
use rand::RngExt;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::model::ids::{UserId, VerificationId};

// Re-exported where it was defined before `model::purpose`, for callers not yet moved.
use crate::model::purpose::Purpose;

/// The server-side key of the code hash (`SMS_CODE_KEY`, at least 32 bytes).
#[derive(Clone)]
pub struct CodeHasher {
    key: Vec<u8>,
}

impl CodeHasher {
    pub fn new(key: &[u8]) -> Result<Self, String> {
        if key.len() < 32 {
            return Err("the SMS code key must be at least 32 bytes".into());
        }
        Ok(Self { key: key.to_vec() })
    }

    pub fn hash(&self, user: &UserId, id: &VerificationId, purpose: Purpose, code: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        for part in [user.as_str(), &id.to_string(), purpose.as_str(), code] {
            mac.update(part.as_bytes());
            mac.update(b"\n");
        }
        hex::encode(mac.finalize().into_bytes())
    }

    pub fn matches(
        &self,
        stored_hash: &str,
        user: &UserId,
        id: &VerificationId,
        purpose: Purpose,
        code: &str,
    ) -> bool {
        let computed = self.hash(user, id, purpose, code);
        computed.as_bytes().ct_eq(stored_hash.as_bytes()).into()
    }
}

/// A fresh random 6-digit code.
pub fn generate_code() -> String {
    format!("{:06}", rand::rng().random_range(0..1_000_000u32))
}

/// Exactly six ASCII digits.
pub fn is_well_formed(code: &str) -> bool {
    code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit())
}

impl CodeHasher {
    /// Keyed fingerprint of a request body (idempotency): bodies hold passwords and codes
    /// from small spaces, so a plain hash would give them away.
    pub fn fingerprint(&self, data: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(b"request-fingerprint\n");
        mac.update(data);
        hex::encode(mac.finalize().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_keyed_and_bound_to_user_id_and_purpose() {
        let h = CodeHasher::new(&[7; 32]).unwrap();
        let u = UserId::parse("u1").unwrap();
        let v = VerificationId::generate();
        let stored = h.hash(&u, &v, Purpose::SubmitQuery, "123456");
        assert!(!stored.contains("123456"));
        assert!(h.matches(&stored, &u, &v, Purpose::SubmitQuery, "123456"));
        assert!(!h.matches(&stored, &u, &v, Purpose::SubmitQuery, "123457"));
        assert!(!h.matches(&stored, &u, &v, Purpose::ViewReport, "123456"));
        assert!(!h.matches(
            &stored,
            &UserId::parse("u2").unwrap(),
            &v,
            Purpose::SubmitQuery,
            "123456"
        ));
        let other_key = CodeHasher::new(&[8; 32]).unwrap();
        assert!(!other_key.matches(&stored, &u, &v, Purpose::SubmitQuery, "123456"));
        assert!(CodeHasher::new(&[1; 16]).is_err());
    }

    #[test]
    fn codes_are_six_digits() {
        for _ in 0..1000 {
            assert!(is_well_formed(&generate_code()));
        }
        assert!(!is_well_formed("12345"));
        assert!(!is_well_formed("12345a"));
    }
}
