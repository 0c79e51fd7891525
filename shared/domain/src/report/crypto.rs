//! Card data is sealed so that only the viewing path can read it: bank-fanout,
//! bank-callback and the aggregator hold the report *public* key and seal to it (HPKE,
//! RFC 9180, base mode: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM); only
//! view-report holds the private key. Table readers, the stream, backups and the sealing
//! functions themselves see ciphertext.
//!
//! Every envelope is bound (as HPKE associated data) to what it belongs to, rebuilt by
//! the opener from what it knows: a bank's answer to its query, user, bank, inquiry, the
//! query's report deadline and the key id; a report to its query, user, generation time,
//! expiry and key id. Changing any of them in the table makes the envelope unopenable,
//! so a report cannot be moved to another user or query, or given a longer life.
//!
//! Plaintexts are padded with JSON whitespace to a multiple of [`PAD_TO`] bytes, so the
//! ciphertext's length does not tell how many cards a bank holds for the person.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chrono::{DateTime, Utc};
use hpke::aead::AesGcm256;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};

use crate::model::bank::BankCode;
use crate::model::ids::{QueryId, UserId};
use crate::model::sealed::Sealed;
use crate::model::timestamp;

type Kem = X25519HkdfSha256;
type PublicKey = <Kem as hpke::Kem>::PublicKey;
type PrivateKey = <Kem as hpke::Kem>::PrivateKey;
type EncappedKey = <Kem as hpke::Kem>::EncappedKey;

/// HPKE `info`: separates these envelopes from any other use of the same key.
const INFO: &[u8] = b"card-lookup sealed v2";

/// Plaintexts are padded to a multiple of this (about 20 cards per step).
pub const PAD_TO: usize = 1024;

/// What an envelope belongs to. Sealer and opener build it from their own knowledge;
/// any difference fails the open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding<'a> {
    /// One bank's answer (its cards), sealed when the leg settled.
    Answer {
        query: &'a QueryId,
        user: &'a UserId,
        bank: &'a BankCode,
        inquiry_id: &'a str,
        /// The query's `report_due_by`, as submitted (the record's times cannot be
        /// rewritten without the answers becoming unopenable).
        report_due_by: DateTime<Utc>,
    },
    /// A report: which answers it holds and how long it lives.
    Report {
        query: &'a QueryId,
        user: &'a UserId,
        generated_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    },
}

impl Binding<'_> {
    /// The associated data: a JSON array (unambiguous whatever the fields hold).
    fn aad(&self, key_id: &str) -> Vec<u8> {
        let fields: Vec<String> = match *self {
            Binding::Answer {
                query,
                user,
                bank,
                inquiry_id,
                report_due_by,
            } => vec![
                "answer".into(),
                query.to_string(),
                user.as_str().into(),
                bank.to_string(),
                inquiry_id.into(),
                timestamp::format(report_due_by),
                key_id.into(),
            ],
            Binding::Report {
                query,
                user,
                generated_at,
                expires_at,
            } => vec![
                "report".into(),
                query.to_string(),
                user.as_str().into(),
                timestamp::format(generated_at),
                timestamp::format(expires_at),
                key_id.into(),
            ],
        };
        serde_json::to_vec(&fields).unwrap_or_default()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("report key: {0}")]
    Key(String),
    #[error("sealing failed")]
    Seal,
    #[error("the envelope cannot be opened with this key and binding")]
    Open,
}

/// The sealing side (fan-out, callbacks, aggregator): the public key only.
pub struct ReportSealer {
    key_id: String,
    public: PublicKey,
}

