//! `ReportStore`: a report is published once, releasing the user's lock in the same
//! write; one sender at a time may send its notice; expiry and the due index; the
//! user's deletion (report and legs at once, once, final).

use chrono::{DateTime, TimeDelta, Utc};
use shared::model::ids::QueryId;
use shared::model::sealed::Sealed;
use shared::model::step_up::StepUpMethod;
use shared::records::{
    DueWork, Publication, PublishOutcome, QueryPhase, ReportView, StoredReport, UserState,
};

use shared::ports::Settlement;
use shared::records::LegState;

use super::{at_once, bank, contract, many_banks, prepared_for, submitted, Store, World, BANKS};

contract!(
    a_report_is_published_once_and_releases_the_lock,
    a_query_to_500_banks_publishes_clears_every_answer_and_deletes_every_leg,
    a_report_of_megabytes_reads_back_whole_and_expires_or_is_deleted_whole,
    a_report_of_kilobytes_is_stored_beside_its_item_and_goes_with_it,
    twenty_parallel_notice_claims_let_one_sender_through,
    a_notice_claim_given_back_unsent_lets_one_next_sender_through_at_once,
    an_expired_report_is_gone_and_its_query_expired,
    a_deleted_report_takes_its_legs_stays_deleted_and_leaves_the_lock_alone,
    twenty_parallel_deletions_delete_once,
    twenty_parallel_views_are_all_logged_and_the_log_keeps_fifty,
    twenty_parallel_clears_empty_the_answers_and_never_recreate_a_leg,
);

/// What aggregation writes for `q`, from the user's state as it is now.
pub(super) async fn publication<S: Store>(
    w: &World<S>,
    q: QueryId,
    at: DateTime<Utc>,
) -> Publication {
    let state = w.store.user_state(&w.user).await.unwrap();
    Publication {
        report: StoredReport {
            query_id: q,
            user_id: w.user.clone(),
            sealed: Sealed {
                key_id: "k1".into(),
                enc: "ZW5j".into(),
                ciphertext: "Y2lwaGVy".into(),
            },
            generated_at: at,
            expires_at: at + TimeDelta::days(7),
        },
        state: UserState {
            active_query_id: None,
            next_allowed_at: Some(at + TimeDelta::days(7)),
            ..state.clone()
        },
        expected_state_version: state.version,
    }
}

async fn a_report_is_published_once_and_releases_the_lock<S: Store>(w: &World<S>) {
    let store = &*w.store;
    let q = submitted(store, &w.user, w.now).await;
    let at = w.now + TimeDelta::hours(1);
    // The user's state moved on since it was read: nothing is written.
    let mut stale = publication(w, q, at).await;
    stale.expected_state_version += 1;
    assert_eq!(
        store.publish(&stale).await.unwrap(),
        PublishOutcome::StateChanged
    );
    assert!(store.report(&q).await.unwrap().is_none());
    assert_eq!(
        store.query(&q).await.unwrap().unwrap().phase,
        QueryPhase::Collecting
    );

    let p = publication(w, q, at).await;
    let outcomes = at_once(10, |_| store.publish(&p)).await;
    let published = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(PublishOutcome::Published)))
        .count();
    assert_eq!(published, 1, "{outcomes:?}");
    assert_eq!(store.report(&q).await.unwrap(), Some(p.report.clone()));
    let query = store.query(&q).await.unwrap().unwrap();
    assert_eq!(query.phase, QueryPhase::Reported);
    assert_eq!(query.report_generated_at, Some(at));
    assert_eq!(query.report_expires_at, Some(at + TimeDelta::days(7)));
    let state = store.user_state(&w.user).await.unwrap();
    assert_eq!(state.active_query_id, None);
    assert_eq!(state.next_allowed_at, Some(at + TimeDelta::days(7)));
    assert_eq!(state.version, p.expected_state_version + 1);
    // Once reported, a publication of the same query is refused as closed.
    let again = publication(w, q, at).await;
    assert_eq!(
        store.publish(&again).await.unwrap(),
        PublishOutcome::AlreadyClosed
    );
    let queries = store.user_queries(&w.user).await.unwrap();
    assert_eq!(
        queries.iter().map(|q| q.query_id).collect::<Vec<_>>(),
        vec![q]
    );
}

