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
//!
//! Every item carries `entity` (stream filters match on it); short-lived items carry
//! `ttl` (epoch seconds).

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use aws_sdk_dynamodb::Client;
use serde::de::DeserializeOwned;
use serde::Serialize;
use time::{Duration, OffsetDateTime};

use crate::model::ids::{UserId, VerificationId};
use crate::model::profile::UserProfile;
use crate::ports::{ProfileStore, StoreError, SubmissionStore, SubmitError};
use crate::records::{
    IdempotencyRecord, Submission, SubmitConflict, UserState, VerificationRecord,
};

pub type Item = HashMap<String, AttributeValue>;

/// Physical table names (from the SAM template's outputs, through the environment).
#[derive(Debug, Clone)]
pub struct Tables {
    pub main: String,
    pub users: String,
}

impl Tables {
    /// From `TABLE_NAME` and `USERS_TABLE_NAME`.
    pub fn from_env() -> Result<Self, String> {
        let var = |n: &str| std::env::var(n).map_err(|_| format!("{n} must be set"));
        Ok(Self {
            main: var("TABLE_NAME")?,
            users: var("USERS_TABLE_NAME")?,
        })
    }
}

#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    tables: Tables,
}

pub fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub fn unavailable<E, R>(e: SdkError<E, R>) -> StoreError
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    StoreError::Unavailable(DisplayErrorContext(e).to_string())
}

