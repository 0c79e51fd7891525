//! One contract per port, each case run on both implementations: the in-memory double
//! the unit tests use (`shared::adapters::memory`, feature `test-util`) and the real
//! adapter on the local stack (the DynamoDB adapter on DynamoDB Local, with its
//! conditional writes and transactions; the SNS adapter on the SNS emulator), so the
//! double cannot drift from the real semantics. A case is a plain `async fn` generic over
//! the implementation; [`contract!`] makes it a test of `memory` and one of the real side.
//!
//! The gate (`dispatch::gate::Gate`) runs the cases of `dispatch::gate_contract`; the
//! inquiry queue runs on moto's SQS.
//!
//! The bank client (`dispatch::client::BankClient`) has no contract here: it is a bare
//! transport, and its double (`domain::test_support::ScriptedBanks`) replies what a
//! script says while the HTTP client replies what the simulator's modes say, so a
//! contract would compare the two scripting tools rather than the port. The HTTP client
//! is checked against the simulator by the pipeline suites and `infra/bank-check`.

use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, TimeDelta, Utc};
use futures::future::{join_all, BoxFuture};
use serde_json::json;
use shared::adapters::dynamo::DynamoStore;
use shared::adapters::memory::MemoryStore;
use shared::clock::Clock;
use shared::model::bank::BankCode;
use shared::model::ids::{QueryId, UserId, VerificationId};
use shared::model::purpose::Purpose;
use shared::model::timestamp;
use shared::ports::{DisputeStore, QueryStore, ReportStore, SubmissionStore};
use shared::records::{
    ConsentRecord, IdempotencyRecord, QueryPhase, QueryRecord, Submission, UserState,
    VerificationRecord,
};
use testkit::submission::Fixture;
use tokio::sync::Barrier;

mod dispute_store;
mod gate;
mod inquiry_queue;
mod profile_store;
mod query_store;
mod report_store;
mod sms_sender;
mod submission_store;

/// Everything a contract case may call: the four store ports.
pub trait Store: SubmissionStore + QueryStore + ReportStore + DisputeStore {}
impl<T: SubmissionStore + QueryStore + ReportStore + DisputeStore> Store for T {}

/// One case's world: a store of its own, a user it may write, and the instant it runs
/// at (whole seconds, as the table stores instants).
pub struct World<S> {
    pub store: Arc<S>,
    pub user: UserId,
    pub now: DateTime<Utc>,
    /// The count of a query's unsettled legs, as stored (no port reads it: only the
    /// aggregation trigger does, from the stream).
    unsettled: Box<dyn Fn(QueryId) -> BoxFuture<'static, Option<u64>> + Send + Sync>,
    fixture: Option<Fixture>,
}

impl World<MemoryStore> {
    pub fn memory() -> Self {
        let store = Arc::new(MemoryStore::default());
        let probe = store.clone();
        Self {
            unsettled: Box::new(move |q| {
                let n = probe.unsettled(&q).map(|n| n as u64);
                Box::pin(async move { n })
            }),
            store,
            user: UserId::parse("memory-user").unwrap(),
            now: timestamp::parse("2026-11-28T02:00:00Z").unwrap(),
            fixture: None,
        }
    }
}

impl World<DynamoStore> {
    /// Tables of its own on DynamoDB Local and a seeded user.
    pub async fn dynamo() -> Self {
        let f = Fixture::new().await;
        let user = f.user().await.id;
        let now = timestamp::parse(&timestamp::format(f.clock.now())).unwrap();
        let (client, table) = (
            f.env.clients.dynamodb.clone(),
            f.env.table("CardLookupTable").to_owned(),
        );
        Self {
            store: f.store.clone(),
            user,
            now,
            unsettled: Box::new(move |q| {
                let (client, table) = (client.clone(), table.clone());
                Box::pin(async move {
                    let item = client
                        .get_item()
                        .table_name(table)
                        .key("pk", AttributeValue::S(format!("QUERY#{q}")))
                        .key("sk", AttributeValue::S("QUERY".into()))
                        .consistent_read(true)
                        .send()
                        .await
                        .unwrap()
                        .item?;
                    item.get("unsettled")?.as_n().ok()?.parse().ok()
                })
            }),
            fixture: Some(f),
        }
    }
}

impl<S> World<S> {
    /// The DynamoDB world's fixture (its tables, for cleanup), for a world built on it.
    pub fn into_fixture(self) -> Option<Fixture> {
        self.fixture
    }

    pub async fn unsettled(&self, q: QueryId) -> Option<u64> {
        (self.unsettled)(q).await
    }

    /// Writes an item as it is into the template's table `logical_id`: one the app's user
    /// system writes, or a state only a crash leaves (the DynamoDB world only).
    pub async fn put_item(
        &self,
        logical_id: &str,
        item: std::collections::HashMap<String, AttributeValue>,
    ) {
        let f = self.fixture.as_ref().expect("a DynamoDB world");
        f.env
            .clients
            .dynamodb
            .put_item()
            .table_name(f.env.table(logical_id))
            .set_item(Some(item))
            .send()
            .await
            .expect("the item is stored");
    }

