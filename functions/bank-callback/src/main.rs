use lambda_http::{service_fn, Error, Request};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let api = shared::bootstrap::callback_api().await?;
    let api = &api;
    lambda_http::run(service_fn(move |req: Request| async move {
        Ok::<_, std::convert::Infallible>(api.handle(req).await)
    }))
    .await
}
