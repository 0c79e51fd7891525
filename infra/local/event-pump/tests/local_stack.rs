//! The pump against DynamoDB Local (the local stack: `python3 infra/local/stack.py exec --
//! cargo test -p event-pump`, or a private stack testkit starts) and a tiny invoke API
//! in the test that records every invocation and answers as scripted.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use event_pump::Config;
use serde_json::{json, Value};

fn template() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../template.yaml")
}

mod common;

use common::FakeLambda;

/// Records the calls of `function` acknowledged (processed for good), in order.
fn acked_keys(fake: &FakeLambda, function: &str) -> Vec<String> {
    fake.calls_of(function)
        .iter()
        .flat_map(|c| acked_records(&c.payload, c.status, &c.answer))
        .collect()
}

/// `pk` of each record the answer acknowledges: all of them on success, those before
/// the lowest failed one on a partial failure, none on an error.
fn acked_records(payload: &Value, status: u16, answer: &Value) -> Vec<String> {
    let Some(records) = payload.get("Records").and_then(Value::as_array) else {
        return Vec::new();
    };
    if status != 200 || answer.get("errorType").is_some() {
        return Vec::new();
    }
    let failed: Vec<&str> = answer
        .get("batchItemFailures")
        .and_then(Value::as_array)
        .map(|f| {
            f.iter()
                .filter_map(|i| i["itemIdentifier"].as_str())
                .collect()
        })
        .unwrap_or_default();
    records
        .iter()
        .take_while(|r| {
            !failed.contains(&r["dynamodb"]["SequenceNumber"].as_str().unwrap_or_default())
        })
        .map(label)
        .collect()
}

/// `pk:eventName` of a delivered record.
fn label(r: &Value) -> String {
    format!(
        "{}:{}",
        r["dynamodb"]["Keys"]["pk"]["S"].as_str().unwrap_or("?"),
        r["eventName"].as_str().unwrap_or("?")
    )
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.into())
}

async fn put(ddb: &aws_sdk_dynamodb::Client, table: &str, pk: &str, entity: &str, phase: &str) {
    ddb.put_item()
        .table_name(table)
        .item("pk", s(pk))
        .item("sk", s("META"))
        .item("entity", s(entity))
        .item("phase", s(phase))
        .send()
        .await
        .expect("put_item");
}

/// Sets attributes of an item (a MODIFY record).
async fn update(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    pk: &str,
    attrs: &[(String, AttributeValue)],
) {
    let mut req = ddb
        .update_item()
        .table_name(table)
        .key("pk", s(pk))
        .key("sk", s("META"));
    let mut sets = Vec::new();
    for (i, (name, value)) in attrs.iter().enumerate() {
        sets.push(format!("#a{i} = :v{i}"));
        req = req
            .expression_attribute_names(format!("#a{i}"), name)
            .expression_attribute_values(format!(":v{i}"), value.clone());
    }
    req.update_expression(format!("SET {}", sets.join(", ")))
        .send()
        .await
        .expect("update_item");
}

async fn set_phase(ddb: &aws_sdk_dynamodb::Client, table: &str, pk: &str, phase: &str) {
    update(ddb, table, pk, &[("phase".into(), s(phase))]).await;
}

/// The NewImage attributes the template's aggregation filter requires, with their first
/// exact value (the template is the source of truth; this test follows it).
fn aggregation_trigger() -> Vec<(String, AttributeValue)> {
    let sources = event_pump::sources::EventSources::load(&template()).unwrap();
    let src = sources
        .streams
        .iter()
        .find(|s| s.binary == "aggregate-report")
        .expect("the template has the aggregation's stream event");
    let pattern = src.filters.patterns[0].json();
    assert_eq!(pattern["eventName"], json!(["MODIFY"]));
    pattern["dynamodb"]["NewImage"]
        .as_object()
        .expect("NewImage conditions")
        .iter()
        .map(|(name, typed)| {
            let (ty, values) = typed.as_object().unwrap().iter().next().unwrap();
            let v = values[0].as_str().unwrap().to_owned();
            let value = match ty.as_str() {
                "S" => AttributeValue::S(v),
                "N" => AttributeValue::N(v),
                other => panic!("attribute type {other} in the aggregation filter"),
            };
            (name.clone(), value)
        })
        .collect()
}

