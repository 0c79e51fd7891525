//! `event-pump`: see `event-pump --help` and infra/local/event-pump/README.md.

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;
use event_pump::{config::Cli, Config, READY_LINE};

#[tokio::main]
async fn main() -> ExitCode {
    let cfg = Config::from(Cli::parse());
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        event_pump::log::info("stopping on signal", serde_json::json!({}));
    };
    let ready = || {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{READY_LINE}");
        let _ = out.flush();
    };
    match event_pump::run(cfg, shutdown, ready).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            event_pump::log::emit(serde_json::json!({"level": "error", "msg": e.to_string()}));
            ExitCode::FAILURE
        }
    }
}
