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
            .map_err(|e| format!("bank secrets are not a JSON object of strings: {e}"))?;
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
