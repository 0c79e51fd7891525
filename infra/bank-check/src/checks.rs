//! The run: inquiries for each subject (and their repeats), the refusal probes, the
//! dispute, each observation recorded against its rule.

use std::net::SocketAddr;
use std::time::Duration;

use domain::bank::signing::{BankSecret, SignatureHeaders};
use reqwest::Url;
use serde_json::{json, Value};

use chrono::{DateTime, TimeDelta, Utc};

use crate::callbacks::Listener;
use crate::card_data::{card_data_problems, card_ref_count, card_ref_problems};
use crate::client::BankClient;
use crate::report::Report;
use crate::rules::Rule;
use crate::spec::Spec;
use crate::subjects::Subject;

const INQUIRIES: &str = "card-inquiries";
const DISPUTES: &str = "card-disputes";

/// How far off the probes' timestamps are: past the 300-second window with a margin
/// for clocks that are a little apart.
const STALE_BY: TimeDelta = TimeDelta::seconds(360);

pub struct CheckConfig {
    /// The bank's endpoint (inquiries go to `{endpoint}/card-inquiries`).
    pub endpoint: Url,
    pub bank: String,
    pub secret: BankSecret,
    pub subjects: Vec<Subject>,
    /// Where to listen for callbacks; without it an accepted inquiry (202) cannot be
    /// followed and fails `callback-timing`.
    pub callback_listen: Option<SocketAddr>,
    /// The `callback_url` base the bank reaches the listener at, if not `http://ADDR`.
    pub callback_base: Option<String>,
    /// `respond_by` of each inquiry, from when it is sent.
    pub respond_within: Duration,
    pub request_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("{0}")]
    Setup(String),
}

/// One inquiry as sent.
struct Sent {
    query_id: String,
    inquiry_id: String,
    body: Vec<u8>,
    respond_by: DateTime<Utc>,
}

/// An answer as obtained, at once or by callback.
struct Got {
    raw: Vec<u8>,
}

struct Run {
    client: BankClient,
    spec: Spec,
    listener: Option<Listener>,
    callback_url: String,
    respond_within: Duration,
    report: Report,
    /// (query_id, inquiry_id, card_ref) of cards answered with a well-formed ref.
    refs: Vec<(String, String, String)>,
    callbacks_seen: bool,
}

fn ulid() -> String {
    ulid::Ulid::generate().to_string()
}

/// The same signature with its first hex digit changed.
fn tampered(mut h: SignatureHeaders) -> SignatureHeaders {
    let first = if h.signature.starts_with('0') {
        "1"
    } else {
        "0"
    };
    h.signature.replace_range(..1, first);
    h
}

/// Status and cards, sorted: what a repeat must give again.
fn essence(v: &Value) -> (Value, Vec<String>) {
    let mut cards: Vec<String> = v
        .get("cards")
        .and_then(Value::as_array)
        .map(|c| c.iter().map(Value::to_string).collect())
        .unwrap_or_default();
    cards.sort();
    (v.get("status").cloned().unwrap_or(Value::Null), cards)
}

impl Run {
    fn inquiry(&self, subject: &Subject) -> Sent {
        let respond_by =
            Utc::now() + TimeDelta::from_std(self.respond_within).unwrap_or(TimeDelta::MAX);
        let (query_id, inquiry_id) = (ulid(), ulid());
        let body = json!({
            "query_id": query_id,
            "inquiry_id": inquiry_id,
            "subject": {"name": subject.name, "id_number": subject.id_number},
            "callback_url": self.callback_url,
            "respond_by": respond_by.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        });
        Sent {
            query_id,
            inquiry_id,
            body: body.to_string().into_bytes(),
            respond_by,
        }
    }

