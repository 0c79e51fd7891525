//! Creates the template's tables in the local DynamoDB under a name prefix, so tests
//! running in parallel each get tables of their own.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::types::{TableStatus, TimeToLiveSpecification};
use aws_sdk_dynamodb::Client;

use crate::template::{Template, TemplateError};

#[derive(Debug, thiserror::Error)]
pub enum TablesError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("DynamoDB: {0}")]
    Dynamo(String),
}

fn dynamo<E: std::error::Error + Send + Sync + 'static>(
    e: aws_sdk_dynamodb::error::SdkError<E>,
) -> TablesError {
    TablesError::Dynamo(aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string())
}

/// Physical table names by the template's logical id.
#[derive(Debug, Clone, Default)]
pub struct TableNames(pub BTreeMap<String, String>);

impl TableNames {
    pub fn get(&self, logical_id: &str) -> &str {
        self.0
            .get(logical_id)
            .unwrap_or_else(|| panic!("template has no table {logical_id}"))
    }
}

/// Creates every table of `template` as `<prefix><LogicalId>`, with its TTL setting, and
/// waits until each is active. Existing tables of the same name are left as they are.
pub async fn create_tables(
    client: &Client,
    template: &Template,
    prefix: &str,
) -> Result<TableNames, TablesError> {
    let mut names = BTreeMap::new();
    for spec in template.tables()? {
        let name = format!("{prefix}{}", spec.logical_id);
        let exists = client
            .describe_table()
            .table_name(&name)
            .send()
            .await
            .is_ok();
        if !exists {
            crate::template::create_table(client, &spec, &name)
                .send()
                .await
                .map_err(dynamo)?;
            wait_active(client, &name).await?;
            if let Some(attr) = &spec.ttl_attribute {
                client
                    .update_time_to_live()
                    .table_name(&name)
                    .time_to_live_specification(
                        TimeToLiveSpecification::builder()
                            .attribute_name(attr)
                            .enabled(true)
                            .build()
                            .expect("attribute and flag are set"),
                    )
                    .send()
                    .await
                    .map_err(dynamo)?;
            }
        }
        names.insert(spec.logical_id.clone(), name);
    }
    Ok(TableNames(names))
}

async fn wait_active(client: &Client, name: &str) -> Result<(), TablesError> {
    for _ in 0..200 {
        let out = client
            .describe_table()
            .table_name(name)
            .send()
            .await
            .map_err(dynamo)?;
        if out.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Err(TablesError::Dynamo(format!(
        "table {name} did not become active"
    )))
}

/// Deletes the tables (test clean-up).
pub async fn delete_tables(client: &Client, names: &TableNames) -> Result<(), TablesError> {
    for name in names.0.values() {
        client
            .delete_table()
            .table_name(name)
            .send()
            .await
            .map_err(dynamo)?;
    }
    Ok(())
}
