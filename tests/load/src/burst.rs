//! `make bench-burst`: queries at FACTOR times one bank's configured inquiry rate for
//! SECONDS against the local stack, then what each bank saw (the simulator's
//! `/_admin/traffic`) against its configured limits (see tests/load/README.md).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use serde_json::Value;
use testkit::load::{self, LoadConfig, Target};

/// Submits queries to every bank at FACTOR x the lowest configured per-bank rate (or
/// --rate) for SECONDS, waits for every report, and prints per bank the configured rate
/// and in-flight limit, the most inquiries the bank saw within a second and at once,
/// then submit→report p50/p99, lost and late reports. Last line: `burst: <N> queries,
/// max bank rate <R>/s (limit <L>/s), late <K>, lost <M>`. Exits 1 if a bank saw more
/// than its limits or a report was lost.
#[derive(Parser, Debug)]
#[command(name = "burst-bench")]
struct Args {
    /// Multiple of the lowest configured bank rate to submit queries at.
    #[arg(long, default_value_t = 10)]
    factor: u32,
    /// How long to submit for.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Queries per second instead of FACTOR x the lowest bank rate.
    #[arg(long)]
    rate: Option<f64>,
    /// Most users in flight at once (each: code request, SMS, submission).
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// A report later than this after its submission counts as late.
    #[arg(long, default_value_t = 600)]
    late_after: u64,
    /// State file of the stack: default LOCAL_STACK_STATE (stack.py exec), else
    /// .local/stack.json (make run).
    #[arg(long)]
    state_file: Option<PathBuf>,
}

/// One bank's configured limits (`bank_limits` of the service configuration).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Limits {
    rate_per_second: f64,
    max_in_flight: u64,
}

/// Limits of `bank`: its override, else the default; `None` if the configuration has
/// no `bank_limits` (before the per-bank gate exists).
fn limits_of(config: &Value, bank: &str) -> Option<Limits> {
    let l = &config["bank_limits"];
    let entry = l["overrides"]
        .get(bank)
        .filter(|o| o.is_object())
        .unwrap_or(&l["default"]);
    Some(Limits {
        rate_per_second: entry["rate_per_second"].as_f64()?,
        max_in_flight: entry["max_in_flight"].as_u64()?,
    })
}

