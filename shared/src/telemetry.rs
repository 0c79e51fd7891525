//! Structured JSON logs. Handlers open a span with the request or query id, so every
//! line carries it.

use tracing_subscriber::EnvFilter;

/// JSON lines to stdout (CloudWatch in AWS), level from `RUST_LOG` (default `info`).
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .try_init();
}

/// One CloudWatch embedded-metric-format line (namespace `CardLookup`): CloudWatch turns
/// it into a metric without an API call from the function.
pub fn emit_metric(name: &str, value: f64, unit: &str) {
    let ts = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    let line = serde_json::json!({
        "_aws": {
            "Timestamp": ts,
            "CloudWatchMetrics": [{
                "Namespace": "CardLookup",
                "Dimensions": [[]],
                "Metrics": [{ "Name": name, "Unit": unit }]
            }]
        },
        name: value,
    });
    println!("{line}");
}
