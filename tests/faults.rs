//! Faults end to end (issue #10): the simulator's failure modes against the real
//! functions, the event pump and the emulators (nothing faked in process). Each test
//! ends with the query finalized (by its deadline, moved into the past in the stored
//! items where a bank stays silent), exactly one "report ready" SMS, every app-facing
//! answer below 500, and each bank's status in the report as the fault implies.
//!
//! Also covered elsewhere: a bank that accepts and never calls back
//! (`pipeline::a_bank_that_never_answers_is_no_response_at_the_deadline`), a bank that
//! fails twice then answers (`pipeline::a_bank_failing_twice_is_retried_and_then_answers`).

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{json, Value};
use testkit::api::{bank_cards, ready_sms, report_cards, Api, UserKind};
use testkit::journey::{
    self, one_notice, pass_the_deadline, progress, statuses, view, wait_until, WAIT,
};

#[tokio::test]
async fn a_bank_that_times_out_then_answers_on_retry_is_responded() {
    let api = Api::get().await;
    let user = api.new_user(UserKind::Eligible).await;
    // Longer than the functions' bank timeout (5 s locally): the first inquiry times out.
    api.sim_behave(
        &user,
        "ABC",
        json!({"mode": "timeout", "timeout_ms": 20_000}),
    )
    .await;
    let accepted = api.submit_query(&user, &["ABC", "BOC"]).await;
    let query_id = accepted["query_id"].as_str().unwrap().to_owned();
    wait_until("the first ABC inquiry", || async {
        api.sim_inquiries(&user)
            .await
            .iter()
            .any(|i| i["bank_code"] == "ABC")
    })
    .await;
    // The bank recovers before the retry (2 s backoff after the 5 s timeout).
    api.sim_behave(&user, "ABC", json!({"mode": "immediate"}))
        .await;
    let record = api.wait_report(&user, &query_id, WAIT).await;
    assert_eq!(record["report_status"], "READY", "{record}");
    let attempts = api
        .sim_inquiries(&user)
        .await
        .iter()
        .filter(|i| i["bank_code"] == "ABC")
        .count();
    assert!(
        attempts >= 2,
        "ABC was asked again after the timeout: {attempts}"
    );
    let (report, status) = view(&api, &user, &query_id).await;
    assert_eq!(
        status,
        statuses(&[("ABC", "RESPONDED"), ("BOC", "RESPONDED")])
    );
    let truth = api.sim_truth(&user).await;
    assert_eq!(
        report_cards(&report),
        bank_cards(["ABC", "BOC"].iter().map(|b| (*b, &truth[*b])))
    );
    one_notice(&api, &user).await;
}

#[tokio::test]
async fn a_bank_that_answers_5xx_then_200_is_responded_after_one_retry() {
    let api = Api::get().await;
    let user = api.new_user(UserKind::Eligible).await;
    api.sim_behave(
        &user,
        "BOCOM",
        json!({"mode": "fail_then_answer", "failures_before_success": 1}),
    )
    .await;
    let accepted = api.submit_query(&user, &["BOCOM", "PSBC"]).await;
    let query_id = accepted["query_id"].as_str().unwrap().to_owned();
    let record = api.wait_report(&user, &query_id, WAIT).await;
    assert_eq!(record["report_status"], "READY", "{record}");
    let asked: Vec<u64> = api
        .sim_inquiries(&user)
        .await
        .iter()
        .filter(|i| i["bank_code"] == "BOCOM")
        .map(|i| i["status_returned"].as_u64().unwrap())
        .collect();
    assert_eq!(asked, vec![500, 200]);
    let (report, status) = view(&api, &user, &query_id).await;
    assert_eq!(
        status,
        statuses(&[("BOCOM", "RESPONDED"), ("PSBC", "RESPONDED")])
    );
    let truth = api.sim_truth(&user).await;
    assert_eq!(
        report_cards(&report),
        bank_cards(["BOCOM", "PSBC"].iter().map(|b| (*b, &truth[*b])))
    );
    one_notice(&api, &user).await;
}

