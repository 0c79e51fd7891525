//! `watch-gate`: see the library's documentation and infra/local/watch-gate/README.md.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use watch_gate::{log_line, Gate, Route, Router};

/// Admission gate in front of `cargo lambda watch`: at most --max-in-flight invocations
/// per function inside the watch at once; the rest wait here.
#[derive(Parser, Debug)]
#[command(name = "watch-gate")]
struct Args {
    /// Address to listen on (loopback only), e.g. 127.0.0.1:9000; port 0 = any free port.
    #[arg(long)]
    listen: SocketAddr,
    /// The watch, e.g. http://127.0.0.1:9001
    #[arg(long)]
    upstream: String,
    /// JSON file: [{"path": "/v1/banks", "method": null, "function": "submit-query"}, ...]
    /// (the watch router of the workspace Cargo.toml).
    #[arg(long)]
    routes: PathBuf,
    /// Invocations per function inside the watch at once (below its queue of 100).
    #[arg(long, default_value_t = 48)]
    max_in_flight: usize,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log_line(
                "error",
                "watch-gate failed",
                serde_json::json!({"error": e}),
            );
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    if !args.listen.ip().is_loopback() {
        return Err(format!("{} is not a loopback address", args.listen));
    }
    let text = std::fs::read_to_string(&args.routes)
        .map_err(|e| format!("{}: {e}", args.routes.display()))?;
    let routes: Vec<Route> =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", args.routes.display()))?;
    let gate = Arc::new(Gate::new(
        &args.upstream,
        Router::new(routes).map_err(|e| format!("{}: {e}", args.routes.display()))?,
        args.max_in_flight,
    )?);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!(
        "WATCH-GATE READY {}",
        serde_json::json!({"endpoint": format!("http://{addr}")})
    );
    log_line(
        "info",
        "serving",
        serde_json::json!({"listen": addr.to_string(), "upstream": args.upstream,
                           "max_in_flight": args.max_in_flight}),
    );
    watch_gate::serve(listener, gate, shutdown())
        .await
        .map_err(|e| e.to_string())
}

async fn shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
