//! The submission path's store on DynamoDB.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use time::OffsetDateTime;

use super::*;
use crate::model::ids::{UserId, VerificationId};
use crate::ports::{StoreError, SubmissionStore, SubmitError};
use crate::records::{
    IdempotencyRecord, Submission, SubmitConflict, UserState, VerificationRecord,
};

fn face_nonce_item(nonce: &str, expires_at: OffsetDateTime) -> Item {
    HashMap::from([
        ("pk".to_owned(), s(format!("FACENONCE#{nonce}"))),
        ("sk".to_owned(), s("FACENONCE")),
        ("entity".to_owned(), s("FACE_NONCE")),
        ("ttl".to_owned(), ttl_at(expires_at + TTL_GRACE)),
    ])
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
        if written(result)? {
            Ok(())
        } else {
            Err(StoreError::Conflict)
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
        // Refused: already used or gone, nothing left to count against.
        written(result).map(drop)
    }

    async fn consume_verification(
        &self,
        user: &UserId,
        id: &VerificationId,
        max_attempts: u32,
    ) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.tables.main)
            .set_key(Some(key(user_pk(user), format!("VERIF#{id}"))))
            .update_expression("SET used = :true")
            .condition_expression("attribute_exists(pk) AND used = :false AND attempts < :max")
            .expression_attribute_values(":true", AttributeValue::Bool(true))
            .expression_attribute_values(":false", AttributeValue::Bool(false))
            .expression_attribute_values(":max", n(max_attempts))
            .send()
            .await;
        written(result)
    }

    async fn consume_face_nonce(
        &self,
        nonce: &str,
        expires_at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.tables.main)
            .set_item(Some(face_nonce_item(nonce, expires_at)))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        written(result)
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
                ("due_pk", s(due_pk("DEADLINE", &q.query_id))),
                ("unsettled", n(sub.legs.len())),
                (
                    "due_at",
                    s(crate::model::timestamp::format(q.collect_until)),
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

        let mut leg_items = Vec::with_capacity(sub.legs.len());
        for leg in &sub.legs {
            let item = to_item(
                leg,
                &[
                    ("pk", s(query_pk(&leg.query_id))),
                    ("sk", s(format!("LEG#{}", leg.bank))),
                    ("entity", s("LEG")),
                ],
            )?;
            leg_items.push(TransactWriteItem::builder().put(put(item)?).build());
        }
        // Order matters: cancellation reasons come back by index.
        let mut items = vec![
            TransactWriteItem::builder()
                .put(self.state_put(user, &sub.state, sub.expected_state_version)?)
                .build(),
            TransactWriteItem::builder().put(put(idem_item)?).build(),
            TransactWriteItem::builder().update(consume_code).build(),
            TransactWriteItem::builder().put(put(nonce_item)?).build(),
            TransactWriteItem::builder().put(put(query_item)?).build(),
            TransactWriteItem::builder().put(put(consent_item)?).build(),
        ];
        items.extend(leg_items);
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
        if matches!(
            err.as_service_error(),
            Some(TransactWriteItemsError::TransactionInProgressException(_))
        ) {
            return Err(SubmitConflict::StateChanged.into());
        }
        let reasons = cancellation_reasons(err)?;
        let failed =
            |i: usize| reasons.get(i).map(String::as_str) == Some("ConditionalCheckFailed");
        let conflict = reasons.iter().any(|c| c == "TransactionConflict");
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
