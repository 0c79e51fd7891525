//! Face-verification tokens: a compact JWS (EdDSA) issued by the face-verification
//! provider after liveness and match. Claims: `iss` (the provider), `aud` (this
//! service: a pass the provider issued for another service of the same user is not one
//! for us), `purpose` (`SUBMIT_QUERY` or `VIEW_REPORT`: a pass taken to view a report
//! cannot submit a query, nor the other way round), `sub` (the user), `result`
//! ("pass"), `iat`, `nonce` (single use, enforced by the store).

use chrono::{DateTime, TimeDelta, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::error::ServiceError;
use crate::model::ids::UserId;
use crate::model::purpose::Purpose;

const FUTURE_SKEW_SECS: i64 = 30;
const MAX_TOKEN_LEN: usize = 4096;

pub struct FaceVerifier {
    key: DecodingKey,
    validation: Validation,
    max_age: TimeDelta,
}

#[derive(Deserialize)]
struct FaceClaims {
    sub: String,
    purpose: String,
    result: String,
    iat: i64,
    nonce: String,
}

/// A face token that passed every check but the nonce's single use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FacePass {
    pub nonce: String,
    pub issued_at: DateTime<Utc>,
}

impl FaceVerifier {
    pub fn new(
        public_key_pem: &str,
        issuer: &str,
        audience: &str,
        max_age: TimeDelta,
    ) -> Result<Self, String> {
        let key = DecodingKey::from_ed_pem(public_key_pem.as_bytes())
            .map_err(|e| format!("face provider public key: {e}"))?;
        if audience.trim().is_empty() {
            return Err("the face token audience must not be empty".into());
        }
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["iss", "aud", "sub"]);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        Ok(Self {
            key,
            validation,
            max_age,
        })
    }

    /// A pass of `user` for `purpose`, issued for this service within the maximum age.
    pub fn verify(
        &self,
        token: &str,
        user: &UserId,
        purpose: Purpose,
        now: DateTime<Utc>,
    ) -> Result<FacePass, ServiceError> {
        let fail = || ServiceError::FaceVerificationFailed;
        if token.len() > MAX_TOKEN_LEN {
            return Err(fail());
        }
        let c = jsonwebtoken::decode::<FaceClaims>(token, &self.key, &self.validation)
            .map_err(|_| fail())?
            .claims;
        let issued_at = DateTime::from_timestamp_secs(c.iat).ok_or_else(fail)?;
        let age = now - issued_at;
        if c.sub != user.as_str()
            || c.purpose != purpose.as_str()
            || c.result != "pass"
            || c.nonce.is_empty()
            || c.nonce.len() > 128
            || age > self.max_age
            || age < TimeDelta::seconds(-FUTURE_SKEW_SECS)
        {
            return Err(fail());
        }
        Ok(FacePass {
            nonce: c.nonce,
            issued_at,
        })
    }
}
