//! One realistic event per function, in the shape Lambda delivers it, and what a good
//! answer to it looks like (a benchmark of failing calls would measure the wrong path).
//!
//! The stream events name a query the table does not hold: the functions then do what
//! they do on every record (parse, one consistent read of the query) and stop, with no
//! bank call and no SMS; a real dispatch would time the bank simulator, not the function,
//! and could run only once per query. The bank callback is signed and fresh each call
//! (a new nonce) and answers a leg nobody asked for: verified, then 404 after one read.

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::setup::{World, CALLBACK_BANK, USER};

/// The app JWT's issuer and audience as the local keys mint them
/// (`tests/testkit/src/localkeys.rs`), which the authorizer claims repeat.
const ISSUER: &str = "https://id.local.card-lookup";
const AUDIENCE: &str = "card-lookup-app";
/// A well-formed query id no record has.
const UNKNOWN_QUERY: &str = "01KBENCH0000000000000000CS";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// API Gateway HTTP API (v2) `GET /v1/eligibility`, with the authorizer's claims.
    Eligibility,
    /// `GET /v1/card-queries`: the caller's queries.
    ListQueries,
    /// A signed `POST /v1/bank-callbacks/{bank}` for a leg that does not exist.
    BankCallback,
    /// A DynamoDB stream INSERT of a query record (what fan-out's filter passes).
    QueryInserted,
    /// A DynamoDB stream MODIFY of a query record (what aggregation's filter passes).
    QueryModified,
    /// EventBridge's "Scheduled Event" (the sweeper's rate rule).
    Scheduled,
    /// An SQS FIFO batch of one leg attempt (what the inquiry queue delivers).
    InquiryMessage,
}

fn now() -> (u64, u128) {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs(), d.as_millis())
}

fn http_event(world: &World, method: &str, path: &str, n: u64) -> Value {
    let (secs, millis) = now();
    json!({
        "version": "2.0",
        "routeKey": format!("{method} {path}"),
        "rawPath": path,
        "rawQueryString": "",
        "headers": {
            "accept": "application/json",
            "authorization": format!("Bearer {}", world.token),
            "host": "api.local.card-lookup",
            "user-agent": "coldstart-bench",
            "x-forwarded-for": "127.0.0.1",
            "x-forwarded-proto": "https",
        },
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "authorizer": {"jwt": {"claims": {
                "sub": USER, "iss": ISSUER, "aud": AUDIENCE,
                "iat": (secs - 60).to_string(), "exp": (secs + 3540).to_string(),
            }, "scopes": null}},
            "domainName": "api.local.card-lookup",
            "domainPrefix": "api",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                     "sourceIp": "127.0.0.1", "userAgent": "coldstart-bench"},
            "requestId": format!("bench-{n}"),
            "routeKey": format!("{method} {path}"),
            "stage": "$default",
            "time": "01/Dec/2026:00:00:00 +0000",
            "timeEpoch": millis as u64,
        },
        "isBase64Encoded": false,
    })
}

fn callback_event(world: &World, n: u64) -> Value {
    let path = format!("/v1/bank-callbacks/{CALLBACK_BANK}");
    let body = json!({
        "query_id": UNKNOWN_QUERY,
        "inquiry_id": format!("bench-inquiry-{n}"),
        "status": "NONE",
        "cards": [],
    })
    .to_string();
    let timestamp = now().0.to_string();
    // Unique per call and process: a nonce is accepted once.
    let nonce = format!("bench-{}-{n:08}", std::process::id());
    let canonical = format!(
        "{timestamp}\n{nonce}\nPOST\n{path}\n{}",
        hex::encode(Sha256::digest(body.as_bytes()))
    );
    let mut mac =
        <Hmac<Sha256>>::new_from_slice(&world.bank_secret).expect("HMAC takes a key of any length");
    mac.update(canonical.as_bytes());
    let signature = hex::encode(mac.finalize().into_bytes());
    let mut event = http_event(world, "POST", &path, n);
    let headers = event["headers"].as_object_mut().expect("an object");
    headers.remove("authorization");
    for (k, v) in [
        ("content-type", "application/json"),
        ("x-bank-code", CALLBACK_BANK),
        ("x-timestamp", &timestamp),
        ("x-nonce", &nonce),
        ("x-signature", &signature),
    ] {
        headers.insert(k.into(), v.into());
    }
    event["requestContext"]
        .as_object_mut()
        .expect("an object")
        .remove("authorizer");
    event["body"] = body.into();
    event
}

