//! Sums the functions' metered log lines (`shared::adapters::metering`): per function,
//! invocations and their durations (the runtime's `Lambda runtime invoke` span closing),
//! and per AWS operation, calls, items and capacity units. Whatever operation a line
//! names is counted: nothing here lists our calls.

use std::collections::BTreeMap;

use serde_json::Value;

/// The span `lambda_runtime` opens around each invocation.
const INVOKE_SPAN: &str = "Lambda runtime invoke";
/// `shared::adapters::metering::{CALL_LINE, BANK_CALL_LINE}`.
const CALL_LINE: &str = "aws call";
const BANK_CALL_LINE: &str = "bank call";
/// What AWS bills a transaction's item, in plain units.
const TRANSACTION_RATE: f64 = 2.0;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct OpTally {
    pub calls: u64,
    pub failed: u64,
    pub items: u64,
    pub read_units: f64,
    pub write_units: f64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct FunctionTally {
    pub invocations: u64,
    /// Sum of each invocation's duration rounded up to 1 ms, as Lambda bills.
    pub billed_ms: u64,
    pub duration_ms: Vec<f64>,
    /// (service, operation) → what its calls used.
    pub ops: BTreeMap<(String, String), OpTally>,
    pub bank_calls: u64,
}

impl FunctionTally {
    pub fn add_line(&mut self, line: &str) {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            return;
        };
        let fields = &v["fields"];
        match fields["message"].as_str() {
            Some("close") if v["span"]["name"] == INVOKE_SPAN => {
                let busy = fields["time.busy"].as_str().and_then(duration_ms);
                let idle = fields["time.idle"].as_str().and_then(duration_ms);
                if let (Some(busy), Some(idle)) = (busy, idle) {
                    let ms = busy + idle;
                    self.invocations += 1;
                    self.billed_ms += ms.ceil().max(1.0) as u64;
                    self.duration_ms.push(ms);
                }
            }
            Some(CALL_LINE) => {
                let key = (
                    fields["aws_service"].as_str().unwrap_or("?").to_owned(),
                    fields["aws_operation"].as_str().unwrap_or("?").to_owned(),
                );
                let items = fields["items"].as_u64().unwrap_or(0);
                let mut read = fields["read_units"].as_f64().unwrap_or(0.0);
                let mut write = fields["write_units"].as_f64().unwrap_or(0.0);
                if key.0 == "DynamoDB" && key.1.starts_with("Transact") {
                    // AWS bills a transaction's item twice the plain rate, and never less
                    // than 2 units; DynamoDB Local reports the plain rate
                    // (tests/api/dynamo/metering.rs), and for some transactions less
                    // than one unit an item, so the floor holds.
                    let floor = TRANSACTION_RATE * items as f64;
                    if key.1 == "TransactGetItems" {
                        read = (TRANSACTION_RATE * read).max(floor);
                    } else {
                        write = (TRANSACTION_RATE * write).max(floor);
                    }
                }
                let op = self.ops.entry(key).or_default();
                op.calls += 1;
                op.failed += u64::from(fields["failed"].as_bool().unwrap_or(false));
                op.items += items;
                op.read_units += read;
                op.write_units += write;
            }
            Some(BANK_CALL_LINE) => self.bank_calls += 1,
            _ => {}
        }
    }

    pub fn service(&self, service: &str) -> OpTally {
        let mut sum = OpTally::default();
        for ((s, _), op) in &self.ops {
            if s == service {
                sum.calls += op.calls;
                sum.failed += op.failed;
                sum.items += op.items;
                sum.read_units += op.read_units;
                sum.write_units += op.write_units;
            }
        }
        sum
    }
}

/// `tracing_subscriber`'s span timings ("12.3ms", "456µs", "1.20s", "87.0ns") in ms.
pub fn duration_ms(text: &str) -> Option<f64> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (n, unit) = text.split_at(split);
    let n: f64 = n.parse().ok()?;
    Some(match unit {
        "ns" => n / 1e6,
        "µs" => n / 1e3,
        "ms" => n,
        "s" => n * 1e3,
        _ => return None,
    })
}

