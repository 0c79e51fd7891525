//! Builds a query's report exactly once, stores it sealed with its 7-day expiry, closes
//! the query (lock released, cooldown set, raw bank answers removed) in one write, then
//! sends the "report ready" SMS once.
//!
//! The SMS cannot be made exactly-once with SNS, so it is made as close as it gets: a
//! claim with a lease is taken before sending and `notified_at` is recorded after. A
//! crash before sending leaves the claim to lapse and the message is sent on retry (the
//! stream redelivers, the sweeper's NOTIFY entry catches the rest); a crash between
//! sending and recording is the one window in which a second SMS is possible. A notice
//! the SMS channel cannot take now (its shared rate, or SNS throttling) gives its claim
//! back unsent and is left to the sweeper's NOTIFY entry.

use std::sync::Arc;

use chrono::{TimeDelta, Timelike};
use tracing::{info, warn};

use super::body;
use super::crypto::{Binding, ReportSealer};
use crate::clock::Clock;
use crate::config::ServiceConfig;
use crate::model::ids::QueryId;
use crate::ports::{
    Admit, Metric, Metrics, NotifyError, ProfileStore, QueryStore, ReportStore, Settlement,
    SmsAdmission, SmsSender, StoreError, SubmissionStore,
};
use crate::records::{LegState, Publication, PublishOutcome, QueryPhase, StoredReport};
use crate::rules::{cooldown, deadline, retention};

/// How long a notice claim holds before another attempt may send.
pub const NOTICE_LEASE: TimeDelta = TimeDelta::minutes(2);
const STATE_RETRIES: usize = 8;

/// The "report ready" SMS: no link, an anti-fraud reminder.
pub const REPORT_READY_SMS: &str =
    "【云闪付】您申请的一键查卡报告已生成，请登录云闪付App查看，报告保留7天。\
云闪付不会以任何理由索要您的验证码或密码，谨防诈骗。";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggregateOutcome {
    Published,
    /// Some leg is still open and the deadline has not passed.
    NotReady,
    /// Reported before (the notice is still made sure of).
    AlreadyReported,
    UnknownQuery,
}

pub struct AggregatorDeps {
    pub config: Arc<ServiceConfig>,
    pub queries: Arc<dyn QueryStore>,
    pub reports: Arc<dyn ReportStore>,
    pub users: Arc<dyn SubmissionStore>,
    pub profiles: Arc<dyn ProfileStore>,
    pub sms: Arc<dyn SmsSender>,
    /// The SMS channel's shared rate, asked before each notice.
    pub sms_admission: Arc<dyn SmsAdmission>,
    pub sealer: Arc<ReportSealer>,
    pub clock: Arc<dyn Clock>,
    /// The submit-to-report latency, which the late-report alarm watches.
    pub metrics: Arc<dyn Metrics>,
}

pub struct Aggregator {
    d: AggregatorDeps,
}

impl Aggregator {
    pub fn new(deps: AggregatorDeps) -> Self {
        Self { d: deps }
    }

    pub async fn aggregate(&self, id: &QueryId) -> Result<AggregateOutcome, StoreError> {
        let outcome = self.publish(id).await?;
        #[cfg(feature = "fault-injection")]
        fault_point("aggregate.after_publish");
        if matches!(
            outcome,
            AggregateOutcome::Published | AggregateOutcome::AlreadyReported
        ) {
            self.notify(id).await?;
        }
        Ok(outcome)
    }

