//! In-process HTTP tests: the simulator on a free port, driven with reqwest, checked
//! with the service's own signing and answer code.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::post;
use chrono::Utc;
use serde_json::{json, Value};
use shared::bank::answer::{Answer, AnswerError, AnswerStatus};
use shared::bank::card_number::contains_card_number;
use shared::bank::signing::{self, BankSecret, SignatureError, SignatureHeaders};
use shared::config::{ServiceConfig, DEFAULT_CONFIG};
use shared::model::card::{AnsweredCard, MaskedCard};
use shared::model::ids::QueryId;
use tokio::sync::mpsc;

use crate::behaviour::BehaviourConfig;
use crate::customers;
use crate::server::{start, Running, SimConfig};

/// An answer's cards as the report shows them (without their refs).
fn masked(a: &Answer) -> Vec<MaskedCard> {
    a.cards.iter().map(AnsweredCard::masked).collect()
}

fn banks() -> Vec<String> {
    ServiceConfig::parse(DEFAULT_CONFIG)
        .unwrap()
        .banks
        .all()
        .iter()
        .map(|b| b.code.to_string())
        .collect()
}

fn secret_of(bank: &str) -> BankSecret {
    let i = banks().iter().position(|b| b == bank).unwrap_or(99) as u8;
    BankSecret::new(vec![i + 1; 32]).unwrap()
}

