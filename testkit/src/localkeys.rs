//! Local signing keys (app JWT issuer, face-verification provider) and the SMS code key,
//! created on first use under `.local/keys/` (git-ignored, never committed), plus the
//! functions' environment for the local stack.

use std::path::PathBuf;

use shared::security::dev;

pub const APP_JWT_ISSUER: &str = "https://id.local.card-lookup";
pub const APP_JWT_AUDIENCE: &str = "card-lookup-app";
pub const FACE_ISSUER: &str = "face-verification.local";
/// Table prefix of the run command's (and the HTTP tests') stack.
pub const RUN_PREFIX: &str = "local-";
/// Per-bank HMAC secrets of the local stack: `{"ICBC": "<hex>", ...}`.
pub const BANK_SECRETS_FILE: &str = "bank_secrets.json";

pub struct LocalKeys {
    pub dir: PathBuf,
    pub app_private: String,
    pub face_private: String,
}

const FILES: [&str; 5] = [
    "app_jwt_private.pem",
    "app_jwt_public.pem",
    "face_private.pem",
    "face_public.pem",
    "sms_code_key.hex",
];

impl LocalKeys {
    pub fn dir() -> PathBuf {
        crate::workspace_root().join(".local/keys")
    }

    /// Loads the keys, creating them the first time. Safe under concurrent callers: keys
    /// are written to a temporary folder that is renamed into place; the first wins.
    pub fn ensure() -> Result<Self, String> {
        let dir = Self::dir();
        if !dir.join(FILES[4]).exists() {
            let parent = dir.parent().expect("keys dir has a parent");
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            let tmp = parent.join(format!("keys-tmp-{}", ulid::Ulid::generate()));
            std::fs::create_dir_all(&tmp).map_err(|e| e.to_string())?;
            let (app_private, app_public) = dev::generate_ed25519();
            let (face_private, face_public) = dev::generate_ed25519();
            let mut sms_key = [0u8; 32];
            rand::fill(&mut sms_key);
            let contents = [
                app_private,
                app_public,
                face_private,
                face_public,
                hex::encode(sms_key),
            ];
            for (name, content) in FILES.iter().zip(contents) {
                std::fs::write(tmp.join(name), content).map_err(|e| e.to_string())?;
            }
            if std::fs::rename(&tmp, &dir).is_err() {
                // Another process won the race; use its keys.
                let _ = std::fs::remove_dir_all(&tmp);
            }
        }
        Self::ensure_bank_secrets(&dir)?;
        Self::ensure_report_keys(&dir)?;
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name)).map_err(|e| format!("{name}: {e}"))
        };
        Ok(Self {
            app_private: read("app_jwt_private.pem")?,
            face_private: read("face_private.pem")?,
            dir,
        })
    }

    /// `bank_secrets.json`: one random 32-byte secret (hex) per configured bank, shared
    /// by the functions and the bank simulator. Written once (create-new), first wins.
    fn ensure_bank_secrets(dir: &std::path::Path) -> Result<(), String> {
        let path = dir.join(BANK_SECRETS_FILE);
        if path.exists() {
            return Ok(());
        }
        let config = shared::config::ServiceConfig::parse(shared::config::DEFAULT_CONFIG)
            .map_err(|e| e.to_string())?;
        let secrets: serde_json::Map<String, serde_json::Value> = config
            .banks
            .all()
            .iter()
            .map(|b| {
                let mut key = [0u8; 32];
                rand::fill(&mut key);
                (b.code.to_string(), hex::encode(key).into())
            })
            .collect();
        let tmp = dir.join(format!("{BANK_SECRETS_FILE}.{}", ulid::Ulid::generate()));
        std::fs::write(&tmp, serde_json::Value::Object(secrets).to_string())
            .map_err(|e| e.to_string())?;
        // hard_link fails if the target exists: the first writer wins.
        let _ = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        Ok(())
    }

    /// The report sealing key pair (X25519, hex): `report_public.hex` for the
    /// aggregator, `report_private.hex` for view-report only.
    fn ensure_report_keys(dir: &std::path::Path) -> Result<(), String> {
        if dir.join("report_private.hex").exists() && dir.join("report_public.hex").exists() {
            return Ok(());
        }
        let tmp = dir.join(format!("report-{}", ulid::Ulid::generate()));
        std::fs::create_dir_all(&tmp).map_err(|e| e.to_string())?;
        let (private, public) = shared::report::crypto::generate_keypair();
        std::fs::write(tmp.join("report_private.hex"), private).map_err(|e| e.to_string())?;
        std::fs::write(tmp.join("report_public.hex"), public).map_err(|e| e.to_string())?;
        // The private key first: whoever links it first owns the pair.
        if std::fs::hard_link(
            tmp.join("report_private.hex"),
            dir.join("report_private.hex"),
        )
        .is_ok()
        {
            let _ =
                std::fs::hard_link(tmp.join("report_public.hex"), dir.join("report_public.hex"));
        }
        let _ = std::fs::remove_dir_all(&tmp);
        for _ in 0..50 {
            if dir.join("report_public.hex").exists() {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Err("report keys were not written".into())
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
            ("APP_JWT_PUBLIC_KEY_FILE", self.path("app_jwt_public.pem")),
            ("APP_JWT_ISSUER", APP_JWT_ISSUER.into()),
            ("APP_JWT_AUDIENCE", APP_JWT_AUDIENCE.into()),
            ("FACE_PUBLIC_KEY_FILE", self.path("face_public.pem")),
            ("FACE_ISSUER", FACE_ISSUER.into()),
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
        now: time::OffsetDateTime,
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

    /// A passed face check for `user`, issued at `now`, with a fresh nonce.
    pub fn face_token(&self, user: &str, now: time::OffsetDateTime) -> Result<String, String> {
        dev::face_token(
            &self.face_private,
            FACE_ISSUER,
            user,
            "pass",
            now,
            &ulid::Ulid::generate().to_string(),
        )
    }
}

/// The shipped service configuration with every bank's endpoint at the simulator:
/// `<bank_sim_url>/banks/<CODE>`. Written to `path`.
pub fn write_local_service_config(
    bank_sim_url: &str,
    path: &std::path::Path,
) -> Result<(), String> {
    let mut config: serde_json::Value =
        serde_json::from_str(shared::config::DEFAULT_CONFIG).map_err(|e| e.to_string())?;
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
