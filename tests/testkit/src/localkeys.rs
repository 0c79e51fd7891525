//! Local signing keys (app JWT issuer, face-verification provider) and the SMS code key,
//! created on first use under `.local/keys/` (git-ignored, never committed), plus the
//! functions' environment for the local stack.

use std::path::PathBuf;

use shared::model::purpose::Purpose;
use shared::security::dev;

pub const APP_JWT_ISSUER: &str = "https://id.local.card-lookup";
pub const APP_JWT_AUDIENCE: &str = "card-lookup-app";
pub const FACE_ISSUER: &str = "face-verification.local";
/// The audience the face provider issues this service's passes for (`FACE_AUDIENCE`).
pub const FACE_AUDIENCE: &str = "card-lookup.local";
/// Table prefix of the run command's (and the HTTP tests') stack.
pub const RUN_PREFIX: &str = "local-";
/// Per-bank HMAC secrets of the local stack: `{"ICBC": "<hex>", ...}`.
pub const BANK_SECRETS_FILE: &str = "bank_secrets.json";
/// The local seed of the secrets of banks that file does not list (a configuration of
/// hundreds of banks): see [`LocalKeys::bank_secrets`].
const BANK_SECRET_SEED: &str = "bank_secret_seed.hex";

pub struct LocalKeys {
    pub dir: PathBuf,
    pub app_private: String,
    pub face_private: String,
}

/// App JWTs are RS256 (API Gateway's JWT authorizer verifies RSA only).
const APP_PRIVATE: &str = "app_jwt_rs256_private.pem";
const APP_PUBLIC: &str = "app_jwt_rs256_public.pem";

fn random32() -> [u8; 32] {
    let mut key = [0u8; 32];
    rand::fill(&mut key);
    key
}

/// `{"ICBC": "<hex>", ...}`: one random secret per configured bank.
fn bank_secrets() -> String {
    let config = shared::config::ServiceConfig::parse(shared::config::DEFAULT_CONFIG)
        .expect("the shipped configuration parses");
    let secrets: serde_json::Map<String, serde_json::Value> = config
        .banks
        .all()
        .iter()
        .map(|b| (b.code.to_string(), hex::encode(random32()).into()))
        .collect();
    serde_json::Value::Object(secrets).to_string()
}

