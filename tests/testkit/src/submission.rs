//! The submission service wired to the real adapters (DynamoDB Local, the SNS emulator)
//! with a manual clock: for integration tests and the latency benchmark.

use std::sync::Arc;

use serde_json::{json, Value};
use shared::adapters::dynamo::{DynamoStore, Tables};
use shared::adapters::sns::SnsSms;
use shared::clock::{Clock, ManualClock};
use shared::config::{ServiceConfig, DEFAULT_CONFIG};
use shared::dispatch::gate::SmsLane;
use shared::security::dev;
use shared::security::face::FaceVerifier;
use shared::security::sms_code::CodeHasher;
use shared::submission::api::SubmitRequest;
use shared::submission::{SubmissionDeps, SubmissionService};

use crate::counting::RequestCounter;
use crate::seed::{self, SeedUser, TableRefs};
use crate::TestEnv;

const FACE_ISSUER: &str = "face-provider.test";
const FACE_AUDIENCE: &str = "card-lookup.test";

pub struct Fixture {
    pub env: TestEnv,
    pub service: Arc<SubmissionService>,
    pub clock: Arc<ManualClock>,
    pub store: Arc<DynamoStore>,
    /// DynamoDB requests sent by the service's client.
    pub dynamo_requests: RequestCounter,
    face_private: String,
}

pub struct User {
    pub id: shared::model::ids::UserId,
    pub phone: String,
}

impl Fixture {
    pub async fn new() -> Self {
        let env = TestEnv::new().await;
        let counter = RequestCounter::default();
        let conf = env
            .clients
            .dynamodb
            .config()
            .to_builder()
            .interceptor(counter.clone())
            .build();
        let tables = Tables {
            main: env.table("CardLookupTable").to_owned(),
            users: env.table("UsersTable").to_owned(),
        };
        let store = Arc::new(DynamoStore::new(
            aws_sdk_dynamodb::Client::from_conf(conf),
            tables,
        ));
        let config = Arc::new(ServiceConfig::parse(DEFAULT_CONFIG).expect("shipped config"));
        let (face_private, face_public) = dev::generate_ed25519();
        let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
        let mut key = [0u8; 32];
        rand::fill(&mut key);
        let service = Arc::new(SubmissionService::new(SubmissionDeps {
            face: Arc::new(
                FaceVerifier::new(
                    &face_public,
                    FACE_ISSUER,
                    FACE_AUDIENCE,
                    config.rules.face_token_max_age,
                )
                .expect("face key"),
            ),
            config,
            profiles: store.clone(),
            store: store.clone(),
            sms: Arc::new(SnsSms::new(env.clients.sns.clone(), None)),
            // The gate's SMS lane on DynamoDB Local, wide enough that the suites' bursts
            // at one manual instant are not refused by the channel (its own tests are).
            sms_admission: Arc::new(SmsLane {
                gate: store.clone(),
                rate_per_second: 200,
            }),
            clock: clock.clone(),
            codes: CodeHasher::new(&key).expect("32-byte key"),
        }));
        Self {
            env,
            service,
            clock,
            store,
            dynamo_requests: counter,
            face_private,
        }
    }

    /// A new eligible user (real-name, Shanghai) with a phone number of its own.
    pub async fn user(&self) -> User {
        let ulid = ulid::Ulid::generate();
        let id = format!("u-{}", ulid.to_string().to_lowercase());
        let profile = seed::profile(&id, (ulid.random() % 100_000_000) as u32, true, "31");
        let user = User {
            id: profile.user_id.clone(),
            phone: profile.phone.e164().to_owned(),
        };
        let tables = TableRefs {
            main: self.env.table("CardLookupTable").to_owned(),
            users: self.env.table("UsersTable").to_owned(),
        };
        seed::put_user(
            &self.env.clients.dynamodb,
            &tables,
            &SeedUser {
                profile,
                description: "test user",
                locked: false,
            },
            self.clock.now(),
        )
        .await
        .expect("user stored");
        user
    }

    /// Requests a SUBMIT_QUERY code; reads it back from the SNS emulator.
    pub async fn code(&self, user: &User) -> (String, String) {
        let created = self
            .service
            .create_verification(
                &user.id,
                serde_json::from_value(json!({"purpose": "SUBMIT_QUERY"})).expect("request"),
            )
            .await
            .expect("a code is sent");
        let sms = crate::sms::sent_sms_to(&self.env.clients.endpoints.sns_endpoint, &user.phone)
            .await
            .expect("SNS emulator answers");
        let last = sms.last().expect("the code arrived in the emulator");
        (created.verification_id, crate::api::sms_code(&last.message))
    }

    pub fn face(&self, user: &User) -> String {
        dev::FaceProvider {
            private_pem: &self.face_private,
            issuer: FACE_ISSUER,
            audience: FACE_AUDIENCE,
        }
        .token(
            user.id.as_str(),
            "SUBMIT_QUERY",
            "pass",
            self.clock.now(),
            &ulid::Ulid::generate().to_string(),
        )
        .expect("face token")
    }

    /// A new user's query to every bank, submitted through the service, with its legs
    /// made: its id.
    pub async fn submitted_query(&self) -> shared::model::ids::QueryId {
        let user = self.user().await;
        let code = self.code(&user).await;
        let (raw, body) = self.body(&code, &self.face(&user));
        let (_, accepted) = self
            .service
            .submit(&user.id, Some("k"), &raw, body, None)
            .await
            .expect("the submission is accepted");
        let q = shared::model::ids::QueryId::parse(accepted["query_id"].as_str().unwrap())
            .expect("a query id");
        // Its legs, as fan-out makes them first.
        use shared::ports::QueryStore;
        let record = self.store.query(&q).await.unwrap().expect("the query");
        self.store.ensure_legs(&record).await.expect("the legs");
        q
    }

    /// A submission body for all 16 banks, as JSON and parsed.
    pub fn body(&self, verification: &(String, String), face: &str) -> (Value, SubmitRequest) {
        let banks: Vec<String> = self
            .service
            .config()
            .banks
            .all()
            .iter()
            .map(|b| b.code.to_string())
            .collect();
        let raw = json!({
            "banks": banks,
            "consent": {"agreement_version": self.service.config().agreement_version, "accepted": true},
            "verification": {"verification_id": verification.0, "sms_code": verification.1},
            "face_token": face,
            "payment_password": seed::PAYMENT_PASSWORD,
        });
        let parsed = serde_json::from_value(raw.clone()).expect("a valid body");
        (raw, parsed)
    }
}
