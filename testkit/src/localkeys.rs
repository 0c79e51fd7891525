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
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name)).map_err(|e| format!("{name}: {e}"))
        };
        Ok(Self {
            app_private: read("app_jwt_private.pem")?,
            face_private: read("face_private.pem")?,
            dir,
        })
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// The environment the functions need on the local stack, with tables `<prefix>X`.
    pub fn function_env(&self, prefix: &str) -> Vec<(String, String)> {
        let tables = crate::seed::TableRefs::from_prefix(prefix);
        [
            ("TABLE_NAME", tables.main),
            ("USERS_TABLE_NAME", tables.users),
            ("APP_JWT_PUBLIC_KEY_FILE", self.path("app_jwt_public.pem")),
            ("APP_JWT_ISSUER", APP_JWT_ISSUER.into()),
            ("APP_JWT_AUDIENCE", APP_JWT_AUDIENCE.into()),
            ("FACE_PUBLIC_KEY_FILE", self.path("face_public.pem")),
            ("FACE_ISSUER", FACE_ISSUER.into()),
            ("SMS_CODE_KEY_FILE", self.path("sms_code_key.hex")),
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
