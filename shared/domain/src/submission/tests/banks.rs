//! The chosen banks: known, upper case, each once, at least one.

use super::*;

#[tokio::test]
async fn empty_duplicate_unknown_or_lower_case_banks_are_refused() {
    let fx = Fx::new();
    let c = fx.code(ALICE).await;
    let face = fx.face(ALICE);
    let cases: [&[&str]; 5] = [
        &[],
        &["ICBC", "ICBC"],
        &["ICBC", "HSBC"],
        &["icbc"],
        &["CMB", "BOC", "CMB"],
    ];
    for (i, banks) in cases.into_iter().enumerate() {
        let raw = body(banks, &c.id, &c.code, &face, PASSWORD);
        assert_err!(
            fx.submit(ALICE, Some(&format!("banks-{i}")), &raw).await,
            ServiceError::InvalidBanks(_)
        );
        fx.assert_nothing_recorded(ALICE);
    }
    // The refusals consumed neither the code nor the face token.
    let raw = body(&["ICBC"], &c.id, &c.code, &face, PASSWORD);
    assert_eq!(fx.submit(ALICE, Some("ok"), &raw).await.unwrap().0, 202);
}