async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !done() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_matching_records_in_order_once_with_retries_and_schedules() {
    let env = testkit::TestEnv::new().await;
    let table = env.table("CardLookupTable").to_owned();
    let ddb = env.clients.dynamodb.clone();

    // bank-fanout: reports Q2 as failed the first time it sees it.
    // aggregate-report: "not served" (404) once, then a function error, then fine.
    let q2_failed = Arc::new(Mutex::new(false));
    let fake = FakeLambda::start(Box::new(move |function, payload, nth| {
        let ok = (200, json!({"batchItemFailures": []}));
        match function {
            "bank-fanout" => {
                let recs = payload["Records"].as_array().cloned().unwrap_or_default();
                let mut failed = q2_failed.lock().unwrap();
                match recs.iter().find(|r| label(r) == "Q2:INSERT") {
                    Some(r) if !*failed => {
                        *failed = true;
                        let seq = r["dynamodb"]["SequenceNumber"].clone();
                        (200, json!({"batchItemFailures": [{"itemIdentifier": seq}]}))
                    }
                    _ => ok,
                }
            }
            "aggregate-report" => match nth {
                0 => (
                    404,
                    json!({"title": "Missing function",
                    "detail": "that function doesn't exist as a binary in your project"}),
                ),
                1 => (
                    500,
                    json!({"errorType": "Boom", "errorMessage": "first try fails"}),
                ),
                _ => ok,
            },
            "sweep" => (200, Value::Null),
            _ => (404, json!({"title": "Missing function"})),
        }
    }))
    .await;

    let mut cfg = Config::new(&env.clients.endpoints.dynamodb_endpoint, &table, &fake.url);
    cfg.template = template();
    cfg.schedule_every = Some(Duration::from_millis(700));
    cfg.poll = Duration::from_millis(100);
    cfg.describe_every = Duration::from_millis(500);
    cfg.retry_base = Duration::from_millis(50);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
    let pump = tokio::spawn(event_pump::run(
        cfg,
        async {
            let _ = stop_rx.await;
        },
        move || {
            let _ = ready_tx.send(());
        },
    ));
    tokio::time::timeout(Duration::from_secs(30), ready_rx)
        .await
        .expect("pump ready in time")
        .expect("pump ready");

    // In stream order (one partition key each, so one shard keeps them in order).
    let trigger = aggregation_trigger();
    assert!(trigger
        .iter()
        .any(|(n, v)| n == "entity" && *v == s("QUERY")));
    let not_entity: Vec<_> = trigger
        .iter()
        .filter(|(n, _)| n != "entity")
        .cloned()
        .collect();
    put(&ddb, &table, "Q1", "QUERY", "FANOUT").await; // fanout ✓
    put(&ddb, &table, "L1", "LEG", "SENT").await; // neither
    put(&ddb, &table, "Q2", "QUERY", "FANOUT").await; // fanout ✓ (fails once)
    update(&ddb, &table, "Q1", &trigger).await; // aggregate ✓ (404, 500, ok)
    put(&ddb, &table, "Q3", "QUERY", "FANOUT").await; // fanout ✓
    set_phase(&ddb, &table, "Q2", "NOT-A-PHASE").await; // neither
    update(&ddb, &table, "L1", &not_entity).await; // neither: not a query
    ddb.delete_item()
        .table_name(&table)
        .key("pk", s("Q3"))
        .key("sk", s("META"))
        .send()
        .await
        .unwrap(); // neither

    let expected_fanout = vec!["Q1:INSERT", "Q2:INSERT", "Q3:INSERT"];
    wait_for("fan-out deliveries", Duration::from_secs(60), || {
        acked_keys(&fake, "bank-fanout").len() >= 3
    })
    .await;
    wait_for("aggregation delivery", Duration::from_secs(60), || {
        !acked_keys(&fake, "aggregate-report").is_empty()
    })
    .await;
    wait_for("two scheduled sweeps", Duration::from_secs(30), || {
        fake.calls_of("sweep").len() >= 2
    })
    .await;
    // Nothing more may arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;

    assert_eq!(acked_keys(&fake, "bank-fanout"), expected_fanout);
    assert_eq!(acked_keys(&fake, "aggregate-report"), vec!["Q1:MODIFY"]);

    // Q2 was delivered again after its reported failure, starting with itself; Q1
    // (before it in that batch) was not.
    let fanout = fake.calls_of("bank-fanout");
    let delivered: Vec<Vec<String>> = fanout
        .iter()
        .map(|c| {
            c.payload["Records"]
                .as_array()
                .unwrap()
                .iter()
                .map(label)
                .collect()
        })
        .collect();
    let q1 = delivered
        .iter()
        .flatten()
        .filter(|l| *l == "Q1:INSERT")
        .count();
    let q2 = delivered
        .iter()
        .flatten()
        .filter(|l| *l == "Q2:INSERT")
        .count();
    assert_eq!((q1, q2), (1, 2), "deliveries: {delivered:?}");
    let retry = delivered
        .iter()
        .position(|b| b.contains(&"Q2:INSERT".to_owned()))
        .map(|i| &delivered[i + 1..])
        .and_then(|rest| rest.iter().find(|b| b.contains(&"Q2:INSERT".to_owned())))
        .expect("a retry of Q2");
    assert_eq!(
        retry[0], "Q2:INSERT",
        "the retry starts at the failed record"
    );

    // The aggregation's record: not served, function error, then delivered: 3 calls.
    let agg = fake.calls_of("aggregate-report");
    assert_eq!(agg.len(), 3, "{agg:?}");
    for c in &agg {
        let labels: Vec<String> = c.payload["Records"]
            .as_array()
            .unwrap()
            .iter()
            .map(label)
            .collect();
        assert_eq!(labels, ["Q1:MODIFY"]);
    }

    // Every payload is a Lambda DynamoDB event of this table's stream, in DynamoDB JSON.
    let stream_arn = ddb
        .describe_table()
        .table_name(&table)
        .send()
        .await
        .unwrap()
        .table()
        .and_then(|t| t.latest_stream_arn())
        .unwrap()
        .to_owned();
    for c in fake.calls().iter().filter(|c| c.function != "sweep") {
        let event: aws_lambda_events::event::dynamodb::Event =
            serde_json::from_value(c.payload.clone()).expect("a Lambda DynamoDB event");
        for r in &event.records {
            assert_eq!(r.event_source_arn.as_deref(), Some(stream_arn.as_str()));
            assert_eq!(r.aws_region, "us-east-1");
            assert!(r.change.sequence_number.is_some());
        }
        let rec = &c.payload["Records"][0];
        assert_eq!(rec["dynamodb"]["NewImage"]["entity"], json!({"S": "QUERY"}));
        assert!(rec["dynamodb"]["ApproximateCreationDateTime"].is_number());
    }
    // Modify records carry the old image too (NEW_AND_OLD_IMAGES).
    assert_eq!(
        agg[2].payload["Records"][0]["dynamodb"]["OldImage"]["phase"],
        json!({"S": "FANOUT"})
    );

    // The schedule: EventBridge scheduled events for the sweeper.
    for c in fake.calls_of("sweep") {
        assert_eq!(c.payload["detail-type"], "Scheduled Event");
        assert_eq!(c.payload["source"], "aws.events");
    }

    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), pump)
        .await
        .expect("pump stops")
        .expect("pump task")
        .expect("pump ran without error");
    env.cleanup().await;
}

