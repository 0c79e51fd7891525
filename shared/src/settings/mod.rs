//! What each function's start-up reads from its environment, as one struct per
//! function, read once in `bootstrap`. The structs are also the list of names: the
//! infrastructure tests check `infra/template.yaml` against [`template_vars`], so a
//! variable added here and forgotten in the template (or the reverse) fails a test.
//!
//! Secrets are `SecretString`: redacted in `Debug`, zeroed on drop, read only through
//! `expose_secret` where a key is built. Errors name the variable, never its value.

mod reader;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Deserializer};

pub use reader::{fields_of, process_env, read, vars_of, EnvError, EnvPart, Var};

/// What every function reads: the service configuration file and the tables.
#[derive(Debug, Deserialize)]
pub struct CommonEnv {
    /// `SERVICE_CONFIG`: the service configuration layer's file; unset, the shipped one.
    pub service_config: Option<PathBuf>,
    pub table_name: String,
    pub users_table_name: String,
}
impl EnvPart for CommonEnv {}

/// The app's JWTs: RS256 public key (PEM), issuer, audience.
#[derive(Debug, Deserialize)]
pub struct AppJwtEnv {
    // Public keys are not wrapped: nothing is lost if one is logged, and wrapping them
    // would blur which values really are secret (decision 66).
    pub app_jwt_public_key: String,
    pub app_jwt_issuer: String,
    pub app_jwt_audience: String,
}
impl EnvPart for AppJwtEnv {
    const FROM_FILE: &'static [&'static str] = &["app_jwt_public_key"];
}

/// The face-verification provider's tokens: Ed25519 public key (PEM), issuer, audience.
#[derive(Debug, Deserialize)]
pub struct FaceEnv {
    pub face_public_key: String,
    pub face_issuer: String,
    pub face_audience: String,
}
impl EnvPart for FaceEnv {
    const FROM_FILE: &'static [&'static str] = &["face_public_key"];
}

/// The pepper of the SMS code hash (hex, at least 32 bytes).
#[derive(Debug, Deserialize)]
pub struct SmsCodeEnv {
    pub sms_code_key: SecretString,
}
impl EnvPart for SmsCodeEnv {
    const FROM_FILE: &'static [&'static str] = &["sms_code_key"];
}

/// The SMS sender id; unset, SNS's default.
#[derive(Debug, Deserialize)]
pub struct SmsSenderEnv {
    pub sms_sender_id: Option<String>,
}
impl EnvPart for SmsSenderEnv {}

fn default_report_key_id() -> String {
    "report-1".into()
}

/// The report key's public half (hex), for the functions that seal card data.
#[derive(Debug, Deserialize)]
pub struct ReportSealEnv {
    pub report_public_key: String,
    #[serde(default = "default_report_key_id")]
    pub report_key_id: String,
}
impl EnvPart for ReportSealEnv {
    const FROM_FILE: &'static [&'static str] = &["report_public_key"];
}

/// The report key's private half (hex): view-report only.
#[derive(Debug, Deserialize)]
pub struct ReportOpenEnv {
    pub report_private_key: SecretString,
    #[serde(default = "default_report_key_id")]
    pub report_key_id: String,
}
impl EnvPart for ReportOpenEnv {
    const FROM_FILE: &'static [&'static str] = &["report_private_key"];
}

/// The previous report key, set only while it is being retired (docs/deploy.md).
#[derive(Debug, Deserialize)]
pub struct ReportRetiringEnv {
    pub report_previous_key_id: Option<String>,
    pub report_previous_private_key: Option<SecretString>,
}
impl EnvPart for ReportRetiringEnv {
    const FROM_FILE: &'static [&'static str] = &["report_previous_private_key"];
    const IN_TEMPLATE: bool = false;
}

impl ReportRetiringEnv {
    /// The previous key's id and private half, when one is being retired. A private key
    /// without an id is not used (the id is what marks a rotation as under way).
    pub fn previous(&self) -> Result<Option<(&str, &SecretString)>, EnvError> {
        match (
            &self.report_previous_key_id,
            &self.report_previous_private_key,
        ) {
            (None, _) => Ok(None),
            (Some(id), Some(key)) => Ok(Some((id, key))),
            (Some(_), None) => Err(EnvError::MissingEither {
                var: "REPORT_PREVIOUS_PRIVATE_KEY".into(),
            }),
        }
    }
}

/// The banks' HMAC secrets: a JSON object `{"ICBC": "<hex>", ...}`.
#[derive(Debug, Deserialize)]
pub struct BankSecretsEnv {
    pub bank_secrets: SecretString,
}
impl EnvPart for BankSecretsEnv {
    const FROM_FILE: &'static [&'static str] = &["bank_secrets"];
}

/// Calls to the banks: where they call back, how long an inquiry may take.
#[derive(Debug, Deserialize)]
pub struct BankCallsEnv {
    pub callback_base_url: String,
    #[serde(default)]
    pub bank_timeout_ms: Millis,
}
impl EnvPart for BankCallsEnv {}

