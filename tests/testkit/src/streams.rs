//! A table's DynamoDB stream, read back from DynamoDB Local.

use aws_sdk_dynamodbstreams::types::{Record, ShardIteratorType};

use crate::LocalClients;

/// Every record on the stream of `table` (its physical name) so far: each shard read
/// from TRIM_HORIZON until an empty page.
pub async fn records(clients: &LocalClients, table: &str) -> Vec<Record> {
    let streams = &clients.streams;
    let arn = clients
        .dynamodb
        .describe_table()
        .table_name(table)
        .send()
        .await
        .expect("the table is described")
        .table
        .and_then(|t| t.latest_stream_arn)
        .expect("the table has a stream");
    let shards = streams
        .describe_stream()
        .stream_arn(&arn)
        .send()
        .await
        .expect("the stream is described")
        .stream_description
        .expect("a stream description")
        .shards
        .unwrap_or_default();
    let mut records = Vec::new();
    for shard in shards {
        let mut iterator = streams
            .get_shard_iterator()
            .stream_arn(&arn)
            .shard_id(shard.shard_id().expect("a shard id"))
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .expect("a shard iterator")
            .shard_iterator;
        while let Some(it) = iterator.take() {
            let page = streams
                .get_records()
                .shard_iterator(it)
                .send()
                .await
                .expect("a page of stream records");
            let page_records = page.records.unwrap_or_default();
            if page_records.is_empty() {
                break;
            }
            records.extend(page_records);
            iterator = page.next_shard_iterator;
        }
    }
    records
}
