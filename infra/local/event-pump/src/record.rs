//! DynamoDB Streams records (as the SDK returns them) to the JSON record Lambda delivers
//! to a function in `{"Records": [...]}`, images in DynamoDB JSON (`{"S": "..."}`).

use std::collections::HashMap;

use aws_sdk_dynamodbstreams::types::{AttributeValue, Record};
use base64::Engine as _;
use serde_json::{json, Map, Value};

/// One attribute value in DynamoDB JSON: `{"S": "x"}`, `{"N": "1"}`, `{"B": "<base64>"}`,
/// `{"BOOL": true}`, `{"NULL": true}`, `{"L": [...]}`, `{"M": {...}}`, `{"SS"|"NS"|"BS": [...]}`.
pub fn attribute_json(value: &AttributeValue) -> Value {
    let b64 = |b: &[u8]| Value::String(base64::engine::general_purpose::STANDARD.encode(b));
    match value {
        AttributeValue::S(s) => json!({ "S": s }),
        AttributeValue::N(n) => json!({ "N": n }),
        AttributeValue::B(b) => json!({ "B": b64(b.as_ref()) }),
        AttributeValue::Bool(b) => json!({ "BOOL": b }),
        AttributeValue::Null(b) => json!({ "NULL": b }),
        AttributeValue::Ss(v) => json!({ "SS": v }),
        AttributeValue::Ns(v) => json!({ "NS": v }),
        AttributeValue::Bs(v) => {
            json!({ "BS": v.iter().map(|b| b64(b.as_ref())).collect::<Vec<_>>() })
        }
        AttributeValue::L(items) => {
            json!({ "L": items.iter().map(attribute_json).collect::<Vec<_>>() })
        }
        AttributeValue::M(m) => json!({ "M": item_json(m) }),
        // A type newer than this SDK: keep the record deliverable, visibly.
        _ => json!({ "NULL": true }),
    }
}

/// An item (`Keys`, `NewImage`, `OldImage`) in DynamoDB JSON.
pub fn item_json(item: &HashMap<String, AttributeValue>) -> Value {
    Value::Object(
        item.iter()
            .map(|(k, v)| (k.clone(), attribute_json(v)))
            .collect::<Map<String, Value>>(),
    )
}

/// The record as Lambda delivers it from a DynamoDB stream event source mapping:
/// `eventID`, `eventName`, `eventVersion`, `eventSource`, `awsRegion`, `dynamodb`
/// {`ApproximateCreationDateTime` (epoch seconds), `Keys`, `NewImage`, `OldImage`,
/// `SequenceNumber`, `SizeBytes`, `StreamViewType`}, `eventSourceARN` (the stream ARN),
/// and `userIdentity` for deletions by TTL.
///
/// `region` replaces the stream's own region name (DynamoDB Local says `ddblocal`).
pub fn lambda_record(record: &Record, stream_arn: &str, region: &str) -> Value {
    let mut out = Map::new();
    out.insert(
        "eventID".into(),
        json!(record.event_id().unwrap_or_default()),
    );
    out.insert(
        "eventName".into(),
        json!(record.event_name().map(|n| n.as_str()).unwrap_or_default()),
    );
    out.insert(
        "eventVersion".into(),
        json!(record.event_version().unwrap_or("1.1")),
    );
    out.insert(
        "eventSource".into(),
        json!(record.event_source().unwrap_or("aws:dynamodb")),
    );
    out.insert("awsRegion".into(), json!(region));

    let mut ddb = Map::new();
    if let Some(s) = record.dynamodb() {
        if let Some(t) = s.approximate_creation_date_time() {
            let n = if t.subsec_nanos() == 0 {
                json!(t.secs())
            } else {
                json!(t.as_secs_f64())
            };
            ddb.insert("ApproximateCreationDateTime".into(), n);
        }
        ddb.insert(
            "Keys".into(),
            s.keys().map(item_json).unwrap_or_else(|| json!({})),
        );
        if let Some(img) = s.new_image() {
            ddb.insert("NewImage".into(), item_json(img));
        }
        if let Some(img) = s.old_image() {
            ddb.insert("OldImage".into(), item_json(img));
        }
        if let Some(seq) = s.sequence_number() {
            ddb.insert("SequenceNumber".into(), json!(seq));
        }
        ddb.insert("SizeBytes".into(), json!(s.size_bytes().unwrap_or(0)));
        if let Some(v) = s.stream_view_type() {
            ddb.insert("StreamViewType".into(), json!(v.as_str()));
        }
    }
    out.insert("dynamodb".into(), Value::Object(ddb));
    out.insert("eventSourceARN".into(), json!(stream_arn));
    if let Some(id) = record.user_identity() {
        out.insert(
            "userIdentity".into(),
            json!({
                "type": id.r#type().unwrap_or_default(),
                "principalId": id.principal_id().unwrap_or_default(),
            }),
        );
    }
    Value::Object(out)
}

