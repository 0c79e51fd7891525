//! Synchronous invocation through the Lambda invoke API that `cargo lambda watch` serves:
//! `POST {endpoint}/2015-03-31/functions/{name}/invocations`.

use std::time::Duration;

use serde_json::Value;

use crate::batch::Outcome;

#[derive(Clone, Debug)]
pub struct Invoker {
    client: reqwest::Client,
    endpoint: String,
}

impl Invoker {
    /// `timeout` bounds one call: the first call of a function under `cargo lambda watch`
    /// compiles it, so it is generous.
    pub fn new(endpoint: &str, timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .no_proxy() // loopback only; never through an http_proxy of the environment
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        Ok(Self {
            client,
            endpoint: endpoint.trim_end_matches('/').to_owned(),
        })
    }

    pub fn url(&self, function: &str) -> String {
        format!(
            "{}/2015-03-31/functions/{function}/invocations",
            self.endpoint
        )
    }

    pub async fn invoke(&self, function: &str, payload: &Value) -> Outcome {
        let resp = match self
            .client
            .post(self.url(function))
            .header("content-type", "application/json")
            .header("x-amz-invocation-type", "RequestResponse")
            .body(payload.to_string())
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => return Outcome::Transport(error_chain(&e)),
        };
        let status = resp.status().as_u16();
        let function_error = resp.headers().contains_key("x-amz-function-error");
        let body = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => return Outcome::Transport(error_chain(&e)),
        };
        classify(status, function_error, &body)
    }
}

/// Maps an invoke API response to an [`Outcome`].
pub fn classify(status: u16, function_error_header: bool, body: &[u8]) -> Outcome {
    let text = || String::from_utf8_lossy(body).into_owned();
    if status == 404 {
        return Outcome::NotFound { body: text() };
    }
    if !(200..300).contains(&status) || function_error_header {
        return Outcome::FunctionError {
            status,
            body: text(),
        };
    }
    let value: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        match serde_json::from_slice(body) {
            Ok(v) => v,
            // A return value that is not JSON (the invoke API passes bytes through).
            Err(_) => Value::String(text()),
        }
    };
    if value.get("errorType").is_some() {
        return Outcome::FunctionError {
            status,
            body: text(),
        };
    }
    Outcome::Ok(value)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn classifies_invoke_api_answers() {
        assert_eq!(
            classify(200, false, b"{\"batchItemFailures\":[]}"),
            Outcome::Ok(json!({"batchItemFailures": []}))
        );
        assert_eq!(classify(200, false, b""), Outcome::Ok(Value::Null));
        assert_eq!(classify(200, false, b"null"), Outcome::Ok(Value::Null));
        assert!(matches!(
            classify(404, false, b"{\"title\":\"Missing function\"}"),
            Outcome::NotFound { .. }
        ));
        assert!(matches!(
            classify(500, false, b"{\"errorType\":\"x\",\"errorMessage\":\"y\"}"),
            Outcome::FunctionError { status: 500, .. }
        ));
        assert!(matches!(
            classify(200, false, b"{\"errorType\":\"x\",\"errorMessage\":\"y\"}"),
            Outcome::FunctionError { status: 200, .. }
        ));
        assert!(matches!(
            classify(200, true, b"{}"),
            Outcome::FunctionError { .. }
        ));
        assert!(matches!(
            classify(502, false, b"bad gateway"),
            Outcome::FunctionError { .. }
        ));
    }
}
