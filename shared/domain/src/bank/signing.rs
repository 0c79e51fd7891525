//! Request signing, both directions: HMAC-SHA256 with the bank's secret over
//! `timestamp \n nonce \n METHOD \n path \n hex(sha256(body))`, carried in `X-Bank-Code`,
//! `X-Timestamp` (Unix seconds), `X-Nonce` (16–64 of `[A-Za-z0-9_-]`) and `X-Signature`
//! (lower-case hex).

use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const HEADER_BANK_CODE: &str = "x-bank-code";
pub const HEADER_TIMESTAMP: &str = "x-timestamp";
pub const HEADER_NONCE: &str = "x-nonce";
pub const HEADER_SIGNATURE: &str = "x-signature";

/// How far a signed timestamp may be from our clock.
pub const MAX_SKEW_SECS: i64 = 300;

/// A bank's shared secret. No `Debug`: it must never reach a log.
#[derive(Clone)]
pub struct BankSecret(Vec<u8>);

impl BankSecret {
    pub fn new(bytes: Vec<u8>) -> Result<Self, String> {
        if bytes.len() < 32 {
            return Err("a bank secret must be at least 32 bytes".into());
        }
        Ok(Self(bytes))
    }
}

/// The four signature headers of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeaders {
    pub bank_code: String,
    pub timestamp: String,
    pub nonce: String,
    pub signature: String,
}

