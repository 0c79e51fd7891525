//! `bank-check --endpoint URL --bank CODE --secret-file F [--callback-listen ADDR]`; see
//! `bank-check --help`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use bank_check::{subjects, CheckConfig};
use clap::Parser;
use domain::bank::signing::BankSecret;
use reqwest::Url;

/// Checks a bank's endpoint against the card lookup's bank protocol
/// (functions/bank-protocol.yaml) and prints a pass/fail report per rule.
///
/// Exit status: 0 when every rule passes (skipped rules do not fail), 1 when one
/// fails, 2 when the check could not run.
#[derive(Parser, Debug)]
#[command(name = "bank-check", version)]
struct Args {
    /// The bank's endpoint; inquiries go to {URL}/card-inquiries, disputes to
    /// {URL}/card-disputes.
    #[arg(long, value_name = "URL")]
    endpoint: Url,
    /// The bank's code (X-Bank-Code), e.g. ICBC.
    #[arg(long, value_name = "CODE", value_parser = bank_code)]
    bank: String,
    /// The shared secret: its hex (at least 32 bytes), or a JSON object of them by bank
    /// code (the local stack's .local/keys/bank_secrets.json).
    #[arg(long, value_name = "F")]
    secret_file: PathBuf,
    /// Listen here for callbacks (POST /v1/bank-callbacks/{CODE}); needed for a bank
    /// that accepts (202) and calls back.
    #[arg(long, value_name = "ADDR")]
    callback_listen: Option<SocketAddr>,
    /// The callback_url base the bank reaches the listener at, if not http://ADDR.
    #[arg(long, value_name = "URL", requires = "callback_listen")]
    callback_base: Option<String>,
    /// JSON [{"name": "...", "id_number": "..."}]: the test persons to ask about
    /// (default: the simulator's seeded customers).
    #[arg(long, value_name = "FILE")]
    subjects: Option<PathBuf>,
    /// Seconds from each inquiry to its respond_by.
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    respond_within: u64,
    /// Seconds to wait for each reply.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    timeout: u64,
}

fn bank_code(s: &str) -> Result<String, String> {
    if (2..=6).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(s.to_owned())
    } else {
        Err("a bank code is 2 to 6 upper-case letters".into())
    }
}

/// The secret of `bank` from the file; errors never quote it.
fn read_secret(path: &Path, bank: &str) -> Result<BankSecret, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let text = text.trim();
    let hex_text = if text.starts_with('{') {
        let map: std::collections::HashMap<String, String> = serde_json::from_str(text)
            .map_err(|_| format!("{}: not a JSON object of hex strings", path.display()))?;
        map.get(bank)
            .cloned()
            .ok_or_else(|| format!("{}: no secret for {bank}", path.display()))?
    } else {
        text.to_owned()
    };
    let bytes = hex::decode(hex_text.trim())
        .map_err(|_| format!("{}: the secret is not hex", path.display()))?;
    BankSecret::new(bytes).map_err(|e| format!("{}: {e}", path.display()))
}

async fn run(args: Args) -> Result<bool, String> {
    let secret = read_secret(&args.secret_file, &args.bank)?;
    let subjects = match &args.subjects {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            subjects::parse(&text)?
        }
        None => subjects::defaults(),
    };
    let report = bank_check::run(CheckConfig {
        endpoint: args.endpoint,
        bank: args.bank,
        secret,
        subjects,
        callback_listen: args.callback_listen,
        callback_base: args.callback_base,
        respond_within: Duration::from_secs(args.respond_within),
        request_timeout: Duration::from_secs(args.timeout),
    })
    .await
    .map_err(|e| e.to_string())?;
    println!("{report}");
    Ok(report.passed())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bank-check: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("bank-check: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("bank-check").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_is_consistent_and_refuses_bad_values() {
        Args::command().debug_assert();
        let a = parse(&[
            "--endpoint",
            "http://127.0.0.1:1/banks/ICBC",
            "--bank",
            "ICBC",
            "--secret-file",
            "s",
        ])
        .unwrap();
        assert_eq!(a.respond_within, 30);
        assert_eq!(a.callback_listen, None);
        assert!(parse(&["--endpoint", "x", "--bank", "ICBC", "--secret-file", "s"]).is_err());
        assert!(parse(&[
            "--endpoint",
            "http://h",
            "--bank",
            "icbc",
            "--secret-file",
            "s"
        ])
        .is_err());
        assert!(parse(&["--endpoint", "http://h", "--bank", "ICBC"]).is_err());
        assert!(parse(&[
            "--endpoint",
            "http://h",
            "--bank",
            "ICBC",
            "--secret-file",
            "s",
            "--callback-base",
            "http://x"
        ])
        .is_err());
        assert!(parse(&[
            "--endpoint",
            "http://h",
            "--bank",
            "ICBC",
            "--secret-file",
            "s",
            "--respond-within",
            "0"
        ])
        .is_err());
    }

    #[test]
    fn reads_hex_or_the_local_secrets_file_without_quoting_it() {
        let dir = std::env::temp_dir().join(format!("bank-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let k = "ab".repeat(32);
        let plain = dir.join("plain");
        std::fs::write(&plain, format!("{k}\n")).unwrap();
        assert!(read_secret(&plain, "ICBC").is_ok());
        let map = dir.join("map.json");
        std::fs::write(&map, format!(r#"{{"ICBC":"{k}"}}"#)).unwrap();
        assert!(read_secret(&map, "ICBC").is_ok());
        assert!(read_secret(&map, "CMB")
            .err()
            .unwrap()
            .contains("no secret for CMB"));
        let bad = dir.join("bad");
        std::fs::write(&bad, "zz-secret-zz").unwrap();
        let e = read_secret(&bad, "ICBC").err().unwrap();
        assert!(!e.contains("zz-secret"), "{e}");
        std::fs::write(&bad, "abcd").unwrap();
        assert!(read_secret(&bad, "ICBC").is_err(), "too short");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
