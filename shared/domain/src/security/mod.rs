//! Who is calling and what they proved: app JWTs, face-verification tokens, SMS codes
//! and payment passwords.

pub mod app_jwt;
/// Key generation and token minting: tests and local tools only, never in a function.
#[cfg(any(test, feature = "test-util"))]
pub mod dev;
pub mod face;
pub mod password;
pub mod sms_code;
