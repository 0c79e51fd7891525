//! DynamoDB adapter. Item layout (single table, see docs/data-model.md):
//!
//! | item | pk | sk |
//! |---|---|---|
//! | user state | `USER#<user>` | `STATE` |
//! | verification code | `USER#<user>` | `VERIF#<verification>` |
//! | idempotency record | `USER#<user>` | `IDEM#<key>` |
//! | face-token nonce | `FACENONCE#<nonce>` | `FACENONCE` |
//! | query | `QUERY#<query>` | `QUERY` (gsi1: `USER#<user>` / `QUERY#<query>`) |
//! | consent | `QUERY#<query>` | `CONSENT` |
//! | bank leg | `QUERY#<query>` | `LEG#<bank>` |
//! | dispute of a report's card | `QUERY#<query>` | `DISPUTE#<card_id>` (kept after the report: decision 157) |
//! | bank nonce | `BANKNONCE#<bank>#<nonce>` | `BANKNONCE` |
//! | gate of a lane (bank, SMS) | `GATE#<lane>` | `RATE#<i>`, `FLIGHT#<i>`, `CIRCUIT` (see `gate`) |
//!
//! Every item carries `entity` (stream filters match on it); short-lived items carry
//! `ttl` (epoch seconds). Items with timed work carry `due_pk`/`due_at` (the sparse
//! `due` index the sweeper reads), `due_pk` sharded as `<KIND>#<0-7>`.

mod disputes;
mod gate;
mod queries;
mod reports;
mod submission;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, Put};
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, TimeDelta, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::model::ids::{QueryId, UserId};
use crate::model::profile::UserProfile;
use crate::ports::{ProfileStore, StoreError};
use crate::records::UserState;

/// `BatchGetItem` takes at most 100 keys.
pub(crate) const BATCH_GET: usize = 100;
/// Rounds of a `BatchGetItem` chunk while keys come back unprocessed.
const BATCH_GET_ROUNDS: u32 = 5;

/// Shards of each kind of timed work in the `due` index.
pub const DUE_SHARDS: u8 = 8;

/// `due_pk` of timed work about a query: spread over [`DUE_SHARDS`] partitions.
pub fn due_pk(kind: &str, query: &QueryId) -> String {
    let last = query.to_string().bytes().last().unwrap_or(0);
    format!("{kind}#{}", last % DUE_SHARDS)
}

pub fn query_pk(query: &QueryId) -> String {
    format!("QUERY#{query}")
}

pub type Item = HashMap<String, AttributeValue>;

/// Physical table names (the template's tables, through `TABLE_NAME`/`USERS_TABLE_NAME`).
#[derive(Debug, Clone)]
pub struct Tables {
    pub main: String,
    pub users: String,
}

/// What a failed `TransactWriteItems` gives back.
pub(crate) type TransactError =
    SdkError<TransactWriteItemsError, aws_sdk_dynamodb::config::http::HttpResponse>;

#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    tables: Tables,
}

pub fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub fn unavailable<E, R>(e: SdkError<E, R>) -> StoreError
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    StoreError::Unavailable(crate::adapters::redact::sdk_error(&e))
}

impl DynamoStore {
    /// One `UpdateItem` of the main table's item `key` under `condition` (`names` for
    /// attribute names that are reserved words): `false` when the condition refused it.
    pub(crate) async fn update_where(
        &self,
        key: Item,
        update: &str,
        condition: &str,
        names: &[(&str, &str)],
        values: &[(&str, AttributeValue)],
    ) -> Result<bool, StoreError> {
        let mut req = self
            .client
            .update_item()
            .table_name(&self.tables.main)
            .set_key(Some(key))
            .update_expression(update)
            .condition_expression(condition);
        for (k, v) in names {
            req = req.expression_attribute_names(*k, *v);
        }
        for (k, v) in values {
            req = req.expression_attribute_values(*k, v.clone());
        }
        written(req.send().await)
    }
}

