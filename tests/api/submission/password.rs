//! The payment password: five wrong ones lock it, and a locked user is refused even
//! with the right one.

use super::*;

#[tokio::test]
async fn five_wrong_passwords_lock_the_payment_password() {
    let api = Api::get().await;
    let user = held_user(&api).await;
    let p = Proofs::new(&api, &user, "SUBMIT_QUERY").await;
    let key = new_key();
    let state_key = |attr: &str| ("STATE".to_owned(), attr.to_owned());

    for attempt in 1..=5u64 {
        let f = face(&api, &user);
        let mut req = p.submission(&f);
        req["payment_password"] = json!(WRONG_PASSWORD);
        let before = api.snapshot(&user).await;
        let version = state_version(&before);
        let reply = submit(&api, &user, &key, &req).await;
        let after = api.snapshot(&user).await;
        // Each comparison took one of the code's attempts first, and a password slot.
        let code_attempt = (
            (
                format!("VERIF#{}", p.verification_id),
                "attempts".to_owned(),
            ),
            (n(attempt - 1), n(attempt)),
        );
        // The fifth reservation sets the lock; its failure restarts it from the failure.
        let versions = if attempt < 5 { 1 } else { 2 };
        let mut expected: Changes = [
            (state_key("version"), (n(version), n(version + versions))),
            code_attempt,
        ]
        .into_iter()
        .collect();
        if attempt < 5 {
            assert_error(
                &reply,
                422,
                "PAYMENT_PASSWORD_INVALID",
                &format!("wrong password #{attempt}"),
            );
            expected.insert(state_key("password_failures"), (n(attempt - 1), n(attempt)));
        } else {
            assert_error(&reply, 423, "PAYMENT_PASSWORD_LOCKED", "wrong password #5");
            let until = ts(&body(&reply)["error"]["locked_until"]);
            assert_near(until, now() + TimeDelta::hours(24), "locked_until");
            expected.insert(state_key("password_failures"), (n(4), n(0)));
            expected.insert(
                state_key("password_locked_until"),
                (
                    None,
                    Some(format!("{:?}", AttributeValue::S(timestamp::format(until)))),
                ),
            );
        }
        assert_eq!(
            changes(&before, &after),
            expected,
            "wrong password #{attempt}"
        );
        assert!(!has_query_records(&after));
        assert!(
            !api.nonce_used(&f.nonce).await,
            "wrong password #{attempt}: nonce consumed"
        );
    }

    // Locked: even the right password is refused, and nothing changes.
    let f = face(&api, &user);
    let reply = assert_refused_submission(
        &api,
        &user,
        Some(&key),
        Some(p.submission(&f).to_string()),
        Some(&f.nonce),
        423,
        "PAYMENT_PASSWORD_LOCKED",
        "right password while locked",
    )
    .await;
    assert_near(
        ts(&body(&reply)["error"]["locked_until"]),
        now() + TimeDelta::hours(24),
        "locked_until",
    );
}

#[tokio::test]
async fn a_locked_user_gets_423_even_with_the_right_password() {
    let api = Api::get().await;
    let user = api.new_user(UserKind::Locked).await;
    let p = Proofs::new(&api, &user, "SUBMIT_QUERY").await;
    let stored_until = state_attr(&api.snapshot(&user).await, "password_locked_until")
        .map(|s| timestamp::parse(&unquote(&s)).unwrap())
        .expect("the seeded lock");
    for (what, password) in [
        ("right password", PAYMENT_PASSWORD),
        ("wrong password", WRONG_PASSWORD),
    ] {
        let f = face(&api, &user);
        let mut req = p.submission(&f);
        req["payment_password"] = json!(password);
        let reply = assert_refused_submission(
            &api,
            &user,
            Some(&new_key()),
            Some(req.to_string()),
            Some(&f.nonce),
            423,
            "PAYMENT_PASSWORD_LOCKED",
            what,
        )
        .await;
        assert_eq!(
            ts(&body(&reply)["error"]["locked_until"]),
            stored_until,
            "{what}"
        );
    }
}
