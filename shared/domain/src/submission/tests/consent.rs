//! Consent: given, to the current agreement.

use super::*;

#[tokio::test]
async fn consent_must_be_given_to_the_current_agreement() {
    let fx = Fx::new();
    let raw = fx.good_body(ALICE).await;

    let mut refused = raw.clone();
    refused["consent"]["accepted"] = json!(false);
    assert_err!(
        fx.submit(ALICE, Some("c1"), &refused).await,
        ServiceError::ConsentRequired
    );
    fx.assert_nothing_recorded(ALICE);

    for old in ["2025-01", "", "2026-11 "] {
        let mut outdated = raw.clone();
        outdated["consent"]["agreement_version"] = json!(old);
        assert_err!(
            fx.submit(ALICE, Some("c2"), &outdated).await,
            ServiceError::ConsentRequired
        );
        fx.assert_nothing_recorded(ALICE);
    }
    assert_eq!(fx.submit(ALICE, Some("c3"), &raw).await.unwrap().0, 202);
}
