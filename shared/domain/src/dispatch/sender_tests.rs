//! Planning and sending through the gate, on the in-memory store, gate and queue, with
//! the manual clock (waits in place move it on): a bank's limits hold under a burst, its
//! legs go in submission order, its circuit opens and closes, a bank that never recovers
//! still settles by the deadline, and a sender that crashes loses nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};

use super::client::{BankClient, BankReply, TransportError};
use super::fanout::{Fanout, FanoutDeps};
use super::gate::{Gate, Lane};
use super::gate_contract;
use super::planner::Planner;
use super::sender::{Received, Sender, SenderDeps};
use crate::bank::signing::SignatureHeaders;
use crate::clock::{Clock, ManualClock};
use crate::memory::{sms_lane, MemoryGate, MemoryQueue, MemorySms, RecordingMetrics};
use crate::model::ids::QueryId;
use crate::ports::QueryStore;
use crate::records::{LegState, QueryPhase};
use crate::report::aggregate::{Aggregator, AggregatorDeps};
use crate::sweep::Sweeper;
use crate::test_support::{user, BankWorld, ClockSleep, T0};

/// Banks that take every inquiry (202, to call back later) or fail every call (503
/// while `down`), and record what each saw: arrival instants on the manual clock, the
/// most inquiries served at once, and the order of the queries asked about.
/// Per bank: each inquiry's arrival and the query it asked about.
type Seen = HashMap<String, Vec<(DateTime<Utc>, String)>>;

struct Recorder {
    clock: Arc<ManualClock>,
    down: AtomicBool,
    seen: Mutex<Seen>,
    in_flight: Mutex<HashMap<String, (usize, usize)>>,
    calls: AtomicUsize,
}

impl Recorder {
    fn new(clock: Arc<ManualClock>) -> Arc<Self> {
        Arc::new(Self {
            clock,
            down: AtomicBool::new(false),
            seen: Mutex::default(),
            in_flight: Mutex::default(),
            calls: AtomicUsize::new(0),
        })
    }

    fn arrivals(&self, bank: &str) -> Vec<DateTime<Utc>> {
        let seen = self.seen.lock().unwrap();
        seen.get(bank)
            .map(|v| v.iter().map(|(t, _)| *t).collect())
            .unwrap_or_default()
    }

    fn queries(&self, bank: &str) -> Vec<String> {
        let seen = self.seen.lock().unwrap();
        seen.get(bank)
            .map(|v| v.iter().map(|(_, q)| q.clone()).collect())
            .unwrap_or_default()
    }

    fn max_in_flight(&self, bank: &str) -> usize {
        self.in_flight.lock().unwrap().get(bank).map_or(0, |x| x.1)
    }

    /// The most arrivals within any sliding 1-second window.
    fn max_rate(&self, bank: &str) -> usize {
        let mut t = self.arrivals(bank);
        t.sort();
        (0..t.len())
            .map(|i| {
                t[i..]
                    .iter()
                    .take_while(|x| **x < t[i] + TimeDelta::seconds(1))
                    .count()
            })
            .max()
            .unwrap_or(0)
    }
}

#[async_trait]
impl BankClient for Recorder {
    async fn post(
        &self,
        _url: &str,
        headers: &SignatureHeaders,
        body: Vec<u8>,
        _timeout: StdDuration,
    ) -> Result<BankReply, TransportError> {
        let bank = headers.bank_code.clone();
        let query = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["query_id"]
            .as_str()
            .unwrap()
            .to_owned();
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.seen
            .lock()
            .unwrap()
            .entry(bank.clone())
            .or_default()
            .push((self.clock.now(), query));
        {
            let mut f = self.in_flight.lock().unwrap();
            let e = f.entry(bank.clone()).or_default();
            e.0 += 1;
            e.1 = e.1.max(e.0);
        }
        // Long enough for the other sends admitted meanwhile to overlap this one.
        tokio::time::sleep(StdDuration::from_millis(3)).await;
        self.in_flight.lock().unwrap().get_mut(&bank).unwrap().0 -= 1;
        let status = if self.down.load(Ordering::SeqCst) {
            503
        } else {
            202
        };
        Ok(BankReply {
            status,
            signature: None,
            body: Vec::new(),
        })
    }
}

/// A world whose banks are the recorder, with its own gate, queue, planner and sender.
struct Burst {
    w: BankWorld,
    bank: Arc<Recorder>,
    gate: Arc<MemoryGate>,
    queue: Arc<MemoryQueue>,
    planner: Arc<Planner>,
    sender: Arc<Sender>,
}