async fn sim() -> Running {
    let banks = banks();
    let secrets = banks.iter().map(|b| (b.clone(), secret_of(b))).collect();
    start(
        SimConfig {
            banks,
            secrets,
            behaviour: BehaviourConfig::default(),
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap()
}

/// A distinct synthetic person per test (tests run in parallel on separate simulators
/// anyway; distinct people also keep each test's log its own).
fn person(tag: u32) -> String {
    format!("31010119900101{tag:04}")
}

fn inquiry(id_number: &str, callback_url: &str) -> Vec<u8> {
    json!({
        "query_id": QueryId::generate().to_string(),
        "inquiry_id": format!("inq-{}", QueryId::generate()),
        "subject": {"name": "测试", "id_number": id_number},
        "callback_url": callback_url,
        "respond_by": "2030-01-01T00:00:00Z",
    })
    .to_string()
    .into_bytes()
}

fn path_of(bank: &str) -> String {
    format!("/banks/{bank}/card-inquiries")
}

async fn post_signed(
    run: &Running,
    bank: &str,
    body: &[u8],
    h: &SignatureHeaders,
) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(format!("{}{}", run.endpoint, path_of(bank)))
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (k, v) in h.pairs() {
        req = req.header(k, v);
    }
    req.send().await.unwrap()
}

async fn ask(run: &Running, bank: &str, body: &[u8]) -> reqwest::Response {
    let h = signing::sign(
        &secret_of(bank),
        bank,
        Utc::now(),
        "POST",
        &path_of(bank),
        body,
    );
    post_signed(run, bank, body, &h).await
}

fn response_headers(r: &reqwest::Response) -> SignatureHeaders {
    let g = |n: &str| {
        r.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    SignatureHeaders {
        bank_code: g(signing::HEADER_BANK_CODE),
        timestamp: g(signing::HEADER_TIMESTAMP),
        nonce: g(signing::HEADER_NONCE),
        signature: g(signing::HEADER_SIGNATURE),
    }
}

/// Status, signature check (over POST, `path`, body, with the bank's secret) and body.
async fn read(
    r: reqwest::Response,
    bank: &str,
    path: &str,
) -> (StatusCode, Result<(), SignatureError>, Vec<u8>) {
    let status = r.status();
    let h = response_headers(&r);
    assert!(h.bank_code.is_empty() || h.bank_code == bank);
    let body = r.bytes().await.unwrap().to_vec();
    let v = signing::verify(&secret_of(bank), &h, Utc::now(), "POST", path, &body);
    (status, v, body)
}

async fn admin(
    run: &Running,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new().request(method, format!("{}{path}", run.endpoint));
    if let Some(b) = body {
        req = req.body(b.to_string());
    }
    let r = req.send().await.unwrap();
    let s = r.status();
    let text = r.text().await.unwrap();
    (s, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn statuses(log: &Value, bank: &str) -> Vec<u64> {
    log.as_array()
        .unwrap()
        .iter()
        .filter(|r| r["bank_code"] == bank)
        .map(|r| r["status_returned"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn sixteen_banks_answer_signed_and_true() {
    let run = sim().await;
    let id = person(1);
    let (s, truth) = admin(
        &run,
        reqwest::Method::GET,
        &format!("/_admin/truth/{id}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(truth["banks"].as_object().unwrap().len(), 16);
    let mut found = 0;
    for bank in banks() {
        let body = inquiry(&id, "http://127.0.0.1:9/v1/bank-callbacks/X");
        let (status, sig, answer) =
            read(ask(&run, &bank, &body).await, &bank, &path_of(&bank)).await;
        assert_eq!(status, StatusCode::OK, "{bank}");
        assert_eq!(
            sig,
            Ok(()),
            "{bank}: the answer verifies with the bank's secret"
        );
        assert!(!contains_card_number(std::str::from_utf8(&answer).unwrap()));
        let a = Answer::parse(&answer).unwrap();
        let sent: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(a.query_id.to_string(), sent["query_id"].as_str().unwrap());
        assert_eq!(a.inquiry_id, sent["inquiry_id"].as_str().unwrap());
        let expected = customers::masked_cards(&id, &bank);
        assert_eq!(masked(&a), expected);
        assert!(a.cards.iter().all(|c| c.card_ref.is_some()), "{bank}");
        let from_truth: Vec<MaskedCard> =
            serde_json::from_value(truth["banks"][&bank].clone()).unwrap();
        assert_eq!(masked(&a), from_truth);
        assert_eq!(
            a.status,
            if expected.is_empty() {
                AnswerStatus::None
            } else {
                AnswerStatus::Found
            }
        );
        found += usize::from(!expected.is_empty());
    }
    assert!(found > 0);
    let (_, log) = admin(
        &run,
        reqwest::Method::GET,
        &format!("/_admin/inquiries/{id}"),
        None,
    )
    .await;
    assert_eq!(log.as_array().unwrap().len(), 16);
    assert_eq!(statuses(&log, "CMB"), [200]);
}

#[tokio::test]
async fn refuses_bad_signatures_replays_and_bad_bodies() {
    let run = sim().await;
    let id = person(2);
    let cb = "http://127.0.0.1:9/v1/bank-callbacks/ICBC";
    let path = path_of("ICBC");
    let now = Utc::now();

    // Signed with another bank's key.
    let body = inquiry(&id, cb);
    let h = signing::sign(&secret_of("CMB"), "ICBC", now, "POST", &path, &body);
    let r = post_signed(&run, "ICBC", &body, &h).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let err: Value = r.json().await.unwrap();
    assert!(err["error"].as_str().unwrap().contains("signature"));

    // Right key, X-Bank-Code of another bank.
    let h = signing::sign(&secret_of("ICBC"), "CMB", now, "POST", &path, &body);
    assert_eq!(
        post_signed(&run, "ICBC", &body, &h).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // Signed for another bank's path.
    let h = signing::sign(
        &secret_of("ICBC"),
        "ICBC",
        now,
        "POST",
        &path_of("CMB"),
        &body,
    );
    assert_eq!(
        post_signed(&run, "ICBC", &body, &h).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // Stale.
    let h = signing::sign(
        &secret_of("ICBC"),
        "ICBC",
        now - chrono::TimeDelta::minutes(6),
        "POST",
        &path,
        &body,
    );
    assert_eq!(
        post_signed(&run, "ICBC", &body, &h).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // No headers at all.
    let r = reqwest::Client::new()
        .post(format!("{}{path}", run.endpoint))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Replay: the same signed request twice.
    let h = signing::sign(&secret_of("ICBC"), "ICBC", now, "POST", &path, &body);
    assert_eq!(
        post_signed(&run, "ICBC", &body, &h).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        post_signed(&run, "ICBC", &body, &h).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // Correctly signed, but an unknown field or a bad callback URL.
    let mut v: Value = serde_json::from_slice(&inquiry(&id, cb)).unwrap();
    v["extra"] = "x".into();
    assert_eq!(
        ask(&run, "ICBC", v.to_string().as_bytes()).await.status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        ask(&run, "ICBC", &inquiry(&id, "ftp://x/y")).await.status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        ask(&run, "ICBC", b"not json").await.status(),
        StatusCode::BAD_REQUEST
    );

    // Unknown bank.
    assert_eq!(
        ask(&run, "NOPE", &inquiry(&id, cb)).await.status(),
        StatusCode::NOT_FOUND
    );

    // Every attempt that named the person is in the log, with what it got.
    let (_, log) = admin(
        &run,
        reqwest::Method::GET,
        &format!("/_admin/inquiries/{id}"),
        None,
    )
    .await;
    assert_eq!(
        statuses(&log, "ICBC"),
        [401, 401, 401, 401, 401, 200, 401, 400, 400]
    );
}

#[tokio::test]
async fn a_person_override_affects_that_person_only() {
    let run = sim().await;
    let (a, b) = (person(3), person(4));
    let cb = "http://127.0.0.1:9/cb";
    let (s, set) = admin(
        &run,
        reqwest::Method::PUT,
        &format!("/_admin/subjects/{a}/banks/ICBC"),
        Some(json!({"mode": "error"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(set["mode"], "error");
    assert_eq!(
        ask(&run, "ICBC", &inquiry(&a, cb)).await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(
        ask(&run, "ICBC", &inquiry(&b, cb)).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        ask(&run, "CMB", &inquiry(&a, cb)).await.status(),
        StatusCode::OK
    );

    // A bank-wide setting affects everyone without an override of that bank.
    let (s, _) = admin(
        &run,
        reqwest::Method::PUT,
        "/_admin/banks/CMB",
        Some(json!({"mode": "never"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        ask(&run, "CMB", &inquiry(&b, cb)).await.status(),
        StatusCode::ACCEPTED
    );

    let (s, _) = admin(
        &run,
        reqwest::Method::DELETE,
        &format!("/_admin/subjects/{a}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(
        ask(&run, "ICBC", &inquiry(&a, cb)).await.status(),
        StatusCode::OK
    );

    let (s, _) = admin(&run, reqwest::Method::POST, "/_admin/reset", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(
        ask(&run, "CMB", &inquiry(&b, cb)).await.status(),
        StatusCode::OK
    );

    // Bad admin requests.
    let (s, e) = admin(
        &run,
        reqwest::Method::PUT,
        "/_admin/banks/CMB",
        Some(json!({"mode": "sometimes"})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    let (s, _) = admin(
        &run,
        reqwest::Method::PUT,
        "/_admin/banks/NOPE",
        Some(json!({})),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn fails_then_answers_per_person_and_bank() {
    let run = sim().await;
    let (a, b) = (person(5), person(6));
    let cb = "http://127.0.0.1:9/cb";
    admin(
        &run,
        reqwest::Method::PUT,
        "/_admin/banks/BOC",
        Some(json!({"mode": "fail_then_answer", "failures_before_success": 2})),
    )
    .await;
    for id in [&a, &b] {
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(ask(&run, "BOC", &inquiry(id, cb)).await.status().as_u16());
        }
        assert_eq!(got, [500, 500, 200, 200]);
    }
    let (_, log) = admin(
        &run,
        reqwest::Method::GET,
        &format!("/_admin/inquiries/{a}"),
        None,
    )
    .await;
    assert_eq!(statuses(&log, "BOC"), [500, 500, 200, 200]);
}

#[tokio::test]
async fn tampered_answers_are_what_they_claim() {
    let run = sim().await;
    let id = person(7);
    let cb = "http://127.0.0.1:9/cb";
    let put = |mode: &'static str| {
        let run = &run;
        let id = id.clone();
        async move {
            admin(
                run,
                reqwest::Method::PUT,
                &format!("/_admin/subjects/{id}/banks/CCB"),
                Some(json!({"mode": mode})),
            )
            .await;
        }
    };

    put("malformed").await;
    let (s, sig, body) = read(
        ask(&run, "CCB", &inquiry(&id, cb)).await,
        "CCB",
        &path_of("CCB"),
    )
    .await;
    assert_eq!((s, sig), (StatusCode::OK, Ok(())));
    assert!(serde_json::from_slice::<Value>(&body).is_err());
    assert!(matches!(
        Answer::parse(&body),
        Err(AnswerError::Malformed(_))
    ));

    put("bad_signature").await;
    let (s, sig, body) = read(
        ask(&run, "CCB", &inquiry(&id, cb)).await,
        "CCB",
        &path_of("CCB"),
    )
    .await;
    assert_eq!((s, sig), (StatusCode::OK, Err(SignatureError::Mismatch)));
    assert!(Answer::parse(&body).is_ok());

    put("leak_card_number").await;
    let (s, sig, body) = read(
        ask(&run, "CCB", &inquiry(&id, cb)).await,
        "CCB",
        &path_of("CCB"),
    )
    .await;
    assert_eq!((s, sig), (StatusCode::OK, Ok(())));
    let v: Value = serde_json::from_slice(&body).unwrap();
    let pan = v["card_number"].as_str().unwrap();
    assert_eq!(pan.len(), 16);
    assert!(customers::luhn_valid(pan));
    assert_eq!(Answer::parse(&body), Err(AnswerError::CardNumber));

    put("error_answer").await;
    let (s, sig, body) = read(
        ask(&run, "CCB", &inquiry(&id, cb)).await,
        "CCB",
        &path_of("CCB"),
    )
    .await;
    assert_eq!((s, sig), (StatusCode::OK, Ok(())));
    let a = Answer::parse(&body).unwrap();
    assert_eq!((a.status, a.cards.len()), (AnswerStatus::Error, 0));

    put("never").await;
    let (s, sig, body) = read(
        ask(&run, "CCB", &inquiry(&id, cb)).await,
        "CCB",
        &path_of("CCB"),
    )
    .await;
    assert_eq!(
        (s, sig, body),
        (StatusCode::ACCEPTED, Ok(()), b"{}".to_vec())
    );
}

#[tokio::test]
async fn latency_and_timeout_delay_the_answer() {
    let run = sim().await;
    let id = person(8);
    admin(
        &run,
        reqwest::Method::PUT,
        &format!("/_admin/subjects/{id}/banks/ABC"),
        Some(json!({"latency_ms": 150})),
    )
    .await;
    admin(
        &run,
        reqwest::Method::PUT,
        &format!("/_admin/subjects/{id}/banks/PAB"),
        Some(json!({"mode": "timeout", "timeout_ms": 400})),
    )
    .await;
    let t = Instant::now();
    assert_eq!(
        ask(&run, "ABC", &inquiry(&id, "http://127.0.0.1:9/cb"))
            .await
            .status(),
        StatusCode::OK
    );
    assert!(t.elapsed() >= Duration::from_millis(150));
    let t = Instant::now();
    let r = reqwest::Client::new()
        .post(format!("{}{}", run.endpoint, path_of("PAB")))
        .timeout(Duration::from_millis(150));
    let body = inquiry(&id, "http://127.0.0.1:9/cb");
    let h = signing::sign(
        &secret_of("PAB"),
        "PAB",
        Utc::now(),
        "POST",
        &path_of("PAB"),
        &body,
    );
    let mut r = r.body(body);
    for (k, v) in h.pairs() {
        r = r.header(k, v);
    }
    assert!(
        r.send().await.unwrap_err().is_timeout(),
        "a client with a shorter timeout gives up"
    );
    let t2 = Instant::now();
    assert_eq!(
        ask(&run, "PAB", &inquiry(&id, "http://127.0.0.1:9/cb"))
            .await
            .status(),
        StatusCode::OK
    );
    assert!(t2.elapsed() >= Duration::from_millis(400));
    assert!(t.elapsed() < Duration::from_secs(5));
}

/// A stand-in for our callback endpoint: answers with the scripted statuses (then 204)
/// and reports each request.
struct Receiver {
    script: Mutex<VecDeque<u16>>,
    tx: mpsc::UnboundedSender<(String, HeaderMap, Vec<u8>)>,
}

async fn receive(
    State(r): State<Arc<Receiver>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let status = r.script.lock().unwrap().pop_front().unwrap_or(204);
    r.tx.send((uri.path().to_owned(), headers, body.to_vec()))
        .unwrap();
    StatusCode::from_u16(status).unwrap()
}

async fn receiver(
    script: &[u16],
) -> (
    String,
    mpsc::UnboundedReceiver<(String, HeaderMap, Vec<u8>)>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let state = Arc::new(Receiver {
        script: Mutex::new(script.iter().copied().collect()),
        tx,
    });
    let app = axum::Router::new()
        .route("/v1/bank-callbacks/{bank}", post(receive))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), rx)
}

fn headers_of(h: &HeaderMap) -> SignatureHeaders {
    let g = |n: &str| h.get(n).unwrap().to_str().unwrap().to_owned();
    SignatureHeaders {
        bank_code: g(signing::HEADER_BANK_CODE),
        timestamp: g(signing::HEADER_TIMESTAMP),
        nonce: g(signing::HEADER_NONCE),
        signature: g(signing::HEADER_SIGNATURE),
    }
}

async fn next(
    rx: &mut mpsc::UnboundedReceiver<(String, HeaderMap, Vec<u8>)>,
) -> (String, HeaderMap, Vec<u8>) {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a callback")
        .unwrap()
}

async fn callback_log(run: &Running, id: &str) -> Vec<Value> {
    for _ in 0..200 {
        let (_, log) = admin(
            run,
            reqwest::Method::GET,
            &format!("/_admin/inquiries/{id}"),
            None,
        )
        .await;
        let entries = log.as_array().unwrap().clone();
        if entries
            .iter()
            .all(|e| e["callback"]["outcome"] != "pending")
        {
            return entries;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("callbacks still pending");
}

#[tokio::test]
async fn callbacks_are_signed_delayed_and_retried() {
    let run = sim().await;
    let (base, mut rx) = receiver(&[503]).await;
    let id = person(9);
    admin(
        &run,
        reqwest::Method::PUT,
        &format!("/_admin/subjects/{id}/banks/CMB"),
        Some(json!({"mode": "callback", "callback_delay_ms": 200})),
    )
    .await;
    let url = format!("{base}/v1/bank-callbacks/CMB");
    let body = inquiry(&id, &url);
    let t = Instant::now();
    let (s, sig, accepted) = read(ask(&run, "CMB", &body).await, "CMB", &path_of("CMB")).await;
    assert_eq!(
        (s, sig, accepted),
        (StatusCode::ACCEPTED, Ok(()), b"{}".to_vec())
    );
    assert!(t.elapsed() < Duration::from_millis(200));

    // First delivery gets a 503, the second (fresh nonce, same body) a 204.
    let (path1, h1, body1) = next(&mut rx).await;
    assert!(t.elapsed() >= Duration::from_millis(200));
    let (path2, h2, body2) = next(&mut rx).await;
    assert_eq!(path1, "/v1/bank-callbacks/CMB");
    assert_eq!((path2, &body2), (path1.clone(), &body1));
    let (h1, h2) = (headers_of(&h1), headers_of(&h2));
    assert_ne!(h1.nonce, h2.nonce);
    assert_eq!(h1.bank_code, "CMB");
    let now = Utc::now();
    assert_eq!(
        signing::verify(&secret_of("CMB"), &h2, now, "POST", &path1, &body2),
        Ok(())
    );
    let a = Answer::parse(&body2).unwrap();
    let sent: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(a.inquiry_id, sent["inquiry_id"].as_str().unwrap());
    assert_eq!(masked(&a), customers::masked_cards(&id, "CMB"));

    let log = callback_log(&run, &id).await;
    assert_eq!(log[0]["status_returned"], 202);
    assert_eq!(
        log[0]["callback"],
        json!({"outcome": "delivered", "attempts": 2, "last_status": 204})
    );
}

#[tokio::test]
async fn a_refused_callback_is_final_and_tampered_callbacks_are_sent() {
    let run = sim().await;
    let (base, mut rx) = receiver(&[422]).await;
    let id = person(10);
    let set = |bank: &'static str, b: Value| {
        let (run, id) = (&run, id.clone());
        async move {
            let (s, _) = admin(
                run,
                reqwest::Method::PUT,
                &format!("/_admin/subjects/{id}/banks/{bank}"),
                Some(b),
            )
            .await;
            assert_eq!(s, StatusCode::OK);
        }
    };
    set(
        "SPDB",
        json!({"mode": "callback", "callback_answer": "leak_card_number"}),
    )
    .await;
    assert_eq!(
        ask(
            &run,
            "SPDB",
            &inquiry(&id, &format!("{base}/v1/bank-callbacks/SPDB"))
        )
        .await
        .status(),
        StatusCode::ACCEPTED
    );
    let (path, h, body) = next(&mut rx).await;
    assert_eq!(
        signing::verify(
            &secret_of("SPDB"),
            &headers_of(&h),
            Utc::now(),
            "POST",
            &path,
            &body
        ),
        Ok(())
    );
    assert_eq!(Answer::parse(&body), Err(AnswerError::CardNumber));

    set(
        "HXB",
        json!({"mode": "callback", "callback_answer": "bad_signature"}),
    )
    .await;
    assert_eq!(
        ask(
            &run,
            "HXB",
            &inquiry(&id, &format!("{base}/v1/bank-callbacks/HXB"))
        )
        .await
        .status(),
        StatusCode::ACCEPTED
    );
    let (path, h, body) = next(&mut rx).await;
    assert_eq!(
        signing::verify(
            &secret_of("HXB"),
            &headers_of(&h),
            Utc::now(),
            "POST",
            &path,
            &body
        ),
        Err(SignatureError::Mismatch)
    );

    let log = callback_log(&run, &id).await;
    let by_bank: HashMap<&str, &Value> = log
        .iter()
        .map(|e| (e["bank_code"].as_str().unwrap(), &e["callback"]))
        .collect();
    assert_eq!(
        *by_bank["SPDB"],
        json!({"outcome": "refused", "attempts": 1, "last_status": 422})
    );
    assert_eq!(by_bank["HXB"]["outcome"], "delivered");
    assert!(rx.try_recv().is_err(), "no retry after a 4xx");
}

#[tokio::test]
async fn an_unreachable_callback_is_retried_then_given_up() {
    let run = sim().await;
    let id = person(11);
    admin(
        &run,
        reqwest::Method::PUT,
        &format!("/_admin/subjects/{id}/banks/CIB"),
        Some(json!({"mode": "callback"})),
    )
    .await;
    // A port nobody listens on: bind, learn the port, close.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/v1/bank-callbacks/CIB");
    assert_eq!(
        ask(&run, "CIB", &inquiry(&id, &url)).await.status(),
        StatusCode::ACCEPTED
    );
    let log = callback_log(&run, &id).await;
    assert_eq!(
        log[0]["callback"],
        json!({"outcome": "gave_up", "attempts": crate::server::CALLBACK_ATTEMPTS, "last_status": null})
    );
}

/// A person with at least `n` cards at `bank`.
fn person_with_cards(bank: &str, n: usize) -> String {
    (100..400)
        .map(person)
        .find(|id| customers::masked_cards(id, bank).len() >= n)
        .expect("someone with enough cards")
}

async fn answer_value(run: &Running, bank: &str, body: &[u8]) -> Value {
    let (status, sig, answer) = read(ask(run, bank, body).await, bank, &path_of(bank)).await;
    assert_eq!((status, sig), (StatusCode::OK, Ok(())));
    serde_json::from_slice(&answer).unwrap()
}

#[tokio::test]
async fn card_refs_are_on_by_default_opaque_and_stable_per_card_and_off_when_asked() {
    let run = sim().await;
    let id = person_with_cards("ICBC", 2);
    let cb = "http://127.0.0.1:9/v1/bank-callbacks/ICBC";
    let refs = |v: &Value| -> Vec<String> {
        v["cards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["card_ref"].as_str().unwrap().to_owned())
            .collect()
    };
    let first = refs(&answer_value(&run, "ICBC", &inquiry(&id, cb)).await);
    let again = refs(&answer_value(&run, "ICBC", &inquiry(&id, cb)).await);
    assert_eq!(first, again, "stable per card across inquiries");
    assert_eq!(first.len(), customers::masked_cards(&id, "ICBC").len());
    let mut distinct = first.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), first.len());
    for r in &first {
        assert!(r.starts_with("cr_") && r.len() <= 64, "{r}");
        assert!(
            !r.bytes().any(|b| b.is_ascii_digit()),
            "no digit at all: {r}"
        );
    }
    // Our side takes the refs, each with its card.
    let parsed = Answer::parse(
        answer_value(&run, "ICBC", &inquiry(&id, cb))
            .await
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    let parsed_refs: Vec<&str> = parsed
        .cards
        .iter()
        .map(|c| c.card_ref.as_ref().unwrap().as_str())
        .collect();
    assert_eq!(parsed_refs, first);

    let (s, _) = admin(
        &run,
        reqwest::Method::PUT,
        "/_admin/banks/ICBC",
        Some(json!({"card_refs": false})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let plain = answer_value(&run, "ICBC", &inquiry(&id, cb)).await;
    assert!(plain["cards"][0].get("card_ref").is_none(), "{plain}");
    Answer::parse(plain.to_string().as_bytes()).unwrap();
}

async fn dispute(
    run: &Running,
    bank: &str,
    body: &Value,
) -> (StatusCode, Result<(), SignatureError>, Value) {
    let path = format!("/banks/{bank}/card-disputes");
    let bytes = body.to_string().into_bytes();
    let h = signing::sign(&secret_of(bank), bank, Utc::now(), "POST", &path, &bytes);
    let mut req = reqwest::Client::new()
        .post(format!("{}{path}", run.endpoint))
        .body(bytes);
    for (k, v) in h.pairs() {
        req = req.header(k, v);
    }
    let (status, sig, answer) = read(req.send().await.unwrap(), bank, &path).await;
    (
        status,
        sig,
        serde_json::from_slice(&answer).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn a_dispute_opens_one_case_per_dispute_id() {
    let run = sim().await;
    let id = person_with_cards("CMB", 2);
    let (s, _) = admin(
        &run,
        reqwest::Method::PUT,
        &format!("/_admin/subjects/{id}/banks/CMB"),
        Some(json!({"card_refs": true})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let inq = inquiry(&id, "http://127.0.0.1:9/v1/bank-callbacks/CMB");
    let answer = answer_value(&run, "CMB", &inq).await;
    let sent: Value = serde_json::from_slice(&inq).unwrap();
    let card_ref = answer["cards"][0]["card_ref"].as_str().unwrap();
    let body = json!({"query_id": sent["query_id"], "inquiry_id": sent["inquiry_id"],
        "card_ref": card_ref, "dispute_id": "01KBZ8Y4B6Z0Q9V7T3J2M1N0PX"});

    let (status, sig, first) = dispute(&run, "CMB", &body).await;
    assert_eq!(
        (status, sig),
        (StatusCode::OK, Ok(())),
        "signed over the request path"
    );
    assert_eq!(first["status"], "ACKNOWLEDGED");
    assert_eq!(first["dispute_id"], body["dispute_id"]);
    let (status, _, again) = dispute(&run, "CMB", &body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, first, "the same case for the same dispute");

    let mut other = body.clone();
    other["card_ref"] = answer["cards"][1]["card_ref"].clone();
    assert_eq!(dispute(&run, "CMB", &other).await.0, StatusCode::CONFLICT);
    let mut unknown = body.clone();
    unknown["dispute_id"] = json!("01KBZ8Y4B6Z0Q9V7T3J2M1N0PY");
    unknown["card_ref"] = json!("cr_notissued");
    assert_eq!(
        dispute(&run, "CMB", &unknown).await.0,
        StatusCode::NOT_FOUND
    );
    let mut extra = body.clone();
    extra["card_number"] = json!("x");
    assert_eq!(
        dispute(&run, "CMB", &extra).await.0,
        StatusCode::BAD_REQUEST
    );
    // Signed for ICBC, sent to CMB.
    let path = "/banks/CMB/card-disputes";
    let bytes = body.to_string().into_bytes();
    let h = signing::sign(&secret_of("ICBC"), "CMB", Utc::now(), "POST", path, &bytes);
    let mut req = reqwest::Client::new()
        .post(format!("{}{path}", run.endpoint))
        .body(bytes);
    for (k, v) in h.pairs() {
        req = req.header(k, v);
    }
    assert_eq!(req.send().await.unwrap().status(), StatusCode::UNAUTHORIZED);

    let (_, listed) = admin(
        &run,
        reqwest::Method::GET,
        &format!("/_admin/disputes/{id}"),
        None,
    )
    .await;
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["deliveries"], 2);
    assert_eq!(listed[0]["case_id"], first["case_id"]);
    assert!(listed[0].get("id_number").is_none());
}

async fn bank_traffic(run: &Running) -> Value {
    let (s, v) = admin(run, reqwest::Method::GET, "/_admin/traffic", None).await;
    assert_eq!(s, StatusCode::OK);
    v
}

/// Sends `n` inquiries to `bank` at once (released together by a barrier) and waits
/// for every answer.
async fn burst(run: &Arc<Running>, bank: &str, n: usize) -> Vec<StatusCode> {
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let (run, barrier, bank) = (run.clone(), barrier.clone(), bank.to_owned());
        tasks.spawn(async move {
            let body = inquiry(&person(900 + i as u32), "http://127.0.0.1:9/cb");
            barrier.wait().await;
            ask(&run, &bank, &body).await.status()
        });
    }
    tasks.join_all().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn traffic_shows_each_banks_inquiries_peak_rate_and_peak_in_flight() {
    let run = Arc::new(sim().await);
    // ICBC holds every answer 2 s: a burst of 25 is all in flight at once.
    let (s, _) = admin(
        &run,
        reqwest::Method::PUT,
        "/_admin/banks/ICBC",
        Some(json!({"mode": "immediate", "latency_ms": 2000})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let statuses = burst(&run, "ICBC", 25).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );

    // CMB: two waves of 6 more than a second apart (each wave answered before the
    // pause): the peak rate is one wave, not both.
    assert_eq!(burst(&run, "CMB", 6).await.len(), 6);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(burst(&run, "CMB", 6).await.len(), 6);

    // An unknown bank is no bank: not counted.
    let body = inquiry(&person(899), "http://127.0.0.1:9/cb");
    assert_eq!(
        ask(&run, "NOSUCHBANK", &body).await.status(),
        StatusCode::NOT_FOUND
    );

    let t = bank_traffic(&run).await;
    assert_eq!(
        t["banks"]["ICBC"],
        json!({"inquiries": 25, "max_rate_per_second": 25, "max_in_flight": 25})
    );
    let cmb = &t["banks"]["CMB"];
    assert_eq!(cmb["inquiries"], 12);
    assert_eq!(cmb["max_rate_per_second"], 6, "{cmb}");
    assert!(
        (1..=6).contains(&cmb["max_in_flight"].as_u64().unwrap()),
        "{cmb}"
    );
    let served: Vec<&String> = t["banks"].as_object().unwrap().keys().collect();
    assert_eq!(served, ["CMB", "ICBC"], "only banks that got inquiries");

    // Reset: the figures start again from nothing.
    let (s, _) = admin(&run, reqwest::Method::POST, "/_admin/traffic/reset", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let t = bank_traffic(&run).await;
    assert_eq!(
        t["banks"]["ICBC"],
        json!({"inquiries": 0, "max_rate_per_second": 0, "max_in_flight": 0})
    );
    assert_eq!(burst(&run, "ICBC", 3).await.len(), 3);
    assert_eq!(
        bank_traffic(&run).await["banks"]["ICBC"]["max_in_flight"],
        3
    );
}

#[tokio::test]
async fn a_bank_set_failing_fails_every_call_until_it_recovers() {
    let run = sim().await;
    let put = |mode: &'static str| {
        let run = &run;
        async move {
            let (s, _) = admin(
                run,
                reqwest::Method::PUT,
                "/_admin/banks/ABC",
                Some(json!({ "mode": mode })),
            )
            .await;
            assert_eq!(s, StatusCode::OK);
        }
    };
    put("error").await;
    for i in 0..5 {
        let body = inquiry(&person(950 + i), "http://127.0.0.1:9/cb");
        assert_eq!(
            ask(&run, "ABC", &body).await.status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        // Other banks are not affected.
        assert_eq!(ask(&run, "CMB", &body).await.status(), StatusCode::OK);
    }
    put("immediate").await;
    let body = inquiry(&person(960), "http://127.0.0.1:9/cb");
    let (status, sig, _) = read(ask(&run, "ABC", &body).await, "ABC", &path_of("ABC")).await;
    assert_eq!((status, sig), (StatusCode::OK, Ok(())));
    assert_eq!(bank_traffic(&run).await["banks"]["ABC"]["inquiries"], 6);
}

#[tokio::test]
async fn serves_every_bank_of_a_configuration_of_hundreds() {
    let banks: Vec<String> = (0..300).map(|i| format!("B{i:03}")).collect();
    let secret = |b: &str| BankSecret::new(format!("{b:<32}").into_bytes()).unwrap();
    let run = start(
        SimConfig {
            banks: banks.clone(),
            secrets: banks.iter().map(|b| (b.clone(), secret(b))).collect(),
            behaviour: BehaviourConfig::default(),
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let id = person(970);
    let (_, truth) = admin(
        &run,
        reqwest::Method::GET,
        &format!("/_admin/truth/{id}"),
        None,
    )
    .await;
    assert_eq!(truth["banks"].as_object().unwrap().len(), 300);
    for bank in ["B000", "B123", "B299"] {
        let body = inquiry(&id, "http://127.0.0.1:9/cb");
        let path = path_of(bank);
        let h = signing::sign(&secret(bank), bank, Utc::now(), "POST", &path, &body);
        let r = post_signed(&run, bank, &body, &h).await;
        assert_eq!(r.status(), StatusCode::OK, "{bank}");
        let h = response_headers(&r);
        let answer = r.bytes().await.unwrap();
        assert_eq!(
            signing::verify(&secret(bank), &h, Utc::now(), "POST", &path, &answer),
            Ok(()),
            "{bank}: signed with its own secret"
        );
        let a = Answer::parse(&answer).unwrap();
        assert_eq!(masked(&a), customers::masked_cards(&id, bank));
    }
    assert_eq!(
        bank_traffic(&run).await["banks"].as_object().unwrap().len(),
        3
    );
}
