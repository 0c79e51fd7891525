//! A bank's inquiry endpoint as configured: parsed once, so nothing downstream can hold
//! an endpoint that would send a person's name and ID number in clear or to nowhere.
//!
//! - `https://` only; `http://` only to loopback (127.0.0.0/8, `::1`, `localhost`), which
//!   the local stack's bank simulator uses;
//! - a host, and no user info, query or fragment (credentials in a URL end up in logs;
//!   the path is ours to append to);
//! - a host under `.invalid` (RFC 2606: never resolves, the shipped placeholder) parses,
//!   so the placeholder configuration stays usable in process, but
//!   [`BankEndpoint::is_placeholder`] tells the start-up check to refuse it.

use std::fmt;
use std::net::IpAddr;

use url::Url;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("not a URL")]
    NotAUrl,
    #[error("must be https:// (http:// only to a loopback address)")]
    Insecure,
    #[error("must have a host, and no user info, query or fragment")]
    Shape,
}

/// Base URL of a bank's inquiry API, without a trailing slash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BankEndpoint(Url);

/// The host as an IP address, if it is one (IPv6 hosts come bracketed).
fn ip_host(url: &Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .parse()
        .ok()
}

fn loopback(url: &Url) -> bool {
    match ip_host(url) {
        Some(ip) => ip.is_loopback(),
        None => url
            .host_str()
            .is_some_and(|d| d.eq_ignore_ascii_case("localhost")),
    }
}

impl BankEndpoint {
    pub fn parse(text: &str) -> Result<Self, EndpointError> {
        let url = Url::parse(text.trim_end_matches('/')).map_err(|_| EndpointError::NotAUrl)?;
        match url.scheme() {
            "https" => {}
            "http" if loopback(&url) => {}
            _ => return Err(EndpointError::Insecure),
        }
        if url.host().is_none()
            || !url.username().is_empty()
            || url.password().is_some()
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err(EndpointError::Shape);
        }
        Ok(Self(url))
    }

    /// A host under the reserved `.invalid` domain: a placeholder, never a bank.
    pub fn is_placeholder(&self) -> bool {
        if ip_host(&self.0).is_some() {
            return false;
        }
        self.0.host_str().is_some_and(|d| {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d == "invalid" || d.ends_with(".invalid")
        })
    }

    /// `{endpoint}/card-inquiries`.
    pub fn inquiries(&self) -> Url {
        let mut url = self.0.clone();
        let path = format!("{}/card-inquiries", url.path().trim_end_matches('/'));
        url.set_path(&path);
        url
    }

    /// `{endpoint}/card-disputes`.
    pub fn disputes(&self) -> Url {
        let mut url = self.0.clone();
        let path = format!("{}/card-disputes", url.path().trim_end_matches('/'));
        url.set_path(&path);
        url
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str().trim_end_matches('/')
    }
}

impl fmt::Display for BankEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_anywhere_http_only_to_loopback() {
        // (endpoint, parses, placeholder)
        let cases: [(&str, Result<bool, EndpointError>); 22] = [
            ("https://icbc.example/unionpay/card-lookup", Ok(false)),
            ("https://icbc.example/unionpay/card-lookup/", Ok(false)),
            ("https://10.0.0.8:8443", Ok(false)),
            ("http://127.0.0.1:9100/banks/ICBC", Ok(false)),
            ("http://127.8.9.10/banks/ICBC", Ok(false)),
            ("http://[::1]:9100/banks/ICBC", Ok(false)),
            ("http://localhost:9100", Ok(false)),
            ("http://LOCALHOST:9100", Ok(false)),
            ("https://icbc.banks.invalid/unionpay/card-lookup", Ok(true)),
            ("https://ICBC.BANKS.INVALID.", Ok(true)),
            ("https://invalid", Ok(true)),
            (
                "http://icbc.example/card-lookup",
                Err(EndpointError::Insecure),
            ),
            ("http://10.0.0.8", Err(EndpointError::Insecure)),
            ("http://128.0.0.1", Err(EndpointError::Insecure)),
            ("http://localhost.example", Err(EndpointError::Insecure)),
            ("http://icbc.banks.invalid", Err(EndpointError::Insecure)),
            ("ftp://icbc.example", Err(EndpointError::Insecure)),
            ("file:///etc/passwd", Err(EndpointError::Insecure)),
            ("https://user:pw@icbc.example", Err(EndpointError::Shape)),
            ("https://icbc.example/x?token=1", Err(EndpointError::Shape)),
            ("https://icbc.example/x#f", Err(EndpointError::Shape)),
            ("icbc.example/card-lookup", Err(EndpointError::NotAUrl)),
        ];
        for (text, expected) in cases {
            let got = BankEndpoint::parse(text).map(|e| e.is_placeholder());
            assert_eq!(got, expected, "{text}");
        }
    }

    #[test]
    fn the_inquiry_url_appends_to_the_base_path() {
        for (base, url) in [
            (
                "https://icbc.example/unionpay/card-lookup/",
                "https://icbc.example/unionpay/card-lookup/card-inquiries",
            ),
            (
                "https://icbc.example",
                "https://icbc.example/card-inquiries",
            ),
            (
                "http://127.0.0.1:9100/banks/ICBC",
                "http://127.0.0.1:9100/banks/ICBC/card-inquiries",
            ),
        ] {
            let e = BankEndpoint::parse(base).unwrap();
            assert_eq!(e.inquiries().as_str(), url);
            assert!(!e.as_str().ends_with('/'), "{e}");
        }
    }
}
