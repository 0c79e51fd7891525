//! A burst of real users through the running local stack, as the app drives it: seeded
//! users (clones of the demo profile with their own phone and ID number), an SMS code
//! each (read back from the SNS emulator), one query to every chosen bank, and the wait
//! for every "report ready" notice. Shared by the load benchmark (`tests/load`) and the
//! burst regression test (`tests/burst.rs`).
//!
//! Nothing here panics on a failed request: every failure is counted, so a benchmark
//! can print what happened and a test can assert on it.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::api::find_code;
use crate::localkeys::LocalKeys;
use crate::seed::{self, SeedUser, TableRefs};
use crate::stack::Endpoints;
use crate::LocalClients;

/// The 16 pilot banks.
pub const ALL_BANKS: [&str; 16] = [
    "ICBC", "ABC", "BOC", "CCB", "BOCOM", "PSBC", "CMB", "SPDB", "CITIC", "CEB", "HXB", "CMBC",
    "CGB", "PAB", "CIB", "CZB",
];
/// The banks `make run` has answer by callback.
pub const CALLBACK_BANKS: [&str; 4] = ["CMB", "CCB", "PAB", "CIB"];
const NOTICE_MARK: &str = "报告已生成";
const SMS_POLL: Duration = Duration::from_millis(250);

/// Where the stack is, from its state file (`.local/stack.json` of `make run`, or the
/// `LOCAL_STACK_STATE` of `stack.py exec`).
#[derive(Debug, Clone)]
pub struct Target {
    pub endpoints: Endpoints,
    pub table_prefix: String,
    /// Service name → pid, from the state file (`dynamodb`, `sns`, `bank_sim`, `api`,
    /// `watch`, `pump`).
    pub pids: BTreeMap<String, u32>,
    /// The launcher (`stack.py`), parent of every service and function instance.
    pub launcher_pid: Option<u32>,
    /// Function instance (`bank-fanout-1`…) → its log file.
    pub function_logs: BTreeMap<String, std::path::PathBuf>,
    /// The functions are release builds (`stack.py --release`).
    pub release: bool,
}

impl Target {
    pub fn from_state_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let state: Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let endpoints: Endpoints = serde_json::from_value(state.clone())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if endpoints.api_endpoint.is_none() {
            return Err(format!(
                "{}: the stack serves no API (start it with --with-api)",
                path.display()
            ));
        }
        let pids = state["pids"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), u32::try_from(v.as_u64()?).ok()?)))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            table_prefix: endpoints
                .table_prefix
                .clone()
                .unwrap_or_else(|| "local-".into()),
            endpoints,
            pids,
            launcher_pid: state["launcher_pid"]
                .as_u64()
                .and_then(|p| u32::try_from(p).ok()),
            function_logs: state["function_logs"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.into())))
                        .collect()
                })
                .unwrap_or_default(),
            release: state["release"].as_bool().unwrap_or(false),
        })
    }

    /// A stack without pids (CPU accounting then covers nothing).
    pub fn from_endpoints(endpoints: &Endpoints) -> Self {
        Self {
            table_prefix: endpoints
                .table_prefix
                .clone()
                .unwrap_or_else(|| "local-".into()),
            endpoints: endpoints.clone(),
            pids: BTreeMap::new(),
            launcher_pid: None,
            function_logs: BTreeMap::new(),
            release: false,
        }
    }

    /// The stack of this process: `LOCAL_STACK_STATE` (under `stack.py exec`), else
    /// the running `make run` stack (`.local/stack.json`).
    pub fn from_env() -> Result<Self, String> {
        let path = std::env::var_os("LOCAL_STACK_STATE")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| crate::workspace_root().join(".local/stack.json"));
        Self::from_state_file(&path)
    }

    fn api(&self) -> &str {
        self.endpoints.api_endpoint.as_deref().unwrap_or_default()
    }
}

#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub users: usize,
    pub clients: usize,
    pub banks: Vec<String>,
    /// Banks the simulator makes answer by callback (bank-wide, set at the start), as
    /// `make run` does: their answers come back through the API while fan-outs run.
    pub callback_banks: Vec<String>,
    /// Limit of one HTTP request of a user (a request that takes longer is a failure).
    pub request_timeout: Duration,
    /// How long to wait, after the last submission, for the last notice.
    pub report_timeout: Duration,
    /// After the last notice, how long to keep watching for duplicate SMS.
    pub settle: Duration,
    /// `Some(d)`: users start one every `d` (a steady arrival rate, for the burst
    /// benchmark), still at most `clients` at a time; `None`: as fast as the clients go.
    pub pace: Option<Duration>,

    /// Whether to call `GET /v1/banks` every 500 ms meanwhile (the API must keep
    /// answering); off where every call is counted as the queries' cost.
    pub probe: bool,
}

