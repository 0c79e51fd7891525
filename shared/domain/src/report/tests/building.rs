//! body::build: a report's summary, cards and notices from its legs, and its JSON.

use super::*;
use crate::model::bank::BankCode;
use crate::model::card::CardRef;
use crate::report::body::{ReportedBank, NOTICES, PARTIAL_NOTICE};

/// A leg of `q` holding `cards` sealed as fan-out would seal them.
fn leg_record(
    w: &World,
    q: &QueryRecord,
    bank: &BankCode,
    state: LegState,
    cards: Vec<AnsweredCard>,
) -> LegRecord {
    let inquiry_id = format!("inq-{bank}");
    LegRecord {
        query_id: q.query_id,
        bank: bank.clone(),
        cards: vec![body::seal_answer(&w.sealer, q, bank, &inquiry_id, &cards).unwrap()],
        inquiry_id,
        state,
        attempts: 1,
        next_attempt_at: None,
        failure: None,
        answer_digest: None,
        settled_at: None,
    }
}

/// The aggregator's half (content, sealed with nothing in clear) and view-report's
/// half (opened and rendered) of building a report, without the stores.
fn build(
    w: &World,
    q: &QueryRecord,
    legs: &[LegRecord],
    generated_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Report {
    let content = body::content(q, legs);
    let opener = w.opener();
    body::render(
        &q.query_id.to_string(),
        generated_at,
        expires_at,
        &content,
        &w.config.banks,
        |bank, sealed| body::open_answer(&opener, q, bank, sealed),
    )
    .unwrap()
}

fn query_record(w: &World, banks: &[&str]) -> QueryRecord {
    QueryRecord {
        query_id: QueryId::generate(),
        user_id: user("u1"),
        phase: QueryPhase::Aggregating,
        submitted_at: T0,
        report_due_by: T0 + TimeDelta::hours(24),
        collect_until: T0 + TimeDelta::hours(24),
        banks: banks.iter().map(|b| w.code(b)).collect(),
        report_generated_at: None,
        report_expires_at: None,
        last_viewed_at: None,
        report_deleted_at: None,
        views: Vec::new(),
        views_total: 0,
        notified_at: None,
    }
}

#[tokio::test]
async fn build_summarises_each_bank_in_the_users_order() {
    let w = world();
    // Not the configuration's order (ICBC, ABC, BOC, CCB, ..., CMB).
    let q = query_record(&w, &["CMB", "ICBC", "ABC", "CCB", "BOC"]);
    let id = q.query_id;
    let legs = vec![
        // Legs come from the store in bank-code order, not the user's.
        leg_record(&w, &q, &w.code("ABC"), LegState::NoResponse, vec![]),
        leg_record(
            &w,
            &q,
            &w.code("BOC"),
            LegState::Accepted,
            vec![card(CardKind::Debit, "62160001")],
        ),
        leg_record(
            &w,
            &q,
            &w.code("CCB"),
            LegState::Failed,
            vec![card(CardKind::Debit, "43670002")],
        ),
        leg_record(&w, &q, &w.code("CMB"), LegState::Answered, vec![]),
        leg_record(
            &w,
            &q,
            &w.code("ICBC"),
            LegState::Answered,
            vec![
                card(CardKind::Credit, "62583456"),
                card(CardKind::Debit, "62221234"),
                card(CardKind::Debit, "62225678"),
            ],
        ),
    ];
    let gen = T0 + TimeDelta::hours(1);
    let r = build(&w, &q, &legs, gen, gen + TimeDelta::days(7));

    assert_eq!(r.query_id, id.to_string());
    assert_eq!(
        (r.generated_at, r.expires_at),
        (gen, gen + TimeDelta::days(7))
    );
    let rows: Vec<(&str, &str, BankStatus, u32, u32)> = r
        .summary
        .banks
        .iter()
        .map(|b| {
            (
                b.bank_code.as_str(),
                b.bank_name.as_str(),
                b.status,
                b.debit_cards,
                b.credit_cards,
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("CMB", "招商银行", BankStatus::Responded, 0, 0),
            ("ICBC", "工商银行", BankStatus::Responded, 2, 1),
            ("ABC", "农业银行", BankStatus::NoResponse, 0, 0),
            ("CCB", "建设银行", BankStatus::Failed, 0, 0),
            // Still waiting for a callback when the report is built: no answer.
            ("BOC", "中国银行", BankStatus::NoResponse, 0, 0),
        ]
    );
    assert_eq!(
        (
            r.summary.total_cards,
            r.summary.debit_cards,
            r.summary.credit_cards
        ),
        (3, 2, 1)
    );

    // Cards only from answered legs, masked 4 + 4.
    assert_eq!(r.cards.len(), 3);
    assert!(r
        .cards
        .iter()
        .all(|c| c.bank_code == "ICBC" && c.bank_name == "工商银行"));
    let mut masked: Vec<(CardKind, &str)> = r
        .cards
        .iter()
        .map(|c| (c.kind, c.masked_number.as_str()))
        .collect();
    masked.sort();
    assert_eq!(
        masked,
        vec![
            (CardKind::Debit, "6222 **** **** 1234"),
            (CardKind::Debit, "6222 **** **** 5678"),
            (CardKind::Credit, "6258 **** **** 3456"),
        ]
    );
    for c in &r.cards {
        let b = c.masked_number.as_bytes();
        assert_eq!(c.masked_number.len(), 19, "{}", c.masked_number);
        assert!(b[..4].iter().all(u8::is_ascii_digit) && b[15..].iter().all(u8::is_ascii_digit));
        assert_eq!(&c.masked_number[4..15], " **** **** ");
    }

    // The five notices, plus the partial one: some banks did not answer.
    assert_eq!(r.notices.len(), 6);
    assert_eq!(&r.notices[..5], NOTICES.map(str::to_owned).as_slice());
    assert_eq!(r.notices[5], PARTIAL_NOTICE);
}

#[tokio::test]
async fn build_adds_the_partial_notice_only_when_a_bank_did_not_respond() {
    let w = world();
    let q = query_record(&w, &["ICBC", "CMB"]);
    let all = vec![
        leg_record(&w, &q, &w.code("CMB"), LegState::Answered, vec![]),
        leg_record(
            &w,
            &q,
            &w.code("ICBC"),
            LegState::Answered,
            vec![card(CardKind::Debit, "62221234")],
        ),
    ];
    let r = build(&w, &q, &all, T0, T0 + TimeDelta::days(7));
    assert_eq!(r.notices, NOTICES.map(str::to_owned).to_vec());
    assert!(r
        .summary
        .banks
        .iter()
        .all(|b| b.status == BankStatus::Responded));
    // The notices say what the brief asks, in Chinese.
    let text = r.notices.join("");
    for phrase in [
        "以银行记录为准",
        "预留手机号",
        "无卡支付",
        "联系发卡银行",
        "验证码",
        "不影响",
        "征信",
    ] {
        assert!(text.contains(phrase), "{phrase}");
    }

    for state in [LegState::Failed, LegState::NoResponse, LegState::Pending] {
        let mut legs = all.clone();
        legs[0].state = state;
        let r = build(&w, &q, &legs, T0, T0 + TimeDelta::days(7));
        assert_eq!(r.notices.len(), 6, "{state:?}");
        assert_eq!(r.notices[5], PARTIAL_NOTICE);
    }
    // A bank without any leg record did not respond either.
    let r = build(&w, &q, &all[1..], T0, T0 + TimeDelta::days(7));
    assert_eq!(r.summary.banks[1].status, BankStatus::NoResponse);
    assert_eq!(r.notices.last().unwrap(), PARTIAL_NOTICE);
}

#[tokio::test]
async fn the_report_json_follows_the_contract_and_holds_no_card_number() {
    let w = world();
    let q = query_record(&w, &["ICBC", "CCB", "ABC"]);
    let legs = vec![
        leg_record(
            &w,
            &q,
            &w.code("ICBC"),
            LegState::Answered,
            vec![
                card(CardKind::Debit, "62221234"),
                card(CardKind::Credit, "62583456"),
            ],
        ),
        leg_record(&w, &q, &w.code("CCB"), LegState::Failed, vec![]),
    ];
    let r = build(&w, &q, &legs, T0, T0 + TimeDelta::days(7));
    let v = serde_json::to_value(&r).unwrap();
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "cards",
            "expires_at",
            "generated_at",
            "notices",
            "query_id",
            "summary"
        ]
    );
    assert_eq!(v["generated_at"], "2026-11-28T10:00:00Z");
    assert_eq!(v["expires_at"], "2026-12-05T10:00:00Z");
    assert_eq!(v["summary"]["total_cards"], 2);
    assert_eq!(v["summary"]["debit_cards"], 1);
    assert_eq!(v["summary"]["credit_cards"], 1);
    assert_eq!(
        v["summary"]["banks"],
        json!([
            {"bank_code": "ICBC", "bank_name": "工商银行", "status": "RESPONDED", "debit_cards": 1, "credit_cards": 1},
            {"bank_code": "CCB", "bank_name": "建设银行", "status": "FAILED", "debit_cards": 0, "credit_cards": 0},
            {"bank_code": "ABC", "bank_name": "农业银行", "status": "NO_RESPONSE", "debit_cards": 0, "credit_cards": 0},
        ])
    );
    let cards = v["cards"].as_array().unwrap();
    assert_eq!(cards.len(), 2);
    for c in cards {
        let mut k: Vec<&str> = c.as_object().unwrap().keys().map(String::as_str).collect();
        k.sort();
        assert_eq!(
            k,
            [
                "bank_code",
                "bank_name",
                "card_id",
                "disputable",
                "kind",
                "masked_number"
            ]
        );
        assert!(c["kind"] == "DEBIT" || c["kind"] == "CREDIT");
    }
    assert!(cards
        .iter()
        .any(|c| c["kind"] == "DEBIT" && c["masked_number"] == "6222 **** **** 1234"));
    assert!(cards
        .iter()
        .any(|c| c["kind"] == "CREDIT" && c["masked_number"] == "6258 **** **** 3456"));
    // Nothing in the card list is longer than four digits in a row, spaces ignored.
    assert!(
        longest_digit_run(&v["cards"].to_string()) <= 4,
        "{}",
        v["cards"]
    );
    // It reads back as the same report (the viewing path parses it).
    assert_eq!(serde_json::from_value::<Report>(v).unwrap(), r);
}

