//! The user's own controls over a query, end to end through the local stack: deleting
//! the report early (`deletion`), the log of every time it was shown (`view_log`), the
//! report read in pages (`pages`), disputing a card ("this card is not mine",
//! `disputes`).
//!
//! ```text
//! python3 infra/local/stack.py exec --with-api -- cargo test -p system-tests --test api controls::
//! ```

use std::time::Duration;

use serde_json::{json, Value};
use testkit::api::{Api, Reply, TestUser};

mod deletion;
mod disputes;
mod pages;
mod view_log;

const REPORT_WAIT: Duration = testkit::api::PIPELINE_WAIT;

/// A submitted query whose report is READY (not yet viewed): its id.
async fn ready_query(api: &Api, user: &TestUser, banks: &[&str]) -> String {
    let accepted = api.submit_query(user, banks).await;
    let query_id = accepted["query_id"].as_str().unwrap().to_owned();
    let record = api.wait_report(user, &query_id, REPORT_WAIT).await;
    assert_eq!(record["report_status"], "READY", "{record}");
    query_id
}

/// A step-up body with a fresh SMS code for `purpose`.
async fn code_body(api: &Api, user: &TestUser, purpose: &str) -> Value {
    api.allow_next_sms(user).await;
    let (vid, code) = api.verification(user, purpose).await;
    json!({"verification": {"verification_id": vid, "sms_code": code}})
}

fn report_path(query_id: &str) -> String {
    format!("/v1/card-queries/{query_id}/report")
}

async fn delete_report(api: &Api, user: &TestUser, query_id: &str, body: &Value) -> Reply {
    api.call(
        "DELETE",
        &report_path(query_id),
        Some(&api.token(user)),
        &[],
        Some(body.to_string()),
    )
    .await
}
