//! Signed requests to the bank's endpoint and the signature check of its replies, with
//! the protocol's own signing code.

use std::time::Duration;

use chrono::{DateTime, Utc};
use domain::bank::signing::{self, BankSecret, SignatureHeaders};
use reqwest::Url;

/// Replies larger than this are not read (an answer is a few KiB).
const MAX_REPLY_BYTES: usize = 256 * 1024;

/// One reply as received.
pub struct Reply {
    pub status: u16,
    /// The four signature headers, when all are present.
    pub signature: Option<SignatureHeaders>,
    pub body: Vec<u8>,
}

pub struct BankClient {
    http: reqwest::Client,
    endpoint: Url,
    bank: String,
    secret: BankSecret,
}

fn header_value(h: &reqwest::header::HeaderMap, name: &str) -> Option<String> {
    h.get(name)?.to_str().ok().map(str::to_owned)
}

fn signature_of(h: &reqwest::header::HeaderMap) -> Option<SignatureHeaders> {
    SignatureHeaders::read(|name| header_value(h, name))
}

/// Checks a message signed by the bank: its code, the window and the signature over
/// (POST, `path`, body). The reason names the check, never a value.
pub fn verify_signed(
    secret: &BankSecret,
    bank: &str,
    signature: Option<&SignatureHeaders>,
    path: &str,
    body: &[u8],
) -> Result<(), String> {
    let Some(h) = signature else {
        return Err("signature headers missing".into());
    };
    if h.bank_code != bank {
        return Err("X-Bank-Code is not the bank's code".into());
    }
    signing::verify(secret, h, Utc::now(), "POST", path, body).map_err(|e| e.to_string())
}

impl BankClient {
    pub fn new(
        endpoint: Url,
        bank: &str,
        secret: BankSecret,
        timeout: Duration,
    ) -> Result<Self, String> {
        if !matches!(endpoint.scheme(), "http" | "https") || !endpoint.has_host() {
            return Err("the endpoint must be an absolute http(s) URL".into());
        }
        let http = reqwest::Client::builder()
            // We never follow redirects, so neither does the checker: a 3xx is an error.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Self {
            http,
            endpoint,
            bank: bank.to_owned(),
            secret,
        })
    }

    pub fn bank(&self) -> &str {
        &self.bank
    }

    pub fn secret(&self) -> &BankSecret {
        &self.secret
    }

    /// `{endpoint path}/{route}`, as signed.
    pub fn path_of(&self, route: &str) -> String {
        format!("{}/{route}", self.endpoint.path().trim_end_matches('/'))
    }

    fn url_of(&self, route: &str) -> Url {
        let mut u = self.endpoint.clone();
        u.set_path(&self.path_of(route));
        u
    }

    /// Headers signing `body` for `route` as if sent at `at`.
    pub fn sign(&self, route: &str, body: &[u8], at: DateTime<Utc>) -> SignatureHeaders {
        signing::sign(
            &self.secret,
            &self.bank,
            at,
            "POST",
            &self.path_of(route),
            body,
        )
    }

    /// POSTs `body` to `route` with exactly these headers (none: unsigned).
    pub async fn post(
        &self,
        route: &str,
        body: &[u8],
        headers: Option<&SignatureHeaders>,
    ) -> Result<Reply, String> {
        let mut req = self
            .http
            .post(self.url_of(route))
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(h) = headers {
            for (k, v) in h.pairs() {
                req = req.header(k, v);
            }
        }
        let mut resp = req.send().await.map_err(|e| {
            if e.is_timeout() {
                "no reply within the request timeout".to_owned()
            } else if e.is_connect() {
                "cannot connect to the endpoint".to_owned()
            } else {
                "the request failed".to_owned()
            }
        })?;
        let status = resp.status().as_u16();
        let signature = signature_of(resp.headers());
        let mut out = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|_| "the reply broke off".to_owned())?
        {
            if out.len() + chunk.len() > MAX_REPLY_BYTES {
                return Err("the reply is larger than 256 KiB".into());
            }
            out.extend_from_slice(&chunk);
        }
        Ok(Reply {
            status,
            signature,
            body: out,
        })
    }

    /// A correctly signed POST, sent now.
    pub async fn post_signed(&self, route: &str, body: &[u8]) -> Result<Reply, String> {
        let h = self.sign(route, body, Utc::now());
        self.post(route, body, Some(&h)).await
    }

    /// Checks a reply's signature over the request's path and the reply body.
    pub fn verify_reply(&self, route: &str, reply: &Reply) -> Result<(), String> {
        verify_signed(
            &self.secret,
            &self.bank,
            reply.signature.as_ref(),
            &self.path_of(route),
            &reply.body,
        )
    }
}
