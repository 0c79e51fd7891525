//! The inquiry queue (`dispatch::queue`) on Amazon SQS: one FIFO queue, message group =
//! the bank, de-duplication id = `<query_id>.<bank>.<attempt>` (a dispute's send:
//! `dispute.<dispute_id>.<attempt>`).

use async_trait::async_trait;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;

use crate::adapters::redact::sdk_error;
use crate::dispatch::queue::{
    DisputeSend, InquiryQueue, LegAttempt, QueueError, QueueMessage, ENQUEUE_BATCH,
};

pub struct SqsInquiryQueue {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl SqsInquiryQueue {
    pub fn new(client: aws_sdk_sqs::Client, url: String) -> Self {
        Self { client, url }
    }
}

fn entry(i: usize, a: &QueueMessage) -> Result<SendMessageBatchRequestEntry, QueueError> {
    SendMessageBatchRequestEntry::builder()
        .id(i.to_string())
        .message_body(a.body())
        .message_group_id(a.group())
        .message_deduplication_id(a.dedup_id())
        .build()
        .map_err(|e| QueueError::Unavailable(e.to_string()))
}

impl SqsInquiryQueue {
    async fn send(&self, messages: &[QueueMessage]) -> Result<(), QueueError> {
        // In order, one batch after the other: a group's order is the order sent.
        for chunk in messages.chunks(ENQUEUE_BATCH) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, a)| entry(i, a))
                .collect::<Result<Vec<_>, _>>()?;
            let out = self
                .client
                .send_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| QueueError::Unavailable(sdk_error(&e)))?;
            // Sending the whole batch again is harmless (de-duplication ids), so a
            // partial failure fails the call and the caller's retry covers it.
            if let Some(f) = out.failed.first() {
                return Err(QueueError::Unavailable(format!(
                    "{} of {} messages refused ({})",
                    out.failed.len(),
                    chunk.len(),
                    f.code
                )));
            }
        }
        Ok(())
    }
}

#[async_trait]
impl InquiryQueue for SqsInquiryQueue {
    async fn enqueue(&self, attempts: &[LegAttempt]) -> Result<(), QueueError> {
        let messages: Vec<QueueMessage> = attempts.iter().cloned().map(QueueMessage::Leg).collect();
        self.send(&messages).await
    }

    async fn enqueue_disputes(&self, sends: &[DisputeSend]) -> Result<(), QueueError> {
        let messages: Vec<QueueMessage> =
            sends.iter().cloned().map(QueueMessage::Dispute).collect();
        self.send(&messages).await
    }

    async fn pause(&self, receipt: &str, secs: i32) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(secs)
            .send()
            .await
            .map_err(|e| QueueError::Unavailable(sdk_error(&e)))?;
        Ok(())
    }
}
