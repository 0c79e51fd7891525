//! `DELETE /v1/card-queries/{id}/report`: after a fresh DELETE_REPORT step-up the sealed
//! report and every leg are gone at once; the record stays, `DELETED` with the time;
//! viewing and deleting again are 410 `REPORT_DELETED` with the record; the cooldown is
//! unchanged; of 20 concurrent deletions exactly one deletes.

use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::json;
use shared::model::purpose::Purpose;
use testkit::api::{Api, UserKind};
use tokio::sync::Barrier;

use super::{code_body, delete_report, ready_query, report_path};

/// The sort keys stored under the query's partition, as DynamoDB has them now.
async fn stored_sks(api: &Api, query_id: &str) -> Vec<String> {
    let out = api
        .clients
        .dynamodb
        .query()
        .table_name(&api.tables.main)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", AttributeValue::S(format!("QUERY#{query_id}")))
        .consistent_read(true)
        .send()
        .await
        .expect("query the query's items");
    let mut sks: Vec<String> = out
        .items()
        .iter()
        .filter_map(|i| i.get("sk").and_then(|v| v.as_s().ok()).cloned())
        .collect();
    sks.sort();
    sks
}

#[tokio::test]
async fn a_deleted_report_is_gone_with_its_legs_and_the_record_lists_deleted() {
    let api = Api::get().await;
    let user = api.new_user(UserKind::Eligible).await;
    let query_id = ready_query(&api, &user, &["ICBC", "ABC"]).await;
    let token = api.token(&user);
    let before = stored_sks(&api, &query_id).await;
    assert!(before.contains(&"REPORT".to_owned()), "{before:?}");
    assert!(before.contains(&"LEG#ICBC".to_owned()), "{before:?}");
    let eligibility = api.get_json("/v1/eligibility", &token).await;
    let next_allowed = eligibility.body.unwrap()["next_allowed_at"].clone();
    assert!(next_allowed.is_string());

    let body = code_body(&api, &user, "DELETE_REPORT").await;
    let reply = delete_report(&api, &user, &query_id, &body).await;
    assert_eq!(reply.status, 204, "{reply:?}");
    assert!(reply.body.is_none());

    // Report and legs gone in DynamoDB; the query record (and consent) stay.
    let after = stored_sks(&api, &query_id).await;
    assert_eq!(after, ["CONSENT", "QUERY"], "{after:?}");

    // The record lists DELETED, with the time, in the list and on its own.
    let record = api
        .get_json(&format!("/v1/card-queries/{query_id}"), &token)
        .await;
    assert_eq!(record.status, 200);
    let record = record.body.unwrap();
    assert_eq!(record["report_status"], "DELETED");
    assert!(record["report_deleted_at"].is_string(), "{record}");
    assert!(record["progress"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["status"] == "DELETED"));
    let list = api.get_json("/v1/card-queries", &token).await;
    let listed = &list.body.unwrap()["queries"][0];
    assert_eq!(listed["query_id"], query_id);
    assert_eq!(listed["report_status"], "DELETED");

    // Viewing is 410 with the record; so is a second deletion.
    let view = code_body(&api, &user, "VIEW_REPORT").await;
    let reply = api.post_json(&report_path(&query_id), &token, &view).await;
    assert_eq!(
        (reply.status, reply.code()),
        (410, Some("REPORT_DELETED")),
        "{reply:?}"
    );
    let body = reply.body.unwrap();
    assert_eq!(body["query"]["report_status"], "DELETED");
    assert!(body.get("cards").is_none());
    let again = json!({"face_token": api.face_token(&user, Purpose::DeleteReport)});
    let reply = delete_report(&api, &user, &query_id, &again).await;
    assert_eq!((reply.status, reply.code()), (410, Some("REPORT_DELETED")));

    // The cooldown still runs from the report's generation.
    let eligibility = api.get_json("/v1/eligibility", &token).await;
    assert_eq!(eligibility.body.unwrap()["next_allowed_at"], next_allowed);
}

