//! The view log on the query record (`GET /v1/card-queries/{id}` and the list): every
//! time the report was shown, newest first, with the step-up method; refused views are
//! not listed; 20 views at once are all recorded.

use std::sync::Arc;

use serde_json::{json, Value};
use shared::model::purpose::Purpose;
use testkit::api::{Api, TestUser, UserKind};
use tokio::sync::Barrier;

use super::{ready_query, report_path};

async fn record(api: &Api, user: &TestUser, query_id: &str) -> Value {
    let reply = api
        .get_json(&format!("/v1/card-queries/{query_id}"), &api.token(user))
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body.unwrap()
}

#[tokio::test]
async fn each_view_is_listed_newest_first_with_its_step_up_method() {
    let api = Api::get().await;
    let user = api.new_user(UserKind::Eligible).await;
    let query_id = ready_query(&api, &user, &["ICBC", "CMB"]).await;
    let before = record(&api, &user, &query_id).await;
    assert_eq!(before["views"], json!([]));
    assert_eq!(before["view_count"], 0);

    api.allow_next_sms(&user).await;
    assert_eq!(api.view_report(&user, &query_id).await.status, 200);
    let face = json!({"face_token": api.face_token(&user, Purpose::ViewReport)});
    let path = report_path(&query_id);
    let token = api.token(&user);
    assert_eq!(api.post_json(&path, &token, &face).await.status, 200);
    // A refused view (the face token again) is not listed.
    assert_eq!(api.post_json(&path, &token, &face).await.status, 422);

    let rec = record(&api, &user, &query_id).await;
    let views = rec["views"].as_array().unwrap();
    let methods: Vec<&str> = views
        .iter()
        .map(|v| v["method"].as_str().unwrap())
        .collect();
    assert_eq!(methods, ["FACE", "SMS"], "{rec}");
    assert_eq!(rec["view_count"], 2);
    assert_eq!(rec["last_viewed_at"], views[0]["viewed_at"]);
    assert!(views[0]["viewed_at"].as_str() >= views[1]["viewed_at"].as_str());
    for v in views {
        assert_eq!(v.as_object().unwrap().len(), 2, "time and method only: {v}");
    }
    let list = api.get_json("/v1/card-queries", &token).await;
    let listed = &list.body.unwrap()["queries"][0];
    assert_eq!(listed["query_id"], query_id);
    assert_eq!(listed["views"], rec["views"]);
}

#[tokio::test]
async fn twenty_views_at_once_are_all_recorded() {
    let api = Arc::new(Api::get().await);
    let user = api.new_user(UserKind::Eligible).await;
    let query_id = ready_query(&api, &user, &["ABC"]).await;
    let barrier = Arc::new(Barrier::new(20));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (api, user, query_id, barrier) =
                (api.clone(), user.clone(), query_id.clone(), barrier.clone());
            let body = json!({"face_token": api.face_token(&user, Purpose::ViewReport)});
            tokio::spawn(async move {
                barrier.wait().await;
                api.post_json(&report_path(&query_id), &api.token(&user), &body)
                    .await
            })
        })
        .collect();
    for t in tasks {
        let reply = t.await.unwrap();
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    let rec = record(&api, &user, &query_id).await;
    assert_eq!(rec["view_count"], 20, "{rec}");
    assert_eq!(rec["views"].as_array().unwrap().len(), 20);
    assert!(rec["views"]
        .as_array()
        .unwrap()
        .iter()
        .all(|v| v["method"] == "FACE"));
}