impl ReportSealer {
    /// `public_hex`: the 32-byte X25519 public key.
    pub fn new(key_id: &str, public_hex: &str) -> Result<Self, CryptoError> {
        let bytes = hex::decode(public_hex.trim()).map_err(|e| CryptoError::Key(e.to_string()))?;
        let public = PublicKey::from_bytes(&bytes)
            .map_err(|_| CryptoError::Key("an X25519 public key is 32 bytes".into()))?;
        Ok(Self {
            key_id: key_id.to_owned(),
            public,
        })
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn seal(&self, binding: &Binding<'_>, plaintext: &[u8]) -> Result<Sealed, CryptoError> {
        let mut padded = plaintext.to_vec();
        let target = padded.len().div_ceil(PAD_TO).max(1) * PAD_TO;
        padded.resize(target, b' ');
        let (enc, ciphertext) = hpke::single_shot_seal::<AesGcm256, HkdfSha256, Kem>(
            &OpModeS::Base,
            &self.public,
            INFO,
            &padded,
            &binding.aad(&self.key_id),
        )
        .map_err(|_| CryptoError::Seal)?;
        Ok(Sealed {
            key_id: self.key_id.clone(),
            enc: B64.encode(enc.to_bytes()),
            ciphertext: B64.encode(ciphertext),
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

    /// Also opens envelopes sealed to a retired key.
    pub fn with_previous(mut self, key_id: &str, private_hex: &str) -> Result<Self, CryptoError> {
        self.keys
            .push((key_id.to_owned(), parse_private(private_hex)?));
        Ok(self)
    }

    /// The plaintext (padding included: JSON parsers skip it).
    pub fn open(&self, binding: &Binding<'_>, sealed: &Sealed) -> Result<Vec<u8>, CryptoError> {
        let (_, private) = self
            .keys
            .iter()
            .find(|(id, _)| *id == sealed.key_id)
            .ok_or(CryptoError::Open)?;
        let enc = B64
            .decode(&sealed.enc)
            .ok()
            .and_then(|b| EncappedKey::from_bytes(&b).ok())
            .ok_or(CryptoError::Open)?;
        let ciphertext = B64
            .decode(&sealed.ciphertext)
            .map_err(|_| CryptoError::Open)?;
        hpke::single_shot_open::<AesGcm256, HkdfSha256, Kem>(
            &OpModeR::Base,
            private,
            &enc,
            INFO,
            &ciphertext,
            &binding.aad(&sealed.key_id),
        )
        .map_err(|_| CryptoError::Open)
    }
}

impl ReportOpener {
    /// A 32-byte key for `label`, derived from the current private key: secrets that
    /// only the viewing path may hold (the report cursor's MAC key) need no secret of
    /// their own to deploy and rotate, and `label` keeps each use apart from the others
    /// and from HPKE.
    pub fn derive_key(&self, label: &[u8]) -> [u8; 32] {
        use hmac::{Hmac, KeyInit, Mac};
        let (_, private) = &self.keys[0];
        let mut mac =
            Hmac::<sha2::Sha256>::new_from_slice(&private.to_bytes()).expect("HMAC takes any key");
        mac.update(b"card-lookup derived key v1\n");
        mac.update(label);
        mac.finalize().into_bytes().into()
    }
}

fn parse_private(private_hex: &str) -> Result<PrivateKey, CryptoError> {
    let bytes = hex::decode(private_hex.trim()).map_err(|e| CryptoError::Key(e.to_string()))?;
    PrivateKey::from_bytes(&bytes).map_err(|_| CryptoError::Key("not an X25519 private key".into()))
}

/// A fresh key pair as (private hex, public hex): local tooling and tests.
pub fn generate_keypair() -> (String, String) {
    let (private, public) = Kem::gen_keypair();
    (
        hex::encode(private.to_bytes()),
        hex::encode(public.to_bytes()),
    )
}

#[cfg(test)]
mod tests {
    use crate::test_support::at;
    use chrono::TimeDelta;

    use super::*;

    const T: DateTime<Utc> = at(2026, 11, 28, 10, 0, 0);

    fn ids() -> (QueryId, QueryId, UserId, UserId) {
        (
            QueryId::generate(),
            QueryId::generate(),
            UserId::parse("u1").unwrap(),
            UserId::parse("u2").unwrap(),
        )
    }

    fn report<'a>(q: &'a QueryId, u: &'a UserId, exp: DateTime<Utc>) -> Binding<'a> {
        Binding::Report {
            query: q,
            user: u,
            generated_at: T,
            expires_at: exp,
        }
    }

    #[test]
    fn only_the_private_key_opens_and_only_with_the_same_binding() {
        let (q1, q2, u1, u2) = ids();
        let (private, public) = generate_keypair();
        let (other_private, _) = generate_keypair();
        let sealer = ReportSealer::new("k1", &public).unwrap();
        let exp = T + TimeDelta::days(7);
        let b = report(&q1, &u1, exp);
        let sealed = sealer.seal(&b, b"{\"cards\":[]}").unwrap();
        assert!(!sealed.ciphertext.contains("cards"));
        let opener = ReportOpener::new("k1", &private).unwrap();
        let plain = opener.open(&b, &sealed).unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&plain).unwrap(),
            serde_json::json!({"cards": []})
        );
        // (binding the opener believes in, why it must fail)
        for (wrong, why) in [
            (report(&q2, &u1, exp), "another query"),
            (report(&q1, &u2, exp), "another user"),
            (report(&q1, &u1, exp + TimeDelta::days(1)), "a longer life"),
            (
                report(&q1, &u1, exp - TimeDelta::seconds(1)),
                "another expiry",
            ),
            (
                Binding::Report {
                    query: &q1,
                    user: &u1,
                    generated_at: T + TimeDelta::seconds(1),
                    expires_at: exp,
                },
                "another generation time",
            ),
        ] {
            assert!(opener.open(&wrong, &sealed).is_err(), "{why}");
        }
        // Key: a different private key, a different key id, a relabelled envelope.
        assert!(ReportOpener::new("k1", &other_private)
            .unwrap()
            .open(&b, &sealed)
            .is_err());
        assert!(ReportOpener::new("k2", &private)
            .unwrap()
            .open(&b, &sealed)
            .is_err());
        let both = ReportOpener::new("k2", &private)
            .unwrap()
            .with_previous("k1", &private)
            .unwrap();
        let relabelled = Sealed {
            key_id: "k2".into(),
            ..sealed.clone()
        };
        assert!(both.open(&b, &relabelled).is_err(), "the key id is bound");
        let mut tampered = sealed.clone();
        tampered.ciphertext = B64.encode(b"x".repeat(40));
        assert!(opener.open(&b, &tampered).is_err());
        // Two seals of the same report differ (fresh encapsulation).
        assert_ne!(
            sealer.seal(&b, b"same").unwrap(),
            sealer.seal(&b, b"same").unwrap()
        );
    }

    #[test]
    fn an_answer_is_bound_to_its_leg_and_deadline() {
        let (q1, q2, u1, u2) = ids();
        let (private, public) = generate_keypair();
        let icbc = BankCode::new_unchecked_format("ICBC").unwrap();
        let boc = BankCode::new_unchecked_format("BOC").unwrap();
        let due = T + TimeDelta::hours(24);
        let answer = |q, u, bank, inquiry_id, report_due_by| Binding::Answer {
            query: q,
            user: u,
            bank,
            inquiry_id,
            report_due_by,
        };
        let b = answer(&q1, &u1, &icbc, "inq-1", due);
        let sealed = ReportSealer::new("k1", &public)
            .unwrap()
            .seal(&b, b"[]")
            .unwrap();
        let opener = ReportOpener::new("k1", &private).unwrap();
        assert!(opener.open(&b, &sealed).is_ok());
        for wrong in [
            answer(&q2, &u1, &icbc, "inq-1", due),
            answer(&q1, &u2, &icbc, "inq-1", due),
            answer(&q1, &u1, &boc, "inq-1", due),
            answer(&q1, &u1, &icbc, "inq-2", due),
            answer(&q1, &u1, &icbc, "inq-1", due + TimeDelta::hours(1)),
            report(&q1, &u1, due),
        ] {
            assert!(opener.open(&wrong, &sealed).is_err(), "{wrong:?}");
        }
    }

    #[test]
    fn lengths_do_not_tell_how_many_cards() {
        let (q, _, u, _) = ids();
        let (_, public) = generate_keypair();
        let sealer = ReportSealer::new("k1", &public).unwrap();
        let b = report(&q, &u, T);
        let one = sealer.seal(&b, &[b'x'; 60]).unwrap();
        let ten = sealer.seal(&b, &[b'x'; 600]).unwrap();
        assert_eq!(one.ciphertext.len(), ten.ciphertext.len());
        let more = sealer.seal(&b, &[b'x'; PAD_TO + 1]).unwrap();
        assert!(more.ciphertext.len() > ten.ciphertext.len());
    }

    #[test]
    fn rotation_keeps_the_previous_key_opening_what_it_sealed() {
        let (q, _, u, _) = ids();
        let b = report(&q, &u, T);
        let (old_private, old_public) = generate_keypair();
        let (new_private, new_public) = generate_keypair();
        let old = ReportSealer::new("k1", &old_public)
            .unwrap()
            .seal(&b, b"old")
            .unwrap();
        let new = ReportSealer::new("k2", &new_public)
            .unwrap()
            .seal(&b, b"new")
            .unwrap();
        let rotated = ReportOpener::new("k2", &new_private)
            .unwrap()
            .with_previous("k1", &old_private)
            .unwrap();
        assert!(rotated.open(&b, &old).unwrap().starts_with(b"old"));
        assert!(rotated.open(&b, &new).unwrap().starts_with(b"new"));
        assert!(ReportOpener::new("k2", &new_private)
            .unwrap()
            .open(&b, &old)
            .is_err());
    }

    #[test]
    fn keys_made_elsewhere_still_work() {
        // Keys of the raw X25519 format the deployment holds (32 bytes, hex), made with
        // aws-lc-rs as before this module moved to HPKE.
        use aws_lc_rs::agreement::{PrivateKey as LcPrivate, X25519};
        use aws_lc_rs::encoding::{AsBigEndian, Curve25519SeedBin};
        let lc = LcPrivate::generate(&X25519).unwrap();
        let public = hex::encode(lc.compute_public_key().unwrap().as_ref());
        let raw: Curve25519SeedBin<'static> = lc.as_be_bytes().unwrap();
        let private = hex::encode(raw.as_ref());
        let (q, _, u, _) = ids();
        let b = report(&q, &u, T);
        let sealed = ReportSealer::new("k", &public)
            .unwrap()
            .seal(&b, b"x")
            .unwrap();
        assert!(ReportOpener::new("k", &private)
            .unwrap()
            .open(&b, &sealed)
            .is_ok());
    }
}