    /// Sends the inquiry (freshly signed) and gets its answer: the 200 body, or the
    /// `nth` callback naming it. Records the signature and timing rules.
    async fn ask(&mut self, label: &str, inq: &Sent, nth: usize) -> Option<Got> {
        let reply = match self.client.post_signed(INQUIRIES, &inq.body).await {
            Ok(r) => r,
            Err(e) => {
                self.report
                    .fail(Rule::AnswerSchema, format!("{label}: {e}"));
                return None;
            }
        };
        match reply.status {
            200 => {
                let verdict = self.client.verify_reply(INQUIRIES, &reply);
                self.report
                    .check(Rule::AnswerSignature, verdict.is_ok(), || {
                        format!("{label}: {}", verdict.unwrap_err())
                    });
                Some(Got { raw: reply.body })
            }
            202 => {
                self.callbacks_seen = true;
                let Some(listener) = &self.listener else {
                    self.report.fail(
                        Rule::CallbackTiming,
                        format!("{label}: accepted (202), but no --callback-listen to receive the callback"),
                    );
                    return None;
                };
                let got = listener
                    .wait_for(&inq.inquiry_id, nth, inq.respond_by)
                    .await;
                let Some(d) = got.get(nth - 1) else {
                    self.report.fail(
                        Rule::CallbackTiming,
                        format!("{label}: accepted (202), no callback before respond_by"),
                    );
                    return None;
                };
                let on_time = d.at <= inq.respond_by;
                self.report.check(Rule::CallbackTiming, on_time, || {
                    format!("{label}: the callback came after respond_by")
                });
                let verdict = d.signature.clone();
                self.report
                    .check(Rule::CallbackSignature, verdict.is_ok(), || {
                        format!("{label}: {}", verdict.unwrap_err())
                    });
                Some(Got {
                    raw: d.body.clone(),
                })
            }
            s => {
                self.report.fail(
                    Rule::AnswerSchema,
                    format!("{label}: status {s} to a valid signed inquiry (expected 200 or 202)"),
                );
                None
            }
        }
    }

    /// The answer's content: shape, ids, card data, card refs.
    fn judge(&mut self, label: &str, inq: &Sent, got: &Got) -> Option<Value> {
        let value: Option<Value> = serde_json::from_slice(&got.raw).ok();
        for p in card_data_problems(&got.raw, value.as_ref()) {
            self.report.fail(Rule::CardData, format!("{label}: {p}"));
        }
        if !self
            .report
            .failures(Rule::CardData)
            .iter()
            .any(|l| l.starts_with(label))
        {
            self.report.pass(Rule::CardData);
        }
        let Some(value) = value else {
            self.report.fail(
                Rule::AnswerSchema,
                format!("{label}: the answer is not JSON"),
            );
            return None;
        };
        let errors = self.spec.answer_errors(&value);
        self.report
            .check(Rule::AnswerSchema, errors.is_empty(), || {
                format!("{label}: not a CardAnswer ({})", errors.join("; "))
            });
        let ids_ok = value["query_id"] == inq.query_id.as_str()
            && value["inquiry_id"] == inq.inquiry_id.as_str();
        self.report.check(Rule::AnswerIds, ids_ok, || {
            format!("{label}: query_id or inquiry_id differs from the inquiry's")
        });
        if card_ref_count(&value) > 0 {
            let problems = card_ref_problems(&self.spec, &value);
            if problems.is_empty() {
                self.report.pass(Rule::CardRef);
                if ids_ok {
                    for c in value["cards"].as_array().into_iter().flatten() {
                        if let Some(r) = c.get("card_ref").and_then(Value::as_str) {
                            self.refs.push((
                                inq.query_id.clone(),
                                inq.inquiry_id.clone(),
                                r.to_owned(),
                            ));
                        }
                    }
                }
            }
            for p in problems {
                self.report.fail(Rule::CardRef, format!("{label}: {p}"));
            }
        }
        Some(value)
    }

    async fn subjects(&mut self, subjects: &[Subject]) {
        for (i, subject) in subjects.iter().enumerate() {
            let label = format!("subject {}", i + 1);
            let inq = self.inquiry(subject);
            let Some(first) = self.ask(&label, &inq, 1).await else {
                continue;
            };
            let first = self.judge(&label, &inq, &first);
            // The same inquiry again, as our retries send it: same body, new signature.
            let again = format!("{label} (repeat)");
            let Some(second) = self.ask(&again, &inq, 2).await else {
                continue;
            };
            let second = self.judge(&again, &inq, &second);
            if let (Some(a), Some(b)) = (first, second) {
                self.report.check(Rule::IdempotentRepeat, essence(&a) == essence(&b), || {
                    format!("{label}: the repeated inquiry got another answer (status, cards or card_refs)")
                });
            }
        }
    }

