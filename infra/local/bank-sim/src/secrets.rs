//! Bank secrets: a JSON file `{"ICBC": "<hex>", ...}`; each value is the hex of the
//! secret's bytes (at least 32). Errors never echo a value.

use std::collections::HashMap;
use std::path::Path;

use shared::bank::signing::BankSecret;

/// One secret per bank in `banks` (extra entries are ignored).
pub fn parse_secrets(json: &str, banks: &[String]) -> Result<HashMap<String, BankSecret>, String> {
    let raw: HashMap<String, String> = serde_json::from_str(json).map_err(|e| {
        format!(
            "bank secrets: not a JSON object of strings (line {}, column {})",
            e.line(),
            e.column()
        )
    })?;
    let mut out = HashMap::new();
    for bank in banks {
        let value = raw
            .get(bank)
            .ok_or_else(|| format!("bank secrets: no secret for {bank}"))?;
        let bytes = hex::decode(value.trim())
            .map_err(|_| format!("bank secrets: the secret of {bank} is not hex"))?;
        let secret = BankSecret::new(bytes).map_err(|e| format!("bank secrets: {bank}: {e}"))?;
        out.insert(bank.clone(), secret);
    }
    Ok(out)
}

pub fn load_secrets(path: &Path, banks: &[String]) -> Result<HashMap<String, BankSecret>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_secrets(&text, banks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_every_bank_and_long_hex_secrets() {
        let banks = vec!["ICBC".to_owned(), "CMB".to_owned()];
        let k = "ab".repeat(32);
        let ok = format!(r#"{{"ICBC":"{k}","CMB":"{k}","XYZ":"00"}}"#);
        assert_eq!(parse_secrets(&ok, &banks).unwrap().len(), 2);
        let missing = format!(r#"{{"ICBC":"{k}"}}"#);
        assert!(parse_secrets(&missing, &banks)
            .err()
            .unwrap()
            .contains("CMB"));
        let short = format!(r#"{{"ICBC":"{k}","CMB":"abcd"}}"#);
        assert!(parse_secrets(&short, &banks).is_err());
        let not_hex = format!(r#"{{"ICBC":"{k}","CMB":"zz{}"}}"#, &k[2..]);
        let err = parse_secrets(&not_hex, &banks).err().unwrap();
        assert!(!err.contains("zz"), "errors do not echo secrets: {err}");
    }
}
