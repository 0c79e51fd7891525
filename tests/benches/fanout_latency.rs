//! Fan-out time of one query: `Fanout::dispatch()` for 16 banks, each answering at once
//! after 50 ms of simulated latency, against 1 bank with the same latency. In process:
//! the real `Fanout` with the real `DynamoStore` (fresh tables on DynamoDB Local, queries
//! submitted through the real submission service) and the real `HttpBankClient` against an
//! in-process bank simulator (`bank_sim::server::start`) on 127.0.0.1. Each timed
//! `dispatch()` reads the query and its legs, claims every leg, sends 16 signed inquiries
//! concurrently, verifies 16 signed answers and settles 16 legs (a DynamoDB transaction
//! each, on the same query item's counter). Run under the local stack:
//!
//! ```text
//! python3 infra/local/stack.py exec -- cargo bench -p system-tests --bench fanout_latency
//! ```
//! `FANOUT_BENCH_N` sets the number of timed dispatches per configuration (default 50);
//! `FANOUT_BENCH_LATENCY_MS` the simulated bank latency (default 50).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bank_sim::behaviour::{Behaviour, BehaviourConfig, Mode};
use bank_sim::server::SimConfig;
use sha2::{Digest, Sha256};
use shared::adapters::bank_http::HttpBankClient;
use shared::clock::SystemClock;
use shared::config::{ServiceConfig, DEFAULT_CONFIG};
use shared::dispatch::fanout::{Fanout, FanoutDeps, LegOutcome};
use shared::dispatch::secrets::BankSecrets;
use shared::model::ids::QueryId;
use shared::submission::api::SubmitRequest;
use testkit::submission::Fixture;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Submits a query for `banks` as a new user, through the real submission service.
async fn submit(f: &Fixture, banks: &[String]) -> QueryId {
    let user = f.user().await;
    let code = f.code(&user).await;
    let (mut raw, _) = f.body(&code, &f.face(&user));
    raw["banks"] = serde_json::json!(banks);
    let parsed: SubmitRequest = serde_json::from_value(raw.clone()).expect("a valid body");
    let key = ulid::Ulid::generate().to_string();
    let (status, accepted) = f
        .service
        .submit(&user.id, Some(&key), &raw, parsed, None)
        .await
        .expect("the submission is accepted");
    assert_eq!(status, 202, "{accepted}");
    QueryId::parse(accepted["query_id"].as_str().expect("query_id")).expect("a query id")
}

struct Stats {
    label: String,
    timings: Vec<Duration>,
}

impl Stats {
    fn p(&self, p: f64) -> Duration {
        percentile(&self.timings, p)
    }

    fn print(&self) {
        let mean = self.timings.iter().sum::<Duration>() / self.timings.len() as u32;
        println!(
            "{:<26} n={:<4} p50 {:>7.1} ms  p90 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms  mean {:>7.1} ms",
            self.label,
            self.timings.len(),
            ms(self.p(0.50)),
            ms(self.p(0.90)),
            ms(self.p(0.99)),
            ms(*self.timings.last().expect("n > 0")),
            ms(mean),
        );
    }
}

/// Dispatches `n` (+ warm-up) fresh queries to `banks` one after the other, timing each
/// `dispatch()`; every leg must be answered by it.
async fn run(fanout: &Fanout, f: &Fixture, banks: &[String], n: usize, warmup: usize) -> Stats {
    let mut ids = Vec::with_capacity(n + warmup);
    for _ in 0..n + warmup {
        ids.push(submit(f, banks).await);
    }
    let mut timings = Vec::with_capacity(n);
    for (i, id) in ids.iter().enumerate() {
        let start = Instant::now();
        let outcomes = fanout.dispatch(id).await.expect("dispatch");
        let took = start.elapsed();
        assert_eq!(outcomes.len(), banks.len(), "{outcomes:?}");
        assert!(
            outcomes.iter().all(|(_, o)| *o == LegOutcome::Answered),
            "every bank answers at once: {outcomes:?}"
        );
        if i >= warmup {
            timings.push(took);
        }
    }
    timings.sort();
    Stats {
        label: format!(
            "{} bank{}",
            banks.len(),
            if banks.len() == 1 { "" } else { "s" }
        ),
        timings,
    }
}

