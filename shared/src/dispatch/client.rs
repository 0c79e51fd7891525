//! Port to the banks' inquiry APIs, and its HTTP implementation.

use std::time::Duration;

use async_trait::async_trait;

use crate::bank::signing::{
    SignatureHeaders, HEADER_BANK_CODE, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP,
};

/// A bank's HTTP reply.
#[derive(Debug, Clone)]
pub struct BankReply {
    pub status: u16,
    /// Signature headers of the reply, if all four are present.
    pub signature: Option<SignatureHeaders>,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error("timed out")]
    Timeout,
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("request failed: {0}")]
    Other(String),
}

#[async_trait]
pub trait BankClient: Send + Sync {
    async fn post(
        &self,
        url: &str,
        headers: &SignatureHeaders,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<BankReply, TransportError>;
}

/// Bank replies larger than this are not read (an answer is a few KiB).
const MAX_REPLY_BYTES: usize = 256 * 1024;

pub struct HttpBankClient {
    http: reqwest::Client,
}

impl HttpBankClient {
    pub fn new() -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self { http })
    }
}

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[async_trait]
impl BankClient for HttpBankClient {
    async fn post(
        &self,
        url: &str,
        headers: &SignatureHeaders,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<BankReply, TransportError> {
        let mut req = self
            .http
            .post(url)
            .timeout(timeout)
            .header("content-type", "application/json");
        for (k, v) in headers.pairs() {
            req = req.header(k, v);
        }
        let classify = |e: reqwest::Error| {
            if e.is_timeout() {
                TransportError::Timeout
            } else if e.is_connect() {
                TransportError::Connect(e.to_string())
            } else {
                TransportError::Other(e.to_string())
            }
        };
        let mut resp = req.body(body).send().await.map_err(classify)?;
        let status = resp.status().as_u16();
        let signature = match (
            header(&resp, HEADER_BANK_CODE),
            header(&resp, HEADER_TIMESTAMP),
            header(&resp, HEADER_NONCE),
            header(&resp, HEADER_SIGNATURE),
        ) {
            (Some(bank_code), Some(timestamp), Some(nonce), Some(signature)) => {
                Some(SignatureHeaders {
                    bank_code,
                    timestamp,
                    nonce,
                    signature,
                })
            }
            _ => None,
        };
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(classify)? {
            if body.len() + chunk.len() > MAX_REPLY_BYTES {
                return Err(TransportError::Other("reply too large".into()));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(BankReply {
            status,
            signature,
            body,
        })
    }
}
