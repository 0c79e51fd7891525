//! The running pump: the table's stream to the functions, and the schedules.
//!
//! Like separate Lambda event source mappings, every stream event source reads every
//! shard on its own (own shard iterators, own checkpoint): one source retrying or
//! failing never holds up another. Within a source, a shard's records are delivered in
//! order, one batch at a time; shards run concurrently, a child shard only after its
//! parent is fully processed.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_dynamodbstreams::error::ProvideErrorMetadata as _;
use aws_sdk_dynamodbstreams::types::ShardIteratorType;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::batch::{verdict, Outcome, Verdict};
use crate::config::Config;
use crate::invoke::Invoker;
use crate::log;
use crate::record::{lambda_record, sequence_number};
use crate::sources::{EventSources, ScheduleSource, StreamSource, TemplateError};

#[derive(Debug, thiserror::Error)]
pub enum PumpError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("a pump task failed: {0}")]
    Task(String),
}

// ---- delivery of one batch with retries ------------------------------------------------

/// How a source retries (from its template settings).
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// `None`: until it succeeds.
    pub max_retries: Option<u32>,
    pub report_batch_item_failures: bool,
    /// First delay; doubles each retry, at most 10 s.
    pub base: Duration,
}

impl RetryPolicy {
    pub fn delay(&self, retry: u32) -> Duration {
        let factor = 1u32 << retry.saturating_sub(1).min(16);
        self.base
            .saturating_mul(factor)
            .min(Duration::from_secs(10).max(self.base))
    }
}

/// What became of one batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub invocations: u32,
    /// Records given up after the last retry ("sent to the on-failure destination").
    pub dropped: Vec<Value>,
}

/// Delivers `records` (one batch, in order) with `invoke`, retrying as Lambda does:
/// a function error retries the whole batch; a reported item failure retries from the
/// lowest failed record onwards (the records before it are done). After
/// `max_retries` retries the rest of the batch is dropped. `invoke` gets the records of
/// the attempt and the retry number (0 = first attempt).
pub async fn deliver<F, Fut>(records: &[Value], policy: &RetryPolicy, mut invoke: F) -> Delivery
where
    F: FnMut(Vec<Value>, u32) -> Fut,
    Fut: Future<Output = Outcome>,
{
    let mut start = 0;
    let mut retries = 0u32;
    let mut invocations = 0u32;
    loop {
        let batch = &records[start..];
        let outcome = invoke(batch.to_vec(), retries).await;
        invocations += 1;
        let seqs: Vec<&str> = batch
            .iter()
            .map(|r| sequence_number(r).unwrap_or(""))
            .collect();
        match verdict(&seqs, &outcome, policy.report_batch_item_failures) {
            Verdict::Done => {
                return Delivery {
                    invocations,
                    dropped: Vec::new(),
                }
            }
            Verdict::RetryFrom { from, .. } => {
                start += from;
                retries += 1;
                if policy.max_retries.is_some_and(|max| retries > max) {
                    return Delivery {
                        invocations,
                        dropped: records[start..].to_vec(),
                    };
                }
                tokio::time::sleep(policy.delay(retries)).await;
            }
        }
    }
}

// ---- the scheduled event ----------------------------------------------------------------

pub const ACCOUNT: &str = "000000000000";

/// The EventBridge "Scheduled Event" a schedule rule sends to its target.
pub fn scheduled_event(source: &ScheduleSource, region: &str) -> Value {
    if let Some(input) = &source.input {
        return input.clone();
    }
    // EventBridge writes whole seconds: `2026-11-28T13:20:21Z`.
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    json!({
        "version": "0",
        "id": uuid::Uuid::new_v4().to_string(),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT,
        "time": now,
        "region": region,
        "resources": [format!(
            "arn:aws:events:{region}:{ACCOUNT}:rule/{}-{}", source.function_id, source.event_name
        )],
        "detail": {}
    })
}

// ---- shared state -----------------------------------------------------------------------

/// What the pump shares between its tasks.
pub(crate) struct Shared {
    cfg: Config,
    invoker: Invoker,
    streams: aws_sdk_dynamodbstreams::Client,
    /// Functions the invoke API said it does not serve (logged once each).
    not_served: Mutex<HashSet<String>>,
    /// Each function's template `Timeout`, by binary name.
    timeouts: std::collections::HashMap<String, u64>,
}

