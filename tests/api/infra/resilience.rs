//! Protected tables, bounded stream retries with dead-letter queues, and the alarms.

use super::*;

#[test]
fn tables_are_protected_and_stream_consumers_have_bounded_retries_and_a_dead_letter_queue() {
    for (id, table) in of_type("AWS::DynamoDB::Table") {
        let p = &table["Properties"];
        assert_eq!(p["BillingMode"], "PAY_PER_REQUEST", "{id}");
        assert_eq!(
            p["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"], true,
            "{id}"
        );
        assert_eq!(p["DeletionProtectionEnabled"], true, "{id}");
        assert_eq!(p["SSESpecification"]["SSEEnabled"], true, "{id}");
        assert_eq!(p["SSESpecification"]["SSEType"], "KMS", "{id}");
        let key = referenced_ids(&p["SSESpecification"]["KMSMasterKeyId"]);
        let key = key.iter().next().unwrap_or_else(|| panic!("{id}: no CMK"));
        assert_eq!(resources()[key]["Type"], "AWS::KMS::Key", "{id}");
        assert_eq!(resources()[key]["Properties"]["EnableKeyRotation"], true);
        assert_eq!(table["DeletionPolicy"], "Retain", "{id}");
    }
    let mut consumers = 0;
    for f in functions() {
        for (name, event) in f.props["Events"].as_object().into_iter().flatten() {
            if event["Type"] != "DynamoDB" {
                continue;
            }
            consumers += 1;
            let p = &event["Properties"];
            let at = format!("{}.{name}", f.id);
            assert_eq!(
                p["Stream"],
                json!({"Fn::GetAtt": ["CardLookupTable", "StreamArn"]}),
                "{at}"
            );
            assert_eq!(
                p["FunctionResponseTypes"],
                json!(["ReportBatchItemFailures"]),
                "{at}"
            );
            let retries = p["MaximumRetryAttempts"].as_i64().unwrap_or(-1);
            assert!(
                (0..=10).contains(&retries),
                "{at}: bounded retries, not {retries}"
            );
            let age = p["MaximumRecordAgeInSeconds"].as_i64().unwrap_or(-1);
            assert!(
                (60..=86_400).contains(&age),
                "{at}: MaximumRecordAgeInSeconds {age}"
            );
            assert!(
                !strings(&p["FilterCriteria"]["Filters"][0]["Pattern"]).is_empty(),
                "{at}"
            );
            let dlq = referenced_ids(&p["DestinationConfig"]["OnFailure"]["Destination"]);
            let dlq = dlq.iter().next().unwrap_or_else(|| panic!("{at}: no DLQ"));
            let queue = &resources()[dlq];
            assert_eq!(queue["Type"], "AWS::SQS::Queue", "{at}");
            assert!(
                !queue["Properties"]["KmsMasterKeyId"].is_null(),
                "{dlq} is not encrypted"
            );
            // The role may send there (the event source mapping uses it).
            assert!(
                f.statements().iter().any(|st| strings(&st["Action"])
                    .contains(&"sqs:SendMessage".to_owned())
                    && referenced_ids(&st["Resource"]).contains(dlq)),
                "{at}: the role cannot send to {dlq}"
            );
        }
    }
    assert_eq!(consumers, 2, "fan-out and aggregation read the stream");

    // The inquiry queue: FIFO (per-bank order), one consumer with partial batch
    // responses and bounded concurrency, a FIFO dead-letter queue behind a redrive
    // limit high enough for a paused bank's messages, and every enqueuer allowed to send.
    let queue = &resources()["InquiryQueue"]["Properties"];
    assert_eq!(queue["FifoQueue"], true);
    assert!(queue["QueueName"].to_string().contains(".fifo"), "{queue}");
    let dlq = referenced_ids(&queue["RedrivePolicy"]["deadLetterTargetArn"]);
    let dlq = dlq
        .iter()
        .next()
        .expect("InquiryQueue has a dead-letter queue");
    assert_eq!(resources()[dlq]["Properties"]["FifoQueue"], true, "{dlq}");
    let max_receives = queue["RedrivePolicy"]["maxReceiveCount"].as_u64().unwrap();
    assert!(
        max_receives >= 24 * 3600 / 30,
        "a bank paused until the deadline is received every cool-off: {max_receives}"
    );
    let mut readers = Vec::new();
    for f in functions() {
        for (name, event) in f.props["Events"].as_object().into_iter().flatten() {
            if event["Type"] != "SQS" {
                continue;
            }
            let p = &event["Properties"];
            assert_eq!(
                p["Queue"],
                json!({"Fn::GetAtt": ["InquiryQueue", "Arn"]}),
                "{}.{name}",
                f.id
            );
            assert_eq!(
                p["FunctionResponseTypes"],
                json!(["ReportBatchItemFailures"])
            );
            assert!(p["ScalingConfig"]["MaximumConcurrency"].as_u64().is_some());
            let timeout = f.props["Timeout"].as_u64().unwrap();
            assert!(
                queue["VisibilityTimeout"].as_u64().unwrap() >= 6 * timeout,
                "{}: visibility under 6 x Timeout",
                f.id
            );
            readers.push(f.binary.clone());
        }
    }
    assert_eq!(readers, ["bank-inquiry"]);
    for f in functions() {
        let sends = f.statements().iter().any(|st| {
            st["Effect"] == "Allow"
                && strings(&st["Action"]).contains(&"sqs:SendMessage".to_owned())
                && referenced_ids(&st["Resource"]).contains("InquiryQueue")
        });
        let enqueues = f.env().get("INQUIRY_QUEUE_URL") == Some(&json!({"Ref": "InquiryQueue"}));
        assert_eq!(
            sends,
            matches!(f.binary.as_str(), "bank-fanout" | "sweep"),
            "{}: sqs:SendMessage on InquiryQueue",
            f.binary
        );
        assert!(
            !sends || enqueues,
            "{}: sends but has no INQUIRY_QUEUE_URL",
            f.binary
        );
    }
    let sweep = function("sweep");
    let schedule = &sweep.props["Events"]["Every5Minutes"];
    assert_eq!(schedule["Type"], "Schedule");
    assert_eq!(schedule["Properties"]["Schedule"], "rate(5 minutes)");
}

