//! Payment passwords: argon2id hashes on the user profile.

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;

/// Does `password` match the profile's argon2id PHC string? A malformed stored hash
/// never matches.
pub fn verify(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// An argon2id PHC string for `password` (seeding and tests; the app's user system
/// owns real hashes).
pub fn hash(password: &str) -> String {
    Argon2::default()
        .hash_password(password.as_bytes())
        .expect("argon2 with default parameters hashes any password")
        .to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn verifies_only_the_right_password() {
        let h = super::hash("135790");
        assert!(h.starts_with("$argon2id$"));
        assert!(super::verify("135790", &h));
        assert!(!super::verify("135791", &h));
        assert!(!super::verify("135790", "not a hash"));
    }
}
