//! `POST /v1/card-queries/{id}/report` in pages, end to end: the first page after a
//! fresh step-up, the rest by `next_cursor` with no second code, each with the whole
//! summary, together exactly the cards of the report; a cursor is refused for another
//! user, when altered, for a deletion, and once the report is deleted; 20 reads of one
//! page at once all answer it and none is a view.

use std::sync::Arc;

use serde_json::{json, Value};
use shared::model::purpose::Purpose;
use testkit::api::{Api, Reply, TestUser, UserKind};
use testkit::journey::ALL_BANKS;
use tokio::sync::Barrier;

use super::{code_body, delete_report, ready_query, report_path};

async fn page(api: &Api, user: &TestUser, query_id: &str, body: &Value) -> Reply {
    api.post_json(&report_path(query_id), &api.token(user), body)
        .await
}

/// A body outside the contract, sent as is (`page` checks bodies against it).
async fn raw_page(api: &Api, user: &TestUser, query_id: &str, body: &Value) -> Reply {
    let token = api.token(user);
    api.call(
        "POST",
        &report_path(query_id),
        Some(&token),
        &[],
        Some(body.to_string()),
    )
    .await
}

fn ok(reply: Reply) -> Value {
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body.unwrap()
}

fn refused(reply: &Reply) -> (u16, String) {
    let code = reply
        .body
        .as_ref()
        .map_or(Value::Null, |b| b["error"]["code"].clone());
    (reply.status, code.as_str().unwrap_or_default().to_owned())
}

async fn view_count(api: &Api, user: &TestUser, query_id: &str) -> u64 {
    let reply = api
        .get_json(&format!("/v1/card-queries/{query_id}"), &api.token(user))
        .await;
    ok(reply)["view_count"].as_u64().unwrap()
}

#[tokio::test]
async fn the_cards_come_in_pages_after_one_step_up_each_with_the_whole_summary() {
    let api = Api::get().await;
    let user = api.new_user(UserKind::Eligible).await;
    // Every bank: some of them hold cards for anyone (0-3 each).
    let query_id = ready_query(&api, &user, &ALL_BANKS).await;
    let whole = ok(page(
        &api,
        &user,
        &query_id,
        &json!({"face_token": api.face_token(&user, Purpose::ViewReport)}),
    )
    .await);
    let all_cards = whole["cards"].as_array().unwrap().clone();
    assert!(
        all_cards.len() >= 2,
        "a person with cards at two banks at least: {whole}"
    );
    assert_eq!(
        whole["next_cursor"],
        Value::Null,
        "the most per page holds them all"
    );
    assert_eq!(whole["cursor_expires_at"], Value::Null);

    let mut body = code_body(&api, &user, "VIEW_REPORT").await;
    body["page_size"] = json!(2);
    let mut current = ok(page(&api, &user, &query_id, &body).await);
    let expires = current["cursor_expires_at"].clone();
    assert!(expires.is_string(), "{current}");
    let mut cards = Vec::new();
    let mut pages = 0;
    loop {
        pages += 1;
        assert_eq!(current["summary"], whole["summary"], "the whole summary");
        assert_eq!(current["notices"], whole["notices"]);
        let on_page = current["cards"].as_array().unwrap();
        assert!(!on_page.is_empty() && on_page.len() <= 2, "{current}");
        cards.extend(on_page.iter().cloned());
        let Some(next) = current["next_cursor"].as_str().map(str::to_owned) else {
            assert_eq!(current["cursor_expires_at"], Value::Null);
            break;
        };
        // The view's end is fixed at its step-up, not moved by reading on.
        assert_eq!(current["cursor_expires_at"], expires);
        // No code: the cursor alone.
        current = ok(page(
            &api,
            &user,
            &query_id,
            &json!({"cursor": next, "page_size": 2}),
        )
        .await);
    }
    assert_eq!(cards, all_cards, "every card once, in the report's order");
    assert_eq!(pages, all_cards.len().div_ceil(2));
    // Two step-ups, two views; the pages read by cursor are not views.
    assert_eq!(view_count(&api, &user, &query_id).await, 2);
}

