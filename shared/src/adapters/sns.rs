//! SMS through Amazon SNS (transactional SMS, published straight to the phone number).
//!
//! SNS's SMS quota (about 20 messages a second per account by default) answers an
//! excess publish `Throttling`. The SDK's standard retry strategy already classifies
//! that code (and 5xx, timeouts) as retryable and waits a jittered ("full jitter")
//! exponential backoff; this client bounds it to [`PUBLISH_ATTEMPTS`] attempts and
//! [`MAX_BACKOFF`], so a code request still answers well within the API's timeout, and
//! reports a publish still throttled after them as [`NotifyError::Throttled`].

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sns::config::retry::RetryConfig;
use aws_sdk_sns::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sns::types::MessageAttributeValue;

use crate::model::phone::PhoneNumber;
use crate::ports::{NotifyError, SmsSender};

/// Attempts per publish, the first included.
pub const PUBLISH_ATTEMPTS: u32 = 4;
/// The first retry waits up to this long, each next one up to twice the last.
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// No single wait is longer: with four attempts at most 0.7 s of waiting in all.
pub const MAX_BACKOFF: Duration = Duration::from_millis(400);

/// SNS's error codes for a publish refused for rate (SMS quota, or the KMS key's).
const THROTTLED: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "KMSThrottling",
];

pub struct SnsSms {
    client: aws_sdk_sns::Client,
    sender_id: Option<String>,
}

impl SnsSms {
    /// `client` as configured (endpoint, credentials, timeouts), with this adapter's
    /// bounded retries.
    pub fn new(client: aws_sdk_sns::Client, sender_id: Option<String>) -> Self {
        let conf = client
            .config()
            .to_builder()
            .retry_config(publish_retries())
            .build();
        Self {
            client: aws_sdk_sns::Client::from_conf(conf),
            sender_id,
        }
    }
}

fn publish_retries() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(PUBLISH_ATTEMPTS)
        .with_initial_backoff(INITIAL_BACKOFF)
        .with_max_backoff(MAX_BACKOFF)
}

fn throttled<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.as_service_error()
        .and_then(|e| e.code())
        .is_some_and(|c| THROTTLED.contains(&c))
}

fn string_attr(value: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .expect("data type is set")
}

#[async_trait]
impl SmsSender for SnsSms {
    async fn send_sms(&self, to: &PhoneNumber, text: &str) -> Result<(), NotifyError> {
        let mut req = self
            .client
            .publish()
            .phone_number(to.e164())
            .message(text)
            .message_attributes("AWS.SNS.SMS.SMSType", string_attr("Transactional"));
        if let Some(sender) = &self.sender_id {
            req = req.message_attributes("AWS.SNS.SMS.SenderID", string_attr(sender));
        }
        match req.send().await {
            Ok(_) => Ok(()),
            Err(e) if throttled(&e) => Err(NotifyError::Throttled),
            Err(e) => Err(NotifyError::Failed(crate::adapters::redact::sdk_error(&e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use aws_sdk_sns::config::{BehaviorVersion, Credentials, Region};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const PHONE: &str = "+8613800138000";

    /// An SNS that answers each publish with the next of `replies` (status, error code;
    /// status 200: published), the last one for good; and how many publishes it got.
    async fn scripted_sns(replies: Vec<(u16, &'static str)>) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let (status, code) = replies[n.min(replies.len() - 1)];
                let mut buf = vec![0u8; 64 * 1024];
                let _ = conn.read(&mut buf).await;
                let (reason, body) = if status == 200 {
                    (
                        "OK",
                        "<PublishResponse><PublishResult><MessageId>m1</MessageId>\
                         </PublishResult><ResponseMetadata><RequestId>r1</RequestId>\
                         </ResponseMetadata></PublishResponse>"
                            .to_owned(),
                    )
                } else {
                    (
                        "Error",
                        format!(
                            "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>\
                             <Message>Invalid parameter: PhoneNumber Reason: {PHONE} is \
                             not valid</Message></Error><RequestId>r1</RequestId>\
                             </ErrorResponse>"
                        ),
                    )
                };
                let reply = format!(
                    "HTTP/1.1 {status} {reason}\r\ncontent-type: text/xml\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(reply.as_bytes()).await;
            }
        });
        (format!("http://{addr}"), seen)
    }

    fn sms_at(endpoint: String) -> SnsSms {
        let conf = aws_sdk_sns::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "test"))
            .endpoint_url(endpoint)
            .build();
        SnsSms::new(aws_sdk_sns::Client::from_conf(conf), None)
    }

    fn phone() -> PhoneNumber {
        PhoneNumber::parse(PHONE).unwrap()
    }

    #[tokio::test]
    async fn a_refused_sms_is_reported_by_its_kind_without_the_number() {
        let (sns, seen) = scripted_sns(vec![(400, "InvalidParameter")]).await;
        let err = sms_at(sns).send_sms(&phone(), "text").await.unwrap_err();
        let NotifyError::Failed(said) = err else {
            panic!("{err:?}")
        };
        assert_eq!(said, "service error InvalidParameter");
        assert!(!said.contains("138"), "{said}");
        // A refusal of the request itself is not retried.
        assert_eq!(seen.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_throttled_publish_is_retried_until_it_goes_through() {
        let (sns, seen) =
            scripted_sns(vec![(400, "Throttling"), (400, "Throttling"), (200, "")]).await;
        sms_at(sns).send_sms(&phone(), "text").await.unwrap();
        assert_eq!(seen.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_server_error_is_retried_too() {
        let (sns, seen) = scripted_sns(vec![(500, "InternalError"), (200, "")]).await;
        sms_at(sns).send_sms(&phone(), "text").await.unwrap();
        assert_eq!(seen.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_publish_throttled_past_the_budget_is_throttled_not_failed() {
        let (sns, seen) = scripted_sns(vec![(400, "Throttling")]).await;
        let err = sms_at(sns).send_sms(&phone(), "text").await.unwrap_err();
        assert!(matches!(err, NotifyError::Throttled), "{err:?}");
        assert_eq!(seen.load(Ordering::SeqCst), PUBLISH_ATTEMPTS as usize);
    }
}
