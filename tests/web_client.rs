//! The reference web client (infra/local/web) in headless Chromium, through a whole query
//! against the local stack: tests/web/browser_test.py drives the page; this test gives
//! it the stack's endpoints and the demo person's ID number (for the simulator's truth)
//! and fails with its output when it fails. Chromium, chromedriver and selenium are
//! installed by `stack.py install`; when they are missing this test fails, it never skips.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn the_reference_client_walks_the_journey_in_chromium() {
    let ep = testkit::stack::endpoints();
    let api = ep
        .api_endpoint
        .as_deref()
        .expect("the browser test needs the API: run under `stack.py exec --with-api`");
    let sim = ep
        .bank_sim_endpoint
        .as_deref()
        .expect("the browser test needs the bank simulator (a stack with --with-api)");
    let demo = testkit::seed::demo_users()
        .into_iter()
        .find(|u| u.profile.user_id.as_str() == "demo-user")
        .expect("devtools seeds demo-user");
    let root = testkit::workspace_root();
    // The devtools binary cargo built beside this test (target/<profile>/devtools), so the
    // page's token helper never runs cargo while cargo runs the tests.
    let exe = std::env::current_exe().expect("the test's own path");
    let devtools: PathBuf = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("tests run from target/<profile>/deps")
        .join("devtools");
    assert!(
        devtools.is_file(),
        "{} is missing: build the workspace (cargo test --workspace builds it)",
        devtools.display()
    );
    let python = root.join(".local/venv/bin/python");
    let status = Command::new(&python)
        .arg(root.join("tests/web/browser_test.py"))
        .env("WEB_TEST_API", api)
        .env("WEB_TEST_SNS", &ep.sns_endpoint)
        .env("WEB_TEST_DYNAMODB", &ep.dynamodb_endpoint)
        .env("WEB_TEST_BANK_SIM", sim)
        .env(
            "WEB_TEST_TABLE_PREFIX",
            ep.table_prefix.as_deref().unwrap_or("local-"),
        )
        .env("WEB_TEST_DEVTOOLS", &devtools)
        .env("WEB_TEST_ID_NUMBER", demo.profile.id_number.expose())
        .env("WEB_TEST_OUT", root.join(".local/web"))
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    assert!(
        status.success(),
        "tests/web/browser_test.py failed: {status}"
    );
}
