//! The SAM template (`infra/template.yaml`, read by the `sam-template` crate, the
//! single source of truth for table shape) as DynamoDB requests, so the local stack
//! cannot drift from what AWS deploys.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType,
};

pub use sam_template::{
    get_att, Event, Function, IndexSpec, KeySpec, QueueSpec, TableSpec, Template, TemplateError,
};

fn key_schema(key: &KeySpec) -> Vec<KeySchemaElement> {
    let element = |name: &str, ty| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(ty)
            .build()
            .expect("name and type are set")
    };
    let mut out = vec![element(&key.hash, KeyType::Hash)];
    if let Some(range) = &key.range {
        out.push(element(range, KeyType::Range));
    }
    out
}

/// CreateTable for `spec` under `table_name`. TTL is a separate call
/// (UpdateTimeToLive), see [`crate::tables`].
pub fn create_table(
    client: &aws_sdk_dynamodb::Client,
    spec: &TableSpec,
    table_name: &str,
) -> aws_sdk_dynamodb::operation::create_table::builders::CreateTableFluentBuilder {
    let mut req = client
        .create_table()
        .table_name(table_name)
        .billing_mode(BillingMode::from(spec.billing_mode.as_str()))
        .set_key_schema(Some(key_schema(&spec.key)));
    for (name, ty) in &spec.attributes {
        req = req.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::from(ty.as_str()))
                .build()
                .expect("name and type are set"),
        );
    }
    for gsi in &spec.gsis {
        req = req.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(&gsi.name)
                .set_key_schema(Some(key_schema(&gsi.key)))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::from(gsi.projection.as_str()))
                        .build(),
                )
                .build()
                .expect("name and key schema are set"),
        );
    }
    if let Some(view) = &spec.stream_view_type {
        req = req.stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::from(view.as_str()))
                .build()
                .expect("stream_enabled is set"),
        );
    }
    req
}
