use std::sync::Arc;

use lambda_http::Error;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let api = shared::bootstrap::view_api().await?;
    lambda_http::run(shared::inbound::report::router(Arc::new(api))).await
}
