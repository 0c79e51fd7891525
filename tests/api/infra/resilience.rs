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
    for (id, _) in of_type("AWS::SQS::Queue") {
        assert!(
            watches("AWS/SQS", "ApproximateNumberOfMessagesVisible", Some(id)),
            "{id}: depth alarm"
        );
    }
    assert!(watches("CardLookup", "SubmitToReportLatency", None));
    assert!(watches("CardLookup", "SweepDeadlineFailures", None));
}
