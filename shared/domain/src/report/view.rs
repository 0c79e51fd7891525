//! The user's query records and reports (the list, one query's progress, the report
//! after a fresh step-up every time, and its deletion at the user's request). Another
//! user's query is "not found", never "forbidden".

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::body;
use super::crypto::{Binding, ReportOpener};
use super::paging::{self, CursorKey, CursorScope, Position, ReportPage};
use crate::clock::Clock;
use crate::config::ServiceConfig;
use crate::error::ServiceError;
use crate::model::ids::{QueryId, UserId};
use crate::model::purpose::Purpose;
use crate::model::step_up::StepUpMethod;
use crate::model::timestamp::rfc3339;
use crate::ports::{DisputeStore, QueryStore, ReportStore, SubmissionStore};
use crate::records::{LegRecord, LegState, QueryPhase, QueryRecord, ReportView, StoredReport};
use crate::security::face::FaceVerifier;
use crate::security::sms_code::CodeHasher;
use crate::verification::check_code;

#[derive(Debug, Clone, Serialize)]
pub struct QueryView {
    pub query_id: String,
    pub status: &'static str,
    pub report_status: &'static str,
    #[serde(with = "rfc3339")]
    pub submitted_at: DateTime<Utc>,
    #[serde(with = "rfc3339")]
    pub report_due_by: DateTime<Utc>,
    pub banks: Vec<String>,
    #[serde(with = "rfc3339::option")]
    pub report_generated_at: Option<DateTime<Utc>>,
    #[serde(with = "rfc3339::option")]
    pub report_expires_at: Option<DateTime<Utc>>,
    #[serde(with = "rfc3339::option")]
    pub last_viewed_at: Option<DateTime<Utc>>,
    #[serde(with = "rfc3339::option")]
    pub report_deleted_at: Option<DateTime<Utc>>,
    /// The latest views of the report, newest first (at most 50).
    pub views: Vec<ViewEntry>,
    /// Every view, also the older ones the list no longer holds.
    pub view_count: u64,
}

/// One view of the report as the record lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ViewEntry {
    #[serde(with = "rfc3339")]
    pub viewed_at: DateTime<Utc>,
    /// `SMS` or `FACE`: the step-up that opened it.
    pub method: StepUpMethod,
}