impl BankCallsEnv {
    /// The callback base without a trailing `/` (paths are appended to it).
    pub fn callback_base(&self) -> String {
        self.callback_base_url.trim_end_matches('/').to_owned()
    }
}

/// The inquiry queue (SQS FIFO) the planners write to and the sender pauses on.
#[derive(Debug, Deserialize)]
pub struct InquiryQueueEnv {
    pub inquiry_queue_url: String,
}
impl EnvPart for InquiryQueueEnv {}

/// A whole number of milliseconds (`BANK_TIMEOUT_MS`); 10 s when unset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Millis(pub Duration);

impl Default for Millis {
    fn default() -> Self {
        Millis(Duration::from_secs(10))
    }
}

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.trim()
            .parse()
            .map(|ms| Millis(Duration::from_millis(ms)))
            .map_err(|_| serde::de::Error::custom("a whole number of milliseconds"))
    }
}

/// One struct per function: its parts, read from the environment at once.
macro_rules! function_env {
    ($(#[$doc:meta])* $name:ident = $function:literal { $($field:ident: $part:ty),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name {
            $(pub $field: $part),+
        }

        impl $name {
            /// The function (its binary and `Metadata.BuildProperties.Binary`).
            pub const FUNCTION: &'static str = $function;

            pub fn from_env() -> Result<Self, EnvError> {
                Self::from_vars(&process_env)
            }

            pub fn from_vars(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, EnvError> {
                Ok(Self { $($field: read::<$part>(lookup)?),+ })
            }

            /// Every variable it reads, alternatives and temporary ones included.
            pub fn vars() -> Vec<Var> {
                let mut vars = Vec::new();
                $(vars.extend(
                    vars_of::<$part>().expect("settings parts are plain structs (tested)"),
                );)+
                vars
            }
        }
    };
}

function_env! {
    /// submit-query: the app API (banks, eligibility, verifications, submission).
    SubmitQueryEnv = "submit-query" {
        common: CommonEnv,
        app_jwt: AppJwtEnv,
        face: FaceEnv,
        sms_code: SmsCodeEnv,
        sms: SmsSenderEnv,
    }
}

function_env! {
    /// view-report: the queries and their reports; the only holder of the private key.
    ViewReportEnv = "view-report" {
        common: CommonEnv,
        app_jwt: AppJwtEnv,
        face: FaceEnv,
        sms_code: SmsCodeEnv,
        report: ReportOpenEnv,
        retiring: ReportRetiringEnv,
    }
}

function_env! {
    /// bank-fanout: queues each bank's inquiry of a new query (it calls no bank, so it
    /// holds no bank secret).
    BankFanoutEnv = "bank-fanout" {
        common: CommonEnv,
        queue: InquiryQueueEnv,
    }
}

function_env! {
    /// bank-inquiry: sends the queued inquiries through each bank's gate.
    BankInquiryEnv = "bank-inquiry" {
        common: CommonEnv,
        bank_secrets: BankSecretsEnv,
        bank_calls: BankCallsEnv,
        report: ReportSealEnv,
        queue: InquiryQueueEnv,
    }
}

function_env! {
    /// bank-callback: the banks' answers.
    BankCallbackEnv = "bank-callback" {
        common: CommonEnv,
        bank_secrets: BankSecretsEnv,
        report: ReportSealEnv,
    }
}

function_env! {
    /// aggregate-report: builds and announces the report.
    AggregateReportEnv = "aggregate-report" {
        common: CommonEnv,
        report: ReportSealEnv,
        sms: SmsSenderEnv,
    }
}

function_env! {
    /// sweep: finalizes overdue queries (what aggregate-report reads) and queues due
    /// retries (what bank-fanout reads).
    SweepEnv = "sweep" {
        common: CommonEnv,
        report: ReportSealEnv,
        sms: SmsSenderEnv,
        queue: InquiryQueueEnv,
    }
}

/// Every function and the variables it reads.
pub fn functions() -> [(&'static str, Vec<Var>); 7] {
    [
        (SubmitQueryEnv::FUNCTION, SubmitQueryEnv::vars()),
        (ViewReportEnv::FUNCTION, ViewReportEnv::vars()),
        (BankFanoutEnv::FUNCTION, BankFanoutEnv::vars()),
        (BankInquiryEnv::FUNCTION, BankInquiryEnv::vars()),
        (BankCallbackEnv::FUNCTION, BankCallbackEnv::vars()),
        (AggregateReportEnv::FUNCTION, AggregateReportEnv::vars()),
        (SweepEnv::FUNCTION, SweepEnv::vars()),
    ]
}

/// The variables a deployment of `function` sets (`None` for an unknown function).
pub fn template_vars(function: &str) -> Option<BTreeSet<String>> {
    functions()
        .into_iter()
        .find(|(name, _)| *name == function)
        .map(|(_, vars)| {
            vars.into_iter()
                .filter(|v| v.in_template)
                .map(|v| v.name)
                .collect()
        })
}

#[cfg(test)]
mod tests;
