//! Report content is sealed so that only the viewing path can read it: the aggregator
//! holds the report *public* key (X25519) and seals each report to it with a fresh
//! ephemeral key (ECIES: X25519 → HKDF-SHA256 → AES-256-GCM, the query id as associated
//! data); only view-report holds the private key. Table readers, backups and streams see
//! ciphertext, and a sealed report cannot be moved to another query.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::agreement::{self, EphemeralPrivateKey, PrivateKey, UnparsedPublicKey, X25519};
use aws_lc_rs::encoding::{AsBigEndian, Curve25519SeedBin};
use aws_lc_rs::hkdf::{Salt, HKDF_SHA256};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};

const INFO: &[u8] = b"card-lookup report v1";

/// What is stored in place of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// Identifies the key pair (rotation).
    pub key_id: String,
    /// Base64 ephemeral X25519 public key.
    pub epk: String,
    /// Base64 GCM nonce.
    pub nonce: String,
    /// Base64 ciphertext and tag.
    pub ciphertext: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("report key: {0}")]
    Key(String),
    #[error("sealing failed")]
    Seal,
    #[error("the sealed report cannot be opened with this key")]
    Open,
}

fn derive_key(shared: &[u8], epk: &[u8]) -> Result<LessSafeKey, CryptoError> {
    let prk = Salt::new(HKDF_SHA256, epk).extract(shared);
    let mut key = [0u8; 32];
    prk.expand(&[INFO], &AES_256_GCM)
        .and_then(|okm| okm.fill(&mut key))
        .map_err(|_| CryptoError::Seal)?;
    let unbound = UnboundKey::new(&AES_256_GCM, &key).map_err(|_| CryptoError::Seal)?;
    Ok(LessSafeKey::new(unbound))
}

/// The aggregator's side.
pub struct ReportSealer {
    key_id: String,
    public: Vec<u8>,
    rng: SystemRandom,
}

impl ReportSealer {
    /// `public_hex`: the 32-byte X25519 public key.
    pub fn new(key_id: &str, public_hex: &str) -> Result<Self, CryptoError> {
        let public = hex::decode(public_hex.trim()).map_err(|e| CryptoError::Key(e.to_string()))?;
        if public.len() != 32 {
            return Err(CryptoError::Key("an X25519 public key is 32 bytes".into()));
        }
        Ok(Self {
            key_id: key_id.to_owned(),
            public,
            rng: SystemRandom::new(),
        })
    }

    pub fn seal(&self, aad: &str, plaintext: &[u8]) -> Result<Sealed, CryptoError> {
        let eph =
            EphemeralPrivateKey::generate(&X25519, &self.rng).map_err(|_| CryptoError::Seal)?;
        let epk = eph
            .compute_public_key()
            .map_err(|_| CryptoError::Seal)?
            .as_ref()
            .to_vec();
        let peer = UnparsedPublicKey::new(&X25519, &self.public);
        let key = agreement::agree_ephemeral(eph, peer, CryptoError::Seal, |shared| {
            derive_key(shared, &epk)
        })?;
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| CryptoError::Seal)?;
        let mut data = plaintext.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad.as_bytes()),
            &mut data,
        )
        .map_err(|_| CryptoError::Seal)?;
        Ok(Sealed {
            key_id: self.key_id.clone(),
            epk: B64.encode(epk),
            nonce: B64.encode(nonce),
            ciphertext: B64.encode(data),
        })
    }
}

/// The viewing side. Holds the current key and, during a rotation, the previous one
/// (reports live 7 days, so a retired key must keep opening them that long).
pub struct ReportOpener {
    keys: Vec<(String, PrivateKey)>,
}

impl ReportOpener {
    /// `private_hex`: the 32-byte X25519 private key.
    pub fn new(key_id: &str, private_hex: &str) -> Result<Self, CryptoError> {
        Ok(Self {
            keys: vec![(key_id.to_owned(), parse_private(private_hex)?)],
        })
    }

