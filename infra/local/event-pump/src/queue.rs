//! SQS event sources (`Type: SQS`), as Lambda's SQS event source mapping serves them:
//! pollers receive batches from the queue (moto locally), invoke the function with the
//! SQS event, and delete the messages it processed.
//!
//! - Up to `ScalingConfig.MaximumConcurrency` batches in flight. One poller always
//!   polls; each batch it gets starts another (up to the maximum), and an extra poller
//!   that finds the queue empty stops, so an idle queue costs one ReceiveMessage per
//!   `queue_poll`, and a backlog is drained at full concurrency.
//! - ReceiveMessage with `WaitTimeSeconds: 0`: moto's long poll spins while every
//!   visible message belongs to a message group with a batch in flight (its
//!   `wait_for` predicate only checks that visible messages exist), which would burn a
//!   core for each poller while a bank is paused. The pump waits itself instead.
//! - FIFO: moto does not hand out messages of a message group while a batch of that
//!   group is in flight (received and neither deleted nor visible again), as SQS does.
//! - After the invocation: function error, not served or no answer → nothing is
//!   deleted (the messages come back after their visibility timeout); success → every
//!   message is deleted except those named in `batchItemFailures` (with
//!   `ReportBatchItemFailures`; an identifier that is not a message of the batch fails
//!   the whole batch, as in Lambda). The visibility of a failed message is never
//!   touched: the function may have set it (a paused bank's messages).

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, Message, MessageAttributeValue, MessageSystemAttributeName,
    QueueAttributeName,
};
use base64::Engine as _;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::batch::Outcome;
use crate::log;
use crate::pump::Shared;
use crate::sources::QueueSource;

/// The record Lambda delivers for one SQS message (`aws_lambda_events::sqs::SqsMessage`).
pub fn sqs_record(message: &Message, queue_arn: &str, region: &str) -> Value {
    let attributes: Map<String, Value> = message
        .attributes()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.as_str().to_owned(), Value::String(v.clone())))
        .collect();
    let message_attributes: Map<String, Value> = message
        .message_attributes()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), message_attribute_json(v)))
        .collect();
    json!({
        "messageId": message.message_id(),
        "receiptHandle": message.receipt_handle(),
        "body": message.body(),
        "attributes": attributes,
        "messageAttributes": message_attributes,
        "md5OfBody": message.md5_of_body(),
        "md5OfMessageAttributes": message.md5_of_message_attributes(),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    })
}

fn message_attribute_json(v: &MessageAttributeValue) -> Value {
    let b64 = |b: &[u8]| Value::String(base64::engine::general_purpose::STANDARD.encode(b));
    json!({
        "stringValue": v.string_value(),
        "binaryValue": v.binary_value().map(|b| b64(b.as_ref())),
        "stringListValues": v.string_list_values(),
        "binaryListValues": v.binary_list_values().iter().map(|b| b64(b.as_ref())).collect::<Vec<_>>(),
        "dataType": v.data_type(),
    })
}

/// Which messages of a batch (by index) are done and may be deleted, given the
/// invocation's outcome.
pub fn processed(
    message_ids: &[&str],
    outcome: &Outcome,
    report_batch_item_failures: bool,
) -> Vec<usize> {
    let all = || (0..message_ids.len()).collect();
    let Outcome::Ok(body) = outcome else {
        return Vec::new();
    };
    if !report_batch_item_failures {
        return all();
    }
    let failures = match body.get("batchItemFailures") {
        None | Some(Value::Null) => return all(),
        Some(Value::Array(items)) => items,
        Some(_) => return Vec::new(),
    };
    let mut failed = Vec::with_capacity(failures.len());
    for f in failures {
        match f.get("itemIdentifier").and_then(Value::as_str) {
            Some(id) if message_ids.contains(&id) => failed.push(id),
            // Lambda: an identifier that is missing, empty or not in the batch fails
            // the whole batch.
            _ => return Vec::new(),
        }
    }
    (0..message_ids.len())
        .filter(|&i| !failed.contains(&message_ids[i]))
        .collect()
}

/// One SQS event source at work.
pub(crate) struct QueuePump {
    pub(crate) source: QueueSource,
    pub(crate) sqs: aws_sdk_sqs::Client,
    pub(crate) shared: Arc<Shared>,
    pub(crate) queue_url: String,
    pub(crate) queue_arn: String,
    pub(crate) region: String,
    pub(crate) poll: Duration,
}

