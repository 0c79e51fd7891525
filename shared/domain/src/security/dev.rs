//! Key generation and token minting for local tooling and tests. In production the app's
//! identity provider and the face-verification provider hold the private keys; this
//! service only ever verifies.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair, RsaKeyPair};
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410), before the 32 key bytes.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// PEM armour with LF line ends (the files are read back on Unix only).
fn pem(label: &str, der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(label, der), config)
}

/// A fresh Ed25519 key pair as (PKCS#8 private PEM, SPKI public PEM).
pub fn generate_ed25519() -> (String, String) {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("the system RNG works");
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("a key just generated parses");
    let mut spki = ED25519_SPKI_PREFIX.to_vec();
    spki.extend_from_slice(pair.public_key().as_ref());
    (pem("PRIVATE KEY", pkcs8.as_ref()), pem("PUBLIC KEY", &spki))
}

/// A fresh RSA-2048 key pair (app JWTs, RS256) as (PKCS#8 private PEM, SPKI public PEM).
pub fn generate_rsa() -> (String, String) {
    let pair = RsaKeyPair::generate(KeySize::Rsa2048).expect("the system RNG works");
    let pkcs8 = pair.as_der().expect("an RSA key encodes as PKCS#8");
    let spki = pair
        .public_key()
        .as_der()
        .expect("an RSA public key encodes as SPKI");
    (
        pem("PRIVATE KEY", pkcs8.as_ref()),
        pem("PUBLIC KEY", spki.as_ref()),
    )
}

fn sign(private_pem: &str, claims: &serde_json::Value) -> Result<String, String> {
    let key = EncodingKey::from_ed_pem(private_pem.as_bytes()).map_err(|e| e.to_string())?;
    jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), claims, &key).map_err(|e| e.to_string())
}

/// An app JWT (RS256) for `sub`, valid from `now` for `ttl_secs`; `private_pem` from
/// [`generate_rsa`].
pub fn app_token(
    private_pem: &str,
    issuer: &str,
    audience: &str,
    sub: &str,
    now: DateTime<Utc>,
    ttl_secs: i64,
) -> Result<String, String> {
    let iat = now.timestamp();
    let key = EncodingKey::from_rsa_pem(private_pem.as_bytes()).map_err(|e| e.to_string())?;
    let claims = json!({ "iss": issuer, "aud": audience, "sub": sub, "iat": iat, "nbf": iat, "exp": iat + ttl_secs });
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key).map_err(|e| e.to_string())
}

/// The face-verification provider as tests and local tools play it: its signing key,
/// its `iss` and the audience (this service) it issues passes for.
pub struct FaceProvider<'a> {
    pub private_pem: &'a str,
    pub issuer: &'a str,
    pub audience: &'a str,
}

