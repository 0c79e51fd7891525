//! `devtools`: what a developer needs to call the local API by hand (and what the run
//! command and the tests use). `devtools --help` lists the commands.
//!
//! AWS endpoints come from `AWS_ENDPOINT_URL_DYNAMODB` (e.g. under `stack.py exec`);
//! without it the commands that need DynamoDB stop with a message naming it.

mod endpoint;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use shared::model::purpose::Purpose;
use testkit::localkeys::LocalKeys;

/// Local tooling: signing keys, the functions' environment, tables from the template,
/// seeded demo users, user JWTs and face tokens.
#[derive(Parser, Debug)]
#[command(name = "devtools", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create the local signing keys (once; never committed) and print their folder.
    Keys,
    /// Write the local service config (banks at the simulator) and print the functions'
    /// environment as NAME=VALUE lines.
    Env {
        /// The API's base URL (the bank callbacks' target).
        #[arg(long, value_name = "URL")]
        api_url: String,
        /// The bank simulator's base URL.
        #[arg(long, value_name = "URL")]
        bank_sim_url: String,
        /// Table name prefix.
        #[arg(long, value_name = "P", default_value = testkit::localkeys::RUN_PREFIX)]
        prefix: String,
        /// Where to write the service config (default .local/service-<pid>.json).
        #[arg(long, value_name = "FILE")]
        config_out: Option<PathBuf>,
        /// The bank secrets file the functions get (`BANK_SECRETS_FILE`), as written by
        /// `devtools bank-secrets`; default the keys' bank_secrets.json.
        #[arg(long, value_name = "FILE")]
        bank_secrets: Option<PathBuf>,
    },
    /// Write {"<CODE>": "<hex>"} for every bank of the service configuration
    /// (SERVICE_CONFIG, else the shipped one): the simulator's and the functions' bank
    /// secrets, for a configuration of any size.
    BankSecrets {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Create the template's tables as <P><LogicalId> (needs AWS_ENDPOINT_URL_DYNAMODB).
    Tables {
        /// Table name prefix (`local-` for the local stack).
        #[arg(long, value_name = "P")]
        prefix: String,
    },
    /// Create the template's queues as <P><LogicalId> (`.fifo` for FIFO; needs
    /// AWS_ENDPOINT_URL_SQS) and print the functions' environment variables that name
    /// a queue, as NAME=URL lines.
    Queues {
        /// Queue name prefix (`local-` for the local stack).
        #[arg(long, value_name = "P")]
        prefix: String,
    },
    /// Seed the demo users into the <P>-prefixed tables (needs AWS_ENDPOINT_URL_DYNAMODB).
    Seed {
        /// Table name prefix (`local-` for the local stack).
        #[arg(long, value_name = "P")]
        prefix: String,
    },
    /// Print an app JWT for the user (valid 1 hour).
    UserToken {
        /// The user id (a seeded one: `devtools seed` lists them).
        #[arg(long, value_name = "U")]
        user: String,
    },
    /// Print a face-verification token for the user (valid 5 minutes).
    FaceToken {
        /// The user id (a seeded one: `devtools seed` lists them).
        #[arg(long, value_name = "U")]
        user: String,
        /// What the face pass is for (a pass is bound to one purpose).
        #[arg(long, value_enum, default_value_t = FacePurpose::SubmitQuery)]
        purpose: FacePurpose,
    },
}

// Submitting is the first thing one does, hence the default above.
#[derive(Clone, Copy, Debug, ValueEnum)]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
enum FacePurpose {
    SubmitQuery,
    ViewReport,
    DeleteReport,
    DisputeCard,
}

