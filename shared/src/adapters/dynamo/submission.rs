//! The submission path's store on DynamoDB.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, ReturnValue, TransactWriteItem, Update};
use chrono::{DateTime, Utc};

use super::*;
use crate::model::ids::{UserId, VerificationId};
use crate::model::purpose::Purpose;
use crate::model::timestamp;
use crate::ports::{StoreError, SubmissionStore, SubmitError};
use crate::records::{
    IdempotencyClaim, IdempotencyRecord, PasswordSlot, Submission, SubmitConflict, UserState,
    VerificationRecord,
};
use crate::rules::idempotency;
use crate::rules::password::{self, PasswordPolicy};

fn face_nonce_item(nonce: &str, expires_at: DateTime<Utc>) -> Item {
    HashMap::from([
        ("pk".to_owned(), s(format!("FACENONCE#{nonce}"))),
        ("sk".to_owned(), s("FACENONCE")),
        ("entity".to_owned(), s("FACE_NONCE")),
        ("ttl".to_owned(), ttl_at(expires_at + TTL_GRACE)),
    ])
}

/// The state item as a conditional update left it; `None` if its condition refused it.
fn updated_state(
    result: Result<
        aws_sdk_dynamodb::operation::update_item::UpdateItemOutput,
        aws_sdk_dynamodb::error::SdkError<
            aws_sdk_dynamodb::operation::update_item::UpdateItemError,
            aws_sdk_dynamodb::config::http::HttpResponse,
        >,
    >,
) -> Result<Option<UserState>, StoreError> {
    match result {
        Ok(out) => out.attributes.map(from_item).transpose(),
        Err(e) => written::<(), _, _>(Err(e)).map(|_| None),
    }
}

/// A code may be used once its comparison matched: the matching comparison itself
/// counted as an attempt, so up to and including `max` (`rules::sms_code::may_consume`).
const CODE_CONSUMABLE: &str = "attribute_exists(pk) AND used = :false AND attempts <= :max";

/// No payment-password lock, or one that has ended (timestamps sort as strings): the
/// table's side of `rules::password`.
const UNLOCKED: &str =
    "attribute_not_exists(password_locked_until) OR password_locked_until <= :now";

