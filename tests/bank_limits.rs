//! The banks are protected (issue 17), end to end on the local stack: the inquiry queue
//! played by the event pump as the SQS event source mapping, bank-inquiry sending
//! through the DynamoDB gate, the simulator recording what each bank saw
//! (`GET /_admin/traffic`). A binary of its own: a burst at the low-limit banks and an
//! open circuit would hold back the parallel tests of `api` that ask those banks.
//!
//! ```text
//! python3 infra/local/stack.py exec --with-api -- cargo test -p system-tests --test bank_limits
//! ```

use std::time::Duration;

use serde_json::{json, Value};
use testkit::api::{Api, TestUser, UserKind};
use testkit::journey::{bank_statuses, pass_the_deadline};

/// Banks the shipped configuration gives 5 inquiries/s and 3 in flight.
const SMALL_BANKS: [&str; 2] = ["HXB", "CZB"];
const SMALL_RATE: u64 = 5;
const SMALL_IN_FLIGHT: u64 = 3;
/// 50 inquiries at 5/s take 10 s at the bank; the reports follow within the pump's
/// and the sweeper's rounds.
const REPORTS_WAIT: Duration = Duration::from_secs(180);

async fn sim(api: &Api, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let mut req = reqwest::Client::new().request(method, format!("{}{path}", api.sim));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("simulator");
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.unwrap_or(Value::Null)
}

async fn traffic(api: &Api) -> Value {
    sim(api, reqwest::Method::GET, "/_admin/traffic", None).await["banks"].clone()
}

/// Inquiries the simulator received about these people, at every bank.
async fn asked(api: &Api, people: &[TestUser]) -> usize {
    let mut n = 0;
    for u in people {
        n += api.sim_inquiries(u).await.len();
    }
    n
}

async fn users(api: &Api, n: usize) -> Vec<TestUser> {
    futures::future::join_all((0..n).map(|_| api.new_user(UserKind::Eligible))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_fifty_queries_never_exceeds_the_low_limits_and_every_query_reports() {
    let api = Api::get().await;
    let people = users(&api, 50).await;
    sim(&api, reqwest::Method::POST, "/_admin/traffic/reset", None).await;
    let banks = ["HXB", "CZB", "ICBC"];
    let submitted =
        futures::future::join_all(people.iter().map(|u| api.submit_query(u, &banks))).await;
    let reports = futures::future::join_all(people.iter().zip(&submitted).map(|(u, s)| {
        let id = s["query_id"].as_str().unwrap().to_owned();
        let api = &api;
        async move { api.wait_report(u, &id, REPORTS_WAIT).await }
    }))
    .await;
    for r in &reports {
        assert_eq!(r["report_status"], "READY", "{r}");
    }
    let seen = traffic(&api).await;
    for bank in SMALL_BANKS {
        let b = &seen[bank];
        assert!(b["inquiries"].as_u64().unwrap() >= 50, "{bank}: {b}");
        assert!(
            b["max_rate_per_second"].as_u64().unwrap() <= SMALL_RATE,
            "{bank} saw more than its rate: {b}"
        );
        assert!(
            b["max_in_flight"].as_u64().unwrap() <= SMALL_IN_FLIGHT,
            "{bank} saw more than its in-flight limit: {b}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_bank_opens_its_circuit_sees_only_probes_and_settles_on_recovery() {
    let api = Api::get().await;
    let people = users(&api, 8).await;
    // CEB fails every call about these people (a 500 each).
    for u in &people {
        api.sim_behave(u, "CEB", json!({"mode": "error"})).await;
    }
    let ids: Vec<String> =
        futures::future::join_all(people.iter().map(|u| api.submit_query(u, &["CEB"])))
            .await
            .iter()
            .map(|s| s["query_id"].as_str().unwrap().to_owned())
            .collect();
    // Five failures in a row (shipped: failures_to_open 5) open it.
    testkit::journey::wait_until("CEB's first failures", || async {
        asked(&api, &people).await >= 5
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let opened = asked(&api, &people).await;
    // A cool-off (30 s) later, at most the one probe has reached the bank, however many
    // legs are due for their retry meanwhile.
    tokio::time::sleep(Duration::from_secs(25)).await;
    let during = asked(&api, &people).await - opened;
    assert!(during <= 1, "{during} calls while the circuit was open");
    // Meanwhile the users see their leg waiting, not lost.
    for (u, id) in people.iter().zip(&ids) {
        let detail = api
            .get_json(&format!("/v1/card-queries/{id}"), &api.token(u))
            .await
            .body
            .unwrap();
        let status = bank_statuses(&detail["progress"]);
        assert!(
            ["QUEUED", "RETRYING", "PENDING"].contains(&status["CEB"].as_str()),
            "{detail}"
        );
    }
    // The bank recovers: the next probe closes the circuit and every waiting leg goes.
    for u in &people {
        api.sim_behave(u, "CEB", json!({"mode": "immediate"})).await;
    }
    for (u, id) in people.iter().zip(&ids) {
        let record = api.wait_report(u, id, REPORTS_WAIT).await;
        assert_eq!(record["report_status"], "READY", "{record}");
        let detail = api
            .get_json(&format!("/v1/card-queries/{id}"), &api.token(u))
            .await
            .body
            .unwrap();
        assert_eq!(
            bank_statuses(&detail["progress"])
                .get("CEB")
                .map(String::as_str),
            Some("RESPONDED"),
            "{detail}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bank_that_never_recovers_settles_no_response_by_the_deadline() {
    let api = Api::get().await;
    let u = api.new_user(UserKind::Eligible).await;
    api.sim_behave(&u, "SPDB", json!({"mode": "error"})).await;
    let id = api.submit_query(&u, &["SPDB", "ICBC"]).await["query_id"]
        .as_str()
        .unwrap()
        .to_owned();
    testkit::journey::wait_until("SPDB's first failure", || async {
        !api.sim_inquiries(&u).await.is_empty()
    })
    .await;
    // While it waits to be sent again, the user sees it retrying.
    let detail = api
        .get_json(&format!("/v1/card-queries/{id}"), &api.token(&u))
        .await
        .body
        .unwrap();
    let spdb = bank_statuses(&detail["progress"]);
    assert!(
        ["RETRYING", "PENDING", "QUEUED"].contains(&spdb["SPDB"].as_str()),
        "{detail}"
    );
    pass_the_deadline(&api, &id).await;
    let record = api.wait_report(&u, &id, REPORTS_WAIT).await;
    assert_eq!(record["report_status"], "READY", "{record}");
    let detail = api
        .get_json(&format!("/v1/card-queries/{id}"), &api.token(&u))
        .await
        .body
        .unwrap();
    let status = bank_statuses(&detail["progress"]);
    assert_eq!(status["SPDB"], "NO_RESPONSE", "{detail}");
    assert_eq!(status["ICBC"], "RESPONDED", "{detail}");
}
