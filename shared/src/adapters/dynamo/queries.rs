//! Queries and legs on DynamoDB: fan-out, callbacks and the sweeper.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem, Update};
use chrono::{DateTime, Utc};
use sha2::Digest;

use super::*;
use crate::model::bank::BankCode;
use crate::model::ids::QueryId;
use crate::ports::{BankNonce, QueryLegRead, QueryStore, SettleOutcome, Settlement, StoreError};
use crate::records::{LegRecord, LegState, QueryRecord};

fn leg_sk(bank: &BankCode) -> String {
    format!("LEG#{bank}")
}

fn state_name(state: LegState) -> AttributeValue {
    s(serde_json::to_value(state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default())
}

fn nonce_item(bank: &BankCode, n: &BankNonce) -> Item {
    // Hashed: the nonce is the sender's text and needs no storing as such.
    let digest = hex::encode(sha2::Sha256::digest(n.nonce.as_bytes()));
    HashMap::from([
        ("pk".to_owned(), s(format!("BANKNONCE#{bank}#{digest}"))),
        ("sk".to_owned(), s("BANKNONCE")),
        ("entity".to_owned(), s("BANK_NONCE")),
        ("ttl".to_owned(), ttl_at(n.expires_at + TTL_GRACE)),
    ])
}

/// How often a settle that collided with a concurrent one on the query item is retried.
const CONFLICT_RETRIES: u32 = 10;

impl DynamoStore {
    async fn update_leg(
        &self,
        id: &QueryId,
        bank: &BankCode,
        update: &str,
        condition: &str,
        values: &[(&str, AttributeValue)],
    ) -> Result<bool, StoreError> {
        let key = key(query_pk(id), leg_sk(bank));
        self.update_where(key, update, condition, &[("#state", "state")], values)
            .await
    }

    /// The answer to a settle whose leg condition failed: settled before, or no such leg.
    async fn already_settled(
        &self,
        id: &QueryId,
        bank: &BankCode,
    ) -> Result<SettleOutcome, StoreError> {
        Ok(match self.leg(id, bank).await? {
            Some(leg) => {
                // A settle that died before counting is counted by its retry.
                self.count_settled(id, bank).await?;
                SettleOutcome::AlreadySettled(leg)
            }
            None => SettleOutcome::NoSuchLeg,
        })
    }

    /// Counts a settled leg on its query once: the query item keeps the set of banks
    /// counted, so a repeat (a retry after a crash between the leg's write and this one)
    /// changes nothing. A single-item update, so concurrent settles of one query queue
    /// on the item instead of cancelling each other as transactions do.
    async fn count_settled(&self, id: &QueryId, bank: &BankCode) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.tables.main)
            .set_key(Some(key(query_pk(id), "QUERY".into())))
            .update_expression("SET unsettled = unsettled - :one ADD settled_banks :banks")
            .condition_expression(
                "attribute_exists(pk) AND unsettled > :zero AND NOT contains(settled_banks, :bank)",
            )
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":banks", AttributeValue::Ss(vec![bank.to_string()]))
            .expression_attribute_values(":bank", s(bank.to_string()))
            .send()
            .await;
        // Refused: counted before (or no such query).
        written(result).map(drop)
    }
}

#[async_trait]
impl QueryStore for DynamoStore {
    async fn query(&self, id: &QueryId) -> Result<Option<QueryRecord>, StoreError> {
        self.get(query_pk(id), "QUERY".into())
            .await?
            .map(from_item)
            .transpose()
    }