impl Shared {
    /// Invokes `function` and logs the invocation line.
    pub(crate) async fn invoke_logged(
        &self,
        function: &str,
        payload: &Value,
        fields: Value,
    ) -> Outcome {
        let t0 = Instant::now();
        // Lambda ends an invocation at the function's Timeout and the event source
        // retries it; the watch would wait for ever on an instance that died. Twice the
        // template's value: debug builds on a shared machine are slower than Lambda.
        let limit = self
            .timeouts
            .get(function)
            .map_or(self.cfg.invoke_timeout, |t| {
                Duration::from_secs(t.saturating_mul(2)).min(self.cfg.invoke_timeout)
            });
        let call = async {
            match tokio::time::timeout(limit, self.invoker.invoke(function, payload)).await {
                Ok(outcome) => outcome,
                Err(_) => Outcome::Transport(format!(
                    "no answer within {} s (twice the function's Timeout)",
                    limit.as_secs()
                )),
            }
        };
        tokio::pin!(call);
        let mut patience = Duration::from_secs(30);
        let outcome = loop {
            tokio::select! {
                outcome = &mut call => break outcome,
                _ = tokio::time::sleep(patience) => {
                    log::info(
                        "invocation still running (see the function instances' logs)",
                        json!({ "function": function, "waited_s": t0.elapsed().as_secs() }),
                    );
                    patience = (patience * 2).min(Duration::from_secs(300));
                }
            }
        };
        let ms = t0.elapsed().as_millis() as u64;
        let mut line = json!({
            "function": function,
            "outcome": outcome.label(),
            "ms": ms,
        });
        if let (Value::Object(l), Value::Object(f)) = (&mut line, fields) {
            l.extend(f);
        }
        if let Outcome::Ok(body) = &outcome {
            let failed = body
                .get("batchItemFailures")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            if failed > 0 {
                line["outcome"] = json!("partial_failure");
                line["failed_items"] = json!(failed);
            }
        }
        if let Some(detail) = outcome.detail() {
            line["detail"] = json!(detail);
        }
        log::emit(line);
        let mut not_served = self.not_served.lock().expect("not poisoned");
        match &outcome {
            Outcome::NotFound { .. } => {
                if not_served.insert(function.to_owned()) {
                    log::warn(
                        "the invoke API does not serve this function (yet); its events are \
                         retried like any failure",
                        json!({ "function": function, "invoke_url": self.invoker.url(function) }),
                    );
                }
            }
            Outcome::Ok(_) | Outcome::FunctionError { .. } => {
                if not_served.remove(function) {
                    log::info(
                        "the function is served now",
                        json!({ "function": function }),
                    );
                }
            }
            Outcome::Transport(_) => {}
        }
        outcome
    }
}

