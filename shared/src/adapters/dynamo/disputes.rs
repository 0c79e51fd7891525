//! Disputes on DynamoDB (decision 157): one item per disputed card, `QUERY#<query>` /
//! `DISPUTE#<card_id>`, beside the query record, which it outlives with it (the
//! report's deletion and expiry remove `REPORT`, its parts and the `LEG#` items only).
//! While the dispute is still to be sent it carries `due_pk = DISPUTE#<shard>` and
//! `due_at` (the sweeper queues it when due).

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;

use super::*;
use crate::model::timestamp;
use crate::ports::{DisputeCreated, DisputeStore, StoreError};
use crate::records::{DisputeEnd, DisputeRecord, DisputeStatus};

fn dispute_sk(card_id: &str) -> String {
    format!("DISPUTE#{card_id}")
}

fn status(st: DisputeStatus) -> AttributeValue {
    s(serde_json::to_value(st)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default())
}

fn ts(t: chrono::DateTime<chrono::Utc>) -> AttributeValue {
    s(timestamp::format(t))
}

impl DynamoStore {
    /// A conditional update of one dispute: `false` when its condition failed.
    async fn update_dispute(
        &self,
        query: &QueryId,
        card_id: &str,
        update: &str,
        condition: &str,
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<bool, StoreError> {
        let key = key(query_pk(query), dispute_sk(card_id));
        self.update_where(key, update, condition, &[("#status", "status")], &values)
            .await
    }
}

#[async_trait]
impl DisputeStore for DynamoStore {
    async fn create_dispute(&self, r: &DisputeRecord) -> Result<DisputeCreated, StoreError> {
        let mut keys = vec![
            ("pk", s(query_pk(&r.query_id))),
            ("sk", s(dispute_sk(&r.card_id))),
            ("entity", s("DISPUTE")),
        ];
        if let (DisputeStatus::Sent, Some(at)) = (r.status, r.next_attempt_at) {
            keys.push(("due_pk", s(due_pk("DISPUTE", &r.query_id))));
            keys.push(("due_at", ts(at)));
        }
        let item = to_item(r, &keys)?;
        let put = self
            .client
            .put_item()
            .table_name(&self.tables.main)
            .set_item(Some(item))
            // One dispute per card: the first write wins, the others read it.
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        if written(put)? {
            return Ok(DisputeCreated::Created);
        }
        match self.dispute(&r.query_id, &r.card_id).await? {
            Some(existing) => Ok(DisputeCreated::Exists(Box::new(existing))),
            None => Err(StoreError::Unavailable(
                "the dispute that refused the write is gone".into(),
            )),
        }
    }

    async fn dispute(
        &self,
        query: &QueryId,
        card_id: &str,
    ) -> Result<Option<DisputeRecord>, StoreError> {
        self.get(query_pk(query), dispute_sk(card_id))
            .await?
            .map(from_item)
            .transpose()
    }

    async fn disputes(&self, query: &QueryId) -> Result<Vec<DisputeRecord>, StoreError> {
        let items = all_items(
            self.client
                .query()
                .table_name(&self.tables.main)
                .key_condition_expression("pk = :pk AND begins_with(sk, :sk)")
                .expression_attribute_values(":pk", s(query_pk(query)))
                .expression_attribute_values(":sk", s("DISPUTE#"))
                .consistent_read(true),
        )
        .await?;
        let mut out = items
            .into_iter()
            .map(from_item)
            .collect::<Result<Vec<DisputeRecord>, _>>()?;
        out.sort_by(|a, b| a.card_id.cmp(&b.card_id));
        Ok(out)
    }

    async fn claim_dispute_send(
        &self,
        query: &QueryId,
        card_id: &str,
        seen_attempts: u32,
        lease_until: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, StoreError> {
        self.update_dispute(
            query,
            card_id,
            "SET attempts = :next, next_attempt_at = :lease, due_pk = :due_pk, due_at = :lease",
            "#status = :sent AND attempts = :seen",
            vec![
                (":next", n(seen_attempts + 1)),
                (":seen", n(seen_attempts)),
                (":lease", ts(lease_until)),
                (":due_pk", s(due_pk("DISPUTE", query))),
                (":sent", status(DisputeStatus::Sent)),
            ],
        )
        .await
    }

    async fn end_dispute_send(
        &self,
        query: &QueryId,
        card_id: &str,
        attempt: u32,
        end: &DisputeEnd,
    ) -> Result<bool, StoreError> {
        let condition = "#status = :sent AND attempts = :attempt";
        let mut values = vec![
            (":sent", status(DisputeStatus::Sent)),
            (":attempt", n(attempt)),
        ];
        let update = match end {
            DisputeEnd::Acknowledged { case_id, at } => {
                values.push((":final", status(DisputeStatus::Acknowledged)));
                values.push((":case", s(case_id.clone())));
                values.push((":at", ts(*at)));
                "SET #status = :final, case_id = :case, acknowledged_at = :at \
                 REMOVE card_ref, next_attempt_at, due_pk, due_at"
            }
            DisputeEnd::Failed { failure, at } => {
                values.push((":final", status(DisputeStatus::Failed)));
                values.push((":failure", s(failure.clone())));
                values.push((":at", ts(*at)));
                "SET #status = :final, failure = :failure, failed_at = :at \
                 REMOVE card_ref, next_attempt_at, due_pk, due_at"
            }
            DisputeEnd::Retry { at } => {
                values.push((":at", ts(*at)));
                values.push((":due_pk", s(due_pk("DISPUTE", query))));
                "SET next_attempt_at = :at, due_pk = :due_pk, due_at = :at"
            }
        };
        self.update_dispute(query, card_id, update, condition, values)
            .await
    }
}
