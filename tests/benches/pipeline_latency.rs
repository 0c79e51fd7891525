//! Submit-to-report latency through the running local stack: HTTP through `cargo lambda
//! watch` (debug-built functions), the DynamoDB stream through the event pump, the 16
//! simulated banks all answering at once without latency, the aggregator and the SNS
//! emulator. For each new user: one 16-bank query; the clock starts when the 202 arrives
//! and stops when `GET /v1/card-queries/{id}` (polled every 20 ms) shows READY. The
//! record's own `report_generated_at - submitted_at` is reported too (server side, without
//! the polling; both are stored in whole seconds, so it is shown as a histogram). Run
//! with a small concurrency, then one after another:
//!
//! ```text
//! python3 infra/local/stack.py exec --with-api --schedule-every 3 -- \
//!     cargo bench -p system-tests --bench pipeline_latency
//! ```
//! `PIPELINE_BENCH_N` sets the number of queries per run (default 100);
//! `PIPELINE_BENCH_CONCURRENCY` the concurrency of the first run (default 4).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use testkit::api::{Api, UserKind};

const ALL_BANKS: [&str; 16] = [
    "ICBC", "ABC", "BOC", "CCB", "BOCOM", "PSBC", "CMB", "SPDB", "CITIC", "CEB", "HXB", "CMBC",
    "CGB", "PAB", "CIB", "CZB",
];
const POLL: Duration = Duration::from_millis(20);
const TIMEOUT: Duration = Duration::from_secs(120);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn line(label: &str, mut v: Vec<Duration>) -> String {
    v.sort();
    format!(
        "{label:<40} p50 {:>7.0} ms  p90 {:>7.0} ms  p99 {:>7.0} ms  max {:>7.0} ms",
        ms(percentile(&v, 0.50)),
        ms(percentile(&v, 0.90)),
        ms(percentile(&v, 0.99)),
        ms(*v.last().expect("n > 0")),
    )
}

struct One {
    /// 202 received → READY seen by polling.
    observed: Duration,
    /// `report_generated_at - submitted_at` from the record.
    recorded: Duration,
    /// The submission request itself (code, eligibility, POST), for context.
    submit: Duration,
}

/// One user, one 16-bank query, timed.
async fn one(api: &Api) -> One {
    let user = api.new_user(UserKind::Eligible).await;
    // Every bank answers at once, without latency, for this person (the simulator's
    // default; set explicitly so that a bank-level setting cannot change it).
    for bank in ALL_BANKS {
        api.sim_behave(&user, bank, json!({"mode": "immediate", "latency_ms": 0}))
            .await;
    }
    let submit_start = Instant::now();
    let accepted = api.submit_query(&user, &ALL_BANKS).await;
    let t0 = Instant::now();
    let submit = t0 - submit_start;
    let id = accepted["query_id"].as_str().expect("query_id").to_owned();
    let token = api.token(&user);
    let path = format!("/v1/card-queries/{id}");
    let record = loop {
        let reply = api.get_json(&path, &token).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        let body = reply.body.expect("a body");
        match body["report_status"].as_str() {
            Some("PENDING") => {}
            Some("READY") => break body,
            other => panic!("query {id} ended {other:?}: {body}"),
        }
        assert!(
            t0.elapsed() < TIMEOUT,
            "no report after {TIMEOUT:?}: {body}"
        );
        tokio::time::sleep(POLL).await;
    };
    let observed = t0.elapsed();
    let parse = |k: &str| {
        shared::model::timestamp::parse(record[k].as_str().unwrap_or_else(|| panic!("{k}")))
            .unwrap_or_else(|e| panic!("{k}: {e:?}"))
    };
    let recorded = parse("report_generated_at") - parse("submitted_at");
    One {
        observed,
        recorded: recorded.to_std().unwrap_or(Duration::ZERO),
        submit,
    }
}

async fn run(api: &Arc<Api>, n: usize, concurrency: usize) -> (Vec<One>, Duration) {
    let start = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (api, next) = (api.clone(), next.clone());
            tokio::spawn(async move {
                let mut out = Vec::new();
                while next.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < n {
                    out.push(one(&api).await);
                }
                out
            })
        })
        .collect();
    let mut all = Vec::with_capacity(n);
    for w in workers {
        all.extend(w.await.expect("a worker"));
    }
    (all, start.elapsed())
}

fn report(label: &str, results: &[One], wall: Duration) {
    let n = results.len();
    println!(
        "{label}: {n} queries of 16 banks in {:.1} s ({:.2} queries/s)",
        wall.as_secs_f64(),
        n as f64 / wall.as_secs_f64()
    );
    println!(
        "  {}",
        line(
            "202 -> READY seen (poll 20 ms)",
            results.iter().map(|r| r.observed).collect()
        )
    );
    // The record's times are stored in whole seconds: a histogram, not percentiles.
    let mut seconds: std::collections::BTreeMap<u64, usize> = Default::default();
    for r in results {
        *seconds.entry(r.recorded.as_secs()).or_default() += 1;
    }
    let hist: Vec<String> = seconds
        .iter()
        .map(|(s, count)| format!("{s} s: {count}"))
        .collect();
    println!(
        "  report_generated_at - submitted_at (stored in whole seconds): {}",
        hist.join(", ")
    );
    println!(
        "  {}",
        line(
            "(submission: code + eligibility + POST)",
            results.iter().map(|r| r.submit).collect()
        )
    );
    let mut observed: Vec<Duration> = results.iter().map(|r| r.observed).collect();
    observed.sort();
    let p50 = percentile(&observed, 0.5);
    let p99 = percentile(&observed, 0.99);
    println!(
        "  target p50 < 1 s: {}; p99 < 3 s: {}",
        if p50 < Duration::from_secs(1) {
            "met"
        } else {
            "MISSED"
        },
        if p99 < Duration::from_secs(3) {
            "met"
        } else {
            "MISSED"
        },
    );
}

#[tokio::main]
async fn main() {
    let n = env_usize("PIPELINE_BENCH_N", 100).max(1);
    let concurrency = env_usize("PIPELINE_BENCH_CONCURRENCY", 4).max(1);
    let api = Arc::new(Api::get().await);
    println!(
        "submit-to-report latency on the local stack: functions debug-built and served by \
         `cargo lambda watch` (one instance per function, its default), event pump, bank \
         simulator (16 banks, immediate, no latency), DynamoDB Local, moto SNS"
    );
    // Warm-up: the first invocations start the functions' processes.
    let (warm, _) = run(&api, 3, 1).await;
    println!(
        "warm-up: 3 queries, first 202 -> READY {:.0} ms",
        ms(warm[0].observed)
    );
    let (concurrent, wall) = run(&api, n, concurrency).await;
    report(&format!("{concurrency} at a time"), &concurrent, wall);
    let (sequential, wall) = run(&api, n, 1).await;
    report("one after another", &sequential, wall);
}
