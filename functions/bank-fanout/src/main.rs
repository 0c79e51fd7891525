use aws_lambda_events::event::dynamodb::Event;
use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let planner = shared::bootstrap::planner().await?;
    let planner = &planner;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Event>| async move {
        let response = shared::stream::for_each_query(event.payload, |id| async move {
            planner.plan(&id).await.map(drop)
        })
        .await;
        Ok::<_, Error>(response)
    }))
    .await
}
