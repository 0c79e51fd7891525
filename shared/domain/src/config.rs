//! Service configuration as data: participating banks, pilot regions, agreement version
//! and every duration of the product rules. Loaded and checked once at start-up, so a
//! bad entry stops the function before it serves anyone.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use std::time::Duration as StdDuration;

use chrono::TimeDelta;

use crate::bank::endpoint::BankEndpoint;
use crate::model::bank::{Bank, BankCode, BankRegistry};
use crate::model::region::RegionCode;

/// The configuration shipped with the code (`shared/config/service.json`).
pub const DEFAULT_CONFIG: &str = include_str!("../../config/service.json");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read service configuration {path}: {message}")]
    Read { path: String, message: String },
    #[error("service configuration is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("service configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    agreement_version: String,
    rules: RawRules,
    regions: Vec<RawRegion>,
    banks: Vec<RawBank>,
    bank_limits: RawBankLimits,
    circuit_breaker: RawCircuitBreaker,
    sms_channel: RawSmsChannel,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLaneLimits {
    rate_per_second: u32,
    max_in_flight: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBankLimits {
    default: RawLaneLimits,
    #[serde(default)]
    overrides: BTreeMap<String, RawLaneLimits>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCircuitBreaker {
    failures_to_open: u32,
    #[serde(with = "humantime_serde")]
    cool_off: StdDuration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSmsChannel {
    rate_per_second: u32,
}

/// Durations are written as text ("7d", "24h", "5m", "30s") so the file reads as the
/// product brief does; they become `chrono::TimeDelta` in [`ServiceConfig::parse`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRules {
    #[serde(with = "humantime_serde")]
    sms_code_validity: StdDuration,
    sms_code_max_attempts: u32,
    #[serde(with = "humantime_serde")]
    sms_min_interval: StdDuration,
    sms_daily_limit: u32,
    #[serde(with = "humantime_serde")]
    face_token_max_age: StdDuration,
    password_max_failures: u32,
    #[serde(with = "humantime_serde")]
    password_lock: StdDuration,
    #[serde(with = "humantime_serde")]
    cooldown: StdDuration,
    #[serde(with = "humantime_serde")]
    report_deadline: StdDuration,
    #[serde(with = "humantime_serde")]
    collection_margin: StdDuration,
    #[serde(with = "humantime_serde")]
    report_retention: StdDuration,
    #[serde(with = "humantime_serde")]
    idempotency_retention: StdDuration,
    #[serde(with = "humantime_serde")]
    idempotency_lease: StdDuration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegion {
    code: String,
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBank {
    code: String,
    name: String,
    name_en: String,
    service_phone: String,
    endpoint: String,
}

/// Durations and limits of the product rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub sms_code_validity: TimeDelta,
    pub sms_code_max_attempts: u32,
    pub sms_min_interval: TimeDelta,
    pub sms_daily_limit: u32,
    pub face_token_max_age: TimeDelta,
    pub password_max_failures: u32,
    pub password_lock: TimeDelta,
    pub cooldown: TimeDelta,
    pub report_deadline: TimeDelta,
    /// Banks are waited for until this long before the report deadline, so the report
    /// (built by the next sweep at the latest) is out by the deadline itself.
    pub collection_margin: TimeDelta,
    pub report_retention: TimeDelta,
    pub idempotency_retention: TimeDelta,
    /// How long an in-progress idempotency claim is honoured before a retry may take it
    /// over (the first request is then taken to have crashed).
    pub idempotency_lease: TimeDelta,
}

/// What a bank agreed to take from us: inquiries started per second (in any sliding
/// 1-second window) and inquiries being served at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaneLimits {
    pub rate_per_second: u32,
    pub max_in_flight: u32,
}

/// Per-bank limits: one default, and overrides for banks with a different agreement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BankLimits {
    pub default: LaneLimits,
    pub overrides: BTreeMap<BankCode, LaneLimits>,
}

impl BankLimits {
    pub fn of(&self, bank: &BankCode) -> LaneLimits {
        self.overrides.get(bank).copied().unwrap_or(self.default)
    }
}

/// When a bank's circuit opens and for how long (`rules::admission`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitBreaker {
    pub failures_to_open: u32,
    pub cool_off: TimeDelta,
}

/// The SMS channel's account-wide send rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmsChannel {
    pub rate_per_second: u32,
}

