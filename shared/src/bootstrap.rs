//! Builds each function's dependencies, once per cold start, from its settings struct
//! (`settings`, read here and nowhere else). AWS endpoints come from the SDK's standard
//! `AWS_ENDPOINT_URL[_DYNAMODB|_SNS|_SQS]` variables, so the same binary runs against AWS and
//! the local emulators. With `AWS_CALL_METERING=1` every client also logs what each call
//! costs (`adapters::metering`, for `make bench-cost`).

use std::sync::Arc;

use aws_config::BehaviorVersion;
use secrecy::{ExposeSecret, SecretString};

use crate::adapters::bank_http::HttpBankClient;
use crate::adapters::dynamo::{DynamoStore, Tables};
use crate::adapters::emf::EmfMetrics;
use crate::adapters::metering::{self, Metering};
use crate::adapters::sns::SnsSms;
use crate::adapters::sqs::SqsInquiryQueue;
use crate::clock::SystemClock;
use crate::config::ServiceConfig;
use crate::dispatch::callback::CallbackService;
use crate::dispatch::dispute::{DisputeSender, DisputeSenderDeps};
use crate::dispatch::fanout::{Fanout, FanoutDeps};
use crate::dispatch::gate::SmsLane;
use crate::dispatch::planner::Planner;
use crate::dispatch::secrets::BankSecrets;
use crate::dispatch::sender::{Sender, SenderDeps, TokioSleep};
use crate::inbound::report::ViewApi;
use crate::inbound::submission::SubmissionApi;
use crate::report::aggregate::{Aggregator, AggregatorDeps};
use crate::report::crypto::{ReportOpener, ReportSealer};
use crate::report::view::{ViewDeps, ViewService};
use crate::security::app_jwt::AppAuthenticator;
use crate::security::face::FaceVerifier;
use crate::security::sms_code::CodeHasher;
use crate::settings::{
    AggregateReportEnv, AppJwtEnv, BankCallbackEnv, BankCallsEnv, BankFanoutEnv, BankInquiryEnv,
    BankSecretsEnv, CommonEnv, FaceEnv, InquiryQueueEnv, ReportRetiringEnv, ReportSealEnv,
    SmsCodeEnv, SmsSenderEnv, SubmitQueryEnv, SweepEnv, ViewReportEnv,
};
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

/// The DynamoDB client every function uses (and `sdk-call-bench` measures).
pub fn dynamo_client(sdk: &aws_config::SdkConfig) -> aws_sdk_dynamodb::Client {
    let mut dynamo = aws_sdk_dynamodb::config::Builder::from(sdk);
    if metering::enabled() {
        dynamo = dynamo.interceptor(Metering);
    }
    aws_sdk_dynamodb::Client::from_conf(dynamo.build())
}

/// What every function needs: configuration, AWS configuration, the store.
struct Common {
    config: Arc<ServiceConfig>,
    sdk: aws_config::SdkConfig,
    store: Arc<DynamoStore>,
}

async fn common(env: &CommonEnv) -> Result<Common, StartupError> {
    let config = match &env.service_config {
        Some(path) => ServiceConfig::from_file(path),
        None => ServiceConfig::parse(crate::config::DEFAULT_CONFIG),
    }
    .map_err(err)?;
    config.require_real_banks().map_err(err)?;
    let config = Arc::new(config);
    let sdk = aws_config().await;
    let store = Arc::new(DynamoStore::new(
        dynamo_client(&sdk),
        Tables {
            main: env.table_name.clone(),
            users: env.users_table_name.clone(),
        },
    ));
    Ok(Common { config, sdk, store })
}

fn bank_secrets(env: &BankSecretsEnv, c: &Common) -> Result<BankSecrets, StartupError> {
    BankSecrets::parse(env.bank_secrets.expose_secret(), &c.config.banks).map_err(err)
}

fn sms(env: &SmsSenderEnv, sdk: &aws_config::SdkConfig) -> Arc<SnsSms> {
    let mut sns = aws_sdk_sns::config::Builder::from(sdk);
    if metering::enabled() {
        sns = sns.interceptor(Metering);
    }
    Arc::new(SnsSms::new(
        aws_sdk_sns::Client::from_conf(sns.build()),
        env.sms_sender_id.clone(),
    ))
}