impl FaceProvider<'_> {
    /// A token as the provider issues it after a check: `purpose` `SUBMIT_QUERY` or
    /// `VIEW_REPORT` (any string, to test refusals), `result` "pass" or "fail".
    pub fn token(
        &self,
        sub: &str,
        purpose: &str,
        result: &str,
        issued_at: DateTime<Utc>,
        nonce: &str,
    ) -> Result<String, String> {
        sign(
            self.private_pem,
            &json!({
                "iss": self.issuer, "aud": self.audience, "sub": sub, "purpose": purpose,
                "result": result, "iat": issued_at.timestamp(), "nonce": nonce,
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::purpose::Purpose;
    use crate::security::app_jwt::AppAuthenticator;
    use crate::security::face::FaceVerifier;
    use crate::test_support::at;
    use chrono::TimeDelta;

    #[test]
    fn minted_tokens_verify_and_forgeries_do_not() {
        let (rsa_private, rsa_public) = generate_rsa();
        let (other_rsa, _) = generate_rsa();
        let now = at(2026, 11, 28, 10, 0, 0);
        let auth = AppAuthenticator::new(&rsa_public, "iss", "aud").unwrap();
        let token = app_token(&rsa_private, "iss", "aud", "user-1", now, 600).unwrap();
        let header = format!("Bearer {token}");
        assert_eq!(
            auth.authenticate(None, Some(&header), now)
                .unwrap()
                .as_str(),
            "user-1"
        );
        assert!(
            auth.authenticate(None, Some(&header), now + TimeDelta::hours(1))
                .is_err(),
            "expired"
        );
        assert!(
            auth.authenticate(None, Some(&header), now - TimeDelta::hours(1))
                .is_err(),
            "not yet valid"
        );
        let forged = app_token(&other_rsa, "iss", "aud", "user-1", now, 600).unwrap();
        assert!(auth
            .authenticate(None, Some(&format!("Bearer {forged}")), now)
            .is_err());
        let wrong_aud = app_token(&rsa_private, "iss", "other", "user-1", now, 600).unwrap();
        assert!(auth
            .authenticate(None, Some(&format!("Bearer {wrong_aud}")), now)
            .is_err());
        assert!(auth.authenticate(None, None, now).is_err());
        assert!(
            auth.authenticate(None, Some(&token), now).is_err(),
            "no Bearer prefix"
        );

        // An EdDSA token (the face provider's kind) is not an app token.
        let (private, public) = generate_ed25519();
        let (other_private, _) = generate_ed25519();
        let provider = |pem| FaceProvider {
            private_pem: pem,
            issuer: "face",
            audience: "card-lookup",
        };
        let ed_token = provider(&private)
            .token("user-1", "SUBMIT_QUERY", "pass", now, "n0")
            .unwrap();
        assert!(auth
            .authenticate(None, Some(&format!("Bearer {ed_token}")), now)
            .is_err());

        let face =
            FaceVerifier::new(&public, "face", "card-lookup", TimeDelta::minutes(5)).unwrap();
        let user = crate::model::ids::UserId::parse("user-1").unwrap();
        let submit = Purpose::SubmitQuery;
        let ok = provider(&private)
            .token("user-1", "SUBMIT_QUERY", "pass", now, "n1")
            .unwrap();
        assert_eq!(
            face.verify(&ok, &user, submit, now + TimeDelta::minutes(5))
                .unwrap()
                .nonce,
            "n1"
        );
        assert!(face
            .verify(
                &ok,
                &user,
                submit,
                now + TimeDelta::minutes(5) + TimeDelta::seconds(1)
            )
            .is_err());
        let other_user = crate::model::ids::UserId::parse("user-2").unwrap();
        assert!(face.verify(&ok, &other_user, submit, now).is_err());
        let failed = provider(&private)
            .token("user-1", "SUBMIT_QUERY", "fail", now, "n2")
            .unwrap();
        assert!(face.verify(&failed, &user, submit, now).is_err());
        let forged = provider(&other_private)
            .token("user-1", "SUBMIT_QUERY", "pass", now, "n3")
            .unwrap();
        assert!(face.verify(&forged, &user, submit, now).is_err());
    }

    #[test]
    fn face_passes_are_bound_to_this_service_and_to_their_purpose() {
        let (private, public) = generate_ed25519();
        let now = at(2026, 11, 28, 10, 0, 0);
        let face =
            FaceVerifier::new(&public, "face", "card-lookup", TimeDelta::minutes(5)).unwrap();
        let user = crate::model::ids::UserId::parse("user-1").unwrap();
        let ours = FaceProvider {
            private_pem: &private,
            issuer: "face",
            audience: "card-lookup",
        };
        let view = ours
            .token("user-1", "VIEW_REPORT", "pass", now, "n1")
            .unwrap();
        assert!(face.verify(&view, &user, Purpose::ViewReport, now).is_ok());
        assert!(matches!(
            face.verify(&view, &user, Purpose::SubmitQuery, now),
            Err(crate::error::ServiceError::FaceVerificationFailed)
        ));
        for purpose in ["", "view_report", "ANY"] {
            let t = ours.token("user-1", purpose, "pass", now, "n2").unwrap();
            assert!(
                face.verify(&t, &user, Purpose::ViewReport, now).is_err(),
                "{purpose}"
            );
            assert!(
                face.verify(&t, &user, Purpose::SubmitQuery, now).is_err(),
                "{purpose}"
            );
        }
        let elsewhere = FaceProvider {
            audience: "another-service",
            ..ours
        };
        let t = elsewhere
            .token("user-1", "VIEW_REPORT", "pass", now, "n3")
            .unwrap();
        assert!(matches!(
            face.verify(&t, &user, Purpose::ViewReport, now),
            Err(crate::error::ServiceError::FaceVerificationFailed)
        ));
        // No audience or no purpose at all.
        for claims in [
            json!({"iss": "face", "sub": "user-1", "purpose": "VIEW_REPORT", "result": "pass", "iat": now.timestamp(), "nonce": "n4"}),
            json!({"iss": "face", "aud": "card-lookup", "sub": "user-1", "result": "pass", "iat": now.timestamp(), "nonce": "n5"}),
        ] {
            let t = sign(&private, &claims).unwrap();
            assert!(
                face.verify(&t, &user, Purpose::ViewReport, now).is_err(),
                "{claims}"
            );
        }
        assert!(FaceVerifier::new(&public, "face", " ", TimeDelta::minutes(5)).is_err());
    }
}
