//! The happy path: a code, a submission, and what it records and answers.

use super::*;
use crate::model::bank::BankCode;
use crate::model::timestamp;
use crate::records::QueryPhase;
use crate::submission::api::SubmitAccepted;

fn accepted(body: &Value) -> SubmitAccepted {
    serde_json::from_value(body.clone()).unwrap()
}

#[tokio::test]
async fn happy_path_records_query_consent_and_lock_and_answers_202() {
    let fx = Fx::new();
    let alice = uid(ALICE);

    let created = fx
        .svc
        .create_verification(
            &alice,
            VerificationRequest {
                purpose: Purpose::SubmitQuery,
            },
        )
        .await
        .unwrap();
    assert_eq!(created.masked_phone, "138****8000");
    assert_eq!(created.expires_at, START + TimeDelta::minutes(5));
    assert!(VerificationId::parse(&created.verification_id).is_ok());

    let sent = fx.sms.sent();
    assert_eq!(sent.len(), 1);
    let (to, text) = &sent[0];
    assert_eq!(
        to,
        &PhoneNumber::parse(ALICE_PHONE).unwrap(),
        "to the profile's phone"
    );
    let code = code_in(text);
    assert!(text.contains(&code));
    assert!(!text.to_lowercase().contains("http"), "no link in {text:?}");
    assert!(
        text.contains('骗') || text.contains("切勿"),
        "anti-fraud line in {text:?}"
    );

    let banks = ["CMB", "ICBC", "BOC"];
    let raw = body(
        &banks,
        &created.verification_id,
        &code,
        &fx.face(ALICE),
        PASSWORD,
    );
    let (status, resp) = fx.submit(ALICE, Some("key-1"), &raw).await.unwrap();
    assert_eq!(status, 202);

    let a = accepted(&resp);
    assert_eq!(a.status, "PENDING");
    assert_eq!(a.submitted_at, START);
    assert_eq!(a.report_due_by, START + TimeDelta::hours(24));
    assert_eq!(resp["submitted_at"], json!(timestamp::format(START)));
    assert_eq!(
        resp["report_due_by"],
        json!(timestamp::format(START + TimeDelta::hours(24)))
    );
    assert_eq!(
        a.banks,
        vec!["CMB", "ICBC", "BOC"],
        "banks in request order"
    );
    let query_id = QueryId::parse(&a.query_id).expect("a query id");

    let queries = fx.store.queries();
    assert_eq!(queries.len(), 1);
    let q = &queries[0];
    assert_eq!(q.query_id, query_id);
    assert_eq!(q.user_id, alice);
    assert_eq!(q.phase, QueryPhase::Collecting);
    assert_eq!(q.submitted_at, START);
    assert_eq!(q.report_due_by, START + TimeDelta::hours(24));
    let q_banks: Vec<&str> = q.banks.iter().map(BankCode::as_str).collect();
    assert_eq!(q_banks, banks);
    assert_eq!(q.report_generated_at, None);
    assert_eq!(q.report_expires_at, None);

    let consents = fx.store.consents();
    assert_eq!(consents.len(), 1);
    let c = &consents[0];
    assert_eq!(c.query_id, query_id);
    assert_eq!(c.user_id, alice);
    assert_eq!(c.agreement_version, AGREEMENT);
    assert_eq!(c.accepted_at, START);
    assert_eq!(c.source_ip.as_deref(), Some(SOURCE_IP));

    let state = fx.state(ALICE);
    assert_eq!(state.active_query_id, Some(query_id));
    assert_eq!(state.password_failures, 0);
    assert_eq!(fx.sms.sent().len(), 1, "submission itself sends no SMS");
}