async fn twenty_parallel_notice_claims_let_one_sender_through<S: Store>(w: &World<S>) {
    let store = &*w.store;
    let q = submitted(store, &w.user, w.now).await;
    // Not reported yet: no notice to send.
    assert!(!store
        .claim_notice(&q, w.now, TimeDelta::minutes(2))
        .await
        .unwrap());
    store
        .publish(&publication(w, q, w.now).await)
        .await
        .unwrap();
    assert!(store
        .due(w.now, 100)
        .await
        .unwrap()
        .contains(&DueWork::Notify(q)));
    let now = w.now;
    let lease = TimeDelta::minutes(2);
    let claims = at_once(20, |_| store.claim_notice(&q, now, lease)).await;
    assert_eq!(claims.iter().filter(|c| *c.as_ref().unwrap()).count(), 1);
    // Within the lease nobody else; after it, one again (the first sender died).
    assert!(!store.claim_notice(&q, now + lease, lease).await.unwrap());
    let later = at_once(20, |_| {
        store.claim_notice(&q, now + lease + TimeDelta::seconds(1), lease)
    })
    .await;
    assert_eq!(later.iter().filter(|c| *c.as_ref().unwrap()).count(), 1);
    // Once sent, never again, and no longer due.
    let sent = now + lease + TimeDelta::seconds(2);
    store.notice_sent(&q, sent).await.unwrap();
    let much_later = sent + TimeDelta::hours(1);
    assert!(!store.claim_notice(&q, much_later, lease).await.unwrap());
    assert_eq!(
        store.query(&q).await.unwrap().unwrap().notified_at,
        Some(sent)
    );
    assert!(!store
        .due(much_later, 100)
        .await
        .unwrap()
        .contains(&DueWork::Notify(q)));
}

async fn a_notice_claim_given_back_unsent_lets_one_next_sender_through_at_once<S: Store>(
    w: &World<S>,
) {
    let store = &*w.store;
    let q = submitted(store, &w.user, w.now).await;
    store
        .publish(&publication(w, q, w.now).await)
        .await
        .unwrap();
    let lease = TimeDelta::minutes(2);
    let claimed = w.now;
    assert!(store.claim_notice(&q, claimed, lease).await.unwrap());
    // Another claim's instant gives nothing back.
    let soon = claimed + TimeDelta::seconds(1);
    store
        .release_notice(&q, claimed - TimeDelta::seconds(1))
        .await
        .unwrap();
    assert!(!store.claim_notice(&q, soon, lease).await.unwrap());
    // Its own: the next senders need not wait out the lease, and one of them gets it.
    store.release_notice(&q, claimed).await.unwrap();
    let claims = at_once(20, |_| store.claim_notice(&q, soon, lease)).await;
    assert_eq!(claims.iter().filter(|c| *c.as_ref().unwrap()).count(), 1);
    assert!(store
        .due(soon, 100)
        .await
        .unwrap()
        .contains(&DueWork::Notify(q)));
    // Once sent, a late give-back changes nothing: never claimed again, not due.
    let sent = soon + TimeDelta::seconds(1);
    store.notice_sent(&q, sent).await.unwrap();
    store.release_notice(&q, soon).await.unwrap();
    let later = sent + TimeDelta::seconds(1);
    assert!(!store.claim_notice(&q, later, lease).await.unwrap());
    assert_eq!(
        store.query(&q).await.unwrap().unwrap().notified_at,
        Some(sent)
    );
    assert!(!store
        .due(later, 100)
        .await
        .unwrap()
        .contains(&DueWork::Notify(q)));
}

async fn an_expired_report_is_gone_and_its_query_expired<S: Store>(w: &World<S>) {
    let store = &*w.store;
    let q = submitted(store, &w.user, w.now).await;
    let query = store.query(&q).await.unwrap().unwrap();
    // The deadline falls due at collect_until, not before.
    let deadline = DueWork::Deadline(q);
    let early = store
        .due(query.collect_until - TimeDelta::seconds(1), 100)
        .await
        .unwrap();
    assert!(!early.contains(&deadline), "{early:?}");
    let due = store.due(query.collect_until, 100).await.unwrap();
    assert!(due.contains(&deadline), "{due:?}");

    let p = publication(w, q, w.now).await;
    store.publish(&p).await.unwrap();
    store.notice_sent(&q, w.now).await.unwrap();
    let expiry = DueWork::Expiry(q);
    let expires = p.report.expires_at;
    let before = store
        .due(expires - TimeDelta::seconds(1), 100)
        .await
        .unwrap();
    assert!(!before.contains(&expiry), "{before:?}");
    let due = store.due(expires, 100).await.unwrap();
    assert!(due.contains(&expiry), "{due:?}");
    store.expire(&q).await.unwrap();
    assert!(store.report(&q).await.unwrap().is_none());
    assert_eq!(
        store.query(&q).await.unwrap().unwrap().phase,
        QueryPhase::Expired
    );
    let after = store.due(expires, 100).await.unwrap();
    assert!(!after.contains(&expiry), "{after:?}");
}

