//! Reports and the sweeper's due index on DynamoDB.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, Delete, TransactWriteItem, Update};
use chrono::{DateTime, Utc};

use super::*;
use crate::model::bank::BankCode;
use crate::model::timestamp;
use crate::ports::{ReportStore, StoreError};
use crate::records::{
    DueWork, Publication, PublishOutcome, QueryPhase, QueryRecord, ReportView, StoredReport,
};

fn phase(p: QueryPhase) -> AttributeValue {
    s(serde_json::to_value(p)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default())
}

fn ts(t: DateTime<Utc>) -> AttributeValue {
    s(timestamp::format(t))
}

/// How often a deletion that collided with a concurrent transaction is tried again.
const CONFLICT_RETRIES: u32 = 10;

/// How often a view that lost the race for the log to a concurrent one reads it again:
/// each round lets one view through, and every view takes a step-up of its own, so
/// this covers far more parallel views of one report than a person can make.
const VIEW_RETRIES: u32 = 40;

fn build_err(e: aws_sdk_dynamodb::error::BuildError) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

impl DynamoStore {
    /// Records an instant (`:at`) on an existing query item.
    async fn stamp_query(
        &self,
        id: &QueryId,
        update: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.tables.main)
            .set_key(Some(key(query_pk(id), "QUERY".into())))
            .update_expression(update)
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":at", ts(at))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

#[async_trait]
impl ReportStore for DynamoStore {
    async fn publish(&self, p: &Publication) -> Result<PublishOutcome, StoreError> {
        let r = &p.report;
        let pk = query_pk(&r.query_id);
        let report_item = to_item(
            r,
            &[
                ("pk", s(pk.clone())),
                ("sk", s("REPORT")),
                ("entity", s("REPORT")),
                // DynamoDB's own deletion is the backstop; the sweeper deletes on time.
                ("ttl", ttl_at(r.expires_at)),
                ("due_pk", s(due_pk("EXPIRY", &r.query_id))),
                ("due_at", ts(r.expires_at)),
            ],
        )?;
        let put_report = Put::builder()
            .table_name(&self.tables.main)
            .set_item(Some(report_item))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(build_err)?;
        let close_query = Update::builder()
            .table_name(&self.tables.main)
            .set_key(Some(key(pk.clone(), "QUERY".into())))
            .update_expression(
                "SET phase = :reported, report_generated_at = :gen, report_expires_at = :exp, \
                 due_pk = :due_pk, due_at = :gen",
            )
            .condition_expression("phase IN (:collecting, :aggregating)")
            .expression_attribute_values(":reported", phase(QueryPhase::Reported))
            .expression_attribute_values(":collecting", phase(QueryPhase::Collecting))
            .expression_attribute_values(":aggregating", phase(QueryPhase::Aggregating))
            .expression_attribute_values(":gen", ts(r.generated_at))
            .expression_attribute_values(":exp", ts(r.expires_at))
            .expression_attribute_values(":due_pk", s(due_pk("NOTIFY", &r.query_id)))
            .build()
            .map_err(build_err)?;
        let items = vec![
            TransactWriteItem::builder().put(put_report).build(),
            TransactWriteItem::builder().update(close_query).build(),
            TransactWriteItem::builder()
                .put(self.state_put(&r.user_id, &p.state, p.expected_state_version)?)
                .build(),
        ];
        let result = self.transact(items).await;
        let err = match result {
            Ok(_) => return Ok(PublishOutcome::Published),
            Err(e) => e,
        };
        let reasons = cancellation_reasons(err)?;
        let failed =
            |i: usize| reasons.get(i).map(String::as_str) == Some("ConditionalCheckFailed");
        if failed(0) || failed(1) {
            Ok(PublishOutcome::AlreadyClosed)
        } else if failed(2) || reasons.iter().any(|r| r == "TransactionConflict") {
            Ok(PublishOutcome::StateChanged)
        } else {
            Err(StoreError::Unavailable(format!(
                "publish cancelled: {reasons:?}"
            )))
        }
    }

    async fn report(&self, id: &QueryId) -> Result<Option<StoredReport>, StoreError> {
        self.get(query_pk(id), "REPORT".into())
            .await?
            .map(from_item)
            .transpose()
    }