impl Default for LoadConfig {
    fn default() -> Self {
        Self {
            users: 1000,
            clients: 32,
            banks: ALL_BANKS.iter().map(|s| (*s).to_owned()).collect(),
            callback_banks: CALLBACK_BANKS.iter().map(|s| (*s).to_owned()).collect(),
            request_timeout: Duration::from_secs(60),
            report_timeout: Duration::from_secs(600),
            settle: Duration::from_secs(5),
            pace: None,

            probe: true,
        }
    }
}

/// What a burst did.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub users: usize,
    pub submitted: usize,
    /// POST /v1/card-queries, request to 202.
    pub submit_latency: Vec<Duration>,
    /// 202 to the notice SMS being seen at the emulator (polled every 250 ms).
    pub report_latency: Vec<Duration>,
    /// First submission to last notice.
    pub wall: Duration,
    /// Users whose query was not accepted, or accepted and never reported (or not
    /// READY with every bank settled), with the reason.
    pub lost: Vec<(String, String)>,
    /// Phones that got more than one code or more than one notice.
    pub duplicate_sms: Vec<(String, usize, usize)>,
    /// Non-expected statuses and transport failures on the user path, by kind.
    pub errors: BTreeMap<String, usize>,
    /// `GET /v1/banks` every 500 ms during the run (one at a time, each given the
    /// request timeout): answered with 401, and not.
    pub probe_ok: usize,
    pub probe_failed: usize,
}

impl LoadReport {
    pub fn healthy(&self) -> bool {
        self.lost.is_empty() && self.duplicate_sms.is_empty()
    }
}

/// Percentile (nearest rank) of `v`, `None` when empty.
pub fn percentile(v: &[Duration], p: f64) -> Option<Duration> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort();
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    Some(s[rank.clamp(1, s.len()) - 1])
}

struct LoadUser {
    id: String,
    phone: String,
}

/// SMS seen at the emulator since the start of the run, per phone, with when each was
/// first seen.
#[derive(Default)]
struct SmsBook {
    by_phone: HashMap<String, Vec<(String, Instant)>>,
    seen: usize,
}

impl SmsBook {
    fn codes(&self, phone: &str) -> Vec<String> {
        self.by_phone
            .get(phone)
            .map(|v| v.iter().filter_map(|(t, _)| find_code(t)).collect())
            .unwrap_or_default()
    }

    fn notice_at(&self, phone: &str) -> Option<Instant> {
        self.by_phone.get(phone).and_then(|v| {
            v.iter()
                .find(|(t, _)| t.contains(NOTICE_MARK))
                .map(|(_, at)| *at)
        })
    }

    fn counts(&self, phone: &str) -> (usize, usize) {
        let v = self.by_phone.get(phone).map(Vec::as_slice).unwrap_or(&[]);
        let notices = v.iter().filter(|(t, _)| t.contains(NOTICE_MARK)).count();
        let codes = v.iter().filter(|(t, _)| find_code(t).is_some()).count();
        (codes, notices)
    }
}