    /// Also opens reports sealed to a retired key.
    pub fn with_previous(mut self, key_id: &str, private_hex: &str) -> Result<Self, CryptoError> {
        self.keys
            .push((key_id.to_owned(), parse_private(private_hex)?));
        Ok(self)
    }

    pub fn open(&self, aad: &str, sealed: &Sealed) -> Result<Vec<u8>, CryptoError> {
        let (_, private) = self
            .keys
            .iter()
            .find(|(id, _)| *id == sealed.key_id)
            .ok_or(CryptoError::Open)?;
        let epk = B64.decode(&sealed.epk).map_err(|_| CryptoError::Open)?;
        let nonce: [u8; NONCE_LEN] = B64
            .decode(&sealed.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or(CryptoError::Open)?;
        let mut data = B64
            .decode(&sealed.ciphertext)
            .map_err(|_| CryptoError::Open)?;
        let peer = UnparsedPublicKey::new(&X25519, &epk);
        let key = agreement::agree(private, peer, CryptoError::Open, |shared| {
            derive_key(shared, &epk).map_err(|_| CryptoError::Open)
        })?;
        let plain = key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad.as_bytes()),
                &mut data,
            )
            .map_err(|_| CryptoError::Open)?;
        Ok(plain.to_vec())
    }
}

fn parse_private(private_hex: &str) -> Result<PrivateKey, CryptoError> {
    let bytes = hex::decode(private_hex.trim()).map_err(|e| CryptoError::Key(e.to_string()))?;
    PrivateKey::from_private_key(&X25519, &bytes)
        .map_err(|_| CryptoError::Key("not an X25519 private key".into()))
}

/// A fresh key pair as (private hex, public hex): local tooling and tests.
pub fn generate_keypair() -> (String, String) {
    let private = PrivateKey::generate(&X25519).expect("the system RNG works");
    let public = private.compute_public_key().expect("X25519 public key");
    let raw: Curve25519SeedBin<'static> = private.as_be_bytes().expect("raw private key");
    (hex::encode(raw.as_ref()), hex::encode(public.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_private_key_opens_and_only_for_the_same_query() {
        let (private, public) = generate_keypair();
        let (other_private, _) = generate_keypair();
        let sealer = ReportSealer::new("k1", &public).unwrap();
        let sealed = sealer.seal("Q1", b"{\"cards\":[]}").unwrap();
        assert!(!sealed.ciphertext.contains("cards"));
        let opener = ReportOpener::new("k1", &private).unwrap();
        assert_eq!(opener.open("Q1", &sealed).unwrap(), b"{\"cards\":[]}");
        assert!(opener.open("Q2", &sealed).is_err(), "bound to its query");
        assert!(ReportOpener::new("k1", &other_private)
            .unwrap()
            .open("Q1", &sealed)
            .is_err());
        assert!(ReportOpener::new("k2", &private)
            .unwrap()
            .open("Q1", &sealed)
            .is_err());
        let mut tampered = sealed.clone();
        tampered.ciphertext = B64.encode(b"x".repeat(40));
        assert!(opener.open("Q1", &tampered).is_err());
        // During a rotation the previous key still opens what it sealed.
        let (new_private, new_public) = generate_keypair();
        let rotated = ReportOpener::new("k2", &new_private)
            .unwrap()
            .with_previous("k1", &private)
            .unwrap();
        assert_eq!(rotated.open("Q1", &sealed).unwrap(), b"{\"cards\":[]}");
        let fresh = ReportSealer::new("k2", &new_public)
            .unwrap()
            .seal("Q1", b"x")
            .unwrap();
        assert_eq!(rotated.open("Q1", &fresh).unwrap(), b"x");
        // Two seals of the same report differ (fresh ephemeral key and nonce).
        assert_ne!(
            sealer.seal("Q1", b"same").unwrap(),
            sealer.seal("Q1", b"same").unwrap()
        );
    }
}
