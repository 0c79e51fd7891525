//! Reads `infra/template.yaml`, the single source of truth for table shape, so the local
//! stack cannot drift from what AWS deploys.

use std::path::{Path, PathBuf};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType,
};
use serde::Deserialize;
use serde_norway::Value;

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("template is not valid YAML: {0}")]
    Yaml(#[from] serde_norway::Error),
    #[error("table {table}: {message}")]
    Table { table: String, message: String },
    #[error("template has no resource {0}")]
    MissingResource(String),
}

/// The shape of one `AWS::DynamoDB::Table` resource, as the template declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    pub logical_id: String,
    pub billing_mode: String,
    /// (name, type) pairs, sorted by name.
    pub attributes: Vec<(String, String)>,
    pub key: KeySpec,
    /// Sorted by index name.
    pub gsis: Vec<IndexSpec>,
    pub stream_view_type: Option<String>,
    pub ttl_attribute: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    pub hash: String,
    pub range: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexSpec {
    pub name: String,
    pub key: KeySpec,
    pub projection: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawTableProps {
    billing_mode: String,
    attribute_definitions: Vec<RawAttr>,
    key_schema: Vec<RawKey>,
    #[serde(default)]
    global_secondary_indexes: Vec<RawGsi>,
    stream_specification: Option<RawStream>,
    time_to_live_specification: Option<RawTtl>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawAttr {
    attribute_name: String,
    attribute_type: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawKey {
    attribute_name: String,
    key_type: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawGsi {
    index_name: String,
    key_schema: Vec<RawKey>,
    projection: RawProjection,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawProjection {
    projection_type: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawStream {
    stream_view_type: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawTtl {
    attribute_name: String,
    enabled: bool,
}

/// The parsed template.
pub struct Template {
    root: Value,
}

impl Template {
    /// `infra/template.yaml` of this workspace.
    pub fn default_path() -> PathBuf {
        crate::workspace_root().join("infra/template.yaml")
    }

    pub fn load_default() -> Result<Self, TemplateError> {
        Self::load(&Self::default_path())
    }

    pub fn load(path: &Path) -> Result<Self, TemplateError> {
        let text = std::fs::read_to_string(path).map_err(|source| TemplateError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        Ok(Self {
            root: serde_norway::from_str(text)?,
        })
    }

    /// Resources as (logical id, type, properties).
    pub fn resources(&self) -> impl Iterator<Item = (&str, &str, &Value)> {
        self.root
            .get("Resources")
            .and_then(Value::as_mapping)
            .into_iter()
            .flat_map(|m| m.iter())
            .filter_map(|(id, res)| {
                Some((
                    id.as_str()?,
                    res.get("Type")?.as_str()?,
                    res.get("Properties").unwrap_or(&Value::Null),
                ))
            })
    }

    pub fn resource(&self, logical_id: &str) -> Result<&Value, TemplateError> {
        self.resources()
            .find(|(id, _, _)| *id == logical_id)
            .map(|(_, _, props)| props)
            .ok_or_else(|| TemplateError::MissingResource(logical_id.to_owned()))
    }

    /// Every DynamoDB table of the template.
    pub fn tables(&self) -> Result<Vec<TableSpec>, TemplateError> {
        self.resources()
            .filter(|(_, ty, _)| *ty == "AWS::DynamoDB::Table")
            .map(|(id, _, props)| table_spec(id, props))
            .collect()
    }

    pub fn table(&self, logical_id: &str) -> Result<TableSpec, TemplateError> {
        table_spec(logical_id, self.resource(logical_id)?)
    }
}

fn table_spec(logical_id: &str, props: &Value) -> Result<TableSpec, TemplateError> {
    let err = |message: String| TemplateError::Table {
        table: logical_id.to_owned(),
        message,
    };
    let raw: RawTableProps =
        serde_norway::from_value(props.clone()).map_err(|e| err(e.to_string()))?;
    let mut attributes: Vec<_> = raw
        .attribute_definitions
        .into_iter()
        .map(|a| (a.attribute_name, a.attribute_type))
        .collect();
    attributes.sort();
    let mut gsis = raw
        .global_secondary_indexes
        .into_iter()
        .map(|g| {
            Ok(IndexSpec {
                key: key_spec(&g.key_schema).map_err(|m| err(format!("{}: {m}", g.index_name)))?,
                name: g.index_name,
                projection: g.projection.projection_type,
            })
        })
        .collect::<Result<Vec<_>, TemplateError>>()?;
    gsis.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(TableSpec {
        logical_id: logical_id.to_owned(),
        billing_mode: raw.billing_mode,
        attributes,
        key: key_spec(&raw.key_schema).map_err(err)?,
        gsis,
        stream_view_type: raw.stream_specification.map(|s| s.stream_view_type),
        ttl_attribute: raw
            .time_to_live_specification
            .filter(|t| t.enabled)
            .map(|t| t.attribute_name),
    })
}

fn key_spec(keys: &[RawKey]) -> Result<KeySpec, String> {
    let find = |ty: &str| {
        keys.iter()
            .find(|k| k.key_type == ty)
            .map(|k| k.attribute_name.clone())
    };
    Ok(KeySpec {
        hash: find("HASH").ok_or("key schema has no HASH key")?,
        range: find("RANGE"),
    })
}

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

impl TableSpec {
    /// CreateTable for this spec under `table_name`. TTL is a separate call
    /// (UpdateTimeToLive), see [`crate::tables`].
    pub fn create_table(
        &self,
        client: &aws_sdk_dynamodb::Client,
        table_name: &str,
    ) -> aws_sdk_dynamodb::operation::create_table::builders::CreateTableFluentBuilder {
        let mut req = client
            .create_table()
            .table_name(table_name)
            .billing_mode(BillingMode::from(self.billing_mode.as_str()))
            .set_key_schema(Some(key_schema(&self.key)));
        for (name, ty) in &self.attributes {
            req = req.attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(name)
                    .attribute_type(ScalarAttributeType::from(ty.as_str()))
                    .build()
                    .expect("name and type are set"),
            );
        }
        for gsi in &self.gsis {
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
        if let Some(view) = &self.stream_view_type {
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
}
