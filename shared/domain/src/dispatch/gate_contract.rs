//! The `Gate` contract: cases run on the in-memory gate here and on the DynamoDB one
//! (`tests/api/contracts/gate.rs`, on DynamoDB Local), so both grant the same. Every
//! limit is fired at with more admissions at once than it allows (released together
//! by a barrier) and must grant exactly the limit.
#![cfg(any(test, feature = "test-util"))]

use chrono::{DateTime, TimeDelta, Utc};
use futures::future::join_all;
use tokio::sync::Barrier;

use super::gate::{Admission, Gate, Health, Hold, Lane, LanePolicy, Permit};
use crate::config::{CircuitBreaker, LaneLimits};
use crate::model::bank::BankCode;
use crate::rules::admission;

/// Admissions fired at once in each case.
pub const AT_ONCE: usize = 24;

/// A bank's lane (each case runs on a gate of its own).
pub fn bank(code: &str) -> Lane {
    let code: BankCode = serde_json::from_value(serde_json::json!(code)).expect("a bank code");
    Lane::Bank(code)
}

pub fn policy(rate: u32, in_flight: u32) -> LanePolicy {
    LanePolicy {
        limits: LaneLimits {
            rate_per_second: rate,
            max_in_flight: in_flight,
        },
        breaker: CircuitBreaker {
            failures_to_open: 3,
            cool_off: TimeDelta::seconds(30),
        },
        call_timeout: TimeDelta::seconds(5),
    }
}

async fn at_once<G: Gate + ?Sized>(
    gate: &G,
    lane: &Lane,
    policy: &LanePolicy,
    now: DateTime<Utc>,
    rate_only: bool,
) -> (Vec<Permit>, Vec<(DateTime<Utc>, Hold)>) {
    let barrier = Barrier::new(AT_ONCE);
    let results = join_all((0..AT_ONCE).map(|_| async {
        barrier.wait().await;
        if rate_only {
            gate.admit_rate(lane, policy.limits.rate_per_second, now)
                .await
        } else {
            gate.admit(lane, policy, now).await
        }
    }))
    .await;
    let mut go = Vec::new();
    let mut wait = Vec::new();
    for r in results {
        match r.expect("the gate answers") {
            Admission::Go(p) => go.push(p),
            Admission::Wait { until, hold } => wait.push((until, hold)),
        }
    }
    (go, wait)
}

/// Rate-only (the SMS channel): of many at once, exactly `rate` go; the others are told
/// to come back when the first permit ends, and then again `rate` go.
pub async fn the_rate_is_never_exceeded<G: Gate + ?Sized>(gate: &G, now: DateTime<Utc>) {
    let lane = Lane::Sms;
    let p = policy(5, 1);
    let (go, wait) = at_once(gate, &lane, &p, now, true).await;
    assert_eq!(go.len(), 5, "granted {} of {AT_ONCE}", go.len());
    let free_at = admission::rate_permit_until(now);
    assert!(
        wait.iter()
            .all(|(until, hold)| *hold == Hold::Rate && *until <= free_at && *until > now),
        "{wait:?}"
    );
    // Still within the window: nothing more.
    let later = now + TimeDelta::milliseconds(1200);
    let (go, _) = at_once(gate, &lane, &p, later, true).await;
    assert!(go.is_empty(), "a permit went twice within its window");
    let (go, _) = at_once(gate, &lane, &p, free_at, true).await;
    assert_eq!(go.len(), 5);
}

/// A bank lane: of many at once, exactly `max_in_flight` go (the rate allowing more);
/// a finished send frees its slot at once, a crashed one at its lease end.
pub async fn in_flight_is_never_exceeded_and_a_crashed_slot_frees_itself<G: Gate + ?Sized>(
    gate: &G,
    now: DateTime<Utc>,
) {
    let lane = bank("CMB");
    let p = policy(100, 3);
    let (go, wait) = at_once(gate, &lane, &p, now, false).await;
    assert_eq!(go.len(), 3, "granted {} of {AT_ONCE}", go.len());
    let lease = admission::flight_lease_until(now, p.call_timeout);
    assert!(
        wait.iter().all(|w| *w == (lease, Hold::InFlight)),
        "{wait:?}"
    );
    let mut slots: Vec<_> = go.iter().map(|p| p.flight_slot).collect();
    slots.sort();
    slots.dedup();
    assert_eq!(slots.len(), 3, "each permit holds a slot of its own");
    // One ends: one more goes, not two.
    let t = now + TimeDelta::seconds(1);
    gate.finish(&go[0], Health::Healthy, &p, t).await.unwrap();
    // Finishing again frees nothing more.
    gate.finish(&go[0], Health::Healthy, &p, t).await.unwrap();
    let (more, _) = at_once(gate, &lane, &p, t, false).await;
    assert_eq!(more.len(), 1);
    // The other two never finish (their senders crashed): free at their lease end.
    let (none, _) = at_once(gate, &lane, &p, lease - TimeDelta::milliseconds(1), false).await;
    assert!(none.is_empty());
    let (freed, _) = at_once(gate, &lane, &p, lease, false).await;
    assert_eq!(freed.len(), 2);
}