/// The queue's URL and ARN, waiting (and saying so once) until the stack created it.
pub(crate) async fn resolve(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    every: Duration,
) -> (String, String) {
    let mut warned = false;
    loop {
        let found = async {
            let url = sqs
                .get_queue_url()
                .queue_name(name)
                .send()
                .await
                .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string())?
                .queue_url()
                .ok_or("GetQueueUrl returned no URL")?
                .to_owned();
            let arn = sqs
                .get_queue_attributes()
                .queue_url(&url)
                .attribute_names(QueueAttributeName::QueueArn)
                .send()
                .await
                .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string())?
                .attributes()
                .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
                .ok_or("GetQueueAttributes returned no QueueArn")?;
            Ok::<_, String>((url, arn))
        }
        .await;
        match found {
            Ok(found) => return found,
            Err(e) if !warned => {
                log::warn(
                    "waiting for the queue",
                    json!({ "queue": name, "error": e }),
                );
                warned = true;
            }
            Err(_) => {}
        }
        tokio::time::sleep(every).await;
    }
}

impl QueuePump {
    /// Runs the pollers for ever.
    pub(crate) async fn run(self: Arc<Self>) {
        let (more_tx, mut more_rx) = mpsc::unbounded_channel::<()>();
        let mut extra = JoinSet::new();
        let mut anchor = tokio::spawn(self.clone().poller(true, more_tx.clone()));
        loop {
            tokio::select! {
                done = &mut anchor => {
                    // It polls for ever: only a panic ends it; let the pump see that.
                    if let Err(e) = done {
                        if e.is_panic() {
                            std::panic::resume_unwind(e.into_panic());
                        }
                    }
                    return;
                }
                Some(()) = more_rx.recv() => {
                    // A batch came: one more poller, within the maximum (the anchor
                    // counts as one).
                    if extra.len() + 1 < self.source.max_concurrency {
                        extra.spawn(self.clone().poller(false, more_tx.clone()));
                    }
                }
                Some(done) = extra.join_next(), if !extra.is_empty() => {
                    if let Err(e) = done {
                        if e.is_panic() {
                            std::panic::resume_unwind(e.into_panic());
                        }
                    }
                }
            }
        }
    }

    /// Receives and delivers batches; an extra poller (`anchor` false) ends at the
    /// first empty receive.
    async fn poller(self: Arc<Self>, anchor: bool, more: mpsc::UnboundedSender<()>) {
        let mut failing = false;
        loop {
            let received = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(self.source.batch_size as i32)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .message_attribute_names("All")
                .wait_time_seconds(0)
                .send()
                .await;
            let messages = match received {
                Ok(out) => {
                    if failing {
                        log::info(
                            "receiving works again",
                            json!({ "source": self.source.name() }),
                        );
                        failing = false;
                    }
                    out.messages.unwrap_or_default()
                }
                Err(e) => {
                    if !failing {
                        log::warn(
                            "cannot receive from the queue (will retry)",
                            json!({
                                "source": self.source.name(),
                                "error": aws_sdk_sqs::error::DisplayErrorContext(e).to_string(),
                            }),
                        );
                        failing = true;
                    }
                    Vec::new()
                }
            };
            if messages.is_empty() {
                if !anchor {
                    return;
                }
                tokio::time::sleep(self.poll).await;
                continue;
            }
            let _ = more.send(());
            self.deliver(&messages).await;
        }
    }