// ---- the stream --------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
struct Shard {
    id: String,
    parent: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct StreamSnapshot {
    arn: String,
    shards: Vec<Shard>,
}

type ShardKey = (String, String);

/// `Code: message` for a service error, else the whole error chain.
fn sdk_error<E, R>(e: &aws_sdk_dynamodbstreams::error::SdkError<E, R>) -> String
where
    E: std::error::Error + aws_sdk_dynamodbstreams::error::ProvideErrorMetadata + 'static,
    R: std::fmt::Debug,
{
    match e.as_service_error() {
        Some(se) if se.code().is_some() => {
            format!(
                "{}: {}",
                se.code().unwrap_or_default(),
                se.message().unwrap_or_default()
            )
        }
        _ => aws_sdk_dynamodbstreams::error::DisplayErrorContext(e).to_string(),
    }
}

async fn latest_stream_arn(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<Option<String>, String> {
    let out = ddb
        .describe_table()
        .table_name(table)
        .send()
        .await
        .map_err(|e| sdk_error(&e))?;
    Ok(out
        .table()
        .and_then(|t| t.latest_stream_arn())
        .map(str::to_owned))
}

async fn describe_shards(
    streams: &aws_sdk_dynamodbstreams::Client,
    arn: &str,
) -> Result<Vec<Shard>, String> {
    let mut shards = Vec::new();
    let mut start: Option<String> = None;
    loop {
        let out = streams
            .describe_stream()
            .stream_arn(arn)
            .set_exclusive_start_shard_id(start.clone())
            .send()
            .await
            .map_err(|e| sdk_error(&e))?;
        let Some(desc) = out.stream_description() else {
            break;
        };
        for s in desc.shards() {
            if let Some(id) = s.shard_id() {
                shards.push(Shard {
                    id: id.to_owned(),
                    parent: s.parent_shard_id().map(str::to_owned),
                });
            }
        }
        match desc.last_evaluated_shard_id() {
            Some(last) if Some(last) != start.as_deref() => start = Some(last.to_owned()),
            _ => break,
        }
    }
    Ok(shards)
}

/// Describes the table and its stream every `describe_every`, publishing the shards.
async fn describer(
    shared: Arc<Shared>,
    ddb: aws_sdk_dynamodb::Client,
    tx: watch::Sender<Option<StreamSnapshot>>,
) {
    let mut failing = false;
    loop {
        tokio::time::sleep(shared.cfg.describe_every).await;
        let result = async {
            let arn = latest_stream_arn(&ddb, &shared.cfg.table)
                .await?
                .ok_or_else(|| format!("table {} has no stream", shared.cfg.table))?;
            let shards = describe_shards(&shared.streams, &arn).await?;
            Ok::<_, String>(StreamSnapshot { arn, shards })
        }
        .await;
        match result {
            Ok(snap) => {
                if failing {
                    log::info("describing the stream works again", json!({}));
                    failing = false;
                }
                tx.send_if_modified(|cur| {
                    if cur.as_ref() == Some(&snap) {
                        return false;
                    }
                    let old = cur.as_ref();
                    if old.is_some_and(|o| o.arn != snap.arn) {
                        log::info("the table has a new stream", json!({ "stream_arn": snap.arn }));
                    }
                    let known: HashSet<&str> = old
                        .filter(|o| o.arn == snap.arn)
                        .map(|o| o.shards.iter().map(|s| s.id.as_str()).collect())
                        .unwrap_or_default();
                    for s in snap.shards.iter().filter(|s| !known.contains(s.id.as_str())) {
                        log::info(
                            "new shard",
                            json!({ "shard": s.id, "parent": s.parent, "shards": snap.shards.len() }),
                        );
                    }
                    *cur = Some(snap);
                    true
                });
            }
            Err(e) => {
                if !failing {
                    log::warn(
                        "cannot describe the stream (will retry)",
                        json!({ "error": e }),
                    );
                    failing = true;
                }
            }
        }
    }
}

/// The shards of `snap` to start now: not started yet, and either without a parent, or
/// whose parent is no longer listed (trimmed) or fully processed (parent → child order).
fn startable<'a>(
    snap: &'a StreamSnapshot,
    started: &HashSet<ShardKey>,
    finished: &HashSet<ShardKey>,
) -> Vec<&'a Shard> {
    let ids: HashSet<&str> = snap.shards.iter().map(|s| s.id.as_str()).collect();
    snap.shards
        .iter()
        .filter(|shard| !started.contains(&(snap.arn.clone(), shard.id.clone())))
        .filter(|shard| match &shard.parent {
            None => true,
            Some(p) => {
                !ids.contains(p.as_str()) || finished.contains(&(snap.arn.clone(), p.clone()))
            }
        })
        .collect()
}

/// One stream event source: starts a follower per shard once its parent is done.
async fn source_coordinator(
    shared: Arc<Shared>,
    source: Arc<StreamSource>,
    mut rx: watch::Receiver<Option<StreamSnapshot>>,
) {
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<ShardKey>();
    let mut started: HashSet<ShardKey> = HashSet::new();
    let mut finished: HashSet<ShardKey> = HashSet::new();
    let mut first_arn: Option<String> = None;
    let mut first_shards: HashSet<String> = HashSet::new();
    let mut followers = JoinSet::new();
    loop {
        let snap = rx.borrow_and_update().clone();
        if let Some(snap) = snap {
            if first_arn.is_none() {
                first_arn = Some(snap.arn.clone());
                first_shards = snap.shards.iter().map(|s| s.id.clone()).collect();
            }
            for shard in startable(&snap, &started, &finished) {
                let key = (snap.arn.clone(), shard.id.clone());
                // StartingPosition applies to the shards there when the mapping starts;
                // shards that appear later are read from their beginning.
                let at_start = first_arn.as_deref() == Some(snap.arn.as_str())
                    && first_shards.contains(&shard.id);
                let position = if at_start && source.starting_position == "LATEST" {
                    ShardIteratorType::Latest
                } else {
                    ShardIteratorType::TrimHorizon
                };
                started.insert(key.clone());
                let (shared, source, done_tx) = (shared.clone(), source.clone(), done_tx.clone());
                followers.spawn(async move {
                    follow_shard(&shared, &source, &key.0, &key.1, position).await;
                    let _ = done_tx.send(key);
                });
            }
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            Some(key) = done_rx.recv() => { finished.insert(key); }
            Some(Err(e)) = followers.join_next(), if !followers.is_empty() => {
                if e.is_panic() {
                    std::panic::resume_unwind(e.into_panic());
                }
            }
        }
    }
}

