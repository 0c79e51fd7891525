use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let sweeper = shared::bootstrap::sweeper().await?;
    let sweeper = &sweeper;
    // The scheduled event carries nothing the sweep needs.
    lambda_runtime::run(service_fn(
        move |_: LambdaEvent<serde_json::Value>| async move {
            let stats = sweeper.run_once().await?;
            Ok::<_, Error>(serde_json::json!({
                "deadlines": stats.deadlines,
                "retries": stats.retries,
                "expired": stats.expired,
                "notified": stats.notified,
                "errors": stats.errors,
            "deferred": stats.deferred,
            }))
        },
    ))
    .await
}
