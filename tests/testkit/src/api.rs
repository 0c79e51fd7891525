//! Calling the local API as the app does, in tests: seeded users of a test's own, tokens,
//! SMS codes read back from the emulator, and a snapshot of everything stored for a user
//! (to assert that a refused request changed nothing). Every response is checked against
//! the OpenAPI document.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::types::AttributeValue;
use reqwest::header::HeaderMap;
use serde_json::Value;
use shared::model::purpose::Purpose;

use crate::localkeys::LocalKeys;
use crate::openapi::OpenApi;
use crate::seed::{self, SeedUser, TableRefs};
use crate::LocalClients;

pub struct Api {
    pub base: String,
    /// The bank simulator's base URL.
    pub sim: String,
    pub http: reqwest::Client,
    pub keys: LocalKeys,
    pub clients: LocalClients,
    pub tables: TableRefs,
    /// The contract every call is checked against: the shipped document, or
    /// [`OpenApi::for_configuration`] for a stack with a configuration of its own.
    pub spec: &'static OpenApi,
}

/// How long a test of the shared stack waits for the pipeline to get somewhere (a leg
/// sent, a report out). Tests of one binary run side by side, and a query's legs are
/// sent in submission order per bank: one submitted beside
/// `fifty_users_at_once_get_fifty_reports_and_fifty_sms` waits behind its 200 legs at the
/// same banks, ~30 s on an idle 2-core machine and past 60 s in a CI run that failed on
/// the old 60 s. Time enough for that burst twice over, not a cure for a lost report.
pub const PIPELINE_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserKind {
    /// Real-name, in a pilot region (Shanghai).
    Eligible,
    NotRealName,
    /// Real-name, in Guangdong (44), outside the pilot.
    OutsidePilot,
    /// Eligible, with the payment password locked for 24 hours.
    Locked,
}

#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: String,
    /// E.164
    pub phone: String,
    /// What the banks (the simulator) know the person by.
    pub id_number: String,
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Option<Value>,
}

impl Reply {
    /// `error.code` of an error body.
    pub fn code(&self) -> Option<&str> {
        self.body.as_ref()?.get("error")?.get("code")?.as_str()
    }
}

impl Api {
    /// The API of the running local stack (started `--with-api`).
    pub async fn get() -> Self {
        let endpoints = crate::stack::endpoints();
        let base = endpoints.api_endpoint.clone().expect(
            "the local stack serves no API: run the tests with `make test` \
             (stack.py exec --with-api) or without AWS_ENDPOINT_URL_* set",
        );
        let prefix = endpoints
            .table_prefix
            .clone()
            .unwrap_or_else(|| "local-".into());
        let sim = endpoints
            .bank_sim_endpoint
            .clone()
            .expect("the local stack runs no bank simulator");
        Self {
            base,
            sim,
            http: reqwest::Client::new(),
            keys: LocalKeys::ensure().expect("local keys"),
            clients: LocalClients::new(endpoints),
            tables: TableRefs::from_prefix(&prefix),
            spec: OpenApi::shared(),
        }
    }

    /// A new user of this test alone, stored in the users table.
    pub async fn new_user(&self, kind: UserKind) -> TestUser {
        let ulid = ulid::Ulid::generate();
        let id = format!("t-{}", ulid.to_string().to_lowercase());
        let n = (ulid.random() % 100_000_000) as u32;
        let (real_name, region) = match kind {
            UserKind::NotRealName => (false, "31"),
            UserKind::OutsidePilot => (true, "44"),
            UserKind::Eligible | UserKind::Locked => (true, "31"),
        };
        let user = SeedUser {
            profile: seed::profile(&id, n, real_name, region),
            description: "test user",
            locked: kind == UserKind::Locked,
        };
        let phone = user.profile.phone.e164().to_owned();
        let id_number = user.profile.id_number.expose().to_owned();
        seed::put_user(
            &self.clients.dynamodb,
            &self.tables,
            &user,
            chrono::Utc::now(),
        )
        .await
        .expect("test user is stored");
        TestUser {
            id,
            phone,
            id_number,
        }
    }

    pub fn token(&self, user: &TestUser) -> String {
        self.keys
            .user_token(&user.id, chrono::Utc::now(), 3600)
            .expect("token")
    }

    /// A passed face check of `user` for `purpose` (face passes are bound to one).
    pub fn face_token(&self, user: &TestUser, purpose: Purpose) -> String {
        self.keys
            .face_token(&user.id, purpose, chrono::Utc::now())
            .expect("face token")
    }

