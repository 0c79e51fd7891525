//! The shape of an `AWS::SQS::Queue` resource: what the local stack creates in moto and
//! how the event pump finds the queue an SQS event reads.
//!
//! Locally a queue is named `<prefix><LogicalId>` (`.fifo` added for a FIFO queue, which
//! SQS requires), as tables are `<prefix><LogicalId>`: the template's `QueueName` carries
//! the stack name, which has no local meaning.

use serde_json::Value;

use crate::{get_att, TemplateError};

/// One queue, as the template declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    pub logical_id: String,
    pub fifo: bool,
    pub content_based_deduplication: bool,
    /// `DeduplicationScope` / `FifoThroughputLimit` (FIFO only), as declared.
    pub deduplication_scope: Option<String>,
    pub fifo_throughput_limit: Option<String>,
    pub visibility_timeout: Option<u64>,
    pub message_retention_period: Option<u64>,
    /// `RedrivePolicy`: where a message goes after too many receives.
    pub redrive: Option<Redrive>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redrive {
    /// Logical id of the dead-letter queue (`deadLetterTargetArn: !GetAtt X.Arn`).
    pub dead_letter_id: String,
    pub max_receive_count: u64,
}

impl QueueSpec {
    pub fn from_properties(logical_id: &str, props: &Value) -> Result<Self, TemplateError> {
        let fail = |message: String| TemplateError::Queue {
            queue: logical_id.to_owned(),
            message,
        };
        let seconds = |name: &str| match &props[name] {
            Value::Null => Ok(None),
            v => number(v)
                .map(Some)
                .ok_or_else(|| fail(format!("{name} is not a number: {v}"))),
        };
        let fifo = props["FifoQueue"] == true || props["FifoQueue"] == "true";
        let redrive = match &props["RedrivePolicy"] {
            Value::Null => None,
            policy => {
                let target = &policy["deadLetterTargetArn"];
                let dead_letter_id = get_att(target)
                    .filter(|(_, attr)| *attr == "Arn")
                    .map(|(id, _)| id.to_owned())
                    .ok_or_else(|| {
                        fail(format!(
                            "RedrivePolicy.deadLetterTargetArn is not !GetAtt <Queue>.Arn: {target}"
                        ))
                    })?;
                let max_receive_count = number(&policy["maxReceiveCount"])
                    .filter(|n| (1..=1_000_000).contains(n))
                    .ok_or_else(|| fail("RedrivePolicy.maxReceiveCount is missing".into()))?;
                Some(Redrive {
                    dead_letter_id,
                    max_receive_count,
                })
            }
        };
        let text = |name: &str| props[name].as_str().map(str::to_owned);
        Ok(Self {
            logical_id: logical_id.to_owned(),
            fifo,
            content_based_deduplication: props["ContentBasedDeduplication"] == true,
            deduplication_scope: text("DeduplicationScope"),
            fifo_throughput_limit: text("FifoThroughputLimit"),
            visibility_timeout: seconds("VisibilityTimeout")?,
            message_retention_period: seconds("MessageRetentionPeriod")?,
            redrive,
        })
    }

    /// The local queue name: `<prefix><LogicalId>`, `.fifo` for a FIFO queue.
    pub fn local_name(&self, prefix: &str) -> String {
        local_name(prefix, &self.logical_id, self.fifo)
    }
}

pub fn local_name(prefix: &str, logical_id: &str, fifo: bool) -> String {
    format!("{prefix}{logical_id}{}", if fifo { ".fifo" } else { "" })
}

/// A JSON number or a numeric string (CloudFormation takes both).
fn number(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use crate::Template;

    use super::*;

    const TEMPLATE: &str = r#"
Resources:
  Work:
    Type: AWS::SQS::Queue
    Properties:
      QueueName: !Sub ${AWS::StackName}-work.fifo
      FifoQueue: true
      DeduplicationScope: messageGroup
      FifoThroughputLimit: perMessageGroupId
      VisibilityTimeout: 360
      MessageRetentionPeriod: "172800"
      RedrivePolicy:
        deadLetterTargetArn: !GetAtt Dead.Arn
        maxReceiveCount: 5000
  Dead:
    Type: AWS::SQS::Queue
    Properties: { FifoQueue: true }
  Plain:
    Type: AWS::SQS::Queue
"#;

    #[test]
    fn reads_queues_with_their_fifo_settings_and_redrive() {
        let t = Template::parse(TEMPLATE).unwrap();
        let queues = t.queues().unwrap();
        let ids: Vec<_> = queues.iter().map(|q| q.logical_id.as_str()).collect();
        assert_eq!(ids, ["Dead", "Plain", "Work"], "sorted by logical id");
        let work = t.queue("Work").unwrap();
        assert!(work.fifo);
        assert!(!work.content_based_deduplication);
        assert_eq!(work.deduplication_scope.as_deref(), Some("messageGroup"));
        assert_eq!(
            work.fifo_throughput_limit.as_deref(),
            Some("perMessageGroupId")
        );
        assert_eq!(work.visibility_timeout, Some(360));
        assert_eq!(work.message_retention_period, Some(172_800));
        assert_eq!(
            work.redrive,
            Some(Redrive {
                dead_letter_id: "Dead".into(),
                max_receive_count: 5000
            })
        );
        assert_eq!(work.local_name("local-"), "local-Work.fifo");
        let plain = t.queue("Plain").unwrap();
        assert!(!plain.fifo);
        assert_eq!(plain.redrive, None);
        assert_eq!(plain.visibility_timeout, None);
        assert_eq!(plain.local_name("t1-"), "t1-Plain");
    }

    #[test]
    fn refuses_a_redrive_it_cannot_follow() {
        let bad = TEMPLATE.replace("!GetAtt Dead.Arn", "arn:aws:sqs:us-east-1:1:dead");
        let e = Template::parse(&bad).unwrap().queues().unwrap_err();
        assert!(e.to_string().contains("Work"), "{e}");
        let bad = TEMPLATE.replace("maxReceiveCount: 5000", "maxReceiveCount: 0");
        let e = Template::parse(&bad).unwrap().queue("Work").unwrap_err();
        assert!(e.to_string().contains("maxReceiveCount"), "{e}");
        assert!(Template::parse(TEMPLATE).unwrap().queue("Nope").is_err());
    }

    #[test]
    fn the_project_templates_inquiry_queue_is_fifo_with_a_fifo_dead_letter_queue() {
        let t = Template::load_default().unwrap();
        let q = t.queue("InquiryQueue").unwrap();
        assert!(q.fifo);
        let redrive = q.redrive.expect("a redrive policy");
        assert_eq!(redrive.dead_letter_id, "InquiryDeadLetterQueue");
        assert!(t.queue(&redrive.dead_letter_id).unwrap().fifo);
        // AWS's advice for an SQS event source: visibility >= 6 x the function's timeout.
        let consumer = t
            .functions()
            .into_iter()
            .find(|f| {
                f.events().iter().any(|e| {
                    e.kind == "SQS"
                        && get_att(&e.properties["Queue"]) == Some(("InquiryQueue", "Arn"))
                })
            })
            .expect("a function reads InquiryQueue");
        let timeout = consumer.timeout().unwrap();
        assert!(
            q.visibility_timeout.unwrap() >= 6 * timeout,
            "VisibilityTimeout {:?} < 6 x {timeout}",
            q.visibility_timeout
        );
    }
}
