//! `Gate`: the per-bank and SMS limits and the circuit breaker grant the same on the
//! in-memory gate and on DynamoDB Local, each limit fired at with 24 admissions at once
//! (`shared::dispatch::gate_contract`). On DynamoDB this is the real test: the permits,
//! slots and probe are conditional writes racing each other.

use std::sync::Arc;

use shared::adapters::dynamo::DynamoStore;
use shared::adapters::memory::MemoryGate;
use shared::dispatch::gate::Gate;
use shared::dispatch::gate_contract as cases;
use testkit::submission::Fixture;

use super::{contract, World};

contract!(
    crate::contracts::gate::GateWorld, dynamo;
    the_rate_is_never_exceeded,
    in_flight_is_never_exceeded_and_a_crashed_slot_frees_itself,
    the_circuit_opens_lets_one_probe_and_closes,
    a_bank_lanes_rate_holds_and_a_refused_admission_holds_nothing,
    a_bank_sends_rate_permit_is_held_until_the_send_ends,
    a_bank_lanes_rate_holds_however_late_its_sends_arrive,
);

/// One case's gate, at an instant of its own.
pub struct GateWorld<G> {
    pub gate: Arc<G>,
    pub now: chrono::DateTime<chrono::Utc>,
    fixture: Option<Fixture>,
}

impl GateWorld<MemoryGate> {
    pub fn memory() -> Self {
        let w = World::memory();
        Self {
            gate: Arc::new(MemoryGate::default()),
            now: w.now,
            fixture: None,
        }
    }
}

impl GateWorld<DynamoStore> {
    /// Tables of its own on DynamoDB Local.
    pub async fn dynamo() -> Self {
        let w = World::dynamo().await;
        let now = w.now;
        let gate = w.store.clone();
        Self {
            gate,
            now,
            fixture: w.into_fixture(),
        }
    }
}

impl<G> GateWorld<G> {
    pub async fn cleanup(self) {
        if let Some(f) = self.fixture {
            f.env.cleanup().await;
        }
    }
}

async fn the_rate_is_never_exceeded<G: Gate>(w: &GateWorld<G>) {
    cases::the_rate_is_never_exceeded(w.gate.as_ref(), w.now).await;
}

async fn in_flight_is_never_exceeded_and_a_crashed_slot_frees_itself<G: Gate>(w: &GateWorld<G>) {
    cases::in_flight_is_never_exceeded_and_a_crashed_slot_frees_itself(w.gate.as_ref(), w.now)
        .await;
}

async fn the_circuit_opens_lets_one_probe_and_closes<G: Gate>(w: &GateWorld<G>) {
    cases::the_circuit_opens_lets_one_probe_and_closes(w.gate.as_ref(), w.now).await;
}

async fn a_bank_lanes_rate_holds_and_a_refused_admission_holds_nothing<G: Gate>(w: &GateWorld<G>) {
    cases::a_bank_lanes_rate_holds_and_a_refused_admission_holds_nothing(w.gate.as_ref(), w.now)
        .await;
}

async fn a_bank_sends_rate_permit_is_held_until_the_send_ends<G: Gate>(w: &GateWorld<G>) {
    cases::a_bank_sends_rate_permit_is_held_until_the_send_ends(w.gate.as_ref(), w.now).await;
}

async fn a_bank_lanes_rate_holds_however_late_its_sends_arrive<G: Gate>(w: &GateWorld<G>) {
    cases::a_bank_lanes_rate_holds_however_late_its_sends_arrive(w.gate.as_ref(), w.now).await;
}
