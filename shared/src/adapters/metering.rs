//! What each AWS call costs, for the cost-per-query benchmark (`make bench-cost`): an SDK
//! interceptor that asks DynamoDB for `ReturnConsumedCapacity=TOTAL` and logs one line
//! per attempt — service, operation, items, read and write units — inside the caller's
//! span, so the line carries the query id where the handler knows it.
//!
//! Off unless [`METERING_VAR`] is `1`: production neither pays for the extra response
//! bytes nor logs a line per call. The interceptor knows the DynamoDB API, not our
//! calls: any operation the pipeline adds (another table, a transaction, SQS) is counted
//! without touching this file.

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    AfterDeserializationInterceptorContextRef, BeforeTransmitInterceptorContextMut,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};
use serde_json::Value;

/// `1` turns metering on (read at start-up, like `RUST_LOG`, before the settings).
pub const METERING_VAR: &str = "AWS_CALL_METERING";

/// The message of the per-call line the benchmark sums (`tests/load`, `cost-bench`).
pub const CALL_LINE: &str = "aws call";
/// The message of the line `bank_http` logs per bank call when metered.
pub const BANK_CALL_LINE: &str = "bank call";

pub fn enabled() -> bool {
    std::env::var(METERING_VAR).is_ok_and(|v| v.trim() == "1")
}

/// The DynamoDB operations that take `ReturnConsumedCapacity` (the API's list, 2012-08-10).
const TAKES_CONSUMED_CAPACITY: [&str; 13] = [
    "GetItem",
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "Query",
    "Scan",
    "BatchGetItem",
    "BatchWriteItem",
    "TransactGetItems",
    "TransactWriteItems",
    "ExecuteStatement",
    "BatchExecuteStatement",
    "ExecuteTransaction",
];

/// What one call used, as logged.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    pub items: u64,
    pub read_units: f64,
    pub write_units: f64,
}

/// The request's body with `ReturnConsumedCapacity` set to `TOTAL`, or `None` when the
/// operation does not take it, the caller already chose, or the body is not JSON.
pub fn with_consumed_capacity(operation: &str, body: &[u8]) -> Option<Vec<u8>> {
    if !TAKES_CONSUMED_CAPACITY.contains(&operation) {
        return None;
    }
    let mut json: Value = serde_json::from_slice(body).ok()?;
    let map = json.as_object_mut()?;
    if map.contains_key("ReturnConsumedCapacity") {
        return None;
    }
    map.insert("ReturnConsumedCapacity".into(), "TOTAL".into());
    serde_json::to_vec(&json).ok()
}

/// How many items a DynamoDB request names: what a write or a keyed read touches.
pub fn request_items(body: &[u8]) -> u64 {
    let Ok(json) = serde_json::from_slice::<Value>(body) else {
        return 0;
    };
    let len = |v: &Value| v.as_array().map_or(0, |a| a.len() as u64);
    if let Some(t) = json.get("TransactItems") {
        return len(t);
    }
    if let Some(s) = json.get("Statements") {
        return len(s);
    }
    if let Some(tables) = json.get("RequestItems").and_then(Value::as_object) {
        // BatchWriteItem: table → [request]; BatchGetItem: table → {Keys: [key]}.
        return tables
            .values()
            .map(|t| len(t.get("Keys").unwrap_or(t)))
            .sum();
    }
    1
}

/// Items and units from a DynamoDB response; `requested` (see [`request_items`]) stands
/// for the items of a write, whose answer does not count them.
pub fn usage(operation: &str, requested: u64, response: &[u8]) -> Usage {
    let json: Value = serde_json::from_slice(response).unwrap_or(Value::Null);
    let reads = is_read(operation, &json);
    let items = match (json.get("Count"), json.get("Responses")) {
        (Some(count), _) => count.as_u64().unwrap_or(0),
        (None, Some(Value::Array(r))) => r.len() as u64,
        (None, Some(Value::Object(tables))) => tables
            .values()
            .map(|t| t.as_array().map_or(0, |a| a.len() as u64))
            .sum(),
        _ if operation == "GetItem" => u64::from(json.get("Item").is_some()),
        _ => requested,
    };
    let mut out = Usage {
        items,
        ..Usage::default()
    };
    let entries = match json.get("ConsumedCapacity") {
        Some(Value::Array(a)) => a.iter().collect(),
        Some(one @ Value::Object(_)) => vec![one],
        _ => Vec::new(),
    };
    let f = |e: &Value, k: &str| e.get(k).and_then(Value::as_f64);
    for e in entries {
        match (f(e, "ReadCapacityUnits"), f(e, "WriteCapacityUnits")) {
            (None, None) => {
                // TOTAL gives one figure; the operation says which kind it is.
                let units = f(e, "CapacityUnits").unwrap_or(0.0);
                if reads {
                    out.read_units += units;
                } else {
                    out.write_units += units;
                }
            }
            (r, w) => {
                out.read_units += r.unwrap_or(0.0);
                out.write_units += w.unwrap_or(0.0);
            }
        }
    }
    out
}

fn is_read(operation: &str, response: &Value) -> bool {
    match operation {
        "GetItem" | "Query" | "Scan" | "BatchGetItem" | "TransactGetItems" => true,
        // PartiQL: a SELECT answers with items.
        "ExecuteStatement" => response.get("Items").is_some(),
        _ => false,
    }
}

