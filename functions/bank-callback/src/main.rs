use std::sync::Arc;

use lambda_http::Error;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let service = shared::bootstrap::callback_service().await?;
    lambda_http::run(shared::inbound::callback::router(Arc::new(service))).await
}
