//! The view log: every time the report is shown the record lists it, newest first, with
//! the step-up method, the latest 50 kept and all counted; refused views are not; views
//! at the same moment are all recorded.

use futures::future::join_all;

use super::*;
use crate::model::step_up::StepUpMethod;
use crate::model::timestamp;
use crate::rules::view_log::MAX_VIEWS;

fn methods(views: &[super::super::view::ViewEntry]) -> Vec<StepUpMethod> {
    views.iter().map(|v| v.method).collect()
}

#[tokio::test]
async fn each_view_is_listed_newest_first_with_its_step_up_method() {
    let w = world();
    let u1 = user("u1");
    let q = w.reported("u1").await;
    let detail = w.view.detail(&u1, &q.to_string()).await.unwrap();
    assert!(detail.record.views.is_empty());
    assert_eq!(detail.record.view_count, 0);

    w.clock.advance(TimeDelta::minutes(1));
    let by_sms = w.now();
    let step = w.view_code_step("u1").await;
    w.view_report(&u1, &q, &step).await.unwrap();
    w.clock.advance(TimeDelta::minutes(1));
    let by_face = w.now();
    let token = w.face_token("u1", "log-face-1");
    w.view_report(&u1, &q, &face_step(&token)).await.unwrap();

    // Refused views are not listed: a used code, a used face token.
    w.clock.advance(TimeDelta::minutes(1));
    w.view_refused(&u1, &q, &step).await;
    w.view_refused(&u1, &q, &face_step(&token)).await;

    let detail = w.view.detail(&u1, &q.to_string()).await.unwrap();
    let views = &detail.record.views;
    assert_eq!(methods(views), [StepUpMethod::Face, StepUpMethod::Sms]);
    assert_eq!(views[0].viewed_at, by_face);
    assert_eq!(views[1].viewed_at, by_sms);
    assert_eq!(detail.record.view_count, 2);
    assert_eq!(detail.record.last_viewed_at, Some(by_face));
    // The list carries the same, and the JSON names what the contract names.
    let list = w.view.list(&u1).await.unwrap();
    assert_eq!(list[0].views, *views);
    let json = serde_json::to_value(&detail).unwrap();
    assert_eq!(json["views"][0]["method"], "FACE");
    assert_eq!(json["views"][1]["method"], "SMS");
    assert_eq!(json["views"][0]["viewed_at"], timestamp::format(by_face));
    assert_eq!(json["view_count"], 2);
    let entry = json["views"][0].as_object().unwrap();
    assert_eq!(entry.len(), 2, "time and method only: {entry:?}");

    // The log outlives the report: still listed once it is deleted.
    let vid = w.sms_code("u1", Purpose::DeleteReport, "975310").await;
    w.view
        .delete(&u1, &q.to_string(), code_step(&vid, "975310"))
        .await
        .unwrap();
    let detail = w.view.detail(&u1, &q.to_string()).await.unwrap();
    assert_eq!(detail.record.view_count, 2);
    assert_eq!(detail.record.views.len(), 2);
}

#[tokio::test]
async fn the_log_keeps_the_latest_fifty_views_and_counts_them_all() {
    let w = world();
    let u1 = user("u1");
    let q = w.reported("u1").await;
    let total = MAX_VIEWS + 5;
    for i in 0..total {
        w.clock.advance(TimeDelta::seconds(10));
        let token = w.face_token("u1", &format!("fifty-{i}"));
        w.view_report(&u1, &q, &face_step(&token)).await.unwrap();
    }
    let record = w.view.detail(&u1, &q.to_string()).await.unwrap().record;
    assert_eq!(record.views.len(), MAX_VIEWS);
    assert_eq!(record.view_count, total as u64);
    assert_eq!(record.views[0].viewed_at, w.now(), "newest first");
    let oldest_kept = w.now() - TimeDelta::seconds(10 * (MAX_VIEWS as i64 - 1));
    assert_eq!(record.views[MAX_VIEWS - 1].viewed_at, oldest_kept);
}

#[tokio::test]
async fn twenty_views_at_once_are_all_recorded() {
    let w = world();
    let u1 = user("u1");
    let q = w.reported("u1").await;
    let steps: Vec<StepUp> = (0..20)
        .map(|i| face_step(&w.face_token("u1", &format!("at-once-{i}"))))
        .collect();
    let shown = join_all(steps.iter().map(|s| w.view_report(&u1, &q, s))).await;
    assert!(shown.iter().all(|r| r.is_ok()), "{shown:?}");
    let record = w.view.detail(&u1, &q.to_string()).await.unwrap().record;
    assert_eq!(record.view_count, 20);
    assert_eq!(record.views.len(), 20);
}
