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
//! python3 infra/local/stack.py exec --with-api -- cargo test -p system-tests --test callback_api
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

    /// The leg's answer, opened with the local report key as view-report would.
    async fn opened_cards(
        &self,
        query_id: &str,
        bank: &str,
    ) -> Vec<shared::model::card::MaskedCard> {
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
    // Sealed: the item holds no card in clear; the report key opens the bank's cards.
    let text = format!("{raw:?}");
    for c in some_cards().as_array().unwrap() {
        let (f, l) = (c["first4"].as_str().unwrap(), c["last4"].as_str().unwrap());
        assert!(
            !(text.contains(f) && text.contains(l)),
            "{f}…{l} in clear: {text}"
        );
    }
    assert!(
        !text.contains("first4") && !text.contains("last4"),
        "{text}"
    );
    assert_eq!(leg.cards.len(), 1);
    assert_eq!(
        serde_json::to_value(b.opened_cards(&p.query_id, "ICBC").await).unwrap(),
        some_cards()
    );
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
    let path = path_of("ICBC");
    // The query has no ICBC leg at all: nothing changes.
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
    // CMB's leg answered under CMB's name with ICBC's key: not CMB's signature.
    let body = answer(&q.query_id, q.inquiry("CMB"), &some_cards());
    let mut h = b.sign("ICBC", &path_of("CMB"), &body);
    h.bank_code = "CMB".into();
    b.refused(
        "CMB's leg signed with ICBC's key",
        &q,
        &["CMB"],
        &path_of("CMB"),
        &h,
        &body,
        (401, "UNAUTHENTICATED"),
        false,
    )
    .await;
}

