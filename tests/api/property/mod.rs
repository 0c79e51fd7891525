//! The contract is exact (issue 15): schemathesis, pinned in `.local/venv`, generates
//! requests from `functions/openapi.yaml` and runs all of its checks against the local
//! API, with 0 failures required: every answer conforms to the contract, nothing is a
//! 5xx, bodies valid by the schema are accepted unless a credential or state refuses
//! them, bodies invalid by it are refused, other methods are 405, a missing required
//! header is refused, and the links the contract declares lead where they say.
//!
//! - The app's operations run as an eligible user of this test's own (bearer token).
//! - Bank callbacks are signed by a hook as the bank would sign them (`hooks.py`), so the
//!   callback operation is exercised past authentication.
//! - One submission carries real credentials (a fresh SMS code, face pass and payment
//!   password, from the hook) and must be accepted: then the links from its 202 are
//!   followed.
//! - The seed is fixed, examples bounded (`schemathesis.toml`), one request at a time:
//!   a few minutes on the shared stack, beside the other suites of the binary.
//!
//! ```text
//! python3 infra/local/stack.py exec --with-api -- cargo test -p system-tests --test api property:: -- --nocapture
//! ```

use std::path::PathBuf;
use std::process::Command;

use serde_json::json;
use shared::model::purpose::Purpose;
use testkit::api::{Api, UserKind};
use testkit::localkeys::BANK_SECRETS_FILE;

fn here() -> PathBuf {
    testkit::workspace_root().join("tests/api/property")
}

#[tokio::test]
async fn schemathesis_finds_no_failure() {
    let schemathesis = crate::infra::tools().schemathesis.clone();
    let api = Api::get().await;
    let user = api.new_user(UserKind::Eligible).await;
    let token = api.token(&user);
    let (verification_id, sms_code) = api.verification(&user, "SUBMIT_QUERY").await;
    let credentials = json!({
        "verification_id": verification_id,
        "sms_code": sms_code,
        "face_token": api.face_token(&user, Purpose::SubmitQuery),
        "payment_password": testkit::seed::PAYMENT_PASSWORD,
    });
    let work = std::env::temp_dir().join(format!("property-{}", user.id));
    std::fs::create_dir_all(&work).expect("a work folder");
    let credentials_file = work.join("credentials.json");
    std::fs::write(&credentials_file, credentials.to_string()).expect("credentials written");
    let root = testkit::workspace_root();

    let out = Command::new(&schemathesis)
        .arg("--config-file")
        .arg(here().join("schemathesis.toml"))
        .arg("run")
        .arg(root.join("functions/openapi.yaml"))
        .args(["--url", &api.base])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .current_dir(&work)
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .env("PYTHONPATH", here())
        // Nothing written into the source tree.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env(
            "PROPERTY_BANK_SECRETS",
            api.keys.dir.join(BANK_SECRETS_FILE),
        )
        .env("PROPERTY_CREDENTIALS", &credentials_file)
        // No colours, no telemetry: the output is read by a person, the run stays local.
        .env("NO_COLOR", "1")
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", schemathesis.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The summary is what a reader needs on success as on failure.
    println!("{stdout}");
    assert!(
        out.status.success(),
        "schemathesis failed (exit {:?}):\n{stdout}\n{stderr}",
        out.status.code()
    );

    // The one submission with real credentials was accepted: valid by the schema is
    // accepted, and the links from its answer had a query to follow.
    let queries = api.get_json("/v1/card-queries", &token).await;
    let listed = queries.body.as_ref().and_then(|b| b["queries"].as_array());
    assert_eq!(
        listed.map(Vec::len),
        Some(1),
        "the credentialed submission was not accepted: {queries:?}"
    );
    let _ = std::fs::remove_dir_all(&work);
}
