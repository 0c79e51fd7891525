//! Admission of sends to a lane (one bank, or the SMS channel): how long a rate permit
//! and an in-flight slot are held, and the circuit breaker's transitions. The gate
//! (`dispatch::gate`, in memory and in DynamoDB) takes each permit, slot and probe with
//! a conditional write; what those writes decide is stated here once.
//!
//! - **Rate**: a lane has `rate_per_second` permits. A bank send holds one from its
//!   admission until [`RATE_WINDOW`] plus [`RATE_MARGIN`] after the send *ended*, so two
//!   sends on the same permit reach the bank more than a second apart however late the
//!   first one got there (a busy instance can take longer than the margin between
//!   admission and arrival), and even after clock skew between our instances; any
//!   sliding 1-second window at the bank then sees at most `rate_per_second` arrivals.
//!   Until the send ends the permit is leased ([`rate_lease_until`]), so a sender that
//!   crashed mid-call frees it too. (Held from admission only, a permit let a second
//!   send arrive within the window of a first that arrived late; a fixed per-second
//!   counter would let `2 × rate` through across a window boundary.) A rate-only lane
//!   (the SMS channel: one quick publish per permit, nothing to finish) holds its
//!   permit from admission for the window and the margin.
//! - **In flight**: a lane has `max_in_flight` slots; a send holds one until it ends,
//!   and at most for [`flight_lease_until`] (the bank timeout plus a margin), so the slot
//!   of a sender that crashed mid-call frees itself.
//! - **Circuit**: consecutive unhealthy outcomes (transport error, 5xx, 408, 429) open
//!   the circuit for `cool_off`; once it has run, exactly one probe is let through; a
//!   healthy probe closes the circuit, an unhealthy one re-opens it.

use chrono::{DateTime, TimeDelta, Utc};

use crate::config::CircuitBreaker;

/// The window a bank's per-second rate is agreed over.
pub const RATE_WINDOW: TimeDelta = TimeDelta::seconds(1);
/// Added to the window: instants come from different Lambda instances' clocks, and the
/// request reaches the bank a little after it is admitted (and not always equally late).
pub const RATE_MARGIN: TimeDelta = TimeDelta::milliseconds(250);
/// Added to the bank timeout for an in-flight slot or probe lease: the call's own
/// writes around it, so a live sender never loses its slot while it still works.
pub const FLIGHT_MARGIN: TimeDelta = TimeDelta::seconds(5);
/// A sender waits in place for admission at most this long; a longer wait is a pause of
/// the message (the queue brings it back).
pub const MAX_WAIT_IN_PLACE: TimeDelta = TimeDelta::seconds(2);
/// SQS's longest visibility timeout (12 hours).
pub const MAX_PAUSE: TimeDelta = TimeDelta::hours(12);

/// How long one rate permit is held: a lane's `rate` permits are never all free again
/// sooner, so no sliding window of `RATE_WINDOW` sees more than `rate` sends.
pub const RATE_PERMIT_HOLD: TimeDelta =
    TimeDelta::milliseconds(RATE_WINDOW.num_milliseconds() + RATE_MARGIN.num_milliseconds());

/// Until when a rate permit is held once its send ended (or, on a rate-only lane, was
/// admitted) at `now`.
pub fn rate_permit_until(now: DateTime<Utc>) -> DateTime<Utc> {
    now + RATE_PERMIT_HOLD
}

/// Until when a bank send admitted at `now` holds its rate permit at most: its call's
/// longest end ([`flight_lease_until`]) and the hold after it. `Gate::finish` shortens
/// it to [`rate_permit_until`] the end.
pub fn rate_lease_until(now: DateTime<Utc>, bank_timeout: TimeDelta) -> DateTime<Utc> {
    rate_permit_until(flight_lease_until(now, bank_timeout))
}

/// When to ask the gate again after it said wait until `until` for `hold`. A rate
/// permit held by a send under way frees [`RATE_PERMIT_HOLD`] after that send ends,
/// usually long before its lease: the lease is only an upper bound, so a rate wait is
/// asked again after at most the hold.
pub fn ask_again_at(until: DateTime<Utc>, hold: Hold, now: DateTime<Utc>) -> DateTime<Utc> {
    match hold {
        Hold::Rate => until.min(rate_permit_until(now)),
        _ => until,
    }
}

/// Until when an in-flight slot (or the probe) taken at `now` is held at most.
pub fn flight_lease_until(now: DateTime<Utc>, bank_timeout: TimeDelta) -> DateTime<Utc> {
    now + bank_timeout + FLIGHT_MARGIN
}

/// Whether a permit, slot or probe lease held until `held_until` is free at `now`.
pub fn is_free(held_until: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    held_until.is_none_or(|t| t <= now)
}

