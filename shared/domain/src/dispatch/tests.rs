//! Fan-out and callbacks on the in-memory store, with a scripted bank client that signs
//! its replies as a bank would.

use std::ops::Deref;

use chrono::TimeDelta;

use super::callback::CallbackService;
use super::fanout::LegOutcome;
use crate::bank::signing::{self, SignatureHeaders};
use crate::error::ServiceError;
use crate::model::ids::QueryId;
use crate::ports::QueryStore;
use crate::records::*;
use crate::test_support::{answer_body, answer_body_with_refs, user, BankWorld, Script, PHONE, T0};

/// The shared bank world and the callback service on it.
struct World {
    base: BankWorld,
    callbacks: CallbackService,
}

impl Deref for World {
    type Target = BankWorld;

    fn deref(&self) -> &BankWorld {
        &self.base
    }
}

fn world(scripts: &[(&str, Vec<Script>)]) -> World {
    let base = BankWorld::new(scripts);
    let callbacks = CallbackService {
        config: base.config.clone(),
        store: base.store.clone(),
        secrets: base.secrets.clone(),
        clock: base.clock.clone(),
        sealer: base.sealer.clone(),
    };
    World { base, callbacks }
}

impl World {
    /// A submitted query of u1 for the given banks.
    async fn query(&self, banks: &[&str]) -> QueryId {
        self.profile("u1", PHONE);
        let q = QueryId::generate();
        self.submit_query(&user("u1"), q, banks, |b| format!("inq-{b}-0000000000"))
            .await;
        q
    }

    /// A callback as the bank would send it: (path, headers, body).
    fn callback(
        &self,
        bank: &str,
        q: &QueryId,
        inquiry: &str,
        status: &str,
        cards: &[(&str, &str)],
    ) -> (String, SignatureHeaders, Vec<u8>) {
        self.signed(bank, answer_body(q.to_string(), inquiry, status, cards))
    }

    /// The bank's callback answering its own leg.
    fn answer(
        &self,
        leg: &LegRecord,
        status: &str,
        cards: &[(&str, &str)],
    ) -> (String, SignatureHeaders, Vec<u8>) {
        let bank = leg.bank.as_str();
        self.callback(bank, &leg.query_id, &leg.inquiry_id, status, cards)
    }

    fn signed(&self, bank: &str, body: Vec<u8>) -> (String, SignatureHeaders, Vec<u8>) {
        let path = format!("/v1/bank-callbacks/{bank}");
        let secret = self.bank_secret(bank);
        let h = signing::sign(&secret, bank, self.now(), "POST", &path, &body);
        (path, h, body)
    }

    async fn receive(
        &self,
        bank: &str,
        msg: &(String, SignatureHeaders, Vec<u8>),
    ) -> Result<(), ServiceError> {
        self.callbacks
            .receive(bank, &msg.0, Some(msg.1.clone()), &msg.2)
            .await
    }
}

#[tokio::test]
async fn answers_at_once_settle_every_leg() {
    let w = world(&[
        (
            "ICBC",
            vec![Script::Cards(&[
                ("DEBIT", "62221234"),
                ("CREDIT", "62583456"),
            ])],
        ),
        ("CMB", vec![Script::Cards(&[])]),
    ]);
    let q = w.query(&["ICBC", "CMB"]).await;
    let out = w.fanout.dispatch(&q).await.unwrap();
    assert!(
        out.iter().all(|(_, o)| *o == LegOutcome::Answered),
        "{out:?}"
    );
    let icbc = w.leg(&q, "ICBC").await;
    assert_eq!(icbc.state, LegState::Answered);
    let cards = w.leg_cards(&q, "ICBC").await;
    assert_eq!(cards.len(), 2);
    assert_eq!(cards[0].masked().masked_number(), "6222 **** **** 1234");
    assert_eq!(w.leg(&q, "CMB").await.state, LegState::Answered);
    assert_eq!(w.store.unsettled(&q), Some(0));
    // The inquiry carried the subject, our callback URL and the deadline.
    let calls = w.banks.calls.lock().unwrap().clone();
    let (_, inquiry) = calls.iter().find(|(b, _)| b == "ICBC").unwrap();
    assert_eq!(inquiry["subject"]["id_number"], "11010519491231002X");
    assert_eq!(
        inquiry["callback_url"],
        "https://api.example/v1/bank-callbacks/ICBC"
    );
    assert_eq!(inquiry["inquiry_id"], icbc.inquiry_id);
}

