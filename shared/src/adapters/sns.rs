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
        req.send().await.map_err(|e| {
            NotifyError::Failed(aws_sdk_sns::error::DisplayErrorContext(e).to_string())
        })?;
        Ok(())
    }
}