    async fn deliver(&self, messages: &[Message]) {
        let records: Vec<Value> = messages
            .iter()
            .map(|m| sqs_record(m, &self.queue_arn, &self.region))
            .collect();
        let ids: Vec<&str> = messages
            .iter()
            .map(|m| m.message_id().unwrap_or_default())
            .collect();
        let groups: Vec<&str> = messages
            .iter()
            .filter_map(|m| {
                m.attributes()?
                    .get(&MessageSystemAttributeName::MessageGroupId)
                    .map(String::as_str)
            })
            .collect();
        let fields = json!({
            "kind": "sqs",
            "source": self.source.name(),
            "records": records.len(),
            "first_message_id": ids.first(),
            "message_groups": groups,
        });
        let outcome = self
            .shared
            .invoke_logged(&self.source.binary, &json!({ "Records": records }), fields)
            .await;
        let done = processed(&ids, &outcome, self.source.report_batch_item_failures);
        if done.is_empty() {
            return;
        }
        let entries: Vec<DeleteMessageBatchRequestEntry> = done
            .iter()
            .filter_map(|&i| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(messages[i].receipt_handle().unwrap_or_default())
                    .build()
                    .ok()
            })
            .collect();
        let result = self
            .sqs
            .delete_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await;
        match result {
            Ok(out) if out.failed().is_empty() => {}
            Ok(out) => log::warn(
                "some processed messages could not be deleted; they will be delivered again",
                json!({
                    "source": self.source.name(),
                    "failed": out.failed().iter().map(|f| json!({
                        "message_id": f.id().parse::<usize>().ok().and_then(|i| ids.get(i)),
                        "code": f.code(),
                        "message": f.message(),
                    })).collect::<Vec<_>>(),
                }),
            ),
            Err(e) => log::warn(
                "cannot delete the processed messages; they will be delivered again",
                json!({
                    "source": self.source.name(),
                    "error": aws_sdk_sqs::error::DisplayErrorContext(e).to_string(),
                }),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn message(id: &str, group: &str) -> Message {
        Message::builder()
            .message_id(id)
            .receipt_handle(format!("rh-{id}"))
            .body(r#"{"query_id":"q","bank":"ICBC","attempt":1}"#)
            .md5_of_body("0123")
            .set_attributes(Some(HashMap::from([
                (
                    MessageSystemAttributeName::ApproximateReceiveCount,
                    "2".to_owned(),
                ),
                (MessageSystemAttributeName::MessageGroupId, group.to_owned()),
                (
                    MessageSystemAttributeName::SentTimestamp,
                    "1764600000000".to_owned(),
                ),
                (
                    MessageSystemAttributeName::MessageDeduplicationId,
                    "q.ICBC.1".to_owned(),
                ),
                (MessageSystemAttributeName::SequenceNumber, "1".to_owned()),
            ])))
            .message_attributes(
                "trace",
                MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value("t-1")
                    .build()
                    .unwrap(),
            )
            .build()
    }

    const ARN: &str = "arn:aws:sqs:us-east-1:123456789012:local-InquiryQueue.fifo";

    #[test]
    fn a_message_becomes_the_record_lambda_delivers() {
        let r = sqs_record(&message("m1", "ICBC"), ARN, "us-east-1");
        assert_eq!(r["eventSource"], "aws:sqs");
        assert_eq!(r["attributes"]["MessageGroupId"], "ICBC");
        let event: aws_lambda_events::event::sqs::SqsEvent =
            serde_json::from_value(json!({ "Records": [r] })).expect("an SQS event");
        let m = &event.records[0];
        assert_eq!(m.message_id.as_deref(), Some("m1"));
        assert_eq!(m.receipt_handle.as_deref(), Some("rh-m1"));
        assert_eq!(
            m.body.as_deref(),
            Some(r#"{"query_id":"q","bank":"ICBC","attempt":1}"#)
        );
        assert_eq!(m.event_source.as_deref(), Some("aws:sqs"));
        assert_eq!(m.event_source_arn.as_deref(), Some(ARN));
        assert_eq!(m.aws_region.as_deref(), Some("us-east-1"));
        assert_eq!(m.attributes["ApproximateReceiveCount"], "2");
        assert_eq!(m.attributes["SentTimestamp"], "1764600000000");
        assert_eq!(m.attributes["MessageDeduplicationId"], "q.ICBC.1");
        assert_eq!(
            m.message_attributes["trace"].string_value.as_deref(),
            Some("t-1")
        );
    }

    fn failures(ids: &[&str]) -> Outcome {
        Outcome::Ok(json!({
            "batchItemFailures": ids.iter().map(|i| json!({"itemIdentifier": i})).collect::<Vec<_>>()
        }))
    }

    #[test]
    fn deletes_what_the_function_processed_and_nothing_else() {
        let ids = ["a", "b", "c"];
        assert_eq!(processed(&ids, &failures(&[]), true), [0, 1, 2]);
        assert_eq!(processed(&ids, &Outcome::Ok(Value::Null), true), [0, 1, 2]);
        assert_eq!(processed(&ids, &Outcome::Ok(json!({})), true), [0, 1, 2]);
        assert_eq!(processed(&ids, &failures(&["b"]), true), [0, 2]);
        assert_eq!(processed(&ids, &failures(&["c", "a"]), true), [1]);
        assert!(processed(&ids, &failures(&["a", "b", "c"]), true).is_empty());
        // An identifier not of this batch, or none: the whole batch failed.
        assert!(processed(&ids, &failures(&["zz"]), true).is_empty());
        assert!(processed(&ids, &failures(&[""]), true).is_empty());
        assert!(processed(&ids, &Outcome::Ok(json!({"batchItemFailures": [{}]})), true).is_empty());
        assert!(processed(&ids, &Outcome::Ok(json!({"batchItemFailures": "x"})), true).is_empty());
        // Errors: nothing is deleted.
        let err = Outcome::FunctionError {
            status: 500,
            body: "{}".into(),
        };
        assert!(processed(&ids, &err, true).is_empty());
        assert!(processed(&ids, &Outcome::Transport("refused".into()), true).is_empty());
        assert!(processed(
            &ids,
            &Outcome::NotFound {
                body: String::new()
            },
            true
        )
        .is_empty());
        // Without ReportBatchItemFailures the answer is not looked at.
        assert_eq!(processed(&ids, &failures(&["b"]), false), [0, 1, 2]);
        assert!(processed(&ids, &err, false).is_empty());
    }
}
