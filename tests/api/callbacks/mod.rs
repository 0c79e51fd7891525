//! `POST /v1/bank-callbacks/{bank_code}` as deployed locally: HTTP through `cargo lambda
//! watch`, signed the way a bank signs (HMAC-SHA256 with the bank's secret from
//! `.local/keys/bank_secrets.json`, over POST, the path and the raw body). The queries'
//! banks are set to `never` in the simulator for the test's person, so their legs wait in
//! ACCEPTED for a callback; the test then plays the bank.
//!
//! Every refusal is checked for its status and code, and for having stored nothing: the
//! leg item and the query item are byte-identical before and after, and the message's
//! nonce is not recorded.
//!
//! ```text
//! python3 infra/local/stack.py exec --with-api -- cargo test -p system-tests --test api callbacks::
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use shared::adapters::dynamo::{DynamoStore, Tables};
use shared::bank::signing::{self, BankSecret, SignatureHeaders};
use shared::model::ids::QueryId;
use shared::ports::QueryStore;
use shared::report::body::{open_answer, BankStatus, ReportedBank};
use shared::report::crypto::ReportOpener;
use testkit::api::{bank_cards, ready_sms, report_cards, Api, Reply, TestUser, UserKind};
use testkit::journey::ALL_BANKS;

mod answers;
mod card_numbers;
mod concurrency;
mod malformed;
mod ownership;
mod signature;

const WAIT: Duration = testkit::api::PIPELINE_WAIT;

type Item = HashMap<String, AttributeValue>;

/// The API plus the banks' secrets: a test plays the banks.
struct Banks {
    api: Api,
    secrets: HashMap<String, BankSecret>,
}

/// A query whose legs wait in ACCEPTED: bank → inquiry_id.
struct Pending {
    user: TestUser,
    query_id: String,
    inquiries: BTreeMap<String, String>,
}

impl Pending {
    fn inquiry(&self, bank: &str) -> &str {
        &self.inquiries[bank]
    }
}

fn path_of(bank: &str) -> String {
    format!("/v1/bank-callbacks/{bank}")
}

fn answer(query_id: &str, inquiry_id: &str, cards: &Value) -> String {
    let status = if cards.as_array().is_some_and(|c| c.is_empty()) {
        "NONE"
    } else {
        "FOUND"
    };
    json!({"query_id": query_id, "inquiry_id": inquiry_id, "status": status, "cards": cards})
        .to_string()
}

fn some_cards() -> Value {
    json!([
        {"kind": "DEBIT", "first4": "6222", "last4": "1234"},
        {"kind": "CREDIT", "first4": "6253", "last4": "8812"}
    ])
}

fn now_ts() -> i64 {
    chrono::Utc::now().timestamp()
}

