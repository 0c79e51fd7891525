//! Port `Gate`: admission of one send to a lane (a bank, or the SMS channel), shared by
//! every Lambda instance through the store. Each rate permit, in-flight slot and probe
//! is taken by a conditional write (never read, compare and write back), so whatever
//! the number of concurrent senders, no more than the limit is ever granted. The rules
//! of what is held and for how long are `rules::admission`'s.
//!
//! Implementations: `memory::MemoryGate` (tests) and `shared::adapters::dynamo::gate`
//! (items `PK=GATE#<lane>` in the single table).

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};

use crate::config::{CircuitBreaker, LaneLimits};
use crate::model::bank::BankCode;
use crate::ports::StoreError;
pub use crate::rules::admission::{Health, Hold};

/// What is limited: one bank's inquiry endpoint, or the account's SMS channel.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lane {
    Bank(BankCode),
    Sms,
}

impl Lane {
    /// The lane's name in the store's keys and the metrics (never collides: a bank code
    /// holds no `#`).
    pub fn key(&self) -> String {
        match self {
            Lane::Bank(b) => format!("BANK#{b}"),
            Lane::Sms => "SMS".to_owned(),
        }
    }
}

impl std::fmt::Display for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.key())
    }
}

/// A bank lane's limits and breaker, and how long a send may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LanePolicy {
    pub limits: LaneLimits,
    pub breaker: CircuitBreaker,
    /// The bank call's timeout (the in-flight slot's lease is derived from it).
    pub call_timeout: TimeDelta,
}

/// A granted send. Give it back with [`Gate::finish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permit {
    pub lane: Lane,
    /// Unique per admission: only its holder frees its slot or settles its probe.
    pub holder: String,
    /// The in-flight slot held (none for a rate-only admission).
    pub flight_slot: Option<u32>,
    /// The rate permit this send leases until it ends (none for a rate-only admission,
    /// whose permit runs from admission).
    pub rate_slot: Option<u32>,
    /// This send is the half-open circuit's one probe.
    pub probe: bool,
    /// The circuit's failure count as admission saw it (a healthy send writes only
    /// when there is a count to clear).
    pub failures_seen: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Go(Permit),
    /// Not before `until`, because of `hold`.
    Wait {
        until: DateTime<Utc>,
        hold: Hold,
    },
}

#[async_trait]
pub trait Gate: Send + Sync {
    /// Admits one send to a bank lane now (circuit, then an in-flight slot, then a rate
    /// permit), or says when to try again and why. Nothing is held when it says wait.
    async fn admit(
        &self,
        lane: &Lane,
        policy: &LanePolicy,
        now: DateTime<Utc>,
    ) -> Result<Admission, StoreError>;

    /// Admits one send against the lane's rate only (the SMS channel): no in-flight
    /// slot, no circuit. Nothing to finish.
    async fn admit_rate(
        &self,
        lane: &Lane,
        rate_per_second: u32,
        now: DateTime<Utc>,
    ) -> Result<Admission, StoreError>;

    /// The send of `permit` ended with `health` at `now`: its rate permit is held from
    /// then for `rules::admission::rate_permit_until` (instead of its lease), its
    /// in-flight slot is freed and the breaker fed. Idempotent (a second call for the
    /// same permit frees and feeds nothing more).
    async fn finish(
        &self,
        permit: &Permit,
        health: Health,
        policy: &LanePolicy,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Those of `lanes` whose circuit is open or half-open (the operator metric).
    async fn open_circuits(&self, lanes: &[Lane]) -> Result<Vec<Lane>, StoreError>;
}

/// A fresh holder id for one admission.
pub fn new_holder() -> String {
    ulid::Ulid::generate().to_string()
}

/// The SMS channel's shared rate (`ports::SmsAdmission`) as the gate's lane `SMS`: the
/// same conditional-write permits as a bank's rate, so every instance of every function
/// that sends SMS counts against one `sms_channel.rate_per_second`.
pub struct SmsLane {
    pub gate: std::sync::Arc<dyn Gate>,
    pub rate_per_second: u32,
}

#[async_trait]
impl crate::ports::SmsAdmission for SmsLane {
    async fn admit(&self, now: DateTime<Utc>) -> Result<crate::ports::Admit, StoreError> {
        Ok(
            match self
                .gate
                .admit_rate(&Lane::Sms, self.rate_per_second, now)
                .await?
            {
                Admission::Go(_) => crate::ports::Admit::Go,
                Admission::Wait { until, .. } => crate::ports::Admit::RetryAt(until),
            },
        )
    }
}