    async fn claim_notice(
        &self,
        id: &QueryId,
        now: DateTime<Utc>,
        lease: chrono::TimeDelta,
    ) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.tables.main)
            .set_key(Some(key(query_pk(id), "QUERY".into())))
            .update_expression("SET notice_claimed_at = :now")
            .condition_expression(
                "phase = :reported AND attribute_not_exists(notified_at) AND \
                 (attribute_not_exists(notice_claimed_at) OR notice_claimed_at < :stale)",
            )
            .expression_attribute_values(":now", ts(now))
            .expression_attribute_values(":stale", ts(now - lease))
            .expression_attribute_values(":reported", phase(QueryPhase::Reported))
            .send()
            .await;
        written(result)
    }

    async fn notice_sent(&self, id: &QueryId, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.stamp_query(id, "SET notified_at = :at REMOVE due_pk, due_at", at)
            .await
    }

    async fn clear_answers(&self, id: &QueryId, banks: &[BankCode]) -> Result<(), StoreError> {
        // One plain update a leg (a unit each, half a transactional one), all at once.
        let clears = banks.iter().map(|bank| {
            self.client
                .update_item()
                .table_name(&self.tables.main)
                .set_key(Some(key(query_pk(id), format!("LEG#{bank}"))))
                // `cards`: clear cards of legs written before answers were sealed.
                .update_expression("REMOVE sealed_cards, cards, answer_digest")
                // Never creates a leg: a deleted report took its legs with it.
                .condition_expression("attribute_exists(pk)")
                .send()
        });
        for result in futures::future::join_all(clears).await {
            written(result)?;
        }
        Ok(())
    }

    async fn record_view(&self, id: &QueryId, view: &ReportView) -> Result<(), StoreError> {
        // The log is bounded (`rules::view_log`), which no update expression can say:
        // it is rewritten against `views_total`, and a concurrent view makes this one
        // read again, so none is lost.
        for attempt in 0..=VIEW_RETRIES {
            let Some(q) = crate::ports::QueryStore::query(self, id).await? else {
                return Err(StoreError::Corrupt(
                    "a view of a query that does not exist".into(),
                ));
            };
            let log = crate::rules::view_log::with_view(&q.views, view.clone());
            let log = serde_dynamo::to_attribute_value(&log)
                .map_err(|e| StoreError::Corrupt(crate::adapters::redact::serde_error(&e)))?;
            // Records written before the log existed have no `views_total`.
            let condition = if q.views_total == 0 {
                "attribute_exists(pk) AND (attribute_not_exists(views_total) OR views_total = :seen)"
            } else {
                "views_total = :seen"
            };
            let req = self
                .client
                .update_item()
                .table_name(&self.tables.main)
                .set_key(Some(key(query_pk(id), "QUERY".into())))
                .update_expression("SET #views = :views, views_total = :next, last_viewed_at = :at")
                .condition_expression(condition)
                .expression_attribute_names("#views", "views")
                .expression_attribute_values(":views", log)
                .expression_attribute_values(":next", n(q.views_total + 1))
                .expression_attribute_values(":seen", n(q.views_total))
                .expression_attribute_values(":at", ts(view.at));
            if written(req.send().await)? {
                return Ok(());
            }
            let backoff = 5 * u64::from(attempt.min(9) + 1);
            tokio::time::sleep(std::time::Duration::from_millis(backoff)).await;
        }
        Err(StoreError::Conflict)
    }

    async fn user_queries(&self, user: &UserId) -> Result<Vec<QueryRecord>, StoreError> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.tables.main)
                .index_name("gsi1")
                .key_condition_expression("gsi1pk = :pk")
                .expression_attribute_values(":pk", s(user_pk(user)))
                .scan_index_forward(false)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(unavailable)?;
            for item in page.items.unwrap_or_default() {
                out.push(from_item(item)?);
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                return Ok(out);
            }
        }
    }

    async fn expire(&self, id: &QueryId) -> Result<(), StoreError> {
        let pk = query_pk(id);
        let delete = Delete::builder()
            .table_name(&self.tables.main)
            .set_key(Some(key(pk.clone(), "REPORT".into())))
            .build()
            .map_err(build_err)?;
        let mark = Update::builder()
            .table_name(&self.tables.main)
            .set_key(Some(key(pk, "QUERY".into())))
            .update_expression("SET phase = :expired")
            // The user's deletion is final: expiry never turns it into EXPIRED.
            .condition_expression("attribute_exists(pk) AND phase <> :deleted")
            .expression_attribute_values(":expired", phase(QueryPhase::Expired))
            .expression_attribute_values(":deleted", phase(QueryPhase::Deleted))
            .build()
            .map_err(build_err)?;
        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().delete(delete).build())
            .transact_items(TransactWriteItem::builder().update(mark).build())
            .send()
            .await;
        let Err(err) = result else {
            return Ok(());
        };
        let reasons = cancellation_reasons(err)?;
        if reasons.get(1).map(String::as_str) == Some("ConditionalCheckFailed") {
            // Deleted by the user (report and legs already gone), or no such query.
            return Ok(());
        }
        Err(StoreError::Unavailable(format!(
            "expiry cancelled: {reasons:?}"
        )))
    }

    async fn delete_report(&self, id: &QueryId, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let Some(query) = crate::ports::QueryStore::query(self, id).await? else {
            return Ok(false);
        };
        if query.phase != QueryPhase::Reported {
            return Ok(false);
        }
        let pk = query_pk(id);
        let mark = Update::builder()
            .table_name(&self.tables.main)
            .set_key(Some(key(pk.clone(), "QUERY".into())))
            // The notice's due entry goes too: a deleted report is not announced.
            .update_expression(
                "SET phase = :deleted, report_deleted_at = :at REMOVE due_pk, due_at",
            )
            .condition_expression("phase = :reported")
            .expression_attribute_values(":deleted", phase(QueryPhase::Deleted))
            .expression_attribute_values(":reported", phase(QueryPhase::Reported))
            .expression_attribute_values(":at", ts(at))
            .build()
            .map_err(build_err)?;
        let mut items = vec![TransactWriteItem::builder().update(mark).build()];
        // The report item carries its expiry's due entry: deleting it removes that too.
        let sks = std::iter::once("REPORT".to_owned())
            .chain(query.banks.iter().map(|b| format!("LEG#{b}")));
        for sk in sks {
            let delete = Delete::builder()
                .table_name(&self.tables.main)
                .set_key(Some(key(pk.clone(), sk)))
                .build()
                .map_err(build_err)?;
            items.push(TransactWriteItem::builder().delete(delete).build());
        }
        let mut conflicts = 0;
        loop {
            let result = self.transact(items.clone()).await;
            let Err(err) = result else {
                return Ok(true);
            };
            let reasons = cancellation_reasons(err)?;
            if reasons.first().map(String::as_str) == Some("ConditionalCheckFailed") {
                return Ok(false);
            }
            // A concurrent deletion (or expiry) in flight on the same items: once it
            // commits, the condition decides.
            conflicts += 1;
            if conflicts > CONFLICT_RETRIES || !reasons.iter().any(|r| r == "TransactionConflict") {
                return Err(StoreError::Unavailable(format!(
                    "report deletion cancelled: {reasons:?}"
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(20 * u64::from(conflicts))).await;
        }
    }

    async fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<DueWork>, StoreError> {
        let mut out = Vec::new();
        for kind in ["DEADLINE", "RETRY", "EXPIRY", "NOTIFY"] {
            let mut taken = 0;
            for shard in 0..DUE_SHARDS {
                if taken >= limit {
                    break;
                }
                let page = self
                    .client
                    .query()
                    .table_name(&self.tables.main)
                    .index_name("due")
                    .key_condition_expression("due_pk = :pk AND due_at <= :now")
                    .expression_attribute_values(":pk", s(format!("{kind}#{shard}")))
                    .expression_attribute_values(":now", ts(now))
                    .limit((limit - taken) as i32)
                    .send()
                    .await
                    .map_err(unavailable)?;
                for item in page.items.unwrap_or_default() {
                    let text = |k: &str| match item.get(k) {
                        Some(AttributeValue::S(v)) => v.clone(),
                        _ => String::new(),
                    };
                    let Some(query) = text("pk")
                        .strip_prefix("QUERY#")
                        .and_then(|q| QueryId::parse(q).ok())
                    else {
                        continue;
                    };
                    let work = match kind {
                        "DEADLINE" => DueWork::Deadline(query),
                        "EXPIRY" => DueWork::Expiry(query),
                        "NOTIFY" => DueWork::Notify(query),
                        _ => {
                            let bank = text("sk");
                            let Some(code) = bank.strip_prefix("LEG#") else {
                                continue;
                            };
                            let Ok(code) = serde_json::from_value(code.into()) else {
                                continue;
                            };
                            DueWork::Retry(query, code)
                        }
                    };
                    out.push(work);
                    taken += 1;
                }
            }
        }
        Ok(out)
    }
}