impl QueryView {
    pub fn of(q: &QueryRecord, now: DateTime<Utc>) -> Self {
        let expired = q.phase == QueryPhase::Expired
            || (q.phase == QueryPhase::Reported
                && q.report_expires_at
                    .is_some_and(|e| crate::rules::retention::report_expired(e, now)));
        let (status, report_status) = match q.phase {
            QueryPhase::Collecting | QueryPhase::Aggregating => ("PENDING", "PENDING"),
            QueryPhase::Failed => ("FAILED", "FAILED"),
            QueryPhase::Deleted => ("READY", "DELETED"),
            _ if expired => ("READY", "EXPIRED"),
            _ => ("READY", "READY"),
        };
        Self {
            query_id: q.query_id.to_string(),
            status,
            report_status,
            submitted_at: q.submitted_at,
            report_due_by: q.report_due_by,
            banks: q.banks.iter().map(ToString::to_string).collect(),
            report_generated_at: q.report_generated_at,
            report_expires_at: q.report_expires_at,
            last_viewed_at: q.last_viewed_at,
            report_deleted_at: q.report_deleted_at,
            views: q
                .views
                .iter()
                .rev()
                .map(|v| ViewEntry {
                    viewed_at: v.at,
                    method: v.method,
                })
                .collect(),
            view_count: q.views_total,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct BankProgress {
    pub bank_code: String,
    pub bank_name: String,
    pub status: &'static str,
}

#[derive(Debug, Serialize)]
pub struct QueryDetail {
    #[serde(flatten)]
    pub record: QueryView,
    pub progress: Vec<BankProgress>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeInput {
    pub verification_id: String,
    pub sms_code: String,
}

/// Step-up proof for one view or deletion: an SMS code or a face token, for that
/// purpose (VIEW_REPORT, DELETE_REPORT).
pub enum StepUp {
    Code { verification: CodeInput },
    Face { face_token: String },
}

/// What opens a page of the report: a fresh step-up (the first page, a view), or the
/// cursor the previous page of that view gave.
pub enum ReportAccess {
    StepUp(StepUp),
    Cursor(String),
}

pub struct ViewDeps {
    pub config: Arc<ServiceConfig>,
    pub queries: Arc<dyn QueryStore>,
    pub reports: Arc<dyn ReportStore>,
    pub verifications: Arc<dyn SubmissionStore>,
    pub codes: CodeHasher,
    pub face: Arc<FaceVerifier>,
    pub opener: ReportOpener,
    pub clock: Arc<dyn Clock>,
    /// Disputes of the report's cards (decision 157).
    pub disputes: Arc<dyn DisputeStore>,
}

pub struct ViewService {
    pub(super) d: ViewDeps,
    cursors: CursorKey,
}

impl ViewService {
    pub fn new(deps: ViewDeps) -> Self {
        let cursors = CursorKey::new(deps.opener.derive_key(paging::CURSOR_KEY_LABEL));
        Self { d: deps, cursors }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.d.clock.now()
    }

    pub async fn list(&self, user: &UserId) -> Result<Vec<QueryView>, ServiceError> {
        let now = self.now();
        Ok(self
            .d
            .reports
            .user_queries(user)
            .await?
            .iter()
            .map(|q| QueryView::of(q, now))
            .collect())
    }

    /// The caller's own query; anything else is "not found".
    pub(super) async fn own_query(
        &self,
        user: &UserId,
        id: &str,
    ) -> Result<QueryRecord, ServiceError> {
        let id = QueryId::parse(id).map_err(|_| ServiceError::NotFound)?;
        self.d
            .queries
            .query(&id)
            .await?
            .filter(|q| &q.user_id == user)
            .ok_or(ServiceError::NotFound)
    }

    pub async fn detail(&self, user: &UserId, id: &str) -> Result<QueryDetail, ServiceError> {
        let q = self.own_query(user, id).await?;
        let deleted = q.phase == QueryPhase::Deleted;
        let legs = self.d.queries.legs(&q.query_id).await?;
        let progress = q
            .banks
            .iter()
            .map(|code| {
                let leg = legs.iter().find(|l| &l.bank == code);
                BankProgress {
                    bank_code: code.to_string(),
                    bank_name: self.d.config.banks.name(code).to_owned(),
                    // The legs went with the report.
                    status: if deleted { "DELETED" } else { leg_status(leg) },
                }
            })
            .collect();
        Ok(QueryDetail {
            record: QueryView::of(&q, self.now()),
            progress,
        })
    }

    /// The 410 for a report that is gone: expired, or deleted by the user.
    pub(super) fn gone(&self, q: &QueryRecord, now: DateTime<Utc>) -> ServiceError {
        let view = QueryView::of(q, now);
        let deleted = view.report_status == "DELETED";
        let query = serde_json::to_value(view).unwrap_or_default();
        if deleted {
            ServiceError::ReportDeleted { query }
        } else {
            ServiceError::ReportExpired { query }
        }
    }

    /// The report's state allows viewing or deleting it; otherwise the refusal, decided
    /// before any step-up proof is used up.
    pub(super) fn readable(&self, q: &QueryRecord, now: DateTime<Utc>) -> Result<(), ServiceError> {
        match QueryView::of(q, now).report_status {
            "READY" => Ok(()),
            "EXPIRED" | "DELETED" => Err(self.gone(q, now)),
            _ => Err(ServiceError::ReportNotReady),
        }
    }

    /// The 410 after the report was found missing: the record as it is now says why.
    pub(super) async fn gone_now(&self, q: &QueryRecord, now: DateTime<Utc>) -> ServiceError {
        match self.d.queries.query(&q.query_id).await {
            Ok(Some(current)) => self.gone(&current, now),
            Ok(None) => self.gone(q, now),
            Err(e) => e.into(),
        }
    }

    /// The report's first page (the most cards a page holds), after a fresh step-up.
    pub async fn report(
        &self,
        user: &UserId,
        id: &str,
        step_up: StepUp,
    ) -> Result<serde_json::Value, ServiceError> {
        let page = self
            .report_page(user, id, ReportAccess::StepUp(step_up), None)
            .await?;
        serde_json::to_value(&page).map_err(ServiceError::internal)
    }

    /// One page of the report: the first after a fresh step-up (a view, listed on the
    /// record), a later one with the cursor the previous page gave (not another view).
    /// Every page carries the whole summary; `page_size` cards at most.
    pub async fn report_page(
        &self,
        user: &UserId,
        id: &str,
        access: ReportAccess,
        page_size: Option<u32>,
    ) -> Result<ReportPage, ServiceError> {
        let size = paging::page_size(page_size)?;
        let q = self.own_query(user, id).await?;
        let now = self.now();
        self.readable(&q, now)?;
        // The report's generation is on the record once it is READY.
        let generated_at = q
            .report_generated_at
            .ok_or_else(|| ServiceError::internal("a ready report without its time"))?;
        let scope = CursorScope {
            user,
            query: &q.query_id,
            generated_at,
        };
        let (at, method) = match access {
            // Checked before the report is read: a bad cursor costs no decryption.
            ReportAccess::Cursor(cursor) => (self.cursors.check(&scope, &cursor, now)?, None),
            ReportAccess::StepUp(proof) => {
                let method = self.step_up(user, proof, Purpose::ViewReport, now).await?;
                let until = now + paging::CURSOR_LIFETIME;
                let at = Position {
                    offset: 0,
                    valid_until: q.report_expires_at.map_or(until, |e| e.min(until)),
                };
                (at, Some(method))
            }
        };
        let Some(stored) = self.d.reports.report(&q.query_id).await? else {
            // Deleted by the sweeper or the user in between.
            return Err(self.gone_now(&q, now).await);
        };
        if crate::rules::retention::report_expired(stored.expires_at, now) {
            return Err(self.gone(&q, now));
        }
        let report = open_report(&self.d.opener, &self.d.config, user, &q, &stored)?;
        let page = paging::page(report, at, size, |next| self.cursors.issue(&scope, next));
        match method {
            Some(method) => {
                let view = ReportView { at: now, method };
                self.d.reports.record_view(&q.query_id, &view).await?;
                info!(query_id = %q.query_id, method = ?method, "report viewed");
            }
            None => info!(query_id = %q.query_id, offset = at.offset, "report page read"),
        }
        Ok(page)
    }

    /// Deletes the report and every leg at once, after a fresh DELETE_REPORT step-up;
    /// the record stays (`DELETED`), the cooldown is unchanged. A report already gone is
    /// 410 with the record (also for the losers of concurrent deletions).
    pub async fn delete(
        &self,
        user: &UserId,
        id: &str,
        step_up: StepUp,
    ) -> Result<(), ServiceError> {
        let q = self.own_query(user, id).await?;
        let now = self.now();
        self.readable(&q, now)?;
        self.step_up(user, step_up, Purpose::DeleteReport, now)
            .await?;
        if !self.d.reports.delete_report(&q.query_id, now).await? {
            return Err(self.gone_now(&q, now).await);
        }
        info!(query_id = %q.query_id, "report deleted at the user's request");
        Ok(())
    }

    pub(super) async fn step_up(
        &self,
        user: &UserId,
        proof: StepUp,
        purpose: Purpose,
        now: DateTime<Utc>,
    ) -> Result<StepUpMethod, ServiceError> {
        match proof {
            StepUp::Code { verification } => {
                let rules = &self.d.config.rules;
                let id = check_code(
                    self.d.verifications.as_ref(),
                    &self.d.codes,
                    rules.sms_code_max_attempts,
                    now,
                    user,
                    purpose,
                    &verification.verification_id,
                    &verification.sms_code,
                )
                .await?;
                let used = self
                    .d
                    .verifications
                    .consume_verification(user, &id, rules.sms_code_max_attempts)
                    .await?;
                used.then_some(StepUpMethod::Sms)
                    .ok_or(ServiceError::VerificationFailed)
            }
            StepUp::Face { face_token } => {
                let pass = self.d.face.verify(&face_token, user, purpose, now)?;
                let fresh = self
                    .d
                    .verifications
                    .consume_face_nonce(
                        &pass.nonce,
                        pass.issued_at + self.d.config.rules.face_token_max_age,
                    )
                    .await?;
                fresh
                    .then_some(StepUpMethod::Face)
                    .ok_or(ServiceError::FaceVerificationFailed)
            }
        }
    }
}

/// Opens a stored report for `user`, refusing one whose stored user, query, times or
/// key disagree with what its envelopes were sealed to: someone able to write the
/// table can neither move a report to another user nor extend its life. Such a
/// report is an integrity failure (logged, 500), never shown.
pub fn open_report(
    opener: &ReportOpener,
    config: &ServiceConfig,
    user: &UserId,
    q: &QueryRecord,
    stored: &StoredReport,
) -> Result<body::Report, ServiceError> {
    let content = open_content(opener, user, q, stored)?;
    body::render(
        &q.query_id.to_string(),
        stored.generated_at,
        stored.expires_at,
        &content,
        &config.banks,
        |bank, sealed| {
            body::open_answer(opener, q, bank, sealed)
                .map_err(|_| integrity(q, "bank answer envelope"))
        },
    )
}

fn integrity(q: &QueryRecord, why: &str) -> ServiceError {
    warn!(query_id = %q.query_id, check = why, "stored report failed its integrity check");
    ServiceError::internal(format!("report integrity: {why}"))
}

/// The report's opened content (each bank's outcome and still sealed answer), after the
/// integrity checks of [`open_report`].
pub fn open_content(
    opener: &ReportOpener,
    user: &UserId,
    q: &QueryRecord,
    stored: &StoredReport,
) -> Result<body::ReportContent, ServiceError> {
    if stored.query_id != q.query_id || &stored.user_id != user || &q.user_id != user {
        return Err(integrity(q, "owner"));
    }
    if q.report_generated_at != Some(stored.generated_at)
        || q.report_expires_at != Some(stored.expires_at)
    {
        return Err(integrity(q, "times"));
    }
    let binding = Binding::Report {
        query: &q.query_id,
        user,
        generated_at: stored.generated_at,
        expires_at: stored.expires_at,
    };
    let plain = opener
        .open(&binding, &stored.sealed)
        .map_err(|_| integrity(q, "report envelope"))?;
    serde_json::from_slice(&plain).map_err(|_| integrity(q, "report content"))
}

/// A leg's progress as the user sees it. A pending leg is `QUEUED` until its first send
/// (also before its leg is written), `RETRYING` while it waits to be sent again, and
/// `PENDING` while a send is out or the bank is to call back.
fn leg_status(leg: Option<&LegRecord>) -> &'static str {
    match leg {
        None => "QUEUED",
        Some(l) => match l.state {
            LegState::Answered => "RESPONDED",
            LegState::Failed => "FAILED",
            LegState::NoResponse => "NO_RESPONSE",
            LegState::Accepted => "PENDING",
            LegState::Pending if l.attempts == 0 => "QUEUED",
            LegState::Pending if l.next_attempt_at.is_some() => "RETRYING",
            LegState::Pending => "PENDING",
        },
    }
}