impl DynamoStore {
    /// An update of the user's state item (each adds one to `version`: `:one`).
    fn state_update(
        &self,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.tables.main)
            .expression_attribute_values(":one", n(1))
    }

    fn idempotency_item(&self, record: &IdempotencyRecord) -> Result<Item, StoreError> {
        to_item(
            record,
            &[
                ("pk", s(user_pk(&record.user_id))),
                ("sk", s(format!("IDEM#{}", record.key))),
                ("entity", s("IDEMPOTENCY")),
                ("ttl", ttl_at(record.expires_at + TTL_GRACE)),
            ],
        )
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

    async fn reserve_code_attempt(
        &self,
        user: &UserId,
        id: &VerificationId,
        purpose: Purpose,
        now: DateTime<Utc>,
        max_attempts: u32,
    ) -> Result<Option<VerificationRecord>, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.tables.main)
            .set_key(Some(key(user_pk(user), format!("VERIF#{id}"))))
            .update_expression("ADD attempts :one")
            // `rules::sms_code::may_compare`, decided by the table so parallel guesses
            // cannot both take the last attempt.
            .condition_expression(
                "attribute_exists(pk) AND used = :false AND attempts < :max \
                 AND purpose = :purpose AND expires_at > :now",
            )
            .expression_attribute_values(":purpose", s(purpose.as_str()))
            .expression_attribute_values(":now", s(timestamp::format(now)))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":false", AttributeValue::Bool(false))
            .expression_attribute_values(":max", n(max_attempts))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(out) => out.attributes.map(from_item).transpose(),
            Err(e) => written::<(), _, _>(Err(e)).map(|_| None),
        }
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
            .condition_expression(CODE_CONSUMABLE)
            .expression_attribute_values(":true", AttributeValue::Bool(true))
            .expression_attribute_values(":false", AttributeValue::Bool(false))
            .expression_attribute_values(":max", n(max_attempts))
            .send()
            .await;
        written(result)
    }

    async fn reserve_password_slot(
        &self,
        user: &UserId,
        holder: &str,
        now: DateTime<Utc>,
        policy: &PasswordPolicy,
    ) -> Result<(PasswordSlot, UserState), StoreError> {
        let now_s = s(timestamp::format(now));
        let last = policy.max_failures.saturating_sub(1);
        // Bounded: every round that fails, some other request's reservation succeeded,
        // and after `max_failures` of them the lock refuses everyone.
        for _ in 0..=policy.max_failures * 4 {
            // One of the first `max - 1` slots.
            let ordinary = self
                .state_update()
                .set_key(Some(key(user_pk(user), "STATE".into())))
                .update_expression(
                    "SET password_failures = if_not_exists(password_failures, :zero) + :one, \
                     version = if_not_exists(version, :zero) + :one, entity = :entity \
                     REMOVE password_locked_until, password_lock_holder",
                )
                .condition_expression(format!(
                    "({UNLOCKED}) AND (attribute_not_exists(password_failures) \
                     OR password_failures < :last)"
                ))
                .expression_attribute_values(":now", now_s.clone())
                .expression_attribute_values(":last", n(last))
                .expression_attribute_values(":zero", n(0))
                .expression_attribute_values(":entity", s("USER_STATE"))
                .return_values(ReturnValue::AllNew)
                .send()
                .await;
            if let Some(state) = updated_state(ordinary)? {
                return Ok((PasswordSlot::Ordinary, state));
            }
            // The last slot locks at once; this reservation holds the lock.
            let failures_at_last = if last == 0 {
                "(attribute_not_exists(password_failures) OR password_failures = :last)"
            } else {
                "password_failures = :last"
            };
            let last_slot = self
                .state_update()
                .set_key(Some(key(user_pk(user), "STATE".into())))
                .update_expression(
                    "SET password_failures = :zero, password_locked_until = :until, \
                     password_lock_holder = :holder, \
                     version = if_not_exists(version, :zero) + :one, entity = :entity",
                )
                .condition_expression(format!("({UNLOCKED}) AND {failures_at_last}"))
                .expression_attribute_values(":now", now_s.clone())
                .expression_attribute_values(":last", n(last))
                .expression_attribute_values(":until", s(timestamp::format(policy.lock_until(now))))
                .expression_attribute_values(":holder", s(holder))
                .expression_attribute_values(":zero", n(0))
                .expression_attribute_values(":entity", s("USER_STATE"))
                .return_values(ReturnValue::AllNew)
                .send()
                .await;
            if let Some(state) = updated_state(last_slot)? {
                return Ok((PasswordSlot::Last, state));
            }
            let state = self.user_state(user).await?;
            if let Some(slot) = password::no_slot(&state, now) {
                return Ok((slot, state));
            }
        }
        Err(StoreError::Unavailable("password slot contention".into()))
    }

    async fn password_matched(
        &self,
        user: &UserId,
        holder: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let result = self
            .state_update()
            .set_key(Some(key(user_pk(user), "STATE".into())))
            .update_expression(
                "SET password_failures = :zero, version = version + :one \
                 REMOVE password_locked_until, password_lock_holder",
            )
            .condition_expression(format!(
                "attribute_exists(pk) AND (({UNLOCKED}) OR password_lock_holder = :holder)"
            ))
            .expression_attribute_values(":now", s(timestamp::format(now)))
            .expression_attribute_values(":holder", s(holder))
            .expression_attribute_values(":zero", n(0))
            .send()
            .await;
        // Refused: another request's lock is active, and a success does not lift it.
        written(result).map(drop)
    }

    async fn password_failed_last(
        &self,
        user: &UserId,
        holder: &str,
        now: DateTime<Utc>,
        policy: &PasswordPolicy,
    ) -> Result<DateTime<Utc>, StoreError> {
        let until = policy.lock_until(now);
        let result = self
            .state_update()
            .set_key(Some(key(user_pk(user), "STATE".into())))
            .update_expression(
                "SET password_locked_until = :until, version = version + :one \
                 REMOVE password_lock_holder",
            )
            .condition_expression("password_lock_holder = :holder")
            .expression_attribute_values(":until", s(timestamp::format(until)))
            .expression_attribute_values(":holder", s(holder))
            .send()
            .await;
        if written(result)? {
            return Ok(until);
        }
        // Not the holder any more: the lock it set stands as it is.
        Ok(self
            .user_state(user)
            .await?
            .password_locked_until
            .unwrap_or(until))
    }

    async fn face_nonce_used(&self, nonce: &str) -> Result<bool, StoreError> {
        Ok(self
            .get(format!("FACENONCE#{nonce}"), "FACENONCE".into())
            .await?
            .is_some())
    }

    async fn consume_face_nonce(
        &self,
        nonce: &str,
        expires_at: DateTime<Utc>,
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
        now: DateTime<Utc>,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let record: Option<IdempotencyRecord> = self
            .get(user_pk(user), format!("IDEM#{key}"))
            .await?
            .map(from_item)
            .transpose()?;
        Ok(record.filter(|r| idempotency::is_live(r, now)))
    }

    async fn claim_idempotency(
        &self,
        claim: &IdempotencyRecord,
        now: DateTime<Utc>,
    ) -> Result<IdempotencyClaim, StoreError> {
        let item = self.idempotency_item(claim)?;
        let now_s = s(timestamp::format(now));
        // A few rounds: a refused claim's record may be released before it is read.
        for _ in 0..3 {
            let result = self
                .client
                .put_item()
                .table_name(&self.tables.main)
                .set_item(Some(item.clone()))
                // `rules::idempotency::claimable`, decided by the table.
                .condition_expression(
                    "attribute_not_exists(pk) OR expires_at <= :now \
                     OR (in_progress = :true AND lease_until <= :now)",
                )
                .expression_attribute_values(":now", now_s.clone())
                .expression_attribute_values(":true", AttributeValue::Bool(true))
                .send()
                .await;
            if written(result)? {
                return Ok(IdempotencyClaim::Claimed);
            }
            if let Some(taken) = self.idempotency(&claim.user_id, &claim.key, now).await? {
                return Ok(IdempotencyClaim::Taken(taken));
            }
        }
        Err(StoreError::Unavailable("idempotency key contention".into()))
    }

    async fn release_idempotency(
        &self,
        user: &UserId,
        key_: &str,
        owner: &str,
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.tables.main)
            .set_key(Some(key(user_pk(user), format!("IDEM#{key_}"))))
            .condition_expression("in_progress = :true AND #owner = :owner")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":true", AttributeValue::Bool(true))
            .expression_attribute_values(":owner", s(owner))
            .send()
            .await;
        // Refused: no longer this request's claim (taken over after its lease).
        written(result).map(drop)
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
                ("unsettled", n(q.banks.len())),
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
        let idem_item = self.idempotency_item(&sub.idempotency)?;
        let owner = sub
            .idempotency
            .owner
            .clone()
            .ok_or_else(|| StoreError::Corrupt("a submission without its claim".into()))?;
        // Completes this request's own claim only (not one taken over after its lease).
        let complete_claim = Put::builder()
            .table_name(&self.tables.main)
            .set_item(Some(idem_item))
            .condition_expression("in_progress = :true AND #owner = :owner")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":true", AttributeValue::Bool(true))
            .expression_attribute_values(":owner", s(owner))
            .build()
            .map_err(corrupt)?;
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
            .condition_expression(CODE_CONSUMABLE)
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
            TransactWriteItem::builder().put(complete_claim).build(),
            TransactWriteItem::builder().update(consume_code).build(),
            TransactWriteItem::builder().put(put(nonce_item)?).build(),
            TransactWriteItem::builder().put(put(query_item)?).build(),
            TransactWriteItem::builder().put(put(consent_item)?).build(),
        ];
        let result = self.transact(items).await;
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
        // The key first: a twin that completed it must get its answer, not "in progress".
        Err(if failed(1) {
            SubmitConflict::IdempotencyKeyTaken.into()
        } else if failed(0) || conflict {
            SubmitConflict::StateChanged.into()
        } else if failed(2) {
            SubmitConflict::VerificationUsed.into()
        } else if failed(3) {
            SubmitConflict::FaceNonceUsed.into()
        } else {
            StoreError::Unavailable(format!("transaction cancelled: {reasons:?}")).into()
        })
    }
}
