//! SMS through Amazon SNS (transactional SMS, published straight to the phone number).

use async_trait::async_trait;
use aws_sdk_sns::types::MessageAttributeValue;

use crate::model::phone::PhoneNumber;
use crate::ports::{NotifyError, SmsSender};

pub struct SnsSms {
    client: aws_sdk_sns::Client,
    sender_id: Option<String>,
}

impl SnsSms {
    pub fn new(client: aws_sdk_sns::Client, sender_id: Option<String>) -> Self {
        Self { client, sender_id }
    }
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
        req.send()
            .await
            .map_err(|e| NotifyError::Failed(crate::adapters::redact::sdk_error(&e)))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_sns::config::{BehaviorVersion, Credentials, Region};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const PHONE: &str = "+8613800138000";

    /// SNS refusing the number, quoting it in its message as SNS does.
    async fn refusing_sns() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = conn.read(&mut buf).await;
                let body = format!(
                    "<ErrorResponse><Error><Type>Sender</Type><Code>InvalidParameter</Code>\
                     <Message>Invalid parameter: PhoneNumber Reason: {PHONE} is not valid\
                     </Message></Error><RequestId>r1</RequestId></ErrorResponse>"
                );
                let reply = format!(
                    "HTTP/1.1 400 Bad Request\r\ncontent-type: text/xml\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(reply.as_bytes()).await;
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn a_refused_sms_is_reported_by_its_kind_without_the_number() {
        let conf = aws_sdk_sns::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "test"))
            .endpoint_url(refusing_sns().await)
            .build();
        let sms = SnsSms::new(aws_sdk_sns::Client::from_conf(conf), None);
        let to = PhoneNumber::parse(PHONE).unwrap();
        let NotifyError::Failed(said) = sms.send_sms(&to, "text").await.unwrap_err();
        assert_eq!(said, "service error InvalidParameter");
        assert!(!said.contains("138"), "{said}");
    }
}
