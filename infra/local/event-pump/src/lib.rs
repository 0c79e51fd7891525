//! The local event pump: plays the parts AWS plays between the services in the cloud.
//!
//! - DynamoDB stream → function: follows every shard of the table's stream in DynamoDB
//!   Local and invokes each function of a `Type: DynamoDB` event of the SAM template
//!   through the Lambda invoke API of `cargo lambda watch`, with the record JSON Lambda
//!   delivers, the event's `FilterCriteria`, `BatchSize`, `MaximumRetryAttempts` and
//!   `ReportBatchItemFailures` (see [`pump`]).
//! - SQS queue → function: every `Type: SQS` event, polled in moto with the event's
//!   `BatchSize`, `ScalingConfig.MaximumConcurrency` and `ReportBatchItemFailures`
//!   (see [`queue`]).
//! - EventBridge schedule → function: every `Type: Schedule` event, at a local period.
//!
//! The binary (`src/main.rs`) is a thin command line around [`run`].

pub mod batch;
pub mod config;
pub mod filter;
pub mod invoke;
pub mod log;
pub mod pump;
pub mod queue;
pub mod record;
pub mod sources;

pub use config::Config;
pub use pump::{run, PumpError};

/// The line printed on stdout once the pump follows the stream.
pub const READY_LINE: &str = "EVENT-PUMP READY";

#[cfg(test)]
mod template_filters {
    //! The template's actual filter patterns against records as the pump builds them
    //! (SDK stream records converted to the Lambda record JSON).
    use std::collections::HashMap;
    use std::path::Path;

    use aws_sdk_dynamodbstreams::types::{AttributeValue, OperationType};
    use serde_json::{json, Value};

    use crate::filter::FilterCriteria;
    use crate::record::lambda_record;
    use crate::record::tests::{query_image, sdk_record, ARN};
    use crate::sources::{EventSources, StreamSource};

    type Image = HashMap<String, AttributeValue>;

    fn source(binary: &str) -> StreamSource {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../template.yaml");
        EventSources::load(&path)
            .expect("the project's template loads")
            .streams
            .into_iter()
            .find(|s| s.binary == binary)
            .unwrap_or_else(|| panic!("the template has a stream event for {binary}"))
    }

    fn record(op: OperationType, new: Option<Image>, old: Option<Image>) -> Value {
        lambda_record(&sdk_record(op, "7", new, old), ARN, "us-east-1")
    }

    fn set(mut img: Image, attr: &str, v: AttributeValue) -> Image {
        img.insert(attr.into(), v);
        img
    }

    /// The one pattern of `filters`, and from it: the eventName it wants and, for each
    /// attribute it requires in NewImage, (name, type, first exact value).
    fn wanted(filters: &FilterCriteria) -> (String, Vec<(String, String, String)>) {
        assert_eq!(filters.patterns.len(), 1, "one pattern per event source");
        let p = filters.patterns[0].json();
        let event_name = p["eventName"][0]
            .as_str()
            .expect("an exact eventName")
            .to_owned();
        let mut attrs = Vec::new();
        if let Some(img) = p["dynamodb"]["NewImage"].as_object() {
            for (name, typed) in img {
                let (ty, values) = typed.as_object().unwrap().iter().next().unwrap();
                let v = values[0]
                    .as_str()
                    .expect("an exact string value")
                    .to_owned();
                attrs.push((name.clone(), ty.clone(), v));
            }
        }
        (event_name, attrs)
    }

    fn attr(ty: &str, v: &str) -> AttributeValue {
        match ty {
            "S" => AttributeValue::S(v.into()),
            "N" => AttributeValue::N(v.into()),
            other => panic!("unexpected attribute type {other} in a template pattern"),
        }
    }

    fn op(name: &str) -> OperationType {
        OperationType::from(name)
    }

    /// A query item that satisfies every NewImage condition of the pattern.
    fn satisfying(attrs: &[(String, String, String)]) -> Image {
        attrs.iter().fold(query_image("FANOUT"), |img, (n, t, v)| {
            set(img, n, attr(t, v))
        })
    }

    #[test]
    fn fanout_gets_inserted_queries_only() {
        let f = source("bank-fanout").filters;
        let (event_name, attrs) = wanted(&f);
        assert_eq!(event_name, "INSERT");
        assert!(attrs.iter().any(|(n, _, v)| n == "entity" && v == "QUERY"));
        let query = satisfying(&attrs);
        let leg = set(query.clone(), "entity", AttributeValue::S("LEG".into()));
        assert!(f.matches(&record(OperationType::Insert, Some(query.clone()), None)));
        assert!(!f.matches(&record(OperationType::Insert, Some(leg), None)));
        assert!(!f.matches(&record(
            OperationType::Modify,
            Some(query.clone()),
            Some(query.clone())
        )));
        assert!(!f.matches(&record(OperationType::Remove, None, Some(query))));
    }

    #[test]
    fn every_template_pattern_matches_exactly_its_records() {
        for src in ["bank-fanout", "aggregate-report"].map(source) {
            let (event_name, attrs) = wanted(&src.filters);
            let f = &src.filters;
            let good = satisfying(&attrs);
            let new_old = |img: Image| {
                let old = (event_name == "MODIFY").then(|| query_image("FANOUT"));
                record(op(&event_name), Some(img), old)
            };
            assert!(
                f.matches(&new_old(good.clone())),
                "{}: the record it is for",
                src.name()
            );
            // Another kind of change of the same item: no.
            for other in ["INSERT", "MODIFY", "REMOVE"]
                .iter()
                .filter(|o| **o != event_name)
            {
                let r = record(op(other), Some(good.clone()), Some(good.clone()));
                assert!(!f.matches(&r), "{}: {other} must not match", src.name());
            }
            // Any required attribute with another value, or missing: no.
            for (name, ty, value) in &attrs {
                let changed = set(good.clone(), name, attr(ty, &format!("{value}9")));
                assert!(
                    !f.matches(&new_old(changed)),
                    "{}: {name} changed",
                    src.name()
                );
                let mut missing = good.clone();
                missing.remove(name);
                assert!(
                    !f.matches(&new_old(missing)),
                    "{}: {name} missing",
                    src.name()
                );
            }
            // The filter sees DynamoDB JSON: the same values as plain JSON do not match.
            let mut plain = new_old(good.clone());
            plain["dynamodb"]["NewImage"] = attrs
                .iter()
                .map(|(n, _, v)| (n.clone(), json!(v)))
                .collect::<serde_json::Map<_, _>>()
                .into();
            assert!(!f.matches(&plain), "{}: plain JSON image", src.name());
        }
    }
}
