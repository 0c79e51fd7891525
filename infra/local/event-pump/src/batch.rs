//! What an invocation's outcome means for a batch of stream records, as Lambda's event
//! source mapping decides it.

use serde_json::Value;

/// The result of one invocation of the function through the invoke API.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// 2xx without a function error: the function's return value.
    Ok(Value),
    /// The function failed (non-2xx, `X-Amz-Function-Error`, or an `errorType` body).
    FunctionError { status: u16, body: String },
    /// The invoke API does not know the function (404: not (yet) served).
    NotFound { body: String },
    /// The call did not complete (connection refused, timeout, ...).
    Transport(String),
}

impl Outcome {
    /// A short word for the log.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Ok(_) => "ok",
            Outcome::FunctionError { .. } => "function_error",
            Outcome::NotFound { .. } => "not_found",
            Outcome::Transport(_) => "transport_error",
        }
    }

    pub fn detail(&self) -> Option<String> {
        let cut = |s: &str| s.chars().take(500).collect::<String>();
        match self {
            Outcome::Ok(_) => None,
            Outcome::FunctionError { status, body } => Some(format!("{status}: {}", cut(body))),
            Outcome::NotFound { body } => Some(cut(body)),
            Outcome::Transport(e) => Some(cut(e)),
        }
    }
}

/// What happens to a batch after an invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every record of the batch is done.
    Done,
    /// Records before index `from` are done; `batch[from..]` must be retried.
    RetryFrom { from: usize, partial: bool },
}

/// Decides the verdict for a batch whose records have the sequence numbers `seqs`.
///
/// With `ReportBatchItemFailures`, a successful response of
/// `{"batchItemFailures": [{"itemIdentifier": "<SequenceNumber>"}, ...]}` means: retry
/// from the lowest failed record onwards (those before it are done). As in Lambda, an
/// empty or null list, an empty response or one without that key is complete success,
/// and an entry whose `itemIdentifier` is missing, empty, not a string or not in the
/// batch makes the whole batch fail. Without it, the response is not looked at. A
/// function error (or a function that is not served) fails the whole batch.
pub fn verdict(seqs: &[&str], outcome: &Outcome, report_batch_item_failures: bool) -> Verdict {
    let whole = Verdict::RetryFrom {
        from: 0,
        partial: false,
    };
    let Outcome::Ok(body) = outcome else {
        return whole;
    };
    if !report_batch_item_failures {
        return Verdict::Done;
    }
    let failures = match body.get("batchItemFailures") {
        None | Some(Value::Null) => return Verdict::Done,
        Some(Value::Array(items)) => items,
        Some(_) => return whole,
    };
    if failures.is_empty() {
        return Verdict::Done;
    }
    let mut lowest = usize::MAX;
    for f in failures {
        let id = f
            .get("itemIdentifier")
            .and_then(Value::as_str)
            .unwrap_or("");
        match seqs.iter().position(|s| !id.is_empty() && *s == id) {
            Some(i) => lowest = lowest.min(i),
            None => return whole,
        }
    }
    Verdict::RetryFrom {
        from: lowest,
        partial: lowest > 0,
    }
}

/// Backoff before retry number `retry` (1-based): 200 ms doubling, at most 10 s.
pub fn backoff(retry: u32) -> std::time::Duration {
    let ms = 200u64.saturating_mul(1u64 << retry.saturating_sub(1).min(16));
    std::time::Duration::from_millis(ms.min(10_000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SEQS: [&str; 4] = ["100", "200", "300", "400"];

    fn failures(ids: &[Value]) -> Outcome {
        Outcome::Ok(json!({
            "batchItemFailures": ids.iter().map(|i| json!({"itemIdentifier": i})).collect::<Vec<_>>()
        }))
    }

    #[test]
    fn success_shapes_are_done() {
        for body in [
            json!({"batchItemFailures": []}),
            json!({"batchItemFailures": null}),
            json!({}),
            json!(null),
            json!("ok"),
        ] {
            assert_eq!(
                verdict(&SEQS, &Outcome::Ok(body.clone()), true),
                Verdict::Done,
                "{body}"
            );
        }
    }

    #[test]
    fn retries_from_the_lowest_failed_record() {
        assert_eq!(
            verdict(&SEQS, &failures(&[json!("300")]), true),
            Verdict::RetryFrom {
                from: 2,
                partial: true
            }
        );
        // Order in the response does not matter; the lowest one counts.
        assert_eq!(
            verdict(&SEQS, &failures(&[json!("400"), json!("200")]), true),
            Verdict::RetryFrom {
                from: 1,
                partial: true
            }
        );
        assert_eq!(
            verdict(&SEQS, &failures(&[json!("100")]), true),
            Verdict::RetryFrom {
                from: 0,
                partial: false
            }
        );
    }

    #[test]
    fn bad_identifiers_fail_the_whole_batch() {
        for bad in [json!(""), json!(null), json!("999"), json!(300)] {
            assert_eq!(
                verdict(&SEQS, &failures(&[json!("300"), bad.clone()]), true),
                Verdict::RetryFrom {
                    from: 0,
                    partial: false
                },
                "{bad}"
            );
        }
        let wrong_key = Outcome::Ok(json!({"batchItemFailures": [{"itemId": "300"}]}));
        assert_eq!(
            verdict(&SEQS, &wrong_key, true),
            Verdict::RetryFrom {
                from: 0,
                partial: false
            }
        );
        let not_a_list = Outcome::Ok(json!({"batchItemFailures": "300"}));
        assert_eq!(
            verdict(&SEQS, &not_a_list, true),
            Verdict::RetryFrom {
                from: 0,
                partial: false
            }
        );
    }

    #[test]
    fn errors_retry_the_whole_batch() {
        for o in [
            Outcome::FunctionError {
                status: 500,
                body: "{}".into(),
            },
            Outcome::NotFound {
                body: "Missing function".into(),
            },
            Outcome::Transport("refused".into()),
        ] {
            assert_eq!(
                verdict(&SEQS, &o, true),
                Verdict::RetryFrom {
                    from: 0,
                    partial: false
                }
            );
            assert_eq!(
                verdict(&SEQS, &o, false),
                Verdict::RetryFrom {
                    from: 0,
                    partial: false
                }
            );
        }
    }

    #[test]
    fn without_report_batch_item_failures_the_response_is_ignored() {
        assert_eq!(
            verdict(&SEQS, &failures(&[json!("300")]), false),
            Verdict::Done
        );
    }

    #[test]
    fn backoff_doubles_from_200ms() {
        let ms: Vec<u128> = (1..=8).map(|r| backoff(r).as_millis()).collect();
        assert_eq!(ms, [200, 400, 800, 1600, 3200, 6400, 10_000, 10_000]);
    }
}
