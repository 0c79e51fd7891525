use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let sweeper = shared::bootstrap::sweeper().await?;
    let sweeper = &sweeper;
    // The scheduled event carries nothing the sweep needs; the context its deadline.
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            let deadline =
                shared::sweep::lambda_deadline(event.context.deadline, chrono::Utc::now());
            let stats = sweeper.run_until(deadline).await?;
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