fn stream_event(world: &World, name: &str, n: u64) -> Value {
    let pk = format!("QUERY#{UNKNOWN_QUERY}");
    let image = json!({
        "pk": {"S": pk}, "sk": {"S": "QUERY"}, "entity": {"S": "QUERY"},
        "query_id": {"S": UNKNOWN_QUERY}, "user_id": {"S": USER},
        "phase": {"S": "COLLECTING"},
    });
    let mut ddb = json!({
        "ApproximateCreationDateTime": now().0,
        "Keys": {"pk": {"S": pk}, "sk": {"S": "QUERY"}},
        "NewImage": image,
        "SequenceNumber": format!("{:021}", 100_000_000 + n),
        "SizeBytes": 180,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    });
    if name == "MODIFY" {
        ddb["OldImage"] = ddb["NewImage"].clone();
    }
    json!({"Records": [{
        "eventID": format!("{n:032x}"),
        "eventName": name,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": ddb,
        "eventSourceARN": format!(
            "arn:aws:dynamodb:us-east-1:000000000000:table/{}/stream/2026-12-01T00:00:00.000",
            world.main_table
        ),
    }]})
}

/// A leg attempt of the unknown query: the sender reads the leg, finds none and
/// acknowledges the message, with no gate admission and no bank call.
fn inquiry_event(n: u64) -> Value {
    let body = json!({"query_id": UNKNOWN_QUERY, "bank": CALLBACK_BANK, "attempt": 1}).to_string();
    let millis = now().1;
    json!({"Records": [{
        "messageId": format!("00000000-0000-4000-8000-{n:012x}"),
        "receiptHandle": format!("bench-receipt-{n}"),
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": millis.to_string(),
            "SenderId": "000000000000",
            "ApproximateFirstReceiveTimestamp": millis.to_string(),
            "MessageGroupId": CALLBACK_BANK,
            "MessageDeduplicationId": format!("{UNKNOWN_QUERY}.{CALLBACK_BANK}.1.{n}"),
            "SequenceNumber": format!("{:020}", 100_000_000 + n),
        },
        "messageAttributes": {},
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:cold-InquiryQueue.fifo",
        "awsRegion": "us-east-1",
    }]})
}

fn scheduled_event(n: u64) -> Value {
    json!({
        "version": "0",
        "id": format!("00000000-0000-4000-8000-{n:012x}"),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "000000000000",
        "time": "2026-12-01T00:00:00Z",
        "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:000000000000:rule/SweepFunction-Sweep"],
        "detail": {},
    })
}

impl Event {
    /// The `n`th event of a run (n makes ids and nonces unique).
    pub fn build(self, world: &World, n: u64) -> Vec<u8> {
        let event = match self {
            Event::Eligibility => http_event(world, "GET", "/v1/eligibility", n),
            Event::ListQueries => http_event(world, "GET", "/v1/card-queries", n),
            Event::BankCallback => callback_event(world, n),
            Event::QueryInserted => stream_event(world, "INSERT", n),
            Event::QueryModified => stream_event(world, "MODIFY", n),
            Event::Scheduled => scheduled_event(n),
            Event::InquiryMessage => inquiry_event(n),
        };
        event.to_string().into_bytes()
    }

