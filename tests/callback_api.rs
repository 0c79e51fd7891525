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
//! python3 tools/local/stack.py exec --with-api -- cargo test -p system-tests --test callback_api
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
use testkit::api::{bank_cards, ready_sms, report_cards, Api, Reply, TestUser, UserKind};

const ALL_BANKS: [&str; 16] = [
    "ICBC", "ABC", "BOC", "CCB", "BOCOM", "PSBC", "CMB", "SPDB", "CITIC", "CEB", "HXB", "CMBC",
    "CGB", "PAB", "CIB", "CZB",
];
const WAIT: Duration = Duration::from_secs(60);

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
    time::OffsetDateTime::now_utc().unix_timestamp()
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
            time::OffsetDateTime::now_utc(),
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
                let leg = self.leg_item(&query_id, bank).await;
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

#[tokio::test]
async fn a_signed_callback_is_recorded_with_its_cards() {
    let b = Banks::get().await;
    let p = b.pending_query(&["ICBC", "ABC"]).await;
    let body = answer(&p.query_id, p.inquiry("ICBC"), &some_cards());
    let (reply, h) = b.callback("ICBC", &body).await;
    assert_eq!(reply.status, 204, "{reply:?}");
    assert!(reply.body.is_none());

    let raw = b.leg_item(&p.query_id, "ICBC").await;
    assert_eq!(
        raw.get("state"),
        Some(&AttributeValue::S("ANSWERED".into()))
    );
    assert_eq!(
        raw.get("answer_digest"),
        Some(&AttributeValue::S(hex_sha256(body.as_bytes()))),
        "the digest of the raw body, for idempotent repeats"
    );
    let leg = b
        .store()
        .leg(
            &QueryId::parse(&p.query_id).unwrap(),
            &shared::config::ServiceConfig::parse(shared::config::DEFAULT_CONFIG)
                .unwrap()
                .banks
                .parse("ICBC")
                .unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(serde_json::to_value(&leg.cards).unwrap(), some_cards());
    assert!(b.nonce_stored("ICBC", &h.nonce).await, "the nonce is spent");
    // The other leg still waits, and the app sees ICBC as responded.
    let abc = b.leg_item(&p.query_id, "ABC").await;
    assert_eq!(
        abc.get("state"),
        Some(&AttributeValue::S("ACCEPTED".into()))
    );
    let detail = b
        .api
        .get_json(
            &format!("/v1/card-queries/{}", p.query_id),
            &b.api.token(&p.user),
        )
        .await
        .body
        .unwrap();
    assert_eq!(detail["report_status"], "PENDING");
    let progress: BTreeMap<String, String> = detail["progress"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["bank_code"].as_str().unwrap().to_owned(),
                x["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(progress["ICBC"], "RESPONDED", "{detail}");
    assert_ne!(progress["ABC"], "RESPONDED", "{detail}");
}

#[tokio::test]
async fn a_bad_signature_is_refused_and_nothing_is_stored() {
    let b = Banks::get().await;
    let p = b.pending_query(&["ICBC"]).await;
    let path = path_of("ICBC");
    let body = answer(&p.query_id, p.inquiry("ICBC"), &some_cards());
    let unauth = (401, "UNAUTHENTICATED");

    // Signed with another bank's key.
    let mut h = b.sign("ABC", &path, &body);
    h.bank_code = "ICBC".into();
    b.refused(
        "another bank's key",
        &p,
        &["ICBC"],
        &path,
        &h,
        &body,
        unauth,
        false,
    )
    .await;
    // Signed correctly, then the body changed (one more card).
    let h = b.sign("ICBC", &path, &body);
    let tampered = answer(
        &p.query_id,
        p.inquiry("ICBC"),
        &json!([{"kind": "DEBIT", "first4": "6222", "last4": "9999"}]),
    );
    b.refused(
        "tampered body",
        &p,
        &["ICBC"],
        &path,
        &h,
        &tampered,
        unauth,
        false,
    )
    .await;
    // Signed over another path.
    let h = b.sign("ICBC", "/v1/bank-callbacks/ABC", &body);
    b.refused(
        "another path",
        &p,
        &["ICBC"],
        &path,
        &h,
        &body,
        unauth,
        false,
    )
    .await;
    // One flipped hex digit.
    let mut h = b.sign("ICBC", &path, &body);
    let flipped = if h.signature.starts_with('0') {
        "1"
    } else {
        "0"
    };
    h.signature.replace_range(0..1, flipped);
    b.refused(
        "flipped signature",
        &p,
        &["ICBC"],
        &path,
        &h,
        &body,
        unauth,
        false,
    )
    .await;
    // X-Bank-Code differing from the path (signed correctly by that other bank).
    let h = b.sign("ABC", &path, &body);
    b.refused(
        "X-Bank-Code ABC on ICBC's path",
        &p,
        &["ICBC"],
        &path,
        &h,
        &body,
        unauth,
        false,
    )
    .await;
    // Headers missing: no signature at all.
    let before = b.leg_item(&p.query_id, "ICBC").await;
    let reply = b
        .api
        .call("POST", &path, None, &[], Some(body.clone()))
        .await;
    assert_eq!((reply.status, reply.code()), (401, Some("UNAUTHENTICATED")));
    assert_eq!(b.leg_item(&p.query_id, "ICBC").await, before);
    // After all that, the bank's own correct message is still accepted.
    let (reply, _) = b.callback("ICBC", &body).await;
    assert_eq!(reply.status, 204, "{reply:?}");
}

#[tokio::test]
async fn a_stale_timestamp_is_refused_and_nothing_is_stored() {
    let b = Banks::get().await;
    let p = b.pending_query(&["BOC"]).await;
    let path = path_of("BOC");
    let body = answer(&p.query_id, p.inquiry("BOC"), &some_cards());
    let unauth = (401, "UNAUTHENTICATED");
    for (what, offset) in [
        ("six minutes old", -360),
        ("an hour old", -3600),
        ("six minutes ahead", 360),
    ] {
        let nonce = signing::new_nonce();
        let h = b.sign_with("BOC", &path, &body, now_ts() + offset, &nonce);
        b.refused(what, &p, &["BOC"], &path, &h, &body, unauth, false)
            .await;
    }
    // Within the window it is accepted.
    let h = b.sign_with("BOC", &path, &body, now_ts() - 60, &signing::new_nonce());
    let reply = b.post(&path, &h, &body).await;
    assert_eq!(reply.status, 204, "{reply:?}");
}

#[tokio::test]
async fn a_replayed_nonce_is_refused_even_on_a_message_for_another_leg() {
    let b = Banks::get().await;
    let first = b.pending_query(&["CCB"]).await;
    let second = b.pending_query(&["CCB"]).await;
    let path = path_of("CCB");
    let nonce = signing::new_nonce();
    let body1 = answer(&first.query_id, first.inquiry("CCB"), &some_cards());
    let h1 = b.sign_with("CCB", &path, &body1, now_ts(), &nonce);
    let reply = b.post(&path, &h1, &body1).await;
    assert_eq!(reply.status, 204, "{reply:?}");
    assert!(b.nonce_stored("CCB", &nonce).await);

    // The same nonce, freshly signed over another leg's answer: a replay.
    let body2 = answer(&second.query_id, second.inquiry("CCB"), &some_cards());
    let h2 = b.sign_with("CCB", &path, &body2, now_ts(), &nonce);
    b.refused(
        "replayed nonce",
        &second,
        &["CCB"],
        &path,
        &h2,
        &body2,
        (401, "UNAUTHENTICATED"),
        true,
    )
    .await;
    let leg = b.leg_item(&second.query_id, "CCB").await;
    assert_eq!(
        leg.get("state"),
        Some(&AttributeValue::S("ACCEPTED".into()))
    );
    // With a fresh nonce the second leg's answer goes through.
    let (reply, _) = b.callback("CCB", &body2).await;
    assert_eq!(reply.status, 204, "{reply:?}");
}

#[tokio::test]
async fn another_banks_leg_is_not_found_and_nothing_is_stored() {
    let b = Banks::get().await;
    let not_found = (404, "NOT_FOUND");
    // The query has an ICBC leg too: CMB's inquiry under ICBC's name.
    let p = b.pending_query(&["ICBC", "CMB"]).await;
    let path = path_of("ICBC");
    let body = answer(&p.query_id, p.inquiry("CMB"), &some_cards());
    let h = b.sign("ICBC", &path, &body);
    b.refused(
        "CMB's inquiry called back by ICBC",
        &p,
        &["ICBC", "CMB"],
        &path,
        &h,
        &body,
        not_found,
        false,
    )
    .await;
    // The query has no ICBC leg at all.
    let q = b.pending_query(&["CMB"]).await;
    let body = answer(&q.query_id, q.inquiry("CMB"), &some_cards());
    let h = b.sign("ICBC", &path, &body);
    let items_before = b.query_items(&q.query_id).await.len();
    b.refused(
        "ICBC answering a query without an ICBC leg",
        &q,
        &["CMB"],
        &path,
        &h,
        &body,
        not_found,
        false,
    )
    .await;
    assert_eq!(
        b.query_items(&q.query_id).await.len(),
        items_before,
        "no ICBC leg was created"
    );
    // A known query and bank, but an inquiry id the leg does not have.
    let body = answer(
        &p.query_id,
        &ulid::Ulid::generate().to_string(),
        &some_cards(),
    );
    let h = b.sign("ICBC", &path, &body);
    b.refused(
        "an unknown inquiry id",
        &p,
        &["ICBC", "CMB"],
        &path,
        &h,
        &body,
        not_found,
        false,
    )
    .await;
}

#[tokio::test]
async fn an_unknown_query_is_not_found_and_nothing_is_stored() {
    let b = Banks::get().await;
    let p = b.pending_query(&["PSBC"]).await;
    let unknown = ulid::Ulid::generate().to_string();
    let body = answer(&unknown, &ulid::Ulid::generate().to_string(), &some_cards());
    let path = path_of("PSBC");
    let h = b.sign("PSBC", &path, &body);
    let reply = b.post(&path, &h, &body).await;
    assert_eq!((reply.status, reply.code()), (404, Some("NOT_FOUND")));
    assert!(
        b.query_items(&unknown).await.is_empty(),
        "nothing stored under the unknown query"
    );
    assert!(!b.nonce_stored("PSBC", &h.nonce).await);
    // An unknown query id with a real leg's inquiry id: still 404, that leg untouched.
    let body = answer(&unknown, p.inquiry("PSBC"), &some_cards());
    let h = b.sign("PSBC", &path, &body);
    b.refused(
        "unknown query, real inquiry id",
        &p,
        &["PSBC"],
        &path,
        &h,
        &body,
        (404, "NOT_FOUND"),
        false,
    )
    .await;
    assert!(b.query_items(&unknown).await.is_empty());
}

#[tokio::test]
async fn a_different_second_answer_is_refused_and_a_byte_identical_repeat_succeeds() {
    let b = Banks::get().await;
    let p = b.pending_query(&["CITIC", "CEB"]).await;
    let path = path_of("CITIC");
    let body = answer(&p.query_id, p.inquiry("CITIC"), &some_cards());
    let (reply, first) = b.callback("CITIC", &body).await;
    assert_eq!(reply.status, 204, "{reply:?}");
    let answered = b.leg_item(&p.query_id, "CITIC").await;

    // A different second answer: fewer cards, no cards, an ERROR, the same cards
    // serialised differently.
    let fewer = answer(
        &p.query_id,
        p.inquiry("CITIC"),
        &json!([{"kind": "DEBIT", "first4": "6222", "last4": "1234"}]),
    );
    let none = answer(&p.query_id, p.inquiry("CITIC"), &json!([]));
    let error = json!({"query_id": p.query_id, "inquiry_id": p.inquiry("CITIC"),
                       "status": "ERROR", "cards": []})
    .to_string();
    let reformatted =
        serde_json::to_string_pretty(&serde_json::from_str::<Value>(&body).unwrap()).unwrap();
    for (what, other) in [
        ("fewer cards", fewer),
        ("no cards", none),
        ("ERROR", error),
        ("same content, other bytes", reformatted),
    ] {
        let h = b.sign("CITIC", &path, &other);
        b.refused(
            what,
            &p,
            &["CITIC", "CEB"],
            &path,
            &h,
            &other,
            (409, "ALREADY_ANSWERED"),
            false,
        )
        .await;
    }
    // The bank repeats its answer byte for byte (fresh timestamp and nonce, as a bank
    // retrying does): an idempotent success that changes nothing.
    let query_before = b.query_item(&p.query_id).await;
    for _ in 0..2 {
        let (reply, _) = b.callback("CITIC", &body).await;
        assert_eq!(reply.status, 204, "an identical repeat: {reply:?}");
        assert_eq!(b.leg_item(&p.query_id, "CITIC").await, answered);
        assert_eq!(b.query_item(&p.query_id).await, query_before);
    }
    // The accepted message replayed as is (same nonce and timestamp): it would change
    // nothing, so it is the same idempotent success (openapi: "a message that would
    // change state must carry a nonce never used before").
    let reply = b.post(&path, &first, &body).await;
    assert_eq!(
        reply.status, 204,
        "an exact replay of the accepted message: {reply:?}"
    );
    assert_eq!(b.leg_item(&p.query_id, "CITIC").await, answered);
    assert_eq!(b.query_item(&p.query_id).await, query_before);
}

#[tokio::test]
async fn a_full_card_number_in_any_field_is_refused_and_nothing_is_stored() {
    let b = Banks::get().await;
    let p = b.pending_query(&["SPDB"]).await;
    let path = path_of("SPDB");
    let q = &p.query_id;
    let inq = p.inquiry("SPDB");
    let card =
        |first4: &str, last4: &str| json!({"kind": "DEBIT", "first4": first4, "last4": last4});
    let cases: Vec<(&str, String)> = vec![
        (
            "plain, in an extra field",
            json!({"query_id": q, "inquiry_id": inq, "status": "FOUND",
                   "cards": [card("6222", "1234")], "card_number": "6222021234567894"})
            .to_string(),
        ),
        (
            "plain 19 digits, in a card's extra field",
            json!({"query_id": q, "inquiry_id": inq, "status": "FOUND",
                   "cards": [{"kind": "DEBIT", "first4": "6222", "last4": "1234",
                              "pan": "6222021234567891234"}]})
            .to_string(),
        ),
        (
            "spaced, in first4",
            json!({"query_id": q, "inquiry_id": inq, "status": "FOUND",
                   "cards": [card("6222 0212 3456 7894", "7894")]})
            .to_string(),
        ),
        (
            "dashed, in last4",
            json!({"query_id": q, "inquiry_id": inq, "status": "FOUND",
                   "cards": [card("6222", "6222-0212-3456-7894")]})
            .to_string(),
        ),
        (
            "spaced, in inquiry_id",
            json!({"query_id": q, "inquiry_id": "4111 1111 1111 1111", "status": "FOUND",
                   "cards": [card("4111", "1111")]})
            .to_string(),
        ),
        (
            "plain, in status",
            json!({"query_id": q, "inquiry_id": inq, "status": "6222021234567894",
                   "cards": [card("6222", "1234")]})
            .to_string(),
        ),
        (
            "plain, as a key",
            json!({"query_id": q, "inquiry_id": inq, "status": "FOUND",
                   "cards": [card("6222", "1234")], "6222021234567894": true})
            .to_string(),
        ),
        (
            "as a number, not a string",
            format!(
                r#"{{"query_id":"{q}","inquiry_id":"{inq}","status":"FOUND","cards":[{{"kind":"DEBIT","first4":"6222","last4":"1234"}}],"n":6222021234567894}}"#
            ),
        ),
        (
            "13 digits, spaced",
            json!({"query_id": q, "inquiry_id": inq, "status": "FOUND",
                   "cards": [card("6222", "1234")], "note": "4222 2222 2222 2"})
            .to_string(),
        ),
    ];
    for (what, body) in &cases {
        let h = b.sign("SPDB", &path, body);
        b.refused(
            what,
            &p,
            &["SPDB"],
            &path,
            &h,
            body,
            (422, "CARD_NUMBER_REJECTED"),
            false,
        )
        .await;
    }
    // A correct answer still goes through afterwards.
    let ok = answer(q, inq, &some_cards());
    let (reply, _) = b.callback("SPDB", &ok).await;
    assert_eq!(reply.status, 204, "{reply:?}");
}

/// Card numbers the raw-text scan can miss: after a `+` (16 or more digits cannot be an
/// E.164 phone number, which has at most 15) and written with JSON escapes (the decoded
/// payload holds the number). Each must be 422 like any other; nothing is stored either
/// way. All cases are tried before asserting, so a failure lists every one that slipped.
#[tokio::test]
async fn a_disguised_full_card_number_is_refused_with_422() {
    let b = Banks::get().await;
    let p = b.pending_query(&["PAB"]).await;
    let path = path_of("PAB");
    let q = &p.query_id;
    let inq = p.inquiry("PAB");
    let with = |extra: &str| {
        format!(
            r#"{{"query_id":"{q}","inquiry_id":"{inq}","status":"FOUND","cards":[{{"kind":"DEBIT","first4":"6222","last4":"1234"}}],{extra}}}"#
        )
    };
    let cases: Vec<(&str, String)> = vec![
        ("'+' then 16 digits", with(r#""note":"+6222021234567894""#)),
        (
            "'+' then 19 digits",
            with(r#""note":"+6222021234567891234""#),
        ),
        (
            "spaced with JSON-escaped spaces",
            with(r#""note":"6222\u00200212\u00203456\u00207894""#),
        ),
        (
            "JSON-escaped digits",
            with(
                r#""note":"\u0036\u0032\u0032\u0032\u0030\u0032\u0031\u0032\u0033\u0034\u0035\u0036\u0037\u0038\u0039\u0034""#,
            ),
        ),
    ];
    let before = b.leg_item(q, "PAB").await;
    let query_before = b.query_item(q).await;
    let mut slipped = Vec::new();
    for (what, body) in &cases {
        let h = b.sign("PAB", &path, body);
        let reply = b.post(&path, &h, body).await;
        if (reply.status, reply.code()) != (422, Some("CARD_NUMBER_REJECTED")) {
            slipped.push(format!("{what} → {} {:?}", reply.status, reply.code()));
        }
        assert!(reply.status >= 400, "{what} was accepted: {reply:?}");
        assert_eq!(
            b.leg_item(q, "PAB").await,
            before,
            "{what}: the leg changed"
        );
        assert_eq!(
            b.query_item(q).await,
            query_before,
            "{what}: the query changed"
        );
        assert!(
            !b.nonce_stored("PAB", &h.nonce).await,
            "{what}: nonce stored"
        );
    }
    assert!(
        slipped.is_empty(),
        "not refused as card numbers (422 CARD_NUMBER_REJECTED): {slipped:#?}"
    );
}

#[tokio::test]
async fn a_malformed_answer_is_refused_and_nothing_is_stored() {
    let b = Banks::get().await;
    let p = b.pending_query(&["HXB"]).await;
    let path = path_of("HXB");
    let q = &p.query_id;
    let inq = p.inquiry("HXB");
    let cases: Vec<(&str, String)> = vec![
        ("not JSON", "{\"query_id\": ".to_owned()),
        ("empty", String::new()),
        ("an array", "[]".to_owned()),
        (
            "cards missing",
            json!({"query_id": q, "inquiry_id": inq, "status": "NONE"}).to_string(),
        ),
        (
            "an unknown field",
            json!({"query_id": q, "inquiry_id": inq, "status": "NONE", "cards": [], "note": "x"})
                .to_string(),
        ),
        (
            "FOUND without cards",
            json!({"query_id": q, "inquiry_id": inq, "status": "FOUND", "cards": []}).to_string(),
        ),
        (
            "NONE with cards",
            json!({"query_id": q, "inquiry_id": inq, "status": "NONE", "cards": some_cards()})
                .to_string(),
        ),
        (
            "an unknown status",
            json!({"query_id": q, "inquiry_id": inq, "status": "MAYBE", "cards": []}).to_string(),
        ),
        (
            "first4 of five digits",
            json!({"query_id": q, "inquiry_id": inq, "status": "FOUND",
                   "cards": [{"kind": "DEBIT", "first4": "62220", "last4": "1234"}]})
            .to_string(),
        ),
        (
            "an unknown card kind",
            json!({"query_id": q, "inquiry_id": inq, "status": "FOUND",
                   "cards": [{"kind": "PREPAID", "first4": "6222", "last4": "1234"}]})
            .to_string(),
        ),
        (
            "query_id not a ULID",
            json!({"query_id": "query-1", "inquiry_id": inq, "status": "NONE", "cards": []})
                .to_string(),
        ),
    ];
    for (what, body) in &cases {
        let h = b.sign("HXB", &path, body);
        b.refused(
            what,
            &p,
            &["HXB"],
            &path,
            &h,
            body,
            (400, "MALFORMED_REQUEST"),
            false,
        )
        .await;
    }
}

#[tokio::test]
async fn an_oversized_body_is_refused_and_nothing_is_stored() {
    let b = Banks::get().await;
    let p = b.pending_query(&["CMBC"]).await;
    let path = path_of("CMBC");
    let q = &p.query_id;
    let inq = p.inquiry("CMBC");
    // Valid JSON padded with whitespace: the size alone is the problem.
    let base = answer(q, inq, &json!([]));
    let pad = |total: usize| {
        let mut s = base.clone();
        s.insert_str(1, &" ".repeat(total - base.len()));
        s
    };
    for size in [16 * 1024 + 1, 64 * 1024] {
        let body = pad(size);
        assert_eq!(body.len(), size);
        let h = b.sign("CMBC", &path, &body);
        b.refused(
            &format!("{size} bytes"),
            &p,
            &["CMBC"],
            &path,
            &h,
            &body,
            (413, "PAYLOAD_TOO_LARGE"),
            false,
        )
        .await;
    }
    // Exactly 16 KiB is within the limit.
    let body = pad(16 * 1024);
    let h = b.sign("CMBC", &path, &body);
    let reply = b.post(&path, &h, &body).await;
    assert_eq!(reply.status, 204, "16 KiB is allowed: {reply:?}");
}

#[tokio::test]
async fn an_unknown_bank_in_the_path_is_unauthenticated() {
    let b = Banks::get().await;
    let p = b.pending_query(&["CGB"]).await;
    let body = answer(&p.query_id, p.inquiry("CGB"), &some_cards());
    for bank in ["XYZB", "NOBANK"] {
        let path = path_of(bank);
        // Signed with a real bank's key under the unknown code.
        let mut h = b.sign("CGB", &path, &body);
        h.bank_code = bank.into();
        h.signature = signing::signature(
            b.secret("CGB"),
            &h.timestamp,
            &h.nonce,
            "POST",
            &path,
            body.as_bytes(),
        );
        b.refused(
            &format!("unknown bank {bank}"),
            &p,
            &["CGB"],
            &path,
            &h,
            &body,
            (401, "UNAUTHENTICATED"),
            false,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_concurrent_callbacks_make_one_report_and_one_sms() {
    let b = Arc::new(Banks::get().await);
    let p = b.pending_query(&ALL_BANKS).await;
    // What each bank says: the person's cards as the simulator knows them.
    let truth = b.api.sim_truth(&p.user).await;
    let said: BTreeMap<String, Value> = ALL_BANKS
        .iter()
        .map(|bank| {
            let cards = truth[*bank].clone();
            assert!(cards.is_array(), "truth for {bank}: {truth}");
            ((*bank).to_owned(), cards)
        })
        .collect();
    let bodies: Vec<(String, String)> = ALL_BANKS
        .iter()
        .map(|bank| {
            (
                (*bank).to_owned(),
                answer(&p.query_id, p.inquiry(bank), &said[*bank]),
            )
        })
        .collect();
    // All signed first, then released together.
    let barrier = Arc::new(tokio::sync::Barrier::new(bodies.len()));
    let tasks: Vec<_> = bodies
        .into_iter()
        .map(|(bank, body)| {
            let (b, barrier) = (b.clone(), barrier.clone());
            tokio::spawn(async move {
                let path = path_of(&bank);
                let h = b.sign(&bank, &path, &body);
                barrier.wait().await;
                let reply = b.post(&path, &h, &body).await;
                (bank, reply)
            })
        })
        .collect();
    for t in tasks {
        let (bank, reply) = t.await.unwrap();
        assert_eq!(reply.status, 204, "{bank}: {reply:?}");
    }

    let record = b
        .api
        .wait_report(&p.user, &p.query_id, Duration::from_secs(60))
        .await;
    assert_eq!(record["report_status"], "READY", "{record}");
    b.api.allow_next_sms(&p.user).await;
    let reply = b.api.view_report(&p.user, &p.query_id).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let report = reply.body.unwrap();
    assert_eq!(
        report_cards(&report),
        bank_cards(said.iter().map(|(b, c)| (b.as_str(), c)))
    );
    let summary = report["summary"]["banks"].as_array().unwrap();
    assert_eq!(summary.len(), 16);
    assert!(
        summary.iter().all(|x| x["status"] == "RESPONDED"),
        "{report}"
    );
    let total: usize = said.values().map(|c| c.as_array().unwrap().len()).sum();
    assert_eq!(report["summary"]["total_cards"], total);

    // Exactly one "report ready" SMS to the user's phone: wait for it, then give a
    // second one (a second aggregation) time to show up.
    let start = std::time::Instant::now();
    while ready_sms(&b.api.sms_to(&p.user.phone).await) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no 'report ready' SMS"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(ready_sms(&b.api.sms_to(&p.user.phone).await), 1);
    // One report item; every leg answered; no bank was asked twice.
    let items = b.query_items(&p.query_id).await;
    let sks: Vec<String> = items
        .iter()
        .filter_map(|i| match i.get("sk") {
            Some(AttributeValue::S(s)) => Some(s.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(sks.iter().filter(|s| *s == "REPORT").count(), 1, "{sks:?}");
    assert_eq!(b.api.sim_inquiries(&p.user).await.len(), 16);
}