/// A record plus its keys and extra attributes, as an item.
pub fn to_item<T: Serialize>(
    record: &T,
    keys: &[(&str, AttributeValue)],
) -> Result<Item, StoreError> {
    let mut item: Item =
        serde_dynamo::to_item(record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
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
    serde_dynamo::from_item(item).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// TTL value: DynamoDB deletes the item some time after this instant.
pub fn ttl_at(t: OffsetDateTime) -> AttributeValue {
    n(t.unix_timestamp())
}

pub fn user_pk(user: &UserId) -> String {
    format!("USER#{user}")
}

fn key(pk: String, sk: String) -> Item {
    HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
}

/// How long after expiry short-lived records linger before TTL removes them (reads
/// check expiry themselves).
const TTL_GRACE: Duration = Duration::days(1);

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

    async fn get(&self, pk: String, sk: String) -> Result<Option<Item>, StoreError> {
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
            .map(|i| serde_dynamo::from_item(i).map_err(|e| StoreError::Corrupt(e.to_string())))
            .transpose()
    }
}

#[async_trait]
impl SubmissionStore for DynamoStore {
    async fn user_state(&self, user: &UserId) -> Result<UserState, StoreError> {
        match self.get(user_pk(user), "STATE".into()).await? {
            Some(item) => from_item(item),
            None => Ok(UserState::default()),
        }
    }

    async fn put_user_state(
        &self,
        user: &UserId,
        state: &UserState,
        expected_version: u64,
    ) -> Result<(), StoreError> {
        let put = self.state_put(user, state, expected_version)?;
        let result = self
            .client
            .put_item()
            .table_name(put.table_name())
            .set_item(Some(put.item().clone()))
            .set_condition_expression(put.condition_expression().map(str::to_owned))
            .set_expression_attribute_values(put.expression_attribute_values().cloned())
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Err(StoreError::Conflict)
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn put_verification(&self, record: &VerificationRecord) -> Result<(), StoreError> {
        let item = to_item(
            record,
            &[
                ("pk", s(user_pk(&record.user_id))),
                ("sk", s(format!("VERIF#{}", record.verification_id))),
                ("entity", s("VERIFICATION")),
                ("ttl", ttl_at(record.expires_at + TTL_GRACE)),
            ],
        )?;
        self.client
            .put_item()
            .table_name(&self.tables.main)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn verification(
        &self,
        user: &UserId,
        id: &VerificationId,
    ) -> Result<Option<VerificationRecord>, StoreError> {
        self.get(user_pk(user), format!("VERIF#{id}"))
            .await?
            .map(from_item)
            .transpose()
    }

    async fn record_code_failure(
        &self,
        user: &UserId,
        id: &VerificationId,
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.tables.main)
            .set_key(Some(key(user_pk(user), format!("VERIF#{id}"))))
            .update_expression("ADD attempts :one")
            .condition_expression("attribute_exists(pk) AND used = :false")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":false", AttributeValue::Bool(false))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Already used or gone: nothing left to count against.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn idempotency(
        &self,
        user: &UserId,
        key: &str,
        now: OffsetDateTime,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let record: Option<IdempotencyRecord> = self
            .get(user_pk(user), format!("IDEM#{key}"))
            .await?
            .map(from_item)
            .transpose()?;
        Ok(record.filter(|r| r.expires_at > now))
    }

    async fn submit(&self, sub: &Submission) -> Result<(), SubmitError> {
        let q = &sub.query;
        let user = &q.user_id;
        let corrupt = |e: aws_sdk_dynamodb::error::BuildError| StoreError::Corrupt(e.to_string());
        let put = |item: Item| {
            Put::builder()
                .table_name(&self.tables.main)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(pk)")
                .build()
                .map_err(corrupt)
        };
        let query_item = to_item(
            q,
            &[
                ("pk", s(format!("QUERY#{}", q.query_id))),
                ("sk", s("QUERY")),
                ("entity", s("QUERY")),
                ("gsi1pk", s(user_pk(user))),
                ("gsi1sk", s(format!("QUERY#{}", q.query_id))),
                ("due_pk", s("QUERY_DEADLINE")),
                (
                    "due_at",
                    s(crate::model::timestamp::format(q.report_due_by)),
                ),
            ],
        )?;
        let consent_item = to_item(
            &sub.consent,
            &[
                ("pk", s(format!("QUERY#{}", q.query_id))),
                ("sk", s("CONSENT")),
                ("entity", s("CONSENT")),
            ],
        )?;
        let idem_item = to_item(
            &sub.idempotency,
            &[
                ("pk", s(user_pk(user))),
                ("sk", s(format!("IDEM#{}", sub.idempotency.key))),
                ("entity", s("IDEMPOTENCY")),
                ("ttl", ttl_at(sub.idempotency.expires_at + TTL_GRACE)),
            ],
        )?;
        let nonce_item = HashMap::from([
            ("pk".to_owned(), s(format!("FACENONCE#{}", sub.face_nonce))),
            ("sk".to_owned(), s("FACENONCE")),
            ("entity".to_owned(), s("FACE_NONCE")),
            (
                "ttl".to_owned(),
                ttl_at(sub.face_nonce_expires_at + TTL_GRACE),
            ),
        ]);
        let consume_code = Update::builder()
            .table_name(&self.tables.main)
            .set_key(Some(key(
                user_pk(user),
                format!("VERIF#{}", sub.verification_id),
            )))
            .update_expression("SET used = :true")
            .condition_expression("attribute_exists(pk) AND used = :false AND attempts < :max")
            .expression_attribute_values(":true", AttributeValue::Bool(true))
            .expression_attribute_values(":false", AttributeValue::Bool(false))
            .expression_attribute_values(":max", n(sub.max_code_attempts))
            .build()
            .map_err(corrupt)?;

        // Order matters: cancellation reasons come back by index.
        let items = vec![
            TransactWriteItem::builder()
                .put(self.state_put(user, &sub.state, sub.expected_state_version)?)
                .build(),
            TransactWriteItem::builder().put(put(idem_item)?).build(),
            TransactWriteItem::builder().update(consume_code).build(),
            TransactWriteItem::builder().put(put(nonce_item)?).build(),
            TransactWriteItem::builder().put(put(query_item)?).build(),
            TransactWriteItem::builder().put(put(consent_item)?).build(),
        ];
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        let err = match result {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        let reasons: Vec<Option<String>> = match err.as_service_error() {
            Some(TransactWriteItemsError::TransactionCanceledException(ex)) => ex
                .cancellation_reasons()
                .iter()
                .map(|r| r.code().map(str::to_owned))
                .collect(),
            Some(TransactWriteItemsError::TransactionInProgressException(_)) => {
                return Err(SubmitConflict::StateChanged.into())
            }
            _ => return Err(unavailable(err).into()),
        };
        let failed = |i: usize| {
            reasons
                .get(i)
                .and_then(|c| c.as_deref())
                .is_some_and(|c| c == "ConditionalCheckFailed")
        };
        let conflict = reasons
            .iter()
            .any(|c| c.as_deref() == Some("TransactionConflict"));
        Err(if failed(0) || conflict {
            SubmitConflict::StateChanged.into()
        } else if failed(1) {
            SubmitConflict::IdempotencyKeyTaken.into()
        } else if failed(2) {
            SubmitConflict::VerificationUsed.into()
        } else if failed(3) {
            SubmitConflict::FaceNonceUsed.into()
        } else {
            StoreError::Unavailable(format!("transaction cancelled: {reasons:?}")).into()
        })
    }
}
