//! Operator metrics as CloudWatch embedded metric format (EMF): one JSON line on stdout
//! per value, namespace `CardLookup`, which CloudWatch Logs turns into a metric without
//! an API call (or a failure mode) in the function.

use chrono::{DateTime, Utc};

use crate::ports::{Metric, Metrics};

/// CloudWatch namespace of every metric the service writes.
pub const NAMESPACE: &str = "CardLookup";

#[derive(Debug, Default, Clone, Copy)]
pub struct EmfMetrics;

impl Metrics for EmfMetrics {
    fn emit(&self, metric: Metric, at: DateTime<Utc>) {
        println!("{}", line(metric, at));
    }
}

/// The EMF document of one value.
fn line(metric: Metric, at: DateTime<Utc>) -> serde_json::Value {
    let (name, value, unit) = match metric {
        Metric::SubmitToReportLatency(d) => (
            "SubmitToReportLatency",
            d.num_milliseconds() as f64,
            "Milliseconds",
        ),
        Metric::OpenCircuits(n) => ("OpenCircuits", f64::from(n), "Count"),
    };
    let ts = at.timestamp_millis();
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
    use chrono::TimeDelta;
    use domain::test_support::at;

    #[test]
    fn latency_is_one_emf_document_in_milliseconds() {
        let t = at(2026, 11, 28, 1, 0, 0) + TimeDelta::milliseconds(250);
        let doc = line(Metric::SubmitToReportLatency(TimeDelta::seconds(90)), t);
        assert_eq!(doc["SubmitToReportLatency"], 90_000.0);
        assert_eq!(doc["_aws"]["Timestamp"], 1_795_827_600_250_i64);
        let m = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(m["Namespace"], "CardLookup");
        assert_eq!(m["Metrics"][0]["Name"], "SubmitToReportLatency");
        assert_eq!(m["Metrics"][0]["Unit"], "Milliseconds");
        // One line: CloudWatch reads a document per log line.
        assert!(!doc.to_string().contains('\n'));
    }

    #[test]
    fn open_circuits_are_a_count() {
        let doc = line(Metric::OpenCircuits(2), at(2026, 11, 28, 1, 0, 0));
        assert_eq!(doc["OpenCircuits"], 2.0);
        let m = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(m["Metrics"][0]["Name"], "OpenCircuits");
        assert_eq!(m["Metrics"][0]["Unit"], "Count");
    }
}