#[tokio::test]
async fn garbage_bad_signatures_and_full_card_numbers_inline_fail_their_banks() {
    let api = Api::get().await;
    let user = api.new_user(UserKind::Eligible).await;
    api.sim_behave(&user, "HXB", json!({"mode": "malformed"}))
        .await;
    api.sim_behave(&user, "CGB", json!({"mode": "bad_signature"}))
        .await;
    api.sim_behave(&user, "PAB", json!({"mode": "leak_card_number"}))
        .await;
    let banks = ["HXB", "CGB", "PAB", "ICBC"];
    let accepted = api.submit_query(&user, &banks).await;
    let query_id = accepted["query_id"].as_str().unwrap().to_owned();
    let record = api.wait_report(&user, &query_id, WAIT).await;
    assert_eq!(record["report_status"], "READY", "{record}");
    let (report, status) = view(&api, &user, &query_id).await;
    assert_eq!(
        status,
        statuses(&[
            ("HXB", "FAILED"),
            ("CGB", "FAILED"),
            ("PAB", "FAILED"),
            ("ICBC", "RESPONDED")
        ])
    );
    // Only the honest bank's cards; nothing of the refused answers, each asked once
    // (a misbehaving bank is not retried).
    let truth = api.sim_truth(&user).await;
    assert_eq!(
        report_cards(&report),
        bank_cards([("ICBC", &truth["ICBC"])])
    );
    assert_eq!(api.sim_inquiries(&user).await.len(), 4);
    one_notice(&api, &user).await;
}

