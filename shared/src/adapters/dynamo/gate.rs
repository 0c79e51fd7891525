//! The gate (`dispatch::gate`) on DynamoDB: one partition per lane, `pk = GATE#<lane>`.
//!
//! | item | sk | attributes |
//! |---|---|---|
//! | rate permit i | `RATE#<i>` | `until`, `holder` (a bank send's) |
//! | in-flight slot i | `FLIGHT#<i>` | `holder`, `until` |
//! | circuit | `CIRCUIT` | `failures`, `open_until`, `probe_holder`, `probe_until` |
//!
//! Instants are epoch milliseconds (numbers, so conditions compare them). A permit or
//! slot is taken by a put conditioned on it being absent or ended (`until <= now`): of
//! any number of concurrent takers one wins each, so the lane never grants more than its
//! limit. The lane's items are read first (one consistent query) only to pick which to
//! try; the conditional write decides. A bank send's rate permit is leased with its
//! holder and, when the send ends, held on for the hold from then (an update
//! conditioned on the holder: `rules::admission`). Items carry `ttl` a day after they
//! end, so a lowered limit's unused permits go away.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use chrono::{DateTime, TimeDelta, Utc};
use rand::seq::SliceRandom;

use super::{all_items, key, n, s, ttl_at, written, DynamoStore, Item};
use crate::dispatch::gate::{self, Admission, Gate, Health, Hold, Lane, LanePolicy, Permit};
use crate::ports::StoreError;
use crate::rules::admission::{self, Circuit, CircuitGate, Probe};

const CIRCUIT: &str = "CIRCUIT";
/// When a probe was taken by someone else between our read and our write, try again
/// after this long (the winner's lease is not known without another read).
const PROBE_LOST_RETRY: TimeDelta = TimeDelta::milliseconds(500);

fn lane_pk(lane: &Lane) -> String {
    format!("GATE#{}", lane.key())
}

fn millis(t: DateTime<Utc>) -> AttributeValue {
    n(t.timestamp_millis())
}

fn instant(item: &Item, name: &str) -> Option<DateTime<Utc>> {
    let ms = item.get(name)?.as_n().ok()?.parse::<i64>().ok()?;
    DateTime::from_timestamp_millis(ms)
}

fn text(item: &Item, name: &str) -> Option<String> {
    item.get(name)?.as_s().ok().cloned()
}

fn circuit_of(item: Option<&Item>) -> Circuit {
    let Some(item) = item else {
        return Circuit::default();
    };
    let failures = item
        .get("failures")
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let probe = match (text(item, "probe_holder"), instant(item, "probe_until")) {
        (Some(holder), Some(until)) => Some(Probe { holder, until }),
        _ => None,
    };
    Circuit {
        failures,
        open_until: instant(item, "open_until"),
        probe,
    }
}

/// A lane's items as read: the circuit, and each permit's or slot's end by index.
#[derive(Default)]
struct LaneItems {
    circuit: Option<Item>,
    rate: HashMap<u32, DateTime<Utc>>,
    flight: HashMap<u32, DateTime<Utc>>,
}

/// Indexes `0..limit` not held at `now` (in a random order, so concurrent takers spread
/// over them), or the earliest end among them when all are held.
fn free_among(
    held: &HashMap<u32, DateTime<Utc>>,
    limit: u32,
    now: DateTime<Utc>,
) -> Result<Vec<u32>, DateTime<Utc>> {
    let mut free: Vec<u32> = (0..limit)
        .filter(|i| admission::is_free(held.get(i).copied(), now))
        .collect();
    if free.is_empty() {
        return Err((0..limit)
            .filter_map(|i| held.get(&i).copied())
            .min()
            .unwrap_or(now));
    }
    free.shuffle(&mut rand::rng());
    Ok(free)
}

/// Which of a lane's limits an item counts against.
#[derive(Clone, Copy)]
enum Kind {
    Rate,
    Flight,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::Rate => "RATE#",
            Kind::Flight => "FLIGHT#",
        }
    }

    fn of(self, items: &LaneItems) -> &HashMap<u32, DateTime<Utc>> {
        match self {
            Kind::Rate => &items.rate,
            Kind::Flight => &items.flight,
        }
    }
}

/// One permit or slot wanted: of `limit`, held until `until` (by `holder`, for a slot).
struct Want<'a> {
    kind: Kind,
    limit: u32,
    until: DateTime<Utc>,
    holder: Option<&'a str>,
}