/// The refs a leg's sealed answer holds, by last four digits.
async fn sealed_refs(w: &World, q: &QueryId, bank: &str) -> Vec<(String, Option<String>)> {
    w.leg_cards(q, bank)
        .await
        .into_iter()
        .map(|c| {
            let r = c.card_ref.as_ref().map(|r| r.as_str().to_owned());
            (c.last4.as_str().to_owned(), r)
        })
        .collect()
}

#[tokio::test]
async fn answers_with_card_refs_settle_and_seal_the_refs_at_once_and_by_callback() {
    let w = world(&[
        (
            "ICBC",
            vec![Script::CardsWithRefs(&[
                ("DEBIT", "62221234", "cr_qzkdmwbtaeyhrnxfcgps"),
                ("CREDIT", "62583456", "cr_ab-12345_x"),
            ])],
        ),
        ("CCB", vec![Script::Accept]),
    ]);
    let q = w.query(&["ICBC", "CCB"]).await;
    w.fanout.dispatch(&q).await.unwrap();
    assert_eq!(w.leg(&q, "ICBC").await.state, LegState::Answered);
    assert_eq!(
        sealed_refs(&w, &q, "ICBC").await,
        [
            (
                "1234".to_owned(),
                Some("cr_qzkdmwbtaeyhrnxfcgps".to_owned())
            ),
            ("3456".to_owned(), Some("cr_ab-12345_x".to_owned())),
        ]
    );

    let leg = w.leg(&q, "CCB").await;
    let body = answer_body_with_refs(
        leg.query_id.to_string(),
        &leg.inquiry_id,
        &[("CREDIT", "43671111", "cr_ccb-1")],
    );
    w.receive("CCB", &w.signed("CCB", body)).await.unwrap();
    assert_eq!(w.leg(&q, "CCB").await.state, LegState::Answered);
    assert_eq!(
        sealed_refs(&w, &q, "CCB").await,
        [("1111".to_owned(), Some("cr_ccb-1".to_owned()))]
    );
    assert_eq!(w.store.unsettled(&q), Some(0));
}

#[tokio::test]
async fn a_bad_card_ref_fails_the_leg_like_any_malformed_answer() {
    let w = world(&[
        (
            "ICBC",
            vec![Script::CardsWithRefs(&[("DEBIT", "62221234", "cr_622202")])],
        ),
        ("CCB", vec![Script::Accept]),
    ]);
    let q = w.query(&["ICBC", "CCB"]).await;
    w.fanout.dispatch(&q).await.unwrap();
    let icbc = w.leg(&q, "ICBC").await;
    assert_eq!(
        (icbc.state, icbc.failure.as_deref()),
        (LegState::Failed, Some("MALFORMED_ANSWER"))
    );
    assert!(icbc.cards.is_empty() && icbc.answer_digest.is_none());

    let leg = w.leg(&q, "CCB").await;
    let body = answer_body_with_refs(
        leg.query_id.to_string(),
        &leg.inquiry_id,
        &[("CREDIT", "43671111", "")],
    );
    assert!(matches!(
        w.receive("CCB", &w.signed("CCB", body)).await,
        Err(ServiceError::Malformed(_))
    ));
    let ccb = w.leg(&q, "CCB").await;
    assert_eq!(
        (ccb.state, ccb.failure.as_deref()),
        (LegState::Failed, Some("MALFORMED_ANSWER"))
    );
    assert!(
        ccb.cards.is_empty() && ccb.answer_digest.is_none(),
        "nothing stored"
    );
}

