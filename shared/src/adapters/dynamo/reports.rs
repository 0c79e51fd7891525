//! Reports and the sweeper's due index on DynamoDB.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, Delete, TransactWriteItem, Update};
use chrono::{DateTime, Utc};
use futures::StreamExt;

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

/// DynamoDB's cap on the items of one TransactWriteItems.
const TRANSACTION_ITEMS: usize = 100;

/// How often a deletion that collided with a concurrent transaction is tried again.
const CONFLICT_RETRIES: u32 = 10;

/// How often a view that lost the race for the log to a concurrent one reads it again:
/// each round lets one view through, and every view takes a step-up of its own, so
/// this covers far more parallel views of one report than a person can make.
const VIEW_RETRIES: u32 = 40;

fn build_err(e: aws_sdk_dynamodb::error::BuildError) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// The most ciphertext one part carries (an item is at most 400 KB, and a report to 500
/// banks can reach megabytes: decision 123).
pub const REPORT_PART_BYTES: usize = 300 * 1024;
/// The most ciphertext kept in the report item itself. Anything larger goes into parts,
/// written before and outside the publication's transaction, where every kilobyte is
/// billed twice: a 16-bank report (tens of KB) cost 160 of a query's 496 WRU there
/// (decision 146).
pub const INLINE_REPORT_BYTES: usize = 1024;
/// The most report parts a user's deletion removes inside its transaction (900 KB).
const PARTS_DELETED_AT_ONCE: usize = 3;

fn part_sk(set: &str, i: usize) -> String {
    format!("REPORTPART#{set}#{i:05}")
}

impl DynamoStore {
    /// Stores a report's ciphertext past [`INLINE_REPORT_BYTES`] in parts, before the
    /// report itself is committed: `(set, count)`, or `None` when it fits one item. Each
    /// publication writes a set of its own, so a publication that loses the race to
    /// another never overwrites the winner's parts (the loser's go with the report's
    /// expiry or deletion, or their TTL).
    async fn put_report_parts(
        &self,
        r: &StoredReport,
    ) -> Result<Option<(String, usize)>, StoreError> {
        let text = &r.sealed.ciphertext;
        if text.len() <= INLINE_REPORT_BYTES {
            return Ok(None);
        }
        let set = format!("{:016x}", rand::random::<u64>());
        // Base64 is ASCII: any byte offset is a character boundary.
        let chunks: Vec<(usize, String)> = text
            .as_bytes()
            .chunks(REPORT_PART_BYTES)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .enumerate()
            .collect();
        let count = chunks.len();
        let pk = query_pk(&r.query_id);
        let puts = chunks.into_iter().map(|(i, chunk)| {
            let item = HashMap::from([
                ("pk".to_owned(), s(pk.clone())),
                ("sk".to_owned(), s(part_sk(&set, i))),
                ("entity".to_owned(), s("REPORT_PART")),
                ("ttl".to_owned(), ttl_at(r.expires_at)),
                ("ciphertext".to_owned(), s(chunk)),
            ]);
            self.client
                .put_item()
                .table_name(&self.tables.main)
                .set_item(Some(item))
                .send()
        });
        let results: Vec<_> = futures::stream::iter(puts)
            .buffer_unordered(4)
            .collect()
            .await;
        for r in results {
            r.map_err(unavailable)?;
        }
        Ok(Some((set, count)))
    }

    /// The ciphertext of a report stored in parts, joined in order.
    async fn report_parts(
        &self,
        id: &QueryId,
        set: &str,
        count: usize,
    ) -> Result<String, StoreError> {
        let mut text = String::new();
        let mut found = 0;
        let query = self
            .client
            .query()
            .table_name(&self.tables.main)
            .key_condition_expression("pk = :pk AND begins_with(sk, :set)")
            .expression_attribute_values(":pk", s(query_pk(id)))
            .expression_attribute_values(":set", s(format!("REPORTPART#{set}#")))
            .consistent_read(true);
        // Sort keys come in order, and the index is zero-padded.
        for item in all_items(query).await? {
            match item.get("ciphertext") {
                Some(AttributeValue::S(chunk)) => text.push_str(chunk),
                _ => return Err(StoreError::Corrupt("a report part".into())),
            }
            found += 1;
        }
        if found != count {
            return Err(StoreError::Corrupt(format!(
                "report parts: {found} of {count}"
            )));
        }
        Ok(text)
    }

    /// Deletes every part of the query's report (of any publication).
    async fn delete_report_parts(&self, id: &QueryId) -> Result<(), StoreError> {
        let sks = self.report_part_sks(id).await?;
        self.delete_items(&query_pk(id), sks).await
    }

    /// Deletes the items `sks` of partition `pk`, a few at a time (unconditional: the
    /// callers delete what no one writes again).
    async fn delete_items(&self, pk: &str, sks: Vec<String>) -> Result<(), StoreError> {
        let deletes = sks.into_iter().map(|sk| {
            self.client
                .delete_item()
                .table_name(&self.tables.main)
                .set_key(Some(key(pk.to_owned(), sk)))
                .send()
        });
        let results: Vec<_> = at_most_a_few(deletes).await;
        for r in results {
            r.map_err(unavailable)?;
        }
        Ok(())
    }

