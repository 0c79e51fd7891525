//! "This card is not mine" end to end (decision 157): `POST /v1/card-queries/{id}/disputes`
//! after a fresh DISPUTE_CARD step-up sends a signed dispute to the card's bank (the
//! simulator) with the card's `card_ref`; the app sees it ACKNOWLEDGED with the bank's
//! case and service phone; it stays after the report is deleted; one dispute per card,
//! also for 20 concurrent requests; every bad input is a 4xx with a stable code that
//! changes nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shared::model::purpose::Purpose;
use testkit::api::{Api, Reply, TestUser, UserKind};
use tokio::sync::Barrier;

use super::{code_body, delete_report, ready_query};

const BANKS: [&str; 6] = ["ICBC", "CCB", "ABC", "BOC", "CMB", "BOCOM"];

fn disputes_path(query_id: &str) -> String {
    format!("/v1/card-queries/{query_id}/disputes")
}

/// A new user and one of [`BANKS`] where the simulator gives them cards.
async fn user_with_cards(api: &Api) -> (TestUser, String) {
    loop {
        let user = api.new_user(UserKind::Eligible).await;
        let truth = api.sim_truth(&user).await;
        let with_cards = BANKS
            .iter()
            .find(|b| truth[**b].as_array().is_some_and(|cards| !cards.is_empty()));
        if let Some(bank) = with_cards {
            return (user, (*bank).to_owned());
        }
    }
}

async fn dispute(api: &Api, user: &TestUser, query_id: &str, body: &Value) -> Reply {
    api.post_json(&disputes_path(query_id), &api.token(user), body)
        .await
}

fn face_dispute(api: &Api, user: &TestUser, card_id: &str) -> Value {
    json!({"card_id": card_id, "face_token": api.face_token(user, Purpose::DisputeCard)})
}

async fn listed(api: &Api, user: &TestUser, query_id: &str) -> Vec<Value> {
    let reply = api
        .get_json(&disputes_path(query_id), &api.token(user))
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body.unwrap()["disputes"].as_array().unwrap().clone()
}