/// ICBC, signing correctly, names its own leg of the query with an inquiry id that is
/// not that leg's (CMB's, or one we never issued): the ids do not match, so ICBC's leg
/// fails at once; CMB's leg is untouched.
#[tokio::test]
async fn mismatched_ids_from_the_owning_bank_fail_its_leg_at_once() {
    let b = Banks::get().await;
    let path = path_of("ICBC");
    for (what, inquiry) in [
        ("CMB's inquiry called back by ICBC", None),
        (
            "an unknown inquiry id",
            Some(ulid::Ulid::generate().to_string()),
        ),
    ] {
        let p = b.pending_query(&["ICBC", "CMB"]).await;
        let inquiry = inquiry.unwrap_or_else(|| p.inquiry("CMB").to_owned());
        let cmb_before = b.leg_item(&p.query_id, "CMB").await;
        let body = answer(&p.query_id, &inquiry, &some_cards());
        let h = b.sign("ICBC", &path, &body);
        b.refused_failing(
            what,
            &p,
            "ICBC",
            &h,
            &body,
            (404, "NOT_FOUND"),
            "MISMATCHED_ANSWER",
        )
        .await;
        assert_eq!(b.leg_item(&p.query_id, "CMB").await, cmb_before, "{what}");
    }
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

/// Answers to `q`/`inq` that each hide a full card number somewhere.
fn card_number_cases(q: &str, inq: &str) -> Vec<(&'static str, String)> {
    let card =
        |first4: &str, last4: &str| json!({"kind": "DEBIT", "first4": first4, "last4": last4});
    vec![
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
    ]
}

#[tokio::test]
async fn a_full_card_number_in_any_field_fails_the_leg_and_nothing_of_it_is_stored() {
    let b = Banks::get().await;
    let path = path_of("SPDB");
    let count = card_number_cases("q", "i").len();
    // Signed by the bank that owns the leg: the leg fails at once (one query per case).
    for i in 0..count {
        let p = b.pending_query(&["SPDB", "CZB"]).await;
        let (what, body) = card_number_cases(&p.query_id, p.inquiry("SPDB")).swap_remove(i);
        let h = b.sign("SPDB", &path, &body);
        b.refused_failing(
            what,
            &p,
            "SPDB",
            &h,
            &body,
            (422, "CARD_NUMBER_REJECTED"),
            "CARD_NUMBER_IN_ANSWER",
        )
        .await;
    }
}

/// Card numbers the raw-text scan can miss: after a `+` (16 or more digits cannot be an
/// E.164 phone number, which has at most 15) and written with JSON escapes (the decoded
/// payload holds the number). Each must be 422 like any other; nothing is stored either
/// way. All cases are tried before asserting, so a failure lists every one that slipped.
#[tokio::test]
async fn a_disguised_full_card_number_is_refused_with_422() {
    let b = Banks::get().await;
    let path = path_of("PAB");
    let cases = |q: &str, inq: &str| -> Vec<(&'static str, String)> {
        let with = |extra: &str| {
            format!(
                r#"{{"query_id":"{q}","inquiry_id":"{inq}","status":"FOUND","cards":[{{"kind":"DEBIT","first4":"6222","last4":"1234"}}],{extra}}}"#
            )
        };
        vec![
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
            (
                "grouped by no-break spaces",
                with(r#""note":"6222\u00a00212\u00a03456\u00a07894""#),
            ),
            (
                "grouped by ideographic spaces",
                with("\"note\":\"6222\u{3000}0212\u{3000}3456\u{3000}7894\""),
            ),
            ("grouped by dots", with(r#""note":"6222.0212.3456.7894""#)),
            (
                "grouped by en dashes",
                with("\"note\":\"6222\u{2013}0212\u{2013}3456\u{2013}7894\""),
            ),
            (
                "grouped by runs of spaces",
                with(r#""note":"6222   0212  3456    7894""#),
            ),
        ]
    };
    let count = cases("q", "i").len();
    for i in 0..count {
        let p = b.pending_query(&["PAB", "CZB"]).await;
        let (what, body) = cases(&p.query_id, p.inquiry("PAB")).swap_remove(i);
        let h = b.sign("PAB", &path, &body);
        b.refused_failing(
            what,
            &p,
            "PAB",
            &h,
            &body,
            (422, "CARD_NUMBER_REJECTED"),
            "CARD_NUMBER_IN_ANSWER",
        )
        .await;
    }
}

#[tokio::test]
async fn a_malformed_answer_is_refused_and_nothing_is_stored() {
    let b = Banks::get().await;
    let p = b.pending_query(&["HXB"]).await;
    let path = path_of("HXB");
    // Bodies that name no leg of ours (not JSON, no query id): nothing changes.
    let q = &p.query_id;
    let inq = p.inquiry("HXB");
    let cases: Vec<(&str, String)> = malformed_cases(q, inq)
        .into_iter()
        .filter(|(what, _)| NAMES_NO_LEG.contains(what))
        .collect();
    assert_eq!(cases.len(), NAMES_NO_LEG.len());
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

const NAMES_NO_LEG: [&str; 4] = ["not JSON", "empty", "an array", "query_id not a ULID"];

fn malformed_cases(q: &str, inq: &str) -> Vec<(&'static str, String)> {
    vec![
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
    ]
}

/// A malformed answer that names its leg, signed by the bank that owns it: the leg fails
/// at once (one query per case).
#[tokio::test]
async fn a_malformed_answer_naming_its_leg_fails_the_leg_at_once() {
    let b = Banks::get().await;
    let path = path_of("HXB");
    let named: Vec<usize> = malformed_cases("q", "i")
        .iter()
        .enumerate()
        .filter(|(_, (what, _))| !NAMES_NO_LEG.contains(what))
        .map(|(i, _)| i)
        .collect();
    assert!(named.len() >= 7);
    for i in named {
        let p = b.pending_query(&["HXB", "CZB"]).await;
        let (what, body) = malformed_cases(&p.query_id, p.inquiry("HXB")).swap_remove(i);
        let h = b.sign("HXB", &path, &body);
        b.refused_failing(
            what,
            &p,
            "HXB",
            &h,
            &body,
            (400, "MALFORMED_REQUEST"),
            "MALFORMED_ANSWER",
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

/// Twenty correctly signed callbacks for one leg at the same instant, half refused for a
/// leaked card number and half accepted (each a different answer): exactly one settles
/// the leg (the query's counter goes down by one), and the replies agree with who won.
#[tokio::test]
async fn twenty_concurrent_refused_and_accepted_callbacks_settle_a_leg_once() {
    let b = Arc::new(Banks::get().await);
    for round in 0..2 {
        let p = b.pending_query(&["CEB", "CZB"]).await;
        let unsettled = Banks::unsettled(&b.query_item(&p.query_id).await);
        let bodies: Vec<String> = (0..20)
            .map(|i| {
                let cards = json!([{"kind": "DEBIT", "first4": "6222", "last4": format!("{:04}", 1000 + i)}]);
                let mut v: Value =
                    serde_json::from_str(&answer(&p.query_id, p.inquiry("CEB"), &cards)).unwrap();
                if i % 2 == 0 {
                    v["note"] = "6222 0212 3456 7894".into();
                }
                v.to_string()
            })
            .collect();
        let barrier = Arc::new(tokio::sync::Barrier::new(bodies.len()));
        let tasks: Vec<_> = bodies
            .iter()
            .cloned()
            .map(|body| {
                let (b, barrier) = (b.clone(), barrier.clone());
                tokio::spawn(async move {
                    let path = path_of("CEB");
                    let h = b.sign("CEB", &path, &body);
                    barrier.wait().await;
                    b.post(&path, &h, &body).await
                })
            })
            .collect();
        let mut replies = Vec::new();
        for t in tasks {
            replies.push(t.await.unwrap());
        }
        let leg = b.leg_item(&p.query_id, "CEB").await;
        assert_eq!(
            Banks::unsettled(&b.query_item(&p.query_id).await),
            unsettled - 1,
            "round {round}: exactly one settlement"
        );
        let accepted: Vec<usize> = (0..replies.len())
            .filter(|i| replies[*i].status == 204)
            .collect();
        for (i, r) in replies.iter().enumerate() {
            let expected: &[u16] = if i % 2 == 0 { &[422] } else { &[204, 409] };
            assert!(expected.contains(&r.status), "round {round}, #{i}: {r:?}");
        }
        match leg.get("state") {
            Some(AttributeValue::S(s)) if s == "ANSWERED" => {
                assert_eq!(accepted.len(), 1, "round {round}: {replies:?}");
                assert_eq!(
                    leg.get("answer_digest"),
                    Some(&AttributeValue::S(hex_sha256(
                        bodies[accepted[0]].as_bytes()
                    )))
                );
                assert_eq!(b.opened_cards(&p.query_id, "CEB").await.len(), 1);
            }
            Some(AttributeValue::S(s)) if s == "FAILED" => {
                assert!(accepted.is_empty(), "round {round}: {replies:?}");
                assert_eq!(
                    leg.get("failure"),
                    Some(&AttributeValue::S("CARD_NUMBER_IN_ANSWER".into()))
                );
            }
            other => panic!("round {round}: leg state {other:?}"),
        }
    }
}
