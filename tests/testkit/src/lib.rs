//! Test and local-run support: the local AWS stack (DynamoDB Local and the SNS
//! emulator), tables created from `infra/template.yaml`, and SMS read back from the
//! emulator.

pub mod api;
pub mod counting;
pub mod journey;
pub mod load;
pub mod localkeys;
pub mod national;
pub mod openapi;
pub mod queues;
pub mod seed;
pub mod sms;
pub mod stack;
pub mod streams;
pub mod submission;
pub mod tables;
pub mod template;

use std::path::PathBuf;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::{Credentials, SharedCredentialsProvider};

pub use stack::Endpoints;
pub use tables::TableNames;
pub use template::Template;

/// The workspace root (where `infra/` and `tests/` are).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("testkit lives at tests/testkit below the workspace root")
        .to_owned()
}

/// AWS SDK configuration for the local emulators: fixed region and dummy credentials,
/// no environment look-ups (tests run in parallel threads; the environment is shared).
pub fn sdk_config() -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "test", "test", None, None, "testkit",
        )))
        .build()
}

/// Clients bound to the local stack.
#[derive(Clone, Debug)]
pub struct LocalClients {
    pub endpoints: Endpoints,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub streams: aws_sdk_dynamodbstreams::Client,
    pub sns: aws_sdk_sns::Client,
    pub sqs: aws_sdk_sqs::Client,
}

impl LocalClients {
    pub fn new(endpoints: &Endpoints) -> Self {
        let sdk = sdk_config();
        let dynamodb = aws_sdk_dynamodb::config::Builder::from(&sdk)
            .endpoint_url(&endpoints.dynamodb_endpoint)
            .build();
        let streams = aws_sdk_dynamodbstreams::config::Builder::from(&sdk)
            .endpoint_url(&endpoints.dynamodb_endpoint)
            .build();
        let sns = aws_sdk_sns::config::Builder::from(&sdk)
            .endpoint_url(&endpoints.sns_endpoint)
            .build();
        let sqs = aws_sdk_sqs::config::Builder::from(&sdk)
            .endpoint_url(endpoints.sqs())
            .build();
        Self {
            endpoints: endpoints.clone(),
            sqs: aws_sdk_sqs::Client::from_conf(sqs),
            dynamodb: aws_sdk_dynamodb::Client::from_conf(dynamodb),
            streams: aws_sdk_dynamodbstreams::Client::from_conf(streams),
            sns: aws_sdk_sns::Client::from_conf(sns),
        }
    }
}

/// One test's isolated world: clients on the shared local stack and tables of its own
/// (unique name prefix). Call [`TestEnv::cleanup`] at the end; the in-memory database
/// goes with the stack in any case.
pub struct TestEnv {
    pub clients: LocalClients,
    pub tables: TableNames,
    pub prefix: String,
}

impl TestEnv {
    pub async fn new() -> Self {
        let clients = LocalClients::new(stack::endpoints());
        let prefix = format!("t{}-", ulid::Ulid::generate().to_string().to_lowercase());
        let template = Template::load_default().expect("infra/template.yaml parses");
        let tables = tables::create_tables(&clients.dynamodb, &template, &prefix)
            .await
            .expect("tables are created from the template");
        Self {
            clients,
            tables,
            prefix,
        }
    }

    pub fn table(&self, logical_id: &str) -> &str {
        self.tables.get(logical_id)
    }

    pub async fn cleanup(self) {
        tables::delete_tables(&self.clients.dynamodb, &self.tables)
            .await
            .expect("test tables are deleted");
    }
}
