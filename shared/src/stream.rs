//! DynamoDB stream events of query records (fan-out on insert, aggregation when ready).
//! Each record is one query; a failed one is reported alone (`ReportBatchItemFailures`),
//! so it neither blocks nor replays the others.

use std::future::Future;

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use tracing::{error, warn, Instrument};

use crate::model::ids::QueryId;

/// The query id of a stream record's new image.
pub fn query_id(record: &EventRecord) -> Option<QueryId> {
    match record.change.new_image.get("query_id") {
        Some(serde_dynamo::AttributeValue::S(s)) => QueryId::parse(s).ok(),
        _ => None,
    }
}

/// Runs `work` for each record's query, concurrently; failures are reported per record.
pub async fn for_each_query<F, Fut, E>(event: Event, work: F) -> DynamoDbEventResponse
where
    F: Fn(QueryId) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let work = &work;
    let tasks = event.records.iter().map(|record| async move {
        let Some(id) = query_id(record) else {
            // Retrying cannot fix it; reporting it would only replay it.
            warn!(event_id = %record.event_id, "stream record without a query id; skipped");
            return None;
        };
        let span = tracing::info_span!("query", query_id = %id);
        match work(id).instrument(span).await {
            Ok(()) => None,
            Err(e) => {
                error!(query_id = %id, error = %e, "stream record failed; it will be retried");
                let mut failure = DynamoDbBatchItemFailure::default();
                failure.item_identifier = record.change.sequence_number.clone();
                Some(failure)
            }
        }
    });
    let mut response = DynamoDbEventResponse::default();
    response.batch_item_failures = futures::future::join_all(tasks)
        .await
        .into_iter()
        .flatten()
        .collect();
    response
}
