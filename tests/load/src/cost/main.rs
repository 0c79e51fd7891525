//! `make bench-cost`: what one 16-bank query costs to run (see tests/load/README.md).
//!
//! Runs QUERIES users' journeys (SMS code, submission, every bank, the report's notice,
//! one status read) through a local stack whose functions meter their AWS calls
//! (`AWS_CALL_METERING=1`, `shared::adapters::metering`), sums what their logs say per
//! function and per operation, and prices it per million queries.

mod prices;
mod tally;

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use testkit::load::{self, LoadConfig, Target};
use testkit::Template;

use tally::{FunctionTally, OpTally};

/// Sends QUERIES queries to all 16 banks through the stack (CLIENTS at a time) and
/// prints, per function and per AWS operation, invocations, billed duration, calls,
/// items and capacity units, then the cost per million queries at AWS list prices.
#[derive(Parser, Debug)]
#[command(name = "cost-bench")]
struct Args {
    /// Queries (one user each).
    #[arg(long, default_value_t = 10)]
    queries: usize,
    /// Users at a time.
    #[arg(long, default_value_t = 2)]
    clients: usize,
    /// State file of the stack: default LOCAL_STACK_STATE (stack.py exec), else
    /// .local/stack.json (make run).
    #[arg(long)]
    state_file: Option<PathBuf>,
    /// USD per SMS part to +86 (default: an estimate, see prices.rs).
    #[arg(long, default_value_t = prices::SMS_CHINA_PER_MESSAGE_ESTIMATE)]
    sms_price: f64,
    /// Seconds to wait, after the last submission, for the last report.
    #[arg(long, default_value_t = 300)]
    report_timeout: u64,
}

/// Each log file's length now: the run's lines are what comes after.
fn log_offsets(target: &Target) -> BTreeMap<String, u64> {
    target
        .function_logs
        .iter()
        .map(|(k, p)| (k.clone(), std::fs::metadata(p).map_or(0, |m| m.len())))
        .collect()
}

fn tally_since(
    target: &Target,
    offsets: &BTreeMap<String, u64>,
) -> Result<BTreeMap<String, FunctionTally>, String> {
    let mut out: BTreeMap<String, FunctionTally> = BTreeMap::new();
    for (instance, path) in &target.function_logs {
        let mut f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        f.seek(SeekFrom::Start(offsets.get(instance).copied().unwrap_or(0)))
            .map_err(|e| e.to_string())?;
        let mut text = String::new();
        f.read_to_string(&mut text)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let t = out
            .entry(tally::function_of(instance).to_owned())
            .or_default();
        for line in text.lines() {
            t.add_line(line);
        }
    }
    Ok(out)
}

/// `MemorySize` of each function (by binary name), Globals applied.
fn template_memory() -> BTreeMap<String, f64> {
    Template::load_default()
        .map(|t| {
            t.functions()
                .into_iter()
                .filter_map(|f| Some((f.binary?, f.properties["MemorySize"].as_f64()?)))
                .collect()
        })
        .unwrap_or_default()
}

fn p50(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn is_read(operation: &str) -> bool {
    matches!(
        operation,
        "GetItem" | "Query" | "Scan" | "BatchGetItem" | "TransactGetItems"
    )
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let target = match &args.state_file {
        Some(p) => Target::from_state_file(p),
        None => Target::from_env(),
    };
    let target = match target {
        Ok(t) if !t.function_logs.is_empty() => t,
        Ok(_) => {
            eprintln!("cost-bench: the state file lists no function logs (a stack.py from before `function_logs`?)");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("cost-bench: {e}\n(run it with `make bench-cost`)");
            return ExitCode::from(2);
        }
    };
    let sns = target.endpoints.sns_endpoint.clone();
    let sms_before = testkit::sms::sent_sms(&sns).await.map_or(0, |s| s.len());
    let offsets = log_offsets(&target);
    let cfg = LoadConfig {
        users: args.queries,
        clients: args.clients,
        report_timeout: Duration::from_secs(args.report_timeout),
        // Only the queries' own calls: no probe of the API meanwhile.
        probe: false,
        ..LoadConfig::default()
    };
    println!(
        "cost-bench: {} queries to {} banks, {} at a time, {} builds of the functions",
        cfg.users,
        cfg.banks.len(),
        cfg.clients,
        if target.release { "release" } else { "debug" }
    );
    let report = match load::run(&target, &cfg).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cost-bench: {e}");
            return ExitCode::from(2);
        }
    };
    // The instances write their lines as they go; the settle wait has passed.
    let tallies = match tally_since(&target, &offsets) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cost-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let sms: Vec<_> = testkit::sms::sent_sms(&sns)
        .await
        .map(|s| s.into_iter().skip(sms_before).collect())
        .unwrap_or_default();
    let sms_parts: u64 = sms.iter().map(|m| tally::sms_parts(&m.message)).sum();
    if tallies.values().all(|t| t.ops.is_empty()) {
        eprintln!(
            "cost-bench: no metered call in the functions' logs: start the stack with \
             AWS_CALL_METERING=1 in its environment (make bench-cost does)"
        );
        return ExitCode::from(2);
    }
    let queries = report.report_latency.len();
    if !report.lost.is_empty() || queries == 0 {
        eprintln!(
            "cost-bench: {} of {} queries lost, e.g. {:?}",
            report.lost.len(),
            cfg.users,
            report.lost.first()
        );
        return ExitCode::FAILURE;
    }
    print_report(&args, &tallies, queries as f64, sms.len() as u64, sms_parts);
    ExitCode::SUCCESS
}

