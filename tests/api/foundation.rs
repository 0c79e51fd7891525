//! The local AWS stack behaves as the system relies on: tables exactly as the template
//! declares them, conditional writes, TTL, streams, and SMS through the SNS emulator.

use aws_sdk_dynamodb::types::{AttributeValue, KeyType, TimeToLiveStatus};
use testkit::template::{IndexSpec, KeySpec, TableSpec};
use testkit::{Template, TestEnv};

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

fn key_of(schema: &[aws_sdk_dynamodb::types::KeySchemaElement]) -> KeySpec {
    let find = |ty: KeyType| {
        schema
            .iter()
            .find(|k| k.key_type() == &ty)
            .map(|k| k.attribute_name().to_owned())
    };
    KeySpec {
        hash: find(KeyType::Hash).expect("table has a hash key"),
        range: find(KeyType::Range),
    }
}

/// What DynamoDB Local says the table is, in the template's terms.
async fn describe(env: &TestEnv, logical_id: &str) -> TableSpec {
    let db = &env.clients.dynamodb;
    let name = env.table(logical_id);
    let table = db
        .describe_table()
        .table_name(name)
        .send()
        .await
        .unwrap()
        .table
        .unwrap();
    let ttl = db
        .describe_time_to_live()
        .table_name(name)
        .send()
        .await
        .unwrap()
        .time_to_live_description
        .unwrap();
    let mut attributes: Vec<_> = table
        .attribute_definitions()
        .iter()
        .map(|a| {
            (
                a.attribute_name().to_owned(),
                a.attribute_type().as_str().to_owned(),
            )
        })
        .collect();
    attributes.sort();
    let mut gsis: Vec<_> = table
        .global_secondary_indexes()
        .iter()
        .map(|g| IndexSpec {
            name: g.index_name().unwrap().to_owned(),
            key: key_of(g.key_schema()),
            projection: g
                .projection()
                .and_then(|p| p.projection_type())
                .unwrap()
                .as_str()
                .to_owned(),
        })
        .collect();
    gsis.sort_by(|a, b| a.name.cmp(&b.name));
    let stream = table.stream_specification();
    TableSpec {
        logical_id: logical_id.to_owned(),
        billing_mode: table
            .billing_mode_summary()
            .and_then(|b| b.billing_mode())
            .map(|m| m.as_str().to_owned())
            .unwrap_or_else(|| "PROVISIONED".to_owned()),
        attributes,
        key: key_of(table.key_schema()),
        gsis,
        stream_view_type: stream
            .filter(|s| s.stream_enabled())
            .and_then(|s| s.stream_view_type())
            .map(|v| v.as_str().to_owned()),
        ttl_attribute: (ttl.time_to_live_status() == Some(&TimeToLiveStatus::Enabled))
            .then(|| ttl.attribute_name().unwrap().to_owned()),
    }
}

#[tokio::test]
async fn local_tables_match_the_template() {
    let template = Template::load_default().unwrap();
    let specs = template.tables().unwrap();
    assert!(
        specs.iter().any(|s| s.logical_id == "CardLookupTable"),
        "the template declares the main table"
    );
    let env = TestEnv::new().await;
    for spec in &specs {
        assert_eq!(&describe(&env, &spec.logical_id).await, spec);
    }
    env.cleanup().await;
}

#[tokio::test]
async fn conditional_put_refuses_a_duplicate() {
    let env = TestEnv::new().await;
    let db = &env.clients.dynamodb;
    let put = || {
        db.put_item()
            .table_name(env.table("CardLookupTable"))
            .item("pk", s("QUERY#1"))
            .item("sk", s("QUERY"))
            .condition_expression("attribute_not_exists(pk)")
    };
    put().send().await.expect("first put is accepted");
    let err = put().send().await.expect_err("second put is refused");
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_conditional_check_failed_exception()),
        "refused as a failed condition: {err:?}"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn ttl_is_enabled_on_the_configured_attribute() {
    let env = TestEnv::new().await;
    let spec = Template::load_default()
        .unwrap()
        .table("CardLookupTable")
        .unwrap();
    assert_eq!(spec.ttl_attribute.as_deref(), Some("ttl"));
    let ttl = env
        .clients
        .dynamodb
        .describe_time_to_live()
        .table_name(env.table("CardLookupTable"))
        .send()
        .await
        .unwrap()
        .time_to_live_description
        .unwrap();
    assert_eq!(ttl.time_to_live_status(), Some(&TimeToLiveStatus::Enabled));
    assert_eq!(ttl.attribute_name(), Some("ttl"));
    env.cleanup().await;
}

#[tokio::test]
async fn a_put_is_readable_from_the_stream() {
    let env = TestEnv::new().await;
    let db = &env.clients.dynamodb;
    let table = env.table("CardLookupTable");
    db.put_item()
        .table_name(table)
        .item("pk", s("QUERY#stream"))
        .item("sk", s("QUERY"))
        .item("status", s("SUBMITTED"))
        .send()
        .await
        .unwrap();
    let stream_pk = aws_sdk_dynamodbstreams::types::AttributeValue::S("QUERY#stream".into());
    let found = testkit::streams::records(&env.clients, table)
        .await
        .into_iter()
        .find_map(|record| {
            let image = record.dynamodb().and_then(|d| d.new_image())?;
            (image.get("pk") == Some(&stream_pk))
                .then(|| (record.event_name().cloned(), image.clone()))
        });
    let (event, image) = found.expect("the put is on the stream");
    assert_eq!(
        event,
        Some(aws_sdk_dynamodbstreams::types::OperationType::Insert)
    );
    assert_eq!(
        image.get("status"),
        Some(&aws_sdk_dynamodbstreams::types::AttributeValue::S(
            "SUBMITTED".into()
        ))
    );
    env.cleanup().await;
}

#[tokio::test]
async fn an_sms_published_to_the_emulator_is_read_back() {
    let env = TestEnv::new().await;
    // A phone number of this test alone: tests share the emulator.
    let n: u64 = ulid::Ulid::generate().random() as u64 % 100_000_000;
    let phone = format!("+86139{n:08}");
    let text = "【云闪付】您的查卡报告已生成，请在App内查看。谨防诈骗，切勿向他人透露验证码。";
    env.clients
        .sns
        .publish()
        .phone_number(&phone)
        .message(text)
        .send()
        .await
        .unwrap();
    let sent = testkit::sms::sent_sms_to(&env.clients.endpoints.sns_endpoint, &phone)
        .await
        .unwrap();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].phone_number, phone);
    assert_eq!(sent[0].message, text);
    env.cleanup().await;
}