/// How a send went, for the breaker. `Neutral`: nothing learnt about the bank's health
/// (the send was not made, or the bank answered but refused this inquiry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Healthy,
    Unhealthy,
    Neutral,
}

/// The breaker's reading of a bank's HTTP reply; `None` is a transport failure
/// (timeout, connection refused).
pub fn health_of(status: Option<u16>) -> Health {
    match status {
        None => Health::Unhealthy,
        Some(s) if s >= 500 || s == 408 || s == 429 => Health::Unhealthy,
        Some(_) => Health::Healthy,
    }
}

/// The probe let through a half-open circuit: who holds it and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub holder: String,
    pub until: DateTime<Utc>,
}

/// A lane's circuit as stored. Closed: `open_until` is `None`. Open: `now <
/// open_until`. Half-open: `open_until` has passed, and one probe at a time is let
/// through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Circuit {
    /// Consecutive unhealthy outcomes while closed.
    pub failures: u32,
    pub open_until: Option<DateTime<Utc>>,
    pub probe: Option<Probe>,
}

/// Why a send must wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Every rate permit of the lane is held.
    Rate,
    /// Every in-flight slot of the lane is held.
    InFlight,
    /// The circuit is open (cool-off running).
    CircuitOpen,
    /// The circuit is half-open and its one probe is out.
    ProbeRunning,
}

impl Hold {
    pub fn code(self) -> &'static str {
        match self {
            Hold::Rate => "RATE",
            Hold::InFlight => "IN_FLIGHT",
            Hold::CircuitOpen => "CIRCUIT_OPEN",
            Hold::ProbeRunning => "PROBE_RUNNING",
        }
    }
}

/// What the circuit says about a send at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitGate {
    /// Closed: go on to the rate and in-flight limits.
    Pass,
    /// Half-open and no probe out: this send may be the probe (if it takes it first).
    Probe,
    Wait(DateTime<Utc>, Hold),
}

pub fn circuit_gate(c: &Circuit, now: DateTime<Utc>) -> CircuitGate {
    match c.open_until {
        None => CircuitGate::Pass,
        Some(until) if now < until => CircuitGate::Wait(until, Hold::CircuitOpen),
        Some(_) => match &c.probe {
            Some(p) if now < p.until => CircuitGate::Wait(p.until, Hold::ProbeRunning),
            _ => CircuitGate::Probe,
        },
    }
}

/// Whether the circuit is open or half-open at `now` (the operator metric).
pub fn is_open(c: &Circuit) -> bool {
    c.open_until.is_some()
}

/// The circuit after a send (the probe when `probe_holder` is its holder) ended with
/// `health` at `now`.
pub fn after(
    c: &Circuit,
    health: Health,
    probe_holder: Option<&str>,
    policy: &CircuitBreaker,
    now: DateTime<Utc>,
) -> Circuit {
    let is_probe = probe_holder.is_some_and(|h| c.probe.as_ref().is_some_and(|p| p.holder == h));
    match (health, is_probe) {
        (Health::Neutral, true) => Circuit {
            probe: None,
            ..c.clone()
        },
        (Health::Neutral, false) => c.clone(),
        (Health::Healthy, true) => Circuit::default(),
        (Health::Unhealthy, true) => Circuit {
            failures: 0,
            open_until: Some(now + policy.cool_off),
            probe: None,
        },
        // Sends admitted before the circuit opened neither close nor extend it.
        (_, false) if c.open_until.is_some() => c.clone(),
        (Health::Healthy, false) => Circuit {
            failures: 0,
            ..c.clone()
        },
        (Health::Unhealthy, false) if c.failures + 1 >= policy.failures_to_open => Circuit {
            failures: 0,
            open_until: Some(now + policy.cool_off),
            probe: None,
        },
        (Health::Unhealthy, false) => Circuit {
            failures: c.failures + 1,
            ..c.clone()
        },
    }
}

/// Whether a sender should wait in place until `until` rather than pause the message.
pub fn wait_in_place(until: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    until - now <= MAX_WAIT_IN_PLACE
}