/// The report *public* key: what every function that handles card data seals it with
/// (fan-out, callbacks, aggregator).
fn report_sealer(env: &ReportSealEnv) -> Result<Arc<ReportSealer>, StartupError> {
    Ok(Arc::new(
        ReportSealer::new(&env.report_key_id, &env.report_public_key).map_err(err)?,
    ))
}

fn code_hasher(env: &SmsCodeEnv) -> Result<CodeHasher, StartupError> {
    let key = hex::decode(env.sms_code_key.expose_secret().trim())
        .map_err(|_| err("SMS_CODE_KEY is not hex"))?;
    CodeHasher::new(&key).map_err(err)
}

fn app_authenticator(env: &AppJwtEnv) -> Result<AppAuthenticator, StartupError> {
    AppAuthenticator::new(
        &env.app_jwt_public_key,
        &env.app_jwt_issuer,
        &env.app_jwt_audience,
    )
    .map_err(err)
}

fn face_verifier(env: &FaceEnv, c: &Common) -> Result<Arc<FaceVerifier>, StartupError> {
    Ok(Arc::new(
        FaceVerifier::new(
            &env.face_public_key,
            &env.face_issuer,
            &env.face_audience,
            c.config.rules.face_token_max_age,
        )
        .map_err(err)?,
    ))
}

fn queue(env: &InquiryQueueEnv, sdk: &aws_config::SdkConfig) -> Arc<SqsInquiryQueue> {
    let mut sqs = aws_sdk_sqs::config::Builder::from(sdk);
    if metering::enabled() {
        sqs = sqs.interceptor(Metering);
    }
    Arc::new(SqsInquiryQueue::new(
        aws_sdk_sqs::Client::from_conf(sqs.build()),
        env.inquiry_queue_url.clone(),
    ))
}

fn planner_from(c: &Common, env: &InquiryQueueEnv) -> Planner {
    Planner {
        store: c.store.clone(),
        queue: queue(env, &c.sdk),
        clock: Arc::new(SystemClock),
    }
}

/// The bank-fanout function: plans a new query's legs into the inquiry queue.
pub async fn planner() -> Result<Planner, StartupError> {
    let env = BankFanoutEnv::from_env().map_err(err)?;
    let c = common(&env.common).await?;
    Ok(planner_from(&c, &env.queue))
}

/// The bank-inquiry function: sends the queued inquiries through each bank's gate.
pub async fn sender() -> Result<Sender, StartupError> {
    let env = BankInquiryEnv::from_env().map_err(err)?;
    let c = common(&env.common).await?;
    // One HTTP client and one parse of the secrets, for inquiries and disputes alike.
    let client: Arc<HttpBankClient> = Arc::new(HttpBankClient::new());
    let secrets = bank_secrets(&env.bank_secrets, &c)?;
    let fanout = fanout_from(
        &c,
        secrets.clone(),
        client.clone(),
        &env.bank_calls,
        &env.report,
    )?;
    let bank_timeout = chrono::TimeDelta::from_std(env.bank_calls.bank_timeout_ms.0)
        .map_err(|_| err("BANK_TIMEOUT_MS is too long"))?;
    Ok(Sender::new(SenderDeps {
        config: c.config.clone(),
        fanout: Arc::new(fanout),
        gate: c.store.clone(),
        queue: queue(&env.queue, &c.sdk),
        clock: Arc::new(SystemClock),
        sleep: Arc::new(TokioSleep),
        bank_timeout,
        disputes: Some(Arc::new(DisputeSender::new(DisputeSenderDeps {
            config: c.config.clone(),
            store: c.store.clone(),
            client,
            secrets,
            clock: Arc::new(SystemClock),
            bank_timeout: env.bank_calls.bank_timeout_ms.0,
        }))),
    }))
}

fn fanout_from(
    c: &Common,
    secrets: BankSecrets,
    client: Arc<HttpBankClient>,
    calls: &BankCallsEnv,
    report: &ReportSealEnv,
) -> Result<Fanout, StartupError> {
    let (config, store) = (c.config.clone(), c.store.clone());
    Ok(Fanout::new(FanoutDeps {
        secrets,
        config,
        profiles: store.clone(),
        store,
        client,
        clock: Arc::new(SystemClock),
        callback_base: calls.callback_base(),
        bank_timeout: calls.bank_timeout_ms.0,
        sealer: report_sealer(report)?,
    }))
}

