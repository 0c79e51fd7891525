//! Least privilege, as far as a template can show it.

use super::*;

/// Actions that have no resource ARN to name, so AWS requires `Resource: "*"`.
const STAR_RESOURCE_ACTIONS: [&str; 3] = [
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    // Direct-to-phone SMS (the role denies every topic and endpoint ARN).
    "sns:Publish",
];

const WRITES: [&str; 6] = [
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:PartiQLInsert",
    "dynamodb:PartiQLUpdate",
];

#[test]
fn roles_grant_no_wildcard_actions_and_wildcard_resources_only_where_aws_requires_them() {
    for f in functions() {
        for st in f.statements() {
            let actions = strings(&st["Action"]);
            assert!(!actions.is_empty(), "{}: a statement without Action", f.id);
            for action in &actions {
                assert!(!action.contains('*'), "{}: wildcard action {action}", f.id);
            }
            if st["Effect"] != "Allow" {
                continue;
            }
            if strings(&st["Resource"]).iter().any(|r| r.contains('*')) {
                for action in &actions {
                    assert!(
                        STAR_RESOURCE_ACTIONS.contains(&action.as_str()),
                        "{}: {action} is granted on a wildcard resource",
                        f.id
                    );
                }
            }
        }
        // A role allowed to publish SMS must not be allowed to publish to topics.
        let publishes = f.statements().iter().any(|st| {
            st["Effect"] == "Allow" && strings(&st["Action"]).iter().any(|a| a == "sns:Publish")
        });
        if publishes {
            assert!(
                f.statements().iter().any(|st| st["Effect"] == "Deny"
                    && strings(&st["Action"]).iter().any(|a| a == "sns:Publish")
                    && st["Resource"].to_string().contains("sns:*:*:*")),
                "{}: SMS publishing without the Deny on topic ARNs",
                f.id
            );
        }
    }
}

#[test]
fn only_the_functions_that_need_them_touch_tables_stream_and_sms() {
    let grants = |f: &Function, resource: &str| -> BTreeSet<String> {
        f.statements()
            .iter()
            .filter(|st| st["Effect"] == "Allow")
            .filter(|st| referenced_ids(&st["Resource"]).contains(resource))
            .flat_map(|st| strings(&st["Action"]))
            .collect()
    };
    let sms = |f: &Function| {
        f.statements().iter().any(|st| {
            st["Effect"] == "Allow" && strings(&st["Action"]).iter().any(|a| a == "sns:Publish")
        })
    };
    for f in functions() {
        // The users table belongs to the app's user system: read only, and only by the
        // functions that need a profile.
        let users = grants(&f, "UsersTable");
        let expected_users: BTreeSet<String> = match f.binary.as_str() {
            "submit-query" | "bank-fanout" | "bank-inquiry" | "aggregate-report" | "sweep" => {
                ["dynamodb:GetItem".to_owned()].into()
            }
            _ => BTreeSet::new(),
        };
        assert_eq!(users, expected_users, "{}: UsersTable", f.binary);
        assert!(users.iter().all(|a| !WRITES.contains(&a.as_str())));

        // Only the stream consumers read the stream; only the sweeper (expiry) and
        // view-report (the user's deletion) delete.
        let main = grants(&f, "CardLookupTable");
        let reads_stream = main.contains("dynamodb:GetRecords");
        assert_eq!(
            reads_stream,
            matches!(f.binary.as_str(), "bank-fanout" | "aggregate-report"),
            "{}: stream access",
            f.binary
        );
        assert_eq!(
            main.contains("dynamodb:DeleteItem"),
            matches!(f.binary.as_str(), "sweep" | "view-report"),
            "{}: deletes",
            f.binary
        );
        assert!(!main.contains("dynamodb:Scan"), "{}: no scans", f.binary);

        assert_eq!(
            sms(&f),
            matches!(
                f.binary.as_str(),
                "submit-query" | "aggregate-report" | "sweep"
            ),
            "{}: SMS",
            f.binary
        );
    }
}

/// Partition-key prefixes of the main table each function writes, from the DynamoDB
/// adapter (`shared/src/adapters/dynamo/*.rs`): `USER#` (state, codes, idempotency),
/// `QUERY#` (query, consent, legs, report), `FACENONCE#`, `BANKNONCE#`.
fn owned_prefixes(binary: &str) -> &'static [&'static str] {
    match binary {
        "submit-query" => &["USER#", "QUERY#", "FACENONCE#"],
        "view-report" => &["USER#", "QUERY#", "FACENONCE#"],
        "bank-fanout" | "bank-inquiry" => &["QUERY#"],
        "bank-callback" => &["QUERY#", "BANKNONCE#"],
        // Publishing releases the user's lock and sets the cooldown (USER#); the sweeper
        // runs the aggregator at deadlines.
        "aggregate-report" | "sweep" => &["QUERY#", "USER#"],
        other => panic!("no expectation for a function `{other}`: add it here"),
    }
}

