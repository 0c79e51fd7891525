//! How each bank behaves: a default, per-bank settings and per-person overrides, set from
//! a JSON file at start and changed at run time through the admin API.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// 200 with the signed answer after `latency_ms`.
    #[default]
    Immediate,
    /// 202 `{}` after `latency_ms`, then the signed answer POSTed to the inquiry's
    /// `callback_url` after `callback_delay_ms`.
    Callback,
    /// 500 after `latency_ms`.
    Error,
    /// Sleeps `timeout_ms`, then answers 200 as `immediate`.
    Timeout,
    /// 200 with a signed body that is not JSON.
    Malformed,
    /// 200 with a correct answer signed with a wrong key.
    BadSignature,
    /// 200 with a correctly signed answer that also holds a full 16-digit card number.
    LeakCardNumber,
    /// 500 for the first `failures_before_success` inquiries of each (person, bank),
    /// then as `immediate`.
    FailThenAnswer,
    /// 202 `{}` and never a callback.
    Never,
    /// 200 with a signed answer whose status is `ERROR` (no cards).
    ErrorAnswer,
    /// 307 to the same inquiry URL: a client that follows it re-sends the inquiry (its
    /// subject and signature headers), which the simulator then records a second time.
    Redirect,

    // Misbehaving banks, one protocol rule broken each, for the conformance checker
    // (`infra/bank-check`) to catch. Otherwise as `immediate`.
    /// 200 with a correct answer and no signature headers.
    Unsigned,
    /// Answers inquiries whatever their signature (also none).
    AcceptBadSignature,
    /// Answers an inquiry whose nonce it has already seen.
    AcceptReplayedNonce,
    /// Answers inquiries whose timestamp is outside the 5-minute window.
    AcceptStaleTimestamp,
    /// Echoes a `query_id` and `inquiry_id` other than the inquiry's.
    WrongIds,
    /// Each card's `card_ref` is its full card number, grouped by dashes.
    CardRefWithDigits,
    /// A repeated inquiry (same `inquiry_id`) gets a different answer: a card fewer,
    /// or `ERROR` when there is none.
    NotIdempotent,
    /// Each delivery of the same dispute opens a new case (a new `case_id`).
    DisputeNotIdempotent,
    /// Each card also carries `first6`, its first six digits: more than first 4 + last 4.
    ExtraDigits,
}

impl Mode {
    /// Every mode, for tests that must cover each.
    pub const ALL: [Mode; 20] = [
        Mode::Immediate,
        Mode::Callback,
        Mode::Error,
        Mode::Timeout,
        Mode::Malformed,
        Mode::BadSignature,
        Mode::LeakCardNumber,
        Mode::FailThenAnswer,
        Mode::Never,
        Mode::ErrorAnswer,
        Mode::Redirect,
        Mode::Unsigned,
        Mode::AcceptBadSignature,
        Mode::AcceptReplayedNonce,
        Mode::AcceptStaleTimestamp,
        Mode::WrongIds,
        Mode::CardRefWithDigits,
        Mode::NotIdempotent,
        Mode::DisputeNotIdempotent,
        Mode::ExtraDigits,
    ];

    /// Modes that tamper with how an inquiry's signature is checked.
    fn relaxes_signature(self) -> bool {
        matches!(
            self,
            Mode::AcceptBadSignature | Mode::AcceptReplayedNonce | Mode::AcceptStaleTimestamp
        )
    }
}

/// What a callback carries (callback mode only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallbackAnswer {
    #[default]
    Correct,
    Malformed,
    BadSignature,
    LeakCardNumber,
    ErrorAnswer,
    /// The correct answer without signature headers.
    Unsigned,
}

/// One bank's behaviour. Every field is optional in JSON; absent ones take the defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Behaviour {
    pub mode: Mode,
    pub latency_ms: u64,
    pub callback_delay_ms: u64,
    pub timeout_ms: u64,
    pub failures_before_success: u32,
    pub callback_answer: CallbackAnswer,
    /// Each answered card carries an opaque `card_ref` (bank protocol, disputes). On by
    /// default since our side accepts the field (decisions 76, 91); `false` plays a
    /// bank that gives none.
    pub card_refs: bool,
    /// Keeps every exchange with this person at this bank (inquiries, answers,
    /// callbacks, disputes) for `GET /_admin/traffic/{id_number}`; off by default so
    /// that load runs keep no bodies.
    pub record_traffic: bool,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            mode: Mode::Immediate,
            latency_ms: 0,
            callback_delay_ms: 0,
            timeout_ms: 60_000,
            failures_before_success: 2,
            callback_answer: CallbackAnswer::Correct,
            card_refs: true,
            record_traffic: false,
        }
    }
}

/// No delay above one hour: a typo should not park a task for days.
const MAX_DELAY_MS: u64 = 3_600_000;

impl Behaviour {
    /// Whether the inquiry's signature is checked, its nonce and its time window.
    pub fn checks(&self) -> (bool, bool, bool) {
        let m = self.mode;
        if !m.relaxes_signature() {
            return (true, true, true);
        }
        (
            m != Mode::AcceptBadSignature,
            m != Mode::AcceptReplayedNonce,
            m != Mode::AcceptStaleTimestamp,
        )
    }

    /// `card_ref`s in answers: asked for, or needed by the mode.
    pub fn with_card_refs(&self) -> bool {
        self.card_refs
            || matches!(
                self.mode,
                Mode::CardRefWithDigits | Mode::DisputeNotIdempotent
            )
    }

    pub fn parse(json: &[u8]) -> Result<Self, String> {
        let b: Self = serde_json::from_slice(json).map_err(|e| e.to_string())?;
        b.check()?;
        Ok(b)
    }