/// The function of an instance's log key (`bank-fanout-3` → `bank-fanout`).
pub fn function_of(instance: &str) -> &str {
    match instance.rsplit_once('-') {
        Some((name, n)) if n.chars().all(|c| c.is_ascii_digit()) => name,
        _ => instance,
    }
}

/// SMS parts a text is billed as: GSM-7 160 characters (153 a part when split), else
/// UCS-2 70 (67 a part when split). ASCII stands for GSM-7: our texts are Chinese.
pub fn sms_parts(text: &str) -> u64 {
    let n = text.chars().count() as u64;
    let gsm = text.is_ascii();
    let (single, each) = if gsm { (160, 153) } else { (70, 67) };
    if n <= single {
        1
    } else {
        n.div_ceil(each)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_span_timings_in_every_unit() {
        assert_eq!(duration_ms("12.3ms"), Some(12.3));
        assert_eq!(duration_ms("456µs"), Some(0.456));
        assert_eq!(duration_ms("1.20s"), Some(1200.0));
        assert_eq!(duration_ms("87.0ns"), Some(0.000087));
        assert_eq!(duration_ms("fast"), None);
        assert_eq!(duration_ms("3.0h"), None);
    }

    #[test]
    fn sums_invocations_calls_and_units_of_a_function_log() {
        let log = [
            r#"{"fields":{"message":"close","time.busy":"1.50ms","time.idle":"300µs"},"span":{"requestId":"r1","name":"Lambda runtime invoke"}}"#,
            r#"{"fields":{"message":"close","time.busy":"2.00ms","time.idle":"1.00ms"},"span":{"query_id":"q","name":"query"}}"#,
            r#"{"fields":{"message":"aws call","aws_service":"DynamoDB","aws_operation":"PutItem","status":200,"failed":false,"items":1,"read_units":0.0,"write_units":1.0},"span":{"query_id":"q","name":"query"}}"#,
            r#"{"fields":{"message":"aws call","aws_service":"DynamoDB","aws_operation":"PutItem","status":400,"failed":true,"items":1,"read_units":0.0,"write_units":0.0}}"#,
            r#"{"fields":{"message":"aws call","aws_service":"DynamoDB","aws_operation":"TransactWriteItems","status":200,"failed":false,"items":2,"read_units":0.0,"write_units":2.0}}"#,
            r#"{"fields":{"message":"aws call","aws_service":"SNS","aws_operation":"Publish","status":200,"failed":false,"items":1,"read_units":0.0,"write_units":0.0}}"#,
            r#"{"fields":{"message":"bank call","status":200}}"#,
            "not json",
            r#"{"fields":{"message":"close","time.busy":"10.2ms","time.idle":"0.00ns"},"span":{"requestId":"r2","name":"Lambda runtime invoke"}}"#,
        ];
        let mut t = FunctionTally::default();
        for line in log {
            t.add_line(line);
        }
        assert_eq!(t.invocations, 2, "the query span is not an invocation");
        assert_eq!(t.billed_ms, 2 + 11);
        assert_eq!(t.bank_calls, 1);
        let put = &t.ops[&("DynamoDB".to_owned(), "PutItem".to_owned())];
        assert_eq!((put.calls, put.failed, put.write_units), (2, 1, 1.0));
        let tx = &t.ops[&("DynamoDB".to_owned(), "TransactWriteItems".to_owned())];
        assert_eq!(
            tx.write_units, 4.0,
            "DynamoDB Local's 2 units, at AWS's rate"
        );
        let dynamo = t.service("DynamoDB");
        assert_eq!(
            (dynamo.calls, dynamo.items, dynamo.write_units),
            (3, 4, 5.0)
        );
        assert_eq!(t.service("SNS").calls, 1);
    }

    #[test]
    fn names_functions_and_counts_sms_parts() {
        assert_eq!(function_of("bank-fanout-3"), "bank-fanout");
        assert_eq!(function_of("sweep"), "sweep");
        assert_eq!(sms_parts("Your code is 123456"), 1);
        assert_eq!(sms_parts(&"验".repeat(70)), 1);
        assert_eq!(sms_parts(&"验".repeat(71)), 2);
        assert_eq!(sms_parts(&"a".repeat(161)), 2);
    }
}
