//! National coverage end to end (issue 17): a configuration of 200 simulated banks and
//! one query to all of them reports, with every bank's status right. A private stack of
//! its own, started with a generated configuration (`testkit::national`), since the
//! shared stack's suites ask "all banks" of the shipped 16 (decision 124).
//!
//! The 200 banks mix every way a bank ends: found cards and no cards (the simulator's
//! ground truth for this person), an `ERROR` answer, an answer by callback, and silence
//! until the 24-hour deadline (moved into the past, as the pipeline suite does).
//!
//! ```text
//! python3 infra/local/stack.py exec --with-api -- cargo test -p system-tests --test national
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::api::{bank_cards, report_cards, UserKind};
use testkit::journey::{bank_statuses, pass_the_deadline, progress, ready_sms_of, view};
use testkit::load::PrivateStack;

const BANKS: usize = 200;
/// 200 inquiries and 20 callbacks through one local stack on a shared 2-core machine.
const SETTLE_WAIT: Duration = Duration::from_secs(240);
/// The sweeper runs every 3 s locally; aggregating 200 legs follows.
const REPORT_WAIT: Duration = Duration::from_secs(120);

/// How a bank is told to behave for this person, and how its leg must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Answers at once; FOUND or NONE as the ground truth has it.
    Immediate,
    Callback,
    ErrorAnswer,
    Never,
}

impl Role {
    /// Spread over the list so shipped and generated banks both take every role.
    fn of(i: usize) -> Self {
        match i % 10 {
            _ if i % 50 == 7 => Role::Never,
            1 => Role::Callback,
            4 => Role::ErrorAnswer,
            _ => Role::Immediate,
        }
    }

    fn behaviour(self) -> Option<Value> {
        match self {
            Role::Immediate => None,
            Role::Callback => Some(json!({"mode": "callback", "callback_delay_ms": 100})),
            Role::ErrorAnswer => Some(json!({"mode": "error_answer"})),
            Role::Never => Some(json!({"mode": "never"})),
        }
    }

    /// The leg's status once settled (`GET /v1/card-queries/{id}` and the report).
    fn settled(self) -> &'static str {
        match self {
            Role::Immediate | Role::Callback => "RESPONDED",
            Role::ErrorAnswer => "FAILED",
            Role::Never => "NO_RESPONSE",
        }
    }
}