/// Reads one shard for one source from `position`, delivering matching records in
/// batches, until the shard is closed and drained (or the stream is gone).
async fn follow_shard(
    shared: &Shared,
    source: &StreamSource,
    arn: &str,
    shard: &str,
    mut position: ShardIteratorType,
) {
    let cfg = &shared.cfg;
    let policy = RetryPolicy {
        max_retries: source.max_retries,
        report_batch_item_failures: source.report_batch_item_failures,
        base: cfg.retry_base,
    };
    let mut last_seq: Option<String> = None;
    let mut iterator: Option<String> = None;
    let mut error_streak = 0u32;
    let pause_after_error = |streak: u32| (cfg.poll * streak.min(25)).min(Duration::from_secs(5));
    loop {
        if iterator.is_none() {
            let req = shared
                .streams
                .get_shard_iterator()
                .stream_arn(arn)
                .shard_id(shard);
            let req = match &last_seq {
                Some(seq) => req
                    .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                    .sequence_number(seq),
                None => req.shard_iterator_type(position.clone()),
            };
            match req.send().await {
                Ok(out) => match out.shard_iterator() {
                    Some(it) => iterator = Some(it.to_owned()),
                    None => return, // nothing left to read
                },
                Err(e) => {
                    if e.code() == Some("ResourceNotFoundException") {
                        log::warn(
                            "shard is gone; stop reading it",
                            json!({ "source": source.name(), "shard": shard, "error": sdk_error(&e) }),
                        );
                        return;
                    }
                    error_streak += 1;
                    if error_streak.is_power_of_two() {
                        log::warn(
                            "GetShardIterator failed (will retry)",
                            json!({ "source": source.name(), "shard": shard, "error": sdk_error(&e) }),
                        );
                    }
                    tokio::time::sleep(pause_after_error(error_streak)).await;
                    continue;
                }
            }
        }
        let it = iterator.take().expect("set above");
        let out = match shared
            .streams
            .get_records()
            .shard_iterator(it)
            .limit(1000)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                let code = e.code().unwrap_or_default().to_owned();
                if code == "ResourceNotFoundException" {
                    log::warn(
                        "shard is gone; stop reading it",
                        json!({ "source": source.name(), "shard": shard }),
                    );
                    return;
                }
                if code == "TrimmedDataAccessException" {
                    if last_seq.is_none() {
                        // DynamoDB Local: an iterator taken while the shard was empty fails
                        // like this once the first record arrives. Everything in the shard
                        // is new to us then: read it from the start.
                        position = ShardIteratorType::TrimHorizon;
                        continue;
                    }
                    // Our position is older than the stream keeps: go on from the oldest.
                    log::warn(
                        "records were trimmed before they were read; going on from the oldest",
                        json!({ "source": source.name(), "shard": shard, "after": last_seq }),
                    );
                    last_seq = None;
                    position = ShardIteratorType::TrimHorizon;
                    continue;
                }
                error_streak += 1;
                if code != "ExpiredIteratorException" && error_streak.is_power_of_two() {
                    log::warn(
                        "GetRecords failed (will retry)",
                        json!({ "source": source.name(), "shard": shard, "error": sdk_error(&e) }),
                    );
                }
                tokio::time::sleep(pause_after_error(error_streak)).await;
                continue; // iterator is None: a fresh one after last_seq
            }
        };
        error_streak = 0;
        let records = out.records();
        let matching: Vec<Value> = records
            .iter()
            .map(|r| lambda_record(r, arn, &cfg.region))
            .filter(|r| source.filters.matches(r))
            .collect();
        for batch in matching.chunks(source.batch_size) {
            deliver_stream_batch(shared, source, shard, batch, &policy).await;
        }
        if let Some(seq) = records
            .last()
            .and_then(|r| r.dynamodb())
            .and_then(|d| d.sequence_number())
        {
            last_seq = Some(seq.to_owned());
        }
        match out.next_shard_iterator() {
            Some(next) => iterator = Some(next.to_owned()),
            None => {
                log::info(
                    "shard closed and fully processed",
                    json!({ "source": source.name(), "shard": shard }),
                );
                return;
            }
        }
        if records.is_empty() {
            tokio::time::sleep(cfg.poll).await;
        }
    }
}