    /// Whether `response` is the answer this event should get.
    pub fn check(self, response: &[u8]) -> Result<(), String> {
        let v: Value = serde_json::from_slice(response)
            .map_err(|_| format!("not JSON: {}", String::from_utf8_lossy(response)))?;
        let ok = match self {
            Event::Eligibility | Event::ListQueries => v["statusCode"] == 200,
            Event::BankCallback => v["statusCode"] == 404,
            Event::QueryInserted | Event::QueryModified | Event::InquiryMessage => v
                ["batchItemFailures"]
                .as_array()
                .is_some_and(|f| f.is_empty()),
            Event::Scheduled => v["errors"] == 0,
        };
        if ok {
            Ok(())
        } else {
            Err(format!("unexpected answer to {self:?}: {v}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world() -> World {
        World {
            env: Vec::new(),
            token: "t".into(),
            bank_secret: vec![7; 32],
            main_table: "cold-CardLookupTable".into(),
        }
    }

    #[test]
    fn callbacks_carry_a_fresh_nonce_and_a_signature_over_the_canonical_string() {
        let w = world();
        let a: Value = serde_json::from_slice(&Event::BankCallback.build(&w, 1)).unwrap();
        let b: Value = serde_json::from_slice(&Event::BankCallback.build(&w, 2)).unwrap();
        assert_ne!(a["headers"]["x-nonce"], b["headers"]["x-nonce"]);
        let h = &a["headers"];
        let body = a["body"].as_str().unwrap();
        let canonical = format!(
            "{}\n{}\nPOST\n/v1/bank-callbacks/ICBC\n{}",
            h["x-timestamp"].as_str().unwrap(),
            h["x-nonce"].as_str().unwrap(),
            hex::encode(Sha256::digest(body.as_bytes()))
        );
        let mut mac = <Hmac<Sha256>>::new_from_slice(&[7; 32]).unwrap();
        mac.update(canonical.as_bytes());
        assert_eq!(
            h["x-signature"].as_str().unwrap(),
            hex::encode(mac.finalize().into_bytes())
        );
        assert!(a["requestContext"].get("authorizer").is_none());
    }

    #[test]
    fn the_unknown_query_id_is_a_canonical_ulid() {
        // QueryId::parse wants 26 upper-case Crockford base32 characters, first <= 7.
        assert_eq!(UNKNOWN_QUERY.len(), 26);
        assert!(UNKNOWN_QUERY.as_bytes()[0] <= b'7');
        assert!(UNKNOWN_QUERY
            .chars()
            .all(|c| c.is_ascii_digit() || (c.is_ascii_uppercase() && !"ILOU".contains(c))));
    }

    #[test]
    fn stream_records_match_the_templates_filters() {
        let v: Value = serde_json::from_slice(&Event::QueryInserted.build(&world(), 3)).unwrap();
        let r = &v["Records"][0];
        assert_eq!(r["eventName"], "INSERT");
        assert_eq!(r["dynamodb"]["NewImage"]["entity"]["S"], "QUERY");
        assert_eq!(r["dynamodb"]["NewImage"]["query_id"]["S"], UNKNOWN_QUERY);
    }

    #[test]
    fn inquiry_messages_are_one_leg_attempt_of_the_unknown_query_with_ids_of_their_own() {
        let a: Value = serde_json::from_slice(&Event::InquiryMessage.build(&world(), 1)).unwrap();
        let b: Value = serde_json::from_slice(&Event::InquiryMessage.build(&world(), 2)).unwrap();
        let r = &a["Records"][0];
        assert_eq!(r["eventSource"], "aws:sqs");
        let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
        // LegAttempt denies unknown fields: exactly these three.
        assert_eq!(
            body,
            json!({"query_id": UNKNOWN_QUERY, "bank": CALLBACK_BANK, "attempt": 1})
        );
        assert_eq!(r["attributes"]["MessageGroupId"], CALLBACK_BANK);
        assert_ne!(r["messageId"], b["Records"][0]["messageId"]);
        assert_ne!(r["receiptHandle"], b["Records"][0]["receiptHandle"]);
    }

    #[test]
    fn answers_are_checked_for_the_expected_status() {
        assert!(Event::Eligibility.check(br#"{"statusCode":200}"#).is_ok());
        assert!(Event::Eligibility.check(br#"{"statusCode":401}"#).is_err());
        assert!(Event::BankCallback.check(br#"{"statusCode":404}"#).is_ok());
        assert!(Event::QueryModified
            .check(br#"{"batchItemFailures":[]}"#)
            .is_ok());
        assert!(Event::QueryModified
            .check(br#"{"batchItemFailures":[{"itemIdentifier":"1"}]}"#)
            .is_err());
        assert!(Event::Scheduled.check(b"not json").is_err());
    }
}