#[tokio::main]
async fn main() {
    let n = env_usize("FANOUT_BENCH_N", 50).max(1);
    let latency_ms = env_usize("FANOUT_BENCH_LATENCY_MS", 50) as u64;
    let warmup = 5;

    let f = Fixture::new().await;
    let shipped = ServiceConfig::parse(DEFAULT_CONFIG).expect("shipped config");
    let banks: Vec<String> = shipped
        .banks
        .all()
        .iter()
        .map(|b| b.code.to_string())
        .collect();
    assert_eq!(banks.len(), 16);

    // One random secret per bank, shared by the simulator and the service.
    let seed = ulid::Ulid::generate().to_string();
    let secrets_json = serde_json::Value::Object(
        banks
            .iter()
            .map(|b| {
                let k = Sha256::digest(format!("fanout-bench/{seed}/{b}").as_bytes());
                let hex: String = k.iter().map(|x| format!("{x:02x}")).collect();
                (b.clone(), serde_json::Value::String(hex))
            })
            .collect(),
    )
    .to_string();
    let sim = bank_sim::server::start(
        SimConfig {
            banks: banks.clone(),
            secrets: bank_sim::secrets::parse_secrets(&secrets_json, &banks).expect("secrets"),
            behaviour: BehaviourConfig {
                default: Behaviour {
                    mode: Mode::Immediate,
                    latency_ms,
                    ..Behaviour::default()
                },
                banks: BTreeMap::new(),
            },
        },
        "127.0.0.1:0".parse().expect("an address"),
    )
    .await
    .expect("the bank simulator starts");

    // The shipped configuration with every bank at the simulator.
    let mut config: serde_json::Value = serde_json::from_str(DEFAULT_CONFIG).expect("JSON");
    for bank in config["banks"].as_array_mut().expect("banks") {
        let code = bank["code"].as_str().expect("code").to_owned();
        bank["endpoint"] = sim.bank_endpoint(&code).into();
    }
    let config =
        Arc::new(ServiceConfig::parse(&config.to_string()).expect("the bench configuration"));
    let fanout = Fanout::new(FanoutDeps {
        secrets: BankSecrets::parse(&secrets_json, &config.banks).expect("secrets"),
        config,
        store: f.store.clone(),
        profiles: f.store.clone(),
        client: Arc::new(HttpBankClient::new()),
        clock: Arc::new(SystemClock),
        // Every bank answers at once: no callback is ever made.
        callback_base: "http://127.0.0.1:9".into(),
        bank_timeout: Duration::from_secs(5),
        // Answers are sealed as in production (the cost is part of the fan-out).
        sealer: Arc::new(
            shared::report::crypto::ReportSealer::new(
                "bench",
                &shared::report::crypto::generate_keypair().1,
            )
            .expect("report key"),
        ),
    });

    let one = run(&fanout, &f, &banks[..1], n, warmup).await;
    let all = run(&fanout, &f, &banks, n, warmup).await;

    println!(
        "Fanout::dispatch(), in process: real DynamoStore on DynamoDB Local, real \
         HttpBankClient, in-process bank simulator (every bank immediate, latency {latency_ms} ms); \
         warm-up {warmup} per configuration"
    );
    one.print();
    all.print();
    let serial = latency_ms * banks.len() as u64;
    let ratio = ms(all.p(0.5)) / ms(one.p(0.5));
    println!(
        "16 banks vs 1 bank at p50: {:.2}x ({:+.1} ms); sent one after another, 16 banks would \
         take at least {serial} ms",
        ratio,
        ms(all.p(0.5)) - ms(one.p(0.5)),
    );
    let concurrent = all.p(0.5) < Duration::from_millis(serial / 2);
    println!(
        "verdict: {}",
        if concurrent {
            "concurrent (close to one bank's latency, not sixteen)"
        } else {
            "NOT concurrent: the 16 inquiries look serialised"
        }
    );
    drop(sim);
    if !concurrent {
        std::process::exit(1);
    }
}
