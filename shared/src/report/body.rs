//! The report as the app receives it (HTTP contract v1), and how it is built from the
//! banks' legs.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::model::bank::BankRegistry;
use crate::model::card::CardKind;
use crate::model::timestamp::rfc3339;
use crate::records::{LegRecord, LegState, QueryRecord};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BankStatus {
    Responded,
    NoResponse,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BankSummary {
    pub bank_code: String,
    pub bank_name: String,
    pub status: BankStatus,
    pub debit_cards: u32,
    pub credit_cards: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    pub total_cards: u32,
    pub debit_cards: u32,
    pub credit_cards: u32,
    pub banks: Vec<BankSummary>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportCard {
    pub bank_code: String,
    pub bank_name: String,
    pub kind: CardKind,
    /// `6222 **** **** 1234`
    pub masked_number: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    pub query_id: String,
    #[serde(with = "rfc3339")]
    pub generated_at: OffsetDateTime,
    #[serde(with = "rfc3339")]
    pub expires_at: OffsetDateTime,
    pub summary: Summary,
    pub cards: Vec<ReportCard>,
    pub notices: Vec<String>,
}

/// The notices every report carries (design brief, section 1).
pub const NOTICES: [&str; 5] = [
    "报告内容来源于各银行的记录，请以银行记录为准。",
    "未在银行预留手机号、身份证件已过期或未开通无卡支付功能的银行卡可能未被查询到。",
    "如有不认识的银行卡，请及时联系发卡银行核实处理。",
    "请勿向任何人透露短信验证码，请勿分享本报告。",
    "本次查询不影响您的个人征信记录。",
];

/// Added when some bank did not answer or failed.
pub const PARTIAL_NOTICE: &str =
    "部分银行未在规定时间内反馈或查询失败，本报告可能不完整，可联系相关银行核实。";

/// Builds the report from the query and its legs, banks in the order the user chose.
pub fn build(
    query: &QueryRecord,
    legs: &[LegRecord],
    banks: &BankRegistry,
    generated_at: OffsetDateTime,
    expires_at: OffsetDateTime,
) -> Report {
    let mut summary = Summary {
        total_cards: 0,
        debit_cards: 0,
        credit_cards: 0,
        banks: Vec::new(),
    };
    let mut cards = Vec::new();
    for code in &query.banks {
        let name = banks.name(code).to_owned();
        let leg = legs.iter().find(|l| &l.bank == code);
        let status = match leg.map(|l| l.state) {
            Some(LegState::Answered) => BankStatus::Responded,
            Some(LegState::Failed) => BankStatus::Failed,
            _ => BankStatus::NoResponse,
        };
        let mut row = BankSummary {
            bank_code: code.to_string(),
            bank_name: name.clone(),
            status,
            debit_cards: 0,
            credit_cards: 0,
        };
        if status == BankStatus::Responded {
            let mut bank_cards = leg.map(|l| l.cards.clone()).unwrap_or_default();
            bank_cards.sort();
            for card in bank_cards {
                match card.kind {
                    CardKind::Debit => row.debit_cards += 1,
                    CardKind::Credit => row.credit_cards += 1,
                }
                cards.push(ReportCard {
                    bank_code: code.to_string(),
                    bank_name: name.clone(),
                    kind: card.kind,
                    masked_number: card.masked_number(),
                });
            }
        }
        summary.debit_cards += row.debit_cards;
        summary.credit_cards += row.credit_cards;
        summary.banks.push(row);
    }
    summary.total_cards = summary.debit_cards + summary.credit_cards;
    let mut notices: Vec<String> = NOTICES.iter().map(|s| (*s).to_owned()).collect();
    if summary
        .banks
        .iter()
        .any(|b| b.status != BankStatus::Responded)
    {
        notices.push(PARTIAL_NOTICE.to_owned());
    }
    Report {
        query_id: query.query_id.to_string(),
        generated_at,
        expires_at,
        summary,
        cards,
        notices,
    }
}