#[tokio::test]
async fn callbacks_with_garbage_bad_signatures_or_full_card_numbers_are_refused() {
    let api = Api::get().await;
    let user = api.new_user(UserKind::Eligible).await;
    for (bank, answer) in [
        ("CMB", "malformed"),
        ("CIB", "bad_signature"),
        ("CZB", "leak_card_number"),
    ] {
        api.sim_behave(
            &user,
            bank,
            json!({"mode": "callback", "callback_delay_ms": 100, "callback_answer": answer}),
        )
        .await;
    }
    let accepted = api.submit_query(&user, &["CMB", "CIB", "CZB", "BOC"]).await;
    let query_id = accepted["query_id"].as_str().unwrap().to_owned();
    // Our callback endpoint refuses each (a 4xx is final for the bank).
    wait_until("three refused callbacks", || async {
        api.sim_inquiries(&user)
            .await
            .iter()
            .filter(|i| i["callback"]["outcome"] == "refused")
            .count()
            == 3
    })
    .await;
    // A correctly signed answer refused for its content (a full card number) fails its
    // leg at once (decision 30); what cannot be tied to a leg (a body that is not JSON) or
    // is not the bank's (a bad signature) changes nothing and waits for the deadline.
    let (record, legs) = progress(&api, &user, &query_id).await;
    assert_eq!(record["report_status"], "PENDING", "{record}");
    assert_eq!(
        legs,
        statuses(&[
            ("CMB", "PENDING"),
            ("CIB", "PENDING"),
            ("CZB", "FAILED"),
            ("BOC", "RESPONDED")
        ])
    );
    pass_the_deadline(&api, &query_id).await;
    let record = api.wait_report(&user, &query_id, WAIT).await;
    assert_eq!(record["report_status"], "READY", "{record}");
    let (report, status) = view(&api, &user, &query_id).await;
    assert_eq!(
        status,
        statuses(&[
            ("CMB", "NO_RESPONSE"),
            ("CIB", "NO_RESPONSE"),
            ("CZB", "FAILED"),
            ("BOC", "RESPONDED")
        ])
    );
    let truth = api.sim_truth(&user).await;
    assert_eq!(report_cards(&report), bank_cards([("BOC", &truth["BOC"])]));
    one_notice(&api, &user).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ready_record_redelivered_while_the_first_aggregation_runs_makes_one_report_and_one_sms()
{
    let api = Api::get().await;
    let user = api.new_user(UserKind::Eligible).await;
    let accepted = api.submit_query(&user, &["CEB", "CITIC"]).await;
    let query_id = accepted["query_id"].as_str().unwrap().to_owned();
    let record = journey::ready_record(&query_id);
    // As soon as both banks have answered (the pump is delivering the same record),
    // four deliveries at once: four aggregations of one query run side by side.
    wait_until("both banks settled", || async {
        progress(&api, &user, &query_id)
            .await
            .1
            .values()
            .all(|s| s != "PENDING")
    })
    .await;
    let url = format!(
        "{}/2015-03-31/functions/aggregate-report/invocations",
        api.base
    );
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let (http, url, record) = (api.http.clone(), url.clone(), record.clone());
            tokio::spawn(async move { http.post(url).json(&record).send().await })
        })
        .collect();
    for c in calls {
        let resp = c.await.unwrap().expect("the invoke API answers");
        assert!(resp.status().is_success(), "{}", resp.status());
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["batchItemFailures"], json!([]), "{body}");
    }
    let done = api.wait_report(&user, &query_id, WAIT).await;
    assert_eq!(done["report_status"], "READY", "{done}");
    let stored = api
        .clients
        .dynamodb
        .query()
        .table_name(&api.tables.main)
        .key_condition_expression("pk = :pk AND sk = :sk")
        .expression_attribute_values(":pk", AttributeValue::S(format!("QUERY#{query_id}")))
        .expression_attribute_values(":sk", AttributeValue::S("REPORT".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    assert_eq!(stored.count(), 1);
    let (_, status) = view(&api, &user, &query_id).await;
    assert_eq!(
        status,
        statuses(&[("CEB", "RESPONDED"), ("CITIC", "RESPONDED")])
    );
    one_notice(&api, &user).await;
}

/// On a private stack (started `--fault-injection`): aggregate-report killed (a process
/// abort compiled only with `shared/fault-injection`) at its two dangerous points, and
/// the SNS emulator frozen while a report is published.
///
/// 1. Between storing the report and claiming the notice: the report is READY at once;
///    the invocation never answers, so the pump gives up at twice the function's
///    Timeout and delivers the record again (or the sweeper's NOTIFY entry comes first):
///    the notice goes out once, late.
/// 2. Between SNS accepting the notice and recording `notified_at`: the retry finds the
///    claim's 2-minute lease held and sends nothing; once the lease has lapsed (moved
///    back here instead of waiting) the sweeper sends it again. Two notices: the one
///    duplicate window decisions.md (6) names, and no third once it is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aggregate_report_killed_after_the_report_or_after_the_sms_and_sns_down_then_back() {
    let stack = tokio::task::spawn_blocking(|| {
        testkit::load::PrivateStack::start_with(&["--fault-injection"])
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("{e}"));
    let api = stack.api().unwrap();
    let faults = stack.fault_dir.clone().expect("a fault-injection stack");
    let arm = |point: &str| std::fs::write(faults.join(point), b"").unwrap();
    let armed = |point: &str| faults.join(point).exists();
    let long = Duration::from_secs(240);

    // 1. Killed after the report was stored.
    let user = api.new_user(UserKind::Eligible).await;
    arm("aggregate.after_publish");
    let accepted = api.submit_query(&user, &["ICBC"]).await;
    let query_id = accepted["query_id"].as_str().unwrap().to_owned();
    let record = api.wait_report(&user, &query_id, WAIT).await;
    assert_eq!(record["report_status"], "READY", "{record}");
    wait_until("the instance to die at the point", || async {
        !armed("aggregate.after_publish")
    })
    .await;
    let start = Instant::now();
    while ready_sms(&api.sms_to(&user.phone).await) == 0 {
        assert!(start.elapsed() < long, "the notice never went out");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    one_notice(&api, &user).await;
    let (_, status) = view(&api, &user, &query_id).await;
    assert_eq!(status, statuses(&[("ICBC", "RESPONDED")]));
    // The retried notice step cleared the bank's raw answer the dead instance left.
    let leg = api
        .clients
        .dynamodb
        .get_item()
        .table_name(&api.tables.main)
        .key("pk", AttributeValue::S(format!("QUERY#{query_id}")))
        .key("sk", AttributeValue::S("LEG#ICBC".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .expect("the leg stays");
    assert!(
        !leg.contains_key("sealed_cards") && !leg.contains_key("answer_digest"),
        "{:?}",
        leg.keys().collect::<Vec<_>>()
    );

    // 2. Killed after the SMS, before it was recorded.
    let user = api.new_user(UserKind::Eligible).await;
    arm("aggregate.after_sms");
    let accepted = api.submit_query(&user, &["BOC"]).await;
    let query_id = accepted["query_id"].as_str().unwrap().to_owned();
    wait_until("the first notice", || async {
        ready_sms(&api.sms_to(&user.phone).await) == 1
    })
    .await;
    wait_until("the instance to die at the point", || async {
        !armed("aggregate.after_sms")
    })
    .await;
    // The lease lapses: two minutes pass for the claim.
    let lapsed =
        shared::model::timestamp::format(chrono::Utc::now() - chrono::TimeDelta::minutes(3));
    api.clients
        .dynamodb
        .update_item()
        .table_name(&api.tables.main)
        .key("pk", AttributeValue::S(format!("QUERY#{query_id}")))
        .key("sk", AttributeValue::S("QUERY".into()))
        .update_expression("SET notice_claimed_at = :t")
        .condition_expression(
            "attribute_exists(notice_claimed_at) AND attribute_not_exists(notified_at)",
        )
        .expression_attribute_values(":t", AttributeValue::S(lapsed))
        .send()
        .await
        .expect("the claim is still open: nothing recorded the first notice");
    let start = Instant::now();
    while ready_sms(&api.sms_to(&user.phone).await) < 2 {
        assert!(
            start.elapsed() < long,
            "the unrecorded notice was never resent"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(ready_sms(&api.sms_to(&user.phone).await), 2);
    let item = api
        .clients
        .dynamodb
        .get_item()
        .table_name(&api.tables.main)
        .key("pk", AttributeValue::S(format!("QUERY#{query_id}")))
        .key("sk", AttributeValue::S("QUERY".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    assert!(
        item.item.unwrap().contains_key("notified_at"),
        "the resent notice is recorded"
    );
    let (_, status) = view(&api, &user, &query_id).await;
    assert_eq!(status, statuses(&[("BOC", "RESPONDED")]));

    // 3. SNS stops answering (frozen with SIGSTOP) while the report is
    //    published, then recovers: the report is READY meanwhile, the notice goes out
    //    once, later (the held send completes, or the claim lapses and the sweeper
    //    resends; the lapse is moved forward here rather than waited for).
    let user = api.new_user(UserKind::Eligible).await;
    api.sim_behave(
        &user,
        "CMB",
        json!({"mode": "callback", "callback_delay_ms": 4000}),
    )
    .await;
    let accepted = api.submit_query(&user, &["CMB"]).await;
    let query_id = accepted["query_id"].as_str().unwrap().to_owned();
    // The functions reach SNS through the throttling proxy in front of moto; freezing
    // the proxy freezes SNS as they see it, while moto (which serves SQS too, so the
    // inquiry still goes out) keeps running.
    let sns = *stack
        .target
        .pids
        .get("sns_throttle")
        .expect("the SNS proxy's pid");
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &sns.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {sns}");
    };
    signal("-STOP");
    let record = api.wait_report(&user, &query_id, WAIT).await;
    assert_eq!(record["report_status"], "READY", "{record}");
    tokio::time::sleep(Duration::from_secs(10)).await;
    signal("-CONT");
    let start = Instant::now();
    let mut lapsed = false;
    while ready_sms(&api.sms_to(&user.phone).await) == 0 {
        assert!(
            start.elapsed() < long,
            "the notice never went out after SNS recovered"
        );
        if !lapsed && start.elapsed() > Duration::from_secs(15) {
            let past = shared::model::timestamp::format(
                chrono::Utc::now() - chrono::TimeDelta::minutes(3),
            );
            let _ = api
                .clients
                .dynamodb
                .update_item()
                .table_name(&api.tables.main)
                .key("pk", AttributeValue::S(format!("QUERY#{query_id}")))
                .key("sk", AttributeValue::S("QUERY".into()))
                .update_expression("SET notice_claimed_at = :t")
                .condition_expression(
                    "attribute_exists(notice_claimed_at) AND attribute_not_exists(notified_at)",
                )
                .expression_attribute_values(":t", AttributeValue::S(past))
                .send()
                .await;
            lapsed = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    one_notice(&api, &user).await;
    let (_, status) = view(&api, &user, &query_id).await;
    assert_eq!(status, statuses(&[("CMB", "RESPONDED")]));
}
