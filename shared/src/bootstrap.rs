//! Builds each function's dependencies from the environment, once per cold start.
//! AWS endpoints come from the standard `AWS_ENDPOINT_URL[_DYNAMODB|_SNS]` variables,
//! so the same binary runs against AWS and the local emulators.

use std::sync::Arc;

use aws_config::BehaviorVersion;

use crate::adapters::bank_http::HttpBankClient;
use crate::adapters::dynamo::{DynamoStore, Tables};
use crate::adapters::emf::EmfMetrics;
use crate::adapters::sns::SnsSms;
use crate::clock::SystemClock;
use crate::config::ServiceConfig;
use crate::dispatch::callback::CallbackService;
use crate::dispatch::fanout::{Fanout, FanoutDeps};
use crate::dispatch::secrets::BankSecrets;
use crate::inbound::report::ViewApi;
use crate::inbound::submission::SubmissionApi;
use crate::report::aggregate::{Aggregator, AggregatorDeps};
use crate::report::crypto::{ReportOpener, ReportSealer};
use crate::report::view::{ViewDeps, ViewService};
use crate::security::app_jwt::AppAuthenticator;
use crate::security::face::FaceVerifier;
use crate::security::sms_code::CodeHasher;
use crate::submission::{SubmissionDeps, SubmissionService};
use crate::sweep::Sweeper;

#[derive(Debug, thiserror::Error)]
#[error("start-up: {0}")]
pub struct StartupError(String);

fn err(e: impl std::fmt::Display) -> StartupError {
    StartupError(e.to_string())
}

pub async fn aws_config() -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

/// What every function needs: configuration, AWS configuration, the store.
struct Common {
    config: Arc<ServiceConfig>,
    sdk: aws_config::SdkConfig,
    store: Arc<DynamoStore>,
}

async fn common() -> Result<Common, StartupError> {
    let config = ServiceConfig::from_env().map_err(err)?;
    config.require_real_banks().map_err(err)?;
    let config = Arc::new(config);
    let sdk = aws_config().await;
    let store = Arc::new(DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        Tables::from_env().map_err(err)?,
    ));
    Ok(Common { config, sdk, store })
}

fn env_millis(name: &str, default: u64) -> Result<std::time::Duration, StartupError> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .map(std::time::Duration::from_millis)
            .map_err(|_| StartupError(format!("{name} must be a number of milliseconds"))),
        Err(_) => Ok(std::time::Duration::from_millis(default)),
    }
}

pub async fn fanout() -> Result<Fanout, StartupError> {
    fanout_from(&common().await?)
}

fn fanout_from(c: &Common) -> Result<Fanout, StartupError> {
    let (config, store) = (c.config.clone(), c.store.clone());
    let callback_base = std::env::var("CALLBACK_BASE_URL")
        .map_err(|_| err("CALLBACK_BASE_URL must be set"))?
        .trim_end_matches('/')
        .to_owned();
    Ok(Fanout::new(FanoutDeps {
        secrets: BankSecrets::from_env(&config.banks).map_err(err)?,
        config,
        profiles: store.clone(),
        store,
        client: Arc::new(HttpBankClient::new().map_err(err)?),
        clock: Arc::new(SystemClock),
        callback_base,
        bank_timeout: env_millis("BANK_TIMEOUT_MS", 10_000)?,
        sealer: report_sealer()?,
    }))
}

pub async fn callback_service() -> Result<CallbackService, StartupError> {
    let Common { config, store, .. } = common().await?;
    Ok(CallbackService {
        secrets: BankSecrets::from_env(&config.banks).map_err(err)?,
        config,
        store,
        clock: Arc::new(SystemClock),
        sealer: report_sealer()?,
    })
}

fn sms(sdk: &aws_config::SdkConfig) -> Arc<SnsSms> {
    Arc::new(SnsSms::new(
        aws_sdk_sns::Client::new(sdk),
        std::env::var("SMS_SENDER_ID")
            .ok()
            .filter(|s| !s.is_empty()),
    ))
}

/// The report *public* key (`REPORT_PUBLIC_KEY[_FILE]`, `REPORT_KEY_ID`): what every
/// function that handles card data seals it with (fan-out, callbacks, aggregator).
fn report_sealer() -> Result<Arc<ReportSealer>, StartupError> {
    let public = crate::security::pem_from_env("REPORT_PUBLIC_KEY").map_err(err)?;
    let key_id = std::env::var("REPORT_KEY_ID").unwrap_or_else(|_| "report-1".into());
    Ok(Arc::new(ReportSealer::new(&key_id, &public).map_err(err)?))
}

fn aggregator_from(c: &Common) -> Result<Aggregator, StartupError> {
    Ok(Aggregator::new(AggregatorDeps {
        config: c.config.clone(),
        queries: c.store.clone(),
        reports: c.store.clone(),
        users: c.store.clone(),
        profiles: c.store.clone(),
        sms: sms(&c.sdk),
        sealer: report_sealer()?,
        clock: Arc::new(SystemClock),
        metrics: Arc::new(EmfMetrics),
    }))
}

/// The aggregate-report function: holds only the report *public* key.
pub async fn aggregator() -> Result<Aggregator, StartupError> {
    aggregator_from(&common().await?)
}

/// The current report key and, while one is being retired, the previous one
/// (`REPORT_PREVIOUS_KEY_ID` + `REPORT_PREVIOUS_PRIVATE_KEY[_FILE]`).
fn report_opener(key_id: &str, private: &str) -> Result<ReportOpener, StartupError> {
    let opener = ReportOpener::new(key_id, private).map_err(err)?;
    match std::env::var("REPORT_PREVIOUS_KEY_ID") {
        Ok(previous_id) if !previous_id.is_empty() => {
            let previous =
                crate::security::pem_from_env("REPORT_PREVIOUS_PRIVATE_KEY").map_err(err)?;
            opener.with_previous(&previous_id, &previous).map_err(err)
        }
        _ => Ok(opener),
    }
}

/// The view-report function: the only holder of the report private key.
pub async fn view_api() -> Result<ViewApi, StartupError> {
    let Common {
        config,
        sdk: _,
        store,
    } = common().await?;
    let private = crate::security::pem_from_env("REPORT_PRIVATE_KEY").map_err(err)?;
    let key_id = std::env::var("REPORT_KEY_ID").unwrap_or_else(|_| "report-1".into());
    Ok(ViewApi {
        service: ViewService::new(ViewDeps {
            face: Arc::new(FaceVerifier::from_env(config.rules.face_token_max_age).map_err(err)?),
            config,
            queries: store.clone(),
            reports: store.clone(),
            verifications: store,
            codes: CodeHasher::from_env().map_err(err)?,
            opener: report_opener(&key_id, &private)?,
            clock: Arc::new(SystemClock),
        }),
        auth: AppAuthenticator::from_env().map_err(err)?,
    })
}

pub async fn sweeper() -> Result<Sweeper, StartupError> {
    let c = common().await?;
    let aggregator = Arc::new(aggregator_from(&c)?);
    let fanout = Arc::new(fanout_from(&c)?);
    Ok(Sweeper {
        queries: c.store.clone(),
        reports: c.store,
        fanout,
        aggregator,
        clock: Arc::new(SystemClock),
    })
}

pub async fn submission_api() -> Result<SubmissionApi, StartupError> {
    let Common { config, sdk, store } = common().await?;
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
        service: Arc::new(service),
        auth: AppAuthenticator::from_env().map_err(err)?,
    })
}