async fn deliver_stream_batch(
    shared: &Shared,
    source: &StreamSource,
    shard: &str,
    batch: &[Value],
    policy: &RetryPolicy,
) {
    let delivery = deliver(batch, policy, |records, retry| {
        let fields = json!({
            "kind": "stream",
            "source": source.name(),
            "shard": shard,
            "records": records.len(),
            "first_sequence": records.first().and_then(|r| sequence_number(r)),
            "retry": retry,
        });
        let payload = json!({ "Records": records });
        async move { shared.invoke_logged(&source.binary, &payload, fields).await }
    })
    .await;
    if !delivery.dropped.is_empty() {
        let seqs: Vec<&str> = delivery
            .dropped
            .iter()
            .filter_map(|r| sequence_number(r))
            .collect();
        let ids: Vec<&str> = delivery
            .dropped
            .iter()
            .filter_map(|r| r.get("eventID").and_then(Value::as_str))
            .collect();
        log::warn(
            "sent to the on-failure destination",
            json!({
                "source": source.name(),
                "function": source.binary,
                "shard": shard,
                "records": delivery.dropped.len(),
                "sequence_numbers": seqs,
                "event_ids": ids,
                "after_invocations": delivery.invocations,
                "max_retries": source.max_retries,
            }),
        );
    }
}

// ---- schedules ---------------------------------------------------------------------------

async fn schedule_loop(shared: Arc<Shared>, source: ScheduleSource, every: Duration) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        ticks.tick().await;
        let event = scheduled_event(&source, &shared.cfg.region);
        let t0 = Instant::now();
        let fields = json!({ "kind": "schedule", "source": source.name(), "records": 0 });
        shared.invoke_logged(&source.binary, &event, fields).await;
        let skipped = (t0.elapsed().as_secs_f64() / every.as_secs_f64()) as u64;
        if skipped > 0 {
            log::info(
                "schedule ticks skipped while the previous call ran",
                json!({ "source": source.name(), "skipped": skipped }),
            );
        }
    }
}

// ---- run ---------------------------------------------------------------------------------

fn clients(cfg: &Config) -> (aws_sdk_dynamodb::Client, aws_sdk_dynamodbstreams::Client) {
    use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
    let creds = Credentials::new("test", "test", None, None, "event-pump");
    let timeouts = aws_sdk_dynamodb::config::timeout::TimeoutConfig::builder()
        .operation_timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(5))
        .build();
    let ddb = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(cfg.region.clone()))
        .credentials_provider(creds.clone())
        .endpoint_url(&cfg.dynamodb_endpoint)
        .timeout_config(timeouts.clone())
        .build();
    let streams = aws_sdk_dynamodbstreams::Config::builder()
        .behavior_version(aws_sdk_dynamodbstreams::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodbstreams::config::Region::new(
            cfg.region.clone(),
        ))
        .credentials_provider(creds)
        .endpoint_url(&cfg.dynamodb_endpoint)
        .timeout_config(timeouts)
        .build();
    (
        aws_sdk_dynamodb::Client::from_conf(ddb),
        aws_sdk_dynamodbstreams::Client::from_conf(streams),
    )
}

fn sqs_client(cfg: &Config, endpoint: &str) -> aws_sdk_sqs::Client {
    use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
    let timeouts = aws_sdk_sqs::config::timeout::TimeoutConfig::builder()
        .operation_timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(5))
        .build();
    let conf = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(cfg.region.clone()))
        .credentials_provider(Credentials::new("test", "test", None, None, "event-pump"))
        .endpoint_url(endpoint)
        .timeout_config(timeouts)
        .build();
    aws_sdk_sqs::Client::from_conf(conf)
}

