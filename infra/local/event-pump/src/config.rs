//! Command line of `event-pump`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Local event pump: DynamoDB Local's stream, the SQS queues (moto) and the EventBridge
/// schedule to the functions served by `cargo lambda watch`.
///
/// Reads the SAM template's DynamoDB stream event sources and schedules, follows every
/// shard of the table's stream (DynamoDB Local) and invokes the functions through the
/// Lambda invoke API of `cargo lambda watch`, applying each event source's
/// FilterCriteria, BatchSize, MaximumRetryAttempts and ReportBatchItemFailures. Polls
/// the queue of every SQS event (BatchSize, ScalingConfig.MaximumConcurrency,
/// ReportBatchItemFailures) and deletes what the function processed. Delivers
/// the scheduled events every --schedule-every seconds. Prints `EVENT-PUMP READY` on
/// stdout once it follows the stream; logs one JSON line per invocation on stderr.
#[derive(Parser, Debug)]
#[command(name = "event-pump", version)]
pub struct Cli {
    /// DynamoDB (and DynamoDB Streams) endpoint, e.g. http://127.0.0.1:8000.
    #[arg(long, value_name = "URL")]
    dynamodb_endpoint: String,
    /// The table whose stream to follow, e.g. local-CardLookupTable; event sources whose
    /// `Stream: !GetAtt <Id>.StreamArn` names a table id that NAME ends with are served.
    #[arg(long, value_name = "NAME")]
    table: String,
    /// SQS endpoint (the moto server), e.g. http://127.0.0.1:5055; without it the
    /// template's `Type: SQS` events are not served.
    #[arg(long, value_name = "URL")]
    sqs_endpoint: Option<String>,
    /// Prefix of the local queue names: an SQS event's `Queue: !GetAtt <Id>.Arn` is read
    /// from the queue `<P><Id>` (`.fifo` for a FIFO queue).
    #[arg(long, value_name = "P", default_value = "local-")]
    queue_prefix: String,
    /// Pause of an idle queue poller after an empty ReceiveMessage.
    #[arg(long, value_name = "MS", default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
    queue_poll_ms: u64,
    /// The invoke API, e.g. http://127.0.0.1:9000.
    #[arg(long, value_name = "URL")]
    invoke_endpoint: String,
    /// SAM template.
    #[arg(long, value_name = "PATH", default_value = "infra/template.yaml")]
    template: PathBuf,
    /// Period of the scheduled events, instead of the template's rate; 0 = never.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = seconds)]
    schedule_every: Duration,
    /// Pause between empty GetRecords calls of a shard.
    #[arg(long, value_name = "MS", default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
    poll_ms: u64,
    /// Region of the clients and of the events.
    #[arg(long, value_name = "REGION", default_value = "us-east-1")]
    region: String,
    /// Limit of one invocation; the first one of a function may compile it.
    #[arg(long, value_name = "SECS", default_value = "900", value_parser = positive_seconds)]
    invoke_timeout: Duration,
}

impl From<Cli> for Config {
    fn from(cli: Cli) -> Self {
        Self {
            template: cli.template,
            schedule_every: (!cli.schedule_every.is_zero()).then_some(cli.schedule_every),
            poll: Duration::from_millis(cli.poll_ms),
            region: cli.region,
            invoke_timeout: cli.invoke_timeout,
            sqs_endpoint: cli.sqs_endpoint,
            queue_prefix: cli.queue_prefix,
            queue_poll: Duration::from_millis(cli.queue_poll_ms),
            ..Config::new(&cli.dynamodb_endpoint, &cli.table, &cli.invoke_endpoint)
        }
    }
}

/// Everything the pump needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    pub dynamodb_endpoint: String,
    pub table: String,
    pub invoke_endpoint: String,
    pub template: PathBuf,
    /// `None`: scheduled events are not delivered.
    pub schedule_every: Option<Duration>,
    pub poll: Duration,
    pub region: String,
    pub invoke_timeout: Duration,
    /// How often the stream is described again to find new shards.
    pub describe_every: Duration,
    /// First retry delay of a failed batch (doubles each retry, at most 10 s).
    pub retry_base: Duration,
    /// `None`: SQS events are not served.
    pub sqs_endpoint: Option<String>,
    pub queue_prefix: String,
    /// Pause of an idle queue poller after an empty receive.
    pub queue_poll: Duration,
}