/// The report's cards, as the app sees them after a step-up.
async fn report_cards(api: &Api, user: &TestUser, query_id: &str) -> Vec<Value> {
    api.allow_next_sms(user).await;
    let reply = api.view_report(user, query_id).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body.unwrap()["cards"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_disputed_card_reaches_its_bank_with_its_ref_is_acknowledged_and_outlives_the_report() {
    let api = Api::get().await;
    let (user, bank) = user_with_cards(&api).await;
    api.sim_behave(&user, &bank, json!({"record_traffic": true}))
        .await;
    let query_id = ready_query(&api, &user, &[bank.as_str()]).await;
    let cards = report_cards(&api, &user, &query_id).await;
    let card = cards[0].clone();
    assert_eq!(card["card_id"], format!("{bank}-1"), "{card}");
    assert_eq!(card["disputable"], true, "{card}");

    let reply = dispute(
        &api,
        &user,
        &query_id,
        &face_dispute(&api, &user, &format!("{bank}-1")),
    )
    .await;
    assert_eq!(reply.status, 201, "{reply:?}");
    let created = reply.body.unwrap();
    assert_eq!(created["status"], "SENT");
    assert_eq!(created["bank_code"], bank.as_str());
    let dispute_id = created["dispute_id"].as_str().unwrap().to_owned();
    let masked = card["masked_number"].as_str().unwrap();
    assert_eq!(created["card"]["first4"], &masked[..4]);
    assert_eq!(created["card"]["last4"], &masked[15..]);

    // The app follows its status until the bank acknowledges it (the sweeper queues it
    // within a few seconds locally, bank-inquiry sends it).
    let started = Instant::now();
    let acknowledged = loop {
        let list = listed(&api, &user, &query_id).await;
        assert_eq!(list.len(), 1, "{list:?}");
        if list[0]["status"] == "ACKNOWLEDGED" {
            break list[0].clone();
        }
        assert_eq!(list[0]["status"], "SENT", "{list:?}");
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not acknowledged: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(acknowledged["dispute_id"], dispute_id.as_str());
    let case_id = acknowledged["case_id"].as_str().unwrap().to_owned();
    assert!(
        case_id.starts_with(&format!("{bank}-CASE-")),
        "{acknowledged}"
    );
    let banks = api
        .get_json("/v1/banks", &api.token(&user))
        .await
        .body
        .unwrap();
    let phone = banks["banks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["code"] == bank.as_str())
        .unwrap()["service_phone"]
        .clone();
    assert_eq!(acknowledged["service_phone"], phone);
    assert!(acknowledged["acknowledged_at"].is_string());

    // The simulator got it once, with the ref it gave for that very card.
    let url = format!("{}/_admin/disputes/{}", api.sim, user.id_number);
    let seen: Vec<Value> = api
        .http
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["dispute_id"], dispute_id.as_str());
    assert_eq!(seen[0]["query_id"], query_id.as_str());
    assert_eq!(seen[0]["case_id"], case_id.as_str());
    let answer = api
        .sim_traffic(&user)
        .await
        .into_iter()
        .find(|e| e["kind"] == "inquiry")
        .expect("the inquiry's traffic");
    let answer: Value = serde_json::from_str(answer["response_body"].as_str().unwrap()).unwrap();
    let answered = answer["cards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            c["first4"] == masked[..4] && c["last4"] == masked[15..] && c["kind"] == card["kind"]
        })
        .expect("the disputed card in the bank's answer")
        .clone();
    assert_eq!(seen[0]["card_ref"], answered["card_ref"]);
    assert_eq!(seen[0]["inquiry_id"], answer["inquiry_id"]);

    // Again for the same card: the same dispute (200), nothing sent again.
    let reply = dispute(
        &api,
        &user,
        &query_id,
        &face_dispute(&api, &user, &format!("{bank}-1")),
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body.unwrap()["dispute_id"], dispute_id.as_str());

    // The report deleted, the dispute stays, with its case.
    let body = json!({"face_token": api.face_token(&user, Purpose::DeleteReport)});
    assert_eq!(
        delete_report(&api, &user, &query_id, &body).await.status,
        204
    );
    let list = listed(&api, &user, &query_id).await;
    assert_eq!(list, vec![acknowledged]);
    let reply = dispute(
        &api,
        &user,
        &query_id,
        &face_dispute(&api, &user, &format!("{bank}-1")),
    )
    .await;
    assert_eq!((reply.status, reply.code()), (410, Some("REPORT_DELETED")));
}

#[tokio::test]
async fn twenty_concurrent_disputes_of_one_card_make_one() {
    let api = Arc::new(Api::get().await);
    let (user, bank) = user_with_cards(&api).await;
    let query_id = ready_query(&api, &user, &[bank.as_str()]).await;
    let card_id = format!("{bank}-1");
    let barrier = Arc::new(Barrier::new(20));
    let user = Arc::new(user);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (api, user, barrier) = (api.clone(), user.clone(), barrier.clone());
            let (query_id, body) = (query_id.clone(), face_dispute(&api, &user, &card_id));
            tokio::spawn(async move {
                barrier.wait().await;
                dispute(&api, &user, &query_id, &body).await
            })
        })
        .collect();
    let mut replies = Vec::new();
    for t in tasks {
        replies.push(t.await.unwrap());
    }
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 200),
        "{statuses:?}"
    );
    let ids: std::collections::BTreeSet<String> = replies
        .iter()
        .map(|r| {
            r.body.as_ref().unwrap()["dispute_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let list = listed(&api, &user, &query_id).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["dispute_id"], ids.first().unwrap().as_str());
}

#[tokio::test]
async fn bad_disputes_are_refused_with_a_stable_code_and_change_nothing() {
    let api = Api::get().await;
    let (user, bank) = user_with_cards(&api).await;
    let query_id = ready_query(&api, &user, &[bank.as_str()]).await;
    let token = api.token(&user);
    let path = disputes_path(&query_id);
    let card_id = format!("{bank}-1");
    let face = api.face_token(&user, Purpose::DisputeCard);

    for (body, status, code) in [
        (json!({"card_id": card_id, "face_token": face, "extra": 1}).to_string(), 400, "MALFORMED_REQUEST"),
        (json!({"card_id": card_id}).to_string(), 400, "MALFORMED_REQUEST"),
        (json!({"face_token": face}).to_string(), 400, "MALFORMED_REQUEST"),
        (json!({"card_id": "not a card", "face_token": face}).to_string(), 400, "MALFORMED_REQUEST"),
        (json!({"card_id": card_id, "face_token": face, "verification": {"verification_id": "01JDQ6Z7X8Y9ABCDEFGHJKMNPQ", "sms_code": "123456"}}).to_string(), 400, "MALFORMED_REQUEST"),
        ("{not json".to_owned(), 400, "MALFORMED_REQUEST"),
        (format!("{{\"card_id\": \"{card_id}\", \"face_token\": \"{}\"}}", "x".repeat(17 * 1024)), 413, "PAYLOAD_TOO_LARGE"),
        (json!({"card_id": format!("{bank}-9"), "face_token": face}).to_string(), 404, "CARD_NOT_FOUND"),
        (json!({"card_id": "ZZZ-1", "face_token": face}).to_string(), 404, "CARD_NOT_FOUND"),
    ] {
        let reply = api
            .call("POST", &path, Some(&token), &[], Some(body.clone()))
            .await;
        assert_eq!((reply.status, reply.code()), (status, Some(code)), "{body:.200}: {reply:?}");
    }
    // Proofs for another purpose.
    let view_face =
        json!({"card_id": card_id, "face_token": api.face_token(&user, Purpose::ViewReport)});
    let reply = dispute(&api, &user, &query_id, &view_face).await;
    assert_eq!(
        (reply.status, reply.code()),
        (422, Some("FACE_VERIFICATION_FAILED"))
    );
    let mut view_code = code_body(&api, &user, "VIEW_REPORT").await;
    view_code["card_id"] = json!(card_id);
    let reply = dispute(&api, &user, &query_id, &view_code).await;
    assert_eq!(
        (reply.status, reply.code()),
        (422, Some("VERIFICATION_FAILED"))
    );
    // Another user's query is not found, with their own valid proof.
    let other = api.new_user(UserKind::Eligible).await;
    let reply = dispute(
        &api,
        &other,
        &query_id,
        &face_dispute(&api, &other, &card_id),
    )
    .await;
    assert_eq!((reply.status, reply.code()), (404, Some("NOT_FOUND")));
    let reply = api.get_json(&path, &api.token(&other)).await;
    assert_eq!((reply.status, reply.code()), (404, Some("NOT_FOUND")));
    let reply = dispute(
        &api,
        &user,
        "01JDQ6Z7X8Y9ABCDEFGHJKMNPQ",
        &face_dispute(&api, &user, &card_id),
    )
    .await;
    assert_eq!((reply.status, reply.code()), (404, Some("NOT_FOUND")));
    // Unauthenticated.
    let reply = api.call("GET", &path, None, &[], None).await;
    assert_eq!(reply.status, 401);
    // Nothing was disputed, and the first proof was never used up: it disputes now.
    assert!(listed(&api, &user, &query_id).await.is_empty());
    let body = json!({"card_id": card_id, "face_token": face});
    assert_eq!(dispute(&api, &user, &query_id, &body).await.status, 201);
}

#[tokio::test]
async fn a_report_not_ready_or_a_bank_without_refs_cannot_be_disputed() {
    let api = Api::get().await;
    let (user, bank) = user_with_cards(&api).await;
    // A bank that never answers: the report is not ready.
    api.sim_behave(&user, &bank, json!({"mode": "never"})).await;
    let accepted = api.submit_query(&user, &[bank.as_str()]).await;
    let pending = accepted["query_id"].as_str().unwrap().to_owned();
    let reply = dispute(
        &api,
        &user,
        &pending,
        &face_dispute(&api, &user, &format!("{bank}-1")),
    )
    .await;
    assert_eq!(
        (reply.status, reply.code()),
        (409, Some("REPORT_NOT_READY")),
        "{reply:?}"
    );
    assert!(listed(&api, &user, &pending).await.is_empty());

    // A bank that gives no card refs: its cards are not disputable.
    let (user, bank) = user_with_cards(&api).await;
    api.sim_behave(&user, &bank, json!({"card_refs": false}))
        .await;
    let query_id = ready_query(&api, &user, &[bank.as_str()]).await;
    let cards = report_cards(&api, &user, &query_id).await;
    assert!(cards.iter().all(|c| c["disputable"] == false), "{cards:?}");
    let reply = dispute(
        &api,
        &user,
        &query_id,
        &face_dispute(&api, &user, &format!("{bank}-1")),
    )
    .await;
    assert_eq!(
        (reply.status, reply.code()),
        (409, Some("DISPUTE_NOT_SUPPORTED")),
        "{reply:?}"
    );
    assert!(listed(&api, &user, &query_id).await.is_empty());
}
