//! The SMS channel throttled, over the local stack: the stack's SNS throttling proxy
//! (`infra/local/localstack/sns_throttle.py`, in front of the SNS emulator, where the
//! functions publish) answers `Throttling` for the test user's phone alone, so tests
//! running beside these are not throttled. Code requests then get the documented 503
//! `SMS_UNAVAILABLE` with `Retry-After` and leave the user's SMS limits as they were;
//! a "report ready" notice stays pending and goes out once after it clears.
//!
//! Run with `python3 infra/local/stack.py exec --with-api -- cargo test -p system-tests
//! --test api sms_channel::`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::json;
use shared::adapters::sns::PUBLISH_ATTEMPTS;
use testkit::api::{find_code, ready_sms, Api, Reply, TestUser, UserKind};
use testkit::journey::{one_notice, pass_the_deadline, wait_until};
use testkit::sms::{throttle, throttle_proxy, throttled_publishes};
use tokio::sync::Barrier;

/// The SMS fields of the user's state, as stored.
async fn sms_state(api: &Api, user: &TestUser) -> BTreeMap<String, AttributeValue> {
    let item = api
        .clients
        .dynamodb
        .get_item()
        .table_name(&api.tables.main)
        .key("pk", AttributeValue::S(format!("USER#{}", user.id)))
        .key("sk", AttributeValue::S("STATE".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .unwrap_or_default();
    item.into_iter()
        .filter(|(k, _)| ["last_sms_at", "sms_day", "sms_count"].contains(&k.as_str()))
        .collect()
}

async fn code_request(api: &Api, user: &TestUser) -> Reply {
    api.post_json(
        "/v1/verifications",
        &api.token(user),
        &json!({"purpose": "SUBMIT_QUERY"}),
    )
    .await
}

fn code_sms(texts: &[String]) -> usize {
    texts.iter().filter(|t| find_code(t).is_some()).count()
}

#[tokio::test]
async fn code_requests_while_sns_throttles_get_503_and_leave_the_limits_untouched() {
    let api = Arc::new(Api::get().await);
    let proxy = throttle_proxy();
    let user = Arc::new(api.new_user(UserKind::Eligible).await);
    // One code earlier today, long enough ago that the minute has passed.
    let (_, _) = api.verification(&user, "SUBMIT_QUERY").await;
    api.allow_next_sms(&user).await;
    let before = sms_state(&api, &user).await;
    assert_eq!(before["sms_count"], AttributeValue::N("1".into()));

    throttle(&proxy, &[&user.phone], 300).await.unwrap();
    let barrier = Arc::new(Barrier::new(20));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (api, user, barrier) = (api.clone(), user.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                code_request(&api, &user).await
            })
        })
        .collect();
    let mut unavailable = 0;
    for t in tasks {
        let reply = t.await.unwrap();
        match (reply.status, reply.code()) {
            (503, Some("SMS_UNAVAILABLE")) => {
                unavailable += 1;
                let header: u64 = reply.headers["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!((1..=5).contains(&header), "{reply:?}");
                assert_eq!(
                    reply.body.as_ref().unwrap()["error"]["retry_after_seconds"],
                    header
                );
            }
            // Sent while another request held the user's one-a-minute slot trying.
            (429, Some("TOO_MANY_REQUESTS")) => {}
            _ => panic!("expected 503 SMS_UNAVAILABLE or 429: {reply:?}"),
        }
    }
    assert!(unavailable >= 1);
    // The adapter retried each refused publish before giving up.
    let refused = throttled_publishes(&proxy, &user.phone).await.unwrap();
    assert!(
        refused >= u64::from(PUBLISH_ATTEMPTS) * unavailable,
        "{refused} throttled publishes for {unavailable} refusals"
    );
    assert_eq!(code_sms(&api.sms_to(&user.phone).await), 1, "nothing sent");
    assert_eq!(
        sms_state(&api, &user).await,
        before,
        "the limits as they were"
    );

    // Cleared: a code at once (neither the minute nor the day were spent), then the
    // minute counts again.
    throttle(&proxy, &[&user.phone], 0).await.unwrap();
    let reply = code_request(&api, &user).await;
    assert_eq!(reply.status, 201, "{reply:?}");
    assert_eq!(code_sms(&api.sms_to(&user.phone).await), 2);
    let after = sms_state(&api, &user).await;
    assert_eq!(after["sms_count"], AttributeValue::N("2".into()));
    let reply = code_request(&api, &user).await;
    assert_eq!(
        (reply.status, reply.code()),
        (429, Some("TOO_MANY_REQUESTS"))
    );
}

#[tokio::test]
async fn a_notice_throttled_stays_pending_and_goes_out_once_when_it_clears() {
    let api = Api::get().await;
    let proxy = throttle_proxy();
    let user = api.new_user(UserKind::Eligible).await;
    // The bank never answers: the report comes at the deadline, which the test moves.
    api.sim_behave(&user, "ICBC", json!({"mode": "never"}))
        .await;
    let accepted = api.submit_query(&user, &["ICBC"]).await;
    let query_id = accepted["query_id"].as_str().unwrap().to_owned();

    throttle(&proxy, &[&user.phone], 300).await.unwrap();
    pass_the_deadline(&api, &query_id).await;
    let record = api
        .wait_report(&user, &query_id, Duration::from_secs(90))
        .await;
    assert_eq!(record["report_status"], "READY", "{record}");
    // At least two tries of the notice (publication's and a sweep's), each retried by
    // the adapter, and none delivered.
    wait_until("two throttled notice attempts", || async {
        throttled_publishes(&proxy, &user.phone).await.unwrap() >= 2 * u64::from(PUBLISH_ATTEMPTS)
    })
    .await;
    assert_eq!(ready_sms(&api.sms_to(&user.phone).await), 0);

    throttle(&proxy, &[&user.phone], 0).await.unwrap();
    one_notice(&api, &user).await;
}

/// The proxy's feed of what moto accepted (`GET /_sms?from=N`, read by the load runs
/// instead of moto's whole model) holds exactly the SMS moto holds for a number, in
/// order, and reading on from `next` gives only what came after.
#[tokio::test]
async fn the_proxys_sms_feed_matches_what_moto_accepted_and_reads_on_from_next() {
    use testkit::sms::delivered_since;
    let api = Api::get().await;
    let proxy = throttle_proxy();
    let user = api.new_user(UserKind::Eligible).await;
    let (_, start) = delivered_since(&proxy, usize::MAX).await.unwrap();
    api.verification(&user, "SUBMIT_QUERY").await;
    api.allow_next_sms(&user).await;
    api.verification(&user, "SUBMIT_QUERY").await;
    let (new, next) = delivered_since(&proxy, start).await.unwrap();
    let mine: Vec<String> = new
        .iter()
        .filter(|m| m.phone_number == user.phone)
        .map(|m| m.message.clone())
        .collect();
    assert_eq!(mine.len(), 2, "{mine:?}");
    assert_eq!(mine, api.sms_to(&user.phone).await);
    assert!(next >= start + 2);
    let (after, again) = delivered_since(&proxy, next).await.unwrap();
    assert!(after.iter().all(|m| m.phone_number != user.phone));
    assert!(again >= next);
    let bad = reqwest::get(format!("{proxy}/_sms?from=x")).await.unwrap();
    assert_eq!(bad.status().as_u16(), 400);
}