impl From<FacePurpose> for Purpose {
    fn from(p: FacePurpose) -> Self {
        match p {
            FacePurpose::SubmitQuery => Purpose::SubmitQuery,
            FacePurpose::ViewReport => Purpose::ViewReport,
            FacePurpose::DeleteReport => Purpose::DeleteReport,
            FacePurpose::DisputeCard => Purpose::DisputeCard,
        }
    }
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::Keys => "keys",
            Command::Env { .. } => "env",
            Command::BankSecrets { .. } => "bank-secrets",
            Command::Tables { .. } => "tables",
            Command::Queues { .. } => "queues",
            Command::Seed { .. } => "seed",
            Command::UserToken { .. } => "user-token",
            Command::FaceToken { .. } => "face-token",
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let name = cli.command.name();
    match run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("devtools {name}: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cmd: Command) -> Result<(), String> {
    // Checked before anything else runs, so a half-set environment fails fast and names
    // what is missing rather than touching keys or a stack.
    let dynamodb = match &cmd {
        Command::Tables { .. } | Command::Seed { .. } => {
            Some(endpoint::dynamodb_from(|k| std::env::var(k).ok()).map_err(|e| e.to_string())?)
        }
        _ => None,
    };
    let keys = LocalKeys::ensure()?;
    let now = chrono::Utc::now();
    match cmd {
        Command::Keys => {
            println!("{}", keys.dir.display());
        }
        Command::Env {
            api_url,
            bank_sim_url,
            prefix,
            config_out,
            bank_secrets,
        } => {
            let config_path = match config_out {
                Some(path) => path,
                None => keys
                    .dir
                    .parent()
                    .ok_or("the keys folder has no parent")?
                    .join(format!("service-{}.json", std::process::id())),
            };
            let base = base_config()?;
            testkit::localkeys::write_local_service_config(
                &bank_sim_url,
                base.as_deref(),
                &config_path,
            )?;
            for (k, mut v) in keys.function_env(&prefix, &api_url, &config_path) {
                if let (Some(file), "BANK_SECRETS_FILE") = (&bank_secrets, k.as_str()) {
                    v = file.display().to_string();
                }
                println!("{k}={v}");
            }
        }
        Command::BankSecrets { out } => {
            let base = base_config()?;
            let config = shared::config::ServiceConfig::parse(
                base.as_deref().unwrap_or(shared::config::DEFAULT_CONFIG),
            )
            .map_err(|e| e.to_string())?;
            let banks: Vec<String> = config
                .banks
                .all()
                .iter()
                .map(|b| b.code.to_string())
                .collect();
            let secrets = keys.bank_secrets(&banks)?;
            let text = serde_json::to_string(&secrets).map_err(|e| e.to_string())?;
            std::fs::write(&out, text).map_err(|e| format!("{}: {e}", out.display()))?;
            println!("{} banks", banks.len());
        }
        Command::Tables { prefix } => {
            let client = endpoint::client(dynamodb.as_deref().unwrap_or_default());
            let template = testkit::Template::load_default().map_err(|e| e.to_string())?;
            let names = testkit::tables::create_tables(&client, &template, &prefix)
                .await
                .map_err(|e| e.to_string())?;
            for (logical, name) in names.0 {
                println!("{logical}={name}");
            }
        }
        Command::Queues { prefix } => {
            let url = endpoint::sqs_from(|k| std::env::var(k).ok()).map_err(|e| e.to_string())?;
            let template = testkit::Template::load_default().map_err(|e| e.to_string())?;
            let client = endpoint::sqs_client(&url);
            let urls = testkit::queues::create_queues(&client, &template, &prefix)
                .await
                .map_err(|e| e.to_string())?;
            for (k, v) in testkit::queues::queue_env(&template, &urls) {
                println!("{k}={v}");
            }
        }
        Command::Seed { prefix } => {
            let client = endpoint::client(dynamodb.as_deref().unwrap_or_default());
            let tables = testkit::seed::TableRefs::from_prefix(&prefix);
            for user in testkit::seed::demo_users() {
                testkit::seed::put_user(&client, &tables, &user, now)
                    .await
                    .map_err(|e| e.to_string())?;
                println!("{}\t{}", user.profile.user_id, user.description);
            }
        }
        Command::UserToken { user } => {
            println!("{}", keys.user_token(&user, now, 3600)?);
        }
        Command::FaceToken { user, purpose } => {
            println!("{}", keys.face_token(&user, purpose.into(), now)?);
        }
    }
    Ok(())
}

/// The service configuration the stack was given (`SERVICE_CONFIG`, a file), if any.
fn base_config() -> Result<Option<String>, String> {
    match std::env::var_os("SERVICE_CONFIG") {
        None => Ok(None),
        Some(path) => std::fs::read_to_string(&path)
            .map(Some)
            .map_err(|e| format!("SERVICE_CONFIG {}: {e}", PathBuf::from(path).display())),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn reads_the_callers_command_lines() {
        let cli = Cli::try_parse_from([
            "devtools",
            "env",
            "--prefix",
            "local-",
            "--api-url",
            "http://a",
            "--bank-sim-url",
            "http://s",
            "--config-out",
            "/tmp/c.json",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::Env { ref prefix, ref config_out, .. }
                if prefix == "local-" && config_out.as_deref() == Some("/tmp/c.json".as_ref())
        ));
        let cli = Cli::try_parse_from([
            "devtools",
            "face-token",
            "--user",
            "u",
            "--purpose",
            "VIEW_REPORT",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::FaceToken {
                purpose: FacePurpose::ViewReport,
                ..
            }
        ));
        let cli = Cli::try_parse_from(["devtools", "face-token", "--user", "u"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::FaceToken {
                purpose: FacePurpose::SubmitQuery,
                ..
            }
        ));
        let cli = Cli::try_parse_from(["devtools", "env", "--api-url", "a", "--bank-sim-url", "s"])
            .unwrap();
        assert!(
            matches!(cli.command, Command::Env { ref prefix, .. } if prefix == testkit::localkeys::RUN_PREFIX)
        );
    }

    #[test]
    fn refuses_bad_command_lines() {
        assert!(Cli::try_parse_from(["devtools"]).is_err());
        assert!(Cli::try_parse_from(["devtools", "tables"]).is_err());
        assert!(
            Cli::try_parse_from(["devtools", "face-token", "--user", "u", "--purpose", "X"])
                .is_err()
        );
        assert!(Cli::try_parse_from(["devtools", "bogus"]).is_err());
    }
}