    /// Sends a request; the response must conform to the OpenAPI document, and a request
    /// the API accepted (2xx) must have had a body the document accepts: a test may send
    /// a bad body on purpose, the server may not take one.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> Reply {
        self.call_bytes(method, path, token, headers, body.map(String::into_bytes))
            .await
    }

    /// [`Api::call`] with a body of any bytes (one that is not UTF-8, say).
    pub async fn call_bytes(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Reply {
        let sent: Option<Value> = body.as_deref().and_then(|b| serde_json::from_slice(b).ok());
        let mut lost = 0;
        loop {
            let (status, got, text) = self.exchange(method, path, token, headers, &body).await;
            // Only a request without effects is asked again (decision 151).
            if method == "GET" && lost < WATCH_LOSSES && watch_lost_the_answer(status, &text) {
                eprintln!("GET {path}: the local watch lost the answer; asking again");
                lost += 1;
                continue;
            }
            return self.checked(method, path, sent, status, got, text);
        }
    }

    /// One request, as sent and answered, unchecked.
    async fn exchange(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: &Option<Vec<u8>>,
    ) -> (u16, HeaderMap, String) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("a valid method");
        let mut req = self.http.request(m, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            if !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            {
                req = req.header("content-type", "application/json");
            }
            req = req.body(b.clone());
        }
        let resp = req.send().await.expect("the local API answers");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("a readable body");
        (status, headers, text)
    }

    /// The reply, checked against the contract (the answer, and the request it accepted).
    fn checked(
        &self,
        method: &str,
        path: &str,
        sent: Option<Value>,
        status: u16,
        headers: HeaderMap,
        text: String,
    ) -> Reply {
        let body = if text.is_empty() {
            None
        } else {
            Some(serde_json::from_str(&text).unwrap_or_else(|e| {
                panic!("{method} {path} → {status}: body is not JSON ({e}): {text}")
            }))
        };
        let spec = self.spec;
        if let Err(e) = spec.check_response(method, path, status, body.as_ref()) {
            panic!("{method} {path} → {status} does not conform to the OpenAPI document: {e}");
        }
        if (200..300).contains(&status) && spec.documents_request_body(method, path) {
            let sent = sent.unwrap_or_else(|| {
                panic!("{method} {path} → {status}: accepted a body that is not JSON")
            });
            if let Err(e) = spec.check_request_body(method, path, &sent) {
                panic!("{method} {path} → {status}: accepted a request the contract refuses: {e}");
            }
        }
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn get_json(&self, path: &str, token: &str) -> Reply {
        self.call("GET", path, Some(token), &[], None).await
    }

    /// A request with a well-formed body: the body must conform to the OpenAPI document
    /// before it is sent (a test that means to send a bad one uses [`Api::call`]).
    pub async fn post_json(&self, path: &str, token: &str, body: &Value) -> Reply {
        if let Err(e) = self.spec.check_request_body("POST", path, body) {
            panic!("POST {path}: the test's body does not conform to the OpenAPI document: {e}");
        }
        self.call("POST", path, Some(token), &[], Some(body.to_string()))
            .await
    }

    /// Asks for a code and reads it back from the SMS emulator: (verification_id, code).
    pub async fn verification(&self, user: &TestUser, purpose: &str) -> (String, String) {
        // Other SMS (the "report ready" notice) may arrive meanwhile: count code SMS only.
        let codes = |sms: Vec<String>| -> Vec<String> {
            sms.into_iter().filter(|t| find_code(t).is_some()).collect()
        };
        let before = codes(self.sms_to(&user.phone).await).len();
        // As the app does: the SMS channel's shared rate answers a burst with 503
        // `SMS_UNAVAILABLE` and `Retry-After`, leaving the user's limits untouched.
        let mut tries = 0;
        let reply = loop {
            let reply = self
                .post_json(
                    "/v1/verifications",
                    &self.token(user),
                    &serde_json::json!({ "purpose": purpose }),
                )
                .await;
            tries += 1;
            match sms_retry_after(&reply) {
                Some(wait) if tries < 60 => tokio::time::sleep(wait).await,
                _ => break reply,
            }
        };
        assert_eq!(reply.status, 201, "{reply:?}");
        let id = reply.body.as_ref().unwrap()["verification_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let sms = codes(self.sms_to(&user.phone).await);
        assert_eq!(sms.len(), before + 1, "exactly one SMS per code");
        (id, sms_code(&sms[sms.len() - 1]))
    }

    /// The SMS sent to a phone number, oldest first.
    pub async fn sms_to(&self, phone: &str) -> Vec<String> {
        crate::sms::sent_sms_to(&self.clients.endpoints.sns_endpoint, phone)
            .await
            .expect("the SNS emulator answers")
            .into_iter()
            .map(|m| m.message)
            .collect()
    }

    /// Every item stored for the user: under `USER#<id>` and the user's query records
    /// (with their consent records), in a stable order.
    pub async fn snapshot(&self, user: &TestUser) -> Vec<BTreeMap<String, String>> {
        let db = &self.clients.dynamodb;
        let mut items = Vec::new();
        let own = db
            .query()
            .table_name(&self.tables.main)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", AttributeValue::S(format!("USER#{}", user.id)))
            .consistent_read(true)
            .send()
            .await
            .expect("query the user's items");
        items.extend(own.items().iter().cloned());
        let queries = db
            .query()
            .table_name(&self.tables.main)
            .index_name("gsi1")
            .key_condition_expression("gsi1pk = :pk")
            .expression_attribute_values(":pk", AttributeValue::S(format!("USER#{}", user.id)))
            .send()
            .await
            .expect("query the user's query records");
        // The pipeline moves a query on by itself (legs, report, phase): a snapshot keeps
        // what a request could have written — the query and consent records, without
        // the attributes the pipeline changes.
        const PIPELINE: [&str; 12] = [
            "phase",
            "unsettled",
            "due_pk",
            "due_at",
            "report_generated_at",
            "report_expires_at",
            "notified_at",
            "notice_claimed_at",
            "last_viewed_at",
            "views",
            "views_total",
            "ttl",
        ];
        for q in queries.items() {
            let pk = q.get("pk").cloned().expect("pk");
            let all = db
                .query()
                .table_name(&self.tables.main)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", pk)
                .consistent_read(true)
                .send()
                .await
                .expect("query a query's items");
            for item in all.items() {
                let sk = match item.get("sk") {
                    Some(AttributeValue::S(sk)) => sk.as_str(),
                    _ => "",
                };
                if sk == "QUERY" || sk == "CONSENT" {
                    let mut item = item.clone();
                    item.retain(|k, _| !PIPELINE.contains(&k.as_str()));
                    items.push(item);
                }
            }
        }
        let mut out: Vec<BTreeMap<String, String>> = items
            .into_iter()
            .map(|i| i.into_iter().map(|(k, v)| (k, format!("{v:?}"))).collect())
            .collect();
        out.sort();
        out
    }

    /// Is a face-token nonce recorded as used?
    pub async fn nonce_used(&self, nonce: &str) -> bool {
        self.clients
            .dynamodb
            .get_item()
            .table_name(&self.tables.main)
            .key("pk", AttributeValue::S(format!("FACENONCE#{nonce}")))
            .key("sk", AttributeValue::S("FACENONCE".into()))
            .consistent_read(true)
            .send()
            .await
            .expect("get the nonce")
            .item
            .is_some()
    }
}

impl Api {
    /// What the simulated banks hold for the person: `{"ICBC": [{kind, first4, last4}], ...}`.
    pub async fn sim_truth(&self, user: &TestUser) -> Value {
        let url = format!("{}/_admin/truth/{}", self.sim, user.id_number);
        let v: Value = self
            .http
            .get(url)
            .send()
            .await
            .expect("simulator")
            .json()
            .await
            .expect("json");
        v["banks"].clone()
    }

    /// Sets how one bank behaves for this person only (see infra/local/bank-sim/README.md).
    pub async fn sim_behave(&self, user: &TestUser, bank: &str, behaviour: Value) {
        let url = format!(
            "{}/_admin/subjects/{}/banks/{bank}",
            self.sim, user.id_number
        );
        let resp = self
            .http
            .put(url)
            .json(&behaviour)
            .send()
            .await
            .expect("simulator");
        assert!(
            resp.status().is_success(),
            "simulator refused {behaviour}: {}",
            resp.status()
        );
    }

    /// The inquiries the simulator received about this person.
    pub async fn sim_inquiries(&self, user: &TestUser) -> Vec<Value> {
        let url = format!("{}/_admin/inquiries/{}", self.sim, user.id_number);
        self.http
            .get(url)
            .send()
            .await
            .expect("simulator")
            .json()
            .await
            .expect("json")
    }

    /// What went over the wire between the service and the simulator about this person
    /// (only at banks whose behaviour for them has `"record_traffic": true`): inquiries
    /// with the answers, callbacks with our replies.
    pub async fn sim_traffic(&self, user: &TestUser) -> Vec<Value> {
        let url = format!("{}/_admin/traffic/{}", self.sim, user.id_number);
        self.http
            .get(url)
            .send()
            .await
            .expect("simulator")
            .json()
            .await
            .expect("json")
    }

    /// Submits a query for `banks` the way the app does (code, face, password); the 202
    /// body.
    pub async fn submit_query(&self, user: &TestUser, banks: &[&str]) -> Value {
        let (vid, code) = self.verification(user, "SUBMIT_QUERY").await;
        let agreement = self.get_json("/v1/eligibility", &self.token(user)).await;
        let body = serde_json::json!({
            "banks": banks,
            "consent": {"agreement_version": agreement.body.unwrap()["agreement_version"], "accepted": true},
            "verification": {"verification_id": vid, "sms_code": code},
            "face_token": self.face_token(user, Purpose::SubmitQuery),
            "payment_password": seed::PAYMENT_PASSWORD,
        });
        let key = ulid::Ulid::generate().to_string();
        let reply = self
            .call(
                "POST",
                "/v1/card-queries",
                Some(&self.token(user)),
                &[("idempotency-key", &key)],
                Some(body.to_string()),
            )
            .await;
        assert_eq!(reply.status, 202, "{reply:?}");
        reply.body.expect("a 202 body")
    }

    /// Polls `GET /v1/card-queries/{id}` until `report_status` is not PENDING.
    pub async fn wait_report(
        &self,
        user: &TestUser,
        query_id: &str,
        timeout: std::time::Duration,
    ) -> Value {
        let start = std::time::Instant::now();
        loop {
            let reply = self
                .get_json(&format!("/v1/card-queries/{query_id}"), &self.token(user))
                .await;
            assert_eq!(reply.status, 200, "{reply:?}");
            let body = reply.body.expect("a body");
            if body["report_status"] != "PENDING" {
                return body;
            }
            if start.elapsed() >= timeout {
                let item = self.query_bookkeeping(query_id).await;
                panic!("no report after {timeout:?}: {body}; the query item's bookkeeping: {item}");
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// What the pipeline keeps on the query item to decide when it is ready (no card
    /// data): tells a report that was never triggered (`unsettled` above 0) from one
    /// whose trigger was lost or is late (0, phase still COLLECTING).
    pub async fn query_bookkeeping(&self, query_id: &str) -> String {
        let got = self
            .clients
            .dynamodb
            .get_item()
            .table_name(&self.tables.main)
            .key("pk", AttributeValue::S(format!("QUERY#{query_id}")))
            .key("sk", AttributeValue::S("QUERY".into()))
            .consistent_read(true)
            .send()
            .await;
        let item = match got {
            Ok(out) => out.item.unwrap_or_default(),
            Err(e) => return format!("unreadable: {e}"),
        };
        let fields = [
            "phase",
            "unsettled",
            "settled_banks",
            "due_pk",
            "due_at",
            "notified_at",
        ];
        let shown: Vec<String> = fields
            .iter()
            .map(|f| format!("{f}={:?}", item.get(*f)))
            .collect();
        shown.join(" ")
    }

    /// Views the report with a fresh VIEW_REPORT code. A view the local watch lost
    /// (decision 151) spent its code, so it is viewed again with another.
    pub async fn view_report(&self, user: &TestUser, query_id: &str) -> Reply {
        let path = format!("/v1/card-queries/{query_id}/report");
        let mut lost = 0;
        loop {
            let (vid, code) = self.verification(user, "VIEW_REPORT").await;
            let body =
                serde_json::json!({"verification": {"verification_id": vid, "sms_code": code}});
            if let Err(e) = self.spec.check_request_body("POST", &path, &body) {
                panic!(
                    "POST {path}: the test's body does not conform to the OpenAPI document: {e}"
                );
            }
            let token = self.token(user);
            let sent = Some(body.to_string().into_bytes());
            let (status, headers, text) =
                self.exchange("POST", &path, Some(&token), &[], &sent).await;
            if lost < WATCH_LOSSES && watch_lost_the_answer(status, &text) {
                eprintln!("POST {path}: the local watch lost the answer; viewing again");
                lost += 1;
                self.allow_next_sms(user).await;
                continue;
            }
            return self.checked("POST", &path, Some(body), status, headers, text);
        }
    }

    /// Moves the user's SMS rate-limit clock back, so a test can ask for another code
    /// at once (the one-a-minute rule has tests of its own).
    pub async fn allow_next_sms(&self, user: &TestUser) {
        let db = &self.clients.dynamodb;
        let past =
            shared::model::timestamp::format(chrono::Utc::now() - chrono::TimeDelta::minutes(2));
        let _ = db
            .update_item()
            .table_name(&self.tables.main)
            .key("pk", AttributeValue::S(format!("USER#{}", user.id)))
            .key("sk", AttributeValue::S("STATE".into()))
            .update_expression("SET last_sms_at = :t")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":t", AttributeValue::S(past))
            .send()
            .await;
    }
}

/// How many times in a row a GET may meet [`watch_lost_the_answer`] before the test
/// sees it: the loss is a race of a few percent per large answer, so three in a row
/// means something else.
const WATCH_LOSSES: u32 = 2;

/// `cargo lambda watch` 1.9.2 answers the caller with its own 500 problem (no `error`
/// object, which every answer of ours has) when it cannot read a function's answer back
/// from the function's runtime client: a few percent of answers over ~16 KB (decision
/// 151). Local only; API Gateway and Lambda have no such step.
pub fn watch_lost_the_answer(status: u16, text: &str) -> bool {
    status == 500
        && serde_json::from_str::<Value>(text).is_ok_and(|v| {
            v.get("error").is_none()
                && v["type"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("https://httpstatuses.com/"))
        })
}

/// The 6-digit code in an SMS text, if it carries one.
pub fn find_code(text: &str) -> Option<String> {
    let digits: Vec<char> = text.chars().collect();
    digits
        .windows(6)
        .enumerate()
        .find(|(i, w)| {
            w.iter().all(char::is_ascii_digit)
                && !digits.get(i + 6).is_some_and(char::is_ascii_digit)
                && (*i == 0 || !digits[i - 1].is_ascii_digit())
        })
        .map(|(_, w)| w.iter().collect())
}

/// The 6-digit code in an SMS text.
pub fn sms_code(text: &str) -> String {
    find_code(text).unwrap_or_else(|| panic!("no 6-digit code in the SMS: {text}"))
}

/// Cards per bank as a report shows them: bank → sorted `KIND first4 **** **** last4`.
pub fn report_cards(report: &Value) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in report["cards"].as_array().expect("a report has cards") {
        out.entry(c["bank_code"].as_str().unwrap_or_default().to_owned())
            .or_default()
            .push(format!(
                "{} {}",
                c["kind"].as_str().unwrap_or_default(),
                c["masked_number"].as_str().unwrap_or_default()
            ));
    }
    out.values_mut().for_each(|v| v.sort());
    out
}

/// The same shape from what banks said (`{kind, first4, last4}` lists per bank, e.g. the
/// simulator's ground truth); banks without cards are left out, as in a report.
pub fn bank_cards<'a>(
    banks: impl IntoIterator<Item = (&'a str, &'a Value)>,
) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for (bank, cards) in banks {
        let mut v: Vec<String> = cards
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|c| {
                format!(
                    "{} {} **** **** {}",
                    c["kind"].as_str().unwrap_or_default(),
                    c["first4"].as_str().unwrap_or_default(),
                    c["last4"].as_str().unwrap_or_default()
                )
            })
            .collect();
        v.sort();
        if !v.is_empty() {
            out.insert(bank.to_owned(), v);
        }
    }
    out
}

/// How many of `texts` are the "report ready" notice.
pub fn ready_sms(texts: &[String]) -> usize {
    texts.iter().filter(|t| t.contains("报告已生成")).count()
}

/// How long to wait before asking again, when `reply` is the SMS channel's 503
/// `SMS_UNAVAILABLE` (its `Retry-After`, whole seconds).
pub fn sms_retry_after(reply: &Reply) -> Option<std::time::Duration> {
    let code = reply.body.as_ref()?["error"]["code"].as_str()?;
    if reply.status != 503 || code != "SMS_UNAVAILABLE" {
        return None;
    }
    let secs = reply
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .unwrap_or(1);
    Some(std::time::Duration::from_secs(secs.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_watchs_own_problem_is_a_lost_answer() {
        let watch = r#"{"type":"https://httpstatuses.com/500","status":500,"title":"Internal Server Error"}"#;
        assert!(watch_lost_the_answer(500, watch));
        // Ours: the contract's error object.
        let ours = r#"{"error":{"code":"INTERNAL","message":"internal error","request_id":"r"}}"#;
        assert!(!watch_lost_the_answer(500, ours));
        assert!(!watch_lost_the_answer(502, watch));
        assert!(!watch_lost_the_answer(500, "not json"));
    }
}