/// Runs one burst against `target`. Errors only when the run cannot start (seeding,
/// keys); failures of the system under load are in the report.
pub async fn run(target: &Target, cfg: &LoadConfig) -> Result<LoadReport, String> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(cfg.request_timeout)
        .pool_max_idle_per_host(cfg.clients.max(8))
        .build()
        .map_err(|e| e.to_string())?;
    let keys = Arc::new(LocalKeys::ensure()?);
    let clients = LocalClients::new(&target.endpoints);
    let sns = crate::sms::SmsFeed::of(&target.endpoints);
    // SMS already at the emulator (earlier runs of `make run`) are not this run's.
    let (_, before) = sns
        .after(usize::MAX)
        .await
        .map_err(|e| format!("SNS emulator: {e}"))?;

    if let Some(sim) = &target.endpoints.bank_sim_endpoint {
        for bank in &cfg.callback_banks {
            let status = http
                .put(format!("{sim}/_admin/banks/{bank}"))
                .json(&json!({"mode": "callback", "callback_delay_ms": 300}))
                .send()
                .await
                .map_err(|e| format!("bank simulator: {e}"))?
                .status();
            if !status.is_success() {
                return Err(format!(
                    "bank simulator refused callback mode for {bank}: {status}"
                ));
            }
        }
    }
    let users = seed_users(&clients, &target.table_prefix, cfg.users).await?;
    let book = Arc::new(Mutex::new(SmsBook {
        seen: before,
        ..Default::default()
    }));
    // A watch channel, not a Notify: a task busy with a request when the stop comes
    // must still see it (Notify::notify_waiters only wakes those already waiting).
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let watcher = tokio::spawn(watch_sms(sns.clone(), book.clone(), stop.clone()));
    let probe_ok = Arc::new(AtomicUsize::new(0));
    let probe_failed = Arc::new(AtomicUsize::new(0));
    let probe = cfg.probe.then(|| {
        tokio::spawn(probe_api(
            http.clone(),
            target.api().to_owned(),
            probe_ok.clone(),
            probe_failed.clone(),
            stop.clone(),
        ))
    });

    let report = Arc::new(Mutex::new(LoadReport {
        users: users.len(),
        ..Default::default()
    }));
    let agreement = agreement_version(&http, target.api(), &keys, &users[0]).await?;
    let sem = Arc::new(Semaphore::new(cfg.clients.max(1)));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(users.len());
    for (i, user) in users.into_iter().enumerate() {
        if let Some(pace) = cfg.pace {
            tokio::time::sleep_until((started + pace.saturating_mul(i as u32)).into()).await;
        }
        let permit = sem
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let ctx = UserCtx {
            http: http.clone(),
            api: target.api().to_owned(),
            keys: keys.clone(),
            book: book.clone(),
            report: report.clone(),
            banks: cfg.banks.clone(),
            agreement: agreement.clone(),
            code_timeout: cfg.request_timeout,
        };
        tasks.push(tokio::spawn(async move {
            let out = one_user(&ctx, &user).await;
            drop(permit);
            (user, out)
        }));
    }
    let mut accepted: Vec<(LoadUser, String, Instant)> = Vec::new();
    for t in tasks {
        let (user, out) = t.await.map_err(|e| e.to_string())?;
        match out {
            Ok((qid, at)) => accepted.push((user, qid, at)),
            Err(reason) => lock(&report).lost.push((user.id.clone(), reason)),
        }
    }
    let last_submit = Instant::now();

    // Every accepted query's notice, or the timeout.
    loop {
        let pending = {
            let b = lock(&book);
            accepted
                .iter()
                .filter(|(u, _, _)| b.notice_at(&u.phone).is_none())
                .count()
        };
        if pending == 0 || last_submit.elapsed() > cfg.report_timeout {
            break;
        }
        tokio::time::sleep(SMS_POLL).await;
    }
    let last_notice = {
        let b = lock(&book);
        accepted
            .iter()
            .filter_map(|(u, _, _)| b.notice_at(&u.phone))
            .max()
    };
    tokio::time::sleep(cfg.settle).await;
    let _ = stop_tx.send(true);
    let _ = watcher.await;
    if let Some(probe) = probe {
        let _ = probe.await;
    }

    // Each query as the app sees it: READY, every bank settled.
    let checks = Arc::new(Semaphore::new(cfg.clients.max(1)));
    let mut verdicts = Vec::new();
    for (user, qid, at) in &accepted {
        let permit = checks
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let (http, api, token) = (
            http.clone(),
            target.api().to_owned(),
            keys.user_token(&user.id, chrono::Utc::now(), 3600)?,
        );
        let qid = qid.clone();
        verdicts.push((
            user.id.clone(),
            user.phone.clone(),
            *at,
            tokio::spawn(async move {
                let r = query_state(&http, &api, &token, &qid).await;
                drop(permit);
                r
            }),
        ));
    }
    let mut states = Vec::with_capacity(verdicts.len());
    for (id, phone, at, check) in verdicts {
        states.push((id, phone, at, check.await.map_err(|e| e.to_string())?));
    }
    let b = lock(&book);
    let mut rep = lock(&report).clone();
    for (id, phone, at, state) in states {
        match (b.notice_at(&phone), state) {
            (Some(seen), Ok(())) => rep.report_latency.push(seen.saturating_duration_since(at)),
            (None, Ok(())) => rep.lost.push((id, "READY but no notice SMS".into())),
            (_, Err(e)) => rep.lost.push((id, e)),
        }
    }
    for (user, _, _) in &accepted {
        let (codes, notices) = b.counts(&user.phone);
        if codes > 1 || notices > 1 {
            rep.duplicate_sms.push((user.phone.clone(), codes, notices));
        }
    }
    rep.submitted = accepted.len();
    rep.wall = last_notice
        .unwrap_or(last_submit)
        .saturating_duration_since(started);
    rep.probe_ok = probe_ok.load(Ordering::SeqCst);
    rep.probe_failed = probe_failed.load(Ordering::SeqCst);
    Ok(rep)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn seed_users(
    clients: &LocalClients,
    prefix: &str,
    n: usize,
) -> Result<Vec<LoadUser>, String> {
    let run = ulid::Ulid::generate();
    // Phone and ID numbers of this run: a random block, so runs on one stack differ.
    let base = (run.random() % 90_000_000) as u32 + 5_000_000;
    let tables = Arc::new(TableRefs::from_prefix(prefix));
    let sem = Arc::new(Semaphore::new(16));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let id = format!("load-{}-{i}", run.to_string().to_lowercase());
        let user = SeedUser {
            profile: seed::profile(&id, base + i as u32, true, "31"),
            description: "load user (a clone of the demo profile)",
            locked: false,
        };
        let (db, tables, sem) = (clients.dynamodb.clone(), tables.clone(), sem.clone());
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire().await.map_err(|e| e.to_string())?;
            seed::put_user(&db, &tables, &user, chrono::Utc::now()).await?;
            Ok::<_, String>(LoadUser {
                id,
                phone: user.profile.phone.e164().to_owned(),
            })
        }));
    }
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.map_err(|e| e.to_string())??);
    }
    Ok(out)
}

