//! The checker against the simulator, in process: it passes against the simulator's
//! conforming behaviours and fails, naming the rule, against each misbehaving mode;
//! the traffic of a run validates against `functions/bank-protocol.yaml`.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bank_check::{run, subjects, CheckConfig, Report, Rule};
use bank_sim::behaviour::{Behaviour, BehaviourConfig, Mode};
use bank_sim::server::{start, Running, SimConfig};
use domain::bank::signing::BankSecret;
use domain::config::{ServiceConfig, DEFAULT_CONFIG};
use serde_json::{json, Value};
use testkit::openapi::OpenApi;

/// Each inquiry's `respond_by`: short, so that a missing callback fails quickly.
const RESPOND_WITHIN: Duration = Duration::from_secs(5);

fn banks() -> Vec<String> {
    ServiceConfig::parse(DEFAULT_CONFIG)
        .unwrap()
        .banks
        .all()
        .iter()
        .map(|b| b.code.to_string())
        .collect()
}

fn secret_of(bank: &str) -> BankSecret {
    let i = banks().iter().position(|b| b == bank).unwrap_or(99) as u8;
    BankSecret::new(vec![i + 7; 32]).unwrap()
}

/// A bank at which every default subject holds a card, so that card data, card refs
/// and disputes are exercised for each.
fn bank_with_cards() -> String {
    banks()
        .into_iter()
        .find(|b| {
            subjects::defaults()
                .iter()
                .all(|s| !bank_sim::customers::masked_cards(&s.id_number, b).is_empty())
        })
        .or_else(|| {
            banks().into_iter().find(|b| {
                !bank_sim::customers::masked_cards(&subjects::defaults()[0].id_number, b).is_empty()
            })
        })
        .expect("a bank where the first subject has cards")
}

