//! One query end to end, as deployed locally: HTTP through `cargo lambda watch`, the
//! DynamoDB stream through the event pump, the 16 simulated banks, the sweeper on its
//! schedule, SMS through the SNS emulator.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{json, Value};
use shared::model::purpose::Purpose;
use testkit::api::{bank_cards, report_cards, Api, TestUser, UserKind};
use testkit::journey::{self, past, ready_sms_of, set_times, ALL_BANKS};

const REPORT_WAIT: Duration = testkit::api::PIPELINE_WAIT;

async fn ready_report(api: &Api, user: &TestUser, banks: &[&str]) -> (String, Value) {
    let accepted = api.submit_query(user, banks).await;
    let query_id = accepted["query_id"].as_str().unwrap().to_owned();
    let record = api.wait_report(user, &query_id, REPORT_WAIT).await;
    assert_eq!(record["report_status"], "READY", "{record}");
    api.allow_next_sms(user).await;
    let reply = api.view_report(user, &query_id).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    (query_id, reply.body.unwrap())
}

#[tokio::test]
async fn sixteen_banks_at_once_and_by_callback_report_the_ground_truth_with_one_sms() {
    let api = Api::get().await;
    let user = api.new_user(UserKind::Eligible).await;
    for bank in ["CMB", "CCB", "PAB", "CIB", "CZB", "HXB"] {
        api.sim_behave(
            &user,
            bank,
            json!({"mode": "callback", "callback_delay_ms": 150}),
        )
        .await;
    }
    let (query_id, report) = ready_report(&api, &user, &ALL_BANKS).await;
    let truth = api.sim_truth(&user).await;
    assert_eq!(
        report_cards(&report),
        bank_cards(ALL_BANKS.iter().map(|b| (*b, &truth[*b])))
    );
    let banks = report["summary"]["banks"].as_array().unwrap();
    assert_eq!(banks.len(), 16);
    assert!(banks.iter().all(|b| b["status"] == "RESPONDED"), "{report}");
    let total: usize = ALL_BANKS
        .iter()
        .map(|b| truth[*b].as_array().unwrap().len())
        .sum();
    assert_eq!(report["summary"]["total_cards"], total);
    assert_eq!(report["query_id"], query_id);
    assert!(report["notices"].as_array().unwrap().len() >= 5);
    // Exactly one "report ready" SMS, to the registered phone, without a link.
    assert_eq!(ready_sms_of(&api, &user).await, 1);
    assert!(api
        .sms_to(&user.phone)
        .await
        .iter()
        .all(|t| !t.contains("http")));
    // Each bank was asked once.
    assert_eq!(api.sim_inquiries(&user).await.len(), 16);
}

#[tokio::test]
async fn every_view_needs_a_fresh_verification() {
    let api = Api::get().await;
    let user = api.new_user(UserKind::Eligible).await;
    let (query_id, _) = ready_report(&api, &user, &["ICBC", "ABC"]).await;
    let path = format!("/v1/card-queries/{query_id}/report");
    let token = api.token(&user);

    api.allow_next_sms(&user).await;
    let (vid, code) = api.verification(&user, "VIEW_REPORT").await;
    let wrong = format!("{:06}", (code.parse::<u32>().unwrap() + 1) % 1_000_000);
    let reply = api
        .post_json(
            &path,
            &token,
            &json!({"verification": {"verification_id": vid, "sms_code": wrong}}),
        )
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (422, Some("VERIFICATION_FAILED"))
    );
    assert!(
        reply.body.as_ref().unwrap().get("cards").is_none(),
        "nothing shown"
    );
    let ok = api
        .post_json(
            &path,
            &token,
            &json!({"verification": {"verification_id": vid, "sms_code": code}}),
        )
        .await;
    assert_eq!(ok.status, 200);
    let again = api
        .post_json(
            &path,
            &token,
            &json!({"verification": {"verification_id": vid, "sms_code": code}}),
        )
        .await;
    assert_eq!(
        (again.status, again.code()),
        (422, Some("VERIFICATION_FAILED")),
        "a code serves one view"
    );
    // A face token works once too.
    let face = api.face_token(&user, Purpose::ViewReport);
    let by_face = api
        .post_json(&path, &token, &json!({"face_token": face}))
        .await;
    assert_eq!(by_face.status, 200);
    let reused = api
        .post_json(&path, &token, &json!({"face_token": face}))
        .await;
    assert_eq!(
        (reused.status, reused.code()),
        (422, Some("FACE_VERIFICATION_FAILED"))
    );
    // The view is recorded on the query record.
    let record = api
        .get_json(&format!("/v1/card-queries/{query_id}"), &token)
        .await;
    assert!(record.body.unwrap()["last_viewed_at"].is_string());
    // Another user sees nothing of it: 404, not 403.
    let other = api.new_user(UserKind::Eligible).await;
    let reply = api
        .get_json(&format!("/v1/card-queries/{query_id}"), &api.token(&other))
        .await;
    assert_eq!((reply.status, reply.code()), (404, Some("NOT_FOUND")));
}