async fn watch_sms(
    sns: crate::sms::SmsFeed,
    book: Arc<Mutex<SmsBook>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let seen = lock(&book).seen;
        if let Ok((new, total)) = sns.after(seen).await {
            let now = Instant::now();
            let mut b = lock(&book);
            for m in new {
                b.by_phone
                    .entry(m.phone_number)
                    .or_default()
                    .push((m.message, now));
            }
            b.seen = total;
        }
        tokio::select! {
            _ = tokio::time::sleep(SMS_POLL) => {}
            changed = stop.changed() => if changed.is_err() { return },
        }
    }
}

async fn probe_api(
    http: reqwest::Client,
    api: String,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let answered = http
            .get(format!("{api}/v1/banks"))
            // "Answers at all": on 2 shared cores a request can wait many seconds
            // behind a burst of submissions in the same function; a hung API never
            // answers. (The client's own timeout, 60 s by default, applies.)
            .send()
            .await
            .map(|r| r.status().as_u16() == 401)
            .unwrap_or(false);
        (if answered { &ok } else { &failed }).fetch_add(1, Ordering::SeqCst);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            changed = stop.changed() => if changed.is_err() { return },
        }
    }
}

async fn agreement_version(
    http: &reqwest::Client,
    api: &str,
    keys: &LocalKeys,
    user: &LoadUser,
) -> Result<Value, String> {
    let token = keys.user_token(&user.id, chrono::Utc::now(), 3600)?;
    let body: Value = http
        .get(format!("{api}/v1/eligibility"))
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| format!("GET /v1/eligibility: {e}"))?
        .json()
        .await
        .map_err(|e| format!("GET /v1/eligibility: {e}"))?;
    body.get("agreement_version")
        .cloned()
        .ok_or_else(|| format!("GET /v1/eligibility: no agreement_version in {body}"))
}

struct UserCtx {
    http: reqwest::Client,
    api: String,
    keys: Arc<LocalKeys>,
    book: Arc<Mutex<SmsBook>>,
    report: Arc<Mutex<LoadReport>>,
    banks: Vec<String>,
    agreement: Value,
    code_timeout: Duration,
}

impl UserCtx {
    fn error(&self, kind: String) -> String {
        *lock(&self.report).errors.entry(kind.clone()).or_default() += 1;
        kind
    }

