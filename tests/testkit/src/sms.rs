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

/// The SMS the stack's throttling proxy saw moto accept since the `from`-th (0: all),
/// and where to read on from: a few new messages per call, where [`sent_sms`] reads
/// moto's whole model every time.
pub async fn delivered_since(
    proxy: &str,
    from: usize,
) -> Result<(Vec<SentSms>, usize), reqwest::Error> {
    #[derive(Deserialize)]
    struct Page {
        sms: Vec<SentSms>,
        next: usize,
    }
    let url = format!("{}/_sms?from={from}", proxy.trim_end_matches('/'));
    let page: Page = reqwest::get(url).await?.error_for_status()?.json().await?;
    Ok((page.sms, page.next))
}

/// Where a load run reads the functions' SMS: the throttling proxy they publish
/// through (new messages only), else moto's model (a stack without the proxy).
#[derive(Debug, Clone)]
pub enum SmsFeed {
    Proxy(String),
    Moto(String),
}

impl SmsFeed {
    pub fn of(endpoints: &crate::stack::Endpoints) -> Self {
        match &endpoints.sns_throttle_endpoint {
            Some(p) => Self::Proxy(p.clone()),
            None => Self::Moto(endpoints.sns_endpoint.clone()),
        }
    }

    /// The messages after the first `seen`, and how many there are now in all.
    pub async fn after(&self, seen: usize) -> Result<(Vec<SentSms>, usize), reqwest::Error> {
        match self {
            Self::Proxy(p) => delivered_since(p, seen).await,
            Self::Moto(m) => {
                let all = sent_sms(m).await?;
                let total = all.len();
                Ok((all.into_iter().skip(seen).collect(), total))
            }
        }
    }
}

/// The SMS sent to one phone number, oldest first.
pub async fn sent_sms_to(sns_endpoint: &str, phone: &str) -> Result<Vec<SentSms>, reqwest::Error> {
    Ok(sent_sms(sns_endpoint)
        .await?
        .into_iter()
        .filter(|m| m.phone_number == phone)
        .collect())
}

/// Makes the stack's SNS throttling proxy (`infra/local/localstack/sns_throttle.py`)
/// answer every Publish to `phones` `Throttling` for `seconds` from now (0: stop now).
pub async fn throttle(proxy: &str, phones: &[&str], seconds: u64) -> Result<(), reqwest::Error> {
    reqwest::Client::new()
        .post(format!("{}/_throttle", proxy.trim_end_matches('/')))
        .json(&serde_json::json!({ "phone_numbers": phones, "seconds": seconds }))
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

/// How many publishes to `phone` the throttling proxy has answered `Throttling`.
pub async fn throttled_publishes(proxy: &str, phone: &str) -> Result<u64, reqwest::Error> {
    let state: serde_json::Value =
        reqwest::get(format!("{}/_throttle", proxy.trim_end_matches('/')))
            .await?
            .error_for_status()?
            .json()
            .await?;
    Ok(state["phones"][phone]["refused"].as_u64().unwrap_or(0))
}

/// The throttling proxy of the running stack.
pub fn throttle_proxy() -> String {
    crate::stack::endpoints()
        .sns_throttle_endpoint
        .clone()
        .expect(
        "the local stack runs the SNS throttling proxy (infra/local/localstack/sns_throttle.py)",
    )
}