    fn check(&self) -> Result<(), String> {
        for (name, v) in [
            ("latency_ms", self.latency_ms),
            ("callback_delay_ms", self.callback_delay_ms),
            ("timeout_ms", self.timeout_ms),
        ] {
            if v > MAX_DELAY_MS {
                return Err(format!("{name} is above {MAX_DELAY_MS}"));
            }
        }
        Ok(())
    }
}

/// The `--behaviour` file: `{"default": {...}, "banks": {"CMB": {...}}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BehaviourConfig {
    #[serde(default)]
    pub default: Behaviour,
    #[serde(default)]
    pub banks: BTreeMap<String, Behaviour>,
}

impl BehaviourConfig {
    /// Parses and checks the bank codes against the configured banks.
    pub fn parse(json: &[u8], banks: &[String]) -> Result<Self, String> {
        let c: Self = serde_json::from_slice(json).map_err(|e| e.to_string())?;
        c.default.check()?;
        for (code, b) in &c.banks {
            if !banks.contains(code) {
                return Err(format!("unknown bank {code:?} in the behaviour file"));
            }
            b.check().map_err(|e| format!("{code}: {e}"))?;
        }
        Ok(c)
    }
}

/// The behaviours in force.
#[derive(Debug, Clone)]
pub struct Behaviours {
    initial: BehaviourConfig,
    current: BehaviourConfig,
    /// id_number → bank → behaviour for that person only.
    subjects: HashMap<String, BTreeMap<String, Behaviour>>,
}

impl Behaviours {
    pub fn new(initial: BehaviourConfig) -> Self {
        Self {
            current: initial.clone(),
            initial,
            subjects: HashMap::new(),
        }
    }

    /// Person override, else the bank's setting, else the default.
    pub fn resolve(&self, id_number: &str, bank: &str) -> Behaviour {
        self.subjects
            .get(id_number)
            .and_then(|m| m.get(bank))
            .or_else(|| self.current.banks.get(bank))
            .unwrap_or(&self.current.default)
            .clone()
    }

    pub fn set_bank(&mut self, bank: &str, b: Behaviour) {
        self.current.banks.insert(bank.to_owned(), b);
    }

    pub fn set_subject(&mut self, id_number: &str, bank: &str, b: Behaviour) {
        self.subjects
            .entry(id_number.to_owned())
            .or_default()
            .insert(bank.to_owned(), b);
    }

    /// Removes a person's overrides; true when there were any.
    pub fn clear_subject(&mut self, id_number: &str) -> bool {
        self.subjects.remove(id_number).is_some()
    }

    /// Back to the start-up configuration, no person overrides.
    pub fn reset(&mut self) {
        self.current = self.initial.clone();
        self.subjects.clear();
    }

    /// The bank-level configuration in force (person overrides are not listed).
    pub fn current(&self) -> &BehaviourConfig {
        &self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn banks() -> Vec<String> {
        ["ICBC", "CMB"].map(String::from).to_vec()
    }

    #[test]
    fn parses_partial_behaviours_with_defaults() {
        let c = BehaviourConfig::parse(
            br#"{"default": {"latency_ms": 50}, "banks": {"CMB": {"mode": "callback", "callback_delay_ms": 300}}}"#,
            &banks(),
        )
        .unwrap();
        assert_eq!(c.default.mode, Mode::Immediate);
        assert_eq!(c.default.latency_ms, 50);
        assert_eq!(c.default.timeout_ms, 60_000);
        assert_eq!(c.banks["CMB"].mode, Mode::Callback);
        assert_eq!(c.banks["CMB"].callback_delay_ms, 300);
        assert_eq!(
            BehaviourConfig::parse(b"{}", &banks()).unwrap(),
            BehaviourConfig::default()
        );
        for m in [
            "immediate",
            "callback",
            "error",
            "timeout",
            "malformed",
            "bad_signature",
            "leak_card_number",
            "fail_then_answer",
            "never",
            "error_answer",
            "unsigned",
            "accept_bad_signature",
            "accept_replayed_nonce",
            "accept_stale_timestamp",
            "wrong_ids",
            "card_ref_with_digits",
            "not_idempotent",
            "dispute_not_idempotent",
            "extra_digits",
        ] {
            Behaviour::parse(format!(r#"{{"mode":"{m}"}}"#).as_bytes()).unwrap();
        }
    }

    #[test]
    fn refuses_unknown_fields_banks_and_modes() {
        assert!(BehaviourConfig::parse(br#"{"banks": {"XYZ": {}}}"#, &banks()).is_err());
        assert!(BehaviourConfig::parse(br#"{"defaults": {}}"#, &banks()).is_err());
        assert!(Behaviour::parse(br#"{"mode": "sometimes"}"#).is_err());
        assert!(Behaviour::parse(br#"{"latency": 5}"#).is_err());
        assert!(Behaviour::parse(br#"{"latency_ms": 99999999}"#).is_err());
    }

    #[test]
    fn person_overrides_win_and_stay_personal() {
        let mut b = Behaviours::new(BehaviourConfig::default());
        let err = Behaviour {
            mode: Mode::Error,
            ..Behaviour::default()
        };
        let cb = Behaviour {
            mode: Mode::Callback,
            ..Behaviour::default()
        };
        b.set_bank("CMB", cb.clone());
        b.set_subject("A", "ICBC", err.clone());
        assert_eq!(b.resolve("A", "ICBC"), err);
        assert_eq!(b.resolve("B", "ICBC"), Behaviour::default());
        assert_eq!(b.resolve("A", "CMB"), cb);
        assert!(b.clear_subject("A"));
        assert_eq!(b.resolve("A", "ICBC"), Behaviour::default());
        b.set_subject("A", "CMB", err.clone());
        b.reset();
        assert_eq!(b.resolve("A", "CMB"), Behaviour::default());
    }
}