pub async fn callback_service() -> Result<CallbackService, StartupError> {
    let env = BankCallbackEnv::from_env().map_err(err)?;
    let c = common(&env.common).await?;
    Ok(CallbackService {
        secrets: bank_secrets(&env.bank_secrets, &c)?,
        config: c.config,
        store: c.store,
        clock: Arc::new(SystemClock),
        sealer: report_sealer(&env.report)?,
    })
}

fn aggregator_from(
    c: &Common,
    report: &ReportSealEnv,
    sms_env: &SmsSenderEnv,
) -> Result<Aggregator, StartupError> {
    Ok(Aggregator::new(AggregatorDeps {
        config: c.config.clone(),
        queries: c.store.clone(),
        reports: c.store.clone(),
        users: c.store.clone(),
        profiles: c.store.clone(),
        sms: sms(sms_env, &c.sdk),
        sms_admission: sms_lane(c),
        sealer: report_sealer(report)?,
        clock: Arc::new(SystemClock),
        metrics: Arc::new(EmfMetrics),
    }))
}

/// The aggregate-report function: holds only the report *public* key.
pub async fn aggregator() -> Result<Aggregator, StartupError> {
    let env = AggregateReportEnv::from_env().map_err(err)?;
    let c = common(&env.common).await?;
    aggregator_from(&c, &env.report, &env.sms)
}

/// The current report key and, while one is being retired, the previous one.
fn report_opener(
    key_id: &str,
    private: &SecretString,
    retiring: &ReportRetiringEnv,
) -> Result<ReportOpener, StartupError> {
    let opener = ReportOpener::new(key_id, private.expose_secret()).map_err(err)?;
    match retiring.previous().map_err(err)? {
        Some((previous_id, previous)) => opener
            .with_previous(previous_id, previous.expose_secret())
            .map_err(err),
        None => Ok(opener),
    }
}

/// The view-report function: the only holder of the report private key.
pub async fn view_api() -> Result<ViewApi, StartupError> {
    let env = ViewReportEnv::from_env().map_err(err)?;
    let c = common(&env.common).await?;
    Ok(ViewApi {
        service: ViewService::new(ViewDeps {
            face: face_verifier(&env.face, &c)?,
            config: c.config.clone(),
            queries: c.store.clone(),
            reports: c.store.clone(),
            verifications: c.store.clone(),
            codes: code_hasher(&env.sms_code)?,
            opener: report_opener(
                &env.report.report_key_id,
                &env.report.report_private_key,
                &env.retiring,
            )?,
            clock: Arc::new(SystemClock),
            disputes: c.store.clone(),
        }),
        auth: app_authenticator(&env.app_jwt)?,
    })
}

pub async fn sweeper() -> Result<Sweeper, StartupError> {
    let env = SweepEnv::from_env().map_err(err)?;
    let c = common(&env.common).await?;
    let aggregator = Arc::new(aggregator_from(&c, &env.report, &env.sms)?);
    Ok(Sweeper {
        queries: c.store.clone(),
        reports: c.store.clone(),
        planner: Arc::new(planner_from(&c, &env.queue)),
        aggregator,
        clock: Arc::new(SystemClock),
        config: c.config.clone(),
        disputes: c.store.clone(),
        gate: c.store,
        metrics: Arc::new(EmfMetrics),
    })
}

pub async fn submission_api() -> Result<SubmissionApi, StartupError> {
    let env = SubmitQueryEnv::from_env().map_err(err)?;
    let c = common(&env.common).await?;
    let service = SubmissionService::new(SubmissionDeps {
        face: face_verifier(&env.face, &c)?,
        config: c.config.clone(),
        profiles: c.store.clone(),
        store: c.store.clone(),
        sms: sms(&env.sms, &c.sdk),
        sms_admission: sms_lane(&c),
        clock: Arc::new(SystemClock),
        codes: code_hasher(&env.sms_code)?,
    });
    Ok(SubmissionApi {
        service: Arc::new(service),
        auth: app_authenticator(&env.app_jwt)?,
    })
}

/// The SMS channel's rate, shared through the gate's `SMS` lane in the table.
fn sms_lane(c: &Common) -> Arc<SmsLane> {
    Arc::new(SmsLane {
        gate: c.store.clone(),
        rate_per_second: c.config.sms_channel.rate_per_second,
    })
}
