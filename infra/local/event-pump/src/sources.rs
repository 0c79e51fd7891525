//! The event sources of the SAM template (`infra/template.yaml`, read by the
//! `sam-template` crate): each function's `Type: DynamoDB` and `Type: SQS` events
//! (event source mappings) and `Type: Schedule` events.

use std::path::Path;

use sam_template::{get_att, Template};
use serde_json::Value as Json;

use crate::filter::{FilterCriteria, Pattern, PatternError};

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error(transparent)]
    Template(#[from] sam_template::TemplateError),
    #[error("{function}.{event}: {message}")]
    Event {
        function: String,
        event: String,
        message: String,
    },
}

/// One `Type: DynamoDB` event of a function: an event source mapping.
#[derive(Debug, Clone)]
pub struct StreamSource {
    /// Logical id of the function resource.
    pub function_id: String,
    /// The event's name under `Events:`.
    pub event_name: String,
    /// The binary `cargo lambda watch` serves it under (`Metadata.BuildProperties.Binary`).
    pub binary: String,
    /// Logical id of the table whose stream it reads (`!GetAtt Table.StreamArn`), if the
    /// template refers to one of its own tables.
    pub table_id: Option<String>,
    /// `BatchSize` (Lambda's default for DynamoDB: 100).
    pub batch_size: usize,
    /// `MaximumRetryAttempts`; `None` = retry until the record expires (-1, the default).
    pub max_retries: Option<u32>,
    /// `FunctionResponseTypes` contains `ReportBatchItemFailures`.
    pub report_batch_item_failures: bool,
    /// `StartingPosition`: TRIM_HORIZON or LATEST.
    pub starting_position: String,
    /// `BisectBatchOnFunctionError` (read, reported; the pump retries whole batches).
    pub bisect_on_error: bool,
    pub filters: FilterCriteria,
}

impl StreamSource {
    /// A readable name: `BankFanoutFunction.QueryInserted`.
    pub fn name(&self) -> String {
        format!("{}.{}", self.function_id, self.event_name)
    }

    /// Whether this source reads the stream of the physical table `table` (`<prefix><Id>`).
    pub fn reads_table(&self, table: &str) -> bool {
        self.table_id
            .as_deref()
            .is_some_and(|id| table.ends_with(id))
    }
}

/// One `Type: Schedule` event of a function.
#[derive(Debug, Clone)]
pub struct ScheduleSource {
    pub function_id: String,
    pub event_name: String,
    pub binary: String,
    /// `Schedule`, e.g. `rate(5 minutes)` (locally the pump uses its own period).
    pub expression: String,
    /// `Input`: the JSON the rule sends instead of the scheduled event, if set.
    pub input: Option<Json>,
}

impl ScheduleSource {
    pub fn name(&self) -> String {
        format!("{}.{}", self.function_id, self.event_name)
    }
}

/// One `Type: SQS` event of a function: an SQS event source mapping.
#[derive(Debug, Clone)]
pub struct QueueSource {
    pub function_id: String,
    pub event_name: String,
    pub binary: String,
    /// Logical id of the queue it reads (`Queue: !GetAtt <Id>.Arn`).
    pub queue_id: String,
    /// The queue is FIFO (its local name ends `.fifo`).
    pub fifo: bool,
    /// `BatchSize` (Lambda's default for SQS: 10; one ReceiveMessage returns at most 10).
    pub batch_size: usize,
    /// `ScalingConfig.MaximumConcurrency`: at most this many batches in flight.
    pub max_concurrency: usize,
    pub report_batch_item_failures: bool,
}

impl QueueSource {
    pub fn name(&self) -> String {
        format!("{}.{}", self.function_id, self.event_name)
    }

    /// The queue's local name: `<prefix><Id>` (`.fifo` for FIFO), as the stack creates it.
    pub fn queue_name(&self, prefix: &str) -> String {
        sam_template::queues::local_name(prefix, &self.queue_id, self.fifo)
    }
}

/// Concurrency of an SQS event source without `ScalingConfig` (Lambda scales to 1,000
/// there; locally a handful is as much as the function instances serve).
pub const DEFAULT_QUEUE_CONCURRENCY: usize = 5;

