//! "This card is not mine" (decision 157): a person disputes one card of their report,
//! after a fresh DISPUTE_CARD step-up, while the report is readable. One dispute per
//! card (the store's conditional write decides); a repeat gets the same one. The
//! dispute is sent to the card's bank by the bank-inquiry function (`dispatch::dispute`)
//! and outlives the report.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tracing::info;

use super::body;
use super::view::{open_content, StepUp, ViewService};
use crate::error::ServiceError;
use crate::model::card::MaskedCard;
use crate::model::ids::UserId;
use crate::model::purpose::Purpose;
use crate::model::timestamp::rfc3339;
use crate::ports::DisputeCreated;
use crate::records::{DisputeRecord, DisputeStatus};
use crate::rules;

/// A dispute as the app sees it: no `card_ref`, the card masked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DisputeView {
    pub dispute_id: String,
    pub card_id: String,
    pub bank_code: String,
    pub bank_name: String,
    pub card: MaskedCard,
    pub status: DisputeStatus,
    #[serde(with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    /// The bank's case, once it acknowledged.
    pub case_id: Option<String>,
    /// The bank's service phone, once it acknowledged (the person may call about the
    /// case).
    pub service_phone: Option<String>,
    #[serde(with = "rfc3339::option")]
    pub acknowledged_at: Option<DateTime<Utc>>,
}

/// What a dispute request got: the new dispute, or the one the card already had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disputed {
    Created(DisputeView),
    Existing(DisputeView),
}

impl Disputed {
    pub fn view(&self) -> &DisputeView {
        match self {
            Disputed::Created(v) | Disputed::Existing(v) => v,
        }
    }
}

impl ViewService {
    fn dispute_view(&self, r: &DisputeRecord) -> DisputeView {
        let bank = self.d.config.banks.get(&r.bank);
        let acknowledged = r.status == DisputeStatus::Acknowledged;
        DisputeView {
            dispute_id: r.dispute_id.clone(),
            card_id: r.card_id.clone(),
            bank_code: r.bank.to_string(),
            bank_name: self.d.config.banks.name(&r.bank).to_owned(),
            card: r.card,
            status: r.status,
            created_at: r.created_at,
            case_id: r.case_id.clone().filter(|_| acknowledged),
            service_phone: bank
                .filter(|_| acknowledged)
                .map(|b| b.service_phone.clone()),
            acknowledged_at: r.acknowledged_at,
        }
    }

    /// Disputes card `card_id` of the report. Refusals in this order, each before any
    /// step-up proof is used up but the last: not the caller's query (404), the report
    /// not readable (409 not ready, 410 gone), no such card (404 `CARD_NOT_FOUND`), its
    /// bank gave no reference (409 `DISPUTE_NOT_SUPPORTED`); then the DISPUTE_CARD
    /// step-up.
    pub async fn dispute(
        &self,
        user: &UserId,
        id: &str,
        card_id: &str,
        proof: StepUp,
    ) -> Result<Disputed, ServiceError> {
        let q = self.own_query(user, id).await?;
        let now = self.now();
        self.readable(&q, now)?;
        if !rules::dispute::is_card_id(card_id) {
            return Err(ServiceError::CardNotFound);
        }
        let Some(stored) = self.d.reports.report(&q.query_id).await? else {
            return Err(self.gone_now(&q, now).await);
        };
        if rules::retention::report_expired(stored.expires_at, now) {
            return Err(self.gone(&q, now));
        }
        let content = open_content(&self.d.opener, user, &q, &stored)?;
        let found = body::find_card(&content, card_id, |bank, sealed| {
            body::open_answer(&self.d.opener, &q, bank, sealed)
                .map_err(|_| ServiceError::internal("report integrity: bank answer envelope"))
        })?;
        let Some((bank, card)) = found else {
            return Err(ServiceError::CardNotFound);
        };
        let Some(card_ref) = card.card_ref.clone() else {
            return Err(ServiceError::DisputeNotSupported);
        };
        self.step_up(user, proof, Purpose::DisputeCard, now).await?;
        let record = DisputeRecord {
            dispute_id: ulid::Ulid::generate().to_string(),
            query_id: q.query_id,
            user_id: user.clone(),
            card_id: card_id.to_owned(),
            bank: bank.bank_code.clone(),
            inquiry_id: bank.inquiry_id.clone(),
            card: card.masked(),
            card_ref: Some(card_ref),
            status: DisputeStatus::Sent,
            created_at: now,
            attempts: 0,
            next_attempt_at: Some(now),
            case_id: None,
            acknowledged_at: None,
            failure: None,
            failed_at: None,
        };
        match self.d.disputes.create_dispute(&record).await? {
            DisputeCreated::Created => {
                info!(query_id = %q.query_id, card_id, dispute_id = %record.dispute_id, bank = %record.bank, "card disputed");
                Ok(Disputed::Created(self.dispute_view(&record)))
            }
            DisputeCreated::Exists(existing) => {
                Ok(Disputed::Existing(self.dispute_view(&existing)))
            }
        }
    }

    /// The query's disputes (also after its report is deleted or expired).
    pub async fn disputes(
        &self,
        user: &UserId,
        id: &str,
    ) -> Result<Vec<DisputeView>, ServiceError> {
        let q = self.own_query(user, id).await?;
        Ok(self
            .d
            .disputes
            .disputes(&q.query_id)
            .await?
            .iter()
            .map(|r| self.dispute_view(r))
            .collect())
    }
}