/// Whole seconds to pause a message that cannot be sent before `until`: at least 1, at
/// most [`MAX_PAUSE`].
pub fn pause_secs(until: DateTime<Utc>, now: DateTime<Utc>) -> i32 {
    let wait = (until - now).clamp(TimeDelta::zero(), MAX_PAUSE);
    super::retry_after_secs(wait) as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::T0;

    const POLICY: CircuitBreaker = CircuitBreaker {
        failures_to_open: 3,
        cool_off: TimeDelta::seconds(30),
    };

    #[test]
    fn a_rate_permit_outlives_the_banks_window_and_a_slot_the_call() {
        assert!(rate_permit_until(T0) - T0 > RATE_WINDOW);
        assert_eq!(
            flight_lease_until(T0, TimeDelta::seconds(10)),
            T0 + TimeDelta::seconds(15)
        );
        assert!(is_free(None, T0));
        assert!(is_free(Some(T0), T0));
        assert!(!is_free(Some(T0 + TimeDelta::milliseconds(1)), T0));
    }

    #[test]
    fn a_bank_sends_rate_permit_is_leased_past_the_call_and_asked_for_again_soon() {
        let timeout = TimeDelta::seconds(10);
        assert_eq!(
            rate_lease_until(T0, timeout),
            flight_lease_until(T0, timeout) + RATE_PERMIT_HOLD
        );
        let lease = rate_lease_until(T0, timeout);
        assert_eq!(ask_again_at(lease, Hold::Rate, T0), T0 + RATE_PERMIT_HOLD);
        let soon = T0 + TimeDelta::milliseconds(300);
        assert_eq!(ask_again_at(soon, Hold::Rate, T0), soon);
        assert_eq!(ask_again_at(lease, Hold::InFlight, T0), lease);
        assert_eq!(ask_again_at(lease, Hold::CircuitOpen, T0), lease);
    }

    #[test]
    fn transport_failures_5xx_408_and_429_count_against_the_bank() {
        for s in [None, Some(500), Some(503), Some(408), Some(429)] {
            assert_eq!(health_of(s), Health::Unhealthy, "{s:?}");
        }
        for s in [Some(200), Some(202), Some(400), Some(302)] {
            assert_eq!(health_of(s), Health::Healthy, "{s:?}");
        }
    }

    #[test]
    fn consecutive_failures_open_then_one_probe_then_close_or_reopen() {
        let mut c = Circuit::default();
        c = after(&c, Health::Unhealthy, None, &POLICY, T0);
        c = after(&c, Health::Unhealthy, None, &POLICY, T0);
        // A success in between: the count starts again.
        c = after(&c, Health::Healthy, None, &POLICY, T0);
        assert_eq!(c, Circuit::default());
        for _ in 0..2 {
            c = after(&c, Health::Unhealthy, None, &POLICY, T0);
            assert_eq!(circuit_gate(&c, T0), CircuitGate::Pass);
        }
        c = after(&c, Health::Unhealthy, None, &POLICY, T0);
        let until = T0 + TimeDelta::seconds(30);
        assert_eq!(
            circuit_gate(&c, T0 + TimeDelta::seconds(29)),
            CircuitGate::Wait(until, Hold::CircuitOpen)
        );
        // A late failure of a send admitted before it opened does not extend it.
        let late = after(
            &c,
            Health::Unhealthy,
            None,
            &POLICY,
            T0 + TimeDelta::seconds(5),
        );
        assert_eq!(late, c);
        assert_eq!(circuit_gate(&c, until), CircuitGate::Probe);
        let probing = Circuit {
            probe: Some(Probe {
                holder: "p1".into(),
                until: until + TimeDelta::seconds(15),
            }),
            ..c.clone()
        };
        assert_eq!(
            circuit_gate(&probing, until),
            CircuitGate::Wait(until + TimeDelta::seconds(15), Hold::ProbeRunning)
        );
        // A probe lease that ran out (its sender crashed): another probe may go.
        assert_eq!(
            circuit_gate(&probing, until + TimeDelta::seconds(15)),
            CircuitGate::Probe
        );
        // Someone else's outcome while the probe is out changes nothing.
        assert_eq!(
            after(&probing, Health::Healthy, Some("p2"), &POLICY, until),
            probing
        );
        let reopened = after(&probing, Health::Unhealthy, Some("p1"), &POLICY, until);
        assert_eq!(reopened.open_until, Some(until + TimeDelta::seconds(30)));
        assert_eq!(reopened.probe, None);
        assert_eq!(
            after(&probing, Health::Healthy, Some("p1"), &POLICY, until),
            Circuit::default()
        );
        // A probe that was never sent hands the probe on.
        let handed = after(&probing, Health::Neutral, Some("p1"), &POLICY, until);
        assert_eq!(circuit_gate(&handed, until), CircuitGate::Probe);
    }

    #[test]
    fn short_waits_are_waited_long_ones_pause_the_message() {
        assert!(wait_in_place(T0 + TimeDelta::seconds(2), T0));
        assert!(!wait_in_place(T0 + TimeDelta::milliseconds(2001), T0));
        assert_eq!(pause_secs(T0 + TimeDelta::milliseconds(29_500), T0), 30);
        assert_eq!(pause_secs(T0, T0), 1);
        assert_eq!(pause_secs(T0 + TimeDelta::days(3), T0), 43_200);
    }
}