/// Consecutive unhealthy sends open the circuit; while open nothing goes; after the
/// cool-off exactly one probe goes however many try; an unhealthy probe re-opens it, a
/// healthy one closes it.
pub async fn the_circuit_opens_lets_one_probe_and_closes<G: Gate + ?Sized>(
    gate: &G,
    now: DateTime<Utc>,
) {
    let lane = bank("BOC");
    let p = policy(100, 10);
    let mut permits = Vec::new();
    for _ in 0..3 {
        match gate.admit(&lane, &p, now).await.unwrap() {
            Admission::Go(permit) => permits.push(permit),
            w => panic!("closed circuit refused: {w:?}"),
        }
    }
    assert!(gate
        .open_circuits(std::slice::from_ref(&lane))
        .await
        .unwrap()
        .is_empty());
    for permit in &permits {
        gate.finish(permit, Health::Unhealthy, &p, now)
            .await
            .unwrap();
    }
    let reopen_at = now + p.breaker.cool_off;
    assert_eq!(
        gate.admit(&lane, &p, now + TimeDelta::seconds(29))
            .await
            .unwrap(),
        Admission::Wait {
            until: reopen_at,
            hold: Hold::CircuitOpen
        }
    );
    assert_eq!(
        gate.open_circuits(&[lane.clone(), bank("ICBC")])
            .await
            .unwrap(),
        std::slice::from_ref(&lane)
    );
    let (probes, wait) = at_once(gate, &lane, &p, reopen_at, false).await;
    assert_eq!(probes.len(), 1, "one probe, not {}", probes.len());
    assert!(probes[0].probe);
    assert!(
        wait.iter().all(|(_, h)| *h == Hold::ProbeRunning),
        "{wait:?}"
    );
    // The probe fails: open again for a cool-off from then.
    let t = reopen_at + TimeDelta::seconds(1);
    gate.finish(&probes[0], Health::Unhealthy, &p, t)
        .await
        .unwrap();
    let again = t + p.breaker.cool_off;
    assert_eq!(
        gate.admit(&lane, &p, again - TimeDelta::seconds(1))
            .await
            .unwrap(),
        Admission::Wait {
            until: again,
            hold: Hold::CircuitOpen
        }
    );
    let (probes, _) = at_once(gate, &lane, &p, again, false).await;
    assert_eq!(probes.len(), 1);
    gate.finish(&probes[0], Health::Healthy, &p, again)
        .await
        .unwrap();
    // Closed: as many as the limits allow go.
    let (go, _) = at_once(gate, &lane, &p, again, false).await;
    assert_eq!(go.len(), 10);
    assert!(go.iter().all(|p| !p.probe));
    assert!(gate
        .open_circuits(std::slice::from_ref(&lane))
        .await
        .unwrap()
        .is_empty());
}

/// The rate of a bank lane holds whatever the in-flight slots allow, and a permit that
/// waits holds nothing: the waiting admissions took no slot.
pub async fn a_bank_lanes_rate_holds_and_a_refused_admission_holds_nothing<G: Gate + ?Sized>(
    gate: &G,
    now: DateTime<Utc>,
) {
    let lane = bank("CCB");
    let p = policy(4, 50);
    let (go, wait) = at_once(gate, &lane, &p, now, false).await;
    assert_eq!(go.len(), 4);
    assert!(wait.iter().all(|(_, h)| *h == Hold::Rate), "{wait:?}");
    for permit in &go {
        gate.finish(permit, Health::Healthy, &p, now).await.unwrap();
    }
    // The refused ones left the in-flight slots free: once the rate allows, 4 go
    // again, with 50 slots each time.
    let (go, _) = at_once(gate, &lane, &p, admission::rate_permit_until(now), false).await;
    assert_eq!(go.len(), 4);
}