async fn a_deleted_report_takes_its_legs_stays_deleted_and_leaves_the_lock_alone<S: Store>(
    w: &World<S>,
) {
    let store = &*w.store;
    let q = submitted(store, &w.user, w.now).await;
    // Not reported yet: nothing to delete, nothing written.
    assert!(!store.delete_report(&q, w.now).await.unwrap());
    assert_eq!(store.legs(&q).await.unwrap().len(), BANKS.len());

    let p = publication(w, q, w.now).await;
    store.publish(&p).await.unwrap();
    let state = store.user_state(&w.user).await.unwrap();
    let at = w.now + TimeDelta::hours(1);
    assert!(store.delete_report(&q, at).await.unwrap());
    assert!(store.report(&q).await.unwrap().is_none());
    assert!(store.legs(&q).await.unwrap().is_empty());
    let query = store.query(&q).await.unwrap().unwrap();
    assert_eq!(query.phase, QueryPhase::Deleted);
    assert_eq!(query.report_deleted_at, Some(at));
    assert_eq!(query.report_generated_at, Some(w.now));
    // The cooldown (the user's state) is untouched.
    assert_eq!(store.user_state(&w.user).await.unwrap(), state);
    // Nothing of it is due any more: no expiry, no notice.
    let due = store.due(p.report.expires_at, 100).await.unwrap();
    assert!(
        !due.contains(&DueWork::Expiry(q)) && !due.contains(&DueWork::Notify(q)),
        "{due:?}"
    );
    // Deleting again writes nothing; expiry does not turn it into EXPIRED.
    assert!(!store
        .delete_report(&q, at + TimeDelta::hours(1))
        .await
        .unwrap());
    store.expire(&q).await.unwrap();
    let query = store.query(&q).await.unwrap().unwrap();
    assert_eq!(query.phase, QueryPhase::Deleted);
    assert_eq!(query.report_deleted_at, Some(at));
    // Nor can an expired report be deleted.
    let q2 = submitted(store, &w.user, w.now).await;
    store
        .publish(&publication(w, q2, w.now).await)
        .await
        .unwrap();
    store.expire(&q2).await.unwrap();
    assert!(!store.delete_report(&q2, at).await.unwrap());
    assert_eq!(
        store.query(&q2).await.unwrap().unwrap().phase,
        QueryPhase::Expired
    );
}

async fn twenty_parallel_deletions_delete_once<S: Store>(w: &World<S>) {
    let store = &*w.store;
    let q = submitted(store, &w.user, w.now).await;
    store
        .publish(&publication(w, q, w.now).await)
        .await
        .unwrap();
    let at = w.now;
    let outcomes = at_once(20, |_| store.delete_report(&q, at)).await;
    let deleted = outcomes.iter().filter(|o| matches!(o, Ok(true))).count();
    assert_eq!(deleted, 1, "{outcomes:?}");
    assert!(outcomes.iter().all(|o| o.is_ok()), "{outcomes:?}");
    assert!(store.report(&q).await.unwrap().is_none());
    assert!(store.legs(&q).await.unwrap().is_empty());
    assert_eq!(
        store.query(&q).await.unwrap().unwrap().phase,
        QueryPhase::Deleted
    );
}

