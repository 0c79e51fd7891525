//! `POST /v1/card-queries` accepted: the happy path, the idempotent retry, key reuse,
//! one query at a time, the cooldown, and the choices a submission must make (banks,
//! consent).

use super::*;

#[tokio::test]
async fn happy_path_then_idempotent_retry_key_reuse_and_query_in_progress() {
    let api = Api::get().await;
    let user = held_user(&api).await;
    let token = api.token(&user);

    let banks = api.get_json(BANKS, &token).await;
    assert_eq!(banks.status, 200, "{banks:?}");
    let codes: BTreeSet<&str> = body(&banks)["banks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["code"].as_str().unwrap())
        .collect();
    let expected: BTreeSet<&str> = [
        "ICBC", "ABC", "BOC", "CCB", "BOCOM", "PSBC", "CMB", "SPDB", "CITIC", "CEB", "HXB", "CMBC",
        "CGB", "PAB", "CIB", "CZB",
    ]
    .into_iter()
    .collect();
    assert_eq!(body(&banks)["banks"].as_array().unwrap().len(), 16);
    assert_eq!(codes, expected);
    let icbc = body(&banks)["banks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["code"] == "ICBC")
        .unwrap();
    assert_eq!(icbc["name"], "工商银行");

    let before = api.get_json(ELIGIBILITY, &token).await;
    assert_eq!(before.status, 200, "{before:?}");
    let e = body(&before);
    assert_eq!(e["real_name_verified"], true);
    assert_eq!(e["in_pilot_region"], true);
    assert_eq!(e["active_query_id"], Value::Null);
    assert_eq!(e["next_allowed_at"], Value::Null);
    assert_eq!(e["eligible"], true);
    let agreement = e["agreement_version"].as_str().unwrap().to_owned();

    let sent_before = sms_count(&api, &user).await;
    let created = request_code(&api, &user, "SUBMIT_QUERY").await;
    assert_eq!(created.status, 201, "{created:?}");
    let digits = user.phone.strip_prefix("+86").unwrap();
    assert_eq!(
        body(&created)["masked_phone"],
        format!("{}****{}", &digits[..3], &digits[7..])
    );
    assert_near(
        ts(&body(&created)["expires_at"]),
        now() + TimeDelta::minutes(5),
        "expires_at",
    );
    let verification_id = body(&created)["verification_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let sms = api.sms_to(&user.phone).await;
    assert_eq!(sms.len(), sent_before + 1, "exactly one SMS");
    let text = sms.last().unwrap();
    assert!(
        !text.contains("http") && !text.contains("://"),
        "no link in the SMS: {text}"
    );
    let code = testkit::api::sms_code(text);

    let f = face(&api, &user);
    let req = submission(&agreement, &verification_id, &code, &f);
    let key = new_key();
    let accepted = submit(&api, &user, &key, &req).await;
    assert_eq!(accepted.status, 202, "{accepted:?}");
    let a = body(&accepted).clone();
    assert_eq!(a["status"], "PENDING");
    assert_eq!(
        a["banks"],
        json!(CHOSEN_BANKS),
        "the banks, in the order given"
    );
    let submitted_at = ts(&a["submitted_at"]);
    assert_near(submitted_at, now(), "submitted_at");
    assert_eq!(ts(&a["report_due_by"]), submitted_at + TimeDelta::hours(24));
    let query_id = a["query_id"].as_str().unwrap().to_owned();
    assert!(
        api.nonce_used(&f.nonce).await,
        "the face token's nonce is consumed"
    );

    // Stored together: the query, its consent, the idempotency record, the lock, the
    // used code.
    let stored = api.snapshot(&user).await;
    let find = |pk: &str, sk: &str| {
        stored
            .iter()
            .find(|i| {
                i.get("pk").map(|p| unquote(p)).as_deref() == Some(pk)
                    && i.get("sk").map(|s| unquote(s)).as_deref() == Some(sk)
            })
            .unwrap_or_else(|| panic!("no item {pk} / {sk} in {stored:#?}"))
    };
    let q = find(&format!("QUERY#{query_id}"), "QUERY");
    assert_eq!(
        q.get("user_id").map(|s| unquote(s)).as_deref(),
        Some(user.id.as_str())
    );
    let consent = find(&format!("QUERY#{query_id}"), "CONSENT");
    assert_eq!(
        consent.get("agreement_version").map(|s| unquote(s)),
        Some(agreement.clone())
    );
    find(&format!("USER#{}", user.id), &format!("IDEM#{key}"));
    let verif = find(
        &format!("USER#{}", user.id),
        &format!("VERIF#{verification_id}"),
    );
    assert_eq!(verif.get("used").map(String::as_str), Some("Bool(true)"));
    assert_eq!(
        state_attr(&stored, "active_query_id").map(|s| unquote(&s)),
        Some(query_id.clone())
    );

    let after = api.get_json(ELIGIBILITY, &token).await;
    assert_eq!(after.status, 200, "{after:?}");
    assert_eq!(body(&after)["active_query_id"], query_id.as_str());
    assert_eq!(body(&after)["eligible"], false);

    // The same key and body: the first response, nothing new stored.
    let retry = submit(&api, &user, &key, &req).await;
    assert_eq!(retry.status, 202, "{retry:?}");
    assert_eq!(body(&retry), &a, "a retry returns the original response");
    assert_unchanged(&stored, &api.snapshot(&user).await, "idempotent retry");

    // The same key with another body.
    let mut other = req.clone();
    other["banks"] = json!(["ICBC"]);
    assert_refused_submission(
        &api,
        &user,
        Some(&key),
        Some(other.to_string()),
        None,
        422,
        "IDEMPOTENCY_KEY_REUSED",
        "same key, different body",
    )
    .await;

    // A new submission while the first is active.
    let f2 = face(&api, &user);
    let again = submission(&agreement, &verification_id, &code, &f2);
    assert_refused_submission(
        &api,
        &user,
        Some(&new_key()),
        Some(again.to_string()),
        Some(&f2.nonce),
        409,
        "QUERY_IN_PROGRESS",
        "second submission with a new key",
    )
    .await;
}

#[tokio::test]
async fn invalid_banks_and_missing_consent_get_422() {
    let api = Api::get().await;
    let user = held_user(&api).await;
    let p = Proofs::new(&api, &user, "SUBMIT_QUERY").await;
    let f = face(&api, &user);
    let valid = p.submission(&f);
    let key = new_key();
    let with = |field: &str, value: Value| {
        let mut req = valid.clone();
        req[field] = value;
        req
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        ("no bank", with("banks", json!([])), "INVALID_BANKS"),
        (
            "a bank twice",
            with("banks", json!(["ICBC", "CMB", "ICBC"])),
            "INVALID_BANKS",
        ),
        (
            "an unknown bank",
            with("banks", json!(["ICBC", "HSBC"])),
            "INVALID_BANKS",
        ),
        (
            "a lower-case code",
            with("banks", json!(["icbc"])),
            "INVALID_BANKS",
        ),
        ("an empty code", with("banks", json!([""])), "INVALID_BANKS"),
        (
            "consent not accepted",
            with(
                "consent",
                json!({"agreement_version": p.agreement, "accepted": false}),
            ),
            "CONSENT_REQUIRED",
        ),
        (
            "an outdated agreement",
            with(
                "consent",
                json!({"agreement_version": "2020-01", "accepted": true}),
            ),
            "CONSENT_REQUIRED",
        ),
        (
            "an empty agreement version",
            with(
                "consent",
                json!({"agreement_version": "", "accepted": true}),
            ),
            "CONSENT_REQUIRED",
        ),
    ];
    for (what, req, code) in cases {
        assert_refused_submission(
            &api,
            &user,
            Some(&key),
            Some(req.to_string()),
            Some(&f.nonce),
            422,
            code,
            what,
        )
        .await;
    }
    // Refusals are not recorded under the key: the same key then submits.
    let ok = submit(&api, &user, &key, &valid).await;
    assert_eq!(ok.status, 202, "{ok:?}");
}

#[tokio::test]
async fn cooldown_refuses_with_next_allowed_at() {
    let api = Api::get().await;
    let user = held_user(&api).await;
    let agreement = agreement_version(&api, &user).await;
    let next = timestamp::parse(&timestamp::format(now() + TimeDelta::days(1))).unwrap();
    api.clients
        .dynamodb
        .put_item()
        .table_name(&api.tables.main)
        .item("pk", user_pk(&user))
        .item("sk", AttributeValue::S("STATE".into()))
        .item("entity", AttributeValue::S("USER_STATE".into()))
        .item("version", AttributeValue::N("1".into()))
        .item(
            "next_allowed_at",
            AttributeValue::S(timestamp::format(next)),
        )
        .item("password_failures", AttributeValue::N("0".into()))
        .item("sms_count", AttributeValue::N("0".into()))
        .send()
        .await
        .expect("the cooldown is stored");

    let e = api.get_json(ELIGIBILITY, &api.token(&user)).await;
    assert_eq!(e.status, 200, "{e:?}");
    assert_eq!(body(&e)["eligible"], false);
    assert_eq!(body(&e)["active_query_id"], Value::Null);
    assert_eq!(ts(&body(&e)["next_allowed_at"]), next);

    let p = Proofs::with_code(agreement, api.verification(&user, "SUBMIT_QUERY").await);
    let reply =
        assert_refused_with_fresh_face(&api, &user, &p, 429, "COOLDOWN_ACTIVE", "cooldown").await;
    assert_eq!(ts(&body(&reply)["error"]["next_allowed_at"]), next);
}