impl SignatureHeaders {
    /// The four headers read through `get` (any header map), or `None` if one is absent.
    pub fn read(get: impl Fn(&'static str) -> Option<String>) -> Option<Self> {
        Some(Self {
            bank_code: get(HEADER_BANK_CODE)?,
            timestamp: get(HEADER_TIMESTAMP)?,
            nonce: get(HEADER_NONCE)?,
            signature: get(HEADER_SIGNATURE)?,
        })
    }

    pub fn pairs(&self) -> [(&'static str, &str); 4] {
        [
            (HEADER_BANK_CODE, &self.bank_code),
            (HEADER_TIMESTAMP, &self.timestamp),
            (HEADER_NONCE, &self.nonce),
            (HEADER_SIGNATURE, &self.signature),
        ]
    }
}

/// The string that is signed.
pub fn canonical(timestamp: &str, nonce: &str, method: &str, path: &str, body: &[u8]) -> String {
    format!(
        "{timestamp}\n{nonce}\n{}\n{path}\n{}",
        method.to_ascii_uppercase(),
        hex::encode(Sha256::digest(body))
    )
}

pub fn signature(
    secret: &BankSecret,
    timestamp: &str,
    nonce: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(&secret.0).expect("HMAC takes any key");
    mac.update(canonical(timestamp, nonce, method, path, body).as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// A fresh random nonce (32 characters).
pub fn new_nonce() -> String {
    ulid::Ulid::generate().to_string() + &format!("{:06}", rand::random::<u32>() % 1_000_000)
}

/// Signs a message sent now.
pub fn sign(
    secret: &BankSecret,
    bank_code: &str,
    now: DateTime<Utc>,
    method: &str,
    path: &str,
    body: &[u8],
) -> SignatureHeaders {
    let timestamp = now.timestamp().to_string();
    let nonce = new_nonce();
    let signature = signature(secret, &timestamp, &nonce, method, path, body);
    SignatureHeaders {
        bank_code: bank_code.to_owned(),
        timestamp,
        nonce,
        signature,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signature headers missing or malformed")]
    Malformed,
    #[error("timestamp outside the allowed window")]
    Stale,
    #[error("signature does not match")]
    Mismatch,
}

fn nonce_ok(n: &str) -> bool {
    (16..=64).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Unix seconds as sent: ASCII digits with an optional leading `-`, nothing else (`+5`,
/// ` 5` or `5\n` are not what we sign, so they are malformed rather than "close enough").
pub fn parse_timestamp(text: &str) -> Result<i64, SignatureError> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || digits.len() > 19 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SignatureError::Malformed);
    }
    text.parse().map_err(|_| SignatureError::Malformed)
}

/// `|now - ts| <= MAX_SKEW_SECS` without overflow: `abs_diff` is exact over all of `i64`
/// (`now - i64::MIN` would wrap in release and pass the window).
pub fn within_skew(now: i64, ts: i64) -> bool {
    now.abs_diff(ts) <= MAX_SKEW_SECS.unsigned_abs()
}

/// Checks format, time window and signature. The nonce's single use is the caller's
/// (it needs a store).
pub fn verify(
    secret: &BankSecret,
    headers: &SignatureHeaders,
    now: DateTime<Utc>,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<(), SignatureError> {
    let ts = parse_timestamp(&headers.timestamp)?;
    if !nonce_ok(&headers.nonce)
        || headers.signature.len() != 64
        || !headers
            .signature
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(SignatureError::Malformed);
    }
    if !within_skew(now.timestamp(), ts) {
        return Err(SignatureError::Stale);
    }
    let expected = signature(
        secret,
        &headers.timestamp,
        &headers.nonce,
        method,
        path,
        body,
    );
    if bool::from(expected.as_bytes().ct_eq(headers.signature.as_bytes())) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::at;

    fn secret() -> BankSecret {
        BankSecret::new(b"0123456789abcdef0123456789abcdef".to_vec()).unwrap()
    }

    #[test]
    fn canonical_form_and_known_vector() {
        let c = canonical(
            "1764336000",
            "nonce-0123456789ab",
            "post",
            "/v1/bank-callbacks/ICBC",
            b"{}",
        );
        assert_eq!(
            c,
            "1764336000\nnonce-0123456789ab\nPOST\n/v1/bank-callbacks/ICBC\n\
             44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        // HMAC-SHA256(key = "0123456789abcdef0123456789abcdef", c), computed independently
        // (Python: hmac.new(key, c.encode(), hashlib.sha256).hexdigest()).
        assert_eq!(
            signature(
                &secret(),
                "1764336000",
                "nonce-0123456789ab",
                "POST",
                "/v1/bank-callbacks/ICBC",
                b"{}"
            ),
            KNOWN_SIGNATURE
        );
    }

    const KNOWN_SIGNATURE: &str =
        "6af01d0a1116d0fecf1e6c91d44cc5b972753bb0126c91e3385f87381777f822";

    #[test]
    fn extreme_timestamps_neither_panic_nor_pass_the_window() {
        let now = at(2026, 11, 28, 12, 0, 0);
        let n = now.timestamp();
        // (X-Timestamp as sent, expected outcome)
        let cases: Vec<(String, Result<(), SignatureError>)> = vec![
            (i64::MIN.to_string(), Err(SignatureError::Stale)),
            (i64::MAX.to_string(), Err(SignatureError::Stale)),
            ((i64::MIN + 1).to_string(), Err(SignatureError::Stale)),
            ("-1".into(), Err(SignatureError::Stale)),
            ("0".into(), Err(SignatureError::Stale)),
            ("-0".into(), Err(SignatureError::Stale)),
            (
                (n - MAX_SKEW_SECS - 1).to_string(),
                Err(SignatureError::Stale),
            ),
            (
                (n + MAX_SKEW_SECS + 1).to_string(),
                Err(SignatureError::Stale),
            ),
            ((n - MAX_SKEW_SECS).to_string(), Ok(())),
            ((n + MAX_SKEW_SECS).to_string(), Ok(())),
            (n.to_string(), Ok(())),
            ("9223372036854775808".into(), Err(SignatureError::Malformed)),
            (
                "-9223372036854775809".into(),
                Err(SignatureError::Malformed),
            ),
            (
                "99999999999999999999999".into(),
                Err(SignatureError::Malformed),
            ),
            (format!("+{n}"), Err(SignatureError::Malformed)),
            (format!(" {n}"), Err(SignatureError::Malformed)),
            (format!("{n}\n"), Err(SignatureError::Malformed)),
            ("".into(), Err(SignatureError::Malformed)),
            ("-".into(), Err(SignatureError::Malformed)),
        ];
        for (ts, expected) in cases {
            let nonce = "nonce-0123456789ab";
            let h = SignatureHeaders {
                bank_code: "ICBC".into(),
                timestamp: ts.clone(),
                nonce: nonce.into(),
                signature: signature(&secret(), &ts, nonce, "POST", "/p", b"b"),
            };
            assert_eq!(
                verify(&secret(), &h, now, "POST", "/p", b"b"),
                expected,
                "{ts:?}"
            );
        }
        assert!(within_skew(i64::MAX, i64::MAX));
        assert!(!within_skew(i64::MAX, i64::MIN));
        assert!(!within_skew(i64::MIN, i64::MAX));
        assert!(within_skew(i64::MIN, i64::MIN + MAX_SKEW_SECS));
    }

    #[test]
    fn verify_accepts_its_own_signature_and_refuses_changes() {
        let now = at(2026, 11, 28, 12, 0, 0);
        let h = sign(&secret(), "ICBC", now, "POST", "/p", b"body");
        assert_eq!(verify(&secret(), &h, now, "POST", "/p", b"body"), Ok(()));
        assert_eq!(
            verify(&secret(), &h, now, "POST", "/p", b"bodx"),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&secret(), &h, now, "POST", "/q", b"body"),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&secret(), &h, now, "PUT", "/p", b"body"),
            Err(SignatureError::Mismatch)
        );
        let other = BankSecret::new(vec![7; 32]).unwrap();
        assert_eq!(
            verify(&other, &h, now, "POST", "/p", b"body"),
            Err(SignatureError::Mismatch)
        );
        let late = now + chrono::TimeDelta::seconds(MAX_SKEW_SECS + 1);
        assert_eq!(
            verify(&secret(), &h, late, "POST", "/p", b"body"),
            Err(SignatureError::Stale)
        );
        let edge = now + chrono::TimeDelta::seconds(MAX_SKEW_SECS);
        assert_eq!(verify(&secret(), &h, edge, "POST", "/p", b"body"), Ok(()));
        let mut bad = h.clone();
        bad.nonce = "short".into();
        assert_eq!(
            verify(&secret(), &bad, now, "POST", "/p", b"body"),
            Err(SignatureError::Malformed)
        );
        let mut bad = h.clone();
        bad.signature = bad.signature.to_uppercase();
        assert_eq!(
            verify(&secret(), &bad, now, "POST", "/p", b"body"),
            Err(SignatureError::Malformed)
        );
        let mut bad = h;
        bad.timestamp = "soon".into();
        assert_eq!(
            verify(&secret(), &bad, now, "POST", "/p", b"body"),
            Err(SignatureError::Malformed)
        );
    }
}