#[tokio::test]
async fn a_redelivered_record_sends_nothing_twice() {
    let w = world(&[
        ("ICBC", vec![Script::Cards(&[])]),
        ("CMB", vec![Script::Accept]),
    ]);
    let q = w.query(&["ICBC", "CMB"]).await;
    w.fanout.dispatch(&q).await.unwrap();
    assert_eq!(w.banks.total_calls(), 2);
    assert!(w.fanout.dispatch(&q).await.unwrap().is_empty());
    assert_eq!(w.banks.total_calls(), 2);
    assert_eq!(w.leg(&q, "CMB").await.state, LegState::Accepted);
}

#[tokio::test]
async fn an_accepted_inquiry_is_settled_by_its_callback() {
    let w = world(&[("CCB", vec![Script::Accept])]);
    let q = w.query(&["CCB"]).await;
    assert_eq!(
        w.fanout.dispatch(&q).await.unwrap()[0].1,
        LegOutcome::Accepted
    );
    assert_eq!(w.store.unsettled(&q), Some(1));
    let leg = w.leg(&q, "CCB").await;
    let msg = w.answer(&leg, "FOUND", &[("CREDIT", "43671111")]);
    w.receive("CCB", &msg).await.unwrap();
    let leg = w.leg(&q, "CCB").await;
    assert_eq!(leg.state, LegState::Answered);
    assert_eq!(
        w.leg_cards(&q, "CCB").await[0].masked().masked_number(),
        "4367 **** **** 1111"
    );
    assert_eq!(w.store.unsettled(&q), Some(0));
    // The bank retries the very same request: success, nothing changes.
    w.receive("CCB", &msg).await.unwrap();
    assert_eq!(w.store.unsettled(&q), Some(0));
}

#[tokio::test]
async fn a_bank_failing_twice_is_retried_with_backoff_then_answers() {
    let w = world(&[(
        "BOC",
        vec![
            Script::Status(503),
            Script::Timeout,
            Script::Cards(&[("DEBIT", "62161234")]),
        ],
    )]);
    let q = w.query(&["BOC"]).await;
    let LegOutcome::RetryAt(at1) = w.fanout.dispatch(&q).await.unwrap()[0].1.clone() else {
        panic!("retry")
    };
    assert!(at1 > T0 && at1 <= T0 + TimeDelta::seconds(2));
    // Not due yet: nothing is sent.
    assert!(w.fanout.dispatch(&q).await.unwrap().is_empty());
    w.clock.set(at1);
    let LegOutcome::RetryAt(at2) = w.fanout.dispatch(&q).await.unwrap()[0].1.clone() else {
        panic!("retry")
    };
    assert!(at2 > at1 && at2 <= at1 + TimeDelta::seconds(4));
    w.clock.set(at2);
    assert_eq!(
        w.fanout.dispatch(&q).await.unwrap()[0].1,
        LegOutcome::Answered
    );
    let leg = w.leg(&q, "BOC").await;
    assert_eq!((leg.state, leg.attempts), (LegState::Answered, 3));
    assert_eq!(w.banks.calls_to("BOC"), 3);
}

#[tokio::test]
async fn no_retry_is_scheduled_past_the_deadline() {
    let w = world(&[("ABC", vec![Script::Timeout])]);
    let q = w.query(&["ABC"]).await;
    w.clock
        .set(T0 + TimeDelta::hours(24) - TimeDelta::milliseconds(500));
    assert_eq!(
        w.fanout.dispatch(&q).await.unwrap()[0].1,
        LegOutcome::GaveUp
    );
    assert_eq!(w.leg(&q, "ABC").await.state, LegState::Pending);
    w.clock.set(T0 + TimeDelta::hours(24));
    assert!(
        w.fanout.dispatch(&q).await.unwrap().is_empty(),
        "nothing is sent after the deadline"
    );
}