    async fn post(
        &self,
        path: &str,
        token: &str,
        key: Option<&str>,
        body: &Value,
    ) -> Result<(u16, Value), String> {
        let mut req = self
            .http
            .post(format!("{}{path}", self.api))
            .bearer_auth(token)
            .json(body);
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| self.error(format!("POST {path}: {}", transport_kind(&e))))?;
        let status = resp.status().as_u16();
        let body = resp.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }
}

fn transport_kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection refused"
    } else {
        "transport error"
    }
}

/// One user's journey up to the 202: (query id, when the 202 arrived).
async fn one_user(ctx: &UserCtx, user: &LoadUser) -> Result<(String, Instant), String> {
    let now = chrono::Utc::now();
    let token = ctx.keys.user_token(&user.id, now, 3600)?;
    // As the app does: the SMS channel's shared rate answers a burst with 503
    // `SMS_UNAVAILABLE` and a wait in seconds, leaving the user's limits untouched.
    let mut tries = 0;
    let (status, created) = loop {
        let (status, created) = ctx
            .post(
                "/v1/verifications",
                &token,
                None,
                &json!({"purpose": "SUBMIT_QUERY"}),
            )
            .await?;
        tries += 1;
        if status == 503 && created["error"]["code"] == "SMS_UNAVAILABLE" && tries < 60 {
            let secs = created["error"]["retry_after_seconds"]
                .as_u64()
                .unwrap_or(1);
            tokio::time::sleep(Duration::from_secs(secs.max(1))).await;
            continue;
        }
        break (status, created);
    };
    if status != 201 {
        return Err(ctx.error(format!("POST /v1/verifications: {status}")));
    }
    let vid = created["verification_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let asked = Instant::now();
    let code = loop {
        if let Some(c) = lock(&ctx.book).codes(&user.phone).into_iter().next() {
            break c;
        }
        if asked.elapsed() > ctx.code_timeout {
            return Err(ctx.error("SMS code never arrived".into()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let face = ctx.keys.face_token(
        &user.id,
        shared::model::purpose::Purpose::SubmitQuery,
        chrono::Utc::now(),
    )?;
    let body = json!({
        "banks": ctx.banks,
        "consent": {"agreement_version": ctx.agreement, "accepted": true},
        "verification": {"verification_id": vid, "sms_code": code},
        "face_token": face,
        "payment_password": seed::PAYMENT_PASSWORD,
    });
    let key = ulid::Ulid::generate().to_string();
    let sent = Instant::now();
    let (status, accepted) = ctx
        .post("/v1/card-queries", &token, Some(&key), &body)
        .await?;
    let at = Instant::now();
    if status != 202 {
        let code = accepted["error"]["code"].as_str().unwrap_or("-").to_owned();
        return Err(ctx.error(format!("POST /v1/card-queries: {status} {code}")));
    }
    lock(&ctx.report).submit_latency.push(at - sent);
    let qid = accepted["query_id"].as_str().unwrap_or_default().to_owned();
    Ok((qid, at))
}

async fn query_state(
    http: &reqwest::Client,
    api: &str,
    token: &str,
    qid: &str,
) -> Result<(), String> {
    let resp = http
        .get(format!("{api}/v1/card-queries/{qid}"))
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| format!("GET query: {}", transport_kind(&e)))?;
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if status != 200 {
        return Err(format!("GET query: {status}"));
    }
    if body["report_status"] != "READY" {
        return Err(format!("report_status {}", body["report_status"]));
    }
    let open = body["progress"]
        .as_array()
        .map(|p| {
            p.iter()
                .filter(|b| {
                    ["PENDING", "QUEUED", "RETRYING"].contains(&b["status"].as_str().unwrap_or(""))
                })
                .count()
        })
        .unwrap_or(usize::MAX);
    if open != 0 {
        return Err(format!("READY with {open} banks still open"));
    }
    Ok(())
}

/// CPU seconds (user + system) a process has used, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / clock_ticks())
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Whether `pid` descends from `ancestor`.
fn descends_from(mut pid: u32, ancestor: u32) -> bool {
    for _ in 0..64 {
        match parent_of(pid) {
            Some(p) if p == ancestor => return true,
            Some(p) if p > 1 => pid = p,
            _ => return false,
        }
    }
    false
}

/// Running processes under `ancestor` (other stacks on the machine run the same
/// binaries) whose executable is one of `names` (file name), as name → pids.
pub fn processes_named(names: &[&str], ancestor: u32) -> BTreeMap<String, Vec<u32>> {
    let mut out: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(exe) = std::fs::read_link(entry.path().join("exe")) else {
            continue;
        };
        if let Some(name) = exe.file_name().and_then(|n| n.to_str()) {
            if names.contains(&name) && descends_from(pid, ancestor) {
                out.entry(name.to_owned()).or_default().push(pid);
            }
        }
    }
    out
}

/// A stack of its own (`stack.py up --with-api` on free ports), stopped on drop (and by
/// its `--parent-pid` watchdog should this process die).
pub struct PrivateStack {
    child: std::process::Child,
    state_file: std::path::PathBuf,
    pub target: Target,
    /// The state file's `fault_dir` (stacks started `--fault-injection`).
    pub fault_dir: Option<std::path::PathBuf>,
    /// The contract as this stack's configuration states it.
    spec: &'static crate::openapi::OpenApi,
}

impl PrivateStack {
    /// Starts it and returns once it prints READY.
    pub fn start() -> Result<Self, String> {
        Self::start_with(&[])
    }

    /// Starts it with more `stack.py up` options (e.g. `--fault-injection`).
    pub fn start_with(extra: &[&str]) -> Result<Self, String> {
        Self::launch(extra, None)
    }

    /// Starts it with a service configuration of its own (a file; e.g. 200 banks from
    /// [`crate::national::config_json`]): the stack hands `SERVICE_CONFIG` to the
    /// simulator, the bank secrets and the functions, so one environment variable
    /// configures all of them the same way.
    pub fn start_configured(service_config: &std::path::Path) -> Result<Self, String> {
        Self::launch(&[], Some(service_config))
    }

    fn launch(extra: &[&str], service_config: Option<&std::path::Path>) -> Result<Self, String> {
        use std::io::{BufRead, BufReader};
        let spec = match service_config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                crate::openapi::OpenApi::for_configuration(&text).map_err(|e| e.to_string())?
            }
            None => crate::openapi::OpenApi::shared(),
        };
        let script = crate::workspace_root().join("infra/local/stack.py");
        let state_file = std::env::temp_dir().join(format!(
            "card-lookup-burst-{}-{}.json",
            std::process::id(),
            ulid::Ulid::generate()
        ));
        let mut command = std::process::Command::new("python3");
        if let Some(path) = service_config {
            command.env("SERVICE_CONFIG", path);
        }
        let mut child = command
            .arg(&script)
            .args(["up", "--with-api"])
            .args(["--dynamodb-port", "0", "--sns-port", "0", "--api-port", "0"])
            .args(["--bank-sim-port", "0"])
            .args(extra)
            .arg("--parent-pid")
            .arg(std::process::id().to_string())
            .arg("--state-file")
            .arg(&state_file)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        let stdout = child.stdout.take().ok_or("launcher has no stdout")?;
        for line in BufReader::new(stdout).lines() {
            let line = line.map_err(|e| e.to_string())?;
            if line.starts_with("READY ") {
                let target = Target::from_state_file(&state_file)?;
                let fault_dir = std::fs::read_to_string(&state_file)
                    .ok()
                    .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                    .and_then(|v| v["fault_dir"].as_str().map(std::path::PathBuf::from));
                return Ok(Self {
                    child,
                    state_file,
                    target,
                    fault_dir,
                    spec,
                });
            }
        }
        let status = child.wait().map_err(|e| e.to_string())?;
        Err(format!("private stack did not start ({status})"))
    }
}

impl Drop for PrivateStack {
    fn drop(&mut self) {
        // SIGTERM: the launcher stops every service; then reap it.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.state_file);
    }
}

impl PrivateStack {
    /// The app's view of this stack (the same helpers the API tests use).
    pub fn api(&self) -> Result<crate::api::Api, String> {
        let e = &self.target.endpoints;
        Ok(crate::api::Api {
            base: e.api_endpoint.clone().ok_or("no API")?,
            sim: e.bank_sim_endpoint.clone().ok_or("no bank simulator")?,
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .map_err(|e| e.to_string())?,
            keys: LocalKeys::ensure()?,
            clients: LocalClients::new(e),
            tables: TableRefs::from_prefix(&self.target.table_prefix),
            spec: self.spec,
        })
    }
}