impl Burst {
    fn new() -> Self {
        let w = BankWorld::new(&[]);
        let bank = Recorder::new(w.clock.clone());
        let fanout = Arc::new(Fanout::new(FanoutDeps {
            config: w.config.clone(),
            store: w.store.clone(),
            profiles: w.store.clone(),
            client: bank.clone(),
            secrets: w.secrets.clone(),
            clock: w.clock.clone(),
            callback_base: "https://api.example".into(),
            bank_timeout: StdDuration::from_secs(5),
            sealer: w.sealer.clone(),
        }));
        let gate = Arc::new(MemoryGate::default());
        let queue = Arc::new(MemoryQueue::new(w.clock.clone()));
        let planner = Arc::new(Planner {
            store: w.store.clone(),
            queue: queue.clone(),
            clock: w.clock.clone(),
        });
        let sender = Arc::new(Sender::new(SenderDeps {
            config: w.config.clone(),
            fanout,
            gate: gate.clone(),
            queue: queue.clone(),
            clock: w.clock.clone(),
            sleep: Arc::new(ClockSleep(w.clock.clone())),
            bank_timeout: TimeDelta::seconds(5),
            disputes: None,
        }));
        Self {
            w,
            bank,
            gate,
            queue,
            planner,
            sender,
        }
    }

    /// `n` queries of different users to `banks`, all at the same instant (a wave), each
    /// planned as it is submitted (bank-fanout's part).
    async fn submit(&self, n: usize, banks: &[&str]) -> Vec<QueryId> {
        let mut out = Vec::new();
        for i in 0..n {
            let uid = format!("u{i}");
            self.w.profile(&uid, "+8613800138000");
            let q = QueryId::generate();
            self.w
                .submit_query(&user(&uid), q, banks, |b| format!("inq-{b}-{i:04}-0000"))
                .await;
            self.planner.plan(&q).await.unwrap();
            out.push(q);
        }
        out
    }

    /// Plays the event source mapping until nothing is visible.
    async fn pump(&self) {
        loop {
            let batch = self.queue.receive(10);
            if batch.is_empty() {
                return;
            }
            let failed = self.sender.handle(batch.clone()).await;
            self.queue.complete(&batch, &failed);
        }
    }

    async fn states(&self, qs: &[QueryId], bank: &str) -> Vec<LegState> {
        let mut out = Vec::new();
        for q in qs {
            out.push(self.w.leg(q, bank).await.state);
        }
        out
    }
}

#[tokio::test]
async fn a_burst_never_exceeds_a_banks_rate_or_in_flight_limit_even_from_many_senders() {
    let b = Burst::new();
    // HXB agreed 5/s and 3 at once (shipped configuration); ICBC the default 50 and 20.
    let qs = b.submit(50, &["HXB", "ICBC"]).await;
    // As if several instances held HXB's messages at once (more than FIFO ever allows):
    // five senders of 10 messages each, started together. The gate alone must hold.
    let all: Vec<Received> = b
        .queue
        .queued()
        .iter()
        .map(|a| Received {
            message_id: a.dedup_id(),
            receipt: format!("direct-{}", a.dedup_id()),
            body: a.body(),
        })
        .collect();
    let hxb: Vec<Received> = all
        .iter()
        .filter(|m| m.body.contains("\"HXB\""))
        .cloned()
        .collect();
    assert_eq!(hxb.len(), 50);
    let barrier = Arc::new(tokio::sync::Barrier::new(5));
    let runs = hxb.chunks(10).map(|chunk| {
        let (sender, barrier, chunk) = (b.sender.clone(), barrier.clone(), chunk.to_vec());
        tokio::spawn(async move {
            barrier.wait().await;
            sender.handle(chunk).await
        })
    });
    let failed: Vec<String> = futures::future::join_all(runs)
        .await
        .into_iter()
        .flat_map(|r| r.unwrap())
        .collect();
    // Whatever could not go was paused and reported, never sent past the limit.
    assert!(
        b.bank.max_in_flight("HXB") <= 3,
        "in flight {}",
        b.bank.max_in_flight("HXB")
    );
    assert!(
        b.bank.max_rate("HXB") <= 5,
        "rate {}",
        b.bank.max_rate("HXB")
    );
    let sent_direct = b.bank.arrivals("HXB").len();
    assert_eq!(
        sent_direct + failed.len(),
        50,
        "each message sent or handed back"
    );

    // The queue then brings everything through, FIFO, with ICBC's legs beside them.
    b.pump().await;
    assert_eq!(b.states(&qs, "HXB").await, vec![LegState::Accepted; 50]);
    assert_eq!(b.states(&qs, "ICBC").await, vec![LegState::Accepted; 50]);
    assert_eq!(b.bank.arrivals("HXB").len(), 50, "each leg sent once");
    assert!(b.bank.max_in_flight("HXB") <= 3);
    assert!(
        b.bank.max_rate("HXB") <= 5,
        "rate {}",
        b.bank.max_rate("HXB")
    );
    assert!(b.bank.max_in_flight("ICBC") <= 20);
    assert!(b.bank.max_rate("ICBC") <= 50);
    // The limit is used, not just respected: 50 inquiries at 5/s take about 10 s.
    let t = b.bank.arrivals("HXB");
    let span = *t.iter().max().unwrap() - *t.iter().min().unwrap();
    assert!(span >= TimeDelta::seconds(9), "{span}");
}