#[tokio::test]
async fn answers_we_must_refuse_fail_the_leg_and_store_no_cards() {
    let w = world(&[
        ("ICBC", vec![Script::BadSignature]),
        ("CMB", vec![Script::Malformed]),
        ("CCB", vec![Script::Leak]),
        ("BOC", vec![Script::Status(400)]),
        ("ABC", vec![Script::Status(302)]),
        ("PAB", vec![Script::Status(307)]),
    ]);
    let q = w.query(&["ICBC", "CMB", "CCB", "BOC", "ABC", "PAB"]).await;
    w.fanout.dispatch(&q).await.unwrap();
    for (bank, why) in [
        ("ICBC", "BAD_SIGNATURE"),
        ("CMB", "MALFORMED_ANSWER"),
        ("CCB", "CARD_NUMBER_IN_ANSWER"),
        ("BOC", "INQUIRY_REFUSED"),
        // A redirect is the bank's error, not a place to re-send the inquiry to.
        ("ABC", "BANK_REDIRECTED"),
        ("PAB", "BANK_REDIRECTED"),
    ] {
        let leg = w.leg(&q, bank).await;
        assert_eq!(leg.state, LegState::Failed, "{bank}");
        assert_eq!(leg.failure.as_deref(), Some(why), "{bank}");
        assert!(
            leg.cards.is_empty() && leg.answer_digest.is_none(),
            "{bank}"
        );
    }
    assert_eq!(w.store.unsettled(&q), Some(0));
    assert_eq!(w.banks.calls_to("ABC"), 1, "a redirect is not retried");
}

