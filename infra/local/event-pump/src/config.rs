//! Command line of `event-pump`.

use std::path::PathBuf;
use std::time::Duration;

pub const USAGE: &str = "\
usage: event-pump --dynamodb-endpoint URL --table NAME --invoke-endpoint URL
                  [--template infra/template.yaml] [--schedule-every SECS]
                  [--poll-ms MS] [--region REGION] [--invoke-timeout SECS]

Reads the SAM template's DynamoDB stream event sources and schedules, follows every
shard of the table's stream (DynamoDB Local) and invokes the functions through the
Lambda invoke API of `cargo lambda watch`, applying each event source's FilterCriteria,
BatchSize, MaximumRetryAttempts and ReportBatchItemFailures. Delivers the scheduled
events every --schedule-every seconds. Prints `EVENT-PUMP READY` on stdout once it
follows the stream; logs one JSON line per invocation on stderr.

  --dynamodb-endpoint URL  DynamoDB (and DynamoDB Streams) endpoint, e.g. http://127.0.0.1:8000
  --table NAME             the table whose stream to follow, e.g. local-CardLookupTable;
                           event sources whose `Stream: !GetAtt <Id>.StreamArn` names a
                           table id that NAME ends with are served
  --invoke-endpoint URL    the invoke API, e.g. http://127.0.0.1:9000
  --template PATH          SAM template (default infra/template.yaml)
  --schedule-every SECS    period of the scheduled events, instead of the template's
                           rate; 0 = never (default 5)
  --poll-ms MS             pause between empty GetRecords calls of a shard (default 200)
  --region REGION          region of the clients and of the events (default us-east-1)
  --invoke-timeout SECS    limit of one invocation; the first one of a function may
                           compile it (default 900)
";

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
        }
    }

    /// Parses the arguments (without the program name). `Ok(None)` means `--help`.
    pub fn from_args<I: IntoIterator<Item = String>>(args: I) -> Result<Option<Self>, String> {
        let mut it = args.into_iter();
        let (mut ddb, mut table, mut invoke) = (None, None, None);
        let mut cfg = Config::new("", "", "");
        while let Some(arg) = it.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
                _ => (arg.clone(), None),
            };
            if flag == "-h" || flag == "--help" {
                return Ok(None);
            }
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| it.next())
                    .ok_or_else(|| format!("{flag} needs a value"))
            };
            match flag.as_str() {
                "--dynamodb-endpoint" => ddb = Some(value()?),
                "--table" => table = Some(value()?),
                "--invoke-endpoint" => invoke = Some(value()?),
                "--template" => cfg.template = PathBuf::from(value()?),
                "--schedule-every" => {
                    let secs = seconds(&flag, &value()?)?;
                    cfg.schedule_every = (!secs.is_zero()).then_some(secs);
                }
                "--poll-ms" => {
                    let v = value()?;
                    let ms: u64 = v
                        .parse()
                        .ok()
                        .filter(|ms| *ms > 0)
                        .ok_or_else(|| format!("--poll-ms: not a positive integer: {v}"))?;
                    cfg.poll = Duration::from_millis(ms);
                }
                "--region" => cfg.region = value()?,
                "--invoke-timeout" => {
                    let v = value()?;
                    cfg.invoke_timeout = seconds(&flag, &v)?;
                    if cfg.invoke_timeout.is_zero() {
                        return Err("--invoke-timeout must be positive".into());
                    }
                }
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        cfg.dynamodb_endpoint = ddb.ok_or("--dynamodb-endpoint is required")?;
        cfg.table = table.ok_or("--table is required")?;
        cfg.invoke_endpoint = invoke.ok_or("--invoke-endpoint is required")?;
        Ok(Some(cfg))
    }
}

fn seconds(flag: &str, v: &str) -> Result<Duration, String> {
    v.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{flag}: not a number of seconds: {v}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Config>, String> {
        Config::from_args(args.iter().map(|s| s.to_string()))
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
        .unwrap()
        .unwrap();
        assert_eq!(c.dynamodb_endpoint, "http://127.0.0.1:8000");
        assert_eq!(c.table, "local-CardLookupTable");
        assert_eq!(c.invoke_endpoint, "http://127.0.0.1:9000");
        assert_eq!(c.template, PathBuf::from("infra/template.yaml"));
        assert_eq!(c.schedule_every, Some(Duration::from_secs(3)));
        assert_eq!(c.poll, Duration::from_millis(50));
        assert_eq!(c.region, "us-east-1");
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
        .unwrap()
        .unwrap();
        assert_eq!(c.schedule_every, None);
        assert_eq!(c.poll, Duration::from_millis(200));
    }

    #[test]
    fn refuses_bad_command_lines() {
        assert!(parse(&["--help"]).unwrap().is_none());
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
