//! The shape of an `AWS::DynamoDB::Table` resource: what the local stack creates and
//! what the tests compare DynamoDB Local's tables against.

use serde::Deserialize;
use serde_json::Value;

use crate::TemplateError;

/// One table, as the template declares it.
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
    /// The TTL attribute, if TTL is enabled.
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

impl TableSpec {
    /// The spec of table `logical_id` from its `Properties`.
    pub fn from_properties(logical_id: &str, props: &Value) -> Result<Self, TemplateError> {
        let err = |message: String| TemplateError::Table {
            table: logical_id.to_owned(),
            message,
        };
        let raw = RawTableProps::deserialize(props).map_err(|e| err(e.to_string()))?;
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
                    key: key_spec(&g.key_schema)
                        .map_err(|m| err(format!("{}: {m}", g.index_name)))?,
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

#[cfg(test)]
mod tests {
    use crate::Template;

    const TEMPLATE: &str = r#"
Resources:
  T:
    Type: AWS::DynamoDB::Table
    Properties:
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions:
        - { AttributeName: sk, AttributeType: S }
        - { AttributeName: pk, AttributeType: S }
      KeySchema:
        - { AttributeName: pk, KeyType: HASH }
        - { AttributeName: sk, KeyType: RANGE }
      GlobalSecondaryIndexes:
        - IndexName: bySk
          KeySchema: [{ AttributeName: sk, KeyType: HASH }]
          Projection: { ProjectionType: KEYS_ONLY }
      StreamSpecification: { StreamViewType: NEW_AND_OLD_IMAGES }
      TimeToLiveSpecification: { AttributeName: ttl, Enabled: true }
  NoHash:
    Type: AWS::DynamoDB::Table
    Properties:
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions: [{ AttributeName: pk, AttributeType: S }]
      KeySchema: [{ AttributeName: pk, KeyType: RANGE }]
"#;

    #[test]
    fn reads_keys_indexes_stream_and_ttl() {
        let t = Template::parse(TEMPLATE).unwrap().table("T").unwrap();
        assert_eq!(t.attributes[0], ("pk".into(), "S".into()));
        assert_eq!(t.key.hash, "pk");
        assert_eq!(t.key.range.as_deref(), Some("sk"));
        assert_eq!(t.gsis[0].name, "bySk");
        assert_eq!(t.gsis[0].projection, "KEYS_ONLY");
        assert_eq!(t.stream_view_type.as_deref(), Some("NEW_AND_OLD_IMAGES"));
        assert_eq!(t.ttl_attribute.as_deref(), Some("ttl"));
    }

    #[test]
    fn refuses_a_key_schema_without_hash_key() {
        let template = Template::parse(TEMPLATE).unwrap();
        let e = template.tables().unwrap_err().to_string();
        assert!(e.contains("NoHash") && e.contains("HASH"), "{e}");
        assert!(template.table("Missing").is_err());
    }

    #[test]
    fn reads_the_project_template() {
        let t = Template::load_default()
            .unwrap()
            .table("CardLookupTable")
            .unwrap();
        assert_eq!(t.ttl_attribute.as_deref(), Some("ttl"));
        assert!(t.stream_view_type.is_some());
    }
}