/// Writes `names` (contents from `make`, generated only if the group is missing) so
/// that the first writer wins: the first file is linked create-new, the rest follow.
fn ensure_group(
    dir: &std::path::Path,
    names: &[&str],
    make: impl FnOnce() -> Vec<String>,
) -> Result<(), String> {
    let done = || names.iter().all(|n| dir.join(n).exists());
    if done() {
        return Ok(());
    }
    let tmp = dir.join(format!(".tmp-{}", ulid::Ulid::generate()));
    std::fs::create_dir_all(&tmp).map_err(|e| e.to_string())?;
    for (name, content) in names.iter().zip(make()) {
        std::fs::write(tmp.join(name), content).map_err(|e| e.to_string())?;
    }
    if std::fs::hard_link(tmp.join(names[0]), dir.join(names[0])).is_ok() {
        for name in &names[1..] {
            let _ = std::fs::hard_link(tmp.join(name), dir.join(name));
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    // A concurrent winner may still be linking its other files.
    for _ in 0..100 {
        if done() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Err(format!("keys {names:?} were not written"))
}

impl LocalKeys {
    pub fn dir() -> PathBuf {
        crate::workspace_root().join(".local/keys")
    }

    /// Loads the keys, creating what is missing. Safe under concurrent callers (parallel
    /// test processes): each group of files is written aside and linked into place with
    /// create-new semantics, so the first writer wins and everyone reads its keys.
    pub fn ensure() -> Result<Self, String> {
        let dir = Self::dir();
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        ensure_group(&dir, &[APP_PRIVATE, APP_PUBLIC], || {
            let (private, public) = dev::generate_rsa();
            vec![private, public]
        })?;
        ensure_group(&dir, &["face_private.pem", "face_public.pem"], || {
            let (private, public) = dev::generate_ed25519();
            vec![private, public]
        })?;
        ensure_group(&dir, &["sms_code_key.hex"], || {
            vec![hex::encode(random32())]
        })?;
        ensure_group(&dir, &["report_private.hex", "report_public.hex"], || {
            let (private, public) = shared::report::crypto::generate_keypair();
            vec![private, public]
        })?;
        ensure_group(&dir, &[BANK_SECRETS_FILE], || vec![bank_secrets()])?;
        ensure_group(&dir, &[BANK_SECRET_SEED], || vec![hex::encode(random32())])?;
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name)).map_err(|e| format!("{name}: {e}"))
        };
        Ok(Self {
            app_private: read(APP_PRIVATE)?,
            face_private: read("face_private.pem")?,
            dir,
        })
    }

    /// The secret (hex) of each of `banks`: the one in `bank_secrets.json` where it has
    /// one (the shipped banks, which tests read from that file), else derived from the
    /// local seed (SHA-256 of the seed and the bank code). The same keys always give the
    /// same secrets, so the simulator and the functions agree for any configuration,
    /// however many banks it has, without a file per configuration to keep in step.
    pub fn bank_secrets(
        &self,
        banks: &[String],
    ) -> Result<std::collections::BTreeMap<String, String>, String> {
        use sha2::{Digest, Sha256};
        let read = |name: &str| {
            std::fs::read_to_string(self.dir.join(name)).map_err(|e| format!("{name}: {e}"))
        };
        let listed: std::collections::HashMap<String, String> =
            serde_json::from_str(&read(BANK_SECRETS_FILE)?)
                .map_err(|_| format!("{BANK_SECRETS_FILE}: not a JSON object of strings"))?;
        let seed = hex::decode(read(BANK_SECRET_SEED)?.trim())
            .map_err(|_| format!("{BANK_SECRET_SEED}: not hex"))?;
        Ok(banks
            .iter()
            .map(|b| {
                let secret = listed.get(b).cloned().unwrap_or_else(|| {
                    let mut h = Sha256::new();
                    h.update(&seed);
                    h.update(b"\0bank-secret\0");
                    h.update(b.as_bytes());
                    hex::encode(h.finalize())
                });
                (b.clone(), secret)
            })
            .collect())
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// The environment the functions need on the local stack, with tables `<prefix>X`,
    /// callbacks to `api_url` and the banks at the simulator `bank_sim_url`.
    pub fn function_env(
        &self,
        prefix: &str,
        api_url: &str,
        service_config: &std::path::Path,
    ) -> Vec<(String, String)> {
        let tables = crate::seed::TableRefs::from_prefix(prefix);
        [
            ("SERVICE_CONFIG", service_config.display().to_string()),
            ("CALLBACK_BASE_URL", api_url.to_owned()),
            ("BANK_TIMEOUT_MS", "5000".to_owned()),
            ("REPORT_PUBLIC_KEY_FILE", self.path("report_public.hex")),
            ("REPORT_PRIVATE_KEY_FILE", self.path("report_private.hex")),
            ("TABLE_NAME", tables.main),
            ("USERS_TABLE_NAME", tables.users),
            ("APP_JWT_PUBLIC_KEY_FILE", self.path(APP_PUBLIC)),
            ("APP_JWT_ISSUER", APP_JWT_ISSUER.into()),
            ("APP_JWT_AUDIENCE", APP_JWT_AUDIENCE.into()),
            ("FACE_PUBLIC_KEY_FILE", self.path("face_public.pem")),
            ("FACE_ISSUER", FACE_ISSUER.into()),
            ("FACE_AUDIENCE", FACE_AUDIENCE.into()),
            ("SMS_CODE_KEY_FILE", self.path("sms_code_key.hex")),
            ("BANK_SECRETS_FILE", self.path(BANK_SECRETS_FILE)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    pub fn user_token(
        &self,
        user: &str,
        now: chrono::DateTime<chrono::Utc>,
        ttl_secs: i64,
    ) -> Result<String, String> {
        dev::app_token(
            &self.app_private,
            APP_JWT_ISSUER,
            APP_JWT_AUDIENCE,
            user,
            now,
            ttl_secs,
        )
    }

    /// The local face-verification provider, issuing passes for this service.
    pub fn face_provider(&self) -> dev::FaceProvider<'_> {
        dev::FaceProvider {
            private_pem: &self.face_private,
            issuer: FACE_ISSUER,
            audience: FACE_AUDIENCE,
        }
    }

    /// A passed face check of `user` for `purpose`, issued at `now`, with a fresh nonce.
    pub fn face_token(
        &self,
        user: &str,
        purpose: Purpose,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<String, String> {
        self.face_provider().token(
            user,
            purpose.as_str(),
            "pass",
            now,
            &ulid::Ulid::generate().to_string(),
        )
    }
}

/// The service configuration `base` (its JSON text; the shipped one when `None`) with
/// every bank's endpoint at the simulator: `<bank_sim_url>/banks/<CODE>`. Written to
/// `path`.
pub fn write_local_service_config(
    bank_sim_url: &str,
    base: Option<&str>,
    path: &std::path::Path,
) -> Result<(), String> {
    let mut config: serde_json::Value =
        serde_json::from_str(base.unwrap_or(shared::config::DEFAULT_CONFIG))
            .map_err(|e| e.to_string())?;
    for bank in config["banks"]
        .as_array_mut()
        .ok_or("config has no banks")?
    {
        let code = bank["code"].as_str().unwrap_or_default().to_owned();
        bank["endpoint"] = format!("{}/banks/{code}", bank_sim_url.trim_end_matches('/')).into();
    }
    let text = serde_json::to_string_pretty(&config).map_err(|e| e.to_string())?;
    shared::config::ServiceConfig::parse(&text).map_err(|e| e.to_string())?;
    std::fs::write(path, text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bank_secrets_cover_any_bank_list_and_keep_the_listed_ones() {
        let keys = LocalKeys::ensure().unwrap();
        let listed: std::collections::HashMap<String, String> = serde_json::from_str(
            &std::fs::read_to_string(keys.dir.join(BANK_SECRETS_FILE)).unwrap(),
        )
        .unwrap();
        let banks: Vec<String> = ["ICBC".to_owned()]
            .into_iter()
            .chain((0..300).map(|i| format!("X{i:03}")))
            .collect();
        let secrets = keys.bank_secrets(&banks).unwrap();
        assert_eq!(secrets.len(), 301);
        assert_eq!(
            secrets["ICBC"], listed["ICBC"],
            "a listed bank keeps its secret"
        );
        let derived: std::collections::BTreeSet<&String> =
            banks[1..].iter().map(|b| &secrets[b]).collect();
        assert_eq!(derived.len(), 300, "every bank its own secret");
        assert!(secrets
            .values()
            .all(|s| hex::decode(s).is_ok_and(|b| b.len() >= 32)));
        assert_eq!(
            keys.bank_secrets(&banks[1..3]).unwrap()["X001"],
            secrets["X001"],
            "the same keys derive the same secret"
        );
    }
}