/// Attributes only a stored report item has (what `NoReportWrites` denies).
const REPORT_ONLY: [&str; 2] = ["sealed", "generated_at"];

#[test]
fn main_table_writes_are_scoped_to_the_partitions_each_function_owns() {
    // The prefixes are the adapter's.
    let q = shared::model::ids::QueryId::parse(&ulid::Ulid::generate().to_string()).unwrap();
    let u = shared::model::ids::UserId::parse("u1").unwrap();
    assert!(shared::adapters::dynamo::query_pk(&q).starts_with("QUERY#"));
    assert!(shared::adapters::dynamo::user_pk(&u).starts_with("USER#"));

    for f in functions() {
        let on_main = |st: &&Value| referenced_ids(&st["Resource"]).contains("CardLookupTable");
        let writes: Vec<&Value> = f
            .statements()
            .into_iter()
            .filter(|st| st["Effect"] == "Allow")
            .filter(on_main)
            .filter(|st| {
                strings(&st["Action"])
                    .iter()
                    .any(|a| WRITES.contains(&a.as_str()))
            })
            .collect();
        assert!(!writes.is_empty(), "{}: writes nothing", f.binary);
        let expected: BTreeSet<String> = owned_prefixes(&f.binary)
            .iter()
            .map(|p| format!("{p}*"))
            .collect();
        // Each statement may narrow the scope (view-report deletes only in QUERY#);
        // together they cover exactly what the function owns.
        let mut covered = BTreeSet::new();
        for st in writes {
            let cond = &st["Condition"];
            let keys: BTreeSet<String> =
                strings(&cond["ForAllValues:StringLike"]["dynamodb:LeadingKeys"])
                    .into_iter()
                    .collect();
            assert!(
                !keys.is_empty() && keys.is_subset(&expected),
                "{} {}: LeadingKeys {keys:?} outside {expected:?}",
                f.binary,
                st["Sid"]
            );
            covered.extend(keys);
            // Without it, a request that names no key would pass ForAllValues.
            assert_eq!(
                cond["Null"]["dynamodb:LeadingKeys"], "false",
                "{} {}: keys required",
                f.binary, st["Sid"]
            );
            let operators: BTreeSet<&str> = cond
                .as_object()
                .map(|m| m.keys().map(String::as_str).collect())
                .unwrap_or_default();
            assert_eq!(
                operators,
                BTreeSet::from(["ForAllValues:StringLike", "Null"]),
                "{}: nothing else loosens or replaces the scope",
                f.binary
            );
        }
        assert_eq!(covered, expected, "{}: LeadingKeys", f.binary);

        // Reports share their query's partition: the roles that must not write them are
        // denied every write carrying a report's own attributes.
        let denies_reports = f.statements().into_iter().filter(on_main).any(|st| {
            let actions = strings(&st["Action"]);
            st["Effect"] == "Deny"
                && ["dynamodb:PutItem", "dynamodb:UpdateItem"]
                    .iter()
                    .all(|a| actions.iter().any(|x| x == a))
                && st.get("Resource").is_some()
                && strings(&st["Condition"]["ForAnyValue:StringEquals"]["dynamodb:Attributes"])
                    .iter()
                    .any(|a| a == "sealed")
        });
        assert_eq!(
            denies_reports,
            !matches!(f.binary.as_str(), "aggregate-report" | "sweep"),
            "{}: report writes",
            f.binary
        );
    }

    // Those attributes are the stored report's (and the names the Deny lists).
    let (_, public) = shared::report::crypto::generate_keypair();
    let sealer = shared::report::crypto::ReportSealer::new("k1", &public).unwrap();
    let now = chrono::Utc::now();
    let report = shared::records::StoredReport {
        query_id: q,
        user_id: u.clone(),
        sealed: sealer
            .seal(
                &shared::report::crypto::Binding::Report {
                    query: &q,
                    user: &u,
                    generated_at: now,
                    expires_at: now,
                },
                b"{}",
            )
            .unwrap(),
        generated_at: now,
        expires_at: now,
    };
    let item = shared::adapters::dynamo::to_item(&report, &[]).unwrap();
    for a in REPORT_ONLY {
        assert!(item.contains_key(a), "a stored report has no `{a}`");
    }
    let deny = function("submit-query")
        .statements()
        .into_iter()
        .find(|st| st["Sid"] == "NoReportWrites")
        .expect("NoReportWrites");
    let listed: BTreeSet<String> =
        strings(&deny["Condition"]["ForAnyValue:StringEquals"]["dynamodb:Attributes"])
            .into_iter()
            .collect();
    assert_eq!(listed, REPORT_ONLY.iter().map(|s| s.to_string()).collect());
}
