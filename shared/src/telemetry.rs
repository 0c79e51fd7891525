//! Structured JSON logs. Handlers open a span with the request or query id, so every
//! line carries it. (Operator metrics: the `Metrics` port, `adapters::emf`.)

use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::EnvFilter;

/// The variable holding the log filter, read before the function's settings so that
/// their errors are logged too.
pub const LOG_FILTER_VAR: &str = "RUST_LOG";

/// JSON lines to stdout (CloudWatch in AWS), level from [`LOG_FILTER_VAR`] (default `info`).
/// Metered (`adapters::metering`), each span's close is logged too: the runtime's
/// `Lambda runtime invoke` span then gives every invocation's duration, which is what
/// Lambda bills, to the cost benchmark.
pub fn init() {
    let filter = EnvFilter::try_from_env(LOG_FILTER_VAR).unwrap_or_else(|_| EnvFilter::new("info"));
    let spans = if crate::adapters::metering::enabled() {
        FmtSpan::CLOSE
    } else {
        FmtSpan::NONE
    };
    let _ = tracing_subscriber::fmt()
        .json()
        .with_span_events(spans)
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .try_init();
}