#[tokio::test]
async fn refused_callbacks_change_nothing() {
    let w = world(&[
        ("ICBC", vec![Script::Accept]),
        ("CMB", vec![Script::Accept]),
    ]);
    let q = w.query(&["ICBC", "CMB"]).await;
    w.fanout.dispatch(&q).await.unwrap();
    let icbc = w.leg(&q, "ICBC").await;
    let cmb = w.leg(&q, "CMB").await;
    let good = w.answer(&icbc, "NONE", &[]);

    // Bad signature: another bank's key.
    let (path, mut h, body) = good.clone();
    h.signature = w.signed("CMB", body.clone()).1.signature;
    assert!(matches!(
        w.callbacks.receive("ICBC", &path, Some(h), &body).await,
        Err(ServiceError::Unauthenticated)
    ));
    // Missing headers; header bank not the path's bank; unknown bank.
    assert!(matches!(
        w.callbacks.receive("ICBC", &path, None, &body).await,
        Err(ServiceError::Unauthenticated)
    ));
    let as_cmb = w.signed("CMB", body.clone());
    assert!(matches!(
        w.callbacks
            .receive("ICBC", &path, Some(as_cmb.1), &body)
            .await,
        Err(ServiceError::Unauthenticated)
    ));
    assert!(matches!(
        w.callbacks
            .receive(
                "NOPE",
                "/v1/bank-callbacks/NOPE",
                Some(good.1.clone()),
                &body
            )
            .await,
        Err(ServiceError::Unauthenticated)
    ));
    // Stale timestamp.
    w.clock.advance(TimeDelta::seconds(301));
    assert!(matches!(
        w.receive("ICBC", &good).await,
        Err(ServiceError::Unauthenticated)
    ));
    w.clock.set(T0);
    // CMB's leg answered by ICBC's key (a bank can never settle another's leg).
    let forged = w.signed("ICBC", w.answer(&cmb, "NONE", &[]).2);
    assert!(matches!(
        w.receive("CMB", &forged).await,
        Err(ServiceError::Unauthenticated)
    ));
    // Unknown query.
    let unknown = w.callback("ICBC", &QueryId::generate(), &icbc.inquiry_id, "NONE", &[]);
    assert!(matches!(
        w.receive("ICBC", &unknown).await,
        Err(ServiceError::NotFound)
    ));
    // A leaked card number, unsigned: nothing (a forger cannot fail a bank's leg).
    let mut v: serde_json::Value = serde_json::from_slice(&good.2).unwrap();
    v["note"] = "6222 0212 3456 7891".into();
    let (path, mut h, leak) = w.signed("ICBC", v.to_string().into_bytes());
    h.signature = "0".repeat(64);
    assert!(matches!(
        w.callbacks.receive("ICBC", &path, Some(h), &leak).await,
        Err(ServiceError::Unauthenticated)
    ));
    // Malformed, naming no leg.
    let junk = w.signed("ICBC", b"{\"query_id\": 1}".to_vec());
    assert!(matches!(
        w.receive("ICBC", &junk).await,
        Err(ServiceError::Malformed(_))
    ));

    assert_eq!(
        w.leg(&q, "ICBC").await,
        icbc,
        "nothing of a refused callback is stored"
    );
    assert_eq!(w.store.unsettled(&q), Some(2));

    // The good one goes through; a different second answer is refused; the same is fine.
    w.receive("ICBC", &good).await.unwrap();
    let other = w.answer(&icbc, "FOUND", &[("DEBIT", "62221234")]);
    assert!(matches!(
        w.receive("ICBC", &other).await,
        Err(ServiceError::AlreadyAnswered)
    ));
    w.receive("ICBC", &good).await.unwrap();
    assert!(w.leg_cards(&q, "ICBC").await.is_empty(), "NONE: no cards");
    assert_eq!(w.store.unsettled(&q), Some(1));

    // A replayed nonce on a message that would change something is refused.
    let cmb_answer = w.answer(&cmb, "NONE", &[]);
    let (path, mut h, body) = cmb_answer.clone();
    h.nonce = good.1.nonce.clone();
    let secret = w.bank_secret("CMB");
    h.signature = signing::signature(&secret, &h.timestamp, &h.nonce, "POST", &path, &body);
    // Nonces are per bank: ICBC's nonce is new for CMB.
    w.callbacks
        .receive("CMB", &path, Some(h.clone()), &body)
        .await
        .unwrap();
    let again = w.answer(&cmb, "FOUND", &[("DEBIT", "62221234")]);
    let (path2, mut h2, body2) = again;
    h2.nonce = h.nonce.clone();
    h2.signature = signing::signature(&secret, &h2.timestamp, &h2.nonce, "POST", &path2, &body2);
    assert!(matches!(
        w.callbacks.receive("CMB", &path2, Some(h2), &body2).await,
        Err(ServiceError::AlreadyAnswered)
    ));
}

/// A leg of u1's query to ICBC and CMB, accepted and awaiting ICBC's callback.
async fn awaiting_icbc(w: &World) -> (QueryId, LegRecord) {
    let q = w.query(&["ICBC", "CMB"]).await;
    w.fanout.dispatch(&q).await.unwrap();
    (q, w.leg(&q, "ICBC").await)
}

