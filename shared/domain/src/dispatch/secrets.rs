//! Per-bank HMAC secrets, read once at start-up.

use std::collections::HashMap;

use crate::bank::signing::BankSecret;
use crate::model::bank::{BankCode, BankRegistry};

/// Secrets of the configured banks. No `Debug`.
#[derive(Clone)]
pub struct BankSecrets(HashMap<BankCode, BankSecret>);

impl BankSecrets {
    /// From a JSON object `{"ICBC": "<hex>", ...}` (`BANK_SECRETS`, from Secrets Manager): every configured bank needs one;
    /// an entry for an unknown bank is an error (a typo would silently lock a bank out).
    pub fn parse(json: &str, banks: &BankRegistry) -> Result<Self, String> {
        let raw: HashMap<String, String> = serde_json::from_str(json)
            // serde_json's message may quote the offending value: give its place only.
            .map_err(|e| {
                format!(
                    "bank secrets are not a JSON object of strings (line {}, column {})",
                    e.line(),
                    e.column()
                )
            })?;
        let mut out = HashMap::new();
        for (code, hex_secret) in raw {
            let bank = banks
                .parse(&code)
                .ok_or_else(|| format!("bank secrets name an unknown bank {code}"))?;
            let bytes = hex::decode(hex_secret.trim())
                .map_err(|_| format!("the secret of {code} is not hex"))?;
            out.insert(
                bank,
                BankSecret::new(bytes).map_err(|e| format!("{code}: {e}"))?,
            );
        }
        if let Some(missing) = banks.all().iter().find(|b| !out.contains_key(&b.code)) {
            return Err(format!("no secret for bank {}", missing.code));
        }
        Ok(Self(out))
    }

    pub fn get(&self, bank: &BankCode) -> Option<&BankSecret> {
        self.0.get(bank)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ServiceConfig, DEFAULT_CONFIG};

    #[test]
    fn every_bank_needs_a_secret_and_a_refusal_never_quotes_one() {
        let banks = ServiceConfig::parse(DEFAULT_CONFIG).unwrap().banks;
        let secret = "ab".repeat(32);
        let all: HashMap<String, String> = banks
            .all()
            .iter()
            .map(|b| (b.code.to_string(), secret.clone()))
            .collect();
        let json = serde_json::to_string(&all).unwrap();
        let parsed = BankSecrets::parse(&json, &banks).unwrap();
        assert!(parsed.get(&banks.all()[0].code).is_some());

        let mut missing = all.clone();
        missing.remove("ICBC");
        let e = BankSecrets::parse(&serde_json::to_string(&missing).unwrap(), &banks);
        assert_eq!(e.err().unwrap(), "no secret for bank ICBC");

        let mut wrong_type = serde_json::to_value(&all).unwrap();
        wrong_type["ICBC"] = 987_654_321_987u64.into();
        let e = BankSecrets::parse(&wrong_type.to_string(), &banks)
            .err()
            .unwrap();
        assert!(e.starts_with("bank secrets are not a JSON object"), "{e}");
        assert!(!e.contains("987654321987"), "{e}");
    }
}