#[tokio::test]
async fn deleting_refuses_bad_input_other_proofs_and_other_users_and_deletes_nothing() {
    let api = Api::get().await;
    let user = api.new_user(UserKind::Eligible).await;
    let query_id = ready_query(&api, &user, &["CMB"]).await;
    let token = api.token(&user);
    let path = report_path(&query_id);
    let face = api.face_token(&user, Purpose::DeleteReport);

    for (body, code) in [
        (json!({"face_token": face, "extra": 1}).to_string(), 400),
        (json!({}).to_string(), 400),
        ("{not json".to_owned(), 400),
        (
            format!("{{\"face_token\": \"{}\"}}", "x".repeat(17 * 1024)),
            413,
        ),
    ] {
        let reply = api
            .call("DELETE", &path, Some(&token), &[], Some(body))
            .await;
        assert_eq!(reply.status, code, "{reply:?}");
    }
    let reply = api
        .call(
            "DELETE",
            &path,
            Some(&token),
            &[("content-type", "text/plain")],
            Some(json!({"face_token": face}).to_string()),
        )
        .await;
    assert_eq!(reply.status, 415, "{reply:?}");
    let reply = api
        .call("DELETE", &path, None, &[], Some("{}".into()))
        .await;
    assert_eq!(reply.status, 401, "{reply:?}");

    // A proof for viewing does not delete.
    let view_face = json!({"face_token": api.face_token(&user, Purpose::ViewReport)});
    let reply = delete_report(&api, &user, &query_id, &view_face).await;
    assert_eq!(
        (reply.status, reply.code()),
        (422, Some("FACE_VERIFICATION_FAILED"))
    );
    let view_code = code_body(&api, &user, "VIEW_REPORT").await;
    let reply = delete_report(&api, &user, &query_id, &view_code).await;
    assert_eq!(
        (reply.status, reply.code()),
        (422, Some("VERIFICATION_FAILED"))
    );

    // Another user's query is not found, whatever their proof.
    let other = api.new_user(UserKind::Eligible).await;
    let theirs = json!({"face_token": api.face_token(&other, Purpose::DeleteReport)});
    let reply = delete_report(&api, &other, &query_id, &theirs).await;
    assert_eq!((reply.status, reply.code()), (404, Some("NOT_FOUND")));
    let reply = delete_report(&api, &user, "not-a-ulid", &json!({"face_token": face})).await;
    assert_eq!((reply.status, reply.code()), (404, Some("NOT_FOUND")));

    // Nothing was deleted: the report still opens.
    assert!(stored_sks(&api, &query_id)
        .await
        .contains(&"REPORT".to_owned()));
    api.allow_next_sms(&user).await;
    assert_eq!(api.view_report(&user, &query_id).await.status, 200);
}

#[tokio::test]
async fn twenty_concurrent_deletions_delete_once_and_the_others_are_410() {
    let api = Arc::new(Api::get().await);
    let user = api.new_user(UserKind::Eligible).await;
    let query_id = ready_query(&api, &user, &["ICBC", "CMB", "ABC"]).await;
    let barrier = Arc::new(Barrier::new(20));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (api, user, query_id, barrier) =
                (api.clone(), user.clone(), query_id.clone(), barrier.clone());
            // Each with a proof of its own: one proof serves one request anyway.
            let body = json!({"face_token": api.face_token(&user, Purpose::DeleteReport)});
            tokio::spawn(async move {
                barrier.wait().await;
                delete_report(&api, &user, &query_id, &body).await
            })
        })
        .collect();
    let mut replies = Vec::new();
    for t in tasks {
        replies.push(t.await.unwrap());
    }
    let deleted = replies.iter().filter(|r| r.status == 204).count();
    assert_eq!(deleted, 1, "{replies:?}");
    for r in replies.iter().filter(|r| r.status != 204) {
        assert_eq!((r.status, r.code()), (410, Some("REPORT_DELETED")), "{r:?}");
    }
    assert_eq!(stored_sks(&api, &query_id).await, ["CONSENT", "QUERY"]);
}
