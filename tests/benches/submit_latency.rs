//! Warm latency of `POST /v1/card-queries` against DynamoDB Local: the whole handler
//! (JWT check, body parsing, every rule, argon2id, the DynamoDB transaction), in process,
//! minus the Lambda runtime. Run under the local stack:
//!
//! ```text
//! python3 infra/local/stack.py exec -- cargo bench -p system-tests --bench submit_latency
//! ```
//! `SUBMIT_BENCH_N` sets the number of timed submissions (default 200).

use std::sync::Arc;
use std::time::{Duration, Instant};

use lambda_http::tower::ServiceExt;
use lambda_http::{Body, Request};
use shared::inbound::submission::{router, SubmissionApi};
use shared::security::app_jwt::AppAuthenticator;
use shared::security::dev;
use testkit::submission::Fixture;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn request(token: &str, key: &str, body: &serde_json::Value) -> Request {
    lambda_http::http::Request::builder()
        .method("POST")
        .uri("/v1/card-queries")
        .header("authorization", format!("Bearer {token}"))
        .header("idempotency-key", key)
        .header("content-type", "application/json")
        .body(Body::Text(body.to_string()))
        .expect("a valid request")
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("SUBMIT_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let warmup = 20;
    let f = Fixture::new().await;
    let (private, public) = dev::generate_rsa();
    let api = router(Arc::new(SubmissionApi {
        service: Arc::clone(&f.service),
        auth: AppAuthenticator::new(&public, "bench", "bench").expect("key"),
    }));
    let now = chrono::Utc::now();

    // Each submission needs a user of its own (one active query per user).
    let mut prepared = Vec::with_capacity(n + warmup);
    for i in 0..n + warmup {
        let user = f.user().await;
        let code = f.code(&user).await;
        let (raw, _) = f.body(&code, &f.face(&user));
        let token =
            dev::app_token(&private, "bench", "bench", user.id.as_str(), now, 3600).expect("token");
        prepared.push(request(&token, &format!("bench-{i}"), &raw));
    }

    let mut timings = Vec::with_capacity(n);
    let mut requests = Vec::with_capacity(n);
    for (i, req) in prepared.into_iter().enumerate() {
        f.dynamo_requests.reset();
        let start = Instant::now();
        let resp = api
            .clone()
            .oneshot(req)
            .await
            .expect("the router is infallible");
        let took = start.elapsed();
        assert_eq!(resp.status(), 202, "{:?}", resp.body());
        if i >= warmup {
            timings.push(took);
            requests.push(f.dynamo_requests.get());
        }
    }
    timings.sort();
    let mean = timings.iter().sum::<Duration>() / timings.len() as u32;
    println!("POST /v1/card-queries, warm, in process against DynamoDB Local, n={n}");
    println!(
        "p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms  max {:.1} ms  mean {:.1} ms",
        percentile(&timings, 0.50).as_secs_f64() * 1e3,
        percentile(&timings, 0.90).as_secs_f64() * 1e3,
        percentile(&timings, 0.99).as_secs_f64() * 1e3,
        timings.last().expect("n > 0").as_secs_f64() * 1e3,
        mean.as_secs_f64() * 1e3,
    );
    let min = requests.iter().min().expect("n > 0");
    let max = requests.iter().max().expect("n > 0");
    println!("DynamoDB requests per submission: {min}..={max}");
}