/// Everything the pump delivers, as declared by the template.
#[derive(Debug, Clone, Default)]
pub struct EventSources {
    pub streams: Vec<StreamSource>,
    pub schedules: Vec<ScheduleSource>,
    pub queues: Vec<QueueSource>,
    /// Events skipped, with the reason (no binary name, disabled, other event types
    /// are not listed).
    pub skipped: Vec<String>,
    /// Each function's `Timeout` (seconds; its own, else `Globals.Function.Timeout`), by
    /// binary name.
    pub timeouts: std::collections::HashMap<String, u64>,
}

impl EventSources {
    pub fn load(path: &Path) -> Result<Self, TemplateError> {
        Self::from_template(&Template::load(path)?)
    }

    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        Self::from_template(&Template::parse(text)?)
    }

    /// The template's enabled `Type: DynamoDB` and `Type: Schedule` events.
    pub fn from_template(template: &Template) -> Result<Self, TemplateError> {
        let mut out = EventSources::default();
        for function in template.functions() {
            let id = function.id.as_str();
            if let (Some(b), Some(t)) = (&function.binary, function.timeout()) {
                out.timeouts.insert(b.clone(), t);
            }
            for event in function.events() {
                let (name, props) = (event.name, event.properties);
                if !matches!(event.kind, "DynamoDB" | "Schedule" | "SQS") {
                    continue;
                }
                let fail = |message: String| TemplateError::Event {
                    function: id.to_owned(),
                    event: name.to_owned(),
                    message,
                };
                if props["Enabled"].as_bool() == Some(false) {
                    out.skipped.push(format!("{id}.{name}: Enabled: false"));
                    continue;
                }
                let Some(binary) = function.binary.clone() else {
                    out.skipped.push(format!(
                        "{id}.{name}: the function has no Metadata.BuildProperties.Binary"
                    ));
                    continue;
                };
                if event.kind == "SQS" {
                    out.queues
                        .push(queue_source(template, id, name, binary, props).map_err(fail)?);
                    continue;
                }
                if event.kind == "Schedule" {
                    let input = match props["Input"].as_str() {
                        Some(s) => Some(
                            serde_json::from_str(s)
                                .map_err(|e| fail(format!("Input is not JSON: {e}")))?,
                        ),
                        None => None,
                    };
                    out.schedules.push(ScheduleSource {
                        function_id: id.to_owned(),
                        event_name: name.to_owned(),
                        binary,
                        expression: props["Schedule"].as_str().unwrap_or_default().to_owned(),
                        input,
                    });
                    continue;
                }
                let patterns = props["FilterCriteria"]["Filters"]
                    .as_array()
                    .map(|filters| {
                        filters
                            .iter()
                            .map(|f| {
                                let text = f["Pattern"].as_str().ok_or_else(|| {
                                    PatternError("a filter has no Pattern string".into())
                                })?;
                                Pattern::parse(text)
                            })
                            .collect::<Result<Vec<_>, PatternError>>()
                    })
                    .transpose()
                    .map_err(|e| fail(e.to_string()))?
                    .unwrap_or_default();
                let batch_size = match props["BatchSize"].as_i64() {
                    None => 100,
                    Some(n) if (1..=10_000).contains(&n) => n as usize,
                    Some(n) => return Err(fail(format!("BatchSize {n} out of range"))),
                };
                let max_retries = match props["MaximumRetryAttempts"].as_i64() {
                    None | Some(-1) => None,
                    Some(n) if (0..=10_000).contains(&n) => Some(n as u32),
                    Some(n) => return Err(fail(format!("MaximumRetryAttempts {n} out of range"))),
                };
                let report_batch_item_failures = props["FunctionResponseTypes"]
                    .as_array()
                    .is_some_and(|types| types.iter().any(|t| t == "ReportBatchItemFailures"));
                out.streams.push(StreamSource {
                    function_id: id.to_owned(),
                    event_name: name.to_owned(),
                    binary,
                    table_id: get_att(&props["Stream"])
                        .filter(|(_, attr)| *attr == "StreamArn")
                        .map(|(table, _)| table.to_owned()),
                    batch_size,
                    max_retries,
                    report_batch_item_failures,
                    starting_position: props["StartingPosition"]
                        .as_str()
                        .unwrap_or("TRIM_HORIZON")
                        .to_owned(),
                    bisect_on_error: props["BisectBatchOnFunctionError"]
                        .as_bool()
                        .unwrap_or(false),
                    filters: FilterCriteria { patterns },
                });
            }
        }
        Ok(out)
    }
}