/// The `dynamodb.SequenceNumber` of a converted record.
pub fn sequence_number(record: &Value) -> Option<&str> {
    record.get("dynamodb")?.get("SequenceNumber")?.as_str()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use aws_sdk_dynamodbstreams::primitives::{Blob, DateTime};
    use aws_sdk_dynamodbstreams::types::{Identity, OperationType, StreamRecord, StreamViewType};

    pub(crate) const ARN: &str =
        "arn:aws:dynamodb:ddblocal:000000000000:table/local-CardLookupTable/stream/2026-01-01T00:00:00.000";

    fn s(v: &str) -> AttributeValue {
        AttributeValue::S(v.into())
    }

    /// A query record as the submission function writes it (the fields the filters see).
    pub(crate) fn query_image(phase: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([
            ("pk".into(), s("Q#01J")),
            ("sk".into(), s("META")),
            ("entity".into(), s("QUERY")),
            ("phase".into(), s(phase)),
            (
                "banks".into(),
                AttributeValue::Ss(vec!["ICBC".into(), "CMB".into()]),
            ),
            ("n".into(), AttributeValue::N("16".into())),
            ("ok".into(), AttributeValue::Bool(true)),
            ("nothing".into(), AttributeValue::Null(true)),
            (
                "raw".into(),
                AttributeValue::B(Blob::new(vec![0u8, 1, 2, 255])),
            ),
            (
                "legs".into(),
                AttributeValue::L(vec![AttributeValue::M(HashMap::from([(
                    "bank".into(),
                    s("ICBC"),
                )]))]),
            ),
        ])
    }

    pub(crate) fn sdk_record(
        name: OperationType,
        seq: &str,
        new: Option<HashMap<String, AttributeValue>>,
        old: Option<HashMap<String, AttributeValue>>,
    ) -> Record {
        let keys = HashMap::from([("pk".into(), s("Q#01J")), ("sk".into(), s("META"))]);
        Record::builder()
            .event_id(format!("id-{seq}"))
            .event_name(name)
            .event_version("1.1")
            .event_source("aws:dynamodb")
            .aws_region("ddblocal")
            .dynamodb(
                StreamRecord::builder()
                    .approximate_creation_date_time(DateTime::from_secs(1_767_225_600))
                    .set_keys(Some(keys))
                    .set_new_image(new)
                    .set_old_image(old)
                    .sequence_number(seq)
                    .size_bytes(123)
                    .stream_view_type(StreamViewType::NewAndOldImages)
                    .build(),
            )
            .build()
    }

    #[test]
    fn converts_every_attribute_type() {
        let v = attribute_json(&AttributeValue::M(HashMap::from([
            ("s".into(), s("x")),
            ("n".into(), AttributeValue::N("1.5".into())),
            ("b".into(), AttributeValue::B(Blob::new(b"hi".to_vec()))),
            ("bool".into(), AttributeValue::Bool(false)),
            ("null".into(), AttributeValue::Null(true)),
            ("ss".into(), AttributeValue::Ss(vec!["a".into()])),
            ("ns".into(), AttributeValue::Ns(vec!["2".into()])),
            (
                "bs".into(),
                AttributeValue::Bs(vec![Blob::new(b"yo".to_vec())]),
            ),
            ("l".into(), AttributeValue::L(vec![s("y")])),
        ])));
        assert_eq!(
            v,
            json!({"M": {
                "s": {"S": "x"}, "n": {"N": "1.5"}, "b": {"B": "aGk="},
                "bool": {"BOOL": false}, "null": {"NULL": true}, "ss": {"SS": ["a"]},
                "ns": {"NS": ["2"]}, "bs": {"BS": ["eW8="]}, "l": {"L": [{"S": "y"}]}
            }})
        );
    }

    #[test]
    fn record_has_lambda_shape_and_deserializes_as_aws_lambda_events() {
        let insert = lambda_record(
            &sdk_record(
                OperationType::Insert,
                "000000000000000000042",
                Some(query_image("FANOUT")),
                None,
            ),
            ARN,
            "us-east-1",
        );
        assert_eq!(insert["eventName"], "INSERT");
        assert_eq!(insert["eventVersion"], "1.1");
        assert_eq!(insert["eventSource"], "aws:dynamodb");
        assert_eq!(insert["awsRegion"], "us-east-1");
        assert_eq!(insert["eventSourceARN"], ARN);
        assert_eq!(
            insert["dynamodb"]["ApproximateCreationDateTime"],
            1_767_225_600
        );
        assert_eq!(insert["dynamodb"]["Keys"]["pk"], json!({"S": "Q#01J"}));
        assert_eq!(
            insert["dynamodb"]["NewImage"]["entity"],
            json!({"S": "QUERY"})
        );
        assert!(insert["dynamodb"].get("OldImage").is_none());
        assert_eq!(
            insert["dynamodb"]["SequenceNumber"],
            "000000000000000000042"
        );
        assert_eq!(insert["dynamodb"]["SizeBytes"], 123);
        assert_eq!(insert["dynamodb"]["StreamViewType"], "NEW_AND_OLD_IMAGES");
        assert_eq!(sequence_number(&insert), Some("000000000000000000042"));

        let mut remove = sdk_record(OperationType::Remove, "43", None, Some(query_image("DONE")));
        remove.user_identity = Some(
            Identity::builder()
                .r#type("Service")
                .principal_id("dynamodb.amazonaws.com")
                .build(),
        );
        let remove = lambda_record(&remove, ARN, "us-east-1");
        let modify = lambda_record(
            &sdk_record(
                OperationType::Modify,
                "44",
                Some(query_image("AGGREGATING")),
                Some(query_image("FANOUT")),
            ),
            ARN,
            "us-east-1",
        );

        let payload = json!({ "Records": [insert, remove, modify] });
        let event: aws_lambda_events::event::dynamodb::Event =
            serde_json::from_value(payload).expect("deserializes as a Lambda DynamoDB event");
        assert_eq!(event.records.len(), 3);
        let r = &event.records[0];
        assert_eq!(r.event_name, "INSERT");
        assert_eq!(r.event_id, "id-000000000000000000042");
        assert_eq!(r.aws_region, "us-east-1");
        assert_eq!(r.event_source_arn.as_deref(), Some(ARN));
        assert_eq!(
            r.change.approximate_creation_date_time.timestamp(),
            1_767_225_600
        );
        assert_eq!(
            r.change.sequence_number.as_deref(),
            Some("000000000000000000042")
        );
        assert_eq!(r.change.size_bytes, 123);
        assert_eq!(r.change.new_image.len(), 10);
        assert!(r.change.old_image.is_empty());
        let entity: String =
            serde_dynamo::from_attribute_value(r.change.new_image.get("entity").unwrap().clone())
                .unwrap();
        assert_eq!(entity, "QUERY");
        let raw: serde_bytes_like::Bytes =
            serde_dynamo::from_attribute_value(r.change.new_image.get("raw").unwrap().clone())
                .unwrap();
        assert_eq!(raw.0, vec![0u8, 1, 2, 255]);
        let rm = &event.records[1];
        assert_eq!(rm.event_name, "REMOVE");
        assert!(rm.change.new_image.is_empty());
        assert_eq!(rm.change.old_image.len(), 10);
        let id = rm.user_identity.as_ref().expect("userIdentity");
        assert_eq!(id.type_, "Service");
        assert_eq!(id.principal_id, "dynamodb.amazonaws.com");
        assert_eq!(event.records[2].event_name, "MODIFY");
    }

    /// Deserializes a DynamoDB binary attribute (serde_dynamo hands out bytes).
    mod serde_bytes_like {
        pub struct Bytes(pub Vec<u8>);
        impl<'de> serde::Deserialize<'de> for Bytes {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = Bytes;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("bytes")
                    }
                    fn visit_bytes<E>(self, v: &[u8]) -> Result<Bytes, E> {
                        Ok(Bytes(v.to_vec()))
                    }
                    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Bytes, E> {
                        Ok(Bytes(v))
                    }
                }
                d.deserialize_byte_buf(V)
            }
        }
    }
}