#[tokio::test]
async fn a_signed_callback_refused_for_its_content_fails_its_leg_at_once() {
    let w = world(&[
        ("ICBC", vec![Script::Accept]),
        ("CMB", vec![Script::Accept]),
    ]);
    let leak = |leg: &LegRecord| {
        let mut v: serde_json::Value =
            serde_json::from_slice(&w.answer(leg, "FOUND", &[("DEBIT", "62221234")]).2).unwrap();
        v["cards"][0]["note"] = "6222\u{00A0}0212\u{00A0}3456\u{00A0}7891".into();
        v.to_string().into_bytes()
    };
    let malformed = |leg: &LegRecord| {
        // FOUND without cards: the ids are there, the answer is not.
        answer_body(leg.query_id.to_string(), &leg.inquiry_id, "FOUND", &[])
    };
    let mismatched = |leg: &LegRecord| {
        answer_body(
            leg.query_id.to_string(),
            "01KBZ8Y4B6Z0Q9V7T3J2M1N0PX",
            "NONE",
            &[],
        )
    };
    type Body<'a> = &'a dyn Fn(&LegRecord) -> Vec<u8>;
    // The refusal the bank gets (422, 400 and 404 in the contract).
    type Refusal = fn(&ServiceError) -> bool;
    let cases: [(Body, &str, Refusal); 3] = [
        (&leak, "CARD_NUMBER_IN_ANSWER", |e| {
            matches!(e, ServiceError::CardNumberRejected)
        }),
        (&malformed, "MALFORMED_ANSWER", |e| {
            matches!(e, ServiceError::Malformed(_))
        }),
        (&mismatched, "MISMATCHED_ANSWER", |e| {
            matches!(e, ServiceError::NotFound)
        }),
    ];
    for (body, why, refusal) in cases {
        let (q, leg) = awaiting_icbc(&w).await;
        assert_eq!(w.store.unsettled(&q), Some(2));
        let msg = w.signed("ICBC", body(&leg));
        let err = w.receive("ICBC", &msg).await.unwrap_err();
        assert!(refusal(&err), "{why}: {err:?}");
        let failed = w.leg(&q, "ICBC").await;
        assert_eq!(failed.state, LegState::Failed, "{why}");
        assert_eq!(failed.failure.as_deref(), Some(why));
        assert!(
            failed.cards.is_empty() && failed.answer_digest.is_none(),
            "{why}"
        );
        assert_eq!(w.store.unsettled(&q), Some(1), "{why}: counted once");
        // The same message again (or another one) settles nothing more.
        let again = w.signed("ICBC", body(&leg));
        let err = w.receive("ICBC", &again).await.unwrap_err();
        assert!(refusal(&err), "{why} again: {err:?}");
        let late = w.answer(&leg, "FOUND", &[("DEBIT", "62221234")]);
        assert!(matches!(
            w.receive("ICBC", &late).await,
            Err(ServiceError::AlreadyAnswered)
        ));
        assert_eq!(w.leg(&q, "ICBC").await, failed);
        assert_eq!(w.store.unsettled(&q), Some(1));
        // CMB's leg is untouched.
        assert_eq!(w.leg(&q, "CMB").await.state, LegState::Accepted);
    }
}

