//! Port to the banks' inquiry APIs (its HTTP implementation is
//! `shared::adapters::bank_http`).

use std::time::Duration;

use async_trait::async_trait;

use crate::bank::signing::SignatureHeaders;

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