impl Config {
    /// A config with the defaults of the command line.
    pub fn new(dynamodb_endpoint: &str, table: &str, invoke_endpoint: &str) -> Self {
        Self {
            dynamodb_endpoint: dynamodb_endpoint.to_owned(),
            table: table.to_owned(),
            invoke_endpoint: invoke_endpoint.to_owned(),
            template: PathBuf::from("infra/template.yaml"),
            schedule_every: Some(Duration::from_secs(5)),
            poll: Duration::from_millis(200),
            region: "us-east-1".to_owned(),
            invoke_timeout: Duration::from_secs(900),
            describe_every: Duration::from_secs(1),
            retry_base: Duration::from_millis(200),
            sqs_endpoint: None,
            queue_prefix: "local-".to_owned(),
            queue_poll: Duration::from_millis(200),
        }
    }

    /// Parses the arguments (without the program name).
    pub fn from_args<I: IntoIterator<Item = String>>(args: I) -> Result<Self, clap::Error> {
        let argv = std::iter::once("event-pump".to_owned()).chain(args);
        Ok(Cli::try_parse_from(argv)?.into())
    }
}

fn seconds(v: &str) -> Result<Duration, String> {
    v.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("not a number of seconds: {v}"))
}

fn positive_seconds(v: &str) -> Result<Duration, String> {
    let d = seconds(v)?;
    if d.is_zero() {
        Err("must be positive".to_owned())
    } else {
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::from_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_the_command_line() {
        let c = parse(&[
            "--dynamodb-endpoint",
            "http://127.0.0.1:8000",
            "--table",
            "local-CardLookupTable",
            "--invoke-endpoint=http://127.0.0.1:9000",
            "--schedule-every",
            "3",
            "--poll-ms",
            "50",
        ])
        .unwrap();
        assert_eq!(c.dynamodb_endpoint, "http://127.0.0.1:8000");
        assert_eq!(c.table, "local-CardLookupTable");
        assert_eq!(c.invoke_endpoint, "http://127.0.0.1:9000");
        assert_eq!(c.template, PathBuf::from("infra/template.yaml"));
        assert_eq!(c.schedule_every, Some(Duration::from_secs(3)));
        assert_eq!(c.poll, Duration::from_millis(50));
        assert_eq!(c.region, "us-east-1");
        assert_eq!(c.sqs_endpoint, None);
        assert_eq!(c.queue_prefix, "local-");
        let c = parse(&[
            "--dynamodb-endpoint",
            "a",
            "--table",
            "t",
            "--invoke-endpoint",
            "b",
            "--sqs-endpoint",
            "http://127.0.0.1:5055",
            "--queue-prefix",
            "t1-",
            "--queue-poll-ms",
            "50",
        ])
        .unwrap();
        assert_eq!(c.sqs_endpoint.as_deref(), Some("http://127.0.0.1:5055"));
        assert_eq!(c.queue_prefix, "t1-");
        assert_eq!(c.queue_poll, Duration::from_millis(50));
        let c = parse(&[
            "--dynamodb-endpoint",
            "a",
            "--table",
            "t",
            "--invoke-endpoint",
            "b",
            "--schedule-every",
            "0",
        ])
        .unwrap();
        assert_eq!(c.schedule_every, None);
        assert_eq!(c.poll, Duration::from_millis(200));
    }

    #[test]
    fn refuses_bad_command_lines() {
        let help = parse(&["--help"]).unwrap_err();
        assert_eq!(help.kind(), clap::error::ErrorKind::DisplayHelp);
        assert!(parse(&[
            "--dynamodb-endpoint",
            "a",
            "--table",
            "t",
            "--invoke-endpoint",
            "b",
            "--invoke-timeout",
            "0"
        ])
        .is_err());
        assert!(parse(&["--table", "t", "--invoke-endpoint", "b"]).is_err());
        assert!(parse(&[
            "--dynamodb-endpoint",
            "a",
            "--table",
            "t",
            "--invoke-endpoint",
            "b",
            "--poll-ms",
            "0"
        ])
        .is_err());
        assert!(parse(&[
            "--dynamodb-endpoint",
            "a",
            "--table",
            "t",
            "--invoke-endpoint",
            "b",
            "--bogus"
        ])
        .is_err());
        assert!(parse(&["--dynamodb-endpoint"]).is_err());
    }
}