#[tokio::test]
async fn concurrent_refused_and_accepted_callbacks_settle_a_leg_once() {
    let w = world(&[
        ("ICBC", vec![Script::Accept]),
        ("CMB", vec![Script::Accept]),
    ]);
    for _ in 0..5 {
        let (q, leg) = awaiting_icbc(&w).await;
        // 10 refused (a leaked number) and 10 accepted (each a different answer).
        let msgs: Vec<_> = (0..20u32)
            .map(|i| {
                let last4 = format!("{:04}", 1000 + i);
                let digits = format!("6222{last4}");
                let mut v: serde_json::Value = serde_json::from_slice(&answer_body(
                    q.to_string(),
                    &leg.inquiry_id,
                    "FOUND",
                    &[("DEBIT", digits.as_str())],
                ))
                .unwrap();
                if i % 2 == 0 {
                    v["note"] = "6222 0212 3456 7891".into();
                }
                w.signed("ICBC", v.to_string().into_bytes())
            })
            .collect();
        let results = futures::future::join_all(msgs.iter().map(|m| w.receive("ICBC", m))).await;
        let settled = w.leg(&q, "ICBC").await;
        assert!(settled.state.is_settled());
        assert_eq!(w.store.unsettled(&q), Some(1), "exactly one settlement");
        let accepted: Vec<usize> = results
            .iter()
            .enumerate()
            .filter(|(_, r)| r.is_ok())
            .map(|(i, _)| i)
            .collect();
        match settled.state {
            LegState::Answered => {
                assert_eq!(accepted.len(), 1, "{results:?}");
                let digest =
                    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&msgs[accepted[0]].2));
                assert_eq!(settled.answer_digest, Some(digest));
                assert_eq!(w.leg_cards(&q, "ICBC").await.len(), 1);
            }
            LegState::Failed => {
                assert!(accepted.is_empty(), "{results:?}");
                assert_eq!(settled.failure.as_deref(), Some("CARD_NUMBER_IN_ANSWER"));
                assert!(settled.cards.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn a_replayed_nonce_on_an_unsettled_leg_is_refused() {
    let w = world(&[
        ("ICBC", vec![Script::Accept]),
        ("CMB", vec![Script::Accept]),
    ]);
    let q1 = w.query(&["ICBC"]).await;
    let q2 = w.query(&["ICBC"]).await;
    w.fanout.dispatch(&q1).await.unwrap();
    w.fanout.dispatch(&q2).await.unwrap();
    let l1 = w.leg(&q1, "ICBC").await;
    let l2 = w.leg(&q2, "ICBC").await;
    let first = w.answer(&l1, "NONE", &[]);
    w.receive("ICBC", &first).await.unwrap();
    let (path, mut h, body) = w.answer(&l2, "NONE", &[]);
    h.nonce = first.1.nonce.clone();
    let secret = w.bank_secret("ICBC");
    h.signature = signing::signature(&secret, &h.timestamp, &h.nonce, "POST", &path, &body);
    assert!(matches!(
        w.callbacks.receive("ICBC", &path, Some(h), &body).await,
        Err(ServiceError::Unauthenticated)
    ));
    assert_eq!(w.leg(&q2, "ICBC").await, l2);
}

/// The submission writes only the query record; fan-out creates the legs. A store that
/// fails half way through creating them loses nothing: no bank is asked before every
/// leg exists, and the stream's retry finishes the legs and sends each inquiry once.
#[tokio::test]
async fn legs_made_part_way_are_finished_by_the_retry_and_each_bank_is_asked_once() {
    let codes: Vec<String> = BankWorld::new(&[])
        .config
        .banks
        .all()
        .iter()
        .map(|b| b.code.to_string())
        .collect();
    let scripts: Vec<(&str, Vec<Script>)> = codes
        .iter()
        .map(|c| (c.as_str(), vec![Script::Cards(&[])]))
        .collect();
    let w = world(&scripts);
    w.profile("u1", PHONE);
    let q = QueryId::generate();
    let banks: Vec<&str> = codes.iter().map(String::as_str).collect();
    w.submit_record(&user("u1"), q, &banks).await;
    assert!(w.store.legs(&q).await.unwrap().is_empty());
    assert_eq!(w.store.unsettled(&q), Some(banks.len()));

    w.store.fail_leg_creation_after(5);
    assert!(w.fanout.dispatch(&q).await.is_err(), "the store failed");
    let made = w.store.legs(&q).await.unwrap();
    assert_eq!(made.len(), 5, "the failure came part way");
    assert_eq!(
        w.banks.total_calls(),
        0,
        "nothing is sent before every leg exists"
    );

    // The stream delivers the record again.
    let out = w.fanout.dispatch(&q).await.unwrap();
    assert_eq!(out.len(), banks.len(), "{out:?}");
    assert!(
        out.iter().all(|(_, o)| *o == LegOutcome::Answered),
        "{out:?}"
    );
    let legs = w.store.legs(&q).await.unwrap();
    assert_eq!(legs.len(), banks.len());
    for leg in &made {
        let now = legs.iter().find(|l| l.bank == leg.bank).unwrap();
        assert_eq!(
            now.inquiry_id, leg.inquiry_id,
            "a made leg is kept as it was"
        );
    }
    for b in &banks {
        assert_eq!(w.banks.calls_to(b), 1, "{b} asked once");
    }
    assert_eq!(w.store.unsettled(&q), Some(0));
    // Yet another delivery creates and sends nothing.
    assert!(w.fanout.dispatch(&q).await.unwrap().is_empty());
    assert_eq!(
        w.store
            .ensure_legs(&w.store.query(&q).await.unwrap().unwrap())
            .await
            .unwrap(),
        0
    );
    assert_eq!(w.banks.total_calls(), banks.len());
}
