//! `devtools`: what a developer needs to call the local API by hand (and what the run
//! command and the tests use).
//!
//! ```text
//! devtools keys                         create the local signing keys (once; never committed)
//! devtools env --api-url U --bank-sim-url S [--prefix P] [--config-out F]
//!                                       write the local service config (banks at the
//!                                       simulator) and print the functions' environment
//! devtools tables --prefix P            create the template's tables as P<LogicalId>
//! devtools seed --prefix P              seed the demo users
//! devtools user-token --user U          print an app JWT for U (valid 1 hour)
//! devtools face-token --user U [--purpose P]
//!                                       print a face-verification token for U (valid 5
//!                                       minutes) for P: SUBMIT_QUERY (default) or VIEW_REPORT
//! ```
//! AWS endpoints come from `AWS_ENDPOINT_URL_DYNAMODB` (e.g. under `stack.py exec`).

use std::process::ExitCode;

use shared::security::sms_code::Purpose;
use testkit::localkeys::LocalKeys;

fn usage() -> ExitCode {
    eprintln!(
        "usage: devtools keys | env --api-url U --bank-sim-url S [--prefix P] [--config-out F] | \
         tables --prefix P | seed --prefix P | \
         user-token --user U | face-token --user U [--purpose SUBMIT_QUERY|VIEW_REPORT]"
    );
    ExitCode::from(2)
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        return usage();
    };
    match run(cmd, &args[1..]).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => usage(),
        Err(e) => {
            eprintln!("devtools {cmd}: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cmd: &str, args: &[String]) -> Result<bool, String> {
    let keys = LocalKeys::ensure()?;
    let now = time::OffsetDateTime::now_utc();
    match cmd {
        "keys" => {
            println!("{}", keys.dir.display());
        }
        "env" => {
            let prefix =
                flag(args, "--prefix").unwrap_or_else(|| testkit::localkeys::RUN_PREFIX.into());
            let api = flag(args, "--api-url").ok_or("--api-url is required")?;
            let sim = flag(args, "--bank-sim-url").ok_or("--bank-sim-url is required")?;
            let default_path = keys
                .dir
                .parent()
                .expect("the keys live in .local/keys")
                .join(format!("service-{}.json", std::process::id()));
            let config_path = flag(args, "--config-out").map_or(default_path, Into::into);
            testkit::localkeys::write_local_service_config(&sim, &config_path)?;
            for (k, v) in keys.function_env(&prefix, &api, &config_path) {
                println!("{k}={v}");
            }
        }
        "tables" => {
            let prefix = flag(args, "--prefix").ok_or("--prefix is required")?;
            let client = testkit::env_dynamodb_client().await;
            let template = testkit::Template::load_default().map_err(|e| e.to_string())?;
            let names = testkit::tables::create_tables(&client, &template, &prefix)
                .await
                .map_err(|e| e.to_string())?;
            for (logical, name) in names.0 {
                println!("{logical}={name}");
            }
        }
        "seed" => {
            let prefix = flag(args, "--prefix").ok_or("--prefix is required")?;
            let client = testkit::env_dynamodb_client().await;
            let tables = testkit::seed::TableRefs::from_prefix(&prefix);
            for user in testkit::seed::demo_users() {
                testkit::seed::put_user(&client, &tables, &user, now)
                    .await
                    .map_err(|e| e.to_string())?;
                println!("{}\t{}", user.profile.user_id, user.description);
            }
        }
        "user-token" => {
            let user = flag(args, "--user").ok_or("--user is required")?;
            println!("{}", keys.user_token(&user, now, 3600)?);
        }
        "face-token" => {
            let user = flag(args, "--user").ok_or("--user is required")?;
            // A face pass is bound to one purpose; submitting is the first thing one does.
            let purpose = match flag(args, "--purpose").as_deref() {
                None | Some("SUBMIT_QUERY") => Purpose::SubmitQuery,
                Some("VIEW_REPORT") => Purpose::ViewReport,
                Some(_) => return Err("--purpose is SUBMIT_QUERY or VIEW_REPORT".into()),
            };
            println!("{}", keys.face_token(&user, purpose, now)?);
        }
        _ => return Ok(false),
    }
    Ok(true)
}
