//! App authentication. The handler verifies the bearer token itself on every request:
//! RS256 signature with the configured public key (parsed once, at start), `iss`, `aud`,
//! `exp` and `nbf` against the injected clock. Behind API Gateway the HTTP API's JWT
//! authorizer has checked the same token and put its claims in the request context;
//! those claims are only a cross-check, never the identity: an event can reach the
//! function by other paths (the Lambda invoke API, a misrouted integration) carrying any
//! request context it likes. Where claims are present they must agree with the token.
//! (RS256 because API Gateway's JWT authorizers verify RSA signatures only: the same
//! tokens pass both.)

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::error::ServiceError;
use crate::model::ids::UserId;

/// Tolerance for clock skew between the identity provider and us.
const LEEWAY_SECS: i64 = 30;

pub struct AppAuthenticator {
    key: DecodingKey,
    validation: Validation,
}

/// The claims API Gateway's JWT authorizer put into the request context, as strings
/// (HTTP APIs flatten every claim to a string; a list becomes `[a b]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorizerClaims {
    pub sub: Option<String>,
    pub iss: Option<String>,
    pub aud: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    iss: String,
    aud: Audience,
    exp: i64,
    #[serde(default)]
    nbf: Option<i64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn set(&self) -> BTreeSet<&str> {
        match self {
            Audience::One(a) => BTreeSet::from([a.as_str()]),
            Audience::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// An authorizer's `aud`: `x` or `[x y]`.
fn authorizer_audience(s: &str) -> BTreeSet<&str> {
    let s = s.trim();
    match s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        Some(list) => list.split_whitespace().collect(),
        None => BTreeSet::from([s]),
    }
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

    /// The caller: the verified bearer token's `sub`. Authorizer claims, when present,
    /// must name the same subject (and issuer and audience, where they carry them).
    pub fn authenticate(
        &self,
        authorizer: Option<&AuthorizerClaims>,
        authorization_header: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<UserId, ServiceError> {
        let token = authorization_header
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(ServiceError::Unauthenticated)?;
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|_| ServiceError::Unauthenticated)?;
        let now = now.timestamp();
        let c = data.claims;
        if c.exp + LEEWAY_SECS <= now || c.nbf.is_some_and(|nbf| nbf - LEEWAY_SECS > now) {
            return Err(ServiceError::Unauthenticated);
        }
        if let Some(a) = authorizer {
            let agrees = a.sub.as_deref() == Some(c.sub.as_str())
                && a.iss.as_deref().is_none_or(|iss| iss == c.iss)
                && a.aud
                    .as_deref()
                    .is_none_or(|aud| authorizer_audience(aud) == c.aud.set());
            if !agrees {
                tracing::warn!("authorizer claims disagree with the bearer token");
                return Err(ServiceError::Unauthenticated);
            }
        }
        UserId::parse(&c.sub).map_err(|_| ServiceError::Unauthenticated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::dev;
    use crate::test_support::at;

    const NOW: DateTime<Utc> = at(2026, 11, 28, 10, 0, 0);

    fn claims(sub: &str, iss: Option<&str>, aud: Option<&str>) -> AuthorizerClaims {
        AuthorizerClaims {
            sub: Some(sub.into()),
            iss: iss.map(Into::into),
            aud: aud.map(Into::into),
        }
    }

    #[test]
    fn authorizer_claims_never_stand_in_for_the_token() {
        let (private, public) = dev::generate_rsa();
        let auth = AppAuthenticator::new(&public, "iss", "aud").unwrap();
        let token = dev::app_token(&private, "iss", "aud", "user-a", NOW, 600).unwrap();
        let bearer = format!("Bearer {token}");
        let (other_private, _) = dev::generate_rsa();
        let forged = dev::app_token(&other_private, "iss", "aud", "user-a", NOW, 600).unwrap();

        // Claims alone, or with a forged token: refused.
        let a = claims("user-a", Some("iss"), Some("aud"));
        assert!(auth.authenticate(Some(&a), None, NOW).is_err());
        assert!(auth
            .authenticate(Some(&a), Some(&format!("Bearer {forged}")), NOW)
            .is_err());
        // Claims that agree: the token's subject.
        assert_eq!(
            auth.authenticate(Some(&a), Some(&bearer), NOW)
                .unwrap()
                .as_str(),
            "user-a"
        );
        assert_eq!(
            auth.authenticate(
                Some(&claims("user-a", None, Some("[aud]"))),
                Some(&bearer),
                NOW
            )
            .unwrap()
            .as_str(),
            "user-a"
        );
        // Claims of another user, issuer or audience than the token's: refused.
        for bad in [
            claims("user-b", Some("iss"), Some("aud")),
            claims("user-a", Some("other-iss"), Some("aud")),
            claims("user-a", Some("iss"), Some("other-aud")),
            claims("user-a", Some("iss"), Some("[aud other-aud]")),
            AuthorizerClaims::default(),
        ] {
            assert!(
                matches!(
                    auth.authenticate(Some(&bad), Some(&bearer), NOW),
                    Err(ServiceError::Unauthenticated)
                ),
                "{bad:?}"
            );
        }
    }
}