fn print_report(
    args: &Args,
    tallies: &BTreeMap<String, FunctionTally>,
    q: f64,
    sms_messages: u64,
    sms_parts: u64,
) {
    let memory = template_memory();
    println!("\nper function, per query (totals / {q})");
    println!(
        "{:<17} {:>7} {:>10} {:>8} {:>5} {:>9} {:>7} {:>7} {:>6} {:>6} {:>6}",
        "function",
        "invoc.",
        "billed ms",
        "p50 ms",
        "MB",
        "DDB calls",
        "RRU",
        "WRU",
        "SNS",
        "SQS",
        "banks"
    );
    for (name, t) in tallies {
        let ddb = t.service("DynamoDB");
        println!(
            "{:<17} {:>7.2} {:>10.1} {:>8.1} {:>5} {:>9.2} {:>7.2} {:>7.2} {:>6.2} {:>6.2} {:>6.2}",
            name,
            t.invocations as f64 / q,
            t.billed_ms as f64 / q,
            p50(&t.duration_ms),
            memory.get(name).map_or("?".into(), |m| m.to_string()),
            ddb.calls as f64 / q,
            ddb.read_units / q,
            ddb.write_units / q,
            t.service("SNS").calls as f64 / q,
            t.service("SQS").calls as f64 / q,
            t.bank_calls as f64 / q,
        );
    }

    println!("\nper AWS operation, per query");
    println!(
        "{:<17} {:<9} {:<19} {:>7} {:>7} {:>7} {:>7} {:>7}",
        "function", "service", "operation", "calls", "failed", "items", "RRU", "WRU"
    );
    let mut failed_write_items = 0.0;
    for (name, t) in tallies {
        for ((service, op), o) in &t.ops {
            let OpTally {
                calls,
                failed,
                items,
                read_units,
                write_units,
            } = o;
            if service == "DynamoDB" && !is_read(op) && o.calls > 0 {
                failed_write_items += *failed as f64 * (*items as f64 / *calls as f64);
            }
            println!(
                "{:<17} {:<9} {:<19} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>7.2}",
                name,
                service,
                op,
                *calls as f64 / q,
                *failed as f64 / q,
                *items as f64 / q,
                read_units / q,
                write_units / q
            );
        }
    }

    let sum = |f: &dyn Fn(&FunctionTally) -> f64| tallies.values().map(f).sum::<f64>() / q;
    let requests = sum(&|t| t.invocations as f64);
    let gb_s_base = sum(&|t| t.billed_ms as f64) / 1000.0 * prices::LAMBDA_BASE_MEMORY_MB / 1024.0;
    let gb_s_template = tallies
        .iter()
        .map(|(n, t)| {
            let mb = memory
                .get(n)
                .copied()
                .unwrap_or(prices::LAMBDA_BASE_MEMORY_MB);
            t.billed_ms as f64 / 1000.0 * mb / 1024.0
        })
        .sum::<f64>()
        / q;
    let rru = sum(&|t| t.service("DynamoDB").read_units);
    let wru = sum(&|t| t.service("DynamoDB").write_units);
    // DynamoDB bills a refused conditional write (at least 1 WRU an item) but reports
    // no units with the refusal.
    let wru_refused = failed_write_items / q;
    let sqs = sum(&|t| t.service("SQS").calls as f64);
    let parts = sms_parts as f64 / q;

    let m = 1e6;
    let rows = [
        (
            "Lambda requests",
            requests,
            "",
            requests * prices::LAMBDA_PER_REQUEST * m,
        ),
        (
            "Lambda GB-s at 128 MB",
            gb_s_base,
            "",
            gb_s_base * prices::LAMBDA_ARM64_PER_GB_SECOND * m,
        ),
        ("DynamoDB RRU", rru, "", rru * prices::DYNAMODB_PER_RRU * m),
        ("DynamoDB WRU", wru, "", wru * prices::DYNAMODB_PER_WRU * m),
        (
            "DynamoDB WRU refused",
            wru_refused,
            "(est. 1 an item)",
            wru_refused * prices::DYNAMODB_PER_WRU * m,
        ),
        (
            "SQS requests (FIFO)",
            sqs,
            "(senders')",
            sqs * prices::SQS_FIFO_PER_REQUEST * m,
        ),
        (
            "SMS parts to +86",
            parts,
            "(see prices.rs)",
            parts * args.sms_price * m,
        ),
    ];
    println!(
        "\ncost per million queries, us-east-1 list prices checked {} (arm64, on-demand)",
        prices::CHECKED
    );
    println!(
        "{:<24} {:>12} {:<18} {:>14}",
        "item", "per query", "", "USD / 1M queries"
    );
    let mut total = 0.0;
    for (what, per_query, note, usd) in rows {
        total += usd;
        println!("{what:<24} {per_query:>12.4} {note:<18} {usd:>14.2}");
    }
    let no_sms = total - parts * args.sms_price * m;
    println!(
        "{:<24} {:>12} {:<18} {:>14.2}",
        "total at 128 MB", "", "", total
    );
    println!(
        "{:<24} {:>12} {:<18} {:>14.2}",
        "  without the SMS", "", "", no_sms
    );
    let template_extra = (gb_s_template - gb_s_base) * prices::LAMBDA_ARM64_PER_GB_SECOND * m;
    println!(
        "{:<24} {:>12.4} {:<18} {:>14.2}",
        "total at template memory",
        gb_s_template,
        "(GB-s per query)",
        total + template_extra
    );
    println!(
        "SMS: {sms_messages} messages, {sms_parts} parts at ${}/part. Not counted: DynamoDB \
         Streams reads by Lambda (free), the SQS event source's receives and deletes (Lambda's \
         own requests, billed, about 2 per batch).",
        args.sms_price
    );
}