fn hex_sha256(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

impl Banks {
    async fn get() -> Self {
        let api = Api::get().await;
        let file = api.keys.dir.join(testkit::localkeys::BANK_SECRETS_FILE);
        let text =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let raw: HashMap<String, String> = serde_json::from_str(&text).expect("secrets JSON");
        let secrets = raw
            .into_iter()
            .map(|(bank, hex)| {
                let bytes = (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
                    .collect();
                (bank, BankSecret::new(bytes).expect("a 32-byte secret"))
            })
            .collect();
        Self { api, secrets }
    }

    fn secret(&self, bank: &str) -> &BankSecret {
        self.secrets
            .get(bank)
            .unwrap_or_else(|| panic!("no secret for {bank}"))
    }

    /// Signed now by `bank` for `path`, as a bank does.
    fn sign(&self, bank: &str, path: &str, body: &str) -> SignatureHeaders {
        signing::sign(
            self.secret(bank),
            bank,
            chrono::Utc::now(),
            "POST",
            path,
            body.as_bytes(),
        )
    }

    /// Signed by `bank` with a chosen timestamp and nonce.
    fn sign_with(
        &self,
        bank: &str,
        path: &str,
        body: &str,
        timestamp: i64,
        nonce: &str,
    ) -> SignatureHeaders {
        let timestamp = timestamp.to_string();
        let signature = signing::signature(
            self.secret(bank),
            &timestamp,
            nonce,
            "POST",
            path,
            body.as_bytes(),
        );
        SignatureHeaders {
            bank_code: bank.to_owned(),
            timestamp,
            nonce: nonce.to_owned(),
            signature,
        }
    }

    async fn post(&self, path: &str, headers: &SignatureHeaders, body: &str) -> Reply {
        self.api
            .call("POST", path, None, &headers.pairs(), Some(body.to_owned()))
            .await
    }

    /// A correctly signed callback from `bank` to its own path.
    async fn callback(&self, bank: &str, body: &str) -> (Reply, SignatureHeaders) {
        let path = path_of(bank);
        let h = self.sign(bank, &path, body);
        (self.post(&path, &h, body).await, h)
    }

    async fn item(&self, pk: &str, sk: &str) -> Option<Item> {
        self.api
            .clients
            .dynamodb
            .get_item()
            .table_name(&self.api.tables.main)
            .key("pk", AttributeValue::S(pk.into()))
            .key("sk", AttributeValue::S(sk.into()))
            .consistent_read(true)
            .send()
            .await
            .expect("get_item")
            .item
    }

    async fn leg_item(&self, query_id: &str, bank: &str) -> Item {
        self.item(&format!("QUERY#{query_id}"), &format!("LEG#{bank}"))
            .await
            .unwrap_or_else(|| panic!("no leg {bank} of {query_id}"))
    }

    async fn query_item(&self, query_id: &str) -> Item {
        self.item(&format!("QUERY#{query_id}"), "QUERY")
            .await
            .expect("the query item")
    }

    /// Every item under `QUERY#<id>` (query, consent, legs, report), raw.
    async fn query_items(&self, query_id: &str) -> Vec<Item> {
        self.api
            .clients
            .dynamodb
            .query()
            .table_name(&self.api.tables.main)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", AttributeValue::S(format!("QUERY#{query_id}")))
            .consistent_read(true)
            .send()
            .await
            .expect("query")
            .items
            .unwrap_or_default()
    }

    /// Was this bank's nonce recorded as used?
    async fn nonce_stored(&self, bank: &str, nonce: &str) -> bool {
        let pk = format!("BANKNONCE#{bank}#{}", hex_sha256(nonce.as_bytes()));
        self.item(&pk, "BANKNONCE").await.is_some()
    }

    fn store(&self) -> DynamoStore {
        DynamoStore::new(
            self.api.clients.dynamodb.clone(),
            Tables {
                main: self.api.tables.main.clone(),
                users: self.api.tables.users.clone(),
            },
        )
    }

    /// A new user's query to `banks`, all set to `never` for that person: returns once
    /// every leg is ACCEPTED (the bank took the inquiry and went silent).
    async fn pending_query(&self, banks: &[&str]) -> Pending {
        let user = self.api.new_user(UserKind::Eligible).await;
        for bank in banks {
            self.api
                .sim_behave(&user, bank, json!({"mode": "never"}))
                .await;
        }
        let accepted = self.api.submit_query(&user, banks).await;
        let query_id = accepted["query_id"].as_str().unwrap().to_owned();
        let start = std::time::Instant::now();
        let mut inquiries = BTreeMap::new();
        for bank in banks {
            loop {
                // Fan-out makes the leg (the submission writes only the query).
                let leg = self
                    .item(&format!("QUERY#{query_id}"), &format!("LEG#{bank}"))
                    .await
                    .unwrap_or_default();
                if leg.get("state") == Some(&AttributeValue::S("ACCEPTED".into())) {
                    let inquiry = match leg.get("inquiry_id") {
                        Some(AttributeValue::S(s)) => s.clone(),
                        other => panic!("leg {bank} has no inquiry_id: {other:?}"),
                    };
                    inquiries.insert((*bank).to_owned(), inquiry);
                    break;
                }
                assert!(
                    start.elapsed() < WAIT,
                    "leg {bank} of {query_id} not ACCEPTED after {WAIT:?}: {leg:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Pending {
            user,
            query_id,
            inquiries,
        }
    }

    /// The leg's answer, opened with the local report key as view-report would.
    async fn opened_cards(
        &self,
        query_id: &str,
        bank: &str,
    ) -> Vec<shared::model::card::AnsweredCard> {
        let q = QueryId::parse(query_id).unwrap();
        let code = shared::config::ServiceConfig::parse(shared::config::DEFAULT_CONFIG)
            .unwrap()
            .banks
            .parse(bank)
            .unwrap();
        let store = self.store();
        let leg = store.leg(&q, &code).await.unwrap().unwrap();
        let query = store.query(&q).await.unwrap().unwrap();
        let private = std::fs::read_to_string(self.api.keys.path("report_private.hex")).unwrap();
        let opener = ReportOpener::new("report-1", &private).unwrap();
        let reported = ReportedBank {
            bank_code: code,
            status: BankStatus::Responded,
            inquiry_id: leg.inquiry_id.clone(),
            answer: None,
        };
        assert_eq!(leg.cards.len(), 1, "one envelope per answer");
        open_answer(&opener, &query, &reported, &leg.cards[0]).unwrap()
    }

    fn unsettled(query: &Item) -> i64 {
        match query.get("unsettled") {
            Some(AttributeValue::N(n)) => n.parse().unwrap(),
            other => panic!("unsettled: {other:?}"),
        }
    }

    /// Sends a correctly signed message refused for its content and checks that it
    /// failed the leg at once with `failure`, counted once on the query, spent its nonce
    /// and stored nothing of its payload (only the leg's state, failure and settlement
    /// time change, and it holds no answer).
    #[allow(clippy::too_many_arguments)]
    async fn refused_failing(
        &self,
        what: &str,
        p: &Pending,
        bank: &str,
        headers: &SignatureHeaders,
        body: &str,
        expected: (u16, &str),
        failure: &str,
    ) {
        let before = self.leg_item(&p.query_id, bank).await;
        let unsettled = Self::unsettled(&self.query_item(&p.query_id).await);
        let reply = self.post(&path_of(bank), headers, body).await;
        assert_eq!(
            (reply.status, reply.code()),
            (expected.0, Some(expected.1)),
            "{what}: {reply:?}"
        );
        let after = self.leg_item(&p.query_id, bank).await;
        assert_eq!(
            after.get("state"),
            Some(&AttributeValue::S("FAILED".into())),
            "{what}"
        );
        assert_eq!(
            after.get("failure"),
            Some(&AttributeValue::S(failure.into())),
            "{what}"
        );
        assert!(after.contains_key("settled_at"), "{what}");
        let mut keys: Vec<&String> = before.keys().chain(after.keys()).collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            if before.get(k) == after.get(k) {
                continue;
            }
            assert!(
                [
                    "state",
                    "failure",
                    "settled_at",
                    "sealed_cards",
                    "next_attempt_at",
                    "due_pk",
                    "due_at"
                ]
                .contains(&k.as_str()),
                "{what}: {k} changed"
            );
        }
        assert!(
            match after.get("sealed_cards") {
                None => true,
                Some(AttributeValue::L(l)) => l.is_empty(),
                Some(_) => false,
            },
            "{what}: {after:?}"
        );
        assert!(!after.contains_key("answer_digest"), "{what}");
        assert_eq!(
            Self::unsettled(&self.query_item(&p.query_id).await),
            unsettled - 1,
            "{what}: counted once"
        );
        assert!(
            self.nonce_stored(bank, &headers.nonce).await,
            "{what}: nonce spent"
        );
        // The leg is closed: a proper answer now is a different second answer.
        let ok = answer(&p.query_id, p.inquiry(bank), &some_cards());
        let (late, _) = self.callback(bank, &ok).await;
        assert_eq!(
            (late.status, late.code()),
            (409, Some("ALREADY_ANSWERED")),
            "{what}"
        );
        assert_eq!(self.leg_item(&p.query_id, bank).await, after, "{what}");
    }

    /// Sends a refused message and checks that nothing of it was stored: the given legs
    /// and the query item byte-identical, the nonce not recorded (unless `nonce_may_exist`,
    /// for a replayed one).
    #[allow(clippy::too_many_arguments)]
    async fn refused(
        &self,
        what: &str,
        p: &Pending,
        legs: &[&str],
        path: &str,
        headers: &SignatureHeaders,
        body: &str,
        expected: (u16, &str),
        nonce_may_exist: bool,
    ) {
        let mut before = Vec::new();
        for bank in legs {
            before.push(self.leg_item(&p.query_id, bank).await);
        }
        let query_before = self.query_item(&p.query_id).await;
        let reply = self.post(path, headers, body).await;
        assert_eq!(
            (reply.status, reply.code()),
            (expected.0, Some(expected.1)),
            "{what}: {reply:?}"
        );
        for (bank, before) in legs.iter().zip(before) {
            assert_eq!(
                self.leg_item(&p.query_id, bank).await,
                before,
                "{what}: leg {bank} changed"
            );
        }
        assert_eq!(
            self.query_item(&p.query_id).await,
            query_before,
            "{what}: the query item changed"
        );
        if !nonce_may_exist {
            for bank in ALL_BANKS {
                assert!(
                    !self.nonce_stored(bank, &headers.nonce).await,
                    "{what}: the nonce was recorded for {bank}"
                );
            }
        }
    }
}