fn queue_source(
    template: &Template,
    function_id: &str,
    event_name: &str,
    binary: String,
    props: &Json,
) -> Result<QueueSource, String> {
    let queue_id = get_att(&props["Queue"])
        .filter(|(_, attr)| *attr == "Arn")
        .map(|(id, _)| id.to_owned())
        .ok_or_else(|| format!("Queue is not !GetAtt <Queue>.Arn: {}", props["Queue"]))?;
    let fifo = template
        .queue(&queue_id)
        .map_err(|e| format!("Queue: {e}"))?
        .fifo;
    let batch_size = match props["BatchSize"].as_i64() {
        None => 10,
        Some(n) if (1..=10).contains(&n) => n as usize,
        // Lambda allows up to 10,000 with a batching window, which is not emulated.
        Some(n) => return Err(format!("BatchSize {n}: the pump serves 1 to 10")),
    };
    let max_concurrency = match props["ScalingConfig"]["MaximumConcurrency"].as_i64() {
        None => DEFAULT_QUEUE_CONCURRENCY,
        Some(n) if (2..=1000).contains(&n) => n as usize,
        Some(n) => return Err(format!("ScalingConfig.MaximumConcurrency {n} out of range")),
    };
    Ok(QueueSource {
        function_id: function_id.to_owned(),
        event_name: event_name.to_owned(),
        binary,
        queue_id,
        fifo,
        batch_size,
        max_concurrency,
        report_batch_item_failures: props["FunctionResponseTypes"]
            .as_array()
            .is_some_and(|types| types.iter().any(|t| t == "ReportBatchItemFailures")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = r#"
Resources:
  Fanout:
    Type: AWS::Serverless::Function
    Metadata: { BuildProperties: { Binary: bank-fanout } }
    Properties:
      Events:
        Api: { Type: HttpApi, Properties: { Path: /x, Method: GET } }
        Ins:
          Type: DynamoDB
          Properties:
            Stream: !GetAtt Table.StreamArn
            StartingPosition: TRIM_HORIZON
            BatchSize: 10
            MaximumRetryAttempts: 5
            FunctionResponseTypes: [ReportBatchItemFailures]
            FilterCriteria:
              Filters:
                - Pattern: '{"eventName": ["INSERT"]}'
                - Pattern: '{"eventName": ["REMOVE"]}'
        Other:
          Type: DynamoDB
          Properties:
            Stream: { "Fn::GetAtt": [Table, StreamArn] }
            StartingPosition: LATEST
  Sweep:
    Type: AWS::Serverless::Function
    Metadata: { BuildProperties: { Binary: sweep } }
    Properties:
      Events:
        Tick: { Type: Schedule, Properties: { Schedule: rate(5 minutes), Input: '{"x": 1}' } }
        Off: { Type: Schedule, Properties: { Schedule: rate(1 minute), Enabled: false } }
  Sender:
    Type: AWS::Serverless::Function
    Metadata: { BuildProperties: { Binary: bank-inquiry } }
    Properties:
      Events:
        Work:
          Type: SQS
          Properties:
            Queue: !GetAtt Work.Arn
            BatchSize: 7
            FunctionResponseTypes: [ReportBatchItemFailures]
            ScalingConfig: { MaximumConcurrency: 12 }
        Plain: { Type: SQS, Properties: { Queue: !GetAtt Plain.Arn } }
        Paused: { Type: SQS, Properties: { Queue: !GetAtt Plain.Arn, Enabled: false } }
  Work:
    Type: AWS::SQS::Queue
    Properties: { FifoQueue: true }
  Plain:
    Type: AWS::SQS::Queue
  NoBinary:
    Type: AWS::Serverless::Function
    Properties:
      Events:
        T: { Type: Schedule, Properties: { Schedule: rate(1 minute) } }
  Table:
    Type: AWS::DynamoDB::Table
"#;

    #[test]
    fn reads_stream_and_schedule_events() {
        let s = EventSources::parse(TEMPLATE).unwrap();
        assert_eq!(s.streams.len(), 2);
        let ins = &s.streams[0];
        assert_eq!(ins.name(), "Fanout.Ins");
        assert_eq!(ins.binary, "bank-fanout");
        assert_eq!(ins.table_id.as_deref(), Some("Table"));
        assert!(ins.reads_table("local-Table"));
        assert!(!ins.reads_table("local-Other"));
        assert_eq!(ins.batch_size, 10);
        assert_eq!(ins.max_retries, Some(5));
        assert!(ins.report_batch_item_failures);
        assert_eq!(ins.filters.patterns.len(), 2);
        let other = &s.streams[1];
        assert_eq!(other.table_id.as_deref(), Some("Table"));
        assert_eq!(other.batch_size, 100);
        assert_eq!(other.max_retries, None);
        assert!(!other.report_batch_item_failures);
        assert_eq!(other.starting_position, "LATEST");
        assert!(other.filters.patterns.is_empty());
        assert_eq!(s.schedules.len(), 1);
        assert_eq!(s.schedules[0].binary, "sweep");
        assert_eq!(s.schedules[0].expression, "rate(5 minutes)");
        assert_eq!(s.schedules[0].input, Some(serde_json::json!({"x": 1})));
        assert_eq!(s.skipped.len(), 3, "{:?}", s.skipped);
        assert_eq!(s.queues.len(), 2);
        let plain = &s.queues[0];
        assert_eq!(plain.name(), "Sender.Plain");
        assert!(!plain.fifo);
        assert_eq!(plain.batch_size, 10);
        assert_eq!(plain.max_concurrency, DEFAULT_QUEUE_CONCURRENCY);
        assert!(!plain.report_batch_item_failures);
        assert_eq!(plain.queue_name("local-"), "local-Plain");
        let work = &s.queues[1];
        assert_eq!(work.binary, "bank-inquiry");
        assert_eq!(work.queue_id, "Work");
        assert!(work.fifo);
        assert_eq!(work.queue_name("local-"), "local-Work.fifo");
        assert_eq!((work.batch_size, work.max_concurrency), (7, 12));
        assert!(work.report_batch_item_failures);
    }

    #[test]
    fn refuses_an_sqs_event_it_cannot_serve() {
        for (from, to) in [
            ("BatchSize: 7", "BatchSize: 100"),
            ("MaximumConcurrency: 12", "MaximumConcurrency: 1"),
            ("Queue: !GetAtt Work.Arn", "Queue: !GetAtt Missing.Arn"),
            (
                "Queue: !GetAtt Work.Arn",
                "Queue: arn:aws:sqs:us-east-1:1:q",
            ),
        ] {
            let e = EventSources::parse(&TEMPLATE.replace(from, to))
                .unwrap_err()
                .to_string();
            assert!(e.contains("Sender.Work"), "{to}: {e}");
        }
    }

    #[test]
    fn refuses_a_bad_pattern() {
        let bad = TEMPLATE.replace(
            r#"'{"eventName": ["REMOVE"]}'"#,
            r#"'{"eventName": "REMOVE"}'"#,
        );
        let e = EventSources::parse(&bad).unwrap_err().to_string();
        assert!(e.contains("Fanout.Ins"), "{e}");
    }

    #[test]
    fn reads_the_project_template() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../template.yaml");
        let s = EventSources::load(&path).unwrap();
        let names: Vec<_> = s.streams.iter().map(|s| s.binary.as_str()).collect();
        assert!(names.contains(&"bank-fanout"), "{names:?}");
        assert!(names.contains(&"aggregate-report"), "{names:?}");
        assert!(s
            .streams
            .iter()
            .all(|s| s.reads_table("local-CardLookupTable")));
        assert!(s.schedules.iter().any(|s| s.binary == "sweep"));
        let inquiries = s
            .queues
            .iter()
            .find(|q| q.queue_id == "InquiryQueue")
            .expect("an SQS event reads InquiryQueue");
        assert!(inquiries.fifo);
        assert_eq!(inquiries.binary, "bank-inquiry");
        assert_eq!((inquiries.batch_size, inquiries.max_concurrency), (10, 50));
        assert!(inquiries.report_batch_item_failures);
        // Timeouts: the function's own, as the template declares them.
        assert_eq!(s.timeouts.get("aggregate-report"), Some(&30));
        assert_eq!(s.timeouts.get("sweep"), Some(&280));
    }
}
