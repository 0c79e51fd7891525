//! The functions' world on the local stack, made with `devtools` the way `stack.py`
//! makes it: keys, the template's tables under a prefix of our own, the demo users, the
//! functions' environment (`devtools env`) and a user JWT.

use std::path::Path;
use std::process::Command;

/// The seeded user the HTTP events act as (real-name, pilot region).
pub const USER: &str = "demo-user";
/// The bank whose callback the bank-callback event is.
pub const CALLBACK_BANK: &str = "ICBC";

pub struct World {
    /// What every function process gets on top of the stack's AWS environment.
    pub env: Vec<(String, String)>,
    /// A bearer token for [`USER`] (valid an hour: longer than any run).
    pub token: String,
    /// [`CALLBACK_BANK`]'s HMAC secret, to sign its callbacks.
    pub bank_secret: Vec<u8>,
    /// The main table's name, for the stream events' ARN.
    pub main_table: String,
}

fn devtools(bin: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(bin)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    if !out.status.success() {
        return Err(format!(
            "devtools {} failed: {}",
            args[0],
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    String::from_utf8(out.stdout).map_err(|_| format!("devtools {}: output not UTF-8", args[0]))
}

pub fn prepare(devtools_bin: &Path, prefix: &str, work: &Path) -> Result<World, String> {
    if std::env::var_os("AWS_ENDPOINT_URL_DYNAMODB").is_none() {
        return Err("AWS_ENDPOINT_URL_DYNAMODB is not set: run under \
                    `python3 infra/local/stack.py exec -- ...` (or `make bench-coldstart`)"
            .into());
    }
    std::fs::create_dir_all(work).map_err(|e| format!("{}: {e}", work.display()))?;
    devtools(devtools_bin, &["keys"])?;
    devtools(devtools_bin, &["tables", "--prefix", prefix])?;
    devtools(devtools_bin, &["seed", "--prefix", prefix])?;
    let config = work.join("service.json");
    let config = config.to_str().ok_or("the work directory is not UTF-8")?;
    // No event of the benchmark reaches a bank (see `events`), so the banks' and the
    // callbacks' URLs only have to be well-formed: a port nothing listens on.
    let nowhere = "http://127.0.0.1:9";
    let listing = devtools(
        devtools_bin,
        &[
            "env",
            "--prefix",
            prefix,
            "--api-url",
            nowhere,
            "--bank-sim-url",
            nowhere,
            "--config-out",
            config,
        ],
    )?;
    // The inquiry queue the fan-out writes to and the inquiry sender reads (moto).
    let queues = devtools(devtools_bin, &["queues", "--prefix", prefix])?;
    let env: Vec<(String, String)> = listing
        .lines()
        .chain(queues.lines())
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let var = |name: &str| {
        env.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| format!("devtools env gave no {name}"))
    };
    let token = devtools(devtools_bin, &["user-token", "--user", USER])?
        .trim()
        .to_owned();
    let secrets_file = var("BANK_SECRETS_FILE")?;
    let secrets: serde_json::Value = std::fs::read_to_string(&secrets_file)
        .map_err(|e| format!("{secrets_file}: {e}"))
        .and_then(|t| serde_json::from_str(&t).map_err(|e| format!("{secrets_file}: {e}")))?;
    let bank_secret = secrets[CALLBACK_BANK]
        .as_str()
        .and_then(|h| hex::decode(h.trim()).ok())
        .ok_or_else(|| format!("{secrets_file} holds no hex secret for {CALLBACK_BANK}"))?;
    let main_table = var("TABLE_NAME")?;
    Ok(World {
        env,
        token,
        bank_secret,
        main_table,
    })
}
