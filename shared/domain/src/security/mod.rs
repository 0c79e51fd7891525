//! Who is calling and what they proved: app JWTs, face-verification tokens, SMS codes
//! and payment passwords.

pub mod app_jwt;
/// Key generation and token minting: tests and local tools only, never in a function.
#[cfg(any(test, feature = "test-util"))]
pub mod dev;
pub mod face;
pub mod password;
pub mod sms_code;

/// Reads a PEM key from `NAME` (the PEM itself) or `NAME_FILE` (a path to it).
pub fn pem_from_env(name: &str) -> Result<String, String> {
    if let Ok(pem) = std::env::var(name) {
        if !pem.trim().is_empty() {
            return Ok(pem);
        }
    }
    let file_var = format!("{name}_FILE");
    match std::env::var(&file_var) {
        Ok(path) if !path.is_empty() => {
            std::fs::read_to_string(&path).map_err(|e| format!("{file_var}={path}: {e}"))
        }
        _ => Err(format!("{name} or {file_var} must be set")),
    }
}