impl DynamoStore {
    async fn lane_items(&self, lane: &Lane) -> Result<LaneItems, StoreError> {
        let mut out = LaneItems::default();
        let query = self
            .client
            .query()
            .table_name(&self.tables.main)
            .key_condition_expression("pk = :pk")
            // Only what admission compares: under load a lane holds tens of live
            // permits and slots, read at every admission (decision 148).
            .projection_expression("sk, #until, failures, open_until, probe_holder, probe_until")
            .expression_attribute_names("#until", "until")
            .expression_attribute_values(":pk", s(lane_pk(lane)))
            .consistent_read(true);
        for item in all_items(query).await? {
            let sk = text(&item, "sk").unwrap_or_default();
            let until = instant(&item, "until");
            let index = |prefix: &str| sk.strip_prefix(prefix).and_then(|i| i.parse().ok());
            if sk == CIRCUIT {
                out.circuit = Some(item);
            } else if let (Some(i), Some(t)) = (index(Kind::Rate.prefix()), until) {
                out.rate.insert(i, t);
            } else if let (Some(i), Some(t)) = (index(Kind::Flight.prefix()), until) {
                out.flight.insert(i, t);
            }
        }
        Ok(out)
    }

    /// Takes item `sk` of the lane until `until` if it is absent or ended at `now`.
    async fn take(
        &self,
        lane: &Lane,
        sk: String,
        until: DateTime<Utc>,
        holder: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut item = key(lane_pk(lane), sk);
        item.insert("entity".into(), s("GATE"));
        item.insert("until".into(), millis(until));
        item.insert("ttl".into(), ttl_at(until + TimeDelta::days(1)));
        if let Some(h) = holder {
            item.insert("holder".into(), s(h));
        }
        written(
            self.client
                .put_item()
                .table_name(&self.tables.main)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(pk) OR #until <= :now")
                .expression_attribute_names("#until", "until")
                .expression_attribute_values(":now", millis(now))
                .send()
                .await,
        )
    }

    /// Takes one of `candidates`; the index taken, if any.
    async fn take_one(
        &self,
        lane: &Lane,
        want: &Want<'_>,
        candidates: &[u32],
        now: DateTime<Utc>,
    ) -> Result<Option<u32>, StoreError> {
        for i in candidates {
            let sk = format!("{}{i}", want.kind.prefix());
            if self.take(lane, sk, want.until, want.holder, now).await? {
                return Ok(Some(*i));
            }
        }
        Ok(None)
    }

    /// A permit or slot of the lane, or when to try again: from the lane's items as
    /// read, then (every candidate lost to a concurrent taker) as read again.
    async fn permit_or_wait(
        &self,
        lane: &Lane,
        want: &Want<'_>,
        first_read: &LaneItems,
        now: DateTime<Utc>,
    ) -> Result<Result<u32, DateTime<Utc>>, StoreError> {
        let candidates = match free_among(want.kind.of(first_read), want.limit, now) {
            Ok(c) => c,
            Err(at) => return Ok(Err(at)),
        };
        if let Some(i) = self.take_one(lane, want, &candidates, now).await? {
            return Ok(Ok(i));
        }
        let again = self.lane_items(lane).await?;
        match free_among(want.kind.of(&again), want.limit, now) {
            Ok(c) => Ok(self.take_one(lane, want, &c, now).await?.ok_or(now)),
            Err(at) => Ok(Err(at)),
        }
    }

    /// The ended send's rate permit is held until `until` from now on (if still its).
    async fn hold_rate_permit(
        &self,
        lane: &Lane,
        permit: u32,
        holder: &str,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.update_where(
            key(lane_pk(lane), format!("RATE#{permit}")),
            "SET #until = :until, #ttl = :ttl REMOVE holder",
            "holder = :h",
            &[("#until", "until"), ("#ttl", "ttl")],
            &[
                (":until", millis(until)),
                (":ttl", ttl_at(until + TimeDelta::days(1))),
                (":h", s(holder)),
            ],
        )
        .await
    }

    async fn release_slot(&self, lane: &Lane, slot: u32, holder: &str) -> Result<bool, StoreError> {
        written(
            self.client
                .delete_item()
                .table_name(&self.tables.main)
                .set_key(Some(key(lane_pk(lane), format!("FLIGHT#{slot}"))))
                .condition_expression("holder = :h")
                .expression_attribute_values(":h", s(holder))
                .send()
                .await,
        )
    }

