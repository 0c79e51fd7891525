//! The pump's SQS event sources against moto's SQS (the local stack: `python3
//! infra/local/stack.py exec -- cargo test -p event-pump`, or a private stack testkit
//! starts) and the test's invoke API: what is processed is deleted, what failed is left
//! alone (its visibility too), FIFO message groups have one batch in flight at a time,
//! and no more batches are in flight than `ScalingConfig.MaximumConcurrency`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
use common::{Call, FakeLambda};
use event_pump::Config;
use serde_json::{json, Value};
use testkit::queues::{create_queues, delete_queues, QueueUrls};
use testkit::Template;

fn project_template() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../template.yaml")
}

fn prefix() -> String {
    format!("t{}-", ulid::Ulid::generate().to_string().to_lowercase())
}

fn body(bank: &str, n: usize) -> String {
    json!({"query_id": format!("q{n}"), "bank": bank, "attempt": 1}).to_string()
}

/// Sends `per_group` messages to each group, in order, as the enqueuers do (group = the
/// bank, deduplication id = `<query_id>.<bank>.<attempt>`).
async fn send(sqs: &aws_sdk_sqs::Client, url: &str, groups: &[String], per_group: usize) {
    for g in groups {
        let entries: Vec<_> = (0..per_group)
            .map(|n| {
                SendMessageBatchRequestEntry::builder()
                    .id(n.to_string())
                    .message_body(body(g, n))
                    .message_group_id(g)
                    .message_deduplication_id(format!("q{n}.{g}.1"))
                    .build()
                    .unwrap()
            })
            .collect();
        let out = sqs
            .send_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .expect("send_message_batch");
        assert!(out.failed().is_empty(), "{:?}", out.failed());
    }
}

/// `bank/query` of a delivered record.
fn label(r: &Value) -> String {
    let b: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
    format!(
        "{}/{}",
        b["bank"].as_str().unwrap(),
        b["query_id"].as_str().unwrap()
    )
}

fn records(c: &Call) -> Vec<Value> {
    c.payload["Records"].as_array().cloned().unwrap_or_default()
}

/// Labels of the records a call processed for good: all but the reported failures of a
/// successful answer, none of an error.
fn processed(c: &Call) -> Vec<String> {
    if c.status != 200 || c.answer.get("errorType").is_some() {
        return Vec::new();
    }
    let failed: Vec<&str> = c.answer["batchItemFailures"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["itemIdentifier"].as_str())
        .collect();
    records(c)
        .iter()
        .filter(|r| !failed.contains(&r["messageId"].as_str().unwrap()))
        .map(label)
        .collect()
}

fn receive_count(r: &Value) -> u32 {
    r["attributes"]["ApproximateReceiveCount"]
        .as_str()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !done() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn depth(sqs: &aws_sdk_sqs::Client, url: &str) -> (u64, u64) {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .unwrap();
    let attrs = out.attributes().unwrap();
    let n = |a: QueueAttributeName| attrs[&a].parse::<u64>().unwrap();
    (
        n(QueueAttributeName::ApproximateNumberOfMessages),
        n(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
    )
}

struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), event_pump::PumpError>>,
}