#[tokio::test]
async fn card_refs_stay_in_the_sealed_answer_and_out_of_the_report() {
    let w = world();
    let q = query_record(&w, &["ICBC"]);
    let with_ref = |kind, digits, r: &str| AnsweredCard {
        card_ref: Some(CardRef::parse(r).unwrap()),
        ..card(kind, digits)
    };
    let cards = vec![
        with_ref(CardKind::Debit, "62221234", "cr_qzkdmwbtaeyhrnxfcgps"),
        with_ref(CardKind::Credit, "62583456", "cr_other"),
    ];
    let legs = [leg_record(
        &w,
        &q,
        &w.code("ICBC"),
        LegState::Answered,
        cards.clone(),
    )];
    // Sealed with the cards: the envelope opens to the refs as they came.
    let reported = ReportedBank {
        bank_code: w.code("ICBC"),
        status: BankStatus::Responded,
        inquiry_id: legs[0].inquiry_id.clone(),
        answer: None,
    };
    assert_eq!(
        body::open_answer(&w.opener(), &q, &reported, &legs[0].cards[0]).unwrap(),
        cards
    );
    let r = build(&w, &q, &legs, T0, T0 + TimeDelta::days(7));
    assert_eq!(r.cards.len(), 2);
    let json = serde_json::to_string(&r).unwrap();
    assert!(
        !json.contains("card_ref") && !json.contains("cr_"),
        "the app contract has no card_ref: {json}"
    );
}

