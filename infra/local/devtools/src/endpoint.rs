//! The endpoints devtools talks to: only the ones the environment names. Test support
//! would start a private stack when the endpoints are missing; a tool a developer or a
//! launcher calls must instead say what is missing.

use aws_sdk_dynamodb::Client;

pub const DYNAMODB_VAR: &str = "AWS_ENDPOINT_URL_DYNAMODB";
pub const SQS_VAR: &str = "AWS_ENDPOINT_URL_SQS";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "{var} is not set{also}: point it at the local {service} \
     (run under `infra/local/stack.py exec -- ...`, or take it from the state file)"
)]
pub struct MissingEndpoint {
    var: &'static str,
    service: &'static str,
    /// What the environment does set, to show it is partial.
    also: String,
}

/// The DynamoDB endpoint from `lookup` (the environment), non-empty.
pub fn dynamodb_from(lookup: impl Fn(&str) -> Option<String>) -> Result<String, MissingEndpoint> {
    named(DYNAMODB_VAR, "DynamoDB", lookup)
}

/// The SQS endpoint (the moto server) from `lookup`, non-empty.
pub fn sqs_from(lookup: impl Fn(&str) -> Option<String>) -> Result<String, MissingEndpoint> {
    named(SQS_VAR, "SQS (the moto server)", lookup)
}

fn named(
    var: &'static str,
    service: &'static str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, MissingEndpoint> {
    match lookup(var).filter(|v| !v.trim().is_empty()) {
        Some(url) => Ok(url),
        None => Err(MissingEndpoint {
            var,
            service,
            also: lookup("AWS_ENDPOINT_URL_SNS")
                .map(|_| " (AWS_ENDPOINT_URL_SNS is)".to_owned())
                .unwrap_or_default(),
        }),
    }
}

/// An SQS client bound to `endpoint`, like [`client`].
pub fn sqs_client(endpoint: &str) -> aws_sdk_sqs::Client {
    let conf = aws_sdk_sqs::config::Builder::from(&testkit::sdk_config())
        .endpoint_url(endpoint)
        .build();
    aws_sdk_sqs::Client::from_conf(conf)
}

/// A client bound to `endpoint` with the local stack's fixed region and dummy
/// credentials.
pub fn client(endpoint: &str) -> Client {
    let conf = aws_sdk_dynamodb::config::Builder::from(&testkit::sdk_config())
        .endpoint_url(endpoint)
        .build();
    Client::from_conf(conf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_missing_variable() {
        let e = dynamodb_from(|_| None).unwrap_err().to_string();
        assert!(
            e.starts_with("AWS_ENDPOINT_URL_DYNAMODB is not set:"),
            "{e}"
        );
        let partial = dynamodb_from(|k| (k == "AWS_ENDPOINT_URL_SNS").then(|| "http://s".into()))
            .unwrap_err()
            .to_string();
        assert!(partial.contains("(AWS_ENDPOINT_URL_SNS is)"), "{partial}");
        let empty = dynamodb_from(|k| (k == DYNAMODB_VAR).then(String::new));
        assert!(empty.is_err());
        let e = sqs_from(|k| (k == DYNAMODB_VAR).then(|| "http://d".into()))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("AWS_ENDPOINT_URL_SQS is not set:"), "{e}");
    }

    #[test]
    fn takes_the_named_endpoint() {
        let url = dynamodb_from(|k| (k == DYNAMODB_VAR).then(|| "http://127.0.0.1:8000".into()));
        assert_eq!(url.as_deref(), Ok("http://127.0.0.1:8000"));
    }
}