async fn start_pump(template: &Path, table: &str, queue_prefix: &str, invoke: &str) -> Running {
    let endpoints = testkit::stack::endpoints();
    let mut cfg = Config::new(&endpoints.dynamodb_endpoint, table, invoke);
    cfg.template = template.to_owned();
    cfg.schedule_every = None;
    cfg.sqs_endpoint = Some(endpoints.sqs().to_owned());
    cfg.queue_prefix = queue_prefix.to_owned();
    cfg.queue_poll = Duration::from_millis(50);
    cfg.describe_every = Duration::from_millis(300);
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(event_pump::run(
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
    Running { stop, task }
}

impl Running {
    async fn stop(self) {
        self.stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("pump stops")
            .expect("pump task")
            .expect("pump ran without error");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_what_was_processed_and_leaves_failed_messages_and_their_visibility_alone() {
    let env = testkit::TestEnv::new().await;
    let sqs = env.clients.sqs.clone();
    let template = Template::load(&project_template()).unwrap();
    let queue_prefix = prefix();
    let urls = create_queues(&sqs, &template, &queue_prefix).await.unwrap();
    let url = urls.get("InquiryQueue").to_owned();
    // Creating them again (a stack restarted on the same moto) finds the same queues.
    let again = create_queues(&sqs, &template, &queue_prefix).await.unwrap();
    assert_eq!(again.0, urls.0);

    // Created as the template declares: FIFO, redriven to its FIFO dead-letter queue.
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .unwrap();
    let attrs = attrs.attributes().unwrap();
    assert_eq!(attrs[&QueueAttributeName::FifoQueue], "true");
    let spec = template.queue("InquiryQueue").unwrap();
    assert_eq!(
        attrs[&QueueAttributeName::VisibilityTimeout],
        spec.visibility_timeout.unwrap().to_string()
    );
    let redrive: Value = serde_json::from_str(&attrs[&QueueAttributeName::RedrivePolicy]).unwrap();
    assert_eq!(
        redrive["maxReceiveCount"].as_u64(),
        Some(spec.redrive.as_ref().unwrap().max_receive_count)
    );
    assert!(
        redrive["deadLetterTargetArn"]
            .as_str()
            .unwrap()
            .ends_with(&format!("{queue_prefix}InquiryDeadLetterQueue.fifo")),
        "{redrive}"
    );
    // A failed batch comes back after the visibility timeout: 2 s here rather than the
    // template's 6 minutes, so the test sees it.
    sqs.set_queue_attributes()
        .queue_url(&url)
        .attributes(QueueAttributeName::VisibilityTimeout, "2")
        .send()
        .await
        .unwrap();

    // The first invocation fails as a whole; ICBC/q1 is reported failed once (and the
    // test, playing the function, defers it by 4 s); everything else succeeds.
    let q1_failed = Arc::new(Mutex::new(false));
    let fake = FakeLambda::start(Box::new(move |function, payload, nth| {
        if function != "bank-inquiry" {
            return (200, json!({"batchItemFailures": []}));
        }
        if nth == 0 {
            return (
                500,
                json!({"errorType": "Boom", "errorMessage": "first call fails"}),
            );
        }
        let mut failed = q1_failed.lock().unwrap();
        let recs = payload["Records"].as_array().cloned().unwrap_or_default();
        match recs.iter().find(|r| label(r) == "ICBC/q1") {
            Some(r) if !*failed => {
                *failed = true;
                (
                    200,
                    json!({"batchItemFailures": [{"itemIdentifier": r["messageId"]}]}),
                )
            }
            _ => (200, json!({"batchItemFailures": []})),
        }
    }))
    .await;
    let pump = start_pump(
        &project_template(),
        env.table("CardLookupTable"),
        &queue_prefix,
        &fake.url,
    )
    .await;

    let groups = ["ICBC".to_owned(), "ABC".to_owned()];
    send(&sqs, &url, &groups, 4).await;
    let expected: BTreeSet<String> = groups
        .iter()
        .flat_map(|g| (0..4).map(move |n| format!("{g}/q{n}")))
        .collect();

    // The function defers the failed message itself; the pump must not undo that.
    let deferred_at = {
        let t0 = Instant::now();
        loop {
            let reported = fake.calls_of("bank-inquiry").into_iter().find_map(|c| {
                let id = c.answer["batchItemFailures"][0]["itemIdentifier"]
                    .as_str()?
                    .to_owned();
                records(&c)
                    .into_iter()
                    .find(|r| r["messageId"] == id.as_str())
            });
            if let Some(r) = reported {
                sqs.change_message_visibility()
                    .queue_url(&url)
                    .receipt_handle(r["receiptHandle"].as_str().unwrap())
                    .visibility_timeout(4)
                    .send()
                    .await
                    .expect("the function may change its message's visibility");
                break Instant::now();
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "no reported failure"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };

    wait_for("every message processed", Duration::from_secs(60), || {
        let done: BTreeSet<String> = fake
            .calls_of("bank-inquiry")
            .iter()
            .flat_map(processed)
            .collect();
        done == expected
    })
    .await;
    // Nothing more may arrive.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let calls = fake.calls_of("bank-inquiry");
    let mut processed_count: BTreeMap<String, usize> = BTreeMap::new();
    for l in calls.iter().flat_map(processed) {
        *processed_count.entry(l).or_default() += 1;
    }
    assert!(
        processed_count.values().all(|n| *n == 1),
        "each message processed exactly once: {processed_count:?}"
    );
    assert_eq!(
        depth(&sqs, &url).await,
        (0, 0),
        "every processed message deleted"
    );

    // The errored batch was deleted by no one: its messages came again (receive count 2).
    let first: Vec<String> = records(&calls[0]).iter().map(label).collect();
    assert!(!first.is_empty());
    for l in &first {
        assert!(
            calls[1..]
                .iter()
                .flat_map(records)
                .any(|r| label(&r) == *l && receive_count(&r) >= 2),
            "{l} of the failed batch was delivered again"
        );
    }
    // The deferred message came back after the 4 s the function gave it, not before.
    let again = calls
        .iter()
        .filter(|c| c.started > deferred_at)
        .find(|c| records(c).iter().any(|r| label(r) == "ICBC/q1"))
        .expect("the deferred message is delivered again");
    assert!(
        again.started.duration_since(deferred_at) >= Duration::from_millis(3500),
        "delivered again {:?} after the function deferred it by 4 s",
        again.started.duration_since(deferred_at)
    );

    // Every payload is a Lambda SQS event of this queue.
    let arn = attrs[&QueueAttributeName::QueueArn].clone();
    for c in &calls {
        let event: aws_lambda_events::event::sqs::SqsEvent =
            serde_json::from_value(c.payload.clone()).expect("a Lambda SQS event");
        for m in &event.records {
            assert_eq!(m.event_source.as_deref(), Some("aws:sqs"));
            assert_eq!(m.event_source_arn.as_deref(), Some(arn.as_str()));
            assert_eq!(m.aws_region.as_deref(), Some("us-east-1"));
            let b: Value = serde_json::from_str(m.body.as_deref().unwrap()).unwrap();
            assert_eq!(m.attributes["MessageGroupId"], b["bank"].as_str().unwrap());
            assert!(m.attributes["SentTimestamp"].parse::<u64>().is_ok());
            assert!(
                m.attributes["ApproximateReceiveCount"]
                    .parse::<u32>()
                    .unwrap()
                    >= 1
            );
            assert!(m.receipt_handle.is_some());
        }
    }

    pump.stop().await;
    delete_queues(&sqs, &urls).await.unwrap();
    env.cleanup().await;
}

const SMALL: &str = r#"
Resources:
  Sender:
    Type: AWS::Serverless::Function
    Metadata: { BuildProperties: { Binary: sender } }
    Properties:
      Timeout: 30
      Events:
        Work:
          Type: SQS
          Properties:
            Queue: !GetAtt Work.Arn
            BatchSize: 2
            FunctionResponseTypes: [ReportBatchItemFailures]
            ScalingConfig: { MaximumConcurrency: 4 }
  Work:
    Type: AWS::SQS::Queue
    Properties: { FifoQueue: true, VisibilityTimeout: 30 }
"#;

/// The largest number of calls in flight at once.
fn peak(calls: &[Call]) -> usize {
    let mut edges: Vec<(Instant, i32)> = calls
        .iter()
        .flat_map(|c| [(c.started, 1), (c.ended, -1)])
        .collect();
    // An end before a start at the same instant: back-to-back calls do not overlap.
    edges.sort();
    let (mut now, mut max) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        max = max.max(now);
    }
    max as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_groups_have_one_batch_in_flight_and_batches_stay_within_maximum_concurrency() {
    let endpoints = testkit::stack::endpoints();
    let clients = testkit::LocalClients::new(endpoints);
    let sqs = clients.sqs.clone();
    let dir = std::env::temp_dir().join(format!("pump-queues-{}", ulid::Ulid::generate()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("template.yaml");
    std::fs::write(&path, SMALL).unwrap();
    let queue_prefix = prefix();
    let urls: QueueUrls = create_queues(&sqs, &Template::parse(SMALL).unwrap(), &queue_prefix)
        .await
        .unwrap();
    let url = urls.get("Work").to_owned();

    // Each call holds 300 ms: long enough for others to start meanwhile.
    let fake = FakeLambda::start_slow(
        Box::new(|_, _, _| (200, json!({"batchItemFailures": []}))),
        Duration::from_millis(300),
    )
    .await;
    // 24 banks x 3 legs, all queued at once.
    let groups: Vec<String> = (0..24).map(|i| format!("B{i:02}")).collect();
    send(&sqs, &url, &groups, 3).await;
    let pump = start_pump(&path, "no-stream-table", &queue_prefix, &fake.url).await;

    wait_for("every message delivered", Duration::from_secs(120), || {
        fake.calls_of("sender").iter().flat_map(records).count() >= 72
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let calls = fake.calls_of("sender");
    let delivered: Vec<String> = calls.iter().flat_map(records).map(|r| label(&r)).collect();
    assert_eq!(delivered.len(), 72, "each message once: {delivered:?}");
    assert_eq!(depth(&sqs, &url).await, (0, 0));

    // At most MaximumConcurrency batches at once, and the pump does reach it.
    assert_eq!(peak(&calls), 4, "batches in flight at once");
    for c in &calls {
        assert!(records(c).len() <= 2, "BatchSize 2");
    }

    // Per message group: one batch in flight at a time, messages in the order sent.
    let mut by_start = calls.clone();
    by_start.sort_by_key(|c| c.started);
    for g in &groups {
        let with_group: Vec<&Call> = by_start
            .iter()
            .filter(|c| {
                records(c)
                    .iter()
                    .any(|r| label(r).starts_with(&format!("{g}/")))
            })
            .collect();
        for pair in with_group.windows(2) {
            assert!(
                pair[1].started >= pair[0].ended,
                "{g}: a batch started while another of the group was in flight"
            );
        }
        let order: Vec<String> = with_group
            .iter()
            .flat_map(|c| records(c))
            .map(|r| label(&r))
            .filter(|l| l.starts_with(&format!("{g}/")))
            .collect();
        assert_eq!(
            order,
            [0, 1, 2].map(|n| format!("{g}/q{n}")),
            "{g}: FIFO order"
        );
    }

    pump.stop().await;
    delete_queues(&sqs, &urls).await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pump_stopped_mid_batch_loses_nothing() {
    let endpoints = testkit::stack::endpoints();
    let sqs = testkit::LocalClients::new(endpoints).sqs;
    let dir = std::env::temp_dir().join(format!("pump-queues-{}", ulid::Ulid::generate()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("template.yaml");
    // Visibility 2 s: a batch whose pump went away comes back soon.
    let small = SMALL.replace("VisibilityTimeout: 30", "VisibilityTimeout: 2");
    std::fs::write(&path, &small).unwrap();
    let queue_prefix = prefix();
    let urls = create_queues(&sqs, &Template::parse(&small).unwrap(), &queue_prefix)
        .await
        .unwrap();
    let url = urls.get("Work").to_owned();
    let groups: Vec<String> = (0..3).map(|i| format!("K{i}")).collect();
    send(&sqs, &url, &groups, 2).await;

    // The first pump's function takes 5 s per batch; the pump is stopped while the
    // first batches are in flight, so their answers reach no one.
    let slow = FakeLambda::start_slow(
        Box::new(|_, _, _| (200, json!({"batchItemFailures": []}))),
        Duration::from_secs(5),
    )
    .await;
    let first = start_pump(&path, "no-stream-table", &queue_prefix, &slow.url).await;
    wait_for("a batch in flight", Duration::from_secs(30), || {
        slow.arrivals() > 0
    })
    .await;
    first.stop().await;
    assert!(
        slow.calls().is_empty(),
        "stopped before any batch was answered"
    );

    let fake = FakeLambda::start(Box::new(|_, _, _| (200, json!({"batchItemFailures": []})))).await;
    let second = start_pump(&path, "no-stream-table", &queue_prefix, &fake.url).await;
    let expected: BTreeSet<String> = groups
        .iter()
        .flat_map(|g| (0..2).map(move |n| format!("{g}/q{n}")))
        .collect();
    wait_for(
        "every message delivered after the restart",
        Duration::from_secs(60),
        || {
            fake.calls()
                .iter()
                .flat_map(processed)
                .collect::<BTreeSet<_>>()
                == expected
        },
    )
    .await;
    // Deleted after the answers: give the last delete a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(depth(&sqs, &url).await, (0, 0));
    second.stop().await;
    delete_queues(&sqs, &urls).await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