/// The outcome of a conditional write: `true` written, `false` refused by its condition.
pub(crate) fn written<T, E, R>(result: Result<T, SdkError<E, R>>) -> Result<bool, StoreError>
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match result {
        Ok(_) => Ok(true),
        Err(e)
            if e.as_service_error()
                .and_then(|e| e.code())
                .is_some_and(|c| c == "ConditionalCheckFailedException") =>
        {
            Ok(false)
        }
        Err(e) => Err(unavailable(e)),
    }
}

/// The per-item reason codes of a cancelled transaction (`ConditionalCheckFailed`,
/// `TransactionConflict`, `None`, ...); any other failure is the store being unavailable.
pub(crate) fn cancellation_reasons<R>(
    err: SdkError<aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError, R>,
) -> Result<Vec<String>, StoreError>
where
    R: std::fmt::Debug + Send + Sync + 'static,
{
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
    match err.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(ex)) => Ok(ex
            .cancellation_reasons()
            .iter()
            .map(|r| r.code().unwrap_or("None").to_owned())
            .collect()),
        _ => Err(unavailable(err)),
    }
}

/// A record plus its keys and extra attributes, as an item.
pub fn to_item<T: Serialize>(
    record: &T,
    keys: &[(&str, AttributeValue)],
) -> Result<Item, StoreError> {
    let mut item: Item = serde_dynamo::to_item(record)
        .map_err(|e| StoreError::Corrupt(crate::adapters::redact::serde_error(&e)))?;
    // Absent optional fields are left out rather than stored as NULL.
    item.retain(|_, v| !matches!(v, AttributeValue::Null(true)));
    for (k, v) in keys {
        item.insert((*k).to_owned(), v.clone());
    }
    Ok(item)
}

pub fn from_item<T: DeserializeOwned>(mut item: Item) -> Result<T, StoreError> {
    for k in [
        "pk", "sk", "entity", "ttl", "gsi1pk", "gsi1sk", "due_pk", "due_at",
    ] {
        item.remove(k);
    }
    serde_dynamo::from_item(item)
        .map_err(|e| StoreError::Corrupt(crate::adapters::redact::serde_error(&e)))
}

/// TTL value: DynamoDB deletes the item some time after this instant.
pub fn ttl_at(t: DateTime<Utc>) -> AttributeValue {
    n(t.timestamp())
}

pub fn user_pk(user: &UserId) -> String {
    format!("USER#{user}")
}

/// Every item `query` finds, across its pages (a page holds at most 1 MB: 500 answered
/// legs, a report's parts or a lane's permits may take several).
pub(crate) async fn all_items(query: QueryFluentBuilder) -> Result<Vec<Item>, StoreError> {
    query
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .map_err(unavailable)
}

/// How many per-item writes of one query run at once: a national query has hundreds of
/// legs, and one query must not take the table's burst from everyone else.
pub(crate) const WRITES_AT_ONCE: usize = 25;

/// Runs `writes`, at most [`WRITES_AT_ONCE`] at a time; their results, in no order.
pub(crate) async fn at_most_a_few<F: std::future::Future>(
    writes: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    use futures::StreamExt;
    futures::stream::iter(writes)
        .buffer_unordered(WRITES_AT_ONCE)
        .collect()
        .await
}

pub(crate) fn key(pk: String, sk: String) -> Item {
    HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
}

/// How long after expiry short-lived records linger before TTL removes them (reads
/// check expiry themselves).
pub(crate) const TTL_GRACE: TimeDelta = TimeDelta::days(1);