async fn twenty_parallel_views_are_all_logged_and_the_log_keeps_fifty<S: Store>(w: &World<S>) {
    let store = &*w.store;
    let q = submitted(store, &w.user, w.now).await;
    store
        .publish(&publication(w, q, w.now).await)
        .await
        .unwrap();
    let view = |i: usize| ReportView {
        at: w.now + TimeDelta::seconds(i as i64),
        method: if i.is_multiple_of(2) {
            StepUpMethod::Sms
        } else {
            StepUpMethod::Face
        },
    };
    let views: Vec<ReportView> = (0..20).map(view).collect();
    let outcomes = at_once(20, |i| store.record_view(&q, &views[i])).await;
    assert!(outcomes.iter().all(|o| o.is_ok()), "{outcomes:?}");
    let query = store.query(&q).await.unwrap().unwrap();
    assert_eq!(query.views_total, 20, "no view lost");
    let mut logged = query.views.clone();
    logged.sort_by_key(|v| v.at);
    assert_eq!(logged, views);

    // Sequential views after them: the log is the latest 50, oldest first.
    for i in 20..60 {
        store.record_view(&q, &view(i)).await.unwrap();
    }
    let query = store.query(&q).await.unwrap().unwrap();
    assert_eq!(query.views_total, 60);
    assert_eq!(query.views.len(), 50);
    // The 20 parallel ones went in in whatever order they arrived: the 10 oldest of
    // those left, the 40 later ones are all there in order.
    assert_eq!(
        query.views[10..],
        (20..60).map(view).collect::<Vec<_>>()[..]
    );
    assert!(query.views[..10].iter().all(|v| views.contains(v)));
    assert_eq!(query.last_viewed_at, Some(view(59).at));
}

/// 500 answered legs, each holding a sealed answer of a few KB (together past the 1 MB
/// one page of a DynamoDB query returns, so reading them takes every page): the notice
/// step clears all 500 answers after publishing, and deleting removes all 500 legs (more
/// than one transaction holds).
async fn a_query_to_500_banks_publishes_clears_every_answer_and_deletes_every_leg<S: Store>(
    w: &World<S>,
) {
    use futures::StreamExt;
    use shared::ports::{SettleOutcome, Settlement};
    use shared::records::LegState;

    let store = &*w.store;
    let banks = many_banks(500);
    let sub = prepared_for(store, &w.user, w.now, &banks).await;
    store.submit(&sub).await.unwrap();
    store.ensure_legs(&sub.query).await.unwrap();
    let q = sub.query.query_id;
    let settled: Vec<_> = futures::stream::iter(banks.iter().map(|bank| {
        let st = Settlement {
            state: LegState::Answered,
            failure: None,
            sealed: Some(Sealed {
                key_id: "k1".into(),
                enc: "ZW5j".into(),
                ciphertext: "Q".repeat(3000),
            }),
            answer_digest: Some(format!("d-{bank}")),
            at: w.now,
        };
        async move { store.settle(&q, bank, &st, None).await }
    }))
    .buffer_unordered(25)
    .collect()
    .await;
    assert!(settled
        .iter()
        .all(|o| matches!(o, Ok(SettleOutcome::Settled))));
    let legs = store.legs(&q).await.unwrap();
    assert_eq!(legs.len(), 500, "every page read");
    assert!(legs.iter().all(|l| l.cards.len() == 1));
    assert_eq!(w.unsettled(q).await, Some(0));

    let p = publication(w, q, w.now).await;
    assert_eq!(store.publish(&p).await.unwrap(), PublishOutcome::Published);
    store.clear_answers(&q, &banks).await.unwrap();
    let legs = store.legs(&q).await.unwrap();
    assert_eq!(legs.len(), 500);
    assert!(
        legs.iter()
            .all(|l| l.cards.is_empty() && l.answer_digest.is_none()),
        "every answer cleared"
    );
    assert!(store.delete_report(&q, w.now).await.unwrap());
    assert!(
        store.legs(&q).await.unwrap().is_empty(),
        "every leg deleted"
    );
    assert_eq!(
        store.query(&q).await.unwrap().unwrap().phase,
        QueryPhase::Deleted
    );
}

/// The largest report a query to 500 banks can make (decision 123) is megabytes, past
/// the 400 KB an item holds: it is stored whole, read back byte for byte, and expiry or
/// deletion removes all of it.
async fn a_report_of_megabytes_reads_back_whole_and_expires_or_is_deleted_whole<S: Store>(
    w: &World<S>,
) {
    let store = &*w.store;
    // Base64 text of 2.5 MB that is not one repeated chunk, so an order mix-up shows.
    let big: String = (0..2_500_000u32)
        .map(|i| {
            char::from(
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
                    [((i / 7919) % 64) as usize],
            )
        })
        .collect();
    for delete in [false, true] {
        let q = submitted(store, &w.user, w.now).await;
        let mut p = publication(w, q, w.now).await;
        p.report.sealed.ciphertext = big.clone();
        assert_eq!(store.publish(&p).await.unwrap(), PublishOutcome::Published);
        let back = store.report(&q).await.unwrap().expect("the report");
        assert_eq!(back, p.report, "read back whole");
        if let Some(n) = w.items_of(q, "REPORTPART#").await {
            assert_eq!(n, 9, "2.5 MB in parts of 300 KB");
        }
        expire_or_delete_whole(w, q, delete).await;
    }
}

