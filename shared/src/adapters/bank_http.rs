//! The banks' inquiry APIs over HTTP: the reqwest implementation of the domain's
//! `BankClient` port.

use std::time::Duration;

use async_trait::async_trait;

use crate::bank::signing::SignatureHeaders;
use crate::dispatch::client::{BankClient, BankReply, TransportError};

/// Bank replies larger than this are not read (an answer is a few KiB).
const MAX_REPLY_BYTES: usize = 256 * 1024;

/// Built on the first bank call, not at start: the TLS verifier reads the system's
/// trust store (here ~290 certificate files, about 7 ms, half of bank-inquiry's cold
/// start — `make bench-coldstart`), which an instance that sends nothing never needs.
/// The AWS SDK's clients load theirs at their first connection in the same way.
pub struct HttpBankClient {
    http: tokio::sync::OnceCell<reqwest::Client>,
    /// Logs one line per call for the cost benchmark (`adapters::metering`).
    metered: bool,
}

impl HttpBankClient {
    pub fn new() -> Self {
        Self {
            http: tokio::sync::OnceCell::new(),
            metered: crate::adapters::metering::enabled(),
        }
    }

    async fn http(&self) -> Result<&reqwest::Client, TransportError> {
        self.http
            .get_or_try_init(|| async {
                reqwest::Client::builder()
                    // An inquiry carries the subject's name, ID number and our signature
                    // headers: a redirect would re-send them to wherever `Location`
                    // points. None is followed; fan-out treats a 3xx as the bank's error.
                    .redirect(reqwest::redirect::Policy::none())
                    .connect_timeout(Duration::from_secs(3))
                    .pool_idle_timeout(Duration::from_secs(30))
                    .build()
                    // No trust store: every send fails as a transport error (the leg is
                    // retried, and the failures show in the logs and the circuit).
                    .map_err(|e| TransportError::Other(format!("bank HTTP client: {e}")))
            })
            .await
    }
}

impl Default for HttpBankClient {
    fn default() -> Self {
        Self::new()
    }
}

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[async_trait]
impl BankClient for HttpBankClient {
    async fn post(
        &self,
        url: &str,
        headers: &SignatureHeaders,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<BankReply, TransportError> {
        let mut req = self
            .http()
            .await?
            .post(url)
            .timeout(timeout)
            .header("content-type", "application/json");
        for (k, v) in headers.pairs() {
            req = req.header(k, v);
        }
        let classify = |e: reqwest::Error| {
            if e.is_timeout() {
                TransportError::Timeout
            } else if e.is_connect() {
                TransportError::Connect(e.to_string())
            } else {
                TransportError::Other(e.to_string())
            }
        };
        let sent = req.body(body).send().await;
        if self.metered {
            let status = sent.as_ref().map_or(0, |r| r.status().as_u16());
            tracing::info!(status, "{}", crate::adapters::metering::BANK_CALL_LINE);
        }
        let mut resp = sent.map_err(classify)?;
        let status = resp.status().as_u16();
        let signature = SignatureHeaders::read(|name| header(&resp, name));
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(classify)? {
            if body.len() + chunk.len() > MAX_REPLY_BYTES {
                return Err(TransportError::Other("reply too large".into()));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(BankReply {
            status,
            signature,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    /// Serves every connection on a thread: counts it, reads one request, answers `reply`.
    fn serve(reply: String) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                counted.fetch_add(1, Ordering::SeqCst);
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                let _ = stream.write_all(reply.as_bytes());
            }
        });
        (format!("http://{addr}"), hits)
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let (elsewhere, stolen) =
            serve("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}".into());
        for status in [
            "301 Moved Permanently",
            "302 Found",
            "303 See Other",
            "307 Temporary Redirect",
            "308 Permanent Redirect",
        ] {
            let (bank, asked) = serve(format!(
                "HTTP/1.1 {status}\r\nlocation: {elsewhere}/steal\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            ));
            let headers = SignatureHeaders {
                bank_code: "ICBC".into(),
                timestamp: "1764336000".into(),
                nonce: "nonce-0123456789ab".into(),
                signature: "0".repeat(64),
            };
            let reply = HttpBankClient::new()
                .post(
                    &format!("{bank}/card-inquiries"),
                    &headers,
                    br#"{"subject":{"name":"x","id_number":"y"}}"#.to_vec(),
                    Duration::from_secs(5),
                )
                .await
                .unwrap();
            assert_eq!(reply.status, status[..3].parse::<u16>().unwrap());
            assert_eq!(asked.load(Ordering::SeqCst), 1);
        }
        assert_eq!(
            stolen.load(Ordering::SeqCst),
            0,
            "nothing went to the Location"
        );
    }
}