    async fn legs(&self, id: &QueryId) -> Result<Vec<LegRecord>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.tables.main)
            .key_condition_expression("pk = :pk AND begins_with(sk, :leg)")
            .expression_attribute_values(":pk", s(query_pk(id)))
            .expression_attribute_values(":leg", s("LEG#"))
            .consistent_read(true);
        all_items(query).await?.into_iter().map(from_item).collect()
    }

    async fn leg(&self, id: &QueryId, bank: &BankCode) -> Result<Option<LegRecord>, StoreError> {
        self.get(query_pk(id), leg_sk(bank))
            .await?
            .map(from_item)
            .transpose()
    }

    async fn query_legs(&self, keys: &[(QueryId, BankCode)]) -> Vec<QueryLegRead> {
        let mut distinct: Vec<(String, String)> = keys
            .iter()
            .flat_map(|(id, bank)| {
                [
                    (query_pk(id), "QUERY".to_owned()),
                    (query_pk(id), leg_sk(bank)),
                ]
            })
            .collect();
        distinct.sort();
        distinct.dedup();
        let request = distinct.into_iter().map(|(pk, sk)| key(pk, sk)).collect();
        let items = match self.batch_get(&self.tables.main, request, true).await {
            Ok(items) => items,
            Err(e) => return keys.iter().map(|_| Err(e.clone())).collect(),
        };
        let by_key: HashMap<(String, String), Item> = items
            .into_iter()
            .filter_map(|i| {
                let pk = i.get("pk")?.as_s().ok()?.clone();
                let sk = i.get("sk")?.as_s().ok()?.clone();
                Some(((pk, sk), i))
            })
            .collect();
        fn record<T: serde::de::DeserializeOwned>(
            by_key: &HashMap<(String, String), Item>,
            pk: String,
            sk: String,
        ) -> Result<Option<T>, StoreError> {
            by_key.get(&(pk, sk)).cloned().map(from_item).transpose()
        }
        keys.iter()
            .map(|(id, bank)| {
                Ok((
                    record(&by_key, query_pk(id), "QUERY".into())?,
                    record(&by_key, query_pk(id), leg_sk(bank))?,
                ))
            })
            .collect()
    }

    async fn ensure_legs(&self, query: &QueryRecord) -> Result<usize, StoreError> {
        let existing = self.legs(&query.query_id).await?;
        let missing: Vec<LegRecord> = query
            .banks
            .iter()
            .filter(|b| !existing.iter().any(|l| &l.bank == *b))
            .map(|b| LegRecord::pending(query.query_id, b.clone()))
            .collect();
        // One conditional put per leg: a transaction would be capped at 100 items and
        // refused whole by one leg a concurrent creator made first.
        let puts = missing.into_iter().map(|leg| async move {
            let item = to_item(
                &leg,
                &[
                    ("pk", s(query_pk(&leg.query_id))),
                    ("sk", s(leg_sk(&leg.bank))),
                    ("entity", s("LEG")),
                ],
            )?;
            let result = self
                .client
                .put_item()
                .table_name(&self.tables.main)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(pk)")
                .send()
                .await;
            written(result)
        });
        let results: Vec<Result<bool, StoreError>> = at_most_a_few(puts).await;
        let mut created = 0;
        for r in results {
            created += usize::from(r?);
        }
        Ok(created)
    }

    async fn claim_attempt(
        &self,
        id: &QueryId,
        bank: &BankCode,
        seen_attempts: u32,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.update_leg(
            id,
            bank,
            "SET attempts = :next, last_attempt_at = :now REMOVE next_attempt_at, due_pk, due_at",
            "#state = :pending AND attempts = :seen",
            &[
                (":next", n(seen_attempts + 1)),
                (":seen", n(seen_attempts)),
                (":now", s(crate::model::timestamp::format(now))),
                (":pending", state_name(LegState::Pending)),
            ],
        )
        .await
    }

    async fn schedule_retry(
        &self,
        id: &QueryId,
        bank: &BankCode,
        attempt: u32,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let at = crate::model::timestamp::format(at);
        self.update_leg(
            id,
            bank,
            "SET next_attempt_at = :at, due_pk = :due_pk, due_at = :at",
            "#state = :pending AND attempts = :attempt",
            &[
                (":at", s(at)),
                (":due_pk", s(due_pk("RETRY", id))),
                (":attempt", n(attempt)),
                (":pending", state_name(LegState::Pending)),
            ],
        )
        .await
        .map(drop)
    }

    async fn mark_accepted(
        &self,
        id: &QueryId,
        bank: &BankCode,
        attempt: u32,
    ) -> Result<(), StoreError> {
        self.update_leg(
            id,
            bank,
            "SET #state = :accepted",
            "#state = :pending AND attempts = :attempt",
            &[
                (":accepted", state_name(LegState::Accepted)),
                (":pending", state_name(LegState::Pending)),
                (":attempt", n(attempt)),
            ],
        )
        .await
        .map(drop)
    }

    async fn settle(
        &self,
        id: &QueryId,
        bank: &BankCode,
        st: &Settlement,
        nonce: Option<&BankNonce>,
    ) -> Result<SettleOutcome, StoreError> {
        let sealed: Vec<_> = st.sealed.iter().collect();
        let cards: AttributeValue = serde_dynamo::to_attribute_value(&sealed)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        // Optional attributes go in as SETs only when present.
        let mut sets = vec![
            "#state = :state",
            "sealed_cards = :cards",
            "settled_at = :at",
        ];
        let mut values = vec![
            (":state", state_name(st.state)),
            (":cards", cards),
            (":at", s(crate::model::timestamp::format(st.at))),
            (":pending", state_name(LegState::Pending)),
            (":accepted", state_name(LegState::Accepted)),
        ];
        if let Some(f) = &st.failure {
            sets.push("failure = :failure");
            values.push((":failure", s(f.clone())));
        }
        if let Some(d) = &st.answer_digest {
            sets.push("answer_digest = :digest");
            values.push((":digest", s(d.clone())));
        }
        let update = format!(
            "SET {} REMOVE next_attempt_at, due_pk, due_at",
            sets.join(", ")
        );
        let condition = "attribute_exists(pk) AND #state IN (:pending, :accepted)";
        let leg_key = key(query_pk(id), leg_sk(bank));
        // The leg (and its nonce) first, then the count on the query in a write of its
        // own: one transaction over both made every settle of a query collide with every
        // other on the query item, and 200 legs settling at once exhausted the retries.
        let Some(nonce) = nonce else {
            // No nonce (fan-out's answers, the deadline's NO_RESPONSE): the leg alone, as
            // a plain conditional update. A transaction of one item bought nothing and
            // was billed twice its size (the sealed cards): 96 of a query's 496 WRU in
            // `make bench-cost`.
            let written = self
                .update_where(leg_key, &update, condition, &[("#state", "state")], &values)
                .await?;
            return if written {
                self.count_settled(id, bank).await?;
                Ok(SettleOutcome::Settled)
            } else {
                self.already_settled(id, bank).await
            };
        };
        let nonce_put = aws_sdk_dynamodb::types::Put::builder()
            .table_name(&self.tables.main)
            .set_item(Some(nonce_item(bank, nonce)))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut leg_update = Update::builder()
            .table_name(&self.tables.main)
            .set_key(Some(leg_key))
            .update_expression(update)
            .condition_expression(condition)
            .expression_attribute_names("#state", "state");
        for (k, v) in values {
            leg_update = leg_update.expression_attribute_values(k, v);
        }
        let leg_update = leg_update
            .build()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        for attempt in 0..=CONFLICT_RETRIES {
            let mut req = self.client.transact_write_items().transact_items(
                TransactWriteItem::builder()
                    .update(leg_update.clone())
                    .build(),
            );
            req = req.transact_items(TransactWriteItem::builder().put(nonce_put.clone()).build());
            let err = match req.send().await {
                Ok(_) => {
                    self.count_settled(id, bank).await?;
                    return Ok(SettleOutcome::Settled);
                }
                Err(e) => e,
            };
            let reasons = cancellation_reasons(err)?;
            let failed =
                |i: usize| reasons.get(i).map(String::as_str) == Some("ConditionalCheckFailed");
            if failed(0) {
                return self.already_settled(id, bank).await;
            }
            if failed(1) {
                return Ok(SettleOutcome::NonceReused);
            }
            if reasons.iter().any(|r| r == "TransactionConflict") && attempt < CONFLICT_RETRIES {
                // Only settles of the same leg collide now (a replayed callback racing
                // fan-out): back off a little, with jitter, and go again.
                let ms = 10 * (1 << attempt.min(6)) + rand::random::<u64>() % 20;
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                continue;
            }
            return Err(StoreError::Unavailable(format!(
                "settle cancelled: {reasons:?}"
            )));
        }
        Err(StoreError::Unavailable("settle kept colliding".into()))
    }
}