fn bank_codes(config: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(config).unwrap();
    v["banks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["code"].as_str().unwrap().to_owned())
        .collect()
}

/// What a progress view may show before the deadline, given what it showed before: every
/// chosen bank once, in submission order; no NO_RESPONSE yet; a settled leg stays as it
/// settled; a bank that must end otherwise never shows RESPONDED or FAILED.
fn check_progress(
    record: &Value,
    banks: &[String],
    roles: &BTreeMap<String, Role>,
    settled: &mut BTreeMap<String, String>,
) {
    let listed: Vec<&str> = record["progress"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["bank_code"].as_str().unwrap())
        .collect();
    assert_eq!(listed, banks, "every chosen bank once, in order");
    for (bank, status) in bank_statuses(&record["progress"]) {
        let role = roles[&bank];
        match status.as_str() {
            "QUEUED" | "PENDING" | "RETRYING" => assert!(
                !settled.contains_key(&bank),
                "{bank} went back from {} to {status}",
                settled[&bank]
            ),
            "RESPONDED" | "FAILED" => {
                assert_eq!(status, role.settled(), "{bank} ({role:?})");
                settled.insert(bank, status);
            }
            other => panic!("{bank} ({role:?}) is {other} before the deadline"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_banks_and_one_query_to_all_report_every_bank_right() {
    let began = Instant::now();
    let config = testkit::national::config_json(BANKS, "https://banks.invalid");
    let banks = bank_codes(&config);
    assert_eq!(banks.len(), BANKS);
    let config_file = std::env::temp_dir().join(format!(
        "card-lookup-national-{}-{}.json",
        std::process::id(),
        ulid::Ulid::generate()
    ));
    std::fs::write(&config_file, &config).unwrap();
    let stack = {
        let path = config_file.clone();
        tokio::task::spawn_blocking(move || PrivateStack::start_configured(&path))
            .await
            .expect("the launcher thread")
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let _ = std::fs::remove_file(&config_file);
    let started = began.elapsed();
    let api = stack.api().unwrap_or_else(|e| panic!("{e}"));

    // The app sees the national list.
    let user = api.new_user(UserKind::Eligible).await;
    let listed = api.get_json("/v1/banks", &api.token(&user)).await;
    assert_eq!(listed.status, 200, "{listed:?}");
    assert_eq!(
        listed.body.unwrap()["banks"].as_array().unwrap().len(),
        BANKS
    );

    let roles: BTreeMap<String, Role> = banks
        .iter()
        .enumerate()
        .map(|(i, b)| (b.clone(), Role::of(i)))
        .collect();
    for (bank, role) in &roles {
        if let Some(b) = role.behaviour() {
            api.sim_behave(&user, bank, b).await;
        }
    }
    let truth = api.sim_truth(&user).await;
    let immediate_with_cards = |found: bool| {
        roles
            .iter()
            .filter(|(b, r)| {
                **r == Role::Immediate && truth[b.as_str()].as_array().unwrap().is_empty() != found
            })
            .count()
    };
    assert!(
        immediate_with_cards(true) > 0 && immediate_with_cards(false) > 0,
        "the banks answering at once include FOUND and NONE"
    );

    let chosen: Vec<&str> = banks.iter().map(String::as_str).collect();
    let submit_at = Instant::now();
    let accepted = api.submit_query(&user, &chosen).await;
    let query_id = accepted["query_id"].as_str().unwrap().to_owned();
    assert_eq!(accepted["banks"].as_array().unwrap().len(), BANKS);

    // Along the way: the progress view stays whole and consistent until every bank but
    // the silent ones has settled; the report waits for those.
    let mut settled = BTreeMap::new();
    let mut views = 0;
    let never: BTreeSet<&String> = roles
        .iter()
        .filter(|(_, r)| **r == Role::Never)
        .map(|(b, _)| b)
        .collect();
    loop {
        let (record, statuses) = progress(&api, &user, &query_id).await;
        views += 1;
        check_progress(&record, &banks, &roles, &mut settled);
        if settled.len() == BANKS - never.len()
            && never.iter().all(|b| statuses[b.as_str()] == "PENDING")
        {
            assert_eq!(record["report_status"], "PENDING", "{record}");
            break;
        }
        assert_eq!(record["report_status"], "PENDING", "{record}");
        assert!(
            submit_at.elapsed() < SETTLE_WAIT,
            "after {SETTLE_WAIT:?}, {} of {BANKS} settled: {statuses:?}",
            settled.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let settled_in = submit_at.elapsed();

    // Every bank was asked once, the silent ones included.
    let asked: BTreeMap<String, usize> =
        api.sim_inquiries(&user)
            .await
            .iter()
            .fold(BTreeMap::new(), |mut m, i| {
                *m.entry(i["bank_code"].as_str().unwrap().to_owned())
                    .or_default() += 1;
                m
            });
    assert_eq!(asked.len(), BANKS, "every bank asked");
    assert!(asked.values().all(|n| *n == 1), "each bank once: {asked:?}");

    // 24 hours pass: the silent banks settle NO_RESPONSE and the report is made.
    let deadline_at = Instant::now();
    pass_the_deadline(&api, &query_id).await;
    let record = api.wait_report(&user, &query_id, REPORT_WAIT).await;
    let reported_in = deadline_at.elapsed();
    assert_eq!(record["report_status"], "READY", "{record}");
    let expected: BTreeMap<String, String> = roles
        .iter()
        .map(|(b, r)| (b.clone(), r.settled().to_owned()))
        .collect();
    assert_eq!(bank_statuses(&record["progress"]), expected);

    let (report, summary) = view(&api, &user, &query_id).await;
    assert_eq!(summary, expected, "the report lists every bank as it ended");
    check_card_counts(&report, &roles, &truth);
    let answered = roles
        .iter()
        .filter(|(_, r)| r.settled() == "RESPONDED")
        .map(|(b, _)| (b.as_str(), &truth[b.as_str()]));
    assert_eq!(report_cards(&report), bank_cards(answered));
    assert_eq!(ready_sms_of(&api, &user).await, 1, "one notice");

    eprintln!(
        "national: {BANKS} banks, stack up {:.1}s, submit→all but {} settled {:.1}s \
         ({views} progress views), deadline→READY {:.1}s, whole test {:.1}s",
        started.as_secs_f64(),
        never.len(),
        settled_in.as_secs_f64(),
        reported_in.as_secs_f64(),
        began.elapsed().as_secs_f64()
    );
    drop(stack);
}

/// Each bank's summary counts its debit and credit cards as the bank said (none for a
/// bank that failed or never answered), and the total adds them up.
fn check_card_counts(report: &Value, roles: &BTreeMap<String, Role>, truth: &Value) {
    let mut total = 0;
    for b in report["summary"]["banks"].as_array().unwrap() {
        let bank = b["bank_code"].as_str().unwrap();
        let said: &[Value] = match roles[bank].settled() {
            "RESPONDED" => truth[bank].as_array().unwrap(),
            _ => &[],
        };
        let of = |kind: &str| said.iter().filter(|c| c["kind"] == kind).count();
        assert_eq!(
            (b["debit_cards"].as_u64(), b["credit_cards"].as_u64()),
            (Some(of("DEBIT") as u64), Some(of("CREDIT") as u64)),
            "{bank}: {b}"
        );
        total += said.len();
    }
    assert_eq!(report["summary"]["total_cards"], total);
}