    /// Sends `body` with `headers` (None: unsigned) and expects a 401.
    async fn expect_401(
        &mut self,
        rule: Rule,
        what: &str,
        route: &str,
        body: &[u8],
        headers: Option<&SignatureHeaders>,
    ) {
        match self.client.post(route, body, headers).await {
            Ok(r) => self.report.check(rule, r.status == 401, || {
                format!("{what}: status {} (expected 401)", r.status)
            }),
            Err(e) => self.report.fail(rule, format!("{what}: {e}")),
        }
    }

    async fn refusals(&mut self, subject: &Subject) {
        let now = Utc::now();
        let inq = self.inquiry(subject);
        let wrong = tampered(self.client.sign(INQUIRIES, &inq.body, now));
        self.expect_401(
            Rule::RefusesBadSignature,
            "an inquiry with a wrong signature",
            INQUIRIES,
            &inq.body,
            Some(&wrong),
        )
        .await;
        let inq = self.inquiry(subject);
        self.expect_401(
            Rule::RefusesBadSignature,
            "an unsigned inquiry",
            INQUIRIES,
            &inq.body,
            None,
        )
        .await;
        let inq = self.inquiry(subject);
        let mut other_body = inq.body.clone();
        other_body.push(b' ');
        let for_other = self.client.sign(INQUIRIES, &other_body, now);
        self.expect_401(
            Rule::RefusesBadSignature,
            "an inquiry signed over another body",
            INQUIRIES,
            &inq.body,
            Some(&for_other),
        )
        .await;

        // Replay: a valid inquiry, then its exact headers and body again.
        let inq = self.inquiry(subject);
        let h = self.client.sign(INQUIRIES, &inq.body, Utc::now());
        match self.client.post(INQUIRIES, &inq.body, Some(&h)).await {
            Ok(r) if matches!(r.status, 200 | 202) => {
                self.expect_401(
                    Rule::RefusesReplayedNonce,
                    "the same inquiry with a used nonce",
                    INQUIRIES,
                    &inq.body,
                    Some(&h),
                )
                .await;
            }
            Ok(r) => self.report.fail(
                Rule::RefusesReplayedNonce,
                format!(
                    "the original of the replay got status {} (expected 200 or 202)",
                    r.status
                ),
            ),
            Err(e) => self.report.fail(Rule::RefusesReplayedNonce, e),
        }

        for (what, at) in [
            ("an inquiry signed 6 minutes ago", Utc::now() - STALE_BY),
            ("an inquiry signed 6 minutes ahead", Utc::now() + STALE_BY),
        ] {
            let inq = self.inquiry(subject);
            let h = self.client.sign(INQUIRIES, &inq.body, at);
            self.expect_401(
                Rule::RefusesStaleTimestamp,
                what,
                INQUIRIES,
                &inq.body,
                Some(&h),
            )
            .await;
        }
    }