#[tokio::test]
async fn a_banks_legs_go_in_submission_order() {
    let b = Burst::new();
    let qs = b.submit(30, &["CZB"]).await;
    b.pump().await;
    let order: Vec<String> = qs.iter().map(|q| q.to_string()).collect();
    assert_eq!(b.bank.queries("CZB"), order);
}

#[tokio::test]
async fn the_circuit_opens_only_probes_during_cool_off_and_closes_on_recovery() {
    let b = Burst::new();
    b.bank.down.store(true, Ordering::SeqCst);
    let qs = b.submit(25, &["CMB"]).await;
    b.pump().await;
    // The first batch went out at once (admitted before any failure came back); its
    // failures (shipped: 5 in a row, cool_off 30s) opened the circuit, and the other
    // legs were not sent: they wait.
    assert_eq!(b.bank.arrivals("CMB").len(), 10);
    let lane = Lane::Bank(b.w.code("CMB"));
    let circuit = b.gate.circuit(&lane);
    let open_until = circuit.open_until.expect("open");
    let states = b.states(&qs, "CMB").await;
    assert!(states.iter().all(|s| *s == LegState::Pending), "{states:?}");
    assert_eq!(
        b.gate
            .open_circuits(std::slice::from_ref(&lane))
            .await
            .unwrap(),
        std::slice::from_ref(&lane)
    );
    // During the cool-off: the failed legs' retries fall due and are queued (the
    // sweeper's part), the paused ones come back; none reaches the bank.
    for _ in 0..5 {
        b.w.clock.advance(TimeDelta::seconds(5));
        assert!(b.w.now() < open_until);
        for q in &qs {
            b.planner.plan(q).await.unwrap();
        }
        b.queue.expire_visibility();
        b.pump().await;
        assert_eq!(
            b.bank.arrivals("CMB").len(),
            10,
            "a call during the cool-off"
        );
    }
    // Still down at the end of the cool-off: one probe, and open again.
    b.w.clock.set(open_until);
    b.queue.expire_visibility();
    for q in &qs {
        b.planner.plan(q).await.unwrap();
    }
    b.pump().await;
    assert_eq!(b.bank.arrivals("CMB").len(), 11, "exactly one probe");
    let reopened = b.gate.circuit(&lane).open_until.expect("open again");
    assert!(reopened > open_until);
    // Recovered: the next probe closes it and every waiting leg goes.
    b.bank.down.store(false, Ordering::SeqCst);
    b.w.clock.set(reopened);
    b.queue.expire_visibility();
    for q in &qs {
        b.planner.plan(q).await.unwrap();
    }
    b.pump().await;
    assert_eq!(b.gate.circuit(&lane), Default::default(), "closed");
    assert_eq!(b.states(&qs, "CMB").await, vec![LegState::Accepted; 25]);
    assert!(b.gate.open_circuits(&[lane]).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_bank_that_never_recovers_settles_no_response_by_the_deadline() {
    let b = Burst::new();
    b.bank.down.store(true, Ordering::SeqCst);
    let qs = b.submit(8, &["CMB", "ICBC"]).await;
    let metrics = Arc::new(RecordingMetrics::default());
    let sweeper = Sweeper {
        disputes: b.w.store.clone(),
        queries: b.w.store.clone(),
        reports: b.w.store.clone(),
        planner: b.planner.clone(),
        aggregator: Arc::new(Aggregator::new(AggregatorDeps {
            config: b.w.config.clone(),
            queries: b.w.store.clone(),
            reports: b.w.store.clone(),
            users: b.w.store.clone(),
            profiles: b.w.store.clone(),
            sms: Arc::new(MemorySms::default()),
            sms_admission: Arc::new(sms_lane(1_000)),
            sealer: b.w.sealer.clone(),
            clock: b.w.clock.clone(),
            metrics: Arc::new(RecordingMetrics::default()),
        })),
        clock: b.w.clock.clone(),
        config: b.w.config.clone(),
        gate: b.gate.clone(),
        metrics: metrics.clone(),
    };
    let collect_until =
        b.w.store
            .query(&qs[0])
            .await
            .unwrap()
            .unwrap()
            .collect_until;
    let cool_off = b.w.config.circuit_breaker.cool_off;
    // The day in 5-minute sweeps, the queue served after each.
    let mut runs = 0;
    while b.w.now() <= collect_until + TimeDelta::minutes(10) {
        b.pump().await;
        sweeper.run_once().await.unwrap();
        b.pump().await;
        b.w.clock.advance(TimeDelta::minutes(5));
        runs += 1;
    }
    // Both banks fail every call, so both circuits opened after the first batch's
    // failures (5 each); after that each bank saw at most one probe per cool-off and
    // per sweep (never a burst of retries).
    let day = collect_until - T0;
    let probes_at_most = (day.num_seconds() / cool_off.num_seconds()) as usize + 1;
    for bank in ["CMB", "ICBC"] {
        let calls = b.bank.arrivals(bank).len();
        assert!(calls <= 5 + probes_at_most, "{bank}: {calls}");
        // One call per sweep at most once open: far fewer than a retry per leg.
        assert!(calls <= 5 + runs, "{bank}: {calls} in {runs} sweeps");
    }
    for q in &qs {
        let query = b.w.store.query(q).await.unwrap().unwrap();
        assert_eq!(query.phase, QueryPhase::Reported);
        assert_eq!(
            b.states(std::slice::from_ref(q), "CMB").await,
            [LegState::NoResponse]
        );
    }
    // Nothing is sent once collection is over.
    let calls = b.bank.calls.load(Ordering::SeqCst);
    for q in &qs {
        assert!(b.planner.plan(q).await.unwrap().is_empty());
    }
    b.queue.expire_visibility();
    b.pump().await;
    assert_eq!(b.bank.calls.load(Ordering::SeqCst), calls);
    // The sweeper reported the open circuits while they were open.
    assert!(metrics
        .emitted()
        .iter()
        .any(|(m, _)| *m == crate::ports::Metric::OpenCircuits(2)));
}

#[tokio::test]
async fn a_sender_that_crashes_after_the_send_never_sends_twice_and_loses_nothing() {
    let b = Burst::new();
    let qs = b.submit(3, &["CZB"]).await;
    // An invocation sends the batch and dies before the queue deletes it.
    let batch = b.queue.receive(10);
    assert_eq!(batch.len(), 3);
    let failed = b.sender.handle(batch).await;
    assert!(failed.is_empty());
    assert_eq!(b.bank.arrivals("CZB").len(), 3);
    // Its messages come back after the visibility timeout: dropped, not sent again.
    b.queue.expire_visibility();
    b.pump().await;
    assert_eq!(b.bank.arrivals("CZB").len(), 3);
    assert!(b.queue.queued().is_empty());
    assert_eq!(b.states(&qs, "CZB").await, vec![LegState::Accepted; 3]);

    // An invocation that dies after admission, before the send: its slots free
    // themselves at their lease end, and its messages go then.
    let qs = b.submit(3, &["CZB"]).await;
    let lane = Lane::Bank(b.w.code("CZB"));
    let policy = b.sender.policy(&b.w.code("CZB"));
    b.w.clock.advance(TimeDelta::seconds(2));
    for _ in 0..3 {
        let admitted = b.gate.admit(&lane, &policy, b.w.now()).await.unwrap();
        assert!(
            matches!(admitted, super::gate::Admission::Go(_)),
            "{admitted:?}"
        );
    }
    b.pump().await;
    assert_eq!(b.states(&qs, "CZB").await, vec![LegState::Pending; 3]);
    b.w.clock.advance(TimeDelta::seconds(10));
    b.pump().await;
    assert_eq!(b.states(&qs, "CZB").await, vec![LegState::Accepted; 3]);
    assert_eq!(b.bank.arrivals("CZB").len(), 6);
}

#[tokio::test]
async fn a_malformed_or_superseded_message_is_dropped() {
    let b = Burst::new();
    let qs = b.submit(1, &["CZB"]).await;
    let junk = Received {
        message_id: "m-junk".into(),
        receipt: "r-junk".into(),
        body: "{\"query_id\": 1}".into(),
    };
    let stale = Received {
        message_id: "m-stale".into(),
        receipt: "r-stale".into(),
        body: super::queue::LegAttempt {
            query_id: qs[0],
            bank: b.w.code("CZB"),
            attempt: 7,
        }
        .body(),
    };
    assert!(b.sender.handle(vec![junk, stale]).await.is_empty());
    assert_eq!(b.bank.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gate_contract_on_memory() {
    gate_contract::the_rate_is_never_exceeded(&MemoryGate::default(), T0).await;
    gate_contract::in_flight_is_never_exceeded_and_a_crashed_slot_frees_itself(
        &MemoryGate::default(),
        T0,
    )
    .await;
    gate_contract::the_circuit_opens_lets_one_probe_and_closes(&MemoryGate::default(), T0).await;
    gate_contract::a_bank_sends_rate_permit_is_held_until_the_send_ends(&MemoryGate::default(), T0)
        .await;
    gate_contract::a_bank_lanes_rate_holds_however_late_its_sends_arrive(
        &MemoryGate::default(),
        T0,
    )
    .await;
    gate_contract::a_bank_lanes_rate_holds_and_a_refused_admission_holds_nothing(
        &MemoryGate::default(),
        T0,
    )
    .await;
}

/// A batch's records are read together (decision 148), but a profile that does not parse
/// fails its own message only: the bank's other messages in the batch are sent, and that
/// one comes back for another try, unsent.
#[tokio::test]
async fn a_corrupt_profile_fails_its_own_message_not_the_rest_of_its_batch() {
    let b = Burst::new();
    let qs = b.submit(3, &["CZB"]).await;
    b.w.store.corrupt_profile(&user("u1"));
    let batch = b.queue.receive(10);
    assert_eq!(batch.len(), 3);
    let failed = b.sender.handle(batch.clone()).await;
    let of_u1: Vec<String> = batch
        .iter()
        .filter(|m| m.body.contains(&qs[1].to_string()))
        .map(|m| m.message_id.clone())
        .collect();
    assert_eq!(failed, of_u1);
    assert_eq!(
        b.bank.queries("CZB"),
        vec![qs[0].to_string(), qs[2].to_string()]
    );
    assert_eq!(
        b.states(&qs, "CZB").await,
        vec![LegState::Accepted, LegState::Pending, LegState::Accepted]
    );
}

/// A send that fails (a store error) comes back within seconds, not after the queue's
/// 6-minute visibility timeout: while it is hidden, FIFO holds back every later message
/// of its bank, so the timeout would stall the bank's whole lane (a burst once lost a
/// query to it at the end of a CI run).
#[tokio::test]
async fn a_failed_send_is_retried_in_seconds_and_its_bank_keeps_moving() {
    let b = Burst::new();
    let qs = b.submit(3, &["CZB"]).await;
    b.w.store.corrupt_profile(&user("u1"));
    let batch = b.queue.receive(10);
    let failed = b.sender.handle(batch.clone()).await;
    b.queue.complete(&batch, &failed);
    assert_eq!(failed.len(), 1);
    b.w.store.repair_profile(&user("u1"));
    let later = b.submit(1, &["CZB"]).await;

    // Hidden for the error pause, and the bank's later message behind it...
    b.w.clock.advance(TimeDelta::seconds(1));
    assert!(b.queue.receive(10).is_empty());
    // ...then both go, in order, long before a visibility timeout.
    b.w.clock.advance(TimeDelta::seconds(1));
    b.pump().await;
    assert!(b.queue.queued().is_empty(), "{:?}", b.queue.queued());
    assert_eq!(
        b.bank.queries("CZB"),
        vec![
            qs[0].to_string(),
            qs[2].to_string(),
            qs[1].to_string(),
            later[0].to_string()
        ]
    );
    assert_eq!(b.states(&qs, "CZB").await, vec![LegState::Accepted; 3]);
}
