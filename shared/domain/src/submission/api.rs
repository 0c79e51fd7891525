//! Request and response bodies of the submission endpoints (HTTP contract v1).
//! Request bodies reject unknown fields; types holding secrets have no `Debug`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::bank::BankRegistry;
use crate::model::purpose::Purpose;
use crate::model::timestamp::rfc3339;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerificationRequest {
    pub purpose: Purpose,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    pub banks: Vec<String>,
    pub consent: ConsentInput,
    pub verification: CodeInput,
    pub face_token: String,
    pub payment_password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentInput {
    pub agreement_version: String,
    pub accepted: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeInput {
    pub verification_id: String,
    pub sms_code: String,
}

#[derive(Debug, Serialize)]
pub struct BankView {
    pub code: String,
    pub name: String,
    pub name_en: String,
    pub service_phone: String,
}

#[derive(Debug, Serialize)]
pub struct BanksResponse {
    pub banks: Vec<BankView>,
}

impl BanksResponse {
    pub fn from_registry(banks: &BankRegistry) -> Self {
        Self {
            banks: banks
                .all()
                .iter()
                .map(|b| BankView {
                    code: b.code.to_string(),
                    name: b.name.clone(),
                    name_en: b.name_en.clone(),
                    service_phone: b.service_phone.clone(),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct EligibilityResponse {
    pub real_name_verified: bool,
    pub in_pilot_region: bool,
    pub active_query_id: Option<String>,
    #[serde(with = "rfc3339::option")]
    pub next_allowed_at: Option<DateTime<Utc>>,
    pub eligible: bool,
    pub agreement_version: String,
}

#[derive(Debug, Serialize)]
pub struct VerificationCreated {
    pub verification_id: String,
    pub masked_phone: String,
    #[serde(with = "rfc3339")]
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SubmitAccepted {
    pub query_id: String,
    pub status: String,
    #[serde(with = "rfc3339")]
    pub submitted_at: DateTime<Utc>,
    #[serde(with = "rfc3339")]
    pub report_due_by: DateTime<Utc>,
    pub banks: Vec<String>,
}
