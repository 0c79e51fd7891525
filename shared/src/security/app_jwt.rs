//! App authentication. Behind API Gateway the HTTP API's JWT authorizer has checked the
//! token and the handler reads `sub` from the authorizer claims in the request context
//! (which only API Gateway can fill in). Where no authorizer claims are present, the
//! handler verifies the bearer token itself: RS256 signature with the configured public
//! key, `iss`, `aud`, `exp` and `nbf` against the injected clock. (RS256 because API
//! Gateway's JWT authorizers verify RSA signatures only: the same tokens pass both.)

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use time::OffsetDateTime;

use crate::error::ServiceError;
use crate::model::ids::UserId;

/// Tolerance for clock skew between the identity provider and us.
const LEEWAY_SECS: i64 = 30;

pub struct AppAuthenticator {
    key: DecodingKey,
    validation: Validation,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: i64,
    #[serde(default)]
    nbf: Option<i64>,
}

impl AppAuthenticator {
    pub fn new(public_key_pem: &str, issuer: &str, audience: &str) -> Result<Self, String> {
        let key = DecodingKey::from_rsa_pem(public_key_pem.as_bytes())
            .map_err(|e| format!("app JWT public key (RSA PEM): {e}"))?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        // Expiry is checked against the injected clock below.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        Ok(Self { key, validation })
    }

    /// From `APP_JWT_PUBLIC_KEY[_FILE]`, `APP_JWT_ISSUER`, `APP_JWT_AUDIENCE`.
    pub fn from_env() -> Result<Self, String> {
        let pem = super::pem_from_env("APP_JWT_PUBLIC_KEY")?;
        let var = |n: &str| std::env::var(n).map_err(|_| format!("{n} must be set"));
        Self::new(&pem, &var("APP_JWT_ISSUER")?, &var("APP_JWT_AUDIENCE")?)
    }

    /// The caller: the authorizer's `sub` when API Gateway checked the token, else the
    /// verified bearer token's `sub`.
    pub fn authenticate(
        &self,
        authorizer_sub: Option<&str>,
        authorization_header: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<UserId, ServiceError> {
        if let Some(sub) = authorizer_sub {
            return UserId::parse(sub).map_err(|_| ServiceError::Unauthenticated);
        }
        let token = authorization_header
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(ServiceError::Unauthenticated)?;
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|_| ServiceError::Unauthenticated)?;
        let now = now.unix_timestamp();
        let c = data.claims;
        if c.exp + LEEWAY_SECS <= now || c.nbf.is_some_and(|nbf| nbf - LEEWAY_SECS > now) {
            return Err(ServiceError::Unauthenticated);
        }
        UserId::parse(&c.sub).map_err(|_| ServiceError::Unauthenticated)
    }
}