/// The service configuration the stack's functions run with: SERVICE_CONFIG if set
/// (as the stack reads it), else the shipped one.
fn service_config() -> Result<Value, String> {
    let text = match std::env::var_os("SERVICE_CONFIG") {
        Some(p) => std::fs::read_to_string(&p).map_err(|e| format!("SERVICE_CONFIG: {e}"))?,
        None => shared::config::DEFAULT_CONFIG.to_owned(),
    };
    serde_json::from_str(&text).map_err(|e| format!("service configuration: {e}"))
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{} ms", d.as_millis()))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let target = match &args.state_file {
        Some(p) => Target::from_state_file(p),
        None => Target::from_env(),
    };
    let (target, config) = match target.and_then(|t| Ok((t, service_config()?))) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("burst-bench: {e}\n(start the stack with `make run`, or run under `stack.py exec --with-api`)");
            return ExitCode::from(2);
        }
    };
    let Some(sim) = target.endpoints.bank_sim_endpoint.clone() else {
        eprintln!("burst-bench: the stack has no bank simulator (start it --with-api)");
        return ExitCode::from(2);
    };
    let banks: Vec<String> = load::ALL_BANKS.iter().map(|s| (*s).to_owned()).collect();
    let lowest = banks
        .iter()
        .filter_map(|b| limits_of(&config, b).map(|l| (b.clone(), l)))
        .min_by(|a, b| a.1.rate_per_second.total_cmp(&b.1.rate_per_second));
    let rate = match (args.rate, &lowest) {
        (Some(r), _) => r,
        (None, Some((_, l))) => l.rate_per_second * f64::from(args.factor),
        (None, None) => {
            eprintln!("burst-bench: the service configuration has no bank_limits; give --rate");
            return ExitCode::from(2);
        }
    };
    if !(rate.is_finite() && rate > 0.0) {
        eprintln!("burst-bench: rate {rate} is not a positive number of queries/s");
        return ExitCode::from(2);
    }
    let users = ((rate * args.seconds as f64).round() as usize).max(1);
    let cfg = LoadConfig {
        users,
        clients: args.clients,
        banks: banks.clone(),
        pace: Some(Duration::from_secs_f64(1.0 / rate)),
        ..LoadConfig::default()
    };
    println!(
        "burst: {users} queries at {rate:.1}/s for {} s to {} banks{}",
        args.seconds,
        banks.len(),
        lowest
            .as_ref()
            .map(|(b, l)| format!(" ({}x {b}'s {}/s)", args.factor, l.rate_per_second))
            .unwrap_or_default()
    );
    let http = reqwest::Client::new();
    let reset = http
        .post(format!("{sim}/_admin/traffic/reset"))
        .send()
        .await;
    if !reset.is_ok_and(|r| r.status().is_success()) {
        eprintln!("burst-bench: the simulator has no POST /_admin/traffic/reset");
        return ExitCode::from(2);
    }
    let report = match load::run(&target, &cfg).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("burst-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let traffic: Value = match http.get(format!("{sim}/_admin/traffic")).send().await {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(e) => {
            eprintln!("burst-bench: GET /_admin/traffic: {e}");
            return ExitCode::from(2);
        }
    };

    println!(
        "{:<8} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "bank", "limit/s", "seen max/s", "limit fl.", "seen fl.", "inquiries"
    );
    let mut over = Vec::new();
    // The bank that came closest to (or went over) its rate limit: (seen, limit).
    let mut closest: Option<(u64, f64)> = None;
    let mut highest_seen = 0u64;
    for bank in &banks {
        let seen = &traffic["banks"][bank];
        let rate_seen = seen["max_rate_per_second"].as_u64().unwrap_or(0);
        let in_flight = seen["max_in_flight"].as_u64().unwrap_or(0);
        let limits = limits_of(&config, bank);
        let show = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        println!(
            "{bank:<8} {:>10} {rate_seen:>10} {:>10} {in_flight:>10} {:>10}",
            show(limits.map(|l| l.rate_per_second.to_string())),
            show(limits.map(|l| l.max_in_flight.to_string())),
            seen["inquiries"].as_u64().unwrap_or(0),
        );
        if let Some(l) = limits {
            if rate_seen as f64 > l.rate_per_second || in_flight > l.max_in_flight {
                over.push(bank.clone());
            }
            let ratio = |(seen, limit): (u64, f64)| seen as f64 / limit;
            if closest.is_none_or(|c| ratio((rate_seen, l.rate_per_second)) > ratio(c)) {
                closest = Some((rate_seen, l.rate_per_second));
            }
        }
        highest_seen = highest_seen.max(rate_seen);
    }
    let late = report
        .report_latency
        .iter()
        .filter(|d| **d > Duration::from_secs(args.late_after))
        .count();
    let p = |q| ms(load::percentile(&report.report_latency, q));
    println!(
        "submit → report (202 → notice SMS, ±250 ms)  p50 {:>8}   p99 {:>8}   n {}",
        p(50.0),
        p(99.0),
        report.report_latency.len()
    );
    println!(
        "lost reports {}   late reports (> {} s) {late}",
        report.lost.len(),
        args.late_after
    );
    for (user, why) in report.lost.iter().take(10) {
        println!("   {user}: {why}");
    }
    for (kind, n) in &report.errors {
        println!("errors       {n} × {kind}");
    }
    if !over.is_empty() {
        println!("over their limits: {}", over.join(", "));
    }
    let (rate_seen, limit) = match closest {
        Some((seen, limit)) => (seen, limit.to_string()),
        None => (highest_seen, "-".to_owned()),
    };
    println!(
        "burst: {} queries, max bank rate {rate_seen}/s (limit {limit}/s), late {late}, lost {}",
        report.submitted,
        report.lost.len()
    );
    if over.is_empty() && report.lost.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_banks_limits_are_its_override_else_the_default() {
        let c = json!({"bank_limits": {
            "default": {"rate_per_second": 50, "max_in_flight": 20},
            "overrides": {"ABC": {"rate_per_second": 5, "max_in_flight": 3}}
        }});
        assert_eq!(
            limits_of(&c, "ABC"),
            Some(Limits {
                rate_per_second: 5.0,
                max_in_flight: 3
            })
        );
        assert_eq!(
            limits_of(&c, "ICBC"),
            Some(Limits {
                rate_per_second: 50.0,
                max_in_flight: 20
            })
        );
        assert_eq!(limits_of(&json!({}), "ICBC"), None);
    }
}