async fn sim_behaving(bank: &str, behaviour: Value) -> Running {
    let banks = banks();
    let secrets: HashMap<String, BankSecret> =
        banks.iter().map(|b| (b.clone(), secret_of(b))).collect();
    let b = Behaviour::parse(behaviour.to_string().as_bytes()).unwrap();
    start(
        SimConfig {
            banks,
            secrets,
            behaviour: BehaviourConfig {
                default: Behaviour::default(),
                banks: BTreeMap::from([(bank.to_owned(), b)]),
            },
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap()
}

async fn check(sim: &Running, bank: &str) -> Report {
    run(CheckConfig {
        endpoint: sim.bank_endpoint(bank).parse().unwrap(),
        bank: bank.to_owned(),
        secret: secret_of(bank),
        subjects: subjects::defaults(),
        callback_listen: Some("127.0.0.1:0".parse().unwrap()),
        callback_base: None,
        respond_within: RESPOND_WITHIN,
        request_timeout: Duration::from_secs(5),
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_conforms_answering_at_once_or_by_callback() {
    let bank = bank_with_cards();
    for behaviour in [
        json!({"card_refs": true}),
        json!({"mode": "callback", "callback_delay_ms": 50, "card_refs": true}),
    ] {
        let sim = sim_behaving(&bank, behaviour.clone()).await;
        let report = check(&sim, &bank).await;
        println!("{report}");
        assert!(report.passed(), "{behaviour}:\n{report}");
        let text = report.to_string();
        for rule in [
            Rule::CardRef,
            Rule::Dispute,
            Rule::IdempotentRepeat,
            Rule::CardData,
        ] {
            assert!(
                text.contains(&format!("PASS  {}", rule.name())),
                "{rule} was checked, not skipped:\n{text}"
            );
        }
        // The dispute reached the bank, once as a case, delivered twice.
        let id = &subjects::defaults()[0].id_number;
        let disputes = sim.sim.disputes(id);
        assert_eq!(disputes.len(), 1, "{behaviour}");
        assert_eq!(disputes[0].deliveries, 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_card_refs_the_dispute_rules_are_skipped_not_failed() {
    let bank = bank_with_cards();
    let sim = sim_behaving(&bank, json!({"card_refs": false})).await;
    let report = check(&sim, &bank).await;
    assert!(report.passed(), "{report}");
    let text = report.to_string();
    assert!(text.contains("SKIP  card-ref"), "{text}");
    assert!(text.contains("SKIP  dispute"), "{text}");
    assert!(text.contains("SKIP  callback-timing"), "{text}");
}

/// What each mode of the simulator must make the checker fail, `None` for the modes
/// that conform. Exhaustive, so a new mode cannot be added without saying what catches
/// it.
fn broken_by(mode: Mode) -> Option<(Value, Rule)> {
    let m = |extra: Value, rule| {
        let mut b = json!({"mode": serde_json::to_value(mode).unwrap(), "card_refs": true});
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        Some((b, rule))
    };
    match mode {
        Mode::Immediate | Mode::Callback | Mode::ErrorAnswer => None,
        // Failing or stalling inquiries: the checker does not retry, so a 5xx or no
        // reply to a valid inquiry is reported (we would retry until respond_by).
        Mode::Error | Mode::FailThenAnswer => m(json!({}), Rule::AnswerSchema),
        Mode::Timeout => m(json!({"timeout_ms": 7000}), Rule::AnswerSchema),
        Mode::Malformed => m(json!({}), Rule::AnswerSchema),
        Mode::Redirect => m(json!({}), Rule::AnswerSchema),
        Mode::BadSignature => m(json!({}), Rule::AnswerSignature),
        Mode::Unsigned => m(json!({}), Rule::AnswerSignature),
        Mode::LeakCardNumber => m(json!({}), Rule::CardData),
        Mode::Never => m(json!({}), Rule::CallbackTiming),
        Mode::AcceptBadSignature => m(json!({}), Rule::RefusesBadSignature),
        Mode::AcceptReplayedNonce => m(json!({}), Rule::RefusesReplayedNonce),
        Mode::AcceptStaleTimestamp => m(json!({}), Rule::RefusesStaleTimestamp),
        Mode::WrongIds => m(json!({}), Rule::AnswerIds),
        Mode::CardRefWithDigits => m(json!({}), Rule::CardRef),
        Mode::NotIdempotent => m(json!({}), Rule::IdempotentRepeat),
        Mode::DisputeNotIdempotent => m(json!({}), Rule::Dispute),
        Mode::ExtraDigits => m(json!({}), Rule::CardData),
    }
}

/// Misbehaviours of callbacks (callback mode with a tampered delivery).
fn callback_misbehaviours() -> Vec<(Value, Rule)> {
    vec![
        (
            json!({"mode": "callback", "callback_answer": "bad_signature", "card_refs": true}),
            Rule::CallbackSignature,
        ),
        (
            json!({"mode": "callback", "callback_answer": "unsigned"}),
            Rule::CallbackSignature,
        ),
        (
            json!({"mode": "callback", "callback_answer": "malformed"}),
            Rule::AnswerSchema,
        ),
        (
            json!({"mode": "callback", "callback_answer": "leak_card_number"}),
            Rule::CardData,
        ),
        // Sent, but after respond_by.
        (
            json!({"mode": "callback", "callback_delay_ms": 8000}),
            Rule::CallbackTiming,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_misbehaving_mode_fails_the_rule_it_breaks() {
    let bank = bank_with_cards();
    let modes = Mode::ALL.into_iter().map(|mode| {
        broken_by(mode).map_or_else(
            || (json!({"mode": mode, "card_refs": true}), None),
            |(b, rule)| (b, Some(rule)),
        )
    });
    let callbacks = callback_misbehaviours()
        .into_iter()
        .map(|(b, r)| (b, Some(r)));
    let cases: Vec<(Value, Option<Rule>)> = modes.chain(callbacks).collect();
    assert_eq!(
        cases.len(),
        Mode::ALL.len() + callback_misbehaviours().len()
    );
    // A few at a time: two cores, and each run's callbacks must beat respond_by.
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(6));
    let mut runs = tokio::task::JoinSet::new();
    for (behaviour, rule) in cases {
        let bank = bank.clone();
        let slots = slots.clone();
        runs.spawn(async move {
            let _slot = slots.acquire_owned().await.unwrap();
            let sim = sim_behaving(&bank, behaviour.clone()).await;
            let report = check(&sim, &bank).await;
            (behaviour, rule, report)
        });
    }
    let mut missed = Vec::new();
    while let Some(done) = runs.join_next().await {
        let (behaviour, rule, report) = done.unwrap();
        let text = report.to_string();
        match rule {
            Some(rule) if !report.failed(rule) || !text.contains(&format!("FAIL  {rule}")) => {
                missed.push(format!("{behaviour}: {rule} did not fail\n{text}"))
            }
            None if !report.passed() => {
                missed.push(format!("{behaviour} conforms, yet failed\n{text}"))
            }
            _ => {}
        }
        // Reports never quote card data: no 13-digit run in them.
        assert!(
            !domain::bank::card_number::contains_card_number(&text),
            "{behaviour}: {text}"
        );
    }
    assert!(missed.is_empty(), "{}", missed.join("\n\n"));
}

/// The bank-side path of the protocol: `/banks/{code}/...` without the endpoint prefix.
fn protocol_path(path: &str) -> String {
    match path.strip_prefix("/banks/") {
        Some(rest) => rest
            .split_once('/')
            .map(|(_, p)| format!("/{p}"))
            .unwrap_or_default(),
        None => path.to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulators_traffic_matches_the_bank_protocol() {
    let spec = OpenApi::bank_protocol();
    let bank = bank_with_cards();
    let mut seen = BTreeMap::<String, usize>::new();
    for behaviour in [
        json!({"card_refs": true, "record_traffic": true}),
        json!({"mode": "callback", "card_refs": true, "record_traffic": true}),
    ] {
        let sim = sim_behaving(&bank, behaviour).await;
        assert!(check(&sim, &bank).await.passed());
        for s in subjects::defaults() {
            for e in sim.sim.traffic(&s.id_number) {
                let path = protocol_path(&e.path);
                let request: Value = serde_json::from_str(&e.request_body).unwrap();
                spec.check_request_body("POST", &path, &request)
                    .unwrap_or_else(|err| panic!("{} request: {err}", e.kind));
                let status = e.status.expect("answered");
                let body: Option<Value> = if e.response_body.is_empty() {
                    None
                } else {
                    Some(serde_json::from_str(&e.response_body).unwrap())
                };
                spec.check_response("POST", &path, status, body.as_ref())
                    .unwrap_or_else(|err| panic!("{} response: {err}", e.kind));
                if status == 200 {
                    for h in ["x-bank-code", "x-timestamp", "x-nonce", "x-signature"] {
                        assert!(
                            e.response_headers.contains_key(h),
                            "{} {status}: {h}",
                            e.kind
                        );
                    }
                }
                *seen.entry(format!("{} {status}", e.kind)).or_default() += 1;
            }
        }
    }
    for kind in [
        "inquiry 200",
        "inquiry 202",
        "inquiry 401",
        "callback 204",
        "dispute 200",
        "dispute 401",
    ] {
        assert!(seen.contains_key(kind), "{kind} was exchanged: {seen:?}");
    }
}
