//! What went over the wire with one person, kept when their behaviour asks for it
//! (`record_traffic`), so tests can check the simulator's real messages (and the ones it
//! received) against the bank protocol's OpenAPI document.

use std::collections::{BTreeMap, HashMap, VecDeque};

use axum::http::HeaderMap;
use serde::Serialize;

/// Exchanges kept per person; older ones are dropped first. A test needs a few dozen;
/// the cap keeps a forgotten flag from growing without bound.
pub const MAX_EXCHANGES_PER_PERSON: usize = 500;

/// One request and its response.
#[derive(Debug, Clone, Serialize)]
pub struct Exchange {
    /// `inquiry` or `dispute` (received by the bank) or `callback` (sent by the bank).
    pub kind: &'static str,
    pub bank_code: String,
    pub method: String,
    /// The path as sent: `/banks/{code}/card-inquiries`, or the callback URL's path.
    pub path: String,
    /// Lower-case names; the signature headers and `content-type`.
    pub request_headers: BTreeMap<String, String>,
    /// The raw body as text (invalid UTF-8 replaced).
    pub request_body: String,
    /// `None`: the request got no HTTP response (connection error, timeout).
    pub status: Option<u16>,
    pub response_headers: BTreeMap<String, String>,
    pub response_body: String,
    /// RFC 3339, when the request was received or sent.
    pub at: String,
}

/// The headers worth keeping: the protocol's, not the transport's.
pub fn protocol_headers<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> BTreeMap<String, String> {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .filter(|(k, _)| k.starts_with("x-") || k == "content-type" || k == "location")
        .map(|(k, v)| (k, v.to_owned()))
        .collect()
}

pub fn header_pairs(headers: &HeaderMap) -> Vec<(&str, &str)> {
    headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)))
        .collect()
}

#[derive(Default)]
pub struct Traffic {
    by_person: HashMap<String, VecDeque<Exchange>>,
}

impl Traffic {
    pub fn push(&mut self, id_number: &str, e: Exchange) {
        let q = self.by_person.entry(id_number.to_owned()).or_default();
        if q.len() == MAX_EXCHANGES_PER_PERSON {
            q.pop_front();
        }
        q.push_back(e);
    }

    pub fn of(&self, id_number: &str) -> Vec<Exchange> {
        self.by_person
            .get(id_number)
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn clear(&mut self) {
        self.by_person.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_protocol_headers_and_caps_per_person() {
        let h = protocol_headers([
            ("X-Signature", "ab"),
            ("Content-Type", "application/json"),
            ("host", "127.0.0.1"),
        ]);
        assert_eq!(
            h.keys().collect::<Vec<_>>(),
            ["content-type", "x-signature"]
        );
        let mut t = Traffic::default();
        for i in 0..MAX_EXCHANGES_PER_PERSON + 3 {
            t.push(
                "A",
                Exchange {
                    kind: "inquiry",
                    bank_code: "ICBC".into(),
                    method: "POST".into(),
                    path: format!("/{i}"),
                    request_headers: BTreeMap::new(),
                    request_body: String::new(),
                    status: Some(200),
                    response_headers: BTreeMap::new(),
                    response_body: String::new(),
                    at: String::new(),
                },
            );
        }
        let kept = t.of("A");
        assert_eq!(kept.len(), MAX_EXCHANGES_PER_PERSON);
        assert_eq!(kept[0].path, "/3", "the oldest go first");
        assert!(t.of("B").is_empty());
    }
}