    /// The sort keys of every part of the query's report (of any publication).
    async fn report_part_sks(&self, id: &QueryId) -> Result<Vec<String>, StoreError> {
        let pk = query_pk(id);
        let query = self
            .client
            .query()
            .table_name(&self.tables.main)
            .key_condition_expression("pk = :pk AND begins_with(sk, :part)")
            .expression_attribute_values(":pk", s(pk.clone()))
            .expression_attribute_values(":part", s("REPORTPART#"))
            .projection_expression("sk")
            .consistent_read(true);
        Ok(all_items(query)
            .await?
            .into_iter()
            .filter_map(|mut item| match item.remove("sk") {
                Some(AttributeValue::S(sk)) => Some(sk),
                _ => None,
            })
            .collect())
    }

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
        let parts = self.put_report_parts(r).await?;
        let mut head = r.clone();
        let mut head_keys = vec![
            ("pk", s(pk.clone())),
            ("sk", s("REPORT")),
            ("entity", s("REPORT")),
            // DynamoDB's own deletion is the backstop; the sweeper deletes on time.
            ("ttl", ttl_at(r.expires_at)),
            ("due_pk", s(due_pk("EXPIRY", &r.query_id))),
            ("due_at", ts(r.expires_at)),
        ];
        if let Some((set, count)) = &parts {
            head.sealed.ciphertext.clear();
            head_keys.push(("parts_set", s(set.clone())));
            head_keys.push(("parts", n(*count)));
        }
        let report_item = to_item(&head, &head_keys)?;
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
        let Some(mut item) = self.get(query_pk(id), "REPORT".into()).await? else {
            return Ok(None);
        };
        let parts = match (item.remove("parts_set"), item.remove("parts")) {
            (Some(AttributeValue::S(set)), Some(AttributeValue::N(count))) => Some((
                set,
                count
                    .parse::<usize>()
                    .map_err(|_| StoreError::Corrupt("report part count".into()))?,
            )),
            _ => None,
        };
        let mut report: StoredReport = from_item(item)?;
        if let Some((set, count)) = parts {
            report.sealed.ciphertext = self.report_parts(id, &set, count).await?;
        }
        Ok(Some(report))
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

    async fn release_notice(
        &self,
        id: &QueryId,
        claimed_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.tables.main)
            .set_key(Some(key(query_pk(id), "QUERY".into())))
            .update_expression("REMOVE notice_claimed_at")
            .condition_expression(
                "attribute_not_exists(notified_at) AND notice_claimed_at = :claimed",
            )
            .expression_attribute_values(":claimed", ts(claimed_at))
            .send()
            .await;
        // Not ours any more (sent, or claimed again after the lease): nothing to give back.
        written(result).map(drop)
    }

    async fn clear_answers(&self, id: &QueryId, banks: &[BankCode]) -> Result<(), StoreError> {
        // One plain update a leg (a unit each, half a transactional one), a bounded
        // number at once (a national query has hundreds).
        let sks: Vec<String> = banks.iter().map(|b| format!("LEG#{b}")).collect();
        let pk = query_pk(id);
        let clears = sks.into_iter().map(|sk| {
            self.client
                .update_item()
                .table_name(&self.tables.main)
                .set_key(Some(key(pk.clone(), sk)))
                // `cards`: clear cards of legs written before answers were sealed.
                .update_expression("REMOVE sealed_cards, cards, answer_digest")
                // Never creates a leg: a deleted report took its legs with it.
                .condition_expression("attribute_exists(pk)")
                .send()
        });
        let results: Vec<_> = at_most_a_few(clears).await;
        for r in results {
            written(r)?;
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
        let query = self
            .client
            .query()
            .table_name(&self.tables.main)
            .index_name("gsi1")
            .key_condition_expression("gsi1pk = :pk")
            .expression_attribute_values(":pk", s(user_pk(user)))
            .scan_index_forward(false);
        all_items(query).await?.into_iter().map(from_item).collect()
    }

    async fn expire(&self, id: &QueryId) -> Result<(), StoreError> {
        // The parts first: past its expiry the report is refused by time whatever is
        // stored, and a failure after this leaves the due entry (on the report item) for
        // the next sweep, where parts deleted after the commit would be left to the TTL,
        // days past the 7 the user was promised.
        self.delete_report_parts(id).await?;
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
        // A usual report's ciphertext (its part or two) goes in the same commit: nothing
        // of it outlives the deletion. Only a report of megabytes (more parts than
        // `PARTS_DELETED_AT_ONCE`, which could pass the transaction's 4 MB) loses its
        // parts right after the commit. The legs the transaction cannot hold go right
        // after it too: they hold only outcomes (the cards left them when the report
        // was published), and the record says DELETED from the commit on.
        let parts = self.report_part_sks(id).await?;
        let parts_after = parts.len() > PARTS_DELETED_AT_ONCE;
        let mut sks: Vec<String> = std::iter::once("REPORT".to_owned())
            .chain(parts.into_iter().filter(|_| !parts_after))
            .chain(query.banks.iter().map(|b| format!("LEG#{b}")))
            .collect();
        let after = sks.split_off(sks.len().min(TRANSACTION_ITEMS - items.len()));
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
                self.delete_items(&pk, after).await?;
                if parts_after {
                    self.delete_report_parts(id).await?;
                }
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
        for kind in ["DEADLINE", "RETRY", "EXPIRY", "NOTIFY", "DISPUTE"] {
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
                        "DISPUTE" => match text("sk").strip_prefix("DISPUTE#") {
                            Some(card_id) => DueWork::Dispute(query, card_id.to_owned()),
                            None => continue,
                        },
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
