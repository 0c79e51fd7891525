//! `coldstart`: the cold-start benchmark (`make bench-coldstart`). Release builds of
//! every function and a Python + boto3 peer (awslambdaric) run, one process at a time,
//! under the project's Lambda Runtime API emulator (`infra/local/runtime-api`) against
//! the local stack; per function: init (process start → first `next`), the first call,
//! warm p50/p99, peak RSS (`VmHWM`); medians over `--runs` cold starts, taken in rounds
//! that alternate ours and the peer's so that a noisy machine slows both alike.
//!
//! Run under `python3 infra/local/stack.py exec -- ...` (DynamoDB Local, moto SNS and
//! their environment). Exit 1 if a goal is missed, 2 if the benchmark cannot run.

mod events;
mod measure;
mod report;
mod setup;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use events::Event;
use measure::Target;

#[derive(Parser)]
#[command(about = "Cold start of every function vs a Python peer, under the Runtime API emulator")]
struct Args {
    /// Cold starts per function (medians over them).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Warm calls after each cold start's first one.
    #[arg(long, default_value_t = 100)]
    warm: usize,
    /// Where the release builds of the functions are (`<target>/release`).
    #[arg(long)]
    bin_dir: PathBuf,
    /// The devtools binary (keys, tables, seed, env, tokens).
    #[arg(long)]
    devtools: PathBuf,
    /// The peer's Python, from a virtualenv with awslambdaric and boto3; none: no peer.
    #[arg(long)]
    python: Option<PathBuf>,
    /// The table prefix of the benchmark's own tables.
    #[arg(long, default_value = "cold-")]
    prefix: String,
    /// Only these functions (and peers), by name; repeatable. Default: all.
    #[arg(long)]
    only: Vec<String>,
    /// Where the service config and each process's log go.
    #[arg(long, default_value = ".local/coldstart")]
    work_dir: PathBuf,
}

const HTTP_PEER: &str = "python-eligibility";
const STREAM_PEER: &str = "python-stream";

/// Our functions: name, event, the template's timeout, the peer doing the same kind of
/// work (HTTP or event-driven).
const FUNCTIONS: [(&str, Event, u64, &str); 7] = [
    ("submit-query", Event::Eligibility, 10, HTTP_PEER),
    ("view-report", Event::ListQueries, 10, HTTP_PEER),
    ("bank-callback", Event::BankCallback, 10, HTTP_PEER),
    ("bank-fanout", Event::QueryInserted, 60, STREAM_PEER),
    ("aggregate-report", Event::QueryModified, 30, STREAM_PEER),
    ("bank-inquiry", Event::InquiryMessage, 60, STREAM_PEER),
    ("sweep", Event::Scheduled, 280, STREAM_PEER),
];

fn targets(args: &Args) -> Vec<(Target, Option<&'static str>)> {
    let mut out: Vec<(Target, Option<&'static str>)> = FUNCTIONS
        .iter()
        .map(|&(name, event, timeout, peer)| {
            let target = Target {
                name: name.into(),
                program: args.bin_dir.join(name),
                args: Vec::new(),
                extra_env: Vec::new(),
                event,
                timeout: Duration::from_secs(timeout),
            };
            (target, args.python.is_some().then_some(peer))
        })
        .collect();
    if let Some(python) = &args.python {
        let peer_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peer");
        for (name, handler, event) in [
            (HTTP_PEER, "handlers.eligibility", Event::Eligibility),
            (STREAM_PEER, "handlers.stream", Event::QueryModified),
        ] {
            out.push((
                Target {
                    name: name.into(),
                    program: python.clone(),
                    args: vec!["-m".into(), "awslambdaric".into(), handler.into()],
                    extra_env: vec![
                        ("LAMBDA_TASK_ROOT".into(), peer_dir.display().to_string()),
                        ("PYTHONPATH".into(), peer_dir.display().to_string()),
                        ("PYTHONDONTWRITEBYTECODE".into(), "1".into()),
                    ],
                    event,
                    timeout: Duration::from_secs(10),
                },
                None,
            ));
        }
    }
    out
}

async fn run(args: Args) -> Result<bool, String> {
    if args.runs == 0 || args.warm == 0 {
        return Err("--runs and --warm must be at least 1".into());
    }
    let world = setup::prepare(&args.devtools, &args.prefix, &args.work_dir)?;
    let mut targets = targets(&args);
    if !args.only.is_empty() {
        targets.retain(|(t, _)| args.only.contains(&t.name));
    }
    if targets.is_empty() {
        return Err("--only names no function".into());
    }
    let logs = args.work_dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;
    let load_before = load_average();
    let mut results: Vec<Vec<measure::ColdStart>> = targets.iter().map(|_| Vec::new()).collect();
    for round in 1..=args.runs {
        eprintln!("coldstart: round {round}/{}", args.runs);
        for ((target, _), runs) in targets.iter().zip(&mut results) {
            let log = logs.join(format!("{}-{round}.log", target.name));
            let cold = measure::cold_start(target, &world, args.warm, &log)
                .await
                .map_err(|e| format!("{}: {e}", target.name))?;
            runs.push(cold);
        }
    }
    let rows: Vec<report::Row> = targets
        .iter()
        .zip(&results)
        .map(|((t, peer), runs)| report::Row::new(&t.name, *peer, runs))
        .collect();
    println!(
        "Cold start: {} cold starts per function (medians), {} warm calls after each; \
         release builds, Runtime API emulator, DynamoDB Local",
        args.runs, args.warm
    );
    println!(
        "Machine: {} CPUs, 1-minute load average {} before, {} after \
         (init ms is wall clock, so it grows with the load; init CPU is the process's own CPU time)",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_before,
        load_average()
    );
    print!("{}", report::table(&rows));
    println!();
    let goals = report::goals(&rows);
    print!("{}", report::goal_lines(&goals));
    print!("{}", report::cpu_note(&rows).unwrap_or_default());
    Ok(goals.iter().all(|g| g.pass))
}

/// The 1-minute load average, as `/proc/loadavg` gives it.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("coldstart: {e}");
            ExitCode::from(2)
        }
    }
}