    /// How many items of the query's partition have a sort key starting `prefix` (the
    /// DynamoDB world only: `None` on the memory store, which has no items).
    pub async fn items_of(&self, q: QueryId, prefix: &str) -> Option<usize> {
        let f = self.fixture.as_ref()?;
        // A count is per page too (1 MB read each).
        let (mut count, mut start) = (0, None);
        loop {
            let out = f
                .env
                .clients
                .dynamodb
                .query()
                .table_name(f.env.table("CardLookupTable"))
                .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
                .expression_attribute_values(":pk", AttributeValue::S(format!("QUERY#{q}")))
                .expression_attribute_values(":p", AttributeValue::S(prefix.to_owned()))
                .select(aws_sdk_dynamodb::types::Select::Count)
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .unwrap();
            count += out.count as usize;
            start = out.last_evaluated_key;
            if start.is_none() {
                return Some(count);
            }
        }
    }

    pub async fn cleanup(self) {
        if let Some(f) = self.fixture {
            f.env.cleanup().await;
        }
    }
}

/// Makes each named case (`async fn case<S: Store>(w: &World<S>)`) a test on the memory
/// store and one on DynamoDB Local. `contract!(Kind, real; cases)` does the same with the
/// world type `Kind` (`Kind::memory()`, `Kind::real().await`, `cleanup`), the real side's
/// tests in module `real`.
macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        $crate::contracts::contract!(crate::contracts::World, dynamo; $($case),*);
    };
    ($($world:ident)::+, $real:ident; $($case:ident),* $(,)?) => {
        mod memory {
            use $($world)::+ as ContractWorld;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(&ContractWorld::memory()).await;
                }
            )*
        }

        mod $real {
            use $($world)::+ as ContractWorld;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let w = ContractWorld::$real().await;
                    super::$case(&w).await;
                    w.cleanup().await;
                }
            )*
        }
    };
}
pub(crate) use contract;

/// Runs `f(i)` for `0..n` at once (released by a barrier) and collects the results.
pub async fn at_once<T, F, Fut>(n: usize, f: F) -> Vec<T>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let barrier = Barrier::new(n);
    join_all((0..n).map(|i| {
        let fut = f(i);
        let barrier = &barrier;
        async move {
            barrier.wait().await;
            fut.await
        }
    }))
    .await
}

pub fn bank(code: &str) -> BankCode {
    serde_json::from_value(json!(code)).expect("a bank code")
}

pub const BANKS: [&str; 4] = ["ICBC", "CMB", "BOC", "CZB"];

/// An unused SUBMIT_QUERY verification of `user`, valid for five minutes from `now`.
pub fn verification(user: &UserId, now: DateTime<Utc>) -> VerificationRecord {
    VerificationRecord {
        verification_id: VerificationId::generate(),
        user_id: user.clone(),
        purpose: Purpose::SubmitQuery,
        code_hash: "not-compared-here".into(),
        expires_at: now + TimeDelta::minutes(5),
        attempts: 0,
        used: false,
    }
}

/// A submission of a new query to [`BANKS`] that the store accepts as it stands: its
/// verification stored and its idempotency key claimed, as the service does first.
pub async fn prepared(store: &impl Store, user: &UserId, now: DateTime<Utc>) -> Submission {
    prepared_for(store, user, now, &BANKS.map(bank)).await
}

/// [`prepared`] for the given banks.
pub async fn prepared_for(
    store: &impl Store,
    user: &UserId,
    now: DateTime<Utc>,
    banks: &[BankCode],
) -> Submission {
    let q = QueryId::generate();
    let v = verification(user, now);
    store.put_verification(&v).await.unwrap();
    let claim = IdempotencyRecord {
        user_id: user.clone(),
        key: format!("k-{q}"),
        request_fingerprint: "f".into(),
        status: 0,
        response_body: String::new(),
        expires_at: now + TimeDelta::days(1),
        in_progress: true,
        owner: Some(format!("owner-{q}")),
        lease_until: Some(now + TimeDelta::seconds(30)),
    };
    store.claim_idempotency(&claim, now).await.unwrap();
    let state = store.user_state(user).await.unwrap();
    Submission {
        query: QueryRecord {
            query_id: q,
            user_id: user.clone(),
            phase: QueryPhase::Collecting,
            submitted_at: now,
            report_due_by: now + TimeDelta::hours(24),
            collect_until: now + TimeDelta::hours(24) - TimeDelta::minutes(10),
            banks: banks.to_vec(),
            report_generated_at: None,
            report_expires_at: None,
            last_viewed_at: None,
            report_deleted_at: None,
            views: Vec::new(),
            views_total: 0,
            notified_at: None,
        },
        consent: ConsentRecord {
            query_id: q,
            user_id: user.clone(),
            agreement_version: "v1".into(),
            accepted_at: now,
            source_ip: None,
        },
        idempotency: IdempotencyRecord {
            status: 202,
            response_body: "{}".into(),
            in_progress: false,
            lease_until: None,
            ..claim
        },
        state: UserState {
            active_query_id: Some(q),
            ..state.clone()
        },
        expected_state_version: state.version,
        verification_id: v.verification_id,
        max_code_attempts: 5,
        face_nonce: format!("face-{q}"),
        face_nonce_expires_at: now + TimeDelta::minutes(5),
    }
}

/// A new query of `user` to [`BANKS`], submitted, with its legs made as fan-out makes
/// them first: its id.
pub async fn submitted(store: &impl Store, user: &UserId, now: DateTime<Utc>) -> QueryId {
    let s = prepared(store, user, now).await;
    store.submit(&s).await.expect("the submission is accepted");
    store
        .ensure_legs(&s.query)
        .await
        .expect("the legs are made");
    s.query.query_id
}

/// `n` bank codes as a national configuration could hold them (`ZAAA`, `ZAAB`, …).
pub fn many_banks(n: usize) -> Vec<BankCode> {
    (0..n)
        .map(|i| bank(&testkit::national::bank_code(i)))
        .collect()
}
