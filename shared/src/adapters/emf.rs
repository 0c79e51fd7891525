//! Operator metrics as CloudWatch embedded metric format (EMF): one JSON line on stdout
//! per value, namespace `CardLookup`, which CloudWatch Logs turns into a metric without
//! an API call (or a failure mode) in the function.

use time::OffsetDateTime;

use crate::ports::{Metric, Metrics};

/// CloudWatch namespace of every metric the service writes.
pub const NAMESPACE: &str = "CardLookup";

#[derive(Debug, Default, Clone, Copy)]
pub struct EmfMetrics;

impl Metrics for EmfMetrics {
    fn emit(&self, metric: Metric, at: OffsetDateTime) {
        println!("{}", line(metric, at));
    }
}

/// The EMF document of one value.
fn line(metric: Metric, at: OffsetDateTime) -> serde_json::Value {
    let (name, value, unit) = match metric {
        Metric::SubmitToReportLatency(d) => (
            "SubmitToReportLatency",
            d.whole_milliseconds() as f64,
            "Milliseconds",
        ),
    };
    let ts = (at.unix_timestamp_nanos() / 1_000_000) as i64;
    serde_json::json!({
        "_aws": {
            "Timestamp": ts,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [[]],
                "Metrics": [{ "Name": name, "Unit": unit }]
            }]
        },
        name: value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;
    use time::Duration;

    #[test]
    fn latency_is_one_emf_document_in_milliseconds() {
        let at = datetime!(2026-11-28 01:00:00.250 UTC);
        let doc = line(Metric::SubmitToReportLatency(Duration::seconds(90)), at);
        assert_eq!(doc["SubmitToReportLatency"], 90_000.0);
        assert_eq!(doc["_aws"]["Timestamp"], 1_795_827_600_250_i64);
        let m = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(m["Namespace"], "CardLookup");
        assert_eq!(m["Metrics"][0]["Name"], "SubmitToReportLatency");
        assert_eq!(m["Metrics"][0]["Unit"], "Milliseconds");
        // One line: CloudWatch reads a document per log line.
        assert!(!doc.to_string().contains('\n'));
    }
}
