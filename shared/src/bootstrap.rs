//! Builds each function's dependencies from the environment, once per cold start.
//! AWS endpoints come from the standard `AWS_ENDPOINT_URL[_DYNAMODB|_SNS]` variables,
//! so the same binary runs against AWS and the local emulators.

use std::sync::Arc;

use aws_config::BehaviorVersion;

use crate::adapters::dynamo::{DynamoStore, Tables};
use crate::adapters::sns::SnsSms;
use crate::clock::SystemClock;
use crate::config::ServiceConfig;
use crate::security::app_jwt::AppAuthenticator;
use crate::security::face::FaceVerifier;
use crate::security::sms_code::CodeHasher;
use crate::submission::http::SubmissionApi;
use crate::submission::{SubmissionDeps, SubmissionService};

#[derive(Debug, thiserror::Error)]
#[error("start-up: {0}")]
pub struct StartupError(String);

fn err(e: impl std::fmt::Display) -> StartupError {
    StartupError(e.to_string())
}

pub async fn aws_config() -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

pub async fn submission_api() -> Result<SubmissionApi, StartupError> {
    let config = Arc::new(ServiceConfig::from_env().map_err(err)?);
    let sdk = aws_config().await;
    let store = Arc::new(DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        Tables::from_env().map_err(err)?,
    ));
    let sms = Arc::new(SnsSms::new(
        aws_sdk_sns::Client::new(&sdk),
        std::env::var("SMS_SENDER_ID")
            .ok()
            .filter(|s| !s.is_empty()),
    ));
    let face = Arc::new(FaceVerifier::from_env(config.rules.face_token_max_age).map_err(err)?);
    let service = SubmissionService::new(SubmissionDeps {
        config,
        profiles: store.clone(),
        store,
        sms,
        clock: Arc::new(SystemClock),
        codes: CodeHasher::from_env().map_err(err)?,
        face,
    });
    Ok(SubmissionApi {
        service,
        auth: AppAuthenticator::from_env().map_err(err)?,
    })
}