#[tokio::test]
async fn a_cursor_opens_only_its_users_report_and_not_after_deletion() {
    let api = Api::get().await;
    let user = api.new_user(UserKind::Eligible).await;
    let other = api.new_user(UserKind::Eligible).await;
    let query_id = ready_query(&api, &user, &ALL_BANKS).await;
    let other_query = ready_query(&api, &other, &["ICBC"]).await;
    let mut body =
        json!({"face_token": api.face_token(&user, Purpose::ViewReport), "page_size": 1});
    let first = ok(page(&api, &user, &query_id, &body).await);
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a second page")
        .to_owned();

    // Another user: the query is not theirs (404); their own report: not its cursor.
    let with_cursor = json!({"cursor": cursor});
    let theirs = page(&api, &other, &query_id, &with_cursor).await;
    assert_eq!(refused(&theirs), (404, "NOT_FOUND".into()), "{theirs:?}");
    let own = page(&api, &other, &other_query, &with_cursor).await;
    assert_eq!(refused(&own), (400, "INVALID_CURSOR".into()), "{own:?}");
    // Altered or made up: 400 INVALID_CURSOR, never a page nor a 5xx.
    let (offset, rest) = cursor.split_once('.').unwrap();
    for bad in [
        format!("0.{rest}"),
        format!("{offset}.{rest}x"),
        format!("{offset}.9999999999.{}", rest.split_once('.').unwrap().1),
        "garbage".to_owned(),
        String::new(),
        "9".repeat(300),
    ] {
        let reply = page(&api, &user, &query_id, &json!({"cursor": bad})).await;
        assert_eq!(
            refused(&reply),
            (400, "INVALID_CURSOR".into()),
            "{bad}: {reply:?}"
        );
    }
    // A page size out of range, or a cursor beside a proof: the contract's 400.
    body["page_size"] = json!(0);
    let zero = raw_page(&api, &user, &query_id, &body).await;
    assert_eq!(
        refused(&zero),
        (400, "MALFORMED_REQUEST".into()),
        "{zero:?}"
    );
    let both = json!({"cursor": cursor, "face_token": "x"});
    let both = raw_page(&api, &user, &query_id, &both).await;
    assert_eq!(
        refused(&both),
        (400, "MALFORMED_REQUEST".into()),
        "{both:?}"
    );
    // A cursor deletes nothing.
    let del = delete_report(&api, &user, &query_id, &with_cursor).await;
    assert_eq!(refused(&del), (400, "MALFORMED_REQUEST".into()), "{del:?}");
    ok(page(&api, &user, &query_id, &with_cursor).await);

    // Deleted by the user: the cursor of the earlier view reads nothing.
    let body = code_body(&api, &user, "DELETE_REPORT").await;
    assert_eq!(
        delete_report(&api, &user, &query_id, &body).await.status,
        204
    );
    let after = page(&api, &user, &query_id, &with_cursor).await;
    assert_eq!(refused(&after), (410, "REPORT_DELETED".into()), "{after:?}");
}

#[tokio::test]
async fn twenty_reads_of_one_page_at_once_all_answer_it_and_none_is_a_view() {
    let api = Arc::new(Api::get().await);
    let user = api.new_user(UserKind::Eligible).await;
    let query_id = ready_query(&api, &user, &ALL_BANKS).await;
    let body = json!({"face_token": api.face_token(&user, Purpose::ViewReport), "page_size": 1});
    let first = ok(page(&api, &user, &query_id, &body).await);
    let next =
        json!({"cursor": first["next_cursor"].as_str().expect("a second page"), "page_size": 1});
    let barrier = Arc::new(Barrier::new(20));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (api, user, query_id, barrier, next) = (
                api.clone(),
                user.clone(),
                query_id.clone(),
                barrier.clone(),
                next.clone(),
            );
            tokio::spawn(async move {
                barrier.wait().await;
                page(&api, &user, &query_id, &next).await
            })
        })
        .collect();
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(ok(t.await.unwrap())["cards"].clone());
    }
    assert!(seen
        .iter()
        .all(|c| *c == seen[0] && c.as_array().unwrap().len() == 1));
    assert_ne!(
        seen[0], first["cards"],
        "the second page, not the first again"
    );
    assert_eq!(view_count(&api, &user, &query_id).await, 1);
}