#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub agreement_version: String,
    pub rules: Rules,
    /// Pilot regions by GB/T 2260 province code.
    pub regions: BTreeMap<RegionCode, String>,
    pub banks: BankRegistry,
    pub bank_limits: BankLimits,
    pub circuit_breaker: CircuitBreaker,
    pub sms_channel: SmsChannel,
}

impl ServiceConfig {
    /// From `SERVICE_CONFIG` (a file path) when set, else the shipped default.
    pub fn from_env() -> Result<Self, ConfigError> {
        match std::env::var("SERVICE_CONFIG") {
            Ok(path) if !path.is_empty() => Self::from_file(Path::new(&path)),
            _ => Self::parse(DEFAULT_CONFIG),
        }
    }

    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = serde_json::from_str(text)?;
        let invalid = |m: String| ConfigError::Invalid(m);
        if raw.agreement_version.trim().is_empty() {
            return Err(invalid("agreement_version is empty".into()));
        }
        let r = raw.rules;
        let span_in = |name: &str, v: StdDuration| match TimeDelta::from_std(v) {
            Ok(d) if d > TimeDelta::zero() => Ok(d),
            Ok(_) => Err(invalid(format!("{name} must be positive"))),
            Err(_) => Err(invalid(format!("{name} is too long"))),
        };
        let count_in = |name: &str, v: u32| {
            if v == 0 {
                Err(invalid(format!("{name} must be positive")))
            } else {
                Ok(v)
            }
        };
        let span = |name: &str, v: StdDuration| span_in(&format!("rules.{name}"), v);
        let count = |name: &str, v: u32| count_in(&format!("rules.{name}"), v);
        let rules = Rules {
            sms_code_validity: span("sms_code_validity", r.sms_code_validity)?,
            sms_code_max_attempts: count("sms_code_max_attempts", r.sms_code_max_attempts)?,
            sms_min_interval: span("sms_min_interval", r.sms_min_interval)?,
            sms_daily_limit: count("sms_daily_limit", r.sms_daily_limit)?,
            face_token_max_age: span("face_token_max_age", r.face_token_max_age)?,
            password_max_failures: count("password_max_failures", r.password_max_failures)?,
            password_lock: span("password_lock", r.password_lock)?,
            cooldown: span("cooldown", r.cooldown)?,
            report_deadline: span("report_deadline", r.report_deadline)?,
            collection_margin: span("collection_margin", r.collection_margin)?,
            report_retention: span("report_retention", r.report_retention)?,
            idempotency_retention: span("idempotency_retention", r.idempotency_retention)?,
            idempotency_lease: span("idempotency_lease", r.idempotency_lease)?,
        };

        let mut regions = BTreeMap::new();
        for region in raw.regions {
            let code = RegionCode::parse(&region.code)
                .map_err(|e| invalid(format!("region {:?}: {e}", region.code)))?;
            if regions.insert(code, region.name).is_some() {
                return Err(invalid(format!("region {} is listed twice", region.code)));
            }
        }
        if regions.is_empty() {
            return Err(invalid("no pilot regions".into()));
        }

