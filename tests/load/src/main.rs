//! `make load`: a burst of users through a running local stack (see tests/load/README.md).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use testkit::load::{self, LoadConfig, Target};

/// Seeds USERS users, has CLIENTS of them at a time ask for an SMS code and submit a
/// query to every bank, waits for every report, and prints latencies, throughput, CPU
/// seconds per process, lost queries and duplicate SMS. Exits 1 if a query was lost or
/// an SMS duplicated.
#[derive(Parser, Debug)]
#[command(name = "load-bench")]
struct Args {
    /// Users (each submits one query).
    #[arg(long, default_value_t = 1000)]
    users: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Banks per query (the first N of the 16).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u8).range(1..=16))]
    banks: u8,
    /// State file of the stack: default LOCAL_STACK_STATE (stack.py exec), else
    /// .local/stack.json (make run).
    #[arg(long)]
    state_file: Option<PathBuf>,
    /// Seconds to wait, after the last submission, for the last report.
    #[arg(long, default_value_t = 600)]
    report_timeout: u64,
}

/// The template's functions by binary: a list kept here missed bank-inquiry when the
/// queue came, and with it the inquiries' CPU.
fn functions() -> Vec<String> {
    let template = testkit::Template::load_default().expect("infra/template.yaml parses");
    let mut names: Vec<String> = template
        .functions()
        .into_iter()
        .filter_map(|f| f.binary)
        .collect();
    names.sort();
    names
}
const SERVICES: [(&str, &str); 6] = [
    ("dynamodb", "DynamoDB Local"),
    ("sns", "SNS emulator (moto)"),
    ("bank_sim", "bank simulator"),
    ("pump", "event pump"),
    ("watch", "cargo lambda watch"),
    ("api", "API gate"),
];

fn cpu_now(target: &Target, functions: &[&str]) -> BTreeMap<String, (f64, usize)> {
    let mut out = BTreeMap::new();
    for (key, label) in SERVICES {
        if let Some(cpu) = target.pids.get(key).and_then(|p| load::cpu_seconds(*p)) {
            out.insert(label.to_owned(), (cpu, 1));
        }
    }
    let Some(launcher) = target.launcher_pid else {
        return out;
    };
    for (name, pids) in load::processes_named(functions, launcher) {
        let cpu: f64 = pids.iter().filter_map(|p| load::cpu_seconds(*p)).sum();
        out.insert(name, (cpu, pids.len()));
    }
    out
}

/// CPU seconds one payment-password check takes here (argon2id with the app's
/// parameters, as submit-query runs it once per submission): what "the password hash
/// aside" takes out of submit-query's CPU.
fn password_check_cpu() -> f64 {
    const CHECKS: u32 = 20;
    let hash = shared::security::password::hash("135790");
    let me = std::process::id();
    let before = load::cpu_seconds(me).unwrap_or(0.0);
    for _ in 0..CHECKS {
        assert!(shared::security::password::verify("135790", &hash));
    }
    (load::cpu_seconds(me).unwrap_or(0.0) - before).max(0.0) / f64::from(CHECKS)
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
    let target = match target {
        Ok(t) => t,
        Err(e) => {
            eprintln!("load-bench: {e}\n(start the stack with `make run`, or run under `stack.py exec --with-api`)");
            return ExitCode::from(2);
        }
    };
    let cfg = LoadConfig {
        users: args.users,
        clients: args.clients,
        banks: load::ALL_BANKS[..usize::from(args.banks)]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        report_timeout: Duration::from_secs(args.report_timeout),
        ..LoadConfig::default()
    };
    let api = target.endpoints.api_endpoint.clone().unwrap_or_default();
    println!(
        "load: {} users, {} clients, {} banks per query, against {api}",
        cfg.users,
        cfg.clients,
        cfg.banks.len()
    );
    let function_names = functions();
    let function_names: Vec<&str> = function_names.iter().map(String::as_str).collect();
    let cpu_before = cpu_now(&target, &function_names);
    let report = match load::run(&target, &cfg).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("load-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let cpu_after = cpu_now(&target, &function_names);

    let p = |v: &[Duration], q| ms(load::percentile(v, q));
    println!(
        "submit latency (POST /v1/card-queries → 202)   p50 {:>8}   p99 {:>8}   n {}",
        p(&report.submit_latency, 50.0),
        p(&report.submit_latency, 99.0),
        report.submit_latency.len()
    );
    println!(
        "submit → report (202 → notice SMS, ±250 ms)    p50 {:>8}   p99 {:>8}   n {}",
        p(&report.report_latency, 50.0),
        p(&report.report_latency, 99.0),
        report.report_latency.len()
    );
    let secs = report.wall.as_secs_f64();
    println!(
        "throughput  {:.1} queries/s reported ({} reported in {:.1} s, first submission to last notice)",
        if secs > 0.0 { report.report_latency.len() as f64 / secs } else { 0.0 },
        report.report_latency.len(),
        secs
    );
    println!("lost queries     {}", report.lost.len());
    for (user, why) in report.lost.iter().take(10) {
        println!("   {user}: {why}");
    }
    println!("duplicate SMS    {}", report.duplicate_sms.len());
    for (phone, codes, notices) in report.duplicate_sms.iter().take(10) {
        println!("   {phone}: {codes} codes, {notices} notices");
    }
    for (kind, n) in &report.errors {
        println!("errors           {n} × {kind}");
    }
    println!(
        "API probe (GET /v1/banks every 500 ms)  {} answered, {} not",
        report.probe_ok, report.probe_failed
    );
    println!(
        "CPU seconds during the run ({} builds of the functions):",
        if target.release { "release" } else { "debug" }
    );
    let reported = report.report_latency.len().max(1) as f64;
    let used: Vec<(&String, f64, usize)> = cpu_after
        .iter()
        .map(|(name, (after, n))| {
            let before = cpu_before.get(name).map_or(0.0, |b| b.0);
            (name, (after - before).max(0.0), *n)
        })
        .collect();
    let total: f64 = used.iter().map(|u| u.1).sum();
    let mut ours = 0.0;
    for (name, cpu, n) in used {
        let inst = if function_names.contains(&name.as_str()) {
            ours += cpu;
            format!("  ({n} instances)")
        } else {
            String::new()
        };
        println!(
            "   {name:<22} {cpu:>8.1}  {:>7.1} ms/query  {:>5.1} %{inst}",
            cpu * 1000.0 / reported,
            if total > 0.0 {
                cpu * 100.0 / total
            } else {
                0.0
            }
        );
    }
    let hash = password_check_cpu();
    let ours_ms = ours * 1000.0 / reported;
    println!(
        "our functions: {ours_ms:.1} ms CPU per query, {:.1} ms without the password hash \
         ({:.1} ms a check, measured here); {:.0} % of all CPU above; goal ≤ 30 ms",
        ours_ms - hash * 1000.0,
        hash * 1000.0,
        if total > 0.0 {
            ours * 100.0 / total
        } else {
            0.0
        }
    );
    if report.healthy() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod function_list_tests {
    /// Every function crate of `functions/` is one the CPU table counts as ours.
    #[test]
    fn the_cpu_table_counts_every_function_crate() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../functions");
        let mut crates: Vec<String> = std::fs::read_dir(&root)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("Cargo.toml").exists())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        crates.sort();
        assert_eq!(super::functions(), crates);
    }
}