#[test]
fn alarms_cover_every_function_every_dead_letter_queue_and_late_reports() {
    let alarms: Vec<&Value> = of_type("AWS::CloudWatch::Alarm")
        .into_iter()
        .map(|(_, a)| &a["Properties"])
        .collect();
    let topic = json!([{"Ref": "AlarmTopic"}]);
    for alarm in &alarms {
        assert_eq!(alarm["AlarmActions"], topic, "{alarm}");
    }
    let watches = |namespace: &str, metric: &str, dimension: Option<&str>| {
        alarms.iter().any(|a| {
            a["Namespace"] == namespace
                && a["MetricName"] == metric
                && dimension.is_none_or(|id| referenced_ids(&a["Dimensions"]).contains(id))
        })
    };
    for f in functions() {
        for metric in ["Errors", "Throttles"] {
            assert!(
                watches("AWS/Lambda", metric, Some(f.id)),
                "{}: {metric} alarm",
                f.id
            );
        }
    }
    // A dead-letter queue alarms on any message; a work queue read by a function is
    // never empty under load, so it alarms on the age of its oldest message instead.
    let consumed: BTreeSet<String> = functions()
        .iter()
        .flat_map(|f| {
            f.props["Events"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(_, e)| e["Type"] == "SQS")
                .flat_map(|(_, e)| referenced_ids(&e["Properties"]["Queue"]))
                .collect::<Vec<_>>()
        })
        .collect();
    for (id, _) in of_type("AWS::SQS::Queue") {
        let metric = if consumed.contains(id) {
            "ApproximateAgeOfOldestMessage"
        } else {
            "ApproximateNumberOfMessagesVisible"
        };
        assert!(watches("AWS/SQS", metric, Some(id)), "{id}: {metric} alarm");
    }
    assert!(watches("CardLookup", "SubmitToReportLatency", None));
    assert!(watches("CardLookup", "SweepDeadlineFailures", None));
}
