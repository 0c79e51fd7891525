//! The fixture world of the end-to-end suites (`tests/api`'s pipeline and callback
//! modules, `tests/faults.rs`): a query's progress and report as the app sees them, the
//! "report ready" notices on the user's phone, and the stored times moved into the
//! past where a test lets hours or days pass.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{json, Value};

use crate::api::{ready_sms, Api, TestUser};

/// Every bank of the shipped configuration.
pub const ALL_BANKS: [&str; 16] = [
    "ICBC", "ABC", "BOC", "CCB", "BOCOM", "PSBC", "CMB", "SPDB", "CITIC", "CEB", "HXB", "CMBC",
    "CGB", "PAB", "CIB", "CZB",
];

/// How long [`wait_until`] waits: a pump redelivery after a killed instance (twice the
/// function's timeout) fits, with margin.
pub const WAIT: Duration = Duration::from_secs(90);

/// Polls `cond` until it holds; fails the test after [`WAIT`].
pub async fn wait_until<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `bank_code` → `status` of a list of banks (a record's `progress`, a report's
/// `summary.banks`).
pub fn bank_statuses(banks: &Value) -> BTreeMap<String, String> {
    banks
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["bank_code"].as_str().unwrap().to_owned(),
                b["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The expected per-bank statuses, from pairs.
pub fn statuses(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(b, s)| ((*b).to_owned(), (*s).to_owned()))
        .collect()
}

/// Per-bank status of a query record (`GET /v1/card-queries/{id}`), asserting the API
/// answered without a server error.
pub async fn progress(
    api: &Api,
    user: &TestUser,
    query_id: &str,
) -> (Value, BTreeMap<String, String>) {
    let reply = api
        .get_json(&format!("/v1/card-queries/{query_id}"), &api.token(user))
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let body = reply.body.unwrap();
    let statuses = bank_statuses(&body["progress"]);
    (body, statuses)
}

/// The report, viewed as the app does, and its per-bank summary statuses.
pub async fn view(api: &Api, user: &TestUser, query_id: &str) -> (Value, BTreeMap<String, String>) {
    api.allow_next_sms(user).await;
    let reply = api.view_report(user, query_id).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let report = reply.body.unwrap();
    let statuses = bank_statuses(&report["summary"]["banks"]);
    (report, statuses)
}

/// The "report ready" SMS go out right after the report is stored: waits up to 30 s
/// for the first, then counts them.
pub async fn ready_sms_of(api: &Api, user: &TestUser) -> usize {
    let start = Instant::now();
    loop {
        let n = ready_sms(&api.sms_to(&user.phone).await);
        if n > 0 || start.elapsed() > Duration::from_secs(30) {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Exactly one notice reached the phone, and stays one (a late duplicate would come
/// from the sweeper's next runs, every 3 s locally).
pub async fn one_notice(api: &Api, user: &TestUser) {
    wait_until("the notice SMS", || async {
        ready_sms(&api.sms_to(&user.phone).await) >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(ready_sms(&api.sms_to(&user.phone).await), 1);
}

/// Sets time attributes of a stored item (which must exist).
pub async fn set_times(api: &Api, pk: &str, sk: &str, assignments: &[(&str, String)]) {
    let mut expr = Vec::new();
    let mut req = api
        .clients
        .dynamodb
        .update_item()
        .table_name(&api.tables.main)
        .key("pk", AttributeValue::S(pk.into()))
        .key("sk", AttributeValue::S(sk.into()));
    for (i, (attr, value)) in assignments.iter().enumerate() {
        expr.push(format!("{attr} = :v{i}"));
        req = req.expression_attribute_values(format!(":v{i}"), AttributeValue::S(value.clone()));
    }
    req.update_expression(format!("SET {}", expr.join(", ")))
        .condition_expression("attribute_exists(pk)")
        .send()
        .await
        .unwrap();
}

/// The instant `d` ago, as stored.
pub fn past(d: chrono::TimeDelta) -> String {
    shared::model::timestamp::format(chrono::Utc::now() - d)
}

/// The 24 hours pass: the query's collection deadline and its due entry move back.
pub async fn pass_the_deadline(api: &Api, query_id: &str) {
    let due = past(chrono::TimeDelta::seconds(1));
    set_times(
        api,
        &format!("QUERY#{query_id}"),
        "QUERY",
        &[("collect_until", due.clone()), ("due_at", due)],
    )
    .await;
}

/// The stream record that says a query is ready for aggregation (all legs settled), as
/// the event pump delivers it: for tests that deliver it again themselves.
pub fn ready_record(query_id: &str) -> Value {
    json!({"Records": [{
        "eventID": "redelivery", "eventName": "MODIFY", "eventVersion": "1.1",
        "eventSource": "aws:dynamodb", "awsRegion": "us-east-1",
        "dynamodb": {
            "ApproximateCreationDateTime": 1764336000,
            "Keys": {"pk": {"S": format!("QUERY#{query_id}")}, "sk": {"S": "QUERY"}},
            "NewImage": {"pk": {"S": format!("QUERY#{query_id}")}, "sk": {"S": "QUERY"}, "entity": {"S": "QUERY"},
                         "query_id": {"S": query_id}, "phase": {"S": "COLLECTING"}, "unsettled": {"N": "0"}},
            "SequenceNumber": "1", "SizeBytes": 100, "StreamViewType": "NEW_AND_OLD_IMAGES"
        },
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:000000000000:table/x/stream/1"
    }]})
}