    async fn dispute(&mut self) {
        let Some((query_id, inquiry_id, card_ref)) = self.refs.first().cloned() else {
            return;
        };
        let dispute_id = ulid();
        let body = json!({
            "query_id": query_id, "inquiry_id": inquiry_id,
            "card_ref": card_ref, "dispute_id": dispute_id,
        })
        .to_string()
        .into_bytes();
        let mut cases = Vec::new();
        for what in ["a signed dispute", "the same dispute again"] {
            let reply = match self.client.post_signed(DISPUTES, &body).await {
                Ok(r) => r,
                Err(e) => {
                    self.report.fail(Rule::Dispute, format!("{what}: {e}"));
                    return;
                }
            };
            if reply.status != 200 {
                self.report.fail(
                    Rule::Dispute,
                    format!("{what}: status {} (expected 200)", reply.status),
                );
                return;
            }
            let verdict = self.client.verify_reply(DISPUTES, &reply);
            self.report.check(Rule::Dispute, verdict.is_ok(), || {
                format!("{what}: the answer's {}", verdict.unwrap_err())
            });
            let Ok(v) = serde_json::from_slice::<Value>(&reply.body) else {
                self.report
                    .fail(Rule::Dispute, format!("{what}: the answer is not JSON"));
                return;
            };
            let errors = self.spec.dispute_answer_errors(&v);
            self.report.check(Rule::Dispute, errors.is_empty(), || {
                format!("{what}: not a DisputeAnswer ({})", errors.join("; "))
            });
            self.report.check(
                Rule::Dispute,
                v["dispute_id"] == dispute_id.as_str(),
                || format!("{what}: dispute_id differs from the dispute's"),
            );
            cases.push(v["case_id"].clone());
        }
        self.report.check(Rule::Dispute, cases[0] == cases[1], || {
            "the same dispute_id got another case_id".to_owned()
        });
        let other = json!({
            "query_id": query_id, "inquiry_id": inquiry_id,
            "card_ref": card_ref, "dispute_id": ulid(),
        })
        .to_string()
        .into_bytes();
        let wrong = tampered(self.client.sign(DISPUTES, &other, Utc::now()));
        self.expect_401(
            Rule::Dispute,
            "a dispute with a wrong signature",
            DISPUTES,
            &other,
            Some(&wrong),
        )
        .await;
    }
}

/// Runs every check against the endpoint and returns the report.
pub async fn run(cfg: CheckConfig) -> Result<Report, CheckError> {
    if cfg.subjects.is_empty() {
        return Err(CheckError::Setup("no test subjects".into()));
    }
    let spec = Spec::load().map_err(CheckError::Setup)?;
    let listener = match cfg.callback_listen {
        Some(addr) => Some(
            Listener::start(addr, &cfg.bank, cfg.secret.clone())
                .await
                .map_err(CheckError::Setup)?,
        ),
        None => None,
    };
    let base = cfg
        .callback_base
        .clone()
        .or_else(|| listener.as_ref().map(|l| l.base.clone()))
        // Nobody listens there: a bank that accepts (202) fails `callback-timing`.
        .unwrap_or_else(|| "http://127.0.0.1:9".to_owned());
    let callback_url = format!(
        "{}/v1/bank-callbacks/{}",
        base.trim_end_matches('/'),
        cfg.bank
    );
    let endpoint = cfg.endpoint.to_string();
    let client = BankClient::new(cfg.endpoint, &cfg.bank, cfg.secret, cfg.request_timeout)
        .map_err(CheckError::Setup)?;
    let mut run = Run {
        client,
        spec,
        listener,
        callback_url,
        respond_within: cfg.respond_within,
        report: Report::new(&cfg.bank, &endpoint, cfg.subjects.len()),
        refs: Vec::new(),
        callbacks_seen: false,
    };
    run.subjects(&cfg.subjects).await;
    run.refusals(&cfg.subjects[0]).await;
    run.dispute().await;
    let report = &mut run.report;
    if !run.callbacks_seen {
        report.skip(
            Rule::CallbackSignature,
            "every inquiry was answered at once (200)",
        );
        report.skip(
            Rule::CallbackTiming,
            "every inquiry was answered at once (200)",
        );
    }
    report.skip(
        Rule::AnswerSignature,
        "no inquiry was answered at once (200)",
    );
    report.skip(Rule::CardRef, "no answer carried a card_ref");
    report.skip(
        Rule::Dispute,
        "no answer carried a well-formed card_ref to dispute",
    );
    report.skip(Rule::IdempotentRepeat, "no inquiry was answered twice");
    Ok(run.report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tampered_signature_differs_in_its_first_digit_only() {
        let h = SignatureHeaders {
            bank_code: "ICBC".into(),
            timestamp: "1".into(),
            nonce: "n".into(),
            signature: format!("0{}", "a".repeat(63)),
        };
        let t = tampered(h.clone());
        assert_eq!(&t.signature[1..], &h.signature[1..]);
        assert_ne!(t.signature, h.signature);
        assert_eq!(tampered(t).signature, h.signature);
    }
}