        let mut banks = Vec::new();
        for b in raw.banks {
            let code = BankCode::new_unchecked_format(&b.code)
                .map_err(|e| invalid(format!("bank {:?}: {e}", b.code)))?;
            if b.name.trim().is_empty() || b.service_phone.trim().is_empty() {
                return Err(invalid(format!(
                    "bank {}: name and service_phone are required",
                    b.code
                )));
            }
            let endpoint = BankEndpoint::parse(&b.endpoint)
                .map_err(|e| invalid(format!("bank {}: endpoint {e}", b.code)))?;
            banks.push(Bank {
                code,
                name: b.name,
                name_en: b.name_en,
                service_phone: b.service_phone,
                endpoint,
            });
        }
        if rules.collection_margin >= rules.report_deadline {
            return Err(invalid(
                "rules.collection_margin must be shorter than the report deadline".into(),
            ));
        }
        let banks = BankRegistry::new(banks).map_err(invalid)?;
        let lane = |name: &str, l: RawLaneLimits| {
            if l.rate_per_second == 0 || l.max_in_flight == 0 {
                Err(invalid(format!("{name}: limits must be positive")))
            } else {
                Ok(LaneLimits {
                    rate_per_second: l.rate_per_second,
                    max_in_flight: l.max_in_flight,
                })
            }
        };
        let mut overrides = BTreeMap::new();
        for (code, limits) in raw.bank_limits.overrides {
            // A typo here would silently leave a small bank at the default capacity.
            let bank = banks.parse(&code).ok_or_else(|| {
                invalid(format!(
                    "bank_limits.overrides names an unknown bank {code}"
                ))
            })?;
            overrides.insert(
                bank,
                lane(&format!("bank_limits.overrides.{code}"), limits)?,
            );
        }
        let bank_limits = BankLimits {
            default: lane("bank_limits.default", raw.bank_limits.default)?,
            overrides,
        };
        let cb = raw.circuit_breaker;
        let circuit_breaker = CircuitBreaker {
            failures_to_open: count_in("circuit_breaker.failures_to_open", cb.failures_to_open)?,
            cool_off: span_in("circuit_breaker.cool_off", cb.cool_off)?,
        };
        let sms_channel = SmsChannel {
            rate_per_second: count_in(
                "sms_channel.rate_per_second",
                raw.sms_channel.rate_per_second,
            )?,
        };
        Ok(Self {
            agreement_version: raw.agreement_version,
            rules,
            regions,
            banks,
            bank_limits,
            circuit_breaker,
            sms_channel,
        })
    }

    /// For a function starting up: refuses a configuration whose banks cannot be asked.
    /// The shipped configuration has every bank at a placeholder under `.invalid`; a
    /// deployment left on it would accept queries, ask nobody, and tell each user by SMS
    /// that a report of silent banks is ready.
    pub fn require_real_banks(&self) -> Result<(), ConfigError> {
        let placeholders: Vec<String> = self
            .banks
            .all()
            .iter()
            .filter(|b| b.endpoint.is_placeholder())
            .map(|b| b.code.to_string())
            .collect();
        if placeholders.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(format!(
                "banks {} have placeholder endpoints (.invalid): configure the real ones \
                 (SERVICE_CONFIG)",
                placeholders.join(", ")
            )))
        }
    }

    pub fn in_pilot(&self, region: &RegionCode) -> bool {
        self.regions.contains_key(region)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_configuration_has_the_pilot_scope() {
        let c = ServiceConfig::parse(DEFAULT_CONFIG).unwrap();
        assert_eq!(c.banks.len(), 16);
        assert_eq!(c.regions.len(), 16);
        assert_eq!(c.rules.cooldown, TimeDelta::days(7));
        assert_eq!(c.rules.report_deadline, TimeDelta::hours(24));
        assert_eq!(c.rules.sms_code_validity, TimeDelta::minutes(5));
        assert_eq!(c.rules.collection_margin, TimeDelta::minutes(10));
        assert_eq!(c.rules.sms_min_interval, TimeDelta::minutes(1));
        assert_eq!(c.rules.idempotency_lease, TimeDelta::seconds(30));
        assert!(c.in_pilot(&RegionCode::parse("31").unwrap()));
        assert!(!c.in_pilot(&RegionCode::parse("44").unwrap()));
    }

    #[test]
    fn bank_limits_default_with_overrides_and_the_breaker_and_sms_rate() {
        let c = ServiceConfig::parse(DEFAULT_CONFIG).unwrap();
        let code = |b: &str| c.banks.parse(b).unwrap();
        let big = LaneLimits {
            rate_per_second: 50,
            max_in_flight: 20,
        };
        let small = LaneLimits {
            rate_per_second: 5,
            max_in_flight: 3,
        };
        assert_eq!(c.bank_limits.of(&code("ICBC")), big);
        assert_eq!(c.bank_limits.of(&code("HXB")), small);
        assert_eq!(c.bank_limits.of(&code("CZB")), small);
        assert_eq!(c.circuit_breaker.failures_to_open, 5);
        assert_eq!(c.circuit_breaker.cool_off, TimeDelta::seconds(30));
        assert_eq!(c.sms_channel.rate_per_second, 20);
    }

    #[test]
    fn bad_limits_are_start_up_errors() {
        let e =
            with(|v| v["bank_limits"]["overrides"]["NOSUCH"] = v["bank_limits"]["default"].clone())
                .unwrap_err()
                .to_string();
        assert!(e.contains("unknown bank NOSUCH"), "{e}");
        let e = with(|v| v["bank_limits"]["overrides"]["HXB"]["max_in_flight"] = 0.into())
            .unwrap_err()
            .to_string();
        assert!(e.contains("bank_limits.overrides.HXB"), "{e}");
        assert!(with(|v| v["bank_limits"]["default"]["rate_per_second"] = 0.into()).is_err());
        assert!(with(|v| v["bank_limits"]["default"]["burst"] = 1.into()).is_err());
        assert!(with(|v| v["circuit_breaker"]["cool_off"] = "30".into()).is_err());
        assert!(with(|v| v["circuit_breaker"]["cool_off"] = "0s".into()).is_err());
        assert!(with(|v| v["circuit_breaker"]["failures_to_open"] = 0.into()).is_err());
        assert!(with(|v| v["sms_channel"]["rate_per_second"] = 0.into()).is_err());
        assert!(with(|v| {
            v.as_object_mut().unwrap().remove("sms_channel");
        })
        .is_err());
    }

    fn with(edit: impl FnOnce(&mut serde_json::Value)) -> Result<ServiceConfig, ConfigError> {
        let mut v: serde_json::Value = serde_json::from_str(DEFAULT_CONFIG).unwrap();
        edit(&mut v);
        ServiceConfig::parse(&v.to_string())
    }

    #[test]
    fn duplicate_or_malformed_entries_are_start_up_errors() {
        let dup_bank = with(|v| {
            let first = v["banks"][0].clone();
            v["banks"].as_array_mut().unwrap().push(first);
        });
        assert!(dup_bank.unwrap_err().to_string().contains("ICBC"));
        let dup_region = with(|v| {
            let first = v["regions"][0].clone();
            v["regions"].as_array_mut().unwrap().push(first);
        });
        assert!(dup_region.unwrap_err().to_string().contains("twice"));
        assert!(with(|v| v["regions"][0]["code"] = "3a".into()).is_err());
        assert!(with(|v| v["banks"][0]["code"] = "icbc".into()).is_err());
        assert!(with(|v| v["rules"]["cooldown"] = "0s".into()).is_err());
        assert!(with(|v| v["rules"]["collection_margin"] = "24h".into()).is_err());
        // Durations are text with a unit: a bare number is refused, not read as seconds.
        assert!(with(|v| v["rules"]["cooldown"] = 604800.into()).is_err());
        assert!(with(|v| v["rules"]["cooldown"] = "7".into()).is_err());
        assert!(with(|v| v["rules"]["surprise"] = 1.into()).is_err());
        assert!(with(|v| v["banks"][0]["endpoint"] = "ftp://x".into()).is_err());
    }

    #[test]
    fn bank_endpoints_are_https_or_loopback_and_placeholders_stop_a_function() {
        // (endpoint of ICBC, parses, a function may start with it)
        let cases = [
            ("https://icbc.example/card-lookup", true, true),
            ("http://127.0.0.1:9100/banks/ICBC", true, true),
            ("http://[::1]:9100/banks/ICBC", true, true),
            ("http://localhost:9100/banks/ICBC", true, true),
            ("http://icbc.example/card-lookup", false, false),
            ("http://192.168.1.10/card-lookup", false, false),
            ("https://icbc.banks.invalid/card-lookup", true, false),
            ("https://user:secret@icbc.example", false, false),
        ];
        let all_real = |endpoint: &str| {
            with(|v| {
                for (i, bank) in v["banks"].as_array_mut().unwrap().iter_mut().enumerate() {
                    bank["endpoint"] = format!("https://bank{i}.example/card-lookup").into();
                }
                v["banks"][0]["endpoint"] = endpoint.into();
            })
        };
        for (endpoint, parses, starts) in cases {
            let parsed = all_real(endpoint);
            assert_eq!(parsed.is_ok(), parses, "{endpoint}");
            if let Ok(config) = parsed {
                assert_eq!(config.require_real_banks().is_ok(), starts, "{endpoint}");
            }
        }
        // The shipped configuration parses (tests run on it) but starts no function.
        let shipped = ServiceConfig::parse(DEFAULT_CONFIG).unwrap();
        let e = shipped.require_real_banks().unwrap_err().to_string();
        assert!(e.contains("ICBC") && e.contains(".invalid"), "{e}");
        // The message names the bank, never echoes credentials.
        let e = all_real("https://user:secret@icbc.example")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ICBC") && !e.contains("secret"), "{e}");
    }
}