    /// Updates the lane's circuit item under `condition`; `false` if refused.
    async fn update_circuit(
        &self,
        lane: &Lane,
        update: &str,
        condition: &str,
        values: &[(&str, AttributeValue)],
    ) -> Result<bool, StoreError> {
        let key = key(lane_pk(lane), CIRCUIT.into());
        self.update_where(key, update, condition, &[], values).await
    }

    async fn release_probe(&self, lane: &Lane, holder: &str) -> Result<bool, StoreError> {
        self.update_circuit(
            lane,
            "REMOVE probe_holder, probe_until",
            "probe_holder = :h",
            &[(":h", s(holder))],
        )
        .await
    }

    async fn feed_breaker(
        &self,
        permit: &Permit,
        health: Health,
        policy: &LanePolicy,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let lane = &permit.lane;
        let holder = s(&permit.holder);
        let reopen = millis(now + policy.breaker.cool_off);
        match (health, permit.probe) {
            (Health::Neutral, true) => {
                self.release_probe(lane, &permit.holder).await?;
            }
            (Health::Neutral, false) => {}
            // rules::admission::after: a healthy probe closes the circuit.
            (Health::Healthy, true) => {
                written(
                    self.client
                        .delete_item()
                        .table_name(&self.tables.main)
                        .set_key(Some(key(lane_pk(lane), CIRCUIT.into())))
                        .condition_expression("probe_holder = :h")
                        .expression_attribute_values(":h", holder)
                        .send()
                        .await,
                )?;
            }
            (Health::Unhealthy, true) => {
                self.update_circuit(
                    lane,
                    "SET open_until = :until, failures = :zero REMOVE probe_holder, probe_until",
                    "probe_holder = :h",
                    &[(":h", holder), (":until", reopen), (":zero", n(0))],
                )
                .await?;
            }
            // Only while closed (sends admitted before it opened change nothing), and
            // only when admission saw a count to clear (most sends write nothing here).
            (Health::Healthy, false) if permit.failures_seen > 0 => {
                self.update_circuit(
                    lane,
                    "SET failures = :zero",
                    "attribute_not_exists(open_until)",
                    &[(":zero", n(0))],
                )
                .await?;
            }
            (Health::Healthy, false) => {}
            (Health::Unhealthy, false) => {
                let counted = self
                    .client
                    .update_item()
                    .table_name(&self.tables.main)
                    .set_key(Some(key(lane_pk(lane), CIRCUIT.into())))
                    .update_expression("SET entity = :e ADD failures :one")
                    .condition_expression("attribute_not_exists(open_until)")
                    .expression_attribute_values(":e", s("GATE"))
                    .expression_attribute_values(":one", n(1))
                    .return_values(ReturnValue::UpdatedNew)
                    .send()
                    .await;
                let failures: u32 = match counted {
                    Ok(out) => out
                        .attributes
                        .as_ref()
                        .and_then(|a| a.get("failures"))
                        .and_then(|v| v.as_n().ok())
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0),
                    Err(e) => {
                        // Refused: already open.
                        written(Err::<(), _>(e))?;
                        return Ok(());
                    }
                };
                if failures >= policy.breaker.failures_to_open {
                    // Of the senders that counted past the threshold, one opens it.
                    self.update_circuit(
                        lane,
                        "SET open_until = :until, failures = :zero",
                        "attribute_not_exists(open_until) AND failures >= :n",
                        &[
                            (":until", reopen),
                            (":zero", n(0)),
                            (":n", n(policy.breaker.failures_to_open)),
                        ],
                    )
                    .await?;
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Gate for DynamoStore {
    async fn admit(
        &self,
        lane: &Lane,
        policy: &LanePolicy,
        now: DateTime<Utc>,
    ) -> Result<Admission, StoreError> {
        let items = self.lane_items(lane).await?;
        let circuit = circuit_of(items.circuit.as_ref());
        let holder = gate::new_holder();
        let lease = admission::flight_lease_until(now, policy.call_timeout);
        let probe = match admission::circuit_gate(&circuit, now) {
            CircuitGate::Pass => false,
            CircuitGate::Wait(until, hold) => return Ok(Admission::Wait { until, hold }),
            CircuitGate::Probe => {
                let open_until = circuit.open_until.unwrap_or(now);
                let taken = self
                    .update_circuit(
                        lane,
                        "SET probe_holder = :h, probe_until = :pu",
                        "open_until = :seen AND (attribute_not_exists(probe_until) OR probe_until <= :now)",
                        &[
                            (":h", s(&holder)),
                            (":pu", millis(lease)),
                            (":seen", millis(open_until)),
                            (":now", millis(now)),
                        ],
                    )
                    .await?;
                if !taken {
                    return Ok(Admission::Wait {
                        until: now + PROBE_LOST_RETRY,
                        hold: Hold::ProbeRunning,
                    });
                }
                true
            }
        };
        let give_back_probe = || async {
            if probe {
                self.release_probe(lane, &holder).await?;
            }
            Ok::<_, StoreError>(())
        };
        let slot_wanted = Want {
            kind: Kind::Flight,
            limit: policy.limits.max_in_flight,
            until: lease,
            holder: Some(&holder),
        };
        let slot = match self.permit_or_wait(lane, &slot_wanted, &items, now).await? {
            Ok(slot) => slot,
            Err(until) => {
                give_back_probe().await?;
                return Ok(Admission::Wait {
                    until,
                    hold: Hold::InFlight,
                });
            }
        };
        let rate_wanted = Want {
            kind: Kind::Rate,
            limit: policy.limits.rate_per_second,
            until: admission::rate_lease_until(now, policy.call_timeout),
            holder: Some(&holder),
        };
        let rate = match self.permit_or_wait(lane, &rate_wanted, &items, now).await? {
            Ok(rate) => rate,
            Err(until) => {
                // Nothing is held by an admission that says wait.
                self.release_slot(lane, slot, &holder).await?;
                give_back_probe().await?;
                return Ok(Admission::Wait {
                    until,
                    hold: Hold::Rate,
                });
            }
        };
        Ok(Admission::Go(Permit {
            lane: lane.clone(),
            holder,
            flight_slot: Some(slot),
            rate_slot: Some(rate),
            probe,
            failures_seen: circuit.failures,
        }))
    }

    async fn admit_rate(
        &self,
        lane: &Lane,
        rate_per_second: u32,
        now: DateTime<Utc>,
    ) -> Result<Admission, StoreError> {
        let items = self.lane_items(lane).await?;
        let wanted = Want {
            kind: Kind::Rate,
            limit: rate_per_second,
            until: admission::rate_permit_until(now),
            holder: None,
        };
        let rate = self.permit_or_wait(lane, &wanted, &items, now).await?;
        Ok(match rate {
            Ok(_) => Admission::Go(Permit {
                lane: lane.clone(),
                holder: gate::new_holder(),
                flight_slot: None,
                rate_slot: None,
                probe: false,
                failures_seen: 0,
            }),
            Err(until) => Admission::Wait {
                until,
                hold: Hold::Rate,
            },
        })
    }

    async fn finish(
        &self,
        permit: &Permit,
        health: Health,
        policy: &LanePolicy,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if let Some(rate) = permit.rate_slot {
            let until = admission::rate_permit_until(now);
            self.hold_rate_permit(&permit.lane, rate, &permit.holder, until)
                .await?;
        }
        let Some(slot) = permit.flight_slot else {
            return Ok(());
        };
        // Freeing the slot is what makes a finish count once.
        if !self
            .release_slot(&permit.lane, slot, &permit.holder)
            .await?
        {
            return Ok(());
        }
        self.feed_breaker(permit, health, policy, now).await
    }

    async fn open_circuits(&self, lanes: &[Lane]) -> Result<Vec<Lane>, StoreError> {
        let by_pk: HashMap<String, &Lane> = lanes.iter().map(|l| (lane_pk(l), l)).collect();
        let mut keys: Vec<Item> = by_pk
            .keys()
            .map(|pk| key(pk.clone(), CIRCUIT.into()))
            .collect();
        keys.sort_by_key(|k| k.get("pk").and_then(|v| v.as_s().ok()).cloned());
        let mut open = Vec::new();
        for item in self.batch_get(&self.tables.main, keys, false).await? {
            let lane = text(&item, "pk").and_then(|pk| by_pk.get(&pk).copied());
            if let Some(lane) = lane.filter(|_| admission::is_open(&circuit_of(Some(&item)))) {
                open.push(lane.clone());
            }
        }
        open.sort();
        Ok(open)
    }
}