/// The items of this attempt's request, kept from signing to the answer.
#[derive(Debug, Clone, Copy)]
struct RequestedItems(u64);
impl Storable for RequestedItems {
    type Storer = StoreReplace<Self>;
}

/// Install on every SDK client of a function when [`enabled`].
#[derive(Debug, Default)]
pub struct Metering;

impl Intercept for Metering {
    fn name(&self) -> &'static str {
        "Metering"
    }

    // Before signing: SigV4 signs the body's hash, so the rewritten body is the signed one.
    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(meta) = cfg.load::<Metadata>() else {
            return Ok(());
        };
        if meta.service() != "DynamoDB" {
            return Ok(());
        }
        let operation = meta.name().to_owned();
        let request = context.request_mut();
        let Some(body) = request.body().bytes() else {
            return Ok(());
        };
        let requested = request_items(body);
        if let Some(new) = with_consumed_capacity(&operation, body) {
            let len = new.len();
            *request.body_mut() = SdkBody::from(new);
            request
                .headers_mut()
                .insert("content-length", len.to_string());
        }
        cfg.interceptor_state().store_put(RequestedItems(requested));
        Ok(())
    }

    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(meta) = cfg.load::<Metadata>() else {
            return Ok(());
        };
        let response = context.response();
        let status = response.status().as_u16();
        let failed = context.output_or_error().is_err();
        let (service, operation) = (meta.service(), meta.name());
        let u = if service == "DynamoDB" {
            let requested = cfg.load::<RequestedItems>().map_or(0, |r| r.0);
            usage(
                operation,
                requested,
                response.body().bytes().unwrap_or_default(),
            )
        } else {
            Usage {
                items: 1,
                ..Usage::default()
            }
        };
        tracing::info!(
            aws_service = service,
            aws_operation = operation,
            status,
            failed,
            items = u.items,
            read_units = u.read_units,
            write_units = u.write_units,
            "{CALL_LINE}"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks_for_total_capacity_on_operations_that_take_it_only() {
        let body = br#"{"TableName":"t","Key":{"pk":{"S":"a"}}}"#;
        let new = with_consumed_capacity("GetItem", body).unwrap();
        let json: Value = serde_json::from_slice(&new).unwrap();
        assert_eq!(json["ReturnConsumedCapacity"], "TOTAL");
        assert_eq!(json["TableName"], "t");
        assert_eq!(with_consumed_capacity("DescribeTable", body), None);
        assert_eq!(with_consumed_capacity("PutItem", b"not json"), None);
        // The caller's own choice (INDEXES, say) stays.
        let own = br#"{"TableName":"t","ReturnConsumedCapacity":"INDEXES"}"#;
        assert_eq!(with_consumed_capacity("Query", own), None);
    }

    #[test]
    fn counts_the_items_a_request_names() {
        assert_eq!(request_items(br#"{"TableName":"t","Item":{}}"#), 1);
        assert_eq!(
            request_items(br#"{"TransactItems":[{"Put":{}},{"Update":{}},{"ConditionCheck":{}}]}"#),
            3
        );
        assert_eq!(
            request_items(br#"{"RequestItems":{"a":[{"PutRequest":{}},{"PutRequest":{}}],"b":[{"DeleteRequest":{}}]}}"#),
            3
        );
        assert_eq!(
            request_items(br#"{"RequestItems":{"a":{"Keys":[{},{}]},"b":{"Keys":[{}]}}}"#),
            3
        );
    }

    #[test]
    fn reads_units_and_items_of_single_batch_and_transaction_answers() {
        let get = usage(
            "GetItem",
            1,
            br#"{"Item":{"pk":{"S":"a"}},"ConsumedCapacity":{"TableName":"t","CapacityUnits":0.5}}"#,
        );
        assert_eq!((get.items, get.read_units, get.write_units), (1, 0.5, 0.0));
        let miss = usage(
            "GetItem",
            1,
            br#"{"ConsumedCapacity":{"CapacityUnits":0.5}}"#,
        );
        assert_eq!(miss.items, 0);
        let query = usage(
            "Query",
            1,
            br#"{"Count":7,"Items":[],"ConsumedCapacity":{"CapacityUnits":1.5}}"#,
        );
        assert_eq!((query.items, query.read_units), (7, 1.5));
        let tx = usage(
            "TransactWriteItems",
            3,
            br#"{"ConsumedCapacity":[{"TableName":"a","CapacityUnits":4.0},{"TableName":"b","CapacityUnits":2.0}]}"#,
        );
        assert_eq!((tx.items, tx.read_units, tx.write_units), (3, 0.0, 6.0));
        let split = usage(
            "UpdateItem",
            1,
            br#"{"ConsumedCapacity":{"CapacityUnits":3.0,"ReadCapacityUnits":1.0,"WriteCapacityUnits":2.0}}"#,
        );
        assert_eq!((split.read_units, split.write_units), (1.0, 2.0));
        let batch = usage(
            "BatchGetItem",
            3,
            br#"{"Responses":{"a":[{},{}],"b":[{}]},"ConsumedCapacity":[{"CapacityUnits":1.0}]}"#,
        );
        assert_eq!((batch.items, batch.read_units), (3, 1.0));
        // An error answer (a failed condition) reports no units.
        let failed = usage(
            "PutItem",
            1,
            br#"{"__type":"ConditionalCheckFailedException"}"#,
        );
        assert_eq!((failed.items, failed.write_units), (1, 0.0));
    }
}