/// A bank send's rate permit is held until the send ends (and the hold after that),
/// not just for the hold after admission: a send still under way keeps it, an ended
/// one frees it the hold after its end, a crashed one at its lease end.
pub async fn a_bank_sends_rate_permit_is_held_until_the_send_ends<G: Gate + ?Sized>(
    gate: &G,
    now: DateTime<Utc>,
) {
    let lane = bank("HXB");
    let p = policy(2, 10);
    let (go, _) = at_once(gate, &lane, &p, now, false).await;
    assert_eq!(go.len(), 2);
    assert!(go.iter().all(|p| p.rate_slot.is_some()));
    // Both sends still under way past the hold after their admission: nothing goes.
    let past_hold = admission::rate_permit_until(now) + TimeDelta::milliseconds(1);
    let (none, wait) = at_once(gate, &lane, &p, past_hold, false).await;
    assert!(none.is_empty(), "a permit went while its send was out");
    let lease = admission::rate_lease_until(now, p.call_timeout);
    assert!(wait.iter().all(|w| *w == (lease, Hold::Rate)), "{wait:?}");
    // One ends: its permit is held for the hold from then, then exactly one goes.
    let ended = now + TimeDelta::seconds(3);
    gate.finish(&go[0], Health::Healthy, &p, ended)
        .await
        .unwrap();
    let free_at = admission::rate_permit_until(ended);
    let (none, wait) = at_once(gate, &lane, &p, free_at - TimeDelta::milliseconds(1), false).await;
    assert!(none.is_empty());
    assert!(wait.iter().all(|w| *w == (free_at, Hold::Rate)), "{wait:?}");
    // Finishing again (a retried finish) holds it no longer.
    gate.finish(&go[0], Health::Healthy, &p, ended + TimeDelta::seconds(1))
        .await
        .unwrap();
    let (one, _) = at_once(gate, &lane, &p, free_at, false).await;
    assert_eq!(one.len(), 1);
    // The other never ends (its sender crashed): its permit frees at its lease end.
    let (none, _) = at_once(gate, &lane, &p, lease - TimeDelta::milliseconds(1), false).await;
    assert!(none.is_empty());
    let (freed, _) = at_once(gate, &lane, &p, lease, false).await;
    assert_eq!(freed.len(), 1);
}

/// However late each send reaches the bank (between its admission and its end), no
/// sliding second at the bank sees more than the lane's rate. Played as a timeline
/// against the gate: the bank's sends ask in order (as its FIFO group delivers them),
/// the first in line again when the gate said or when a send ends; they arrive 0 to
/// 900 ms after admission, in a pattern that puts a late arrival just before a prompt
/// one.
pub async fn a_bank_lanes_rate_holds_however_late_its_sends_arrive<G: Gate + ?Sized>(
    gate: &G,
    now: DateTime<Utc>,
) {
    let lane = bank("CZB");
    let p = policy(5, 3);
    const SENDS: usize = 40;
    let late = |i: usize| TimeDelta::milliseconds(((i * 7) % 10) as i64 * 100);
    let took = |i: usize| late(i) + TimeDelta::milliseconds(40);
    let mut next = 0;
    // When the first send in line asks next (none once all went).
    let mut asks_at = Some(now);
    let mut ends: Vec<(DateTime<Utc>, Permit)> = Vec::new();
    let mut arrivals = Vec::new();
    loop {
        let first_end = (0..ends.len()).min_by_key(|&k| ends[k].0);
        match (first_end, asks_at) {
            (Some(k), ask) if ask.is_none_or(|a| ends[k].0 <= a) => {
                let (t, permit) = ends.swap_remove(k);
                gate.finish(&permit, Health::Healthy, &p, t).await.unwrap();
                asks_at = asks_at.map(|a| a.min(t));
            }
            (_, Some(t)) => match gate.admit(&lane, &p, t).await.unwrap() {
                Admission::Go(permit) => {
                    arrivals.push(t + late(next));
                    ends.push((t + took(next), permit));
                    next += 1;
                    asks_at = (next < SENDS).then_some(t);
                }
                Admission::Wait { until, hold } => {
                    let again = admission::ask_again_at(until, hold, t);
                    asks_at = Some(again.max(t + TimeDelta::milliseconds(1)));
                }
            },
            (_, None) => break,
        }
    }
    assert_eq!(arrivals.len(), SENDS);
    arrivals.sort();
    let most = (0..arrivals.len())
        .map(|k| {
            arrivals[k..]
                .iter()
                .take_while(|a| **a < arrivals[k] + admission::RATE_WINDOW)
                .count()
        })
        .max()
        .unwrap_or(0);
    assert!(most <= 5, "{most} arrivals within one second (limit 5)");
}
