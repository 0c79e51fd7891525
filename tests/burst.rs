//! The local stack holds a burst (issue #10): right after a fresh stack says READY,
//! 120 users at 32 clients each ask for an SMS code and submit a 16-bank query (four
//! banks answering by callback, through the API, while fan-outs run). Every query must
//! be reported, each phone must get exactly one code and one notice, and the API must
//! answer throughout. Correctness only: nothing here asserts a duration.

use testkit::load::{self, LoadConfig, PrivateStack};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_right_after_ready_reports_every_query_once() {
    let stack = tokio::task::spawn_blocking(PrivateStack::start)
        .await
        .expect("the launcher thread")
        .unwrap_or_else(|e| panic!("{e}"));
    let cfg = LoadConfig {
        users: 120,
        clients: 32,
        ..LoadConfig::default()
    };
    let report = load::run(&stack.target, &cfg)
        .await
        .unwrap_or_else(|e| panic!("the burst could not start: {e}"));

    assert_eq!(
        report.submitted, 120,
        "every submission accepted: {:?}",
        report.errors
    );
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(report.lost.is_empty(), "lost queries: {:?}", report.lost);
    assert_eq!(report.report_latency.len(), 120);
    assert!(
        report.duplicate_sms.is_empty(),
        "phones with more than one code or notice: {:?}",
        report.duplicate_sms
    );
    assert!(report.probe_ok > 0, "the API probe ran");
    assert_eq!(
        report.probe_failed, 0,
        "the API stopped answering during the burst"
    );
}
