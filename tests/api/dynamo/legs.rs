//! Legs on DynamoDB Local: concurrent settles count exactly, and the query becomes ready
//! for aggregation exactly once (one stream record matches the aggregator's filter).

use std::sync::Arc;

use aws_sdk_dynamodbstreams::types::AttributeValue as StreamValue;
use shared::clock::Clock;
use shared::model::ids::QueryId;
use shared::ports::{QueryStore, SettleOutcome, Settlement};
use shared::records::{LegRecord, LegState};
use testkit::submission::Fixture;

/// Stream records of the query item whose new image has `unsettled` = 0 while COLLECTING
/// (the aggregator's filter in infra/template.yaml).
async fn ready_records(f: &Fixture, q: &QueryId) -> usize {
    let pk = StreamValue::S(format!("QUERY#{q}"));
    let records = testkit::streams::records(&f.env.clients, f.env.table("CardLookupTable")).await;
    records
        .iter()
        .filter_map(|r| r.dynamodb().and_then(|d| d.new_image()))
        .filter(|img| {
            let is_query = img.get("pk") == Some(&pk)
                && img.get("sk") == Some(&StreamValue::S("QUERY".into()));
            is_query
                && img.get("unsettled") == Some(&StreamValue::N("0".into()))
                && img.get("phase") == Some(&StreamValue::S("COLLECTING".into()))
        })
        .count()
}

/// A new user's query to every bank, submitted: its id and its legs.
async fn submitted(f: &Fixture) -> (QueryId, Vec<LegRecord>) {
    let q = f.submitted_query().await;
    let legs = f.store.legs(&q).await.unwrap();
    (q, legs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_concurrent_settles_make_the_query_ready_exactly_once() {
    let f = Arc::new(Fixture::new().await);
    let (q, legs) = submitted(&f).await;
    assert_eq!(legs.len(), 16);
    assert!(legs.iter().all(|l| l.state == LegState::Pending));

    let now = f.clock.now();
    let tasks: Vec<_> = legs
        .iter()
        .map(|leg| {
            let (f, bank) = (f.clone(), leg.bank.clone());
            tokio::spawn(async move {
                let st = Settlement {
                    state: LegState::Answered,
                    failure: None,
                    sealed: None,
                    answer_digest: Some(format!("digest-{bank}")),
                    at: now,
                };
                f.store.settle(&q, &bank, &st, None).await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), SettleOutcome::Settled);
    }
    assert!(f
        .store
        .legs(&q)
        .await
        .unwrap()
        .iter()
        .all(|l| l.state == LegState::Answered));
    assert_eq!(ready_records(&f, &q).await, 1);

    // Settling again changes nothing and triggers nothing.
    let again = Settlement {
        state: LegState::Failed,
        failure: Some("X".into()),
        sealed: None,
        answer_digest: None,
        at: now,
    };
    let outcome = f
        .store
        .settle(&q, &legs[0].bank, &again, None)
        .await
        .unwrap();
    assert!(matches!(outcome, SettleOutcome::AlreadySettled(_)));
    assert_eq!(ready_records(&f, &q).await, 1);
}

#[tokio::test]
async fn a_submission_writes_one_pending_leg_per_bank_in_the_same_transaction() {
    let f = Fixture::new().await;
    let (_, legs) = submitted(&f).await;
    let mut banks: Vec<String> = legs.iter().map(|l| l.bank.to_string()).collect();
    banks.sort();
    let configured = f.service.config().banks.all();
    let mut expected: Vec<String> = configured.iter().map(|b| b.code.to_string()).collect();
    expected.sort();
    assert_eq!(banks, expected);
    let mut inquiry_ids: Vec<&str> = legs.iter().map(|l| l.inquiry_id.as_str()).collect();
    inquiry_ids.sort();
    inquiry_ids.dedup();
    assert_eq!(inquiry_ids.len(), 16, "each leg has its own inquiry id");
}

#[tokio::test]
async fn the_deadline_entry_falls_due_before_the_promised_report_time() {
    let f = Fixture::new().await;
    let (q, _) = submitted(&f).await;
    let query = f.store.query(&q).await.unwrap().unwrap();
    assert_eq!(
        query.collect_until,
        query.report_due_by - chrono::TimeDelta::minutes(10)
    );
    let item = f
        .env
        .clients
        .dynamodb
        .get_item()
        .table_name(f.env.table("CardLookupTable"))
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("QUERY#{q}")),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S("QUERY".into()),
        )
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    let text = |k: &str| item[k].as_s().unwrap().clone();
    assert!(text("due_pk").starts_with("DEADLINE#"));
    assert_eq!(
        text("due_at"),
        shared::model::timestamp::format(query.collect_until)
    );
}