/// Runs the pump until `shutdown` completes. Calls `on_ready` once it follows the
/// table's stream (at once if no event source reads that table). Returns an error if the
/// template cannot be read or a task panics.
pub async fn run(
    cfg: Config,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(),
) -> Result<(), PumpError> {
    let sources = EventSources::load(&cfg.template)?;
    let invoker = Invoker::new(&cfg.invoke_endpoint, cfg.invoke_timeout)?;
    let (ddb, streams) = clients(&cfg);
    let shared = Arc::new(Shared {
        cfg: cfg.clone(),
        invoker,
        streams,
        not_served: Mutex::new(HashSet::new()),
        timeouts: sources.timeouts.clone(),
    });

    let (mine, others): (Vec<_>, Vec<_>) = sources
        .streams
        .into_iter()
        .partition(|s| s.reads_table(&cfg.table));
    for s in &others {
        log::warn(
            "event source reads another table's stream; not served",
            json!({ "source": s.name(), "table_id": s.table_id, "table": cfg.table }),
        );
    }
    for s in &sources.skipped {
        log::warn("event source skipped", json!({ "reason": s }));
    }
    for s in mine.iter().filter(|s| s.bisect_on_error) {
        log::info(
            "BisectBatchOnFunctionError is not emulated: failed batches are retried whole",
            json!({ "source": s.name() }),
        );
    }
    log::info(
        "event sources",
        json!({
            "table": cfg.table,
            "streams": mine.iter().map(|s| json!({
                "source": s.name(), "function": s.binary, "batch_size": s.batch_size,
                "max_retries": s.max_retries,
                "report_batch_item_failures": s.report_batch_item_failures,
                "starting_position": s.starting_position,
                "filters": s.filters.patterns.iter().map(|p| p.source()).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "schedules": sources.schedules.iter().map(|s| json!({
                "source": s.name(), "function": s.binary, "template_schedule": s.expression,
                "every_s": cfg.schedule_every.map(|d| d.as_secs_f64()),
            })).collect::<Vec<_>>(),
        }),
    );

    let mut tasks: JoinSet<()> = JoinSet::new();
    tokio::pin!(shutdown);
    if let Some(every) = cfg.schedule_every {
        for s in sources.schedules {
            tasks.spawn(schedule_loop(shared.clone(), s, every));
        }
    }

    match (&cfg.sqs_endpoint, sources.queues.is_empty()) {
        (_, true) => {}
        (None, false) => log::warn(
            "no --sqs-endpoint: the template's SQS events are not served",
            json!({ "sources": sources.queues.iter().map(|q| q.name()).collect::<Vec<_>>() }),
        ),
        (Some(endpoint), false) => {
            let sqs = sqs_client(&cfg, endpoint);
            for source in sources.queues {
                let name = source.queue_name(&cfg.queue_prefix);
                // The stack creates the queues before the pump starts; a test may not.
                let (queue_url, queue_arn) = tokio::select! {
                    _ = &mut shutdown => return Ok(()),
                    found = crate::queue::resolve(&sqs, &name, cfg.describe_every) => found,
                };
                log::info(
                    "polling the queue",
                    json!({
                        "source": source.name(), "function": source.binary, "queue_url": queue_url,
                        "batch_size": source.batch_size, "max_concurrency": source.max_concurrency,
                        "report_batch_item_failures": source.report_batch_item_failures,
                    }),
                );
                let pump = Arc::new(crate::queue::QueuePump {
                    source,
                    sqs: sqs.clone(),
                    shared: shared.clone(),
                    queue_url,
                    queue_arn,
                    region: cfg.region.clone(),
                    poll: cfg.queue_poll,
                });
                tasks.spawn(pump.run());
            }
        }
    }

    if !mine.is_empty() {
        // Wait for the table and its stream (the stack creates the table first).
        let mut waited = false;
        let snapshot = loop {
            let found = async {
                let arn = latest_stream_arn(&ddb, &cfg.table).await?;
                match arn {
                    Some(arn) => {
                        let shards = describe_shards(&shared.streams, &arn).await?;
                        Ok(Some(StreamSnapshot { arn, shards }))
                    }
                    None => Ok::<_, String>(None),
                }
            }
            .await;
            match found {
                Ok(Some(snap)) => break snap,
                Ok(None) | Err(_) if !waited => {
                    log::warn(
                        "waiting for the table's stream",
                        json!({ "table": cfg.table, "error": found.err() }),
                    );
                    waited = true;
                }
                _ => {}
            }
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = tokio::time::sleep(cfg.describe_every) => {}
            }
        };
        log::info(
            "following the stream",
            json!({ "stream_arn": snapshot.arn, "shards": snapshot.shards.iter().map(|s| json!({
                "shard": s.id, "parent": s.parent })).collect::<Vec<_>>() }),
        );
        let (tx, rx) = watch::channel(Some(snapshot));
        for s in mine {
            tasks.spawn(source_coordinator(shared.clone(), Arc::new(s), rx.clone()));
        }
        tasks.spawn(describer(shared.clone(), ddb, tx));
    }
    on_ready();

    let result = loop {
        tokio::select! {
            _ = &mut shutdown => break Ok(()),
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = done {
                    if e.is_panic() {
                        let msg = e.into_panic();
                        let msg = msg.downcast_ref::<String>().cloned()
                            .or_else(|| msg.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_else(|| "panic".into());
                        break Err(PumpError::Task(msg));
                    }
                }
            }
        }
    };
    tasks.abort_all();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(seq: &str) -> Value {
        json!({ "eventID": format!("e{seq}"), "dynamodb": { "SequenceNumber": seq } })
    }

    fn seqs(records: &[Value]) -> Vec<String> {
        records
            .iter()
            .map(|r| sequence_number(r).unwrap().to_owned())
            .collect()
    }

    fn policy(max: Option<u32>, report: bool) -> RetryPolicy {
        RetryPolicy {
            max_retries: max,
            report_batch_item_failures: report,
            base: Duration::ZERO,
        }
    }

    /// Runs `deliver` with scripted outcomes; returns the batches that were sent.
    async fn run_script(
        batch: &[Value],
        policy: &RetryPolicy,
        script: Vec<Outcome>,
    ) -> (Vec<Vec<String>>, Delivery) {
        let sent = Mutex::new(Vec::new());
        let script = Mutex::new(script.into_iter());
        let d = deliver(batch, policy, |records, _retry| {
            sent.lock().unwrap().push(seqs(&records));
            let o = script
                .lock()
                .unwrap()
                .next()
                .unwrap_or(Outcome::Ok(json!({"batchItemFailures": []})));
            async move { o }
        })
        .await;
        (sent.into_inner().unwrap(), d)
    }

    fn fail_items(ids: &[&str]) -> Outcome {
        Outcome::Ok(json!({
            "batchItemFailures": ids.iter().map(|i| json!({"itemIdentifier": i})).collect::<Vec<_>>()
        }))
    }

    #[tokio::test]
    async fn partial_failure_retries_from_the_lowest_failed_record() {
        let batch: Vec<Value> = ["1", "2", "3", "4"].into_iter().map(rec).collect();
        let (sent, d) = run_script(
            &batch,
            &policy(Some(5), true),
            vec![fail_items(&["4", "2"]), fail_items(&["3"])],
        )
        .await;
        assert_eq!(
            sent,
            vec![
                vec!["1", "2", "3", "4"],
                vec!["2", "3", "4"],
                vec!["3", "4"]
            ]
        );
        assert_eq!(d.invocations, 3);
        assert!(d.dropped.is_empty());
    }

    #[tokio::test]
    async fn function_error_retries_the_whole_batch_then_drops_it() {
        let batch: Vec<Value> = ["1", "2"].into_iter().map(rec).collect();
        let err = || Outcome::FunctionError {
            status: 500,
            body: "{}".into(),
        };
        let (sent, d) = run_script(&batch, &policy(Some(2), true), vec![err(), err(), err()]).await;
        assert_eq!(sent, vec![vec!["1", "2"]; 3], "1 attempt + 2 retries");
        assert_eq!(seqs(&d.dropped), ["1", "2"]);
    }

    #[tokio::test]
    async fn partial_failure_then_exhausted_drops_only_the_rest() {
        let batch: Vec<Value> = ["1", "2", "3"].into_iter().map(rec).collect();
        let (sent, d) = run_script(
            &batch,
            &policy(Some(1), true),
            vec![fail_items(&["2"]), fail_items(&["3"])],
        )
        .await;
        assert_eq!(sent, vec![vec!["1", "2", "3"], vec!["2", "3"]]);
        assert_eq!(seqs(&d.dropped), ["3"]);
    }

    #[tokio::test]
    async fn not_served_is_retried_like_any_failure() {
        let batch: Vec<Value> = ["7"].into_iter().map(rec).collect();
        let nf = || Outcome::NotFound {
            body: "Missing function".into(),
        };
        let (sent, d) = run_script(&batch, &policy(None, true), vec![nf(), nf(), nf()]).await;
        assert_eq!(sent.len(), 4, "retried until it is served (no retry limit)");
        assert!(d.dropped.is_empty());
    }

    #[tokio::test]
    async fn zero_retries_drops_at_once() {
        let batch: Vec<Value> = ["1", "2"].into_iter().map(rec).collect();
        let (sent, d) = run_script(&batch, &policy(Some(0), true), vec![fail_items(&["2"])]).await;
        assert_eq!(sent.len(), 1);
        assert_eq!(seqs(&d.dropped), ["2"]);
    }

    #[tokio::test]
    async fn item_failures_ignored_without_report_batch_item_failures() {
        let batch: Vec<Value> = ["1", "2"].into_iter().map(rec).collect();
        let (sent, d) = run_script(&batch, &policy(Some(3), false), vec![fail_items(&["2"])]).await;
        assert_eq!(sent.len(), 1);
        assert!(d.dropped.is_empty());
    }

    #[test]
    fn shards_start_parent_before_child() {
        let shard = |id: &str, parent: Option<&str>| Shard {
            id: id.into(),
            parent: parent.map(Into::into),
        };
        let key = |id: &str| ("arn".to_owned(), id.to_owned());
        let snap = StreamSnapshot {
            arn: "arn".into(),
            shards: vec![
                shard("old", Some("trimmed-away")),
                shard("child", Some("old")),
                shard("grandchild", Some("child")),
                shard("other", None),
            ],
        };
        let ids = |v: Vec<&Shard>| v.into_iter().map(|s| s.id.clone()).collect::<Vec<_>>();
        let (mut started, mut finished) = (HashSet::new(), HashSet::new());
        assert_eq!(ids(startable(&snap, &started, &finished)), ["old", "other"]);
        started.extend([key("old"), key("other")]);
        assert!(
            startable(&snap, &started, &finished).is_empty(),
            "child waits for its parent"
        );
        finished.insert(key("old"));
        assert_eq!(ids(startable(&snap, &started, &finished)), ["child"]);
        started.insert(key("child"));
        finished.insert(key("child"));
        assert_eq!(ids(startable(&snap, &started, &finished)), ["grandchild"]);
    }

    #[test]
    fn retry_delays_double() {
        let p = RetryPolicy {
            max_retries: None,
            report_batch_item_failures: true,
            base: Duration::from_millis(200),
        };
        let ms: Vec<u128> = (1..=7).map(|r| p.delay(r).as_millis()).collect();
        assert_eq!(ms, [200, 400, 800, 1600, 3200, 6400, 10_000]);
    }

    #[test]
    fn scheduled_event_is_an_eventbridge_event() {
        let src = ScheduleSource {
            function_id: "SweepFunction".into(),
            event_name: "Every5Minutes".into(),
            binary: "sweep".into(),
            expression: "rate(5 minutes)".into(),
            input: None,
        };
        let ev = scheduled_event(&src, "us-east-1");
        assert_eq!(ev["detail-type"], "Scheduled Event");
        assert_eq!(ev["source"], "aws.events");
        assert_eq!(ev["region"], "us-east-1");
        assert_eq!(ev["detail"], json!({}));
        assert_eq!(
            ev["resources"][0],
            "arn:aws:events:us-east-1:000000000000:rule/SweepFunction-Every5Minutes"
        );
        let id = ev["id"].as_str().unwrap().to_owned();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        let time = ev["time"].as_str().unwrap();
        assert!(time.ends_with('Z') && !time.contains('.'), "{time}");
        let parsed: aws_lambda_events::event::eventbridge::EventBridgeEvent =
            serde_json::from_value(ev).expect("deserializes as an EventBridge event");
        assert_eq!(parsed.detail_type, "Scheduled Event");
        assert_ne!(scheduled_event(&src, "us-east-1")["id"], id);

        let with_input = ScheduleSource {
            input: Some(json!({"x": 1})),
            ..src
        };
        assert_eq!(scheduled_event(&with_input, "us-east-1"), json!({"x": 1}));
    }
}
