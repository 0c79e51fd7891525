//! Where the local AWS services listen, starting them once per process when needed.
//!
//! `make test` starts the stack once and exports its endpoints (`AWS_ENDPOINT_URL_*`);
//! a bare `cargo test` or `cargo nextest run` finds no endpoints and starts a private
//! stack through `infra/local/stack.py up`, which stops by itself when this process
//! exits (its `--parent-pid` watchdog), so no test leaves a JVM behind. Such a private
//! stack also serves the functions (`--with-api`).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde::Deserialize;

/// Endpoints of the running local services.
#[derive(Debug, Clone, Deserialize)]
pub struct Endpoints {
    pub dynamodb_endpoint: String,
    pub sns_endpoint: String,
    /// moto serves SQS on the SNS port (server mode serves every service on one port);
    /// `None` in a state file that predates it: use [`Endpoints::sqs`].
    #[serde(default)]
    pub sqs_endpoint: Option<String>,
    /// `cargo lambda watch` serving every function (stacks started `--with-api`).
    #[serde(default)]
    pub api_endpoint: Option<String>,
    /// Prefix of the tables the functions use.
    #[serde(default)]
    pub table_prefix: Option<String>,
    /// The bank simulator (stacks started `--with-api`).
    #[serde(default)]
    pub bank_sim_endpoint: Option<String>,
}

impl Endpoints {
    /// Where SQS is served.
    pub fn sqs(&self) -> &str {
        self.sqs_endpoint.as_deref().unwrap_or(&self.sns_endpoint)
    }
}

static ENDPOINTS: OnceLock<Endpoints> = OnceLock::new();

/// The local stack's endpoints; starts a private stack on first use if none is
/// configured. Panics (it is test support) with the launcher's own message if the stack
/// cannot start.
pub fn endpoints() -> &'static Endpoints {
    ENDPOINTS.get_or_init(|| {
        from_env().unwrap_or_else(|| start_private().unwrap_or_else(|e| panic!("{e}")))
    })
}

fn from_env() -> Option<Endpoints> {
    Some(Endpoints {
        dynamodb_endpoint: std::env::var("AWS_ENDPOINT_URL_DYNAMODB").ok()?,
        sns_endpoint: std::env::var("AWS_ENDPOINT_URL_SNS").ok()?,
        sqs_endpoint: std::env::var("AWS_ENDPOINT_URL_SQS").ok(),
        api_endpoint: std::env::var("LOCAL_API_URL").ok(),
        table_prefix: std::env::var("LOCAL_TABLE_PREFIX").ok(),
        bank_sim_endpoint: std::env::var("LOCAL_BANK_SIM_URL").ok(),
    })
}

fn start_private() -> Result<Endpoints, String> {
    let script = crate::workspace_root().join("infra/local/stack.py");
    let mut child = Command::new("python3")
        .arg(&script)
        .args([
            "up",
            "--with-api",
            "--dynamodb-port",
            "0",
            "--sns-port",
            "0",
            "--api-port",
            "0",
        ])
        .arg("--parent-pid")
        .arg(std::process::id().to_string())
        .arg("--state-file")
        .arg(std::env::temp_dir().join(format!("card-lookup-stack-{}.json", std::process::id())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    let stdout = child.stdout.take().ok_or("launcher has no stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| format!("reading launcher output: {e}"))?;
        if let Some(json) = line.strip_prefix("READY ") {
            // The child keeps running; its watchdog ends it with this process.
            std::mem::forget(child);
            return serde_json::from_str(json).map_err(|e| format!("launcher state: {e}"));
        }
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    Err(format!(
        "local stack did not start ({status}); see .local/logs/"
    ))
}