impl DynamoStore {
    pub fn new(client: Client, tables: Tables) -> Self {
        Self { client, tables }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    /// One `TransactWriteItems` of `items`; the caller reads the cancellation reasons.
    pub(crate) async fn transact(
        &self,
        items: Vec<aws_sdk_dynamodb::types::TransactWriteItem>,
    ) -> Result<(), TransactError> {
        self.client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
            .map(|_| ())
    }

    pub(crate) async fn get(&self, pk: String, sk: String) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.main)
            .set_key(Some(key(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(out.item)
    }

    /// The items of `keys` in `table` that exist, in any order, in `BatchGetItem`s of at
    /// most [`BATCH_GET`] keys (`keys` distinct, as the operation requires). Keys left
    /// unprocessed (throttling) are asked for again a few times, then it is an error:
    /// never an item reported absent that was not read.
    pub(crate) async fn batch_get(
        &self,
        table: &str,
        keys: Vec<Item>,
        consistent: bool,
    ) -> Result<Vec<Item>, StoreError> {
        let mut found = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(BATCH_GET) {
            let mut keys = chunk.to_vec();
            for round in 0..BATCH_GET_ROUNDS {
                if round > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(25 << round)).await;
                }
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .consistent_read(consistent)
                    .build()
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(table, request)
                    .send()
                    .await
                    .map_err(unavailable)?;
                found.extend(
                    out.responses
                        .and_then(|mut r| r.remove(table))
                        .unwrap_or_default(),
                );
                keys = out
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(table))
                    .map(|k| k.keys)
                    .unwrap_or_default();
                if keys.is_empty() {
                    break;
                }
            }
            if !keys.is_empty() {
                return Err(StoreError::Unavailable(format!(
                    "{} keys left unprocessed by BatchGetItem",
                    keys.len()
                )));
            }
        }
        Ok(found)
    }

    fn state_put(
        &self,
        user: &UserId,
        state: &UserState,
        expected_version: u64,
    ) -> Result<Put, StoreError> {
        let stored = UserState {
            version: expected_version + 1,
            ..state.clone()
        };
        let item = to_item(
            &stored,
            &[
                ("pk", s(user_pk(user))),
                ("sk", s("STATE")),
                ("entity", s("USER_STATE")),
            ],
        )?;
        let put = Put::builder()
            .table_name(&self.tables.main)
            .set_item(Some(item));
        let put = if expected_version == 0 {
            put.condition_expression("attribute_not_exists(pk)")
        } else {
            put.condition_expression("version = :v")
                .expression_attribute_values(":v", n(expected_version))
        };
        put.build().map_err(|e| StoreError::Corrupt(e.to_string()))
    }
}

#[async_trait]
impl ProfileStore for DynamoStore {
    async fn profile(&self, user: &UserId) -> Result<Option<UserProfile>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.users)
            .key("user_id", s(user.as_str()))
            .send()
            .await
            .map_err(unavailable)?;
        out.item
            .map(|i| {
                serde_dynamo::from_item(i)
                    .map_err(|e| StoreError::Corrupt(crate::adapters::redact::serde_error(&e)))
            })
            .transpose()
    }

    async fn profiles(&self, users: &[UserId]) -> Vec<Result<Option<UserProfile>, StoreError>> {
        let mut distinct: Vec<&UserId> = users.iter().collect();
        distinct.sort();
        distinct.dedup();
        let keys = distinct
            .iter()
            .map(|u| HashMap::from([("user_id".to_owned(), s(u.as_str()))]))
            .collect();
        let items = match self.batch_get(&self.tables.users, keys, false).await {
            Ok(items) => items,
            Err(e) => return users.iter().map(|_| Err(e.clone())).collect(),
        };
        let by_user: HashMap<String, Item> = items
            .into_iter()
            .filter_map(|i| Some((i.get("user_id")?.as_s().ok()?.clone(), i)))
            .collect();
        users
            .iter()
            .map(|u| match by_user.get(u.as_str()) {
                None => Ok(None),
                Some(i) => serde_dynamo::from_item(i.clone())
                    .map(Some)
                    .map_err(|e| StoreError::Corrupt(crate::adapters::redact::serde_error(&e))),
            })
            .collect()
    }
}