#[tokio::test]
async fn an_expired_report_is_refused_with_its_record_then_deleted_by_the_sweeper() {
    let api = Api::get().await;
    let user = api.new_user(UserKind::Eligible).await;
    let (query_id, _) = ready_report(&api, &user, &["BOC"]).await;
    // Seven days pass: move the stored times back.
    let pk = format!("QUERY#{query_id}");
    let expired_at = past(chrono::TimeDelta::seconds(1));
    set_times(
        &api,
        &pk,
        "QUERY",
        &[("report_expires_at", expired_at.clone())],
    )
    .await;
    let token = api.token(&user);
    api.allow_next_sms(&user).await;
    let reply = api.view_report(&user, &query_id).await;
    assert_eq!((reply.status, reply.code()), (410, Some("REPORT_EXPIRED")));
    assert_eq!(
        reply.body.as_ref().unwrap()["query"]["report_status"],
        "EXPIRED"
    );
    // The sweeper deletes the report (its due entry moved back too).
    set_times(
        &api,
        &pk,
        "REPORT",
        &[("expires_at", expired_at.clone()), ("due_at", expired_at)],
    )
    .await;
    let start = std::time::Instant::now();
    loop {
        let item = api
            .clients
            .dynamodb
            .get_item()
            .table_name(&api.tables.main)
            .key("pk", AttributeValue::S(pk.clone()))
            .key("sk", AttributeValue::S("REPORT".into()))
            .consistent_read(true)
            .send()
            .await
            .unwrap();
        if item.item.is_none() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the sweeper did not delete the report"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let list = api.get_json("/v1/card-queries", &token).await;
    let record = &list.body.unwrap()["queries"][0];
    assert_eq!(record["query_id"], query_id);
    assert_eq!(record["report_status"], "EXPIRED");
}

#[tokio::test]
async fn a_new_query_right_after_the_report_is_refused_until_seven_days_later() {
    let api = Api::get().await;
    let user = api.new_user(UserKind::Eligible).await;
    let (_, report) = ready_report(&api, &user, &["CCB"]).await;
    api.allow_next_sms(&user).await;
    let (vid, code) = api.verification(&user, "SUBMIT_QUERY").await;
    let body = json!({
        "banks": ["CCB"],
        "consent": {"agreement_version": shared::config::ServiceConfig::parse(shared::config::DEFAULT_CONFIG).unwrap().agreement_version, "accepted": true},
        "verification": {"verification_id": vid, "sms_code": code},
        "face_token": api.face_token(&user, Purpose::SubmitQuery),
        "payment_password": testkit::seed::PAYMENT_PASSWORD,
    });
    let reply = api
        .call(
            "POST",
            "/v1/card-queries",
            Some(&api.token(&user)),
            &[("idempotency-key", "again")],
            Some(body.to_string()),
        )
        .await;
    assert_eq!((reply.status, reply.code()), (429, Some("COOLDOWN_ACTIVE")));
    let generated =
        shared::model::timestamp::parse(report["generated_at"].as_str().unwrap()).unwrap();
    let next = reply.body.unwrap()["error"]["next_allowed_at"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        shared::model::timestamp::parse(&next).unwrap(),
        generated + chrono::TimeDelta::days(7)
    );
}

#[tokio::test]
async fn a_bank_that_never_answers_is_no_response_at_the_deadline() {
    let api = Api::get().await;
    let user = api.new_user(UserKind::Eligible).await;
    api.sim_behave(&user, "CEB", json!({"mode": "never"})).await;
    let accepted = api.submit_query(&user, &["ICBC", "CEB"]).await;
    let query_id = accepted["query_id"].as_str().unwrap().to_owned();
    // ICBC answers; CEB accepted and went silent.
    let start = std::time::Instant::now();
    loop {
        let d = api
            .get_json(&format!("/v1/card-queries/{query_id}"), &api.token(&user))
            .await
            .body
            .unwrap();
        let p = d["progress"].as_array().unwrap().clone();
        if p.iter()
            .any(|b| b["bank_code"] == "ICBC" && b["status"] == "RESPONDED")
        {
            assert_eq!(d["report_status"], "PENDING");
            break;
        }
        assert!(start.elapsed() < REPORT_WAIT);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // 24 hours pass: the deadline (and its due entry) moves into the past.
    let due = past(chrono::TimeDelta::seconds(1));
    set_times(
        &api,
        &format!("QUERY#{query_id}"),
        "QUERY",
        &[("collect_until", due.clone()), ("due_at", due)],
    )
    .await;
    let record = api.wait_report(&user, &query_id, REPORT_WAIT).await;
    assert_eq!(record["report_status"], "READY");
    let statuses: BTreeMap<String, String> = record["progress"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["bank_code"].as_str().unwrap().to_owned(),
                b["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(statuses["ICBC"], "RESPONDED");
    assert_eq!(statuses["CEB"], "NO_RESPONSE");
    api.allow_next_sms(&user).await;
    let report = api.view_report(&user, &query_id).await.body.unwrap();
    let ceb = report["summary"]["banks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["bank_code"] == "CEB")
        .unwrap()
        .clone();
    assert_eq!(ceb["status"], "NO_RESPONSE");
    assert_eq!(ready_sms_of(&api, &user).await, 1);
}

#[tokio::test]
async fn a_bank_failing_twice_is_retried_and_then_answers() {
    let api = Api::get().await;
    let user = api.new_user(UserKind::Eligible).await;
    api.sim_behave(
        &user,
        "SPDB",
        json!({"mode": "fail_then_answer", "failures_before_success": 2}),
    )
    .await;
    let (_, report) = ready_report(&api, &user, &["SPDB", "CITIC"]).await;
    let spdb = report["summary"]["banks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["bank_code"] == "SPDB")
        .unwrap()
        .clone();
    assert_eq!(spdb["status"], "RESPONDED");
    let attempts = api
        .sim_inquiries(&user)
        .await
        .into_iter()
        .filter(|i| i["bank_code"] == "SPDB")
        .count();
    assert_eq!(attempts, 3);
}

/// A bank answering with a redirect is not followed (the inquiry holds the person's name
/// and ID number): asked once, its leg fails, the report says so.
#[tokio::test]
async fn a_redirecting_bank_is_not_followed_and_fails() {
    let api = Api::get().await;
    let user = api.new_user(UserKind::Eligible).await;
    api.sim_behave(&user, "CGB", json!({"mode": "redirect"}))
        .await;
    let (_, report) = ready_report(&api, &user, &["CGB", "CITIC"]).await;
    let status = |code: &str| {
        report["summary"]["banks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["bank_code"] == code)
            .unwrap()["status"]
            .clone()
    };
    assert_eq!(status("CGB"), "FAILED", "{report}");
    assert_eq!(status("CITIC"), "RESPONDED", "{report}");
    let asked: Vec<Value> = api
        .sim_inquiries(&user)
        .await
        .into_iter()
        .filter(|i| i["bank_code"] == "CGB")
        .collect();
    assert_eq!(asked.len(), 1, "the redirect was followed: {asked:?}");
    assert_eq!(asked[0]["status_returned"], 307);
}

#[tokio::test]
async fn the_same_ready_record_delivered_twice_makes_one_report_and_one_sms() {
    let api = Api::get().await;
    let user = api.new_user(UserKind::Eligible).await;
    let (query_id, _) = ready_report(&api, &user, &["HXB"]).await;
    // Deliver the "ready" stream record again, twice, straight to the function.
    let record = journey::ready_record(&query_id);
    for _ in 0..2 {
        let resp = api
            .http
            .post(format!(
                "{}/2015-03-31/functions/aggregate-report/invocations",
                api.base
            ))
            .json(&record)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["batchItemFailures"], json!([]), "{body}");
    }
    assert_eq!(ready_sms_of(&api, &user).await, 1);
    let report = api
        .clients
        .dynamodb
        .query()
        .table_name(&api.tables.main)
        .key_condition_expression("pk = :pk AND sk = :sk")
        .expression_attribute_values(":pk", AttributeValue::S(format!("QUERY#{query_id}")))
        .expression_attribute_values(":sk", AttributeValue::S("REPORT".into()))
        .send()
        .await
        .unwrap();
    assert_eq!(report.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_users_at_once_get_fifty_reports_and_fifty_sms() {
    let api = std::sync::Arc::new(Api::get().await);
    let mut users = Vec::new();
    for _ in 0..50 {
        users.push(api.new_user(UserKind::Eligible).await);
    }
    let tasks: Vec<_> = users
        .iter()
        .cloned()
        .map(|user| {
            let api = api.clone();
            tokio::spawn(async move {
                let accepted = api
                    .submit_query(&user, &["ICBC", "CMB", "CCB", "BOC"])
                    .await;
                let id = accepted["query_id"].as_str().unwrap().to_owned();
                let record = api.wait_report(&user, &id, REPORT_WAIT).await;
                (user, id, record)
            })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        let (user, id, record) = t.await.unwrap();
        assert_eq!(record["report_status"], "READY", "{record}");
        assert_eq!(
            ready_sms_of(&api, &user).await,
            1,
            "one SMS for {}",
            user.id
        );
        ids.push(id);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 50);
}

/// Every text form of a stream record or item, for searching: its attributes as DynamoDB
/// returns them.
fn text_of<T: std::fmt::Debug>(x: &T) -> String {
    format!("{x:?}")
}

/// The truth's cards as (first4, last4).
fn truth_pairs(truth: &Value) -> Vec<(String, String)> {
    truth
        .as_object()
        .unwrap()
        .values()
        .flat_map(|cards| cards.as_array().unwrap().iter())
        .map(|c| {
            (
                c["first4"].as_str().unwrap().to_owned(),
                c["last4"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Where a card of the truth is readable in `text`: its first and last four digits both
/// there, or our own field names for them.
fn clear_cards(text: &str, pairs: &[(String, String)]) -> Vec<String> {
    let mut found: Vec<String> = pairs
        .iter()
        .filter(|(f, l)| text.contains(f.as_str()) && text.contains(l.as_str()))
        .map(|(f, l)| format!("{f}…{l}"))
        .collect();
    for field in ["first4", "last4", "masked_number", "**** ****"] {
        if text.contains(field) {
            found.push(field.to_owned());
        }
    }
    found
}

#[tokio::test]
async fn no_stream_record_or_item_of_a_query_holds_a_card_in_clear() {
    let api = Api::get().await;
    let user = api.new_user(UserKind::Eligible).await;
    // Both ways a bank answers: at once (fan-out settles) and by callback.
    for bank in ["CMB", "CCB"] {
        api.sim_behave(
            &user,
            bank,
            json!({"mode": "callback", "callback_delay_ms": 100}),
        )
        .await;
    }
    let banks = ["ICBC", "ABC", "BOC", "CMB", "CCB"];
    let (query_id, report) = ready_report(&api, &user, &banks).await;
    let truth = api.sim_truth(&user).await;
    let pairs: Vec<(String, String)> = truth_pairs(&json!(banks
        .iter()
        .map(|b| (b.to_string(), truth[*b].clone()))
        .collect::<serde_json::Map<_, _>>()));
    assert!(!pairs.is_empty(), "the person holds cards at these banks");
    // The view path does read them.
    let shown = clear_cards(&report.to_string(), &pairs);
    assert!(shown.len() > pairs.len(), "{report}");

    let pk = format!("QUERY#{query_id}");
    let records = testkit::streams::records(&api.clients, &api.tables.main).await;
    let ours: Vec<_> = records
        .iter()
        .filter(|r| {
            r.dynamodb()
                .and_then(|d| d.keys())
                .and_then(|k| k.get("pk"))
                .is_some_and(|v| v.as_s().is_ok_and(|s| *s == pk))
        })
        .collect();
    // Query, consent and legs written, every leg settled, the report published.
    let (query, consent, report_item) = (1, 1, 1);
    let at_least = query + consent + 2 * banks.len() + report_item;
    assert!(ours.len() >= at_least, "{} records", ours.len());
    for record in &ours {
        let text = text_of(record.dynamodb().unwrap());
        let clear = clear_cards(&text, &pairs);
        assert!(clear.is_empty(), "readable in a stream record: {clear:?}");
    }
    let items = api
        .clients
        .dynamodb
        .query()
        .table_name(&api.tables.main)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", AttributeValue::S(pk.clone()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default();
    assert!(items
        .iter()
        .any(|i| i.get("sk") == Some(&AttributeValue::S("REPORT".into()))));
    for item in &items {
        let clear = clear_cards(&text_of(item), &pairs);
        assert!(
            clear.is_empty(),
            "readable in {:?}: {clear:?}",
            item.get("sk")
        );
    }
}
