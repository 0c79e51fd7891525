//! Callbacks at once: one report and one SMS, a leg settled once.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_concurrent_callbacks_make_one_report_and_one_sms() {
    let b = Arc::new(Banks::get().await);
    let p = b.pending_query(&ALL_BANKS).await;
    // What each bank says: the person's cards as the simulator knows them.
    let truth = b.api.sim_truth(&p.user).await;
    let said: BTreeMap<String, Value> = ALL_BANKS
        .iter()
        .map(|bank| {
            let cards = truth[*bank].clone();
            assert!(cards.is_array(), "truth for {bank}: {truth}");
            ((*bank).to_owned(), cards)
        })
        .collect();
    let bodies: Vec<(String, String)> = ALL_BANKS
        .iter()
        .map(|bank| {
            (
                (*bank).to_owned(),
                answer(&p.query_id, p.inquiry(bank), &said[*bank]),
            )
        })
        .collect();
    // All signed first, then released together.
    let barrier = Arc::new(tokio::sync::Barrier::new(bodies.len()));
    let tasks: Vec<_> = bodies
        .into_iter()
        .map(|(bank, body)| {
            let (b, barrier) = (b.clone(), barrier.clone());
            tokio::spawn(async move {
                let path = path_of(&bank);
                let h = b.sign(&bank, &path, &body);
                barrier.wait().await;
                let reply = b.post(&path, &h, &body).await;
                (bank, reply)
            })
        })
        .collect();
    for t in tasks {
        let (bank, reply) = t.await.unwrap();
        assert_eq!(reply.status, 204, "{bank}: {reply:?}");
    }

    let record = b.api.wait_report(&p.user, &p.query_id, super::WAIT).await;
    assert_eq!(record["report_status"], "READY", "{record}");
    b.api.allow_next_sms(&p.user).await;
    let reply = b.api.view_report(&p.user, &p.query_id).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let report = reply.body.unwrap();
    assert_eq!(
        report_cards(&report),
        bank_cards(said.iter().map(|(b, c)| (b.as_str(), c)))
    );
    let summary = report["summary"]["banks"].as_array().unwrap();
    assert_eq!(summary.len(), 16);
    assert!(
        summary.iter().all(|x| x["status"] == "RESPONDED"),
        "{report}"
    );
    let total: usize = said.values().map(|c| c.as_array().unwrap().len()).sum();
    assert_eq!(report["summary"]["total_cards"], total);

    // Exactly one "report ready" SMS to the user's phone: wait for it, then give a
    // second one (a second aggregation) time to show up.
    let start = std::time::Instant::now();
    while ready_sms(&b.api.sms_to(&p.user.phone).await) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no 'report ready' SMS"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(ready_sms(&b.api.sms_to(&p.user.phone).await), 1);
    // One report item; every leg answered; no bank was asked twice.
    let items = b.query_items(&p.query_id).await;
    let sks: Vec<String> = items
        .iter()
        .filter_map(|i| match i.get("sk") {
            Some(AttributeValue::S(s)) => Some(s.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(sks.iter().filter(|s| *s == "REPORT").count(), 1, "{sks:?}");
    assert_eq!(b.api.sim_inquiries(&p.user).await.len(), 16);
}

/// Twenty correctly signed callbacks for one leg at the same instant, half refused for a
/// leaked card number and half accepted (each a different answer): exactly one settles
/// the leg (the query's counter goes down by one), and the replies agree with who won.
#[tokio::test]
async fn twenty_concurrent_refused_and_accepted_callbacks_settle_a_leg_once() {
    let b = Arc::new(Banks::get().await);
    for round in 0..2 {
        let p = b.pending_query(&["CEB", "CZB"]).await;
        let unsettled = Banks::unsettled(&b.query_item(&p.query_id).await);
        let bodies: Vec<String> = (0..20)
            .map(|i| {
                let cards = json!([{"kind": "DEBIT", "first4": "6222", "last4": format!("{:04}", 1000 + i)}]);
                let mut v: Value =
                    serde_json::from_str(&answer(&p.query_id, p.inquiry("CEB"), &cards)).unwrap();
                if i % 2 == 0 {
                    v["note"] = "6222 0212 3456 7894".into();
                }
                v.to_string()
            })
            .collect();
        let barrier = Arc::new(tokio::sync::Barrier::new(bodies.len()));
        let tasks: Vec<_> = bodies
            .iter()
            .cloned()
            .map(|body| {
                let (b, barrier) = (b.clone(), barrier.clone());
                tokio::spawn(async move {
                    let path = path_of("CEB");
                    let h = b.sign("CEB", &path, &body);
                    barrier.wait().await;
                    b.post(&path, &h, &body).await
                })
            })
            .collect();
        let mut replies = Vec::new();
        for t in tasks {
            replies.push(t.await.unwrap());
        }
        let leg = b.leg_item(&p.query_id, "CEB").await;
        assert_eq!(
            Banks::unsettled(&b.query_item(&p.query_id).await),
            unsettled - 1,
            "round {round}: exactly one settlement"
        );
        let accepted: Vec<usize> = (0..replies.len())
            .filter(|i| replies[*i].status == 204)
            .collect();
        for (i, r) in replies.iter().enumerate() {
            let expected: &[u16] = if i % 2 == 0 { &[422] } else { &[204, 409] };
            assert!(expected.contains(&r.status), "round {round}, #{i}: {r:?}");
        }
        match leg.get("state") {
            Some(AttributeValue::S(s)) if s == "ANSWERED" => {
                assert_eq!(accepted.len(), 1, "round {round}: {replies:?}");
                assert_eq!(
                    leg.get("answer_digest"),
                    Some(&AttributeValue::S(hex_sha256(
                        bodies[accepted[0]].as_bytes()
                    )))
                );
                assert_eq!(b.opened_cards(&p.query_id, "CEB").await.len(), 1);
            }
            Some(AttributeValue::S(s)) if s == "FAILED" => {
                assert!(accepted.is_empty(), "round {round}: {replies:?}");
                assert_eq!(
                    leg.get("failure"),
                    Some(&AttributeValue::S("CARD_NUMBER_IN_ANSWER".into()))
                );
            }
            other => panic!("round {round}: leg state {other:?}"),
        }
    }
}
