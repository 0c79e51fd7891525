//! One query at a time, and none until the 7-day cooldown ends.

use super::*;

#[tokio::test]
async fn cooldown_ends_exactly_at_next_allowed_at() {
    let fx = Fx::new();
    let t = START + TimeDelta::days(7);
    fx.store.set_state(
        &uid(ALICE),
        UserState {
            next_allowed_at: Some(t),
            ..UserState::default()
        },
    );
    fx.clock.set(t - TimeDelta::seconds(61));
    let c = fx.code(ALICE).await;

    fx.clock.set(t - TimeDelta::seconds(1));
    let raw = body(&["ICBC"], &c.id, &c.code, &fx.face(ALICE), PASSWORD);
    assert_err!(
        fx.submit(ALICE, Some("early"), &raw).await,
        ServiceError::CooldownActive { next_allowed_at } => assert_eq!(next_allowed_at, t)
    );
    fx.assert_nothing_recorded(ALICE);

    fx.clock.set(t);
    let raw = body(&["ICBC"], &c.id, &c.code, &fx.face(ALICE), PASSWORD);
    assert_eq!(
        fx.submit(ALICE, Some("on-time"), &raw).await.unwrap().0,
        202
    );
}

#[tokio::test]
async fn an_active_query_blocks_a_new_one() {
    let fx = Fx::new();
    fx.store.set_state(
        &uid(ALICE),
        UserState {
            active_query_id: Some(QueryId::generate()),
            ..UserState::default()
        },
    );
    let raw = fx.good_body(ALICE).await;
    assert_err!(
        fx.submit(ALICE, Some("busy"), &raw).await,
        ServiceError::QueryInProgress
    );
    assert!(fx.store.queries().is_empty());
    assert!(fx.store.consents().is_empty());

    // And after a successful submission, a second one with a new key and fresh proofs.
    let fx = Fx::new();
    let raw = fx.good_body(ALICE).await;
    assert_eq!(fx.submit(ALICE, Some("one"), &raw).await.unwrap().0, 202);
    fx.clock.advance(TimeDelta::seconds(60));
    let raw = fx.good_body(ALICE).await;
    assert_err!(
        fx.submit(ALICE, Some("two"), &raw).await,
        ServiceError::QueryInProgress
    );
    assert_eq!(fx.store.queries().len(), 1);
}