/// Deletes (by the user) or expires `q`'s report and checks that no item of it is left.
async fn expire_or_delete_whole<S: Store>(w: &World<S>, q: QueryId, delete: bool) {
    let store = &*w.store;
    if delete {
        assert!(store.delete_report(&q, w.now).await.unwrap());
    } else {
        store.expire(&q).await.unwrap();
    }
    assert!(store.report(&q).await.unwrap().is_none());
    if let Some(n) = w.items_of(q, "REPORT").await {
        assert_eq!(n, 0, "no report item or part is left");
    }
}

/// A usual report (16 banks: tens of KB) keeps its ciphertext beside the report item,
/// out of the publication's transaction (decision 146); it reads back whole, and expiry
/// and deletion take all of it, a losing publication's part included.
async fn a_report_of_kilobytes_is_stored_beside_its_item_and_goes_with_it<S: Store>(w: &World<S>) {
    let store = &*w.store;
    let text: String = (0..40_000u32)
        .map(|i| {
            char::from(
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
                    [(i % 61) as usize],
            )
        })
        .collect();
    for delete in [false, true] {
        let q = submitted(store, &w.user, w.now).await;
        let mut p = publication(w, q, w.now).await;
        p.report.sealed.ciphertext = text.clone();
        assert_eq!(store.publish(&p).await.unwrap(), PublishOutcome::Published);
        assert_eq!(store.report(&q).await.unwrap(), Some(p.report.clone()));
        if let Some(n) = w.items_of(q, "REPORTPART#").await {
            assert_eq!(n, 1, "40 KB in one part");
        }
        // Lost by the other publication of a race: its parts are never read.
        let mut loser = publication(w, q, w.now).await;
        loser.report.sealed.ciphertext = text.chars().rev().collect();
        assert_eq!(
            store.publish(&loser).await.unwrap(),
            PublishOutcome::AlreadyClosed
        );
        assert_eq!(store.report(&q).await.unwrap(), Some(p.report.clone()));
        expire_or_delete_whole(w, q, delete).await;
    }
}

/// Twenty notice steps clearing the answers at once: every answer goes, every outcome
/// stays, and a deleted report's legs are never recreated.
async fn twenty_parallel_clears_empty_the_answers_and_never_recreate_a_leg<S: Store>(w: &World<S>) {
    let store = &*w.store;
    let q = submitted(store, &w.user, w.now).await;
    let answered = Settlement {
        state: LegState::Answered,
        failure: None,
        sealed: Some(Sealed {
            key_id: "k1".into(),
            enc: "ZW5j".into(),
            ciphertext: "Y2FyZHM".into(),
        }),
        answer_digest: Some("d1".into()),
        at: w.now,
    };
    store
        .settle(&q, &bank("ICBC"), &answered, None)
        .await
        .unwrap();
    let leg = store.leg(&q, &bank("ICBC")).await.unwrap().unwrap();
    assert!(!leg.cards.is_empty() && leg.answer_digest.is_some());
    store
        .publish(&publication(w, q, w.now).await)
        .await
        .unwrap();

    let banks: Vec<_> = BANKS.iter().map(|b| bank(b)).collect();
    let outcomes = at_once(20, |_| store.clear_answers(&q, &banks)).await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    let legs = store.legs(&q).await.unwrap();
    assert_eq!(legs.len(), BANKS.len());
    for leg in &legs {
        assert!(
            leg.cards.is_empty() && leg.answer_digest.is_none(),
            "{leg:?}"
        );
    }
    let icbc = legs.iter().find(|l| l.bank == bank("ICBC")).unwrap();
    assert_eq!(icbc.state, LegState::Answered, "the outcome stays");

    // After the user's deletion the legs are gone, and stay gone.
    assert!(store.delete_report(&q, w.now).await.unwrap());
    store.clear_answers(&q, &banks).await.unwrap();
    assert!(store.legs(&q).await.unwrap().is_empty());
}
