//! Creates the template's SQS queues in the local SQS (moto) under a name prefix, with
//! their FIFO settings and redrive policies, and names the functions' environment
//! variables that refer to them (`INQUIRY_QUEUE_URL: !Ref InquiryQueue`).

use std::collections::BTreeMap;

use aws_sdk_sqs::types::QueueAttributeName;
use aws_sdk_sqs::Client;
use serde_json::{json, Value};

use crate::template::{QueueSpec, Template, TemplateError};

#[derive(Debug, thiserror::Error)]
pub enum QueuesError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("SQS: {0}")]
    Sqs(String),
    #[error("queue {queue}: its dead-letter queue {dead_letter} is not a queue of the template")]
    UnknownDeadLetter { queue: String, dead_letter: String },
}

fn sqs<E: std::error::Error + Send + Sync + 'static>(
    e: aws_sdk_sqs::error::SdkError<E>,
) -> QueuesError {
    QueuesError::Sqs(aws_sdk_sqs::error::DisplayErrorContext(e).to_string())
}

/// Queue URLs by the template's logical id.
#[derive(Debug, Clone, Default)]
pub struct QueueUrls(pub BTreeMap<String, String>);

impl QueueUrls {
    pub fn get(&self, logical_id: &str) -> &str {
        self.0
            .get(logical_id)
            .unwrap_or_else(|| panic!("template has no queue {logical_id}"))
    }
}

/// The attributes CreateQueue gets for `spec` (the redrive's target given as its ARN).
pub fn attributes(
    spec: &QueueSpec,
    dead_letter_arn: Option<&str>,
) -> BTreeMap<QueueAttributeName, String> {
    let mut out = BTreeMap::new();
    if spec.fifo {
        out.insert(QueueAttributeName::FifoQueue, "true".to_owned());
        out.insert(
            QueueAttributeName::ContentBasedDeduplication,
            spec.content_based_deduplication.to_string(),
        );
        if let Some(scope) = &spec.deduplication_scope {
            out.insert(QueueAttributeName::DeduplicationScope, scope.clone());
        }
        if let Some(limit) = &spec.fifo_throughput_limit {
            out.insert(QueueAttributeName::FifoThroughputLimit, limit.clone());
        }
    }
    if let Some(v) = spec.visibility_timeout {
        out.insert(QueueAttributeName::VisibilityTimeout, v.to_string());
    }
    if let Some(v) = spec.message_retention_period {
        out.insert(QueueAttributeName::MessageRetentionPeriod, v.to_string());
    }
    if let (Some(redrive), Some(arn)) = (&spec.redrive, dead_letter_arn) {
        out.insert(
            QueueAttributeName::RedrivePolicy,
            json!({
                "deadLetterTargetArn": arn,
                "maxReceiveCount": redrive.max_receive_count,
            })
            .to_string(),
        );
    }
    out
}

/// Creates every queue of `template` as `<prefix><LogicalId>` (`.fifo` for FIFO), dead-
/// letter queues first so a redrive policy can name its target's ARN. CreateQueue with
/// the same name and attributes returns the existing queue, so this can run again.
pub async fn create_queues(
    client: &Client,
    template: &Template,
    prefix: &str,
) -> Result<QueueUrls, QueuesError> {
    let specs = template.queues()?;
    let by_id: BTreeMap<&str, &QueueSpec> =
        specs.iter().map(|q| (q.logical_id.as_str(), q)).collect();
    let mut urls = BTreeMap::new();
    let mut arns: BTreeMap<String, String> = BTreeMap::new();
    // Targets before the queues that redrive to them (a redrive chain is one level in
    // practice; queues without a redrive go first, then the rest).
    let (plain, redriven): (Vec<&QueueSpec>, Vec<&QueueSpec>) =
        specs.iter().partition(|q| q.redrive.is_none());
    for spec in plain.into_iter().chain(redriven) {
        let dead_letter_arn = match &spec.redrive {
            None => None,
            Some(r) => {
                if !by_id.contains_key(r.dead_letter_id.as_str()) {
                    return Err(QueuesError::UnknownDeadLetter {
                        queue: spec.logical_id.clone(),
                        dead_letter: r.dead_letter_id.clone(),
                    });
                }
                arns.get(&r.dead_letter_id).cloned()
            }
        };
        let name = spec.local_name(prefix);
        let created = client
            .create_queue()
            .queue_name(&name)
            .set_attributes(Some(
                attributes(spec, dead_letter_arn.as_deref())
                    .into_iter()
                    .collect(),
            ))
            .send()
            .await
            .map_err(sqs)?;
        let url = created
            .queue_url()
            .ok_or_else(|| QueuesError::Sqs(format!("CreateQueue {name}: no QueueUrl")))?
            .to_owned();
        let arn = client
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(sqs)?
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .ok_or_else(|| QueuesError::Sqs(format!("{name}: no QueueArn")))?;
        arns.insert(spec.logical_id.clone(), arn);
        urls.insert(spec.logical_id.clone(), url);
    }
    Ok(QueueUrls(urls))
}

/// The functions' environment variables whose template value is `!Ref <a queue>`, with
/// that queue's local URL (every function that sets one gets the same value).
pub fn queue_env(template: &Template, urls: &QueueUrls) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for f in template.functions() {
        for (name, value) in f.env() {
            if let Some(url) = queue_ref(&value).and_then(|id| urls.0.get(id)) {
                out.insert(name, url.clone());
            }
        }
    }
    out
}

fn queue_ref(v: &Value) -> Option<&str> {
    v.get("Ref")?.as_str()
}

/// Deletes the queues (a test's own).
pub async fn delete_queues(client: &Client, urls: &QueueUrls) -> Result<(), QueuesError> {
    for url in urls.0.values() {
        client
            .delete_queue()
            .queue_url(url)
            .send()
            .await
            .map_err(sqs)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_attributes_follow_the_template() {
        let t = Template::load_default().unwrap();
        let q = t.queue("InquiryQueue").unwrap();
        let a = attributes(&q, Some("arn:aws:sqs:us-east-1:123456789012:dlq.fifo"));
        assert_eq!(a[&QueueAttributeName::FifoQueue], "true");
        assert_eq!(a[&QueueAttributeName::ContentBasedDeduplication], "false");
        assert_eq!(
            a[&QueueAttributeName::VisibilityTimeout],
            q.visibility_timeout.unwrap().to_string()
        );
        let redrive: Value = serde_json::from_str(&a[&QueueAttributeName::RedrivePolicy]).unwrap();
        assert_eq!(
            redrive["deadLetterTargetArn"],
            "arn:aws:sqs:us-east-1:123456789012:dlq.fifo"
        );
        assert_eq!(
            redrive["maxReceiveCount"],
            q.redrive.unwrap().max_receive_count
        );
        let dlq = t.queue("InquiryDeadLetterQueue").unwrap();
        let a = attributes(&dlq, None);
        assert_eq!(a[&QueueAttributeName::FifoQueue], "true");
        assert!(!a.contains_key(&QueueAttributeName::RedrivePolicy));
    }

    #[test]
    fn the_enqueuers_environment_names_the_inquiry_queue() {
        let t = Template::load_default().unwrap();
        let urls = QueueUrls(
            [(
                "InquiryQueue".to_owned(),
                "http://q/inquiries.fifo".to_owned(),
            )]
            .into(),
        );
        let env = queue_env(&t, &urls);
        assert_eq!(
            env.get("INQUIRY_QUEUE_URL").map(String::as_str),
            Some("http://q/inquiries.fifo")
        );
        assert!(!env.contains_key("TABLE_NAME"), "a table is no queue");
    }
}
