//! The report in pages: the first after a step-up, the rest by cursor with no second
//! code; every page holds the whole summary; a cursor works for its user and report only,
//! and not past the view's authorization, the report's expiry or its deletion.

use futures::future::join_all;

use super::super::paging::{ReportPage, CURSOR_LIFETIME, MAX_PAGE_CARDS};
use super::super::view::ReportAccess;
use super::*;

/// u1's query to ICBC (3 cards), CMB (2) and ABC (none), reported now.
async fn five_cards(w: &World, uid: &str) -> QueryId {
    let q = w.submit(uid, &["ICBC", "CMB", "ABC"]).await;
    let icbc = ["62221234", "62583456", "62225678"];
    w.answer(
        &q,
        "ICBC",
        icbc.iter().map(|d| card(CardKind::Debit, d)).collect(),
    )
    .await;
    let cmb = ["62141111", "62142222"];
    w.answer(
        &q,
        "CMB",
        cmb.iter().map(|d| card(CardKind::Credit, d)).collect(),
    )
    .await;
    w.answer(&q, "ABC", vec![]).await;
    assert_eq!(
        w.aggregator.aggregate(&q).await.unwrap(),
        AggregateOutcome::Published
    );
    q
}

impl World {
    async fn page(
        &self,
        uid: &str,
        q: &QueryId,
        access: ReportAccess,
        size: Option<u32>,
    ) -> Result<ReportPage, ServiceError> {
        self.view
            .report_page(&user(uid), &q.to_string(), access, size)
            .await
    }

    async fn first_page(&self, uid: &str, q: &QueryId, size: u32) -> ReportPage {
        let step = self.view_code_step(uid).await;
        self.page(uid, q, ReportAccess::StepUp(step), Some(size))
            .await
            .unwrap()
    }

    async fn view_count(&self, uid: &str, q: &QueryId) -> u64 {
        let detail = self.view.detail(&user(uid), &q.to_string()).await.unwrap();
        detail.record.view_count
    }
}

fn cursor(page: &ReportPage) -> ReportAccess {
    ReportAccess::Cursor(page.next_cursor.clone().expect("a next page"))
}

#[tokio::test]
async fn the_cards_come_in_pages_each_with_the_whole_summary_after_one_step_up() {
    let w = world();
    let q = five_cards(&w, "u1").await;
    let stored = w.stored(&q).await.unwrap();
    let whole = w.open(&stored).await;
    assert_eq!(whole.cards.len(), 5);

    let mut page = w.first_page("u1", &q, 2).await;
    let mut pages = vec![page.report.cards.len()];
    let mut cards = page.report.cards.clone();
    let valid_until = w.now() + CURSOR_LIFETIME;
    assert_eq!(page.cursor_expires_at, Some(valid_until));
    while page.next_cursor.is_some() {
        // Later pages take no code: the step-up above was the view.
        w.clock.advance(TimeDelta::minutes(1));
        page = w.page("u1", &q, cursor(&page), Some(2)).await.unwrap();
        assert_eq!(page.report.summary, whole.summary, "the whole summary");
        assert_eq!(page.report.notices, whole.notices);
        assert_eq!(page.report.query_id, whole.query_id);
        pages.push(page.report.cards.len());
        cards.extend(page.report.cards.clone());
        if page.next_cursor.is_some() {
            // The view's authorization is not extended by reading on.
            assert_eq!(page.cursor_expires_at, Some(valid_until));
        }
    }
    assert_eq!(pages, [2, 2, 1]);
    assert_eq!(cards, whole.cards, "every card once, in the report's order");
    assert_eq!(page.cursor_expires_at, None);
    assert_eq!(
        w.view_count("u1", &q).await,
        1,
        "one view, however many pages"
    );

    // The page size may change along the way; no size means the most.
    let first = w.first_page("u1", &q, 1).await;
    let rest = w.page("u1", &q, cursor(&first), None).await.unwrap();
    assert_eq!(rest.report.cards, whole.cards[1..]);
    assert_eq!(rest.next_cursor, None);
    // The contract's names.
    let json = serde_json::to_value(&first).unwrap();
    assert_eq!(json["cards"].as_array().unwrap().len(), 1);
    assert!(json["next_cursor"].is_string(), "{json}");
    assert!(json["cursor_expires_at"].is_string(), "{json}");
    assert_eq!(json["summary"]["total_cards"], 5);
}

#[tokio::test]
async fn a_report_within_one_page_has_no_cursor() {
    let w = world();
    let q = five_cards(&w, "u1").await;
    let page = w.first_page("u1", &q, MAX_PAGE_CARDS).await;
    assert_eq!(page.report.cards.len(), 5);
    assert_eq!((page.next_cursor, page.cursor_expires_at), (None, None));
    let exact = w.first_page("u1", &q, 5).await;
    assert_eq!(exact.next_cursor, None, "no empty last page");
}

