use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use shared::dispatch::sender::Received;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let sender = shared::bootstrap::sender().await?;
    let sender = &sender;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        // A record without an id or receipt cannot be reported or paused: the event
        // source mapping never sends one.
        let batch = event
            .payload
            .records
            .into_iter()
            .filter_map(|r| {
                Some(Received {
                    message_id: r.message_id?,
                    receipt: r.receipt_handle?,
                    body: r.body.unwrap_or_default(),
                })
            })
            .collect();
        let failed = sender.handle(batch).await;
        let mut response = SqsBatchResponse::default();
        response.batch_item_failures = failed
            .into_iter()
            .map(|id| {
                let mut f = BatchItemFailure::default();
                f.item_identifier = id;
                f
            })
            .collect();
        Ok::<_, Error>(response)
    }))
    .await
}
