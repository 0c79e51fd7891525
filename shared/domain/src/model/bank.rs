//! Participating banks. A [`BankCode`] handed out by the [`BankRegistry`] is one of the
//! configured banks.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct BankCode(String);

impl BankCode {
    /// Format check only (2–6 upper-case ASCII letters): for the configuration loader,
    /// which builds the registry itself. Requests go through [`BankRegistry::parse`].
    pub(crate) fn new_unchecked_format(code: &str) -> Result<Self, String> {
        if (2..=6).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(Self(code.to_owned()))
        } else {
            Err("a bank code is 2 to 6 upper-case letters".into())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Stored records hold codes this service wrote after checking them against the
/// registry; reading them back checks the format only.
impl<'de> Deserialize<'de> for BankCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new_unchecked_format(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for BankCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bank {
    pub code: BankCode,
    /// Chinese name, as shown to users.
    pub name: String,
    pub name_en: String,
    pub service_phone: String,
    /// Base URL of the bank's inquiry API.
    pub endpoint: crate::bank::endpoint::BankEndpoint,
}

/// The configured banks, in configuration order.
#[derive(Debug, Clone)]
pub struct BankRegistry {
    banks: Vec<Bank>,
    index: BTreeMap<String, usize>,
}

impl BankRegistry {
    pub fn new(banks: Vec<Bank>) -> Result<Self, String> {
        let mut index = BTreeMap::new();
        for (i, b) in banks.iter().enumerate() {
            if index.insert(b.code.0.clone(), i).is_some() {
                return Err(format!("bank {} is listed twice", b.code));
            }
        }
        if banks.is_empty() {
            return Err("no participating banks".into());
        }
        Ok(Self { banks, index })
    }

    /// The configured bank with this code, if any.
    pub fn parse(&self, code: &str) -> Option<BankCode> {
        self.index.get(code).map(|&i| self.banks[i].code.clone())
    }

    pub fn get(&self, code: &BankCode) -> Option<&Bank> {
        self.index.get(code.as_str()).map(|&i| &self.banks[i])
    }

    /// The bank's Chinese name; the code itself for a bank no longer configured.
    pub fn name<'a>(&'a self, code: &'a BankCode) -> &'a str {
        self.get(code).map_or(code.as_str(), |b| b.name.as_str())
    }

    pub fn all(&self) -> &[Bank] {
        &self.banks
    }

    pub fn len(&self) -> usize {
        self.banks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.banks.is_empty()
    }
}
