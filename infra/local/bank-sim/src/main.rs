//! `bank-sim --port N [--host 127.0.0.1] --secrets FILE [--behaviour FILE.json]`; see
//! `bank-sim --help`.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use bank_sim::behaviour::BehaviourConfig;
use bank_sim::secrets::load_secrets;
use bank_sim::server::{start, SimConfig};
use clap::Parser;
use shared::config::ServiceConfig;

/// Simulator of the participating banks: deterministic synthetic customers, signed
/// inquiries and answers, configurable behaviour per bank and per person.
///
/// Prints `BANK-SIM READY {"endpoint":"http://127.0.0.1:PORT"}` on stdout once listening;
/// logs go to stderr. Stops on SIGTERM or SIGINT.
#[derive(Parser, Debug)]
#[command(
    name = "bank-sim",
    version,
    after_help = "The banks are those of the service configuration (SERVICE_CONFIG, else the shipped one)."
)]
struct Args {
    /// Port to listen on (0: any free port).
    #[arg(long, value_name = "N")]
    port: u16,
    /// Loopback address to listen on (nothing else is accepted).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1", value_parser = loopback)]
    host: IpAddr,
    /// JSON {"ICBC": "<hex>", ...}: one secret per configured bank.
    #[arg(long, value_name = "FILE")]
    secrets: PathBuf,
    /// JSON {"default": {...}, "banks": {"CMB": {...}}}.
    #[arg(long, visible_alias = "behavior", value_name = "FILE.json")]
    behaviour: Option<PathBuf>,
}

/// The simulator listens on loopback only: it holds the banks' signing secrets.
fn loopback(value: &str) -> Result<IpAddr, String> {
    let ip = if value == "localhost" {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        value
            .parse::<IpAddr>()
            .map_err(|_| format!("bad host {value:?}"))?
    };
    if !ip.is_loopback() {
        return Err(format!(
            "{value} is not a loopback address: the simulator listens on 127.0.0.1 only"
        ));
    }
    Ok(ip)
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
    let args = Args::parse();
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("bank-sim").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn reads_the_launchers_command_line() {
        let a = parse(&["--port", "0", "--secrets", "s.json"]).unwrap();
        assert_eq!(a.port, 0);
        assert_eq!(a.host, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(a.secrets, PathBuf::from("s.json"));
        assert_eq!(a.behaviour, None);
        let a = parse(&[
            "--port=9",
            "--host",
            "localhost",
            "--secrets=s",
            "--behavior",
            "b",
        ])
        .unwrap();
        assert_eq!(a.port, 9);
        assert_eq!(a.behaviour, Some(PathBuf::from("b")));
        assert!(parse(&["--port", "1", "--host", "::1", "--secrets", "s"]).is_ok());
    }

    #[test]
    fn refuses_bad_command_lines() {
        let e = parse(&["--port", "1", "--host", "0.0.0.0", "--secrets", "s"]).unwrap_err();
        assert!(e.to_string().contains("not a loopback address"), "{e}");
        assert!(parse(&["--secrets", "s"]).is_err());
        assert!(parse(&["--port", "70000", "--secrets", "s"]).is_err());
        assert!(parse(&["--port", "1"]).is_err());
        assert!(parse(&["--port", "1", "--secrets", "s", "--bogus", "x"]).is_err());
    }
}