/// The largest report the rules allow at national size (decision 123): 500 banks, each
/// answering the most cards an answer may carry (`bank::answer::MAX_CARDS`), each card
/// with the longest `card_ref`. One leg's sealed answer fits its item with room to
/// spare; the sealed report does not fit one item (the DynamoDB adapter stores it in
/// parts) and the rendered report is megabytes.
#[tokio::test]
async fn the_largest_national_report_is_measured_against_the_item_limit() {
    use crate::bank::answer::MAX_CARDS;
    use crate::report::paging::{self, CursorKey, CursorScope, Position, MAX_PAGE_CARDS};
    const ITEM_LIMIT: usize = 400 * 1024;
    // Lambda's synchronous response payload limit.
    const RESPONSE_LIMIT: usize = 6 * 1024 * 1024;
    let w = world();
    let letter = |i: usize| char::from(b'A' + (i % 26) as u8);
    let code = |i: usize| format!("Z{}{}{}", letter(i / 676), letter(i / 26), letter(i));
    let banks: Vec<BankCode> = (0..500)
        .map(|i| serde_json::from_value(json!(code(i))).unwrap())
        .collect();
    let mut q = query_record(&w, &["ICBC"]);
    q.banks = banks.clone();
    let cards: Vec<AnsweredCard> = (0..MAX_CARDS)
        .map(|i| AnsweredCard {
            kind: if i % 2 == 0 {
                CardKind::Debit
            } else {
                CardKind::Credit
            },
            first4: FourDigits::parse("6222").unwrap(),
            last4: FourDigits::parse("1234").unwrap(),
            card_ref: Some(
                CardRef::parse(&format!("{}{}", "r".repeat(CardRef::MAX_LEN - 4), code(i)))
                    .unwrap(),
            ),
        })
        .collect();
    let legs: Vec<LegRecord> = banks
        .iter()
        .map(|b| leg_record(&w, &q, b, LegState::Answered, cards.clone()))
        .collect();
    let leg_bytes = serde_json::to_vec(&legs[0]).unwrap().len();
    assert!(
        leg_bytes < ITEM_LIMIT / 4,
        "one leg's answer at {MAX_CARDS} cards: {leg_bytes} bytes"
    );

    let content = body::content(&q, &legs);
    let plain = serde_json::to_vec(&content).unwrap();
    let binding = crate::report::crypto::Binding::Report {
        query: &q.query_id,
        user: &q.user_id,
        generated_at: T0,
        expires_at: T0 + TimeDelta::days(7),
    };
    let sealed = w.sealer.seal(&binding, &plain).unwrap();
    let stored = sealed.ciphertext.len();
    // Every answer is in the report: it grows with banks × cards, far past one item.
    assert!(stored > 500 * leg_bytes, "{stored} bytes for 500 answers");
    assert!(stored > ITEM_LIMIT, "{stored}");
    let report = build(&w, &q, &legs, T0, T0 + TimeDelta::days(7));
    assert_eq!(report.summary.total_cards as usize, 500 * MAX_CARDS);
    let rendered = serde_json::to_vec(&report).unwrap().len();
    // Whole, it would be over Lambda's response limit: hence the pages.
    assert!(rendered > RESPONSE_LIMIT, "{rendered}");

    // Each response is a page: the whole summary and at most MAX_PAGE_CARDS cards, with
    // a cursor as long as any (the largest offset and time).
    let key = CursorKey::new([1; 32]);
    let scope = CursorScope {
        user: &q.user_id,
        query: &q.query_id,
        generated_at: T0,
    };
    let valid_until = T0 + TimeDelta::days(7);
    let (mut offset, mut pages, mut largest, mut cards) = (0, 0, 0, Vec::new());
    loop {
        let at = Position {
            offset,
            valid_until,
        };
        let page = paging::page(report.clone(), at, MAX_PAGE_CARDS, |next| {
            key.issue(&scope, next)
        });
        let bytes = serde_json::to_vec(&page).unwrap().len();
        assert!(bytes < RESPONSE_LIMIT, "page at {offset}: {bytes} B");
        assert_eq!(page.report.summary, report.summary);
        largest = largest.max(bytes);
        pages += 1;
        cards.extend(page.report.cards);
        let Some(next) = page.next_cursor else { break };
        offset = key.check(&scope, &next, T0).unwrap().offset;
    }
    assert_eq!(cards, report.cards, "the pages hold every card once");
    assert_eq!(pages, (500 * MAX_CARDS).div_ceil(MAX_PAGE_CARDS as usize));
    // Far under the limit: a tenth of it leaves room for longer bank names.
    assert!(largest < RESPONSE_LIMIT / 10, "{largest}");
    eprintln!(
        "largest national report: leg answer {leg_bytes} B, sealed report {stored} B \
         ({} items of 300 KiB), rendered whole {rendered} B, as {pages} pages of \
         {MAX_PAGE_CARDS} cards the largest response {largest} B",
        stored.div_ceil(300 * 1024)
    );
}