/// The binary: prints the ready line, serves, and exits cleanly on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_prints_ready_and_stops_on_sigterm() {
    let env = testkit::TestEnv::new().await;
    let table = env.table("CardLookupTable").to_owned();
    let fake = FakeLambda::start(Box::new(|_, _, _| (200, json!({"batchItemFailures": []})))).await;

    let mut child = Command::new(env!("CARGO_BIN_EXE_event-pump"))
        .args([
            "--dynamodb-endpoint",
            &env.clients.endpoints.dynamodb_endpoint,
        ])
        .args(["--table", &table, "--invoke-endpoint", &fake.url])
        .arg("--template")
        .arg(template())
        .args(["--schedule-every", "0", "--poll-ms", "100"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("event-pump starts");
    let stdout = child.stdout.take().unwrap();
    let ready = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|l| l == event_pump::READY_LINE)
    });
    let ready = tokio::time::timeout(Duration::from_secs(30), ready)
        .await
        .expect("ready line in time")
        .unwrap();
    assert!(ready, "stdout has the ready line");

    put(&env.clients.dynamodb, &table, "QB", "QUERY", "FANOUT").await;
    wait_for("the binary's delivery", Duration::from_secs(30), || {
        acked_keys(&fake, "bank-fanout") == ["QB:INSERT"]
    })
    .await;

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let t0 = Instant::now();
    let code = loop {
        if let Some(code) = child.try_wait().unwrap() {
            break code;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "event-pump did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(code.success(), "clean exit on SIGTERM: {code:?}");
    let calls: HashMap<String, usize> = fake.calls().iter().fold(HashMap::new(), |mut m, c| {
        *m.entry(c.function.clone()).or_default() += 1;
        m
    });
    assert_eq!(
        calls.get("sweep"),
        None,
        "--schedule-every 0 sends no scheduled event"
    );
    env.cleanup().await;
}
