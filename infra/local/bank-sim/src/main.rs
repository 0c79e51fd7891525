//! `bank-sim --port N [--host 127.0.0.1] --secrets FILE [--behaviour FILE.json]`
//!
//! Prints `BANK-SIM READY {"endpoint":"http://127.0.0.1:PORT"}` on stdout once listening;
//! logs go to stderr. Stops on SIGTERM or SIGINT.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use bank_sim::behaviour::BehaviourConfig;
use bank_sim::secrets::load_secrets;
use bank_sim::server::{start, SimConfig};
use shared::config::ServiceConfig;

const USAGE: &str =
    "usage: bank-sim --port N [--host 127.0.0.1] --secrets FILE [--behaviour FILE.json]
  --port N          port to listen on (0: any free port)
  --host ADDR       loopback address to listen on (default 127.0.0.1; nothing else is accepted)
  --secrets FILE    JSON {\"ICBC\": \"<hex>\", ...}: one secret per configured bank
  --behaviour FILE  JSON {\"default\": {...}, \"banks\": {\"CMB\": {...}}}
The banks are those of the service configuration (SERVICE_CONFIG, else the shipped one).";

struct Args {
    port: u16,
    host: IpAddr,
    secrets: PathBuf,
    behaviour: Option<PathBuf>,
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut port, mut host, mut secrets, mut behaviour) = (None, None, None, None);
    let mut args = args.peekable();
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            return Err(String::new());
        }
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
            None => (flag.clone(), None),
        };
        let value = match inline {
            Some(v) => v,
            None => args.next().ok_or_else(|| format!("{name} needs a value"))?,
        };
        match name.as_str() {
            "--port" => {
                port = Some(
                    value
                        .parse::<u16>()
                        .map_err(|_| format!("bad port {value:?}"))?,
                )
            }
            "--host" => {
                let ip = if value == "localhost" {
                    IpAddr::V4(Ipv4Addr::LOCALHOST)
                } else {
                    value
                        .parse::<IpAddr>()
                        .map_err(|_| format!("bad host {value:?}"))?
                };
                if !ip.is_loopback() {
                    return Err(format!("{value} is not a loopback address: the simulator listens on 127.0.0.1 only"));
                }
                host = Some(ip);
            }
            "--secrets" => secrets = Some(PathBuf::from(value)),
            "--behaviour" | "--behavior" => behaviour = Some(PathBuf::from(value)),
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(Args {
        port: port.ok_or("--port is required")?,
        host: host.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        secrets: secrets.ok_or("--secrets is required")?,
        behaviour,
    })
}

fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_target(false)
        .try_init();
}

async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

async fn run(args: Args) -> Result<(), String> {
    let config = ServiceConfig::from_env().map_err(|e| e.to_string())?;
    let banks: Vec<String> = config
        .banks
        .all()
        .iter()
        .map(|b| b.code.to_string())
        .collect();
    let secrets = load_secrets(&args.secrets, &banks)?;
    let behaviour = match &args.behaviour {
        Some(path) => {
            let text =
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            BehaviourConfig::parse(&text, &banks).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => BehaviourConfig::default(),
    };
    let running = start(
        SimConfig {
            banks,
            secrets,
            behaviour,
        },
        SocketAddr::new(args.host, args.port),
    )
    .await?;
    tracing::info!(endpoint = %running.endpoint, banks = running.sim.banks().len(), "listening");
    {
        let mut out = std::io::stdout().lock();
        let ready = serde_json::json!({ "endpoint": running.endpoint });
        writeln!(out, "BANK-SIM READY {ready}").map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
    }
    let sig = stop_signal().await;
    tracing::info!(signal = sig, "stopping");
    drop(running);
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("bank-sim: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    init_logs();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bank-sim: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => {
            // In-flight sleeps (timeout mode, pending callbacks) are dropped, not awaited.
            rt.shutdown_background();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bank-sim: {e}");
            ExitCode::FAILURE
        }
    }
}
