//! The bank protocol as spoken for real: the inquiries our fan-out sends to the
//! simulated banks, their answers, their callbacks and our callback endpoint's replies
//! all match `functions/bank-protocol.yaml`.

use std::collections::BTreeSet;

use serde_json::{json, Value};
use testkit::api::{Api, UserKind};
use testkit::openapi::OpenApi;

/// The bank-side path of the protocol: `/banks/{code}/card-inquiries` is a bank
/// endpoint (`/banks/{code}`) followed by the protocol's `/card-inquiries`.
fn protocol_path(path: &str) -> String {
    match path.strip_prefix("/banks/") {
        Some(rest) => rest
            .split_once('/')
            .map(|(_, p)| format!("/{p}"))
            .unwrap_or_default(),
        None => path.to_owned(),
    }
}

fn json_of(text: &str) -> Option<Value> {
    (!text.is_empty()).then(|| serde_json::from_str(text).expect("a JSON body"))
}

#[tokio::test]
async fn fan_out_inquiries_answers_and_callbacks_match_the_bank_protocol() {
    let api = Api::get().await;
    let user = api.new_user(UserKind::Eligible).await;
    api.sim_behave(&user, "ICBC", json!({"record_traffic": true}))
        .await;
    api.sim_behave(
        &user,
        "CMB",
        json!({"mode": "callback", "callback_delay_ms": 100, "record_traffic": true}),
    )
    .await;
    let accepted = api.submit_query(&user, &["ICBC", "CMB"]).await;
    let query_id = accepted["query_id"].as_str().unwrap().to_owned();
    let record = api
        .wait_report(&user, &query_id, testkit::api::PIPELINE_WAIT)
        .await;
    assert_eq!(record["report_status"], "READY", "{record}");

    let spec = OpenApi::bank_protocol();
    let mut seen = BTreeSet::new();
    for e in api.sim_traffic(&user).await {
        let kind = e["kind"].as_str().unwrap();
        let path = protocol_path(e["path"].as_str().unwrap());
        let request = json_of(e["request_body"].as_str().unwrap()).expect("a request body");
        assert_eq!(request["query_id"], query_id.as_str(), "{e}");
        spec.check_request_body("POST", &path, &request)
            .unwrap_or_else(|err| panic!("{kind} request: {err}"));
        for h in ["x-bank-code", "x-timestamp", "x-nonce", "x-signature"] {
            assert!(e["request_headers"].get(h).is_some(), "{kind}: {h} in {e}");
        }
        let status = e["status"].as_u64().expect("answered") as u16;
        let body = json_of(e["response_body"].as_str().unwrap());
        spec.check_response("POST", &path, status, body.as_ref())
            .unwrap_or_else(|err| panic!("{kind} {status} response: {err}"));
        seen.insert(format!(
            "{kind} {} {status}",
            e["bank_code"].as_str().unwrap()
        ));
    }
    let expected: BTreeSet<String> = ["inquiry ICBC 200", "inquiry CMB 202", "callback CMB 204"]
        .map(String::from)
        .into();
    assert_eq!(seen, expected);
}
