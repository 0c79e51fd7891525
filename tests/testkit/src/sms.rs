//! Reads back the SMS that the SNS emulator (moto) has "sent".

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SentSms {
    pub message_id: String,
    pub phone_number: String,
    pub message: String,
}

#[derive(Deserialize)]
struct ModelData {
    #[serde(default)]
    sns: SnsModels,
}

#[derive(Deserialize, Default)]
struct SnsModels {
    #[serde(default, rename = "SMS")]
    sms: Vec<SentSms>,
}

/// Every SMS the emulator at `sns_endpoint` has accepted, oldest first.
pub async fn sent_sms(sns_endpoint: &str) -> Result<Vec<SentSms>, reqwest::Error> {
    let url = format!("{}/moto-api/data.json", sns_endpoint.trim_end_matches('/'));
    let data: ModelData = reqwest::get(url).await?.error_for_status()?.json().await?;
    Ok(data.sns.sms)
}

/// The SMS sent to one phone number, oldest first.
pub async fn sent_sms_to(sns_endpoint: &str, phone: &str) -> Result<Vec<SentSms>, reqwest::Error> {
    Ok(sent_sms(sns_endpoint)
        .await?
        .into_iter()
        .filter(|m| m.phone_number == phone)
        .collect())
}