#[tokio::test]
async fn page_sizes_outside_one_to_a_thousand_are_refused_before_the_step_up() {
    let w = world();
    let q = five_cards(&w, "u1").await;
    let step = w.view_code_step("u1").await;
    for bad in [0, MAX_PAGE_CARDS + 1] {
        let refused = w
            .page("u1", &q, ReportAccess::StepUp(same_proof(&step)), Some(bad))
            .await;
        assert!(matches!(refused, Err(ServiceError::Malformed(_))), "{bad}");
    }
    // The code was not used up by the refusals.
    w.page("u1", &q, ReportAccess::StepUp(step), Some(2))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_cursor_ends_with_the_views_authorization() {
    let w = world();
    let q = five_cards(&w, "u1").await;
    let first = w.first_page("u1", &q, 2).await;
    w.clock.advance(CURSOR_LIFETIME - TimeDelta::seconds(1));
    w.page("u1", &q, cursor(&first), Some(2)).await.unwrap();
    w.clock.advance(TimeDelta::seconds(1));
    assert!(matches!(
        w.page("u1", &q, cursor(&first), Some(2)).await,
        Err(ServiceError::CursorExpired)
    ));
    // A fresh step-up is a fresh view with cursors of its own.
    let again = w.first_page("u1", &q, 2).await;
    w.page("u1", &q, cursor(&again), Some(2)).await.unwrap();
}

#[tokio::test]
async fn a_cursor_does_not_outlive_the_report() {
    let w = world();
    let (q, expires_at) = w.reported_expiring("u1").await;
    // Step up two minutes before the report expires: its cursors end with it.
    w.clock.set(expires_at - TimeDelta::minutes(2));
    let first = w.first_page("u1", &q, 1).await;
    assert_eq!(first.cursor_expires_at, Some(expires_at));
    w.clock.set(expires_at);
    assert!(matches!(
        w.page("u1", &q, cursor(&first), Some(1)).await,
        Err(ServiceError::ReportExpired { .. })
    ));

    // Deleted by the user: the cursor of an earlier view reads nothing.
    let w = world();
    let q = w.reported("u1").await;
    let first = w.first_page("u1", &q, 1).await;
    let vid = w.sms_code("u1", Purpose::DeleteReport, "975310").await;
    w.view
        .delete(&user("u1"), &q.to_string(), code_step(&vid, "975310"))
        .await
        .unwrap();
    assert!(matches!(
        w.page("u1", &q, cursor(&first), Some(1)).await,
        Err(ServiceError::ReportDeleted { .. })
    ));
}

#[tokio::test]
async fn a_cursor_reads_only_its_users_own_report() {
    let w = world();
    let q1 = five_cards(&w, "u1").await;
    let first = w.first_page("u1", &q1, 2).await;
    // Another user with the cursor and the query id: the query is not found for them.
    assert!(matches!(
        w.page("u2", &q1, cursor(&first), Some(2)).await,
        Err(ServiceError::NotFound)
    ));
    // Another user's own report: the cursor is not valid for it.
    let q2 = five_cards(&w, "u2").await;
    assert!(matches!(
        w.page("u2", &q2, cursor(&first), Some(2)).await,
        Err(ServiceError::InvalidCursor)
    ));
    for made_up in ["", "2", "2.9999999999.AAAA", "0.0.0", "../../x"] {
        assert!(
            matches!(
                w.page("u1", &q1, ReportAccess::Cursor(made_up.into()), None)
                    .await,
                Err(ServiceError::InvalidCursor)
            ),
            "{made_up:?}"
        );
    }
    // None of it was a view.
    assert_eq!(w.view_count("u1", &q1).await, 1);
    assert_eq!(w.view_count("u2", &q2).await, 0);
}

#[tokio::test]
async fn twenty_page_reads_at_once_all_get_the_same_page_and_no_view() {
    let w = world();
    let q = five_cards(&w, "u1").await;
    let first = w.first_page("u1", &q, 2).await;
    let c = first.next_cursor.clone().unwrap();
    let reads = (0..20).map(|_| w.page("u1", &q, ReportAccess::Cursor(c.clone()), Some(2)));
    let pages: Vec<ReportPage> = join_all(reads)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let stored = w.stored(&q).await.unwrap();
    let whole = w.open(&stored).await;
    for p in &pages {
        assert_eq!(p.report.cards, whole.cards[2..4]);
        assert_eq!(p.next_cursor, pages[0].next_cursor);
    }
    assert_eq!(w.view_count("u1", &q).await, 1);
}
