//! What each bank saw of our traffic: every inquiry's arrival and completion, summed up
//! as the number of inquiries, the most that arrived within any 1-second window and
//! the most being served at once (`GET /_admin/traffic`), so tests and benchmarks can
//! check the per-bank limits against the bank's side of the wire.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;

/// The sliding window of `max_rate_per_second`.
pub const WINDOW: Duration = Duration::from_secs(1);

/// One bank's figures, as `GET /_admin/traffic` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BankFigures {
    pub inquiries: u64,
    /// The largest number of inquiries that arrived within any 1-second window.
    pub max_rate_per_second: u64,
    /// The largest number of inquiries being served at once.
    pub max_in_flight: u64,
}

#[derive(Debug, Default)]
struct BankLoad {
    figures: BankFigures,
    in_flight: u64,
    /// Arrivals less than [`WINDOW`] before the latest one.
    window: VecDeque<Instant>,
}

impl BankLoad {
    fn arrive(&mut self, at: Instant) {
        // Arrivals come from concurrent handlers: one may carry an instant a little
        // before the last recorded one. The window stays ordered by insertion; an
        // older instant is treated as arriving at the newest one (at most a few
        // microseconds of difference).
        let at = self.window.back().map_or(at, |last| at.max(*last));
        while self
            .window
            .front()
            .is_some_and(|first| at.duration_since(*first) >= WINDOW)
        {
            self.window.pop_front();
        }
        self.window.push_back(at);
        self.in_flight += 1;
        let f = &mut self.figures;
        f.inquiries += 1;
        f.max_rate_per_second = f.max_rate_per_second.max(self.window.len() as u64);
        f.max_in_flight = f.max_in_flight.max(self.in_flight);
    }

    fn complete(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }
}

/// Every bank's load, shared by the request handlers.
#[derive(Debug, Default, Clone)]
pub struct Load {
    banks: Arc<Mutex<HashMap<String, BankLoad>>>,
}

/// An inquiry being served: it completes when dropped (answered, or its connection
/// dropped mid-way), so a cancelled request never stays "in flight".
#[must_use = "the inquiry completes when this is dropped"]
pub struct InFlight {
    load: Load,
    bank: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(b) = self.load.lock().get_mut(&self.bank) {
            b.complete();
        }
    }
}

impl Load {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, BankLoad>> {
        self.banks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records an inquiry arriving at `bank` at `at`; it is in flight until the guard
    /// is dropped.
    pub fn arrive(&self, bank: &str, at: Instant) -> InFlight {
        self.lock().entry(bank.to_owned()).or_default().arrive(at);
        InFlight {
            load: self.clone(),
            bank: bank.to_owned(),
        }
    }

    /// The figures of every bank that received an inquiry since the start or the last
    /// reset.
    pub fn figures(&self) -> BTreeMap<String, BankFigures> {
        self.lock()
            .iter()
            .map(|(bank, l)| (bank.clone(), l.figures))
            .collect()
    }

    /// Forgets the figures. Inquiries in flight stay counted as in flight (their
    /// completion is still to come), so the next maximum is right.
    pub fn reset(&self) {
        for l in self.lock().values_mut() {
            l.figures = BankFigures::default();
            l.window.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn the_rate_is_the_most_arrivals_within_any_second() {
        let load = Load::default();
        let t0 = Instant::now();
        // 3 within [0, 990] ms; 1000 ms after the first, the first is out of the window.
        for ms in [0, 500, 990, 1000, 1600] {
            drop(load.arrive("ICBC", at(t0, ms)));
        }
        let f = load.figures()["ICBC"];
        assert_eq!(f.inquiries, 5);
        assert_eq!(f.max_rate_per_second, 3);
        assert_eq!(f.max_in_flight, 1, "each completed before the next");

        // A burst of 10 in 900 ms after a quiet 2 s: 10, however the seconds fall.
        for i in 0..10 {
            drop(load.arrive("ICBC", at(t0, 3_650 + i * 100)));
        }
        assert_eq!(load.figures()["ICBC"].max_rate_per_second, 10);
        // Exactly 1 s apart: not in the same window.
        let other = Load::default();
        drop(other.arrive("ABC", at(t0, 0)));
        drop(other.arrive("ABC", at(t0, 1000)));
        assert_eq!(other.figures()["ABC"].max_rate_per_second, 1);
    }

    #[test]
    fn in_flight_counts_inquiries_until_they_complete() {
        let load = Load::default();
        let t0 = Instant::now();
        let a = load.arrive("ICBC", t0);
        let b = load.arrive("ICBC", t0);
        let other = load.arrive("CMB", t0);
        drop(a);
        let c = load.arrive("ICBC", t0);
        let d = load.arrive("ICBC", t0);
        assert_eq!(load.figures()["ICBC"].max_in_flight, 3);
        assert_eq!(load.figures()["CMB"].max_in_flight, 1);
        drop((b, c, d, other));
        drop(load.arrive("ICBC", at(t0, 5000)));
        assert_eq!(load.figures()["ICBC"].max_in_flight, 3, "a maximum stays");
    }

    #[test]
    fn reset_forgets_the_figures_but_not_what_is_in_flight() {
        let load = Load::default();
        let t0 = Instant::now();
        let held = load.arrive("ICBC", t0);
        drop(load.arrive("ICBC", t0));
        load.reset();
        assert_eq!(load.figures()["ICBC"], BankFigures::default());
        drop(load.arrive("ICBC", at(t0, 10)));
        let f = load.figures()["ICBC"];
        assert_eq!(
            (f.inquiries, f.max_rate_per_second, f.max_in_flight),
            (1, 1, 2)
        );
        drop(held);
    }

    #[test]
    fn an_arrival_recorded_out_of_order_is_counted_once() {
        let load = Load::default();
        let t0 = Instant::now();
        drop(load.arrive("ICBC", at(t0, 100)));
        drop(load.arrive("ICBC", at(t0, 99)));
        let f = load.figures()["ICBC"];
        assert_eq!((f.inquiries, f.max_rate_per_second), (2, 2));
    }
}