    async fn publish(&self, id: &QueryId) -> Result<AggregateOutcome, StoreError> {
        for _ in 0..STATE_RETRIES {
            let Some(query) = self.d.queries.query(id).await? else {
                return Ok(AggregateOutcome::UnknownQuery);
            };
            match query.phase {
                QueryPhase::Collecting | QueryPhase::Aggregating => {}
                _ => return Ok(AggregateOutcome::AlreadyReported),
            }
            let now = self.d.clock.now();
            let legs = self.d.queries.legs(id).await?;
            let open: Vec<_> = legs.iter().filter(|l| !l.state.is_settled()).collect();
            // A bank whose leg fan-out has not created yet is as open as a pending one.
            let missing = query
                .banks
                .iter()
                .any(|b| !legs.iter().any(|l| &l.bank == b));
            if !open.is_empty() || missing {
                if deadline::collecting(query.collect_until, now) {
                    return Ok(AggregateOutcome::NotReady);
                }
                if missing {
                    // Created only to be settled NO_RESPONSE next round, so the count on
                    // the query and the report both cover every chosen bank.
                    self.d.queries.ensure_legs(&query).await?;
                    continue;
                }
                // The deadline passed: whoever has not answered is NO_RESPONSE, settled
                // first so that no late callback can add to a published report.
                for leg in open {
                    let st = Settlement {
                        state: LegState::NoResponse,
                        failure: None,
                        sealed: None,
                        answer_digest: None,
                        at: now,
                    };
                    self.d.queries.settle(id, &leg.bank, &st, None).await?;
                }
                continue;
            }
            let rules = &self.d.config.rules;
            let generated_at = now.with_nanosecond(0).unwrap_or(now);
            let expires_at = retention::report_expires_at(generated_at, rules);
            // Outcomes and the banks' sealed answers, sealed again as one report: the
            // aggregator never holds a card in clear.
            let content = body::content(&query, &legs);
            let answers = content.banks.iter().filter(|b| b.answer.is_some()).count();
            let json =
                serde_json::to_vec(&content).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let binding = Binding::Report {
                query: &query.query_id,
                user: &query.user_id,
                generated_at,
                expires_at,
            };
            let sealed = self
                .d
                .sealer
                .seal(&binding, &json)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let state = self.d.users.user_state(&query.user_id).await?;
            let next = cooldown::after_report(&state, id, generated_at, rules);
            let publication = Publication {
                report: StoredReport {
                    query_id: query.query_id,
                    user_id: query.user_id.clone(),
                    sealed,
                    generated_at,
                    expires_at,
                },
                state: next,
                expected_state_version: state.version,
            };
            match self.d.reports.publish(&publication).await? {
                PublishOutcome::Published => {
                    let no_answer = legs
                        .iter()
                        .filter(|l| l.state != LegState::Answered)
                        .count();
                    let latency = generated_at - query.submitted_at;
                    info!(
                        query_id = %id,
                        banks = legs.len(),
                        banks_without_answer = no_answer,
                        sealed_answers = answers,
                        submit_to_report_ms = latency.num_milliseconds(),
                        "report published"
                    );
                    self.d
                        .metrics
                        .emit(Metric::SubmitToReportLatency(latency), generated_at);
                    return Ok(AggregateOutcome::Published);
                }
                PublishOutcome::AlreadyClosed => return Ok(AggregateOutcome::AlreadyReported),
                PublishOutcome::StateChanged => continue,
            }
        }
        Err(StoreError::Unavailable(
            "user state contention while publishing".into(),
        ))
    }

    /// Sends the "report ready" SMS unless it was sent or another sender holds the claim;
    /// `false` also when the channel cannot take it now (it stays due for the sweeper).
    pub async fn notify(&self, id: &QueryId) -> Result<bool, StoreError> {
        let now = self.d.clock.now();
        if !self.d.reports.claim_notice(id, now, NOTICE_LEASE).await? {
            return Ok(false);
        }
        let Some(query) = self.d.queries.query(id).await? else {
            return Ok(false);
        };
        // Here, not in the publication's transaction, where each leg cost twice: the
        // notice is retried (its due entry, the claim's lease) until it is recorded, so
        // the raw answers are gone by the time it is, whatever instance dies when.
        self.d.reports.clear_answers(id, &query.banks).await?;
        let Some(profile) = self.d.profiles.profile(&query.user_id).await? else {
            warn!(query_id = %id, "no profile to notify; notice dropped");
            self.d.reports.notice_sent(id, now).await?;
            return Ok(false);
        };
        // A notice the channel cannot take now stays due, its claim given back so the
        // next sweep sends it (once: the claim and `notified_at` still decide).
        let deferred = match self.d.sms_admission.admit(now).await? {
            Admit::RetryAt(_) => true,
            Admit::Go => match self.d.sms.send_sms(&profile.phone, REPORT_READY_SMS).await {
                Ok(()) => false,
                Err(NotifyError::Throttled) => true,
                Err(e @ NotifyError::Failed(_)) => {
                    return Err(StoreError::Unavailable(e.to_string()))
                }
            },
        };
        if deferred {
            self.d.reports.release_notice(id, now).await?;
            info!(query_id = %id, "report-ready SMS deferred: the SMS channel is at its rate");
            return Ok(false);
        }
        #[cfg(feature = "fault-injection")]
        fault_point("aggregate.after_sms");
        self.d.reports.notice_sent(id, self.d.clock.now()).await?;
        info!(query_id = %id, "report-ready SMS sent");
        Ok(true)
    }
}

/// Test builds only: the process dies here, as a Lambda instance killed mid-invocation,
/// when the point is armed (a file `$FAULT_DIR/<name>`; the first to remove it dies).
#[cfg(feature = "fault-injection")]
fn fault_point(name: &str) {
    if let Some(dir) = std::env::var_os("FAULT_DIR") {
        if std::fs::remove_file(std::path::Path::new(&dir).join(name)).is_ok() {
            std::process::abort();
        }
    }
}
