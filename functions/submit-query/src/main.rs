use std::sync::Arc;

use lambda_http::Error;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let api = shared::bootstrap::submission_api().await?;
    lambda_http::run(shared::inbound::submission::router(Arc::new(api))).await
}
